// Desktop notifications of the user's browser subscriptions, while a portal page is open.
//
// The bridge does not deliver browser subscriptions: every open page matches the events of
// its /events stream (which already carries only what the user may see) against them, the
// same filter as the bridge's (bridge_app/notifications/filters.py), and shows a desktop
// notification (when the user allowed them) and a count on the header's bell. Notifications
// are tagged with the event id, so several open tabs show one.

import { request } from "./core.js";
import { live } from "./live.js";

const RECENT_KEY = "radical-edge.notifications.recent";
let subscriptions = [];
let unseen = 0;

export async function reloadSubscriptions() {
  try {
    subscriptions = await request("/api/v1/notifications/subscriptions/", { query: { target: "browser" } });
  } catch {
    subscriptions = [];
  }
  return subscriptions;
}

function states(data) {
  const out = new Set();
  if (data && typeof data.state === "string") out.add(data.state.toUpperCase());
  if (data && Array.isArray(data.tasks)) {
    for (const t of data.tasks) if (t && typeof t.state === "string") out.add(t.state.toUpperCase());
  }
  return out;
}

function wants(sub, kind, event) {
  if (!sub.active) return false;
  if (sub.expires_at && new Date(sub.expires_at) <= new Date()) return false;
  if (sub.edges.length && !sub.edges.includes(event.edge)) return false;
  if (sub.plugin && (kind !== "notification" || event.plugin !== sub.plugin)) return false;
  const topic = kind === "topology" ? (event.online ? "edge_online" : "edge_offline") : event.topic;
  if (sub.topic && topic !== sub.topic) return false;
  const data = kind === "topology" ? event : event.data;
  if (sub.states.length) {
    const have = states(data);
    if (!sub.states.some((s) => have.has(String(s).toUpperCase()))) return false;
  }
  for (const [key, value] of Object.entries(sub.match || {})) {
    if (!data || data[key] !== value) return false;
  }
  return true;
}

export function describe(kind, event) {
  if (kind === "topology") return `Edge ${event.edge} is ${event.online ? "online" : "offline"}`;
  const d = event.data || {};
  if (d.job_id) return `Job ${d.job_id} on ${event.edge}: ${d.state}${d.exit_code != null ? ` (exit code ${d.exit_code})` : ""}`;
  if (Array.isArray(d.tasks)) return `${d.tasks.length} task update(s) on ${event.edge}`;
  if (d.message) return `${event.edge}: ${d.message}`;
  return `${event.edge} ${event.plugin}/${event.topic}`;
}

function remember(entry) {
  try {
    const recent = JSON.parse(window.sessionStorage.getItem(RECENT_KEY) || "[]");
    recent.unshift(entry);
    window.sessionStorage.setItem(RECENT_KEY, JSON.stringify(recent.slice(0, 50)));
  } catch {
    // storage unavailable: the bell still counts
  }
  document.dispatchEvent(new CustomEvent("radical-notification", { detail: entry }));
}

export function recent() {
  try {
    return JSON.parse(window.sessionStorage.getItem(RECENT_KEY) || "[]");
  } catch {
    return [];
  }
}

function bell() {
  const count = document.getElementById("notify-count");
  if (!count) return;
  count.textContent = String(unseen);
  count.hidden = unseen === 0;
  const link = document.getElementById("notify-bell");
  if (link) link.setAttribute("aria-label", unseen ? `Notifications, ${unseen} new` : "Notifications");
}

function handle(kind, event) {
  const sub = subscriptions.find((s) => wants(s, kind, event));
  if (!sub) return;
  const body = describe(kind, event);
  const title = sub.name || "Radical Edge";
  unseen += 1;
  bell();
  remember({ id: event.id, title, body, at: Date.now() });
  if ("Notification" in window && Notification.permission === "granted") {
    try {
      const note = new Notification(title, { body, tag: `radical-edge-${event.id}` });
      note.onclick = () => { window.focus(); note.close(); };
    } catch (exc) {
      console.warn("desktop notification failed", exc);
    }
  }
}

live.on("notification", (event) => handle("notification", event));
live.on("topology", (event) => handle("topology", event));
document.addEventListener("radical-subscriptions-changed", () => { reloadSubscriptions(); });
reloadSubscriptions();

const FINAL_STATES = ["COMPLETED", "FAILED", "CANCELED"];

/** "Tell me when this job ends": a browser subscription to one psij job's final state
 * (expiring after a week), plus the desktop permission if not decided yet. */
export async function notifyWhenJobEnds(edgeName, jobId) {
  if ("Notification" in window && Notification.permission === "default") {
    await Notification.requestPermission();
  }
  const expires = new Date(Date.now() + 7 * 24 * 3600 * 1000).toISOString();
  const sub = await request("/api/v1/notifications/subscriptions/", {
    method: "POST",
    body: {
      name: `Job ${jobId} ended`, target: "browser", edges: [edgeName], plugin: "psij", topic: "job_status",
      states: FINAL_STATES, match: { job_id: jobId }, expires_at: expires,
    },
  });
  await reloadSubscriptions();
  return sub;
}

/** Whether a browser subscription already watches this job. */
export function watchesJob(edgeName, jobId) {
  return subscriptions.some((s) => s.target === "browser" && s.match && s.match.job_id === jobId
    && s.edges.includes(edgeName));
}
