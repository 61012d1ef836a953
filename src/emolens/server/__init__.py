"""``emolens serve``: a local web app and API to watch, steer and alarm a model's emotions.

An optional extra (``pip install 'emolens[serve]'``: FastAPI and uvicorn).  One app
factory, :func:`create_app`, serves the page, the JSON/SSE API and the
OpenAI-compatible endpoint for one model and one vector file; :class:`Limits` bounds
what a request may ask.

>>> from emolens.server import Limits, create_app
>>> app = create_app(lm, vecs, limits=Limits(max_new_tokens=32))
>>> for path in sorted(app.openapi()["paths"]):  # documented at /docs
...     print(path)
/api/emotions
/api/generate
/api/health
/api/info
/api/probe
/api/probe/batch
/v1/chat/completions
/v1/models
"""

from __future__ import annotations

from emolens.server.app import create_app
from emolens.server.limits import Limits

__all__ = ["Limits", "create_app"]
