// psij: a job submission form (executors from the plugin, queues and accounts from
// queue_info when the edge has it), and the list of jobs with live states and cancel buttons.

import {
  $, PluginClient, currentUser, debounce, describeError, fmtBytes, fmtDuration, h, isFinal, keyValueLines, page, replace,
  shellJoin, shellWords, showMessage, stateBadge, timeAgo,
} from "../core.js";
import { confirmAction } from "../confirm.js";
import { edge, onEdgeState, setFormEnabled, whyReadOnly } from "../edgepage.js";
import { showTasks, taskCountsText } from "../arraytasks.js";
import { addPicker } from "../filelinks.js";
import { live } from "../live.js";
import { notifyWhenJobEnds } from "../notify.js";
import { DataTable } from "../table.js";

const psij = new PluginClient(edge.name, "psij");
const queueInfo = edge.plugins.includes("queue_info") ? new PluginClient(edge.name, "queue_info") : null;
const form = $("#psij-form");
const jobUrl = (id) => `/edges/${encodeURIComponent(edge.name)}/plugins/psij/jobs/${encodeURIComponent(id)}/`;

// --- the job list -----------------------------------------------------------------------------

function commandLine(job) {
  return shellJoin([job.executable, ...(job.arguments || [])]);
}

function cancelButton(job) {
  if (!edge.canWrite || isFinal(job.state) || job.state === "NEW") return "";
  return h("button", {
    type: "button", class: "btn small danger", text: "Cancel", "aria-label": `Cancel job ${job.job_id}`,
    dataset: { cancel: job.job_id }, on: { click: (e) => cancel(job, e.currentTarget) },
  });
}

/** "alice@login1": who jobs on this edge run as (the agent's Unix account). */
function runsAsText() {
  const account = page.runsAs || {};
  return account.user ? `${account.user}@${account.host}` : "";
}

// --- arrays: one row that expands into its tasks ------------------------------------------------

function arrayToggle(job) {
  const open = jobs.expanded(job.job_id);
  return h("button", {
    type: "button", class: "btn small expander", text: `${open ? "▾" : "▸"} ${job.array.count} task${job.array.count === 1 ? "" : "s"}`,
    "aria-expanded": String(open), "aria-label": `${open ? "Hide" : "Show"} the ${job.array.count} tasks of job ${job.job_id}`,
    dataset: { tasksOf: job.job_id }, on: { click: () => jobs.toggle(job.job_id) },
  });
}

/** The detail line of an array row: its tasks, their output on demand, and a retry of the failed ones. */
function showArray(job, cell) {
  return showTasks(cell, {
    psij, job, jobUrl, canWrite: edge.canWrite,
    onError: (title, text) => jobsNote("error", title, text),
    onRetried: async (answer) => {
      await loadJobs(); // first: listing the jobs clears the note
      jobsNote("success", null, `Tasks ${answer.tasks.join(", ")} of job ${job.job_id} run again as job ${answer.job_id}.`);
      const again = jobs.detailCell(job.job_id);
      if (again) showArray(jobs.get(job.job_id), again);
    },
  });
}

const jobs = new DataTable({
  label: "Jobs on this edge",
  rowKey: "job_id",
  sort: { key: "created", dir: -1 },
  emptyText: edge.canWrite ? "No jobs yet. Submit one with the form above." : "No jobs that you may see.",
  rowAttrs: (job) => ({ "data-state": job.state || "" }),
  detail: (job, cell) => showArray(job, cell),
  columns: [
    { key: "job_id", label: "Job", render: (j) => [h("a", { href: jobUrl(j.job_id), class: "mono", text: j.job_id }),
      j.array ? [" ", arrayToggle(j)] : ""] },
    { key: "name", label: "Name or command", value: (j) => j.name || commandLine(j),
      render: (j) => (j.name ? [h("strong", { text: j.name }), " ", h("span", { class: "mono muted small", text: commandLine(j) })]
        : h("span", { class: "mono", text: commandLine(j) || "–" })) },
    { key: "state", label: "State", render: (j) => (j.array
      ? [stateBadge(j.state), " ", h("span", { class: "muted small task-counts", text: taskCountsText(j.tasks) })]
      : stateBadge(j.state)) },
    { key: "executor", label: "Executor" },
    { key: "native_id", label: "Scheduler ID", render: (j) => h("span", { class: "mono", text: j.native_id || "–" }) },
    { key: "queue_name", label: "Queue" },
    { key: "exit_code", label: "Exit", numeric: true },
    { key: "created", label: "Submitted", render: (j) => timeAgo(j.created) },
    { key: "owner", label: "Submitted by" },
    { key: "runs_as", label: "Runs as", sortable: false, render: () => h("span", { class: "mono", text: runsAsText() || "–" }) },
    { key: "actions", label: "", sortable: false, className: "actions", render: cancelButton },
  ],
});
replace($("#psij-jobs"), jobs.element);

