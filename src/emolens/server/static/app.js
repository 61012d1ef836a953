// emolens page: plain JavaScript, no framework, talks only to this server's /api.
// Every piece of model or user text is inserted with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};
const fmt = (v) => (v >= 0 ? "+" : "\u2212") + Math.abs(v).toFixed(3);
const LINE_COLOURS = ["#e11d48", "#2563eb", "#16a34a", "#d97706", "#7c3aed", "#0891b2"];

const S = {
  info: null,
  emotions: [],
  eindex: {},
  messages: [],       // the chat as the server sees it
  records: [],        // every coloured token record of the conversation (for the scale)
  timeline: null,     // {tokens, zones, astart}
  steer: {},          // emotion -> strength
  rules: [],          // alert rule strings
  guards: [],         // {rule, steer}
  alerts: [],         // fired alerts, in order
  plotted: [],        // emotions drawn on the timeline
  busy: false,
  abort: null,
  lastTurn: null,
  replies: 0,         // replies generated (labels in the alert log)
  read: { results: [], active: 0, colour: null },
  recolourPending: false,
};

// ---- talking to the server ----------------------------------------------------------------
class ApiError extends Error {
  constructor(status, message, retry) { super(message); this.status = status; this.retry = retry; }
}

async function api(path, body, signal) {
  const init = body === undefined ? { signal } : {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body), signal,
  };
  const r = await fetch(path, init);
  if (!r.ok) {
    let message = `${r.status} ${r.statusText}`;
    try { message = (await r.json()).error.message || message; } catch (_) { /* not JSON */ }
    throw new ApiError(r.status, message, r.headers.get("Retry-After"));
  }
  return r;
}

async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event: name, data: JSON.parse(data.join("\n")) };
    }
  }
}

function banner(message, kind) {
  const b = $("banner");
  if (!message) { b.hidden = true; return; }
  b.textContent = message;
  b.className = "banner" + (kind ? " " + kind : "");
  b.hidden = false;
  clearTimeout(banner.timer);
  banner.timer = setTimeout(() => { b.hidden = true; }, kind === "info" ? 5000 : 9000);
}

function describeError(err) {
  if (err instanceof ApiError && err.status === 503) {
    return `${err.message}${err.retry ? ` (try again in ${err.retry} s)` : ""}`;
  }
  return err.message || String(err);
}

// ---- emotions, names, colours -------------------------------------------------------------
function findEmotion(text) {
  const q = (text || "").trim().toLowerCase();
  if (!q) return null;
  if (q in S.eindex) return q;
  const exact = S.emotions.find((e) => e.toLowerCase() === q);
  if (exact) return exact;
  const starts = S.emotions.filter((e) => e.toLowerCase().startsWith(q));
  return starts.length === 1 ? starts[0] : null;
}

function hueOf(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return h % 360;
}

function percentile99(values) {
  if (!values.length) return 1;
  const a = values.map(Math.abs).sort((x, y) => x - y);
  return a[Math.floor(0.99 * (a.length - 1))] || 1e-6;
}

// colour settings for a set of records: the study's convention for one emotion (scale by
// the 99th percentile of |score| over the transcript; red positive, blue negative), or the
// strongest emotion's own hue.
function colourScale(records, mode, emotion) {
  if (mode === "emotion" && emotion in S.eindex) {
    const i = S.eindex[emotion];
    const vals = records.filter((r) => r.scores).map((r) => r.scores[i]);
    return { mode, index: i, emotion, scale: percentile99(vals) };
  }
  const vals = records.filter((r) => r.top && r.top.length).map((r) => r.top[0].score);
  return { mode: "strongest", scale: percentile99(vals) };
}

function tokenBackground(rec, c) {
  if (c.mode === "emotion") {
    if (!rec.scores) return "";
    const v = rec.scores[c.index];
    const a = Math.min(1, Math.abs(v) / c.scale) * 0.72;
    return `rgba(${v >= 0 ? "220, 38, 38" : "37, 99, 235"}, ${a.toFixed(3)})`;
  }
  if (!rec.top || !rec.top.length) return "";
  const { emotion, score } = rec.top[0];
  const a = Math.max(0, Math.min(1, score / c.scale)) * 0.6;
  return `hsla(${hueOf(emotion)}, 80%, 55%, ${a.toFixed(3)})`;
}

function chatColour() {
  const mode = $("colour-mode").value;
  return colourScale(S.records, mode, findEmotion($("colour-emotion").value));
}

function paint(container, colour) {
  for (const span of container.querySelectorAll(".tok")) {
    span.style.background = tokenBackground(span._rec, colour);
  }
}

function scheduleRecolour() {
  if (S.recolourPending) return;
  S.recolourPending = true;
  requestAnimationFrame(() => {
    S.recolourPending = false;
    const c = chatColour();
    paint($("conversation"), c);
    drawLegend(c);
    drawTimeline();
  });
}

