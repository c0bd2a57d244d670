/* millwatch dashboard, time in state and OEE (SPEC §8): today's availability on each card; in
   the detail view a state timeline strip over the chosen range, the stop reasons as a Pareto
   list and OEE per shift with its three factors; and an optional reason asked for when a
   job is PAUSED or FAILED.

   Kept apart from app.js, which calls in through three hooks on window.millwatchStates:
   askReason(status) before POST /status, detail({id, ms}) when the detail view opens,
   changes range or closes, and nothing else; the cards are found in the DOM. As in app.js,
   server data reaches the DOM through textContent and attributes only. */
(() => {
  "use strict";

  const CARD_REFRESH_MS = 60e3; // how often a card's availability is asked for again
  const DETAIL_REFRESH_MS = 30e3;
  const STOPS = ["PAUSED", "FAILED"];
  const COLORS = {
    RUNNING: "var(--ok)", STARTED: "var(--accent)", PAUSED: "var(--warn)",
    FAILED: "var(--bad)", IDLE: "var(--idle)", COMPLETED: "var(--idle)",
  };

  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;
  const iso = (ms) => new Date(ms).toISOString();
  // One fixed pattern in the page's zone, as app.js shows times: never the browser's locale.
  const pad = (n) => String(n).padStart(2, "0");
  const day = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  const clock = (d) => `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = String(text);
    return e;
  }

  const pct = (v) => (typeof v === "number" && isFinite(v) ? `${(v * 100).toFixed(1)} %` : "–");

  function dur(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${s % 60}s`;
    const h = Math.floor(m / 60);
    return `${h}h ${m % 60}m`;
  }

  async function getJSON(path) {
    const r = await (window.millwatchAuth ? window.millwatchAuth.fetch : fetch)(path, { headers: { accept: "application/json" } });
    const body = await r.json().catch(() => null);
    if (!r.ok) throw new Error((body && body.error) || `${r.status}`);
    return body;
  }

  const style = el("style");
  style.textContent = `
    .avail { display: block; font-size: 0.85em; margin-top: 0.2em; }
    .timeline { display: flex; height: 18px; border-radius: 3px; overflow: hidden;
      background: var(--border); margin: 0.4em 0; }
    .timeline > span { display: block; height: 100%; min-width: 0; }
    .legend span { margin-right: 0.8em; }
    .legend i { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 2px;
      margin-right: 0.3em; vertical-align: -0.05em; }
    .pareto { list-style: none; padding: 0; margin: 0.3em 0; }
    .pareto li { display: grid; grid-template-columns: 11em 1fr 6em 4.5em; gap: 0.5em;
      align-items: center; font-size: 0.9em; }
    .pareto .bar { height: 10px; background: var(--warn); border-radius: 2px; }
    table.oee { border-collapse: collapse; font-size: 0.9em; margin: 0.3em 0; }
    table.oee th, table.oee td { padding: 0.15em 0.7em; text-align: right; }
    table.oee th:first-child, table.oee td:first-child { text-align: left; }
    .reason-ask { display: inline-flex; gap: 0.4em; align-items: center; margin-left: 0.5em; }
    .reason-ask input { width: 16em; }`;
  document.head.append(style);

  // ---- Cards: today's availability (since local midnight), for the cards on screen.
  const cards = new Map(); // id -> { el, asked, visible }
  const seen = new IntersectionObserver((entries) => {
    for (const e of entries) {
      const c = cards.get(e.target.dataset.machine);
      if (c) c.visible = e.isIntersecting;
    }
  });

  function adopt(card) {
    const id = card.dataset.machine;
    if (!id || cards.has(id)) return;
    const line = el("span", "avail muted", "availability today –");
    line.dataset.availability = id;
    (card.querySelector(".card-meta") || card).append(line);
    cards.set(id, { el: line, asked: 0, visible: true });
    seen.observe(card);
    refreshCard(id);
  }

  async function refreshCard(id) {
    const c = cards.get(id);
    if (!c) return;
    c.asked = Date.now();
    const midnight = new Date();
    midnight.setHours(0, 0, 0, 0);
    try {
      const o = await getJSON(`/oee?machine_id=${enc(id)}&since=${enc(iso(+midnight))}`);
      c.el.textContent = `availability today ${pct(o.availability)}`;
      c.el.title = `running ${dur(o.running_seconds)} of ${dur(o.planned_seconds)} planned`;
    } catch (e) {
      c.el.textContent = "availability today –";
    }
  }

  const grid = $("grid");
  if (grid) {
    new MutationObserver(() => grid.querySelectorAll(".card[data-machine]").forEach(adopt)).observe(grid, {
      childList: true,
    });
    grid.querySelectorAll(".card[data-machine]").forEach(adopt);
  }
  // Spread over the minute: one card at a time, the one asked longest ago.
  setInterval(() => {
    let oldest = null;
    for (const [id, c] of cards) {
      if (c.visible && Date.now() - c.asked > CARD_REFRESH_MS && (!oldest || c.asked < oldest[1].asked)) {
        oldest = [id, c];
      }
    }
    if (oldest) refreshCard(oldest[0]);
  }, 500);

  // ---- The detail view: timeline, Pareto of stop reasons, OEE per shift.
  const view = { id: null, ms: 0, timer: 0, seq: 0 };
  let box = null;

  function panel() {
    if (box) return box;
    box = $("states-panel");
    if (!box) return null;
    const h = (text) => el("h3", null, text);
    box.append(
      h("Job status over the range"),
      el("div", "timeline"),
      el("p", "legend muted small"),
      h("Stop reasons"),
      el("ol", "pareto"),
      h("OEE per shift (last 24 h)"),
      el("div", "oee-shifts"),
    );
    return box;
  }

  function detail(d) {
    clearInterval(view.timer);
    view.id = d ? d.id : null;
    view.ms = d ? d.ms : 0;
    if (!view.id || !panel()) return;
    load();
    view.timer = setInterval(load, DETAIL_REFRESH_MS);
  }

  async function load() {
    const seq = ++view.seq;
    const { id, ms } = view;
    const now = Date.now();
    const range = `machine_id=${enc(id)}&since=${enc(iso(now - ms))}&until=${enc(iso(now))}`;
    const day = `machine_id=${enc(id)}&since=${enc(iso(now - 86400e3))}&until=${enc(iso(now))}`;
    try {
      const [states, oee] = await Promise.all([
        getJSON(`/states?${range}&timeline=true`),
        getJSON(`/oee?${day}&by=shift`),
      ]);
      if (seq !== view.seq) return;
      renderTimeline(states);
      renderPareto(states);
      renderShifts(oee);
    } catch (e) {
      if (seq === view.seq) box.querySelector(".legend").textContent = `could not load: ${e.message}`;
    }
  }

  function renderTimeline(s) {
    const strip = box.querySelector(".timeline");
    const from = Date.parse(s.since);
    const total = Math.max(1, Date.parse(s.until) - from);
    strip.replaceChildren(
      ...(s.timeline || []).map((seg) => {
        const a = Date.parse(seg.from);
        const b = Date.parse(seg.to);
        const part = el("span");
        part.dataset.state = seg.state;
        part.style.width = `${((b - a) / total) * 100}%`;
        part.style.background = COLORS[seg.state] || "var(--idle)";
        part.title = `${seg.state} ${clock(new Date(a))}–${clock(new Date(b))}`;
        return part;
      }),
    );
    box.querySelector(".legend").replaceChildren(
      ...s.states.map((st) => {
        const item = el("span");
        const swatch = el("i");
        swatch.style.background = COLORS[st.state] || "var(--idle)";
        item.append(swatch, `${st.state} ${dur(st.seconds)} (${pct(st.share)}, entered ${st.entered}×)`);
        return item;
      }),
    );
  }

  function renderPareto(s) {
    const stops = s.reasons.filter((r) => STOPS.includes(r.state) && r.seconds > 0);
    stops.sort((a, b) => b.seconds - a.seconds);
    const total = stops.reduce((x, r) => x + r.seconds, 0);
    const list = box.querySelector(".pareto");
    if (!stops.length) {
      list.replaceChildren(el("li", "muted", "no stops in the range"));
      return;
    }
    let cum = 0;
    list.replaceChildren(
      ...stops.map((r) => {
        cum += r.seconds;
        const li = el("li");
        li.dataset.reason = r.reason == null ? "" : r.reason;
        const bar = el("span", "bar");
        bar.style.width = `${(r.seconds / stops[0].seconds) * 100}%`;
        const barBox = el("span");
        barBox.append(bar);
        li.append(
          el("span", null, `${r.reason == null ? "(no reason)" : r.reason} · ${r.state.toLowerCase()}`),
          barBox,
          el("span", null, `${dur(r.seconds)} ×${r.entered}`),
          el("span", "muted", `${((cum / total) * 100).toFixed(0)} %`),
        );
        return li;
      }),
    );
  }

  function renderShifts(o) {
    const table = el("table", "oee");
    const head = el("tr");
    for (const t of ["shift", "availability", "performance", "quality", "OEE"]) head.append(el("th", null, t));
    table.append(head);
    for (const b of o.buckets || []) {
      const tr = el("tr");
      tr.dataset.shift = b.start;
      const start = new Date(Date.parse(b.start));
      tr.append(
        el("td", null, `${day(start)} ${b.shift || ""}`),
        el("td", null, pct(b.availability)),
        el("td", null, pct(b.performance)),
        el("td", null, pct(b.quality)),
        el("td", null, pct(b.oee)),
      );
      table.append(tr);
    }
    const note = el(
      "p",
      "muted small",
      o.count == null
        ? "No parts counter for this machine (serve --oee FILE): availability only."
        : `Parts from "${o.count}", ideal ${o.ideal_rate}/min. Whole day: OEE ${pct(o.oee)}.`,
    );
    box.querySelector(".oee-shifts").replaceChildren(table, note);
  }

  // ---- An optional reason for PAUSED and FAILED, asked inline next to the buttons.
  function askReason(status) {
    if (!STOPS.includes(status)) return Promise.resolve({});
    const where = $("status-buttons");
    if (!where) return Promise.resolve({});
    return new Promise((resolve) => {
      const form = el("form", "reason-ask");
      const input = el("input");
      input.type = "text";
      input.maxLength = 256;
      input.placeholder = `reason for ${status.toLowerCase()} (optional)`;
      input.setAttribute("aria-label", "reason");
      const ok = el("button", null, `Set ${status}`);
      ok.type = "submit";
      const cancel = el("button", null, "Cancel");
      cancel.type = "button";
      form.append(input, ok, cancel);
      const done = (value) => (form.remove(), resolve(value));
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        const r = input.value.trim();
        done(r ? { reason: r } : {});
      });
      cancel.addEventListener("click", () => done(null));
      where.after(form);
      input.focus();
    });
  }

  window.millwatchStates = { askReason, detail };
})();