function jobsNote(kind, title, text) {
  const box = $("#psij-jobs-status");
  if (!kind) {
    box.hidden = true;
    replace(box);
    return;
  }
  box.hidden = false;
  showMessage(box, kind, title, text);
}

function filterStates() {
  const value = $("#psij-filter").value;
  return value ? value.split(",") : null;
}

async function loadJobs() {
  if (!edge.online) return;
  try {
    const states = filterStates();
    const answer = await psij.get("list_jobs/{sid}", { query: { limit: 200, state: states ? states.join(",") : "" } });
    jobs.setRows(answer.jobs || []);
    const others = (answer.jobs || []).some((j) => j.owner && j.owner !== currentUser);
    jobsNote(others ? "info" : null, null, others ? "As this edge's owner you also see other people's jobs." : null);
  } catch (exc) {
    jobsNote("error", "Could not list the jobs", describeError(exc));
  }
}
const loadJobsSoon = debounce(loadJobs, 300);
$("#psij-filter").addEventListener("change", loadJobs);
$("#psij-refresh").addEventListener("click", loadJobs);

async function cancel(job, button) {
  const jobId = job.job_id;
  const ok = await confirmAction({
    title: `Cancel job ${jobId}?`,
    text: `${job.name ? `“${job.name}”: ` : ""}${commandLine(job)}. A running job is stopped and its work so far is lost.`,
    confirmLabel: "Cancel job", cancelLabel: "Keep it running",
  });
  if (!ok) return;
  button.disabled = true;
  button.textContent = "Canceling…";
  try {
    const answer = await psij.post(`cancel/{sid}/${encodeURIComponent(jobId)}`, {});
    jobs.upsert({ job_id: jobId, state: answer.state, exit_code: answer.exit_code ?? null });
    jobsNote("success", null, `Cancel of job ${jobId} requested; its state follows here.`);
  } catch (exc) {
    jobsNote("error", `Could not cancel job ${jobId}`, describeError(exc));
    button.disabled = false;
    button.textContent = "Cancel";
  }
}

live.on("notification", (event) => {
  if (event.edge !== edge.name || event.plugin !== "psij" || event.topic !== "array_tasks") return;
  const data = event.data || {};
  if (!jobs.has(data.job_id)) return;
  jobs.upsert({ job_id: data.job_id, tasks: data.counts });
  const cell = jobs.detailCell(data.job_id);
  if (cell) showTasksSoon(data.job_id);
});
const refreshTasks = new Map();
function showTasksSoon(jobId) {
  if (!refreshTasks.has(jobId)) {
    refreshTasks.set(jobId, debounce(() => {
      const cell = jobs.detailCell(jobId);
      if (cell && jobs.has(jobId)) showArray(jobs.get(jobId), cell);
    }, 500));
  }
  refreshTasks.get(jobId)();
}

live.on("notification", (event) => {
  if (event.edge !== edge.name || event.plugin !== "psij" || event.topic !== "job_status") return;
  const data = event.data || {};
  if (!data.job_id) return;
  const states = filterStates();
  if (jobs.has(data.job_id)) {
    if (states && !states.includes(data.state)) {
      jobs.remove(data.job_id);
      return;
    }
    const update = { job_id: data.job_id, state: data.state };
    for (const key of ["exit_code", "native_id", "message"]) if (key in data) update[key] = data[key];
    jobs.upsert(update);
  } else {
    loadJobsSoon(); // submitted elsewhere (another tab, the SDK): fetch its details
  }
});

// --- executors, queues and accounts -----------------------------------------------------------

function batchFieldset() {
  const local = $("#psij-executor").value === "local";
  $("#psij-batch").disabled = local || !formUsable();
  // Disabled fields show no example values that could pass for settings.
  for (const el of $("#psij-batch").querySelectorAll("input, textarea")) {
    if (el.dataset.placeholder === undefined) el.dataset.placeholder = el.getAttribute("placeholder") || "";
    el.setAttribute("placeholder", local ? "" : el.dataset.placeholder);
  }
  $("#psij-batch-note").textContent = local
    ? "The local executor runs the job directly on the edge's host: scheduler settings do not apply."
    : "Passed to the scheduler with the job.";
}

