// queue_info: the scheduler's partitions (with how many jobs each holds), jobs by partition,
// user and state, and allocations, in sortable tables; "Force refresh" bypasses the edge's cache.

import {
  $, ApiError, PluginClient, describeError, emptyState, every, fmtBytes, fmtDuration, fmtNumber, fmtTime, h,
  replace, showMessage, stateBadge, timeAgo,
} from "../core.js";
import { burnDownChart } from "../burndown.js";
import { edge, onEdgeState } from "../edgepage.js";
import { live } from "../live.js";
import { reasonText } from "../reasons.js";
import { DataTable } from "../table.js";

const qi = new PluginClient(edge.name, "queue_info");
const psij = edge.plugins.includes("psij") ? new PluginClient(edge.name, "psij") : null;
const AUTO_REFRESH_MS = 30000;
let psijJobs = new Map(); // scheduler job id -> psij job id, for jobs submitted through the portal or SDK
let jobCounts = new Map(); // partition -> {running, pending}

const num = (key, label, extra = {}) => ({ key, label, numeric: true, ...extra });
const limitText = (minutes) => (minutes === "UNLIMITED" || minutes === null || minutes === undefined
  ? (minutes === "UNLIMITED" ? "unlimited" : "–") : fmtDuration(Number(minutes) * 60));

const queues = new DataTable({
  label: "Partitions", rowKey: "name", sort: { key: "name", dir: 1 }, emptyText: "The scheduler reports no partitions.",
  columns: [
    { key: "name", label: "Partition", render: (q) => [h("strong", { text: q.name }), q.default ? h("span", { class: "muted small", text: " (default)" }) : null] },
    { key: "state", label: "State", render: (q) => stateBadge(q.state) },
    num("nodes_total", "Nodes"),
    num("nodes_available", "Available"),
    num("nodes_idle", "Idle"),
    num("cpus_per_node", "CPUs/node"),
    num("cpus_total", "CPUs"),
    num("mem_per_node_mb", "Memory/node", { render: (q) => (q.mem_per_node_mb != null ? fmtBytes(q.mem_per_node_mb * 1048576) : "–") }),
    num("gpus_per_node", "GPUs/node"),
    num("time_limit", "Time limit", { value: (q) => (q.time_limit === "UNLIMITED" ? Infinity : q.time_limit), render: (q) => limitText(q.time_limit) }),
    num("running", "Running", { value: (q) => jobCounts.get(q.name)?.running ?? 0, render: (q) => fmtNumber(jobCounts.get(q.name)?.running ?? 0) }),
    num("pending", "Pending", { value: (q) => jobCounts.get(q.name)?.pending ?? 0, render: (q) => fmtNumber(jobCounts.get(q.name)?.pending ?? 0) }),
    { key: "features", label: "Features", render: (q) => (q.features || []).join(", ") || "–" },
  ],
});
replace($("#qi-queues"), queues.element);

/** A scheduler job id, linked to its job page when it was submitted through psij here. */
function jobCell(j) {
  const psijId = psijJobs.get(String(j.job_id));
  if (!psijId) return h("span", { class: "mono", text: j.job_id });
  return h("a", {
    class: "mono", text: j.job_id, title: `Batch job ${psijId}`,
    href: `/edges/${encodeURIComponent(edge.name)}/plugins/psij/jobs/${encodeURIComponent(psijId)}/`,
  });
}

async function loadPsijJobs() {
  if (!psij) return;
  try {
    const answer = await psij.get("list_jobs/{sid}", { query: { limit: 1000 } });
    psijJobs = new Map((answer.jobs || []).filter((j) => j.native_id && j.executor !== "local")
      .map((j) => [String(j.native_id), j.job_id]));
  } catch {
    /* without psij's list the rows are simply not linked */
  }
}