function drawLegend(c) {
  const legend = $("legend");
  legend.replaceChildren();
  if (!S.records.length) return;
  if (c.mode === "emotion") {
    legend.append(el("span", "", `${fmt(-c.scale)}`), el("span", "scale"),
                  el("span", "", `${fmt(c.scale)}`),
                  el("span", "", `${c.emotion}: blue below 0, red above (scale: 99th percentile)`));
    return;
  }
  const counts = {};
  for (const r of S.records) if (r.top && r.top.length) counts[r.top[0].emotion] = (counts[r.top[0].emotion] || 0) + 1;
  const common = Object.entries(counts).sort((a, b) => b[1] - a[1]).slice(0, 6);
  legend.append(el("span", "", "most often strongest:"));
  for (const [name] of common) {
    const chip = el("span", "chip");
    const dot = el("span", "dot");
    dot.style.background = `hsl(${hueOf(name)}, 80%, 55%)`;
    chip.append(dot, el("span", "", name));
    legend.append(chip);
  }
}

// ---- token spans and the tooltip ------------------------------------------------------------
function tokenSpan(rec) {
  const span = el("span", "tok", rec.text);
  span._rec = rec;
  return span;
}

function showTooltip(rec, x, y) {
  const tt = $("tooltip");
  tt.replaceChildren();
  const head = el("div", "tt-head");
  head.append(el("span", "tt-tok", rec.text.replace(/\n/g, "\u21b5") || "\u2205"),
              el("span", "", `${rec.where} #${rec.index}`));
  tt.append(head);
  const rows = (rec.top || []).slice(0, 6).map((t) => [t.emotion, t.score]);
  const chosen = findEmotion($("colour-emotion").value);
  if ($("colour-mode").value === "emotion" && chosen && rec.scores && !rows.some((r) => r[0] === chosen)) {
    rows.push([chosen, rec.scores[S.eindex[chosen]]]);
  }
  const top = Math.max(1e-6, ...rows.map((r) => Math.abs(r[1])));
  for (const [name, v] of rows) {
    const row = el("div", "tt-row");
    const bar = el("div", "tt-bar");
    bar.style.width = `${Math.max(4, (Math.abs(v) / top) * 100)}%`;
    bar.style.background = v >= 0 ? "rgb(248, 113, 113)" : "rgb(96, 165, 250)";
    row.append(el("span", name === chosen ? "tt-chosen" : "", name), bar, el("span", "tt-val", fmt(v)));
    tt.append(row);
  }
  if (!rows.length) tt.append(el("div", "", "no scores for this token"));
  for (const a of rec.alerts || []) tt.append(el("div", "tt-alert", `alert ${a.rule} (${fmt(a.value)})`));
  if (rec.guarded) tt.append(el("div", "tt-alert", "guard steering on"));
  tt.hidden = false;
  const w = tt.offsetWidth, h = tt.offsetHeight;
  tt.style.left = `${Math.min(window.innerWidth - w - 8, x + 12)}px`;
  tt.style.top = `${y + h + 24 > window.innerHeight ? y - h - 12 : y + 18}px`;
}

function hideTooltip() { $("tooltip").hidden = true; }

function wireTooltips(container) {
  container.addEventListener("mouseover", (ev) => {
    const t = ev.target.closest(".tok");
    if (t) showTooltip(t._rec, ev.clientX, ev.clientY);
  });
  container.addEventListener("mousemove", (ev) => {
    const t = ev.target.closest(".tok");
    if (t) showTooltip(t._rec, ev.clientX, ev.clientY); else hideTooltip();
  });
  container.addEventListener("mouseleave", hideTooltip);
  container.addEventListener("click", (ev) => {  // touch screens: tap shows, tap elsewhere hides
    const t = ev.target.closest(".tok");
    if (t) showTooltip(t._rec, ev.clientX, ev.clientY); else hideTooltip();
  });
}

// ---- steering sliders -------------------------------------------------------------------
function addSlider(name, value) {
  if (name in S.steer) return;
  S.steer[name] = value;
  renderSliders();
}

function renderSliders() {
  const box = $("sliders");
  box.replaceChildren();
  const names = Object.keys(S.steer);
  if (!names.length) {
    box.append(el("p", "muted small", "No steering: the model as it is."));
    return;
  }
  for (const name of names) {
    const row = el("div", "slider");
    row.dataset.emotion = name;
    const range = el("input");
    range.type = "range"; range.min = "-1"; range.max = "1"; range.step = "0.01";
    range.value = String(S.steer[name]);
    range.setAttribute("aria-label", `steer ${name}`);
    const val = el("span", "val");
    const show = () => {
      const v = Number(range.value);
      val.textContent = fmt(v).replace(/0$/, "");
      val.className = "val " + (v > 0 ? "pos" : v < 0 ? "neg" : "");
    };
    range.addEventListener("input", () => { S.steer[name] = Number(range.value); show(); });
    show();
    const x = el("button", "x", "\u00d7");
    x.type = "button"; x.title = `stop steering ${name}`;
    x.addEventListener("click", () => { delete S.steer[name]; renderSliders(); });
    row.append(el("span", "name", name), range, val, x);
    row.querySelector(".name").title = name;
    box.append(row);
  }
  box.append(el("p", "muted small", "Applies to the next reply (Regenerate to see it)."));
}