async function loadExecutors() {
  const select = $("#psij-executor");
  try {
    const answer = await psij.get("executors");
    const current = select.value;
    const offered = (answer.executors || []).filter((e) => e.enabled && e.loads);
    replace(select, offered.map((e) => {
      const why = e.ready ? "" : ` (unavailable: ${e.error || (e.submit_command ? `${e.submit_command} not found` : "not ready")})`;
      return h("option", { value: e.name, disabled: !e.ready, text: `${e.name}${why}` });
    }));
    const ready = offered.filter((e) => e.ready).map((e) => e.name);
    select.value = ready.includes(current) && current !== "local" ? current : (ready.includes(answer.default) ? answer.default : ready[0] || "");
    const info = answer.psij || {};
    $("#psij-info").textContent = info.available ? `PSI/J ${info.version}` : "";
    if (!info.available) {
      showMessage($("#psij-submit-status"), "error", "PSI/J is not installed on this edge",
        `Jobs cannot be submitted until it is (${info.error || "psij-python is missing"}).`);
    }
  } catch (exc) {
    showMessage($("#psij-submit-status"), "error", "Could not read this edge's executors", describeError(exc));
  }
  batchFieldset();
}
$("#psij-executor").addEventListener("change", batchFieldset);

/** Replace a <select> by a text input with the same id and name (when choices are unknown). */
function asTextInput(id, placeholder) {
  const el = $(`#${id}`);
  if (el.tagName === "INPUT") return el;
  const input = h("input", { id, name: el.name, type: "text", placeholder, autocomplete: "off", spellcheck: "false" });
  el.replaceWith(input);
  return input;
}

function asSelect(id, options) {
  let el = $(`#${id}`);
  const current = el.value;
  if (el.tagName !== "SELECT") {
    const select = h("select", { id, name: el.name });
    el.replaceWith(select);
    el = select;
  }
  replace(el, h("option", { value: "", text: "scheduler default" }), options);
  if ([...el.options].some((o) => o.value === current)) el.value = current;
  return el;
}

async function loadQueues() {
  const help = $("#psij-queue-help");
  if (!queueInfo) {
    asTextInput("psij-queue", "e.g. debug");
    help.textContent = "This edge has no queue_info plugin, so its queues are not listed.";
    return;
  }
  try {
    const answer = await queueInfo.get("get_info/{sid}");
    queueLimits = answer.queues || {};
    const queues = Object.values(answer.queues || {}).sort((a, b) => Number(b.default) - Number(a.default)
      || String(a.name).localeCompare(String(b.name)));
    asSelect("psij-queue", queues.map((q) => {
      const limit = q.time_limit === "UNLIMITED" ? "no time limit" : q.time_limit != null ? `limit ${q.time_limit} min` : "";
      const nodes = q.nodes_total != null ? `${q.nodes_available ?? "?"}/${q.nodes_total} nodes up, ${q.nodes_idle ?? "?"} idle` : "";
      const label = [q.name + (q.default ? " (default)" : ""), [nodes, limit, q.state && q.state !== "UP" ? q.state : ""]
        .filter(Boolean).join(", ")].filter(Boolean).join(" — ");
      return h("option", { value: q.name, text: label });
    }));
    help.textContent = queues.length ? `From the scheduler (${answer.meta?.backend || "queue_info"}).`
      : "The scheduler reports no queues.";
  } catch (exc) {
    asTextInput("psij-queue", "e.g. debug");
    help.textContent = `Queues could not be listed: ${describeError(exc)}`;
  }
}

async function loadAccounts() {
  const help = $("#psij-account-help");
  if (!queueInfo) {
    asTextInput("psij-account", "e.g. proj1");
    help.textContent = "Accounts are not listed without queue_info.";
    return;
  }
  try {
    const answer = await queueInfo.get("list_allocations/{sid}");
    allocationLimits = answer.allocations || [];
    const byAccount = new Map();
    for (const a of answer.allocations || []) {
      if (!a.account || byAccount.has(a.account)) continue;
      byAccount.set(a.account, a);
    }
    const accounts = [...byAccount.values()].sort((a, b) => String(a.account).localeCompare(String(b.account)));
    if (!accounts.length) {
      asTextInput("psij-account", "e.g. proj1");
      help.textContent = (answer.meta?.notes || []).join(" ") || "No allocations are listed for this edge's user.";
      return;
    }
    asSelect("psij-account", accounts.map((a) => h("option", {
      value: a.account,
      text: [a.account, a.partition ? `partition ${a.partition}` : "", a.qos ? `QOS ${a.qos}` : ""].filter(Boolean).join(" — "),
    })));
    help.textContent = `Allocations of ${answer.user || "the edge's user"}.`;
    loadBudgets();
  } catch (exc) {
    asTextInput("psij-account", "e.g. proj1");
    help.textContent = exc.error === "accounting_unavailable" ? "The scheduler keeps no accounts here (no slurmdbd)."
      : `Accounts could not be listed: ${describeError(exc)}`;
  }
}

