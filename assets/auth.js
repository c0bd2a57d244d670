/* millwatch dashboard sign-in, for a server started with --auth.

   The page sends every request through millwatchAuth.fetch, which adds the token as
   "Authorization: Bearer" when one is kept. A 401 shows the sign-in form (in the page, not a
   browser prompt) and the request is retried once a token is entered; every request that met
   the 401 meanwhile waits for the same form. The token is kept in sessionStorage: this tab
   only, gone when it closes; never in a URL, so no log or Referer can carry it.

   EventSource cannot send headers, so /events is read with fetch and a ReadableStream by
   millwatchAuth.EventSource, which has the part of EventSource's interface that app.js uses
   (onopen, onerror, addEventListener, readyState, close) and reconnects by itself. */
(() => {
  "use strict";

  const KEY = "millwatch.token";
  const RETRY_MS = 3000;
  let waiting = [];
  let form = null;

  function token() {
    try {
      return sessionStorage.getItem(KEY);
    } catch (_) {
      return null; // storage disabled: the form comes back on every 401
    }
  }

  function keep(t) {
    try {
      sessionStorage.setItem(KEY, t);
    } catch (_) {
      /* see token() */
    }
  }

  function forget(t) {
    try {
      if (sessionStorage.getItem(KEY) === t) sessionStorage.removeItem(KEY);
    } catch (_) {
      /* see token() */
    }
  }

  function make(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text != null) e.textContent = text;
    return e;
  }

  /** Shows the form with `message`; resolves once a token has been entered. */
  function signIn(message) {
    if (!form) {
      form = make("form", { id: "login", class: "login-panel", "aria-labelledby": "login-title" });
      const input = make("input", { id: "login-token", type: "password", autocomplete: "off", spellcheck: "false", required: "" });
      const label = make("label", { for: "login-token" }, "Access token");
      form.append(
        make("h2", { id: "login-title" }, "Sign in to millwatch"),
        make("p", { id: "login-message", role: "alert" }),
        label,
        input,
        make("button", { type: "submit" }, "Sign in"),
      );
      const overlay = make("div", { id: "login-overlay", class: "login" });
      overlay.append(form);
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        const t = input.value.trim();
        if (!t) return;
        keep(t);
        input.value = "";
        overlay.hidden = true;
        showSignOut();
        const w = waiting;
        waiting = [];
        for (const resolve of w) resolve();
      });
      document.body.append(overlay);
    }
    form.querySelector("#login-message").textContent = message;
    form.parentElement.hidden = false;
    form.querySelector("#login-token").focus();
    return new Promise((resolve) => waiting.push(resolve));
  }

  /** fetch with the kept token; a 401 asks for a token and tries again. */
  async function authFetch(url, init) {
    for (;;) {
      const used = token();
      const headers = new Headers((init && init.headers) || {});
      if (used) headers.set("authorization", `Bearer ${used}`);
      const r = await fetch(url, { ...init, headers });
      if (r.status === 403 && used && !(init && init.method && init.method !== "GET")) {
        // A token that cannot read (a gateway's) is no use to the page: ask for another.
        const body = await r.clone().json().catch(() => null);
        const why = body && typeof body.error === "string" ? body.error : "";
        if (!why.includes("lacks the role")) return r;
        forget(used);
        await signIn(`That token cannot read this page (${why}): enter another.`);
        continue;
      }
      if (r.status !== 401) return r;
      if (used) forget(used);
      await signIn(used ? "That token was refused: enter another." : "This server needs an access token.");
    }
  }

  function showSignOut() {
    if (document.getElementById("sign-out")) return;
    const b = make("button", { id: "sign-out", type: "button", class: "sign-out" }, "Sign out");
    b.addEventListener("click", () => {
      try {
        sessionStorage.removeItem(KEY);
      } catch (_) {
        /* see token() */
      }
      location.reload();
    });
    const top = document.querySelector("header.top") || document.body;
    top.append(b);
  }

  /** Server-sent events over fetch, so that the request can carry the token. */
  class TokenEventSource {
    constructor(url) {
      this.url = url;
      this.readyState = 0; // CONNECTING, as EventSource
      this.onopen = null;
      this.onerror = null;
      this.listeners = new Map();
      this.controller = null;
      this.closed = false;
      this.retry = RETRY_MS;
      this.run();
    }

    addEventListener(type, fn) {
      if (!this.listeners.has(type)) this.listeners.set(type, []);
      this.listeners.get(type).push(fn);
    }

    close() {
      this.closed = true;
      this.readyState = 2;
      if (this.controller) this.controller.abort();
    }

    async run() {
      while (!this.closed) {
        this.controller = new AbortController();
        try {
          const r = await authFetch(this.url, {
            headers: { accept: "text/event-stream" },
            cache: "no-store",
            signal: this.controller.signal,
          });
          if (!r.ok || !r.body) throw new Error(`${r.status}`);
          this.readyState = 1;
          if (this.onopen) this.onopen(new Event("open"));
          await this.read(r.body);
        } catch (_) {
          /* reconnects below */
        }
        if (this.closed) return;
        this.readyState = 0;
        if (this.onerror) this.onerror(new Event("error"));
        await new Promise((resolve) => setTimeout(resolve, this.retry));
      }
    }

    /** Parses the text/event-stream format: fields per line, an empty line ends an event. */
    async read(body) {
      const reader = body.pipeThrough(new TextDecoderStream()).getReader();
      let rest = "";
      let type = "";
      let data = [];
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        rest += value;
        const lines = rest.split("\n");
        rest = lines.pop();
        for (let line of lines) {
          if (line.endsWith("\r")) line = line.slice(0, -1);
          if (line === "") {
            if (data.length) this.dispatch(type || "message", data.join("\n"));
            type = "";
            data = [];
            continue;
          }
          if (line.startsWith(":")) continue; // a comment: the keep-alive
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let v = colon < 0 ? "" : line.slice(colon + 1);
          if (v.startsWith(" ")) v = v.slice(1);
          if (field === "event") type = v;
          else if (field === "data") data.push(v);
          else if (field === "retry" && /^\d+$/.test(v)) this.retry = Number(v);
        }
      }
    }

    dispatch(type, data) {
      const e = new MessageEvent(type, { data });
      for (const fn of this.listeners.get(type) || []) fn(e);
    }
  }

  if (token()) document.addEventListener("DOMContentLoaded", showSignOut);
  window.millwatchAuth = { fetch: authFetch, EventSource: TokenEventSource };
})();