function activeSteer() {
  const out = {};
  for (const [k, v] of Object.entries(S.steer)) if (v !== 0) out[k] = v;
  return out;
}

// ---- alarms and guards ----------------------------------------------------------------------
function checkRule(text) {
  const rule = text.trim();
  if (!rule) return "write a rule, e.g. desperate>0.05@4";
  for (const part of rule.split("&")) {
    const m = part.trim().match(/^(.+?)\s*([<>])\s*(-?\d*\.?\d+)\s*(@\s*\d+)?$/);
    if (!m) return `cannot read ${JSON.stringify(part.trim())}; write e.g. desperate>0.05@4`;
    if (!(m[1].trim() in S.eindex)) return `unknown emotion ${JSON.stringify(m[1].trim())}`;
  }
  return null;
}

function parseSteer(text) {
  const out = {};
  for (const piece of text.split(",")) {
    if (!piece.trim()) continue;
    const m = piece.match(/^\s*(.+?)\s*=\s*(-?\d*\.?\d+)\s*$/);
    if (!m) throw new Error(`cannot read ${JSON.stringify(piece.trim())}; write e.g. calm=0.3`);
    if (!(m[1] in S.eindex)) throw new Error(`unknown emotion ${JSON.stringify(m[1])}`);
    out[m[1]] = Number(m[2]);
  }
  if (!Object.keys(out).length) throw new Error("say how to steer, e.g. calm=0.3");
  return out;
}

function renderRules() {
  const ul = $("rules");
  ul.replaceChildren();
  S.rules.forEach((rule, i) => {
    const li = el("li");
    const x = el("button", "x", "\u00d7");
    x.type = "button"; x.title = "remove";
    x.addEventListener("click", () => { S.rules.splice(i, 1); renderRules(); });
    li.append(el("span", "kind", "alarm"), el("code", "", rule), el("span", "spacer"), x);
    ul.append(li);
  });
  S.guards.forEach((g, i) => {
    const li = el("li", "guard");
    const x = el("button", "x", "\u00d7");
    x.type = "button"; x.title = "remove";
    x.addEventListener("click", () => { S.guards.splice(i, 1); renderRules(); });
    const steer = Object.entries(g.steer).map(([k, v]) => `${k}=${v}`).join(", ");
    li.append(el("span", "kind", "guard"), el("code", "", `${g.rule} \u2192 ${steer}`), el("span", "spacer"), x);
    ul.append(li);
  });
}

function logAlert(alert, span, where) {
  const log = $("alert-log");
  if (!S.alerts.length) log.replaceChildren();
  S.alerts.push(alert);
  const li = el("li");
  li.append(el("span", "where", where), el("span", "rule", alert.rule), el("span", "", ` at token ${alert.index} `),
            el("code", "", JSON.stringify(alert.token)), el("span", "", ` ${fmt(alert.value)}`));
  li.title = "show the token";
  li.addEventListener("click", () => {
    span.scrollIntoView({ block: "center", behavior: "smooth" });
    span.classList.remove("flash"); void span.offsetWidth; span.classList.add("flash");
  });
  log.prepend(li);
  const count = $("alert-count");
  count.textContent = String(S.alerts.length);
  count.className = "badge hot";
}

// ---- the conversation -----------------------------------------------------------------------
function addTurn(role, label) {
  $("empty-chat").hidden = true;
  const turn = el("div", `turn ${role}`);
  turn.append(el("div", "who", label || role));
  const bubble = el("div", "bubble");
  turn.append(bubble);
  $("conversation").append(turn);
  return { turn, bubble };
}

function scrollChat() {
  const c = $("conversation");
  c.scrollTop = c.scrollHeight;
}

function settings(withSteering) {
  const seed = $("seed").value === "" ? null : Number($("seed").value);
  const body = {
    max_new_tokens: Number($("max-tokens").value) || 60,
    temperature: Number($("temperature").value) || 0,
    seed,
    alerts: S.rules.slice(),
    guards: S.guards.map((g) => ({ rule: g.rule, steer: g.steer })),
    top: 8,
    scores: true,
  };
  if (withSteering) {
    body.steer = activeSteer();
    body.positions = $("positions").value;
    if ($("steer-layers").value.trim()) body.steer_layers = $("steer-layers").value.trim();
  }
  return body;
}

