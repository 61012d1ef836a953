"""One model, one worker thread, a small queue: how requests share the model.

All model work runs on a single worker thread, one job at a time, so steering hooks of
one request can never touch another's forward.  A job is admitted only while fewer
than ``1 + max_queue`` jobs are running or waiting; beyond that :class:`Busy` is raised
(the app answers 503 with ``Retry-After``).  A streaming job hands its events to the
event loop through a small buffer of credits: it waits for the client to read, stops
when the client goes away (:meth:`ModelSlot.stream` is closed) and stops when a client
stalls for ``stall_s`` seconds.

>>> slot = ModelSlot(max_queue=1)
>>> import asyncio
>>> asyncio.run(slot.call(sum, [1, 2, 3]))
6
>>> async def events():
...     return [e async for e in slot.stream(lambda: iter(["a", "b"]))]
>>> asyncio.run(events())
['a', 'b']
>>> slot.stats()["served"]
2
>>> slot.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from starlette.responses import StreamingResponse

__all__ = ["Busy", "ModelSlot", "Ticket", "TicketStream"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
_END = object()


class Busy(Exception):  # noqa: N818 - a condition the app answers with 503
    """The model is running a job and the queue is full."""


class _Cancelled(Exception):  # noqa: N818 - control flow inside the worker
    pass


class Ticket:
    """A place in the queue; released once, whatever ends the request."""

    def __init__(self, slot: ModelSlot) -> None:
        self._slot = slot
        self._released = False

    def release(self) -> None:
        """Give the place back (idempotent)."""
        with self._slot._mutex:
            if not self._released:
                self._released = True
                self._slot._active -= 1


class ModelSlot:
    """The model lock (a one-thread executor), the admission count and some counters."""

    def __init__(self, max_queue: int = 4, stall_s: float = 60.0, buffer: int = 8) -> None:
        self.max_queue = int(max_queue)
        self.stall_s = float(stall_s)
        self.buffer = int(buffer)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emolens-model")
        self._mutex = threading.Lock()
        self._active = 0
        self._running = False
        self._counts = {"served": 0, "cancelled": 0, "rejected": 0, "failed": 0}
        self.last_job: dict[str, Any] = {}

    # ---- admission -----------------------------------------------------------------------
    def admit(self) -> Ticket:
        """A ticket for one job, or :class:`Busy` when ``1 + max_queue`` are already in."""
        with self._mutex:
            if self._active >= 1 + self.max_queue:
                self._counts["rejected"] += 1
                raise Busy(f"the model is busy ({self._active} requests running or queued; "
                           f"the queue holds {self.max_queue}); retry shortly")
            self._active += 1
        return Ticket(self)

    def stats(self) -> dict[str, Any]:
        """Running / queued now, and counters since start."""
        with self._mutex:
            running = int(self._running)
            return {"busy": bool(running), "queued": max(0, self._active - running),
                    **self._counts, "last_job": dict(self.last_job)}

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to counter ``key``."""
        with self._mutex:
            self._counts[key] = self._counts.get(key, 0) + n

    def _submit(self, fn: Callable[[], T], ticket: Ticket | None) -> Future[T]:
        own = ticket or self.admit()

        def job() -> T:
            with self._mutex:
                self._running = True
            try:
                return fn()
            finally:
                with self._mutex:
                    self._running = False

        fut = self._executor.submit(job)
        fut.add_done_callback(lambda _f: own.release())
        return fut

    # ---- one-shot jobs ---------------------------------------------------------------------
    async def call(self, fn: Callable[..., T], *args: Any, ticket: Ticket | None = None) -> T:
        """Run ``fn(*args)`` on the model thread and return its result."""
        fut = self._submit(lambda: fn(*args), ticket)
        try:
            result = await asyncio.wrap_future(fut)
        except BaseException:
            fut.cancel()  # still queued: never runs
            raise
        self.count("served")
        return result

    # ---- streaming jobs --------------------------------------------------------------------
    async def stream(self, make: Callable[[], Iterator[T]], *, ticket: Ticket | None = None,
                     cancel: threading.Event | None = None) -> AsyncIterator[T]:
        """Run the iterator ``make()`` on the model thread, yielding its items here.

        Setting ``cancel`` (or closing this async iterator) stops the job before its next
        item and closes the inner iterator, so its ``finally`` blocks (steering hooks,
        recorders) run on the model thread.  A server sets ``cancel`` when the response
        ends, however it ends (:class:`TicketStream`): an abandoned async generator is only
        closed when it is garbage collected, which may be late.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        credits = threading.Semaphore(self.buffer)
        cancel = cancel if cancel is not None else threading.Event()
        produced = 0

        def put(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody listens
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def run() -> None:
            nonlocal produced
            started = time.monotonic()
            cancelled = False
            try:
                if cancel.is_set():
                    raise _Cancelled
                items = make()
                try:
                    for item in items:
                        waited = time.monotonic()
                        while not credits.acquire(timeout=0.1):
                            if cancel.is_set():
                                raise _Cancelled
                            if time.monotonic() - waited > self.stall_s:
                                logger.warning("a client stopped reading for %.0f s; "
                                               "generation stopped", self.stall_s)
                                raise _Cancelled
                        if cancel.is_set():
                            raise _Cancelled
                        put(item)
                        produced += 1
                finally:
                    close = getattr(items, "close", None)
                    if close is not None:  # a generator: its finally blocks run here
                        close()
            except _Cancelled:
                cancelled = True
                self.count("cancelled")
            except BaseException as exc:  # handed to the consumer, re-raised there
                put(_Raised(exc))
            finally:
                self.last_job = {"items": produced, "cancelled": cancelled,
                                 "seconds": round(time.monotonic() - started, 4)}
                put(_END)

        fut = self._submit(run, ticket)
        try:
            while True:
                item = await queue.get()
                credits.release()
                if item is _END:
                    break
                if isinstance(item, _Raised):
                    self.count("failed")
                    raise item.exc
                yield item
            self.count("served")
        finally:
            cancel.set()  # no await here: this may run inside a cancelled task
            if fut.cancel():  # still queued: it never runs
                self.count("cancelled")

    async def open_stream(self, make: Callable[[], Iterator[T]], *, ticket: Ticket,
                          cancel: threading.Event) -> tuple[T | None, AsyncIterator[T]]:
        """Start :meth:`stream` and wait for its first item, so that an error raised before
        anything is produced (a bad request the model thread finds) reaches the caller
        before any response is sent.  Returns the first item (None if there is none) and
        the rest of the stream.
        """
        items = self.stream(make, ticket=ticket, cancel=cancel)
        try:
            first = await items.__anext__()
        except StopAsyncIteration:
            return None, items
        except BaseException:
            cancel.set()
            ticket.release()
            raise
        return first, items

    def close(self) -> None:
        """Stop the worker thread after the job it is running (queued jobs are dropped)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


class TicketStream(StreamingResponse):
    """A streaming response that, however it ends (done, client gone, server stopping),
    stops its job (``cancel``) and gives its queue place back (``ticket``)."""

    def __init__(self, content: AsyncIterator[str], ticket: Ticket,
                 cancel: threading.Event | None = None, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.ticket = ticket
        self.cancel = cancel

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Stream; then cancel the job and release the ticket (no await: this may run in a
        cancelled task)."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.cancel is not None:
                self.cancel.set()
            self.ticket.release()


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
