// Dashboard: edges flip online/offline as they connect, and my recent psij jobs and rhapsody
// tasks on every online edge, with states kept current by the event stream.

import {
  $, ApiError, PluginClient, currentUser, debounce, describeError, emptyState, fmtTime, h, page,
  pluginPath, replace, request, stateBadge, timeAgo,
} from "../core.js";
import { live } from "../live.js";
import { DataTable } from "../table.js";

const RECENT_LIMIT = 25;
const edges = new Map((page.edges || []).map((e) => [e.name, { ...e }]));

// --- edges ----------------------------------------------------------------------------------

function stateBadgeFor(info) {
  if (info.suspended) return h("span", { class: "badge suspended", text: "suspended" });
  return info.online ? h("span", { class: "badge online", text: "online" })
    : h("span", { class: "badge offline", text: "offline" });
}

function edgeUrl(name) {
  return `/edges/${encodeURIComponent(name)}/`;
}

function pluginLinks(name, plugins, titles = {}) {
  if (!plugins.length) return h("span", { class: "muted", text: "none announced" });
  const links = [];
  plugins.forEach((p, i) => {
    if (i) links.push(", ");
    links.push(h("a", { href: `${edgeUrl(name)}plugins/${encodeURIComponent(p)}/`, text: titles[p] || p }));
  });
  return links;
}

/** A plugin's display title from its REST resource (its UI schema's title), else its name. */
function pluginTitle(plugin) {
  const title = plugin.ui_schema && typeof plugin.ui_schema === "object" ? plugin.ui_schema.title : null;
  return typeof title === "string" && title.trim() ? title : plugin.name;
}

function ensureEdgeTable() {
  let table = $("#edges");
  if (table) return table.tBodies[0];
  // The first edge of someone who had none: build the table the template would have.
  const empty = $("#no-edges");
  table = h("table", { class: "data", id: "edges" },
    h("thead", {}, h("tr", {}, ["Edge", "State", "Host", "Last seen", "Plugins", "Owner", ""].map(
      (label) => h("th", { scope: "col", text: label })))),
    h("tbody"));
  const wrap = h("div", { class: "table-wrap" }, table);
  if (empty) empty.closest(".panel-body").replaceWith(wrap);
  return table.tBodies[0];
}

function edgeRow(name) {
  return document.querySelector(`#edges tr[data-edge="${CSS.escape(name)}"]`);
}

/** Update (or add) an edge's row from its REST resource. */
function renderEdge(resource) {
  const name = resource.name;
  const known = edges.get(name) || {};
  const info = {
    ...known, name, online: Boolean(resource.online), suspended: Boolean(resource.suspended),
    plugins: (resource.plugins || []).map((p) => p.name),
    pluginTitles: Object.fromEntries((resource.plugins || []).map((p) => [p.name, pluginTitle(p)])),
  };
  edges.set(name, info);
  let tr = edgeRow(name);
  if (!tr) {
    tr = h("tr", { dataset: { edge: name } },
      h("td", { text: name }),
      h("td", { class: "edge-state", "aria-live": "polite" }),
      h("td", { class: "edge-host" }), h("td", { class: "edge-seen" }), h("td", { class: "edge-plugins" }),
      h("td", { text: resource.owner || "–" }),
      h("td", { class: "actions" }, h("a", { class: "btn small primary", href: edgeUrl(name), "aria-label": `Open ${name}`, text: "Open" })));
    ensureEdgeTable().appendChild(tr);
    $("#edges-count").textContent = `${edges.size} edge${edges.size === 1 ? "" : "s"}`;
  }
  replace(tr.querySelector(".edge-state"), stateBadgeFor(info));
  tr.querySelector(".edge-host").textContent = resource.host || "–";
  replace(tr.querySelector(".edge-seen"), resource.last_seen ? timeAgo(resource.last_seen) : "never");
  replace(tr.querySelector(".edge-plugins"), pluginLinks(name, info.plugins, info.pluginTitles));
}

async function refreshEdge(name) {
  try {
    renderEdge(await request(`/api/v1/edges/${encodeURIComponent(name)}/`));
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 404) {
      // No longer visible to me (unshared): drop it.
      const tr = edgeRow(name);
      if (tr) tr.remove();
      edges.delete(name);
    }
  }
}