// Stream one reply into `bubble`; returns the done event's data (or null when stopped).
async function streamReply(body, bubble, turn, userBubble, label) {
  S.replies = (S.replies || 0) + 1;
  const where = `reply ${S.replies}${label ? ` \u00b7 ${label}` : ""}`;
  const controller = new AbortController();
  S.abort = controller;
  turn.classList.add("pending");
  const recs = [];
  let promptData = null;
  let done = null;
  try {
    const response = await api("/api/generate", body, controller.signal);
    for await (const ev of events(response)) {
      if (ev.event === "prompt") {
        promptData = ev.data;
        if (userBubble) colourUserTurn(userBubble, promptData, body);
      } else if (ev.event === "token") {
        const t = ev.data;
        const rec = { text: t.token, scores: t.scores, top: t.top, alerts: t.alerts, index: t.index, where: "reply" };
        recs.push(rec);
        S.records.push(rec);
        const span = tokenSpan(rec);
        bubble.append(span);
        for (const a of t.alerts || []) {
          span.classList.add("alerted");
          const flag = el("span", "flag", a.rule);
          flag.title = `alert ${a.rule} fired on this token (${fmt(a.value)})`;
          bubble.append(flag);
          logAlert(a, span, where);
        }
        setTimeline(promptData, recs);
        scheduleRecolour();
        scrollChat();
      } else if (ev.event === "done") {
        done = ev.data;
      } else if (ev.event === "error") {
        throw new Error(ev.data.error.message);
      }
    }
  } catch (err) {
    if (err.name === "AbortError") {
      turn.append(el("div", "error", "stopped"));
      // the conversation keeps what was written before the stop
      return { text: recs.map((r) => r.text).join(""), stopped: true };
    } else {
      turn.append(el("div", "error", describeError(err)));
      throw err;
    }
  } finally {
    turn.classList.remove("pending");
    S.abort = null;
  }
  if (done) finishTurn(done, turn, bubble, recs);
  return done;
}

function colourUserTurn(bubble, prompt, body) {
  const spans = prompt.message_tokens || [];
  if (!spans.length || !prompt.scores) return;
  const turn = bubble.closest(".turn");
  const note = turn.querySelector(".meta");
  if (note) note.remove();
  const steer = Object.entries(body.steer || {});
  if (steer.length && ["all", "prompt"].includes(body.positions)) {
    // steering acts on the prompt too: this is how the steered model reads the message
    const what = steer.map(([e, v]) => `${e} ${v > 0 ? "+" : ""}${v}`).join(", ");
    turn.append(el("div", "meta", `read with steering on (${what}, ${body.positions} tokens)`));
  }
  const [start, end] = spans[spans.length - 1];
  if (end <= start) return;
  if ($("colour-mode").value === "emotion" && !findEmotion($("colour-emotion").value)) {
    // nothing chosen yet: colour by the emotion the user's message carries most
    const mean = new Array(S.emotions.length).fill(0);
    for (let i = start; i < end; i++) prompt.scores[i].forEach((v, j) => { mean[j] += v; });
    $("colour-emotion").value = S.emotions[mean.indexOf(Math.max(...mean))];
    $("colour-emotion").classList.remove("bad");
  }
  bubble.replaceChildren();
  for (let i = start; i < end; i++) {
    const rec = { text: prompt.tokens[i], scores: prompt.scores[i], top: prompt.top[i], index: i, where: "prompt" };
    S.records.push(rec);
    bubble.append(tokenSpan(rec));
  }
}

function finishTurn(done, turn, bubble, recs) {
  for (const g of done.guards || []) {
    if (g.triggered_at === null || g.triggered_at === undefined) continue;
    const k = g.triggered_at;
    const spans = [...bubble.querySelectorAll(".tok")];
    spans.forEach((s, i) => { if (i > k) { s.classList.add("guarded"); s._rec.guarded = true; } });
    const guard = S.guards.find((x) => x.rule === g.rule);
    const label = guard ? Object.entries(guard.steer).map(([e, v]) => `${e} ${v > 0 ? "+" : ""}${v}`).join(", ") : "on";
    const flag = el("span", "flag guard", `guard: ${label}`);
    flag.title = `guard ${g.rule} fired at token ${k}; steering from token ${k + 1} on`;
    if (spans[k + 1]) bubble.insertBefore(flag, spans[k + 1]); else bubble.append(flag);
  }
  const meta = el("div", "meta");
  const top = (done.summary || []).slice(0, 3).map((s) => `${s.emotion} ${fmt(s.score)}`).join(", ");
  meta.append(el("span", "", `${done.n_tokens} tokens${done.finished ? "" : " (stopped at the limit)"}`));
  if (top) { meta.append(el("span", "", " \u00b7 top: ")); meta.append(el("b", "", top)); }
  const steer = Object.entries(done.steer || {}).map(([e, v]) => `${e} ${v > 0 ? "+" : ""}${v}`).join(", ");
  if (steer) meta.append(el("span", "", ` \u00b7 steered: ${steer}`));
  const fired = (done.guards || []).filter((g) => g.triggered_at !== null && g.triggered_at !== undefined);
  if (fired.length) meta.append(el("span", "", ` \u00b7 guard on from token ${fired[0].triggered_at + 1}`));
  turn.append(meta);
  if (!S.plotted.length && done.summary) {
    const chosen = $("colour-mode").value === "emotion" ? findEmotion($("colour-emotion").value) : null;
    S.plotted = [...new Set([chosen, ...done.summary.map((s) => s.emotion)].filter(Boolean))].slice(0, 3);
    renderChips();
  }
  // the page could hold a partial last character; the final text is authoritative
  const shown = recs.map((r) => r.text).join("");
  if (done.text.startsWith(shown) && done.text.length > shown.length) bubble.append(document.createTextNode(done.text.slice(shown.length)));
  scheduleRecolour();
}