// --- budgets: what a job would cost at most, against what its account has left ------------------

let budgets = {}; // account -> queue_info usage record (limit, used, remaining in core-hours)

async function loadBudgets() {
  try {
    const answer = await queueInfo.get("usage/{sid}");
    budgets = Object.fromEntries((answer.accounts || []).map((a) => [a.account, a]));
  } catch {
    budgets = {}; // no accounting or not Slurm: no cost estimate, nothing else changes
  }
  showLimitProblems();
}

/** How many tasks an array's indices ("0-19", "1,3,5-9:2%4") make, or null if they are not such. */
function arrayCount(text) {
  const indices = new Set();
  for (const part of String(text).split("%")[0].split(",")) {
    const m = /^\s*(\d+)(?:-(\d+)(?::(\d+))?)?\s*$/.exec(part);
    if (!m) return null;
    const first = Number(m[1]);
    const last = m[2] !== undefined ? Number(m[2]) : first;
    const step = m[3] !== undefined ? Number(m[3]) : 1;
    if (last < first || step < 1 || (last - first) / step > 10000) return null;
    for (let i = first; i <= last; i += step) indices.add(i);
  }
  return indices.size || null;
}

/** The most the form's job could cost in core-hours (tasks × nodes × cores per node × wall time), or null. */
function maxCost() {
  if ($("#psij-executor").value === "local") return null;
  const queueName = $("#psij-queue").value;
  const queue = queueLimits[queueName] || Object.values(queueLimits).find((q) => q.default && !queueName);
  if (!queue || !queue.cpus_per_node) return null;
  const nodes = Number($("#psij-nodes").value || 1);
  const wall = wallSeconds($("#psij-duration").value) ?? 600;
  const tasks = arrayCount($("#psij-array").value) || 1;
  const factor = queue.charge_factor ?? 1; // what a core-hour costs in this queue (queue_info)
  return {
    coreHours: (tasks * nodes * queue.cpus_per_node * wall * factor) / 3600, nodes, cores: queue.cpus_per_node, wall, tasks,
    factor: queue.charge_factor ?? null, queue: queue.name,
  };
}

function fmtHours(value) {
  return value >= 10 ? Math.round(value).toLocaleString() : value.toPrecision(2);
}

// --- limits: warn before a request the scheduler would hold or refuse ------------------------

let queueLimits = {}; // partition name -> queue record of queue_info
let allocationLimits = []; // association records of queue_info (max_wall in minutes, …)

/** A wall time as typed ("600", "10:00", "01:00:00", "1-00:00:00") in seconds, or null. */
function wallSeconds(text) {
  const value = String(text || "").trim();
  if (!value) return null;
  if (/^\d+$/.test(value)) return Number(value);
  const m = /^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$/.exec(value);
  if (!m) return null;
  const [, d, hh, mm, ss] = m;
  return ((Number(d || 0) * 24 + Number(hh || 0)) * 60 + Number(mm)) * 60 + Number(ss);
}

/** What in the form exceeds the chosen partition's or account's limits, in words. */
function limitProblems() {
  if ($("#psij-executor").value === "local") return [];
  const problems = [];
  const queueName = $("#psij-queue").value;
  const queue = queueLimits[queueName] || Object.values(queueLimits).find((q) => q.default && !queueName);
  const wall = wallSeconds($("#psij-duration").value) ?? 600;
  const nodes = Number($("#psij-nodes").value || 1);
  if (queue) {
    const where = `partition ${queue.name}${queueName ? "" : " (the default)"}`;
    if (typeof queue.time_limit === "number" && wall > queue.time_limit * 60) {
      problems.push(`The wall time ${fmtDuration(wall)} is longer than the ${fmtDuration(queue.time_limit * 60)} `
        + `limit of ${where}: the scheduler would keep the job waiting (PartitionTimeLimit) or refuse it. `
        + "Choose a shorter wall time or another partition.");
    }
    if (typeof queue.nodes_total === "number" && queue.nodes_total > 0 && nodes > queue.nodes_total) {
      problems.push(`${nodes} nodes are more than the ${queue.nodes_total} of ${where}: the job could never start.`);
    }
    if (queue.state && !["UP", "up"].includes(queue.state)) {
      problems.push(`${where} is ${queue.state}: jobs wait until it is up again.`);
    }
  }
  const account = $("#psij-account").value;
  if (account) {
    const rows = allocationLimits.filter((a) => a.account === account
      && (!a.partition || !queueName || a.partition === queueName));
    for (const a of rows) {
      if (typeof a.max_wall === "number" && wall > a.max_wall * 60) {
        problems.push(`The wall time ${fmtDuration(wall)} is longer than account ${account}'s limit of `
          + `${fmtDuration(a.max_wall * 60)}${a.partition ? ` on ${a.partition}` : ""}.`);
        break;
      }
    }
    const budget = budgets[account];
    const cost = maxCost();
    if (budget && budget.remaining != null && cost && cost.coreHours > budget.remaining) {
      problems.push(`This job could use up to ${fmtHours(cost.coreHours)} core-hours, more than the `
        + `${fmtHours(budget.remaining)} account ${account} has left (of ${fmtHours(budget.limit)}).`);
    }
  }
  return problems;
}

