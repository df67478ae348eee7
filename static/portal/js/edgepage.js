// What every page of one edge shares: the edge's state badge and offline banner, kept
// current from `topology` events, and a hook for panels to react when the edge comes back.

import { $, fmtAgo, h, page, replace, request } from "./core.js";
import { live } from "./live.js";

export const edge = {
  name: page.edge,
  online: Boolean(page.online) && !page.suspended,
  suspended: Boolean(page.suspended),
  role: page.role,
  canWrite: Boolean(page.canWrite),
  plugins: page.plugins || [],
};

const listeners = new Set();

/** Call fn(online, {wasOnline}) whenever the edge connects or disconnects. */
export function onEdgeState(fn) {
  listeners.add(fn);
}

function render() {
  const badge = $("#edge-state");
  if (badge) {
    replace(badge, edge.suspended ? h("span", { class: "badge suspended", text: "suspended" })
      : edge.online ? h("span", { class: "badge online", text: "online" })
        : h("span", { class: "badge offline", text: "offline" }));
  }
  const banner = $("#edge-offline");
  if (banner) {
    banner.hidden = edge.online;
    if (!edge.online && !edge.suspended) {
      replace(banner,
        h("p", { class: "title", text: "This edge is offline." }),
        h("p", { text: `Its agent is not connected${edge.lastSeen ? ` (last seen ${fmtAgo(edge.lastSeen)})` : ""}. `
          + "What is shown here may be out of date, and nothing can be submitted until it reconnects. "
          + "This page updates by itself when it does." }));
    }
  }
  const conn = $("#conn-state");
  if (conn) conn.textContent = edge.suspended ? "suspended" : edge.online ? "online" : "offline";
}

function setOnline(online) {
  const wasOnline = edge.online;
  edge.online = online && !edge.suspended;
  render();
  if (wasOnline !== edge.online) {
    for (const fn of listeners) fn(edge.online, { wasOnline });
  }
}

async function refresh() {
  try {
    const resource = await request(`/api/v1/edges/${encodeURIComponent(edge.name)}/`);
    edge.suspended = Boolean(resource.suspended);
    edge.lastSeen = resource.last_seen;
    setOnline(Boolean(resource.online));
  } catch {
    /* the next event tries again */
  }
}

live.on("topology", (event) => {
  if (event.edge !== edge.name) return;
  if (typeof event.online === "boolean") {
    if (!event.online) edge.lastSeen = new Date().toISOString();
    setOnline(event.online);
  }
  refresh();
});
live.on("resync", (info) => { if (!info.first) refresh(); });
live.whileDown(refresh, 10000);

/** Disable (or enable) every control of a form, with a reason shown beside its submit button. */
export function setFormEnabled(form, enabled, reason) {
  if (!form) return;
  for (const el of form.elements) el.disabled = !enabled;
  let note = form.querySelector(".form-disabled-note");
  if (!enabled && reason) {
    if (!note) {
      note = h("span", { class: "form-disabled-note muted small" });
      const actions = form.querySelector(".form-actions") || form;
      actions.appendChild(note);
    }
    note.textContent = reason;
  } else if (note) {
    note.remove();
  }
}

/** Why this person cannot submit here right now, or "" if they can. */
export function whyReadOnly() {
  if (!edge.canWrite) return "You have viewer access to this edge: you can look, but not submit or cancel.";
  if (edge.suspended) return "The edge is suspended.";
  if (!edge.online) return "The edge is offline; you can submit again when it reconnects.";
  return "";
}