const jobs = new DataTable({
  label: "Jobs in the scheduler", rowKey: "job_id", sort: { key: "job_id", dir: 1 },
  emptyText: "No jobs match.",
  columns: [
    { key: "job_id", label: "Job", render: jobCell,
      value: (j) => (/^\d+/.test(j.job_id) ? parseInt(j.job_id, 10) : j.job_id) },
    { key: "state", label: "State", render: (j) => stateBadge(j.state) },
    { key: "job_name", label: "Name" },
    { key: "user", label: "User" },
    { key: "partition", label: "Partition" },
    { key: "reason", label: "Reason", render: (j) => (j.reason && j.reason !== "None"
      ? h("span", { title: j.reason, text: reasonText(j.reason) }, " ", h("code", { class: "muted small", text: `(${j.reason})` }))
      : "–") },
    num("nodes", "Nodes"),
    num("cpus", "CPUs"),
    num("time_used", "Used", { render: (j) => (j.time_used != null ? fmtDuration(j.time_used) : "–") }),
    num("time_limit", "Limit", { render: (j) => (j.time_limit == null ? "unlimited" : fmtDuration(j.time_limit * 60)) }),
    { key: "account", label: "Account" },
    { key: "submit_time", label: "Submitted", render: (j) => (j.submit_time ? fmtTime(j.submit_time) : "–") },
    { key: "node_list", label: "Nodes used", render: (j) => h("span", { class: "mono", text: j.node_list || "–" }) },
  ],
});
replace($("#qi-jobs"), jobs.element);

const allocations = new DataTable({
  label: "Allocations", rowKey: (a) => `${a.cluster}/${a.account}/${a.user}/${a.partition}`, sort: { key: "account", dir: 1 },
  emptyText: "No allocations.",
  columns: [
    { key: "account", label: "Account", render: (a) => h("strong", { text: a.account }) },
    { key: "user", label: "User", render: (a) => a.user || h("span", { class: "muted", text: "(account)" }) },
    { key: "partition", label: "Partition", render: (a) => a.partition || "any" },
    num("fairshare", "Fair share"),
    { key: "qos", label: "QOS" },
    num("max_jobs", "Max jobs"),
    num("max_submit", "Max submit"),
    num("max_wall", "Max wall", { render: (a) => (a.max_wall != null ? fmtDuration(a.max_wall * 60) : "–") }),
    { key: "grp_tres", label: "Group limits" },
  ],
});
replace($("#qi-allocs"), allocations.element);

function schedulerProblem(exc) {
  if (exc instanceof ApiError && exc.error === "no_scheduler") {
    return ["No batch scheduler on this edge", "Neither Slurm nor PBS was found on the edge's host. " + (exc.detail || "")];
  }
  if (exc instanceof ApiError && exc.error === "scheduler_timeout") {
    return ["The scheduler did not answer in time", exc.detail];
  }
  return ["Could not ask the scheduler", describeError(exc)];
}

/** Where the data came from and how old it is (a <time> that keeps itself current). */
function metaLine(meta) {
  if (!meta) return "";
  return [meta.backend ? `${meta.backend} · ` : "", meta.collected_at ? ["collected ", timeAgo(meta.collected_at)] : "",
    meta.cached ? " (from the edge's cache)" : ""];
}

async function loadQueues(force) {
  try {
    const answer = await qi.get("get_info/{sid}", { query: { force: force ? "true" : "" } });
    const rows = Object.values(answer.queues || {});
    queues.setRows(rows);
    replace($("#qi-queues-meta"), metaLine(answer.meta));
    $("#qi-meta").textContent = answer.meta ? `Scheduler: ${answer.meta.backend}${answer.meta.notes?.length
      ? ` — ${answer.meta.notes.join(" ")}` : ""}` : "";
    const select = $("#qi-queue");
    const current = select.value;
    replace(select, h("option", { value: "", text: "all partitions" }),
      rows.map((q) => h("option", { value: q.name, text: q.name })));
    select.value = rows.some((q) => q.name === current) ? current : "";
    replace($("#qi-status"));
    return true;
  } catch (exc) {
    const [title, text] = schedulerProblem(exc);
    showMessage($("#qi-status"), "error", title, text);
    $("#qi-meta").textContent = "";
    queues.setRows([]);
    return false;
  }
}

async function loadJobs(force) {
  const queue = $("#qi-queue").value;
  const query = { user: $("#qi-user").value.trim(), state: $("#qi-state").value, force: force ? "true" : "" };
  try {
    const [answer] = await Promise.all([queue ? qi.get("list_jobs/{sid}/{queue}", { params: { queue }, query })
      : qi.get("list_jobs/{sid}", { query }), loadPsijJobs()]);
    const rows = answer.jobs || [];
    jobs.setRows(rows);
    jobs.render(true);
    if (!queue && !query.user) {
      // Per-partition counts for the partitions table come from the unfiltered list.
      jobCounts = new Map();
      for (const j of rows) {
        const c = jobCounts.get(j.partition) || { running: 0, pending: 0 };
        if (j.state === "RUNNING") c.running += 1;
        if (j.state === "PENDING") c.pending += 1;
        jobCounts.set(j.partition, c);
      }
      queues.render(true);
    }
    replace($("#qi-jobs-status"), h("p", { class: "panel-body muted small" },
      `${rows.length} job${rows.length === 1 ? "" : "s"}${queue ? ` in ${queue}` : ""} · `, metaLine(answer.meta)));
  } catch (exc) {
    jobs.setRows([]);
    showMessage($("#qi-jobs-status"), "error", "Could not list the jobs", describeError(exc));
  }
}

