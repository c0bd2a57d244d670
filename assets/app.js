/* millwatch dashboard: a card per machine and a detail chart, kept live by GET /events.
   Plain JavaScript, no build step; uPlot (vendored under /assets/vendor/uplot) draws charts.

   Two rules shape this file:
   - Everything that came from the server reaches the DOM through textContent or attribute
     setters, never innerHTML: machine ids and state values are user data.
   - An event only updates bounded buffers and marks its machine dirty; the DOM is touched
     once per animation frame, in place, for the dirty machines only. So 50 machines at a
     reading a second each cost a few text updates and sparkline redraws per frame, and a
     hidden tab (no frames) accumulates nothing but the bounded buffers. */
(() => {
  "use strict";

  const SPARK_POINTS = 300; // points kept per parameter for a card's sparkline
  const SPARK_PARAMS = 6; // sparklines per card at most; further parameters show values only
  const LIVE_MAX = 10000; // points the detail chart keeps while it follows live readings
  const ANOMALIES_SHOWN = 200; // rows of the anomaly list; the chart marks them all
  const STALE_MS = 15000; // a machine without a reading for this long is dimmed
  const FRAME_BUDGET_MS = 8; // sparkline drawing per frame; the rest waits for the next one
  const STATUSES = ["IDLE", "STARTED", "RUNNING", "PAUSED", "COMPLETED", "FAILED"];
  // Long ranges ask /analytics for buckets: 360 or 1440 points instead of up to 86400.
  const RANGES = {
    "5m": { ms: 5 * 60e3, bucket: null, refresh: 10e3 },
    "1h": { ms: 3600e3, bucket: "10s", refresh: 30e3 },
    "24h": { ms: 86400e3, bucket: "1m", refresh: 60e3 },
    // Everything stored: the newest 10000 readings drawn, analytics over all of them.
    all: { ms: Infinity, bucket: null, refresh: 60e3 },
  };
  const THRESHOLDS = [0.05, 0.1, 0.2, 0.3, 0.5, 1]; // anomaly thresholds offered, as fractions
  const BASELINES = { global: "average of the range", moving: "moving average" };

  const $ = (id) => document.getElementById(id);
  const grid = $("grid");

  /** An element with an optional class and text; the only way this page makes DOM. */
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = String(text);
    return e;
  }

  /** Sets text only when it changed: cheaper than a write that invalidates layout. */
  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  /** Digits independent of the locale, so a wall screen and a test read the same thing. */
  function fmt(v) {
    if (typeof v !== "number" || !isFinite(v)) return "–";
    const a = Math.abs(v);
    const digits = a >= 1000 ? 0 : a >= 100 ? 1 : a >= 1 ? 2 : 3;
    return String(Number(v.toFixed(digits)));
  }

  function fmtDuration(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${s % 60}s`;
    const h = Math.floor(m / 60);
    if (h < 24) return `${h}h ${m % 60}m`;
    return `${Math.floor(h / 24)}d ${h % 24}h`;
  }

  // Times: one fixed pattern (not the browser's locale), in the browser's zone, which the page
  // names once (header) and the detail view beside its times.
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  const zoneName = (() => {
    let name = "";
    try {
      name = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    } catch (_) {
      /* no Intl: the offset alone */
    }
    const off = -new Date().getTimezoneOffset();
    const utc = `UTC${off < 0 ? "-" : "+"}${pad(Math.floor(Math.abs(off) / 60))}:${pad(Math.abs(off) % 60)}`;
    return name && name !== "UTC" ? `${name} (${utc})` : "UTC";
  })();
  const fmtDate = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  const fmtClock = (d) => `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  /** 2024-10-27 12:00:40, in the page's zone. */
  const fmtTime = (ms) => {
    const d = new Date(ms);
    return `${fmtDate(d)} ${fmtClock(d)}`;
  };
  const statusClass = (s) => "badge st-" + (STATUSES.includes(s) ? s : "IDLE");

  /** GET a JSON document; a non-2xx answer throws with the server's `error` message. */
  async function getJSON(path) {
    const r = await millwatchAuth.fetch(path, { headers: { accept: "application/json" } });
    let body = null;
    try {
      body = await r.json();
    } catch (_) {
      /* not JSON: reported below by status */
    }
    if (!r.ok) {
      const e = new Error((body && body.error) || `${r.status} ${r.statusText}`);
      e.status = r.status;
      throw e;
    }
    return body;
  }

  // ---- Theme: chart colours come from the CSS variables, so light and dark stay in one place.
  const darkQuery = matchMedia("(prefers-color-scheme: dark)");
  let colors = themeColors();
  function themeColors() {
    const s = getComputedStyle(document.documentElement);
    const v = (n) => s.getPropertyValue(n).trim();
    return {
      fg: v("--fg"), muted: v("--muted"), grid: v("--grid"), accent: v("--accent"),
      avg: v("--avg"), anomaly: v("--anomaly"), band: v("--band"),
    };
  }
  darkQuery.addEventListener("change", () => {
    colors = themeColors();
    for (const m of machines.values()) {
      for (const p of m.params.values()) if (p.spark) (p.spark.destroy(), (p.spark = null));
      markDirty(m);
    }
    if (detail.plot) (detail.plot.destroy(), (detail.plot = null), loadChart());
  });

  // ---- Machines: the model (bounded buffers) and the card that shows it.
  /** machine id -> { id, status, since, allowedNext, latest, params, states, card parts } */
  const machines = new Map();
  const dirty = new Set();
  let frame = 0;

  // Sparklines waiting to be drawn. A simulator or gateway often sends every machine's reading
  // in the same instant; drawing 100 sparklines in one frame would stall it, so the drawing is
  // spread over frames within a time budget. A Set coalesces: a sparkline is drawn once
  // however many readings came in meanwhile, and keeps its place in the line.
  const sparkQueue = new Set();

  function markDirty(m) {
    dirty.add(m);
    schedule();
  }

  function schedule() {
    if (!frame) frame = requestAnimationFrame(flush);
  }

  // Sparklines of cards off screen are not redrawn; their buffers still follow.
  const onScreen = new IntersectionObserver((entries) => {
    for (const e of entries) {
      const m = machines.get(e.target.dataset.machine);
      if (!m) continue;
      m.visible = e.isIntersecting;
      if (m.visible) markDirty(m);
    }
  });
  const sparkOf = new WeakMap();
  const sparkResize = new ResizeObserver((entries) => {
    for (const e of entries) {
      const p = sparkOf.get(e.target);
      const w = Math.floor(e.contentRect.width);
      if (p && p.spark && w > 0 && w !== p.spark.width) p.spark.setSize({ width: w, height: 36 });
    }
  });

  function machine(id) {
    let m = machines.get(id);
    if (m) return m;
    m = {
      id, status: "IDLE", since: null, allowedNext: null, latest: null, readingMs: 0,
      params: new Map(), states: new Map(), visible: true,
    };
    const card = (m.card = el("article", "card"));
    card.dataset.machine = id;
    card.tabIndex = 0;
    card.setAttribute("aria-label", `machine ${id}`);
    const head = el("div", "card-head");
    // The job status (set through POST /status or by an MES) and what the machine itself
    // reports (its state parameters) are two things: each is labelled as what it is.
    m.badge = el("span", statusClass(m.status), m.status);
    m.badge.dataset.kind = "job";
    m.badge.title = "job status (POST /status)";
    const job = el("span", "job");
    job.append(el("span", "job-label", "job"), m.badge);
    head.append(el("h2", "card-id", id), job);
    const meta = el("div", "card-meta");
    m.sinceEl = el("span", "since");
    m.seenEl = el("span", "seen");
    meta.append(m.sinceEl, m.seenEl);
    m.paramsEl = el("div", "params");
    m.statesEl = el("div", "states");
    m.statesEl.hidden = true;
    m.statesEl.append(el("span", "reports-label", "machine reports"));
    card.append(head, meta, m.paramsEl, m.statesEl);
    card.addEventListener("click", () => openDetail(id));
    card.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") (e.preventDefault(), openDetail(id));
    });
    // Keep the grid sorted by id, as GET /data/latest is: a new machine slots into place.
    let before = null;
    for (const c of grid.children) if (c.dataset.machine > id) { before = c; break; }
    grid.insertBefore(card, before);
    machines.set(id, m);
    card.classList.toggle("trouble", troubled(id));
    onScreen.observe(card);
    setText($("machine-count"), `${machines.size} machine${machines.size === 1 ? "" : "s"}`);
    $("empty").hidden = true;
    return m;
  }

  /** Takes a processed record into its machine's buffers; the DOM follows at the next frame. */
  function takeRecord(rec) {
    if (!rec || typeof rec.machine_id !== "string") return;
    const t = Date.parse(rec.timestamp);
    if (!isFinite(t)) return;
    const m = machine(rec.machine_id);
    if (t >= m.readingMs) (m.latest = rec), (m.readingMs = t);
    const x = t / 1000;
    for (const [k, v] of Object.entries(rec)) {
      if (typeof v !== "number" || k.endsWith("_avg")) continue;
      let buf = m.params.get(k);
      if (!buf) {
        m.params.set(k, (buf = { name: k, xs: [], ys: [], avgs: [], row: null }));
        if (detail.id === m.id) resyncSoon(); // the open detail view gains a parameter tab
      }
      pushPoint(buf, x, v, rec[k + "_avg"], SPARK_POINTS);
      if (detail.live && detail.id === m.id && detail.param === k) {
        pushPoint(detail.data, x, v, rec[k + "_avg"], LIVE_MAX, detail.data.marks);
        detail.dirty = true;
      }
    }
    markDirty(m);
  }

  /** Appends to column buffers, keeping x strictly increasing (uPlot needs sorted x): an older
   *  point is ignored, one at the same time replaces the last (a snapshot and the stream may
   *  both deliver it). Trimmed in chunks, so the copy happens once per 20 % of `max`. */
  function pushPoint(buf, x, y, avg, max, marks) {
    const n = buf.xs.length;
    avg = typeof avg === "number" ? avg : null;
    if (n && x < buf.xs[n - 1]) return;
    if (n && x === buf.xs[n - 1]) {
      buf.ys[n - 1] = y;
      buf.avgs[n - 1] = avg;
      return;
    }
    buf.xs.push(x), buf.ys.push(y), buf.avgs.push(avg);
    if (marks) marks.push(null);
    if (buf.xs.length > max * 1.2) {
      const cut = buf.xs.length - max;
      for (const a of [buf.xs, buf.ys, buf.avgs, marks]) if (a) a.splice(0, cut);
    }
  }

  /** A status from GET /status, POST /status or a `status` event. Older news never overwrites
   *  newer: a snapshot that raced with an event is ignored when its `since` is earlier. A null
   *  `since` (never set) is taken: a server restarted on a memory store has forgotten. */
  function applyStatus(s) {
    if (!s || typeof s.machine_id !== "string" || typeof s.status !== "string") return;
    const m = machine(s.machine_id);
    const since = s.since ? Date.parse(s.since) : null;
    if (m.since != null && since != null && since < m.since) return;
    m.status = s.status;
    m.since = since;
    if (Array.isArray(s.allowed_next)) m.allowedNext = s.allowed_next;
    markDirty(m);
    if (detail.id === m.id) renderDetailHead();
  }

  /** Refetches a machine's allowed next statuses: a `status` event does not carry them. */
  async function refreshStatus(id) {
    try {
      applyStatus(await getJSON(`/status/${encodeURIComponent(id)}`));
      if (detail.id === id) renderDetailHead();
    } catch (_) {
      /* the next event or reconnect refreshes it */
    }
  }

  let resyncTimer = 0;
  function resyncSoon() {
    if (!resyncTimer) resyncTimer = setTimeout(() => ((resyncTimer = 0), syncFromHash()), 200);
  }

  function flush() {
    const start = performance.now();
    frame = 0;
    for (const m of dirty) renderCard(m);
    const open = detail.id && machines.get(detail.id);
    if (open && dirty.has(open)) renderReports();
    dirty.clear();
    if (detail.dirty && detail.plot) {
      detail.dirty = false;
      const d = detail.data;
      detail.plot.setData([d.xs, d.ys, d.avgs, d.marks]);
      if (detail.plot.cursor.idx == null) renderLegend();
    }
    for (const p of sparkQueue) {
      if (performance.now() - start > FRAME_BUDGET_MS) return schedule();
      sparkQueue.delete(p);
      drawSpark(p);
    }
  }

  /** Updates one card in place: text of values and states, and the visible sparklines. */
  function renderCard(m) {
    setText(m.badge, m.status);
    if (m.badge.className !== statusClass(m.status)) m.badge.className = statusClass(m.status);
    tickCard(m, Date.now());
    const rec = m.latest;
    if (!rec) return;
    for (const [k, v] of Object.entries(rec)) {
      if (k === "machine_id" || k === "timestamp") continue;
      if (typeof v === "number" && !k.endsWith("_avg")) renderParam(m, m.params.get(k), v, rec[k + "_avg"]);
      else if (typeof v === "string") renderState(m, k, v);
    }
  }

  function renderParam(m, p, v, avg) {
    if (!p) return;
    if (!p.row) {
      p.row = el("div", "param");
      p.row.dataset.param = p.name;
      p.v = el("span", "v");
      p.a = el("span", "a");
      const value = el("span", "param-value");
      value.append(p.v, p.a);
      p.row.append(el("span", "param-name", p.name), value);
      if (m.paramsEl.children.length < SPARK_PARAMS) {
        p.sparkEl = el("div", "spark");
        // The sparkline's scale: the lowest and highest value it draws.
        p.rangeEl = el("div", "spark-range");
        p.minEl = el("span", "spark-min");
        p.maxEl = el("span", "spark-max");
        p.rangeEl.append(p.maxEl, p.minEl);
        p.row.append(p.sparkEl, p.rangeEl);
        sparkOf.set(p.sparkEl, p);
      }
      m.paramsEl.append(p.row);
      if (p.sparkEl) sparkResize.observe(p.sparkEl);
    }
    setText(p.v, fmt(v));
    setText(p.a, typeof avg === "number" ? `avg ${fmt(avg)}` : "");
    if (p.sparkEl && m.visible) sparkQueue.add(p);
  }

  function drawSpark(p) {
    const data = [p.xs, p.ys, p.avgs];
    let lo = Infinity, hi = -Infinity;
    for (const y of p.ys) (y < lo && (lo = y)), (y > hi && (hi = y));
    setText(p.maxEl, p.ys.length ? `max ${fmt(hi)}` : "");
    setText(p.minEl, p.ys.length ? `min ${fmt(lo)}` : "");
    // batch() draws now rather than in a microtask, so the frame budget sees the real cost.
    if (p.spark) p.spark.batch(() => p.spark.setData(data));
    else p.spark = new uPlot(sparkOptions(p.sparkEl.clientWidth || 240), data, p.sparkEl);
  }

  function renderState(m, name, value) {
    let s = m.states.get(name);
    if (!s) {
      s = { row: el("span", "state"), value: el("span", "state-value") };
      s.row.dataset.state = name;
      s.row.append(el("span", "muted", `${name}: `), s.value);
      m.statesEl.append(s.row);
      m.statesEl.hidden = false;
      m.states.set(name, s);
      if (detail.id === m.id) renderReports();
    }
    setText(s.value, value);
  }

  function sparkOptions(width) {
    const line = (stroke, w) => ({ stroke, width: w, points: { show: false } });
    return {
      width, height: 36, pxAlign: false,
      cursor: { show: false }, legend: { show: false }, select: { show: false },
      axes: [{ show: false }, { show: false }],
      series: [{}, line(colors.accent, 1.5), line(colors.avg, 1)],
    };
  }

  /** The per-second tick: time in state and age of the latest reading. */
  function tickCard(m, now) {
    setText(m.sinceEl, m.since == null ? "job status never set" : `job ${m.status.toLowerCase()} for ${fmtDuration(now - m.since)}`);
    setText(m.seenEl, m.readingMs ? `reading ${fmtDuration(now - m.readingMs)} ago` : "no readings");
    m.card.classList.toggle("stale", !m.readingMs || now - m.readingMs > STALE_MS);
  }
  setInterval(() => {
    const now = Date.now();
    for (const m of machines.values()) tickCard(m, now);
    const m = detail.id && machines.get(detail.id);
    if (m) setText($("detail-since"), m.since == null ? "never set" : `for ${fmtDuration(now - m.since)}`);
  }, 1000);

  // ---- The live stream. Events before the first snapshot is in are queued (bounded), so that
  // nothing falls between the snapshot and the stream; after a reconnect the snapshot is
  // reloaded, since a dropped client has missed events.
  let ready = false;
  let queued = [];
  let source = null;

  function setConn(state, text) {
    $("conn").className = `conn conn-${state}`;
    setText($("conn-text"), text);
  }

  function onEvent(kind, e) {
    let data;
    try {
      data = JSON.parse(e.data);
    } catch (_) {
      return;
    }
    if (!ready) {
      if (queued.length < 20000) queued.push([kind, data]);
      return;
    }
    handle(kind, data);
  }

  // ---- Firing alerts: a bar above the grid, and a red edge on the card of each machine that
  // has one. Keyed by rule and machine; pending alerts are not shown.
  const firing = new Map();

  function troubled(id) {
    for (const a of firing.values()) if (a.machine_id === id) return true;
    return false;
  }

  function takeAlert(a) {
    const key = `${a.rule}\u0000${a.machine_id}`;
    if (a.state === "firing") firing.set(key, a);
    else firing.delete(key);
  }

  function renderAlerts() {
    const list = $("alert-list");
    list.replaceChildren();
    const shown = [...firing.values()].sort((a, b) =>
      a.machine_id === b.machine_id ? (a.rule < b.rule ? -1 : 1) : a.machine_id < b.machine_id ? -1 : 1);
    for (const a of shown) {
      const li = el("li", `alert alert-${a.severity}`);
      li.dataset.rule = a.rule;
      li.dataset.machine = a.machine_id;
      const what = a.parameter ? ` ${a.parameter} ${a.value ?? ""}` : "";
      li.append(el("strong", null, a.machine_id), el("span", null, ` ${a.rule}${what}`));
      li.title = `${a.severity}, since ${a.since}, fired ${a.fired_at}`;
      li.addEventListener("click", () => openDetail(a.machine_id));
      list.append(li);
    }
    setText($("alert-count"), `${shown.length} firing`);
    $("alert-bar").hidden = shown.length === 0;
    for (const m of machines.values()) m.card.classList.toggle("trouble", troubled(m.id));
  }

  function handle(kind, data) {
    if (kind === "reading") return takeRecord(data);
    if (kind === "alert") {
      takeAlert(data.alert);
      return renderAlerts();
    }
    applyStatus(data);
    refreshStatus(data.machine_id);
  }

  function connect() {
    let lost = false;
    source = new millwatchAuth.EventSource("/events"); // auth.js: carries the token
    source.onopen = () => {
      setConn("connected", "live");
      if (lost) loadSnapshot();
      lost = false;
    };
    source.onerror = () => {
      lost = true;
      setConn("reconnecting", "reconnecting…");
      // EventSource retries by itself unless the answer was fatal (CLOSED): then we do.
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        setTimeout(connect, 3000);
      }
    };
    source.addEventListener("reading", (e) => onEvent("reading", e));
    source.addEventListener("status", (e) => onEvent("status", e));
    source.addEventListener("alert", (e) => onEvent("alert", e));
  }

  async function loadSnapshot() {
    try {
      const [latest, statuses, alerts] = await Promise.all([
        getJSON("/data/latest"), getJSON("/status"), getJSON("/alerts").catch(() => []),
      ]);
      // Recent history for the sparklines, for all machines in one request.
      const limit = Math.min(10000, SPARK_POINTS * Math.max(1, latest.length));
      const history = await getJSON(`/data?limit=${limit}`).catch(() => []);
      for (const r of history) takeRecord(r);
      for (const r of latest) takeRecord(r);
      for (const s of statuses) applyStatus(s);
      firing.clear();
      for (const a of alerts) takeAlert(a);
      renderAlerts();
      $("empty").hidden = machines.size > 0;
    } catch (e) {
      setTimeout(loadSnapshot, 3000);
      return;
    }
    if (!ready) {
      ready = true;
      for (const [kind, data] of queued) handle(kind, data);
      queued = [];
    }
  }

  // ---- The detail view of one machine: status buttons, a chart and the anomalies.
  // Its state lives in the URL hash (#machine=ID&param=P&range=1h), so it can be linked.
  const detail = {
    id: null, param: null, range: "5m", plot: null, mode: null, live: false, dirty: false,
    data: null, timer: 0, seq: 0,
  };

  function openDetail(id) {
    location.hash = new URLSearchParams({ machine: id }).toString();
  }

  function setHash(changes) {
    const q = new URLSearchParams(location.hash.slice(1));
    for (const [k, v] of Object.entries(changes)) q.set(k, v);
    history.replaceState(null, "", "#" + q.toString());
    syncFromHash();
  }

  function closeDetail() {
    history.replaceState(null, "", location.pathname + location.search);
    syncFromHash();
  }

  function syncFromHash() {
    const q = new URLSearchParams(location.hash.slice(1));
    const id = q.get("machine");
    clearInterval(detail.timer);
    const range = RANGES[q.get("range")] ? q.get("range") : "5m";
    if (window.millwatchStates) window.millwatchStates.detail(id ? { id, ms: RANGES[range].ms } : null);
    if (!id) {
      $("detail").hidden = true;
      if (detail.plot) detail.plot.destroy();
      Object.assign(detail, { id: null, plot: null, mode: null, live: false, data: null });
      return;
    }
    const opening = detail.id !== id;
    detail.id = id;
    detail.param = q.get("param");
    detail.range = RANGES[q.get("range")] ? q.get("range") : "5m";
    const t = Number(q.get("threshold"));
    detail.threshold = THRESHOLDS.includes(t) ? t : 0.2;
    detail.baseline = BASELINES[q.get("baseline")] ? q.get("baseline") : "global";
    $("threshold").value = String(detail.threshold);
    $("baseline").value = detail.baseline;
    $("detail").hidden = false;
    if (opening) (setText($("status-error"), ""), ($("status-error").hidden = true));
    renderDetailHead();
    renderReports();
    const m = machines.get(id);
    const params = m ? [...m.params.keys()] : [];
    if (!params.includes(detail.param)) detail.param = params[0] || null;
    const tabs = $("param-tabs");
    tabs.replaceChildren(
      ...params.map((p) => {
        const b = el("button", null, p);
        b.type = "button";
        b.setAttribute("role", "tab");
        b.setAttribute("aria-selected", String(p === detail.param));
        b.addEventListener("click", () => setHash({ param: p }));
        return b;
      }),
    );
    for (const b of $("range-tabs").children) b.setAttribute("aria-selected", String(b.dataset.range === detail.range));
    loadChart();
    detail.timer = setInterval(loadChart, RANGES[detail.range].refresh);
    // Focus moves into the dialog (the panel itself, so no control looks pressed).
    if (opening) document.querySelector(".detail-panel").focus();
  }

  function renderDetailHead() {
    const m = machines.get(detail.id);
    setText($("detail-title"), detail.id);
    const badge = $("detail-status");
    const status = m ? m.status : "IDLE";
    setText(badge, status);
    badge.className = statusClass(status);
    setText($("detail-since"), !m || m.since == null ? "never set" : `for ${fmtDuration(Date.now() - m.since)}`);
    // A machine first seen in the stream has no offer yet: ask for it once.
    if (m && !m.allowedNext && !m.askedOffer) (m.askedOffer = true), refreshStatus(m.id);
    const buttons = (m && m.allowedNext) || [];
    const box = $("status-buttons");
    // Rebuilt only when the offer changed, so a click in flight keeps its button.
    const offer = `${detail.id}|${!!m}|${buttons.join(",")}`;
    if (box.dataset.offer === offer) return;
    box.dataset.offer = offer;
    box.replaceChildren(
      ...buttons.map((s) => {
        const b = el("button", "st-" + (STATUSES.includes(s) ? s : "IDLE"), s);
        b.type = "button";
        b.dataset.status = s;
        b.addEventListener("click", () => setStatus(detail.id, s));
        return b;
      }),
    );
    if (!buttons.length) box.append(el("span", "muted", m ? "…" : "unknown machine"));
  }

  /** What the machine itself reports (its state parameters), apart from its job status. */
  function renderReports() {
    const m = machines.get(detail.id);
    const box = $("detail-reports");
    const rec = m && m.latest;
    const items = [];
    if (rec) {
      for (const [k, v] of Object.entries(rec)) {
        if (k === "machine_id" || k === "timestamp" || typeof v !== "string") continue;
        const s = el("span", "state");
        s.dataset.state = k;
        s.append(el("span", "muted", `${k}: `), el("span", "state-value", v));
        items.push(s);
      }
    }
    const shown = items.map((i) => i.textContent).join("|");
    if (box.dataset.shown === shown) return;
    box.dataset.shown = shown;
    box.replaceChildren(...items);
    if (!items.length) box.append(el("span", "muted", "no state parameters"));
  }

  /** POST /status; a refusal (409, 400) shows the server's own message. */
  async function setStatus(id, status) {
    const box = $("status-buttons");
    const error = $("status-error");
    for (const b of box.querySelectorAll("button")) b.disabled = true;
    error.hidden = true;
    try {
      // states.js asks for an optional reason (PAUSED, FAILED); null: the user cancelled.
      const extra = window.millwatchStates ? await window.millwatchStates.askReason(status) : {};
      if (extra === null) throw null;
      const r = await millwatchAuth.fetch("/status", {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json" },
        body: JSON.stringify({ machine_id: id, status, ...extra }),
      });
      const body = await r.json().catch(() => null);
      if (r.ok) applyStatus(body);
      else (setText(error, (body && body.error) || `refused: ${r.status}`), (error.hidden = false));
    } catch (e) {
      if (e !== null) (setText(error, `could not reach the server: ${e.message}`), (error.hidden = false));
    }
    delete box.dataset.offer;
    await refreshStatus(id);
    if (detail.id === id) renderDetailHead();
  }

  const iso = (ms) => new Date(ms).toISOString();
  const enc = encodeURIComponent;

  /** Loads the chart of the open machine, parameter and range. The range ends now, or at
   *  the machine's latest reading when that is older than the range (old or backfilled data
   *  still shows); "all" takes everything stored. Short ranges are raw records (value and
   *  moving average) that follow the live stream while they end now; 1 h and 24 h are
   *  /analytics buckets (average, min-max band). Anomalies come from /analytics with the
   *  threshold and baseline chosen; without it (an error) the chart is drawn from /data alone. */
  async function loadChart() {
    const seq = ++detail.seq;
    const { id, param, range } = detail;
    const R = RANGES[range];
    const note = $("chart-note");
    if (!param) {
      if (detail.plot) (detail.plot.destroy(), (detail.plot = null));
      setText(note, "No numeric parameters yet.");
      setText($("chart-span"), "");
      $("summary").replaceChildren();
      $("anomalies").replaceChildren();
      setText($("anomaly-count"), "");
      return;
    }
    const m = machines.get(id);
    const now = Date.now();
    const latestMs = m && m.readingMs ? m.readingMs : now;
    const all = !isFinite(R.ms);
    // Anchored at the latest reading when that is older than the range would reach.
    const anchored = !all && latestMs < now - R.ms;
    const until = anchored ? latestMs : now;
    const since = all ? null : until - R.ms;
    const bounds = (since == null ? "" : `&since=${iso(since)}`) + (all ? "" : `&until=${iso(until)}`);
    const base = `machine_id=${enc(id)}${bounds}`;
    const opts = `&threshold=${detail.threshold}&baseline=${detail.baseline}`;
    const aq = `/analytics?${base}&parameter=${enc(param)}${opts}` + (R.bucket ? `&bucket=${R.bucket}` : "");
    const rawQuery = () => getJSON(`/data?${base}&limit=10000`);
    const [analytics, records] = await Promise.all([
      getJSON(aq).catch(() => null),
      R.bucket ? null : rawQuery().catch(() => []),
    ]);
    let raw = records;
    let text = "";
    if (R.bucket && !(analytics && Array.isArray(analytics.buckets))) {
      raw = await rawQuery().catch(() => []);
      text = "Analytics unavailable: the newest readings of the range, up to 10000.";
    } else if (!analytics) {
      text = "Analytics unavailable: anomalies are not marked.";
    } else if (all && analytics.count > (raw ? raw.length : 0)) {
      text = `The chart shows the newest ${raw.length} of ${analytics.count} readings; the summary and anomalies cover all.`;
    }
    if (seq !== detail.seq) return; // a newer load has started
    setText(note, text);

    const anomalies = (analytics && Array.isArray(analytics.anomalies) ? analytics.anomalies : [])
      .map((a) => ({ x: Date.parse(a.timestamp) / 1000, value: a.value, deviation: a.deviation }))
      .filter((a) => isFinite(a.x));
    let mode, cols;
    if (raw) {
      mode = "raw";
      const d = { xs: [], ys: [], avgs: [] };
      for (const r of raw) if (typeof r[param] === "number") pushPoint(d, Date.parse(r.timestamp) / 1000, r[param], r[param + "_avg"], Infinity);
      cols = [d.xs, d.ys, d.avgs];
    } else {
      mode = "buckets";
      const b = analytics.buckets;
      cols = [b.map((k) => Date.parse(k.start) / 1000), b.map((k) => k.max), b.map((k) => k.average), b.map((k) => k.min)];
    }
    const data = withMarks(cols, anomalies);
    // Only a raw view that ends now follows the stream; the others are reloaded on a timer.
    detail.live = mode === "raw" && !all && !anchored;
    detail.data = { xs: data[0], ys: data[1], avgs: data[2], marks: data[data.length - 1] };
    if (detail.plot && detail.mode !== mode + param) (detail.plot.destroy(), (detail.plot = null));
    detail.mode = mode + param;
    if (detail.plot) detail.plot.setData(data);
    else detail.plot = new uPlot(chartOptions(mode, param), data, $("chart"));
    // The span shown: what the range covers, and why it ends where it does.
    const xs = cols[0];
    const from = since != null ? since : xs.length ? xs[0] * 1000 : null;
    const to = all ? (xs.length ? xs[xs.length - 1] * 1000 : null) : until;
    let span = from != null && to != null ? `${fmtTime(from)} – ${fmtTime(to)} ${zoneName}` : "no readings stored";
    if (anchored) span += ` · ending at the latest reading (${fmtDuration(now - latestMs)} ago)`;
    setText($("chart-span"), span);
    renderLegend();
    renderSummary(analytics, cols, mode);
    renderAnomalies(anomalies);
  }

  /** Adds the anomaly series: its value at an anomaly's time, null elsewhere. A time that is
   *  not on the x axis (a bucketed chart) is inserted, with nulls for the line series. */
  function withMarks(cols, anomalies) {
    const xs = cols[0];
    const at = new Map(xs.map((x, i) => [x, i]));
    const marks = new Array(xs.length).fill(null);
    const extra = [];
    for (const a of anomalies) {
      if (at.has(a.x)) marks[at.get(a.x)] = a.value;
      else extra.push(a);
    }
    if (!extra.length) return [...cols, marks];
    const rows = xs.map((x, i) => [...cols.map((c) => c[i]), marks[i]]);
    for (const a of extra) rows.push([a.x, ...cols.slice(1).map(() => null), a.value]);
    rows.sort((p, q) => p[0] - q[0]);
    return cols.concat([marks]).map((_, j) => rows.map((r) => r[j]));
  }

  /** Tick labels of the time axis in one pattern for the whole axis, chosen by the span and
   *  the tick step, so that no two labels differ only in a part they do not show. */
  function timeTicks(u, splits, _axis, _space, step) {
    const span = (u.scales.x.max - u.scales.x.min) || 0;
    return splits.map((x) => {
      const d = new Date(x * 1000);
      if (span > 60 * 86400) return fmtDate(d);
      const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
      const clock = step < 60 ? fmtClock(d) : hm;
      return span > 86400 ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hm}` : clock;
    });
  }

  function chartOptions(mode, param) {
    const line = (label, stroke, width, extra) => ({ label, stroke, width, spanGaps: true, points: { show: false }, ...extra });
    const axis = { stroke: colors.fg, grid: { stroke: colors.grid }, ticks: { stroke: colors.grid } };
    const marks = {
      label: "anomaly", stroke: colors.anomaly, fill: colors.anomaly, paths: () => null,
      points: { show: true, size: 9, stroke: colors.anomaly, fill: colors.anomaly },
    };
    const series =
      mode === "raw"
        ? [{}, line(param, colors.accent, 1.5), line("moving avg", colors.avg, 2), marks]
        : [{}, line("max", colors.muted, 1, { dash: [4, 4] }), line(`${param} avg`, colors.accent, 2), line("min", colors.muted, 1, { dash: [4, 4] }), marks];
    const chart = $("chart");
    return {
      width: chart.clientWidth || 800,
      height: Math.max(220, Math.min(380, Math.round(innerHeight * 0.4))),
      series,
      // Room at the right for the last time label, which is centred on its tick.
      padding: [12, 36, 0, 0],
      // Our own legend (below the chart) shows the latest values, and the hovered ones.
      legend: { show: false },
      hooks: { setCursor: [(u) => renderLegend(u.cursor.idx)] },
      axes: [
        // At least 110 px between labels: the widest label ("10-27 12:00") never meets the next.
        { ...axis, space: 110, values: timeTicks },
        { ...axis, size: 64, values: (u, splits) => splits.map(fmt) },
      ],
      bands: mode === "raw" ? [] : [{ series: [1, 3], fill: colors.band }],
    };
  }

  /** The legend: each series' value at the hovered point, or else its latest value. */
  function renderLegend(idx) {
    const box = $("legend");
    const plot = detail.plot;
    if (!plot) return box.replaceChildren();
    const data = plot.data;
    const n = data[0].length;
    const at = (j) => {
      const col = data[j];
      if (idx != null && idx >= 0 && idx < n) return [col[idx], data[0][idx]];
      for (let i = n - 1; i >= 0; i--) if (col[i] != null) return [col[i], data[0][i]];
      return [null, null];
    };
    const items = [];
    let when = null;
    plot.series.forEach((s, j) => {
      if (j === 0) return;
      const [v, x] = at(j);
      if (j === 1 && x != null) when = x;
      // An anomaly is shown only when the hovered point is one, not as "the latest".
      if (s.label === "anomaly" && (v == null || idx == null)) return;
      const item = el("span", "legend-item");
      item.dataset.series = s.label;
      const swatch = el("span", "swatch");
      swatch.style.background = typeof s.stroke === "function" ? s.stroke(plot, j) : s.stroke;
      item.append(swatch, el("span", "muted", `${s.label} `), el("b", "legend-value", fmt(v)));
      items.push(item);
    });
    const head = el("span", "legend-time muted", when != null ? `${idx != null ? "at" : "latest"} ${fmtTime(when * 1000)}` : "");
    box.replaceChildren(head, ...items);
  }

  new ResizeObserver(() => {
    const w = $("chart").clientWidth;
    if (detail.plot && w > 0 && w !== detail.plot.width) detail.plot.setSize({ width: w, height: detail.plot.height });
  }).observe($("chart"));

  function renderSummary(a, cols, mode) {
    const box = $("summary");
    const item = (label, value) => {
      const s = el("span", null, `${label} `);
      s.append(el("b", null, value));
      return s;
    };
    if (a && typeof a.count === "number") {
      const at = (p) => (p && p.value != null ? `${fmt(p.value)} (${fmtTime(Date.parse(p.timestamp))})` : "–");
      box.replaceChildren(item("readings", String(a.count)), item("average", fmt(a.average)), item("min", at(a.min)), item("max", at(a.max)), item("anomaly when beyond", `±${fmt((a.threshold || 0) * 100)} % of the ${BASELINES[detail.baseline]}`));
    } else if (mode === "raw") {
      const ys = cols[1];
      const sum = ys.reduce((s, v) => s + v, 0);
      box.replaceChildren(item("readings", String(ys.length)), item("average", ys.length ? fmt(sum / ys.length) : "–"), item("min", ys.length ? fmt(Math.min(...ys)) : "–"), item("max", ys.length ? fmt(Math.max(...ys)) : "–"));
    } else box.replaceChildren();
  }

  function renderAnomalies(list) {
    setText($("anomaly-count"), list.length > ANOMALIES_SHOWN ? `(${list.length}, newest ${ANOMALIES_SHOWN} listed)` : `(${list.length})`);
    const rows = list.slice(-ANOMALIES_SHOWN).reverse().map((a) => {
      const dev = typeof a.deviation === "number" ? `${a.deviation > 0 ? "+" : ""}${fmt(a.deviation * 100)} %` : "average 0";
      return el("li", null, `${fmtTime(a.x * 1000)}: ${fmt(a.value)} (${dev})`);
    });
    $("anomalies").replaceChildren(...rows);
  }

  // ---- Wiring.
  for (const b of $("range-tabs").children) b.addEventListener("click", () => setHash({ range: b.dataset.range }));
  $("threshold").replaceChildren(...THRESHOLDS.map((t) => {
    const o = el("option", null, `±${fmt(t * 100)} %`);
    o.value = String(t);
    return o;
  }));
  $("baseline").replaceChildren(...Object.entries(BASELINES).map(([k, label]) => {
    const o = el("option", null, label);
    o.value = k;
    return o;
  }));
  $("threshold").addEventListener("change", (e) => setHash({ threshold: e.target.value }));
  $("baseline").addEventListener("change", (e) => setHash({ baseline: e.target.value }));
  setText($("zone"), `times in ${zoneName}`);
  $("detail-close").addEventListener("click", closeDetail);
  $("detail").addEventListener("click", (e) => e.target === $("detail") && closeDetail());
  document.addEventListener("keydown", (e) => e.key === "Escape" && detail.id && closeDetail());
  window.addEventListener("hashchange", syncFromHash);

  connect(); // first: events from now on are queued until the snapshot below is in
  loadSnapshot().then(() => {
    $("empty").hidden = machines.size > 0;
    if (location.hash) syncFromHash();
  });
})();