function costText() {
  const account = $("#psij-account").value;
  const cost = maxCost();
  if (!cost) return null;
  const budget = budgets[account];
  const left = budget && budget.remaining != null ? `; account ${account} has ${fmtHours(budget.remaining)} left` : "";
  const tasks = cost.tasks > 1 ? `${cost.tasks} tasks × ` : "";
  const factor = cost.factor !== null && cost.factor !== 1 ? ` × ${cost.factor} (charge factor of ${cost.queue})` : "";
  return `At most ${fmtHours(cost.coreHours)} core-hours (${tasks}${cost.nodes} node${cost.nodes === 1 ? "" : "s"} × `
    + `${cost.cores} cores × ${fmtDuration(cost.wall)}${factor})${left}.`;
}

function showLimitProblems() {
  const problems = limitProblems();
  const box = $("#psij-warnings");
  const cost = costText();
  const costLine = cost ? h("p", { class: "muted small", id: "psij-cost", text: cost }) : null;
  if (!problems.length) {
    replace(box, costLine);
    return problems;
  }
  replace(box, h("div", { class: "alert warning", role: "status", id: "psij-limit-warning" },
    h("p", { class: "title", text: "This request exceeds the scheduler's limits" }),
    problems.map((text) => h("p", { text }))), costLine);
  return problems;
}
for (const id of ["psij-executor", "psij-queue", "psij-account", "psij-duration", "psij-nodes", "psij-array"]) {
  // The queue and account fields may be replaced (select <-> text input): listen on the form.
  form.addEventListener("change", (e) => { if (e.target.id === id) showLimitProblems(); });
  form.addEventListener("input", (e) => { if (e.target.id === id) showLimitProblems(); });
}

// --- submitting -------------------------------------------------------------------------------

function fieldError(input, message) {
  const field = input.closest(".field");
  input.setAttribute("aria-invalid", "true");
  const id = `${input.id}-error`;
  const note = h("p", { class: "field-error", id, text: message });
  field.appendChild(note);
  input.setAttribute("aria-describedby", [input.getAttribute("aria-describedby"), id].filter(Boolean).join(" "));
}

function clearErrors() {
  for (const note of form.querySelectorAll(".field-error")) {
    const input = form.querySelector(`[aria-describedby~="${note.id}"]`);
    if (input) {
      input.removeAttribute("aria-invalid");
      const rest = input.getAttribute("aria-describedby").split(" ").filter((x) => x !== note.id).join(" ");
      if (rest) input.setAttribute("aria-describedby", rest); else input.removeAttribute("aria-describedby");
    }
    note.remove();
  }
}