live.on("topology", (event) => {
  if (typeof event.edge !== "string") return;
  const known = edges.get(event.edge);
  const tr = edgeRow(event.edge);
  if (known && tr && typeof event.online === "boolean") {
    // Show the change at once; the resource fills in host, plugins and last seen.
    known.online = event.online;
    replace(tr.querySelector(".edge-state"), stateBadgeFor(known));
  }
  refreshEdge(event.edge);
  if (event.online) loadRecentSoon();
});

async function refreshAllEdges() {
  try {
    const list = await request("/api/v1/edges/");
    const rows = Array.isArray(list) ? list : (list && list.results) || [];
    for (const resource of rows) renderEdge(resource);
  } catch {
    /* the next event or poll tries again */
  }
}

// --- recent jobs and tasks ----------------------------------------------------------------------

const psijClients = new Map();
const taskSessions = new Map(); // `${edge}:${sid}` -> true for my rhapsody sessions

const recent = new DataTable({
  label: "My recent jobs and tasks",
  rowKey: "key",
  emptyText: "No jobs or tasks yet. Submit a batch job or tasks from an edge's page.",
  sort: { key: "when", dir: -1 },
  columns: [
    { key: "when", label: "Submitted", render: (r) => (r.when ? timeAgo(r.when) : "–"), value: (r) => r.when || 0 },
    { key: "edge", label: "Edge", render: (r) => h("a", { href: edgeUrl(r.edge), text: r.edge }) },
    { key: "kind", label: "Kind" },
    {
      key: "id", label: "ID",
      render: (r) => (r.kind === "job"
        ? h("a", { href: `${edgeUrl(r.edge)}plugins/psij/jobs/${encodeURIComponent(r.id)}/`, class: "mono", text: r.id })
        : h("a", { href: taskUrl(r), class: "mono", text: r.id })),
    },
    { key: "label", label: "Name or command", render: (r) => h("span", { class: "mono", text: r.label || "–" }) },
    { key: "state", label: "State", render: (r) => stateBadge(r.state) },
    { key: "executor", label: "Where", render: (r) => r.executor || "–" },
    { key: "runs_as", label: "Runs as", render: (r) => runsAs(r.edge) },
    { key: "exit_code", label: "Exit", numeric: true },
  ],
});
replace($("#recent"), recent.element);
recent.table.setAttribute("aria-live", "polite");

function taskUrl(row) {
  const query = new URLSearchParams({ session: row.sid || "", task: row.id });
  return `${edgeUrl(row.edge)}plugins/rhapsody/?${query}`;
}

/** "alice@login1": the Unix account and host jobs on this edge run as. */
function runsAs(edge) {
  const account = edges.get(edge)?.runsAs;
  if (!account || !account.user) return h("span", { class: "muted", text: "–" });
  return h("span", { class: "mono", text: `${account.user}@${account.host}` });
}

function jobRow(edge, job) {
  return {
    key: `${edge}/job/${job.job_id}`, edge, kind: "job", id: job.job_id,
    label: job.name || [job.executable, ...(job.arguments || [])].filter(Boolean).join(" "),
    executor: job.executor, state: job.state, exit_code: job.exit_code, when: job.created,
  };
}

function taskRow(edge, task, sid) {
  return {
    key: `${edge}/task/${sid}/${task.uid}`, edge, kind: "task", id: task.uid, sid, label: task.name || task.label,
    executor: task.kind ? `rhapsody ${task.kind}` : "rhapsody", state: task.state, exit_code: task.exit_code,
    when: task.submitted,
  };
}

async function recentJobs(edge) {
  if (!psijClients.has(edge)) psijClients.set(edge, new PluginClient(edge, "psij"));
  const answer = await psijClients.get(edge).get("list_jobs/{sid}", { query: { limit: RECENT_LIMIT } });
  // The edge's owner sees everyone's jobs; the dashboard shows mine.
  return (answer.jobs || []).filter((j) => !j.owner || j.owner === currentUser).map((j) => jobRow(edge, j));
}