function setBusy(busy) {
  S.busy = busy;
  for (const id of ["send", "compare", "regenerate", "clear"]) $(id).disabled = busy;
  if (!busy) $("regenerate").disabled = !S.lastTurn;
  $("stop").hidden = !busy;
}

async function sendMessage(compare) {
  if (S.busy) return;
  const text = $("message").value.trim();
  if (!text) { $("message").focus(); return; }
  if (compare && !Object.keys(activeSteer()).length) {
    banner("Compare needs steering: add an emotion under Steering and move its slider.", "info");
    return;
  }
  banner(null);
  $("message").value = "";
  S.messages.push({ role: "user", content: text });
  const user = addTurn("user", "you");
  user.bubble.textContent = text;
  await runTurn(compare, user);
}

async function runTurn(compare, user) {
  setBusy(true);
  const label = compare ? "assistant \u00b7 compare (same seed)" : "assistant";
  const reply = addTurn("assistant", label);
  S.lastTurn = { user, reply, compare };
  scrollChat();
  let done = null;
  try {
    if (compare) {
      reply.turn.classList.add("compare");
      const grid = el("div", "compare-grid");
      const a = el("div", "col"), b = el("div", "col");
      const steer = Object.entries(activeSteer()).map(([e, v]) => `${e} ${v > 0 ? "+" : ""}${v}`).join(", ");
      a.append(el("h3", "", "unsteered")); b.append(el("h3", "", `steered: ${steer}`));
      const ba = el("div", "bubble"), bb = el("div", "bubble");
      a.append(ba); b.append(bb); grid.append(a, b);
      reply.bubble.replaceWith(grid);
      reply.bubble = bb;
      const first = await streamReply({ messages: S.messages, ...settings(false) }, ba, a, user.bubble, "unsteered");
      done = first && first.stopped ? first
        : await streamReply({ messages: S.messages, ...settings(true) }, bb, b, null, "steered");
    } else {
      done = await streamReply({ messages: S.messages, ...settings(true) }, reply.bubble, reply.turn, user.bubble);
    }
  } catch (err) {
    banner(describeError(err));
  }
  if (done) S.messages.push({ role: "assistant", content: done.text });
  setBusy(false);
}

async function regenerate() {
  if (S.busy || !S.lastTurn) return;
  const { user, reply, compare } = S.lastTurn;
  if (S.messages.length && S.messages[S.messages.length - 1].role === "assistant") S.messages.pop();
  dropRecords(reply.turn);
  reply.turn.remove();
  await runTurn(compare && Object.keys(activeSteer()).length > 0, user);
}

function dropRecords(node) {
  const gone = new Set([...node.querySelectorAll(".tok")].map((s) => s._rec));
  S.records = S.records.filter((r) => !gone.has(r));
}

function clearChat() {
  if (S.busy) return;
  S.messages = []; S.records = []; S.timeline = null; S.lastTurn = null; S.alerts = []; S.replies = 0;
  const conv = $("conversation");
  for (const t of [...conv.querySelectorAll(".turn")]) t.remove();
  $("empty-chat").hidden = false;
  $("alert-log").replaceChildren(el("li", "muted small", "No alerts yet."));
  $("alert-count").textContent = "0"; $("alert-count").className = "badge";
  $("timeline").replaceChildren(el("p", "muted small", "The timeline appears after the first reply."));
  $("legend").replaceChildren();
  setBusy(false);
}

// ---- the timeline -----------------------------------------------------------------------------
function setTimeline(prompt, recs) {
  const tokens = [];
  const zones = [];
  let astart = null;
  if (prompt && prompt.scores) {
    prompt.tokens.forEach((text, i) => tokens.push({ text, scores: prompt.scores[i], top: prompt.top[i], index: i, where: "prompt" }));
    const roles = S.messages.map((m) => m.role);
    (prompt.message_tokens || []).forEach(([s, e], i) => { if (e > s) zones.push({ start: s, end: e, role: roles[i] || "user" }); });
    astart = prompt.assistant_start;
  }
  const offset = tokens.length;
  for (const r of recs) tokens.push(r);
  if (recs.length) zones.push({ start: offset, end: offset + recs.length, role: "reply" });
  S.timeline = { tokens, zones, astart };
}