/** The submit body from the form, or null after marking the fields that are wrong. */
function buildRequest() {
  clearErrors();
  const value = (id) => ($(`#${id}`).value || "").trim();
  const errors = [];
  const bad = (id, message) => { errors.push(id); fieldError($(`#${id}`), message); };
  const executor = value("psij-executor");
  const spec = { executable: value("psij-executable") };
  if (!spec.executable) bad("psij-executable", "Name the program to run, e.g. /bin/hostname.");
  try {
    const args = shellWords($("#psij-arguments").value);
    if (args.length) spec.arguments = args;
  } catch (exc) {
    bad("psij-arguments", exc.message);
  }
  if (value("psij-name")) spec.name = value("psij-name");
  if (value("psij-directory")) spec.directory = value("psij-directory");
  try {
    const env = keyValueLines($("#psij-env").value);
    if (Object.keys(env).length) spec.environment = env;
  } catch (exc) {
    bad("psij-env", exc.message);
  }
  if (executor !== "local") {
    const attributes = {};
    if (value("psij-queue")) attributes.queue_name = value("psij-queue");
    if (value("psij-account")) attributes.account = value("psij-account");
    const duration = value("psij-duration");
    if (duration) {
      if (/^\d+$/.test(duration)) attributes.duration = Number(duration);
      else if (/^(\d+-)?(\d+:)?\d+:\d+$/.test(duration)) attributes.duration = duration;
      else bad("psij-duration", "Use seconds (600) or a wall time such as 00:10:00 or 1-00:00:00.");
    }
    for (const [id, key] of [["psij-nodes", "node_count"], ["psij-processes", "process_count"]]) {
      const v = value(id);
      if (!v) continue;
      if (/^[1-9]\d*$/.test(v)) attributes[key] = Number(v);
      else bad(id, "A whole number, 1 or more.");
    }
    if (Object.keys(attributes).length) spec.attributes = attributes;
    if (value("psij-array")) {
      if (arrayCount(value("psij-array")) === null) bad("psij-array", "Indices such as 0-19, 1,3,5-9 or 0-99%10.");
      else spec.array = value("psij-array");
    }
    const after = value("psij-after").split(/[\s,]+/).filter(Boolean);
    if (after.length) spec.after = { [value("psij-after-condition") || "succeeded"]: after };
    try {
      const custom = keyValueLines($("#psij-custom").value, "option line");
      const unprefixed = Object.keys(custom).filter((k) => !k.includes("."));
      if (unprefixed.length) bad("psij-custom", `Name the scheduler: slurm.${unprefixed[0]}=…`);
      else if (Object.keys(custom).length) spec.custom_attributes = custom;
    } catch (exc) {
      bad("psij-custom", exc.message);
    }
  }
  if (errors.length) {
    $(`#${errors[0]}`).focus();
    return null;
  }
  return { job_spec: spec, executor };
}

function idempotencyKey() {
  const bytes = new Uint8Array(16);
  window.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = buildRequest();
  if (!body) {
    showMessage($("#psij-submit-status"), "error", "The job was not submitted", "Correct the marked fields.");
    return;
  }
  const problems = showLimitProblems();
  if (problems.length) {
    const ok = await confirmAction({
      title: "Submit a job that exceeds the limits?", text: problems.join(" "),
      confirmLabel: "Submit anyway", cancelLabel: "Change the request", danger: false,
    });
    if (!ok) return;
  }
  const button = $("#psij-submit");
  button.disabled = true;
  showMessage($("#psij-submit-status"), "info", null, "Submitting…");
  try {
    // One key per click: if the answer is lost and the browser retries, no second job appears.
    const answer = await psij.post("submit/{sid}", body, { headers: { "Idempotency-Key": idempotencyKey() } });
    const box = showMessage($("#psij-submit-status"), "success", "Job submitted", null);
    box.appendChild(h("p", {}, "Job ", h("a", { href: jobUrl(answer.job_id), class: "mono", text: answer.job_id }),
      ` went to ${answer.executor}${answer.native_id ? ` as ${answer.native_id}` : ""} (state at submission: ${answer.state}).`));
    jobs.upsert({
      job_id: answer.job_id, native_id: answer.native_id, executor: answer.executor, state: answer.state,
      created: Date.now() / 1000, executable: body.job_spec.executable, arguments: body.job_spec.arguments || [],
      name: body.job_spec.name || null, queue_name: body.job_spec.attributes?.queue_name || null,
      owner: currentUser, exit_code: null, array: answer.array || null,
    });
    if ($("#psij-notify").checked) {
      try {
        await notifyWhenJobEnds(edge.name, answer.job_id);
        box.appendChild(h("p", { class: "small", text: "You will be told when it ends." }));
      } catch (exc) {
        box.appendChild(h("p", { class: "small", text: `No notification: ${describeError(exc)}` }));
      }
    }
  } catch (exc) {
    showMessage($("#psij-submit-status"), "error", "The job was not submitted", describeError(exc));
  } finally {
    button.disabled = !formUsable();
  }
});

$("#psij-preview").addEventListener("click", async () => {
  const body = buildRequest();
  if (!body) return;
  const box = $("#psij-preview-box");
  try {
    const answer = await psij.post("preview/{sid}", body);
    $("#psij-preview-text").textContent = answer.script || (Array.isArray(answer.command) ? answer.command.join(" ")
      : String(answer.command ?? ""));
    box.querySelector("summary").textContent = answer.script
      ? `Batch script for ${answer.executor} (output to ${answer.stdout_path || "the job directory"})`
      : `Command line on the edge's host (in ${answer.directory})`;
    box.hidden = false;
    box.open = true;
  } catch (exc) {
    showMessage($("#psij-submit-status"), "error", "No preview", describeError(exc));
  }
});

form.addEventListener("reset", () => {
  clearErrors();
  window.setTimeout(batchFieldset, 0);
});

// --- edge state -------------------------------------------------------------------------------

function formUsable() {
  return !whyReadOnly();
}

function applyEdgeState() {
  setFormEnabled(form, formUsable(), whyReadOnly());
  batchFieldset();
}