async function loadAllocations(force) {
  const user = $("#qi-alloc-user").value.trim();
  try {
    const answer = await qi.get("list_allocations/{sid}", { query: { user, force: force ? "true" : "" } });
    allocations.setRows(answer.allocations || []);
    $("#qi-allocs").hidden = false;
    const notes = (answer.meta?.notes || []).join(" ");
    replace($("#qi-alloc-status"), h("p", { class: "panel-body muted small" },
      `${answer.user === "*" ? "Every user's" : `${answer.user || "The edge user"}'s`} allocations${notes ? ` — ${notes}` : ""}. `,
      metaLine(answer.meta)));
  } catch (exc) {
    allocations.setRows([]);
    $("#qi-allocs").hidden = exc instanceof ApiError && exc.error === "accounting_unavailable";
    if (exc instanceof ApiError && exc.error === "accounting_unavailable") {
      replace($("#qi-alloc-status"), h("div", { class: "panel-body" }, emptyState("No accounting on this scheduler",
        "Slurm runs without slurmdbd here, so it keeps no accounts or allocations.")));
    } else {
      showMessage($("#qi-alloc-status"), "error", "Could not list the allocations", describeError(exc));
    }
  }
}

async function loadBudgets(force) {
  try {
    const answer = await qi.get("usage/{sid}", { query: { force: force ? "true" : "" } });
    const accounts = answer.accounts || [];
    replace($("#qi-budgets"), accounts.map(burnDownChart));
    replace($("#qi-budget-status"), accounts.length ? null
      : emptyState("No accounts", "The edge's user has no accounts in the scheduler's accounting."));
    $("#qi-budget-meta").textContent = answer.period_end
      ? `period ${answer.period_start} to ${answer.period_end}` : `since ${answer.period_start}`;
  } catch (exc) {
    replace($("#qi-budgets"));
    if (exc instanceof ApiError && ["not_supported", "accounting_unavailable"].includes(exc.error)) {
      replace($("#qi-budget-status"), emptyState("No budgets here", describeError(exc)));
    } else {
      showMessage($("#qi-budget-status"), "error", "Could not read the budgets", describeError(exc));
    }
  }
}

async function loadAll(force = false) {
  if (!edge.online) {
    showMessage($("#qi-status"), "warning", "The edge is offline", "Its scheduler is asked again when its agent reconnects.");
    return;
  }
  const button = $("#qi-force");
  button.disabled = true;
  try {
    if (await loadQueues(force)) await Promise.all([loadJobs(force), loadAllocations(force), loadBudgets(force)]);
  } finally {
    button.disabled = false;
  }
}

$("#qi-force").addEventListener("click", () => loadAll(true));
$("#qi-jobs-form").addEventListener("submit", (e) => { e.preventDefault(); loadJobs(false); });
$("#qi-queue").addEventListener("change", () => loadJobs(false));
$("#qi-state").addEventListener("change", () => loadJobs(false));
$("#qi-alloc-form").addEventListener("submit", (e) => { e.preventDefault(); loadAllocations(false); });
onEdgeState((online) => { if (online) loadAll(); });
// Jobs submitted through psij change the queues: refresh the job list when they do.
live.on("notification", (event) => {
  if (event.edge === edge.name && event.plugin === "psij") loadJobsSoon();
});
let soon = null;
function loadJobsSoon() {
  if (soon) return;
  soon = window.setTimeout(() => { soon = null; loadJobs(false); }, 1500);
}
loadAll();
// Jobs submitted outside the portal (sbatch) change the queues too: the job list refreshes
// by itself while the page is visible; each part shows how old its data is.
every(AUTO_REFRESH_MS, () => { if (edge.online) loadJobs(false); }, { now: false });
$("#qi-auto-note").textContent = `Jobs refresh by themselves every ${AUTO_REFRESH_MS / 1000} s.`;
