// The page's live connection: one EventSource on GET /events (Server-Sent Events).
//
// Events: `topology` {edge, online, …} when an edge connects or disconnects, and
// `notification` {edge, plugin, topic, data} for plugin events (psij job_status, rhapsody
// task_status, …); the bridge sends each person only what they may see.
//
// The header's indicator says whether updates flow. When the connection drops, the browser
// reconnects (resuming after the last event id); if the bridge refuses the stream, we open a
// new one with a growing delay. Every (re)connection emits `resync` so pages can reload what
// they show, and pages may register a slow fallback poll that runs only while the stream is
// down, so nothing on screen stays stale for long.

const EVENTS_URL = "/events";
const MAX_RETRY_MS = 30000;

const listeners = new Map();
let source = null;
let state = "connecting";
let retryMs = 1000;
let retryTimer = null;
let lastEventId = "";
let opens = 0;
const fallbacks = new Set();
const scopeEdge = (() => {
  try {
    const node = document.getElementById("page-context");
    const context = node ? JSON.parse(node.textContent) : {};
    return typeof context.edge === "string" ? context.edge : "";
  } catch {
    return "";
  }
})();

function emit(type, data) {
  for (const fn of listeners.get(type) || []) {
    try {
      fn(data);
    } catch (exc) {
      console.error(`live ${type} listener failed`, exc);
    }
  }
}

const LABELS = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Live updates lost, reconnecting…",
  down: "Live updates unavailable, retrying…",
};

function setState(next) {
  if (next === state) return;
  state = next;
  const indicator = document.getElementById("live-status");
  if (indicator) {
    indicator.dataset.state = next;
    indicator.textContent = LABELS[next] || next;
    indicator.title = next === "live" ? "Changes appear on this page as they happen."
      : "This page is not receiving changes right now; it refreshes itself until the connection is back.";
  }
  banner(next);
  emit("status", next);
  for (const fb of fallbacks) fb.sync();
}

// A visible note in the page (besides the small indicator) while updates do not flow.
let bannerTimer = null;
function banner(next) {
  let el = document.getElementById("live-banner");
  if (next === "live" || next === "connecting") {
    if (bannerTimer) window.clearTimeout(bannerTimer);
    bannerTimer = null;
    if (el) el.hidden = true;
    return;
  }
  if (bannerTimer || (el && !el.hidden)) return;
  // Short blips (a bridge restart) do not need to alarm anyone.
  bannerTimer = window.setTimeout(() => {
    bannerTimer = null;
    if (state === "live") return;
    const main = document.getElementById("main");
    if (!main) return;
    if (!el) {
      el = document.createElement("div");
      el.id = "live-banner";
      el.className = "alert warning";
      el.setAttribute("role", "status");
      const p = document.createElement("p");
      p.textContent = "Live updates are interrupted: the connection to the bridge was lost. Reconnecting… "
        + "Meanwhile this page refreshes itself every few seconds.";
      el.appendChild(p);
      main.prepend(el);
    }
    el.hidden = false;
  }, 2000);
}

/** Whether the stream was refused because the login ended (then retrying is pointless). */
async function loggedOut() {
  try {
    const response = await fetch("/api/v1/tokens/", { credentials: "same-origin", headers: { Accept: "application/json" } });
    return response.status === 401 || response.status === 403;
  } catch {
    return false; // the bridge is unreachable: keep trying
  }
}

function showLoggedOut() {
  state = "loggedout";
  const indicator = document.getElementById("live-status");
  if (indicator) {
    indicator.dataset.state = "down";
    indicator.textContent = "Logged out";
  }
  const main = document.getElementById("main");
  if (!main || document.getElementById("logged-out-banner")) return;
  const box = document.createElement("div");
  box.id = "logged-out-banner";
  box.className = "alert error";
  box.setAttribute("role", "alert");
  const p = document.createElement("p");
  p.textContent = "Your login has ended, so this page no longer updates. ";
  const a = document.createElement("a");
  a.href = `/accounts/login/?next=${encodeURIComponent(window.location.pathname)}`;
  a.textContent = "Log in again";
  p.appendChild(a);
  box.appendChild(p);
  main.prepend(box);
  emit("status", "loggedout");
}

function connect() {
  if (retryTimer) window.clearTimeout(retryTimer);
  retryTimer = null;
  // Pages of one edge need only its events (the stream filters with ?edge=).
  const params = new URLSearchParams();
  if (scopeEdge) params.set("edge", scopeEdge);
  if (lastEventId) params.set("last_event_id", lastEventId);
  const url = params.toString() ? `${EVENTS_URL}?${params}` : EVENTS_URL;
  const es = new EventSource(url, { withCredentials: true });
  source = es;
  es.onopen = () => {
    if (source !== es) return;
    retryMs = 1000;
    opens += 1;
    setState("live");
    emit("resync", { first: opens === 1 });
  };
  es.onerror = () => {
    if (source !== es) return;
    if (es.readyState === EventSource.CLOSED) {
      // Refused (not a stream, 401, 5xx): the browser gives up; we find out why and try again later.
      es.close();
      setState("down");
      loggedOut().then((out) => {
        if (out) {
          showLoggedOut();
        } else {
          retryTimer = window.setTimeout(connect, retryMs);
          retryMs = Math.min(MAX_RETRY_MS, retryMs * 2);
        }
      });
    } else {
      setState("reconnecting");
    }
  };
  for (const type of ["topology", "notification"]) {
    es.addEventListener(type, (event) => {
      if (event.lastEventId) lastEventId = event.lastEventId;
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      if (data && typeof data === "object") emit(type, data);
    });
  }
}

export const live = {
  /** Subscribe to `topology`, `notification`, `resync` or `status`; returns an unsubscribe function. */
  on(type, fn) {
    if (!listeners.has(type)) listeners.set(type, new Set());
    listeners.get(type).add(fn);
    return () => listeners.get(type).delete(fn);
  },
  get state() {
    return state;
  },
  /** Run `fn` every `ms` while the stream is down (not before the first connection attempt settles). */
  whileDown(fn, ms = 8000) {
    const fb = {
      timer: null,
      sync() {
        const down = state === "down" || state === "reconnecting";
        if (down && !this.timer) {
          this.timer = window.setInterval(() => { if (!document.hidden) fn(); }, ms);
        } else if (!down && this.timer) {
          window.clearInterval(this.timer);
          this.timer = null;
        }
      },
    };
    fallbacks.add(fb);
    fb.sync();
    return () => { fallbacks.delete(fb); if (fb.timer) window.clearInterval(fb.timer); };
  },
};

// Tests and people debugging can see the state without the indicator.
document.documentElement.dataset.live = "connecting";
live.on("status", (s) => { document.documentElement.dataset.live = s; });

connect();
window.addEventListener("pagehide", () => { if (source) source.close(); });
// Back/forward cache: a restored page needs a new stream and fresh data.
window.addEventListener("pageshow", (event) => { if (event.persisted) connect(); });