async function loadAll() {
  applyEdgeState();
  if (!edge.online) {
    jobsNote("warning", "The edge is offline", "Its jobs are listed again when its agent reconnects.");
    return;
  }
  await Promise.all([loadExecutors(), loadQueues(), loadAccounts(), loadJobs(), loadTemplates()]);
  applyEdgeState();
  await fillFromEarlierJob();
  showLimitProblems();
}

// "Submit again" on a job's page comes here with ?again=<job id>: the form is filled with
// that job's request, to change and submit.
let againDone = false;
async function fillFromEarlierJob() {
  const params = new URLSearchParams(window.location.search);
  if (params.get("after") && !againDone) {
    // "Run a job after this one" on a job's page: the same executor, waiting for that job.
    $("#psij-after").value = params.get("after");
    if (params.get("executor") && [...$("#psij-executor").options].some((o) => o.value === params.get("executor") && !o.disabled)) {
      $("#psij-executor").value = params.get("executor");
      batchFieldset();
    }
  }
  const again = params.get("again");
  if (!again || againDone) return;
  againDone = true;
  try {
    const j = await psij.get(`status/{sid}/${encodeURIComponent(again)}`, { query: { output: "false" } });
    const set = (id, value) => { const el = $(`#${id}`); if (el && value !== null && value !== undefined) el.value = String(value); };
    if ([...$("#psij-executor").options].some((o) => o.value === j.executor && !o.disabled)) set("psij-executor", j.executor);
    set("psij-executable", j.executable);
    set("psij-arguments", shellJoin(j.arguments || []));
    set("psij-name", j.name || "");
    if (j.directory && !String(j.directory).includes(`/${j.job_id}`)) set("psij-directory", j.directory);
    set("psij-queue", j.queue_name || "");
    set("psij-account", j.account || "");
    if (j.duration != null) set("psij-duration", j.duration);
    if (j.node_count != null) set("psij-nodes", j.node_count);
    if (j.process_count != null) set("psij-processes", j.process_count);
    set("psij-custom", Object.entries(j.custom_attributes || {}).map(([k, v]) => `${k}=${v}`).join("\n"));
    const [condition, ids] = Object.entries(j.after || {})[0] || [];
    if (condition) { set("psij-after", ids.join(" ")); set("psij-after-condition", condition); }
    if (j.array) set("psij-array", `${j.array.indices}${j.array.throttle ? `%${j.array.throttle}` : ""}`);
    batchFieldset();
    showMessage($("#psij-submit-status"), "info", null,
      `The form holds the request of job ${j.job_id}. Change what you like and submit.`);
    $("#psij-executable").focus();
  } catch (exc) {
    showMessage($("#psij-submit-status"), "error", `Could not load job ${again}`, describeError(exc));
  }
}

addPicker("psij-executable", { want: "file", title: "Choose the executable" });
addPicker("psij-directory", { want: "directory", title: "Choose the working directory" });

// --- recent jobs by waste (the reports route: one accounting call for all of them) ------------

const pct = (v) => (v === null || v === undefined ? "–" : `${Math.round(v * 100)} %`);
const wasteTable = new DataTable({
  label: "Recent jobs by waste",
  rowKey: "job_id",
  sort: { key: "waste", dir: -1 },
  emptyText: "No finished jobs yet.",
  columns: [
    { key: "job_id", label: "Job", render: (r) => h("a", { href: jobUrl(r.job_id), class: "mono", text: r.job_id }) },
    { key: "name", label: "Name or command", value: (r) => r.name || r.executable || "" },
    { key: "state", label: "State", render: (r) => stateBadge(r.state) },
    { key: "waste", label: "Unused", numeric: true, render: (r) => pct(r.waste) },
    { key: "memory_peak", label: "Memory peak", numeric: true,
      render: (r) => (r.memory_peak != null ? `${fmtBytes(r.memory_peak)}${r.memory_requested ? ` of ${fmtBytes(r.memory_requested)}` : ""}` : "–") },
    { key: "cpu_efficiency", label: "CPU", numeric: true, render: (r) => pct(r.cpu_efficiency) },
    { key: "elapsed", label: "Ran", numeric: true,
      render: (r) => (r.elapsed != null ? `${fmtDuration(r.elapsed)}${r.walltime_requested ? ` of ${fmtDuration(r.walltime_requested)}` : ""}` : "–") },
    { key: "verdict", label: "Verdict", sortable: false },
  ],
});
replace($("#psij-waste"), wasteTable.element);