async function recentTasks(edge) {
  const path = (route) => pluginPath(edge, "rhapsody", route);
  const sessions = ((await request(path("list_sessions"))).sessions || []).filter((s) => s.owner === currentUser);
  const rows = [];
  for (const s of sessions) {
    taskSessions.set(`${edge}:${s.sid}`, true);
    const total = Number(s.tasks) || 0;
    const offset = Math.max(0, total - RECENT_LIMIT);
    const listing = await request(path(`list_tasks/${encodeURIComponent(s.sid)}`), { query: { offset, limit: RECENT_LIMIT } });
    rows.push(...(listing.tasks || []).map((t) => taskRow(edge, t, s.sid)));
  }
  // Tasks of sessions that have ended (an agent restart, an idle session) are kept in the
  // edge's task history.
  try {
    const kept = await request(path("history"), { query: { limit: RECENT_LIMIT } });
    const shown = new Set(rows.map((r) => r.key));
    for (const t of kept.tasks || []) {
      if (t.owner !== currentUser) continue;
      const row = taskRow(edge, t, t.sid);
      if (!shown.has(row.key)) rows.push(row);
    }
  } catch {
    /* an agent without a task history */
  }
  return rows;
}

let loading = null;
async function loadRecent() {
  if (loading) return loading;
  loading = (async () => {
    const notes = [];
    const rows = [];
    const online = [...edges.values()].filter((e) => e.online && !e.suspended);
    const offline = [...edges.values()].filter((e) => !e.online || e.suspended);
    const jobs = [];
    for (const e of online) {
      if (e.plugins.includes("psij")) jobs.push(recentJobs(e.name).then((r) => rows.push(...r),
        (exc) => notes.push(`${e.name} (batch jobs): ${describeError(exc)}`)));
      if (e.plugins.includes("rhapsody")) jobs.push(recentTasks(e.name).then((r) => rows.push(...r),
        (exc) => notes.push(`${e.name} (tasks): ${describeError(exc)}`)));
    }
    await Promise.all(jobs);
    rows.sort((a, b) => (b.when || 0) - (a.when || 0));
    recent.setRows(rows.slice(0, RECENT_LIMIT * 2));
    if (offline.length) {
      notes.push(`Offline, so their jobs are not listed: ${offline.map((e) => e.name).join(", ")}.`);
    }
    const box = $("#recent-notes");
    $("#recent").hidden = !edges.size; // one empty-state message, not two
    if (!edges.size) {
      replace(box, emptyState("Nothing to show yet", "Your jobs and tasks appear here once you have an edge."));
    } else if (notes.length) {
      replace(box, h("ul", { class: "small muted" }, notes.map((n) => h("li", { text: n }))));
    } else {
      replace(box, h("p", { class: "small muted", text: `Updated ${fmtTime(new Date())}.` }));
    }
  })().finally(() => { loading = null; });
  return loading;
}
const loadRecentSoon = debounce(loadRecent, 500);

live.on("notification", (event) => {
  const data = event.data && typeof event.data === "object" ? event.data : null;
  if (!data || !edges.has(event.edge)) return;
  if (event.plugin === "psij" && event.topic === "job_status" && data.job_id) {
    const key = `${event.edge}/job/${data.job_id}`;
    if (recent.has(key)) recent.upsert({ key, state: data.state, exit_code: data.exit_code ?? null });
    else loadRecentSoon();
  } else if (event.plugin === "rhapsody" && event.topic === "task_status" && Array.isArray(data.tasks)) {
    const mine = taskSessions.has(`${event.edge}:${data.sid}`);
    const updates = [];
    let unknown = false;
    for (const t of data.tasks) {
      const key = `${event.edge}/task/${data.sid}/${t.uid}`;
      if (recent.has(key)) updates.push({ key, state: t.state, exit_code: t.exit_code ?? null });
      else unknown = true;
    }
    if (updates.length) recent.upsert(updates);
    if (unknown || !mine) loadRecentSoon();
  }
});

live.on("resync", () => {
  refreshAllEdges().then(loadRecent);
});
live.whileDown(() => refreshAllEdges().then(loadRecent), 10000);
$("#recent-refresh").addEventListener("click", () => loadRecent());

loadRecent();