function renderChips() {
  const box = $("timeline-chips");
  box.replaceChildren();
  S.plotted.forEach((name, i) => {
    const chip = el("span", "chip");
    const sw = el("span", "swatch");
    sw.style.background = LINE_COLOURS[i % LINE_COLOURS.length];
    const x = el("button", "x", "\u00d7");
    x.type = "button"; x.title = `remove ${name}`;
    x.addEventListener("click", () => { S.plotted.splice(i, 1); renderChips(); drawTimeline(); });
    chip.append(sw, el("span", "", name), x);
    box.append(chip);
  });
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function drawTimeline() {
  const box = $("timeline");
  const tl = S.timeline;
  if (!tl || !tl.tokens.length || !tl.tokens.some((t) => t.scores)) return;
  const W = Math.max(300, box.clientWidth), H = 190;
  const L = 44, R = 10, T = 14, B = 22;
  const n = tl.tokens.length;
  const x = (i) => L + (n <= 1 ? 0 : (i / (n - 1)) * (W - L - R));
  const series = S.plotted.filter((e) => e in S.eindex).map((e) => ({ e, i: S.eindex[e] }));
  let ymax = 1e-3;
  for (const s of series) for (const t of tl.tokens) if (t.scores) ymax = Math.max(ymax, Math.abs(t.scores[s.i]));
  ymax *= 1.1;
  const y = (v) => T + ((ymax - v) / (2 * ymax)) * (H - T - B);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": "emotion scores over the tokens of the conversation" });
  for (const z of tl.zones) {
    root.append(svg("rect", { class: z.role === "reply" || z.role === "assistant" ? "reply-zone" : "user-zone",
      x: x(z.start) - 1, y: T, width: Math.max(2, x(Math.max(z.start, z.end - 1)) - x(z.start) + 2), height: H - T - B }));
  }
  for (const v of [ymax / 1.1, 0, -ymax / 1.1]) {
    root.append(svg("line", { class: v === 0 ? "axis" : "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    root.append(svg("text", { x: L - 6, y: y(v) + 3, "text-anchor": "end" }, v === 0 ? "0" : fmt(v)));
  }
  if (tl.astart !== null && tl.astart !== undefined) {
    root.append(svg("line", { class: "astart", x1: x(tl.astart), x2: x(tl.astart), y1: T - 4, y2: H - B }));
    root.append(svg("text", { x: x(tl.astart) + 4, y: T + 6 }, "assistant_start"));
  }
  series.forEach((s, k) => {
    const pts = [];
    tl.tokens.forEach((t, i) => { if (t.scores) pts.push(`${x(i).toFixed(1)},${y(t.scores[s.i]).toFixed(1)}`); });
    root.append(svg("polyline", { points: pts.join(" "), fill: "none", stroke: LINE_COLOURS[k % LINE_COLOURS.length], "stroke-width": 1.6, "stroke-linejoin": "round" }));
  });
  root.append(svg("text", { x: L, y: H - 6 }, "token 0"));
  root.append(svg("text", { x: W - R, y: H - 6, "text-anchor": "end" }, `token ${n - 1}`));
  const legendY = H - 6;
  root.append(svg("text", { x: W / 2, y: legendY, "text-anchor": "middle" }, "shaded: your messages (blue) \u00b7 replies (grey)"));
  const cursor = svg("line", { class: "cursor", x1: -10, x2: -10, y1: T, y2: H - B });
  root.append(cursor);
  root.addEventListener("mousemove", (ev) => {
    const rect = root.getBoundingClientRect();
    const px = ((ev.clientX - rect.left) / rect.width) * W;
    const i = Math.max(0, Math.min(n - 1, Math.round(((px - L) / (W - L - R)) * (n - 1))));
    cursor.setAttribute("x1", x(i)); cursor.setAttribute("x2", x(i));
    showTooltip(tl.tokens[i], ev.clientX, ev.clientY);
  });
  root.addEventListener("mouseleave", () => { hideTooltip(); cursor.setAttribute("x1", -10); cursor.setAttribute("x2", -10); });
  box.replaceChildren(root);
}

// ---- read a text ------------------------------------------------------------------------------
function parseJsonl(text) {
  const items = [];
  text.split(/\r?\n/).forEach((line, n) => {
    if (!line.trim()) return;
    let v;
    try { v = JSON.parse(line); } catch (_) { throw new Error(`line ${n + 1} is not JSON`); }
    if (typeof v === "string") items.push({ text: v });
    else if (Array.isArray(v)) items.push({ messages: v });
    else if (v && typeof v.text === "string") items.push({ text: v.text });
    else if (v && Array.isArray(v.messages)) items.push({ messages: v.messages.map((m) => ({ role: m.role, content: m.content })) });
    else throw new Error(`line ${n + 1}: expected a string, a list of messages, {"text"} or {"messages"}`);
  });
  if (!items.length) throw new Error("the file holds no texts");
  return items;
}

async function readItems(items, source) {
  const at = $("read-at").value;
  const max = (S.info && S.info.limits.max_batch) || 16;
  const results = [];
  $("read-go").disabled = true;
  try {
    for (let i = 0; i < items.length; i += max) {
      const chunk = items.slice(i, i + max);
      banner(items.length > 1 ? `reading ${Math.min(i + max, items.length)} of ${items.length}…` : null, "info");
      const r = await api("/api/probe/batch", { items: chunk, at, top: 12, scores: true });
      const data = await r.json();
      data.results.forEach((res, k) => { res.input = chunk[k]; results.push(res); });
    }
    banner(null);
  } catch (err) {
    banner(describeError(err));
  } finally {
    $("read-go").disabled = false;
  }
  if (results.length) {
    S.read = { results, active: 0, colour: null, source: source || "" };
    $("read-download").disabled = false;
    renderRead();
  }
}

function summaryBars(summary) {
  const box = el("div", "summary");
  const top = Math.max(1e-6, ...summary.map((s) => Math.abs(s.score)));
  for (const s of summary) {
    const row = el("div", "srow");
    const track = el("div", "strack");
    const bar = el("div", "sbar");
    bar.style.left = "0";
    bar.style.width = `${Math.max(2, (Math.abs(s.score) / top) * 100)}%`;
    bar.style.background = s.score >= 0 ? "rgba(220, 38, 38, .7)" : "rgba(37, 99, 235, .7)";
    track.append(bar);
    const name = el("span", "sname", s.emotion);
    name.title = s.emotion;
    row.append(name, track, el("span", "sval", fmt(s.score)));
    box.append(row);
  }
  return box;
}

function renderRead() {
  const out = $("read-results");
  out.replaceChildren();
  const { results, active } = S.read;
  const res = results[active];
  const card = el("div", "card result");
  const left = el("div");
  const head = el("div", "card-head");
  const from = S.read.source ? ` (${S.read.source})` : "";
  head.append(el("h3", "", results.length > 1 ? `Text ${active + 1} of ${results.length}${from}` : `Tokens${from}`));
  const select = el("select");
  select.setAttribute("aria-label", "colour tokens by");
  for (const s of res.summary) select.append(new Option(`colour: ${s.emotion}`, s.emotion));
  select.append(new Option("colour: strongest emotion", "__strongest"));
  select.value = S.read.colour && [...select.options].some((o) => o.value === S.read.colour) ? S.read.colour : res.summary[0].emotion;
  select.addEventListener("change", () => { S.read.colour = select.value; renderRead(); });
  head.append(select);
  left.append(head);
  const text = el("div", "text");
  const recs = res.tokens.map((t, i) => ({ text: t.token, scores: res.scores ? res.scores[i] : null, top: t.top, index: i, where: "text" }));
  recs.forEach((rec, i) => {
    const span = tokenSpan(rec);
    if (i < res.pool_start) { span.style.opacity = "0.55"; span.title = "not pooled (token skip)"; }
    if (i === res.assistant_start) span.classList.add("alerted");
    text.append(span);
  });
  const colour = select.value === "__strongest" ? colourScale(recs, "strongest") : colourScale(recs, "emotion", select.value);
  paint(text, colour);
  wireTooltips(text);
  left.append(text);
  const notes = [`${res.n_tokens} tokens, layer ${res.layers.join(",")}, ${res.mode} read-out`];
  if (res.pool_start > 0) notes.push(`the first ${res.pool_start} (faded) are not pooled`);
  if (res.assistant_start !== null && res.assistant_start !== undefined) notes.push(`underlined: assistant_start (token ${res.assistant_start})`);
  left.append(el("p", "muted small", notes.join("; ")));
  const right = el("div");
  right.append(el("h3", "", res.summary_at === "pooled" ? "Summary (pooled over the text)" : `Summary at token ${res.summary_at}`));
  right.append(summaryBars(res.summary));
  card.append(left, right);
  out.append(card);
  if (results.length > 1) {
    const list = el("div", "card result-list");
    list.append(el("h3", "", "All texts"));
    results.forEach((r, i) => {
      const item = el("div", "result-item" + (i === active ? " active" : ""));
      const src = r.input.text !== undefined ? r.input.text : r.input.messages.map((m) => m.content).join(" / ");
      item.append(el("b", "", `${i + 1}. `), el("span", "", src.slice(0, 90) + (src.length > 90 ? "…" : "")),
                  el("span", "muted", ` \u2014 ${r.summary.slice(0, 3).map((s) => `${s.emotion} ${fmt(s.score)}`).join(", ")}`));
      item.addEventListener("click", () => { S.read.active = i; S.read.colour = null; renderRead(); });
      list.append(item);
    });
    out.append(list);
  }
}

function downloadRead() {
  const payload = { model: S.info && S.info.model.name, results: S.read.results };
  const blob = new Blob([JSON.stringify(payload, null, 1)], { type: "application/json" });
  const a = el("a");
  a.href = URL.createObjectURL(blob);
  a.download = "emolens-readout.json";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

// ---- start --------------------------------------------------------------------------------------
function wire() {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      for (const t of document.querySelectorAll(".tab")) {
        const on = t === tab;
        t.classList.toggle("active", on);
        t.setAttribute("aria-selected", String(on));
        $(t.dataset.panel).classList.toggle("active", on);
      }
      hideTooltip();
    });
  }
  $("composer").addEventListener("submit", (ev) => { ev.preventDefault(); sendMessage(false); });
  $("message").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); sendMessage(false); }
  });
  $("compare").addEventListener("click", () => sendMessage(true));
  $("regenerate").addEventListener("click", regenerate);
  $("stop").addEventListener("click", () => { if (S.abort) S.abort.abort(); });
  $("clear").addEventListener("click", clearChat);
  $("colour-mode").addEventListener("change", () => {
    const one = $("colour-mode").value === "emotion";
    $("colour-emotion-box").hidden = !one;
    if (one) $("colour-emotion").focus();
    scheduleRecolour();
  });
  $("colour-emotion").addEventListener("input", () => {
    const e = findEmotion($("colour-emotion").value);
    $("colour-emotion").classList.toggle("bad", !e && $("colour-emotion").value.trim() !== "");
    if (e) scheduleRecolour();
  });
  const addSteer = () => {
    const e = findEmotion($("steer-search").value);
    if (!e) { $("steer-search").classList.add("bad"); banner(`no emotion ${JSON.stringify($("steer-search").value)} in this vector file`); return; }
    $("steer-search").classList.remove("bad");
    $("steer-search").value = "";
    addSlider(e, 0);
  };
  $("steer-add").addEventListener("click", addSteer);
  $("steer-search").addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); addSteer(); } });
  const addRule = () => {
    const problem = checkRule($("rule-input").value);
    if (problem) { $("rule-input").classList.add("bad"); banner(problem); return; }
    $("rule-input").classList.remove("bad");
    S.rules.push($("rule-input").value.trim());
    $("rule-input").value = "";
    renderRules();
  };
  $("rule-add").addEventListener("click", addRule);
  $("rule-input").addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); addRule(); } });
  $("guard-add").addEventListener("click", () => {
    const problem = checkRule($("guard-rule").value);
    if (problem) { $("guard-rule").classList.add("bad"); banner(problem); return; }
    let steer;
    try { steer = parseSteer($("guard-steer").value); } catch (err) { $("guard-steer").classList.add("bad"); banner(err.message); return; }
    $("guard-rule").classList.remove("bad"); $("guard-steer").classList.remove("bad");
    S.guards.push({ rule: $("guard-rule").value.trim(), steer });
    $("guard-rule").value = ""; $("guard-steer").value = "";
    renderRules();
  });
  $("timeline-add").addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter") return;
    ev.preventDefault();
    const e = findEmotion($("timeline-add").value);
    if (!e) { $("timeline-add").classList.add("bad"); return; }
    $("timeline-add").classList.remove("bad");
    $("timeline-add").value = "";
    if (!S.plotted.includes(e)) S.plotted.push(e);
    renderChips(); drawTimeline();
  });
  $("timeline-add").addEventListener("change", () => {
    const e = findEmotion($("timeline-add").value);
    if (e && !S.plotted.includes(e)) { S.plotted.push(e); $("timeline-add").value = ""; renderChips(); drawTimeline(); }
  });
  $("read-go").addEventListener("click", () => {
    const text = $("read-text").value;
    if (!text.trim()) { $("read-text").focus(); return; }
    readItems([{ text }]);
  });
  $("read-file").addEventListener("change", async () => {
    const file = $("read-file").files[0];
    if (!file) return;
    try { readItems(parseJsonl(await file.text()), file.name); } catch (err) { banner(`${file.name}: ${err.message}`); }
    $("read-file").value = "";
  });
  $("read-download").addEventListener("click", downloadRead);
  wireTooltips($("conversation"));
  window.addEventListener("resize", () => drawTimeline());
}

async function start() {
  wire();
  try {
    const [info, emotions] = await Promise.all([(await api("/api/info")).json(), (await api("/api/emotions")).json()]);
    S.info = info;
    S.emotions = emotions.emotions;
    S.eindex = Object.fromEntries(S.emotions.map((e, i) => [e, i]));
    const list = $("emotion-list");
    for (const e of S.emotions) list.append(new Option(e));
    $("steer-search").placeholder = `search ${S.emotions.length} emotions`;
    const v = info.vectors;
    $("model-line").textContent = `${info.model.name} \u00b7 ${info.n_layers} layers \u00b7 ${v.n_emotions} emotions \u00b7 read-out layer ${info.read_out_layers.join(",")} (${v.mode})`;
    $("max-tokens").max = String(info.limits.max_new_tokens);
    if (info.report) { $("report-link").hidden = false; $("report-link").href = info.report; }
    document.body.dataset.ready = "1";
  } catch (err) {
    $("model-line").textContent = "server not reachable";
    banner(describeError(err));
  }
}

start();