async function loadWaste() {
  const box = $("#psij-waste-status");
  try {
    const answer = await psij.get("reports/{sid}", { query: { limit: 50 } });
    wasteTable.setRows(answer.reports || []);
    box.hidden = true;
  } catch (exc) {
    box.hidden = false;
    showMessage(box, "error", "Could not read the job reports", describeError(exc));
  }
}
$("#psij-waste-load").addEventListener("click", (event) => {
  event.currentTarget.textContent = "Refresh";
  loadWaste();
});

// --- templates: named, saved job forms (private, or shared with everyone who may use the edge) ----

let templates = [];

async function loadTemplates() {
  try {
    templates = (await psij.get("templates/{sid}")).templates || [];
  } catch {
    templates = [];
  }
  const select = $("#psij-template");
  const chosen = select.value;
  replace(select, h("option", { value: "", text: "—" }), templates.map((t) => h("option", {
    value: t.template_id, text: `${t.name}${t.mine ? (t.shared ? " (yours, shared)" : " (yours)") : ` (shared by ${t.owner})`}`,
  })));
  select.value = templates.some((t) => t.template_id === chosen) ? chosen : "";
  $("#psij-template-delete").hidden = !templates.find((t) => t.template_id === select.value)?.mine;
}

/** Put a submit body ({job_spec, executor}) into the form. */
function fillForm(body) {
  const spec = body.job_spec || {};
  const attrs = spec.attributes || {};
  const set = (id, value) => { const el = $(`#${id}`); if (el) el.value = value === null || value === undefined ? "" : String(value); };
  if ([...$("#psij-executor").options].some((o) => o.value === body.executor && !o.disabled)) set("psij-executor", body.executor);
  set("psij-executable", spec.executable);
  set("psij-arguments", shellJoin(spec.arguments || []));
  set("psij-name", spec.name);
  set("psij-directory", spec.directory);
  set("psij-env", Object.entries(spec.environment || {}).map(([k, v]) => `${k}=${v}`).join("\n"));
  set("psij-queue", attrs.queue_name);
  set("psij-account", attrs.account);
  set("psij-duration", attrs.duration);
  set("psij-nodes", attrs.node_count);
  set("psij-processes", attrs.process_count);
  set("psij-custom", Object.entries(spec.custom_attributes || {}).map(([k, v]) => `${k}=${v}`).join("\n"));
  set("psij-array", typeof spec.array === "object" && spec.array ? spec.array.indices : spec.array);
  batchFieldset();
  showLimitProblems();
}

$("#psij-template").addEventListener("change", () => {
  $("#psij-template-delete").hidden = !templates.find((t) => t.template_id === $("#psij-template").value)?.mine;
});
$("#psij-template-load").addEventListener("click", () => {
  const t = templates.find((one) => one.template_id === $("#psij-template").value);
  if (!t) return;
  fillForm(t.body);
  $("#psij-template-name").value = t.mine ? t.name : "";
  $("#psij-template-shared").checked = t.mine && t.shared;
  showMessage($("#psij-submit-status"), "info", null,
    `The form holds template “${t.name}”${t.mine ? "" : ` of ${t.owner}`}. Change what you like and submit.`);
});
$("#psij-template-save").addEventListener("click", async () => {
  const name = $("#psij-template-name").value.trim();
  if (!name) {
    showMessage($("#psij-submit-status"), "error", null, "Name the template first.");
    $("#psij-template-name").focus();
    return;
  }
  const body = buildRequest();
  if (!body) return;
  try {
    const saved = await psij.post("templates/{sid}", { name, shared: $("#psij-template-shared").checked, body });
    await loadTemplates();
    $("#psij-template").value = saved.template_id;
    showMessage($("#psij-submit-status"), "success", null,
      `Template “${saved.name}” saved${saved.shared ? ", shared with everyone who may use this edge" : ""}.`);
  } catch (exc) {
    showMessage($("#psij-submit-status"), "error", "Could not save the template", describeError(exc));
  }
});
$("#psij-template-delete").addEventListener("click", async () => {
  const t = templates.find((one) => one.template_id === $("#psij-template").value);
  if (!t) return;
  const ok = await confirmAction({ title: `Delete template “${t.name}”?`, text: "Jobs submitted from it are not affected.",
    confirmLabel: "Delete template", cancelLabel: "Keep it" });
  if (!ok) return;
  try {
    await psij.post(`templates/{sid}/${encodeURIComponent(t.template_id)}/delete`, {});
    await loadTemplates();
  } catch (exc) {
    showMessage($("#psij-submit-status"), "error", "Could not delete the template", describeError(exc));
  }
});

onEdgeState(() => loadAll());
// Every (re)connection of the stream: catch up on changes that happened while it was away.
live.on("resync", () => loadJobsSoon());
live.whileDown(loadJobs, 8000);
loadAll();
