// One psij job: state, details and history, and stdout/stderr tailed as they grow. The
// status route answers the bytes after the offsets we pass and the offsets to pass next, so
// each poll moves only new output. Job state changes arrive as events and trigger a poll at
// once; between them, a running job's output is polled every second.

import {
  $, $$, ApiError, PluginClient, describeError, fmtBytes, fmtDuration, fmtTime, fmtValue, h, isFinal, meter, page, replace,
  shellJoin, showMessage, stateBadge, toDate,
} from "../core.js";
import { showTasks } from "../arraytasks.js";
import { confirmAction } from "../confirm.js";
import { edge, onEdgeState } from "../edgepage.js";
import { pathLinks } from "../filelinks.js";
import { live } from "../live.js";
import { reasonIsFatal, reasonText } from "../reasons.js";
import { notifyWhenJobEnds, reloadSubscriptions, watchesJob } from "../notify.js";

const psij = new PluginClient(edge.name, "psij");
const queueInfo = edge.plugins.includes("queue_info") ? new PluginClient(edge.name, "queue_info") : null;
const PAGE_BYTES = 256 * 1024; // one page of output when reading a stream from its start
const trimmed = { stdout: false, stderr: false };
const jobId = page.jobId;
const TAIL_MS = 1000;
const QUIET_MAX_MS = 10000;
const KEEP_CHARS = 2_000_000; // the page keeps the last 2 MB of each stream

const offsets = { stdout: 0, stderr: 0 };
let job = null;
let timer = null;
let inflight = null;
let gone = false;

function appendOutput(stream, text) {
  if (!text || pagers[stream] !== null) return;
  const pre = $(`#job-${stream}`);
  const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
  pre.appendChild(document.createTextNode(text));
  if (pre.textContent.length > KEEP_CHARS) {
    const keep = pre.textContent.slice(-KEEP_CHARS);
    pre.textContent = `[… earlier output not shown here: use “From the start” or “Download” …]\n${keep}`;
    trimmed[stream] = true;
    $(`[data-page-stream="${stream}"]`).hidden = false;
  }
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

function row(label, value) {
  if (value === null || value === undefined || value === "" || (Array.isArray(value) && !value.length)) return null;
  return h("tr", {}, h("th", { scope: "row", text: label }),
    h("td", {}, value instanceof Node ? value : String(value)));
}

const jobUrl = (id) => `/edges/${encodeURIComponent(edge.name)}/plugins/psij/jobs/${encodeURIComponent(id)}/`;

/** An array job's tasks, (re)drawn when they change. */
function loadTasks() {
  if (!job?.array) return;
  $("#job-tasks").hidden = false;
  showTasks($("#job-tasks-body"), {
    psij, job, jobUrl, canWrite: edge.canWrite,
    onError: (title, text) => showMessage($("#job-status"), "error", title, text),
    onRetried: (answer) => {
      showMessage($("#job-status"), "success", null, `Tasks ${answer.tasks.join(", ")} run again as job ${answer.job_id}.`);
      loadTasks();
    },
  });
}
let tasksShown = false;

function renderJob(j) {
  job = j;
  if (j.array && !tasksShown) {
    tasksShown = true;
    loadTasks();
  }
  replace($("#job-state"), stateBadge(j.state));
  const command = shellJoin([j.executable, ...(j.arguments || [])]);
  $("#job-summary").textContent = `${j.name ? `${j.name}: ` : ""}${command} — ${j.executor}${j.native_id ? ` job ${j.native_id}` : ""}`;
  const custom = Object.entries(j.custom_attributes || {}).map(([k, v]) => `${k}=${v}`).join(", ");
  replace($("#job-details"), h("table", { class: "kv" },
    row("Name", j.name),
    row("Command", h("span", { class: "mono", text: command })),
    row("Executor", j.executor),
    row("Native ID", j.native_id && h("span", { class: "mono", text: j.native_id })),
    row("State", j.state),
    row("Exit code", j.exit_code),
    row("Message", j.message),
    row("Queue", j.queue_name),
    row("Account", j.account),
    row("Wall time", j.duration != null ? fmtDuration(Number(j.duration)) : null),
    row("Nodes", j.node_count),
    row("Processes", j.process_count),
    row("Scheduler options", custom),
    row("Directory", j.directory && pathLinks(j.directory)),
    row("Array", j.array && `${j.array.count} task${j.array.count === 1 ? "" : "s"} (${j.array.indices}${j.array.throttle ? `, at most ${j.array.throttle} at once` : ""}); %a in the file names is the task's index`),
    row("Retry of", j.retry_of && h("a", { href: jobUrl(j.retry_of), class: "mono", text: j.retry_of })),
    row("Output file", j.stdout_path && pathLinks(j.stdout_path, { file: true })),
    row("Error file", j.stderr_path && pathLinks(j.stderr_path, { file: true })),
    row("Submitted by", j.owner),
    row("Runs as", runsAs()),
    row("Submitted", j.created ? fmtTime(j.created) : null),
    row("Waited", waited(j)),
    row("Elapsed", elapsed(j)),
    row("Last change", j.updated ? fmtTime(j.updated) : null)));
  replace($("#job-history"), (j.history || []).map((step) => h("li", {},
    h("time", { text: fmtTime(step.time) }), stateBadge(step.state),
    step.exit_code !== undefined && step.exit_code !== null ? h("span", { class: "muted", text: `exit code ${step.exit_code}` }) : null,
    step.message ? h("span", { class: "muted", text: fmtValue(step.message) }) : null)));
  for (const stream of ["stdout", "stderr"]) {
    const size = j[`${stream}_size`];
    $(`#${stream}-size`).textContent = size != null ? fmtBytes(size) : "";
  }
  if (isFinal(j.state)) {
    for (const stream of ["stdout", "stderr"]) $(`#job-${stream}`).dataset.empty = "(no output)";
  }
  const notify = $("#job-notify");
  notify.hidden = isFinal(j.state) || notify.dataset.done === "1";
  const cancel = $("#job-cancel");
  cancel.hidden = !edge.canWrite || isFinal(j.state);
  cancel.disabled = !edge.online;
  const again = $("#job-again");
  if (again) again.hidden = !isFinal(j.state);
  explain(j);
  loadReport(j);
  const after = $("#job-after");
  if (after) {
    after.hidden = j.executor === "local";
    after.href = `${after.href.split("?")[0]}?after=${encodeURIComponent(j.job_id)}&executor=${encodeURIComponent(j.executor)}`;
  }
  if (j.state !== pipelineDrawnFor) {
    pipelineDrawnFor = j.state;
    loadPipelineSoon();
  }
}

// --- the pipeline around this job: what it waits for and what waits for it ---------------------

const CONDITION_WORDS = { succeeded: "succeeds", failed: "fails", ended: "ends" };
let pipelineTimer = null;
let pipelineDrawnFor = null; // this job's state when the pipeline was last asked for
let related = new Set(); // job ids whose state changes redraw the pipeline

function loadPipelineSoon() {
  if (pipelineTimer) return;
  pipelineTimer = window.setTimeout(() => { pipelineTimer = null; loadPipeline(); }, 200);
}

function jobNode(j, fallbackId) {
  const id = j ? j.job_id : fallbackId;
  return h("span", { class: "pipeline-job" },
    h("a", { href: `../${encodeURIComponent(id)}/`, class: "mono", text: j && j.name ? j.name : id }), " ",
    stateBadge(j ? j.state : "unknown"));
}

async function loadPipeline() {
  if (!job) return;
  const upstream = Object.entries(job.after || {});
  let jobs = [];
  try {
    jobs = (await psij.get("list_jobs/{sid}", { query: { limit: 500 } })).jobs || [];
  } catch {
    return;
  }
  const byId = new Map(jobs.map((j) => [j.job_id, j]));
  const downstream = jobs.filter((j) => Object.values(j.after || {}).some((ids) => ids.includes(jobId)));
  related = new Set([...upstream.flatMap(([, ids]) => ids), ...downstream.map((j) => j.job_id)]);
  $("#job-pipeline").hidden = !upstream.length && !downstream.length;
  const items = [];
  for (const [condition, ids] of upstream) {
    for (const id of ids) {
      items.push(h("li", { class: "upstream" }, "Starts once ", jobNode(byId.get(id), id), ` ${CONDITION_WORDS[condition] || condition}`));
    }
  }
  for (const j of downstream) {
    const condition = Object.entries(j.after).find(([, ids]) => ids.includes(jobId))[0];
    items.push(h("li", { class: "downstream" }, jobNode(j), ` starts once this job ${CONDITION_WORDS[condition] || condition}`));
  }
  replace($("#job-pipeline-body"), h("ul", { class: "pipeline", id: "job-pipeline-list" }, items));
}

// --- what a finished job used (the report route, like seff) -------------------------------------

let reportState = "none"; // none | loading | shown | pending
let reportTries = 0;
const REPORT_RETRY_MS = 3000;
const REPORT_TRIES = 10;

/** Once the job has ended, ask for its report (once; again later if accounting lagged). */
function loadReport(j) {
  if (!isFinal(j.state) || reportState === "loading" || reportState === "shown") return;
  reportState = "loading";
  psij.get(`report/{sid}/${encodeURIComponent(jobId)}`)
    .then((r) => {
      renderReport(r);
      // Accounting can lag the job's end by a moment (not final yet, or no record of the job
      // yet: the agent's figures with a note): ask again a few times, seconds apart.
      const lagging = r.source !== "agent" ? Boolean((r.scheduler_state && !isFinalScheduler(r)) || r.tasks_unaccounted)
        : Boolean(r.note) && j.executor !== "local";
      reportState = lagging ? "pending" : "shown";
      if (lagging && reportTries < REPORT_TRIES) {
        reportTries += 1;
        window.setTimeout(() => loadReport(job || j), REPORT_RETRY_MS);
      }
    })
    .catch((exc) => {
      reportState = "none";
      $("#job-report").hidden = false;
      replace($("#job-report-body"), h("p", { class: "muted", text: `No report: ${describeError(exc)}` }));
    });
}

function isFinalScheduler(r) {
  return !["RUNNING", "PENDING", "COMPLETING", "REQUEUED", "SUSPENDED", "R", "Q", "E", "H"].includes(r.scheduler_state);
}

function percent(value) {
  return value === null || value === undefined ? null : `${Math.round(value * 100)} %`;
}

function meterRow(label, used, asked, efficiency) {
  if (used === null && asked === null) return null;
  const cells = [used ?? "?", asked ? ` of ${asked}` : ""].join("");
  const known = efficiency !== null && efficiency !== undefined;
  return h("tr", {}, h("th", { scope: "row", text: label }),
    h("td", {}, known ? meter(efficiency * 100, { inline: true, label: `${label} used of what was asked for` }) : null,
      cells, known ? ` (${percent(efficiency)})` : null));
}

function renderReport(r) {
  $("#job-report").hidden = false;
  $("#job-verdict").textContent = r.verdicts && r.verdicts.length ? `${capitalise(r.verdicts.join("; "))}.` : "";
  $("#job-report-source").textContent = r.source === "agent"
    ? "from what the agent saw" : `from ${r.source}${r.scheduler_state ? ` (${r.scheduler_state})` : ""}`;
  const cores = r.cpus ? `${r.cpus} core${r.cpus === 1 ? "" : "s"}` : null;
  // An array's requests are per task, its use the largest task's, its CPU all tasks' (report.py).
  const tasks = Array.isArray(r.tasks) ? r.tasks : null;
  const each = tasks ? " per task" : "";
  const cpuAsked = tasks
    ? (r.allocated_cpu_seconds != null ? `${fmtDuration(r.allocated_cpu_seconds)} allocated to ${tasks.length} task${tasks.length === 1 ? "" : "s"}` : null)
    : (cores && r.elapsed != null ? `${cores} × ${fmtDuration(r.elapsed)}` : cores);
  replace($("#job-report-body"), h("table", { class: "kv", id: "job-report-table" },
    meterRow(tasks ? "Memory peak (largest task)" : "Memory peak", r.memory_peak != null ? fmtBytes(r.memory_peak) : null,
      r.memory_requested ? `${fmtBytes(r.memory_requested)}${each}` : null, r.memory_efficiency),
    meterRow("CPU", r.cpu_time != null ? `${fmtDuration(r.cpu_time)} core time` : null, cpuAsked, r.cpu_efficiency),
    meterRow(tasks ? "Wall time (longest task)" : "Wall time", r.elapsed != null ? fmtDuration(r.elapsed) : null,
      r.walltime_requested ? `${fmtDuration(r.walltime_requested)}${each}` : null, r.walltime_efficiency),
    row("Unused (waste)", percent(r.waste)),
    row("Exit", [r.exit_code != null ? `code ${r.exit_code}` : null, r.signal ? `signal ${r.signal}` : null,
      r.reason].filter(Boolean).join(", ")),
    row("Nodes", r.node_list && h("span", { class: "mono", text: r.node_list })),
    row("Queue wait", r.queue_wait != null ? fmtDuration(r.queue_wait) : null),
    row("Note", r.note)),
  tasks ? taskUsage(tasks) : null);
}

/** Each task of an array: what it used (the report's ``tasks``). */
function taskUsage(tasks) {
  const cell = (value) => h("td", { text: value ?? "–" });
  return h("table", { class: "data", id: "job-report-tasks", "aria-label": "What each task used" },
    h("thead", {}, h("tr", {}, ...["Task", "Scheduler state", "Exit", "Wall time", "CPU", "Memory peak"]
      .map((label) => h("th", { scope: "col", text: label })))),
    h("tbody", {}, ...tasks.map((t) => h("tr", {},
      h("th", { scope: "row", text: String(t.index) }), cell(t.scheduler_state),
      cell(t.exit_code != null ? String(t.exit_code) : null),
      cell(t.elapsed != null ? fmtDuration(t.elapsed) : null),
      cell(t.cpu_efficiency != null ? percent(t.cpu_efficiency) : null),
      cell(t.memory_peak != null ? fmtBytes(t.memory_peak) : null)))));
}

function capitalise(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : text;
}

/** The Unix account and host the job runs as (the agent's), e.g. "alice on login1". */
function runsAs() {
  const account = page.runsAs || {};
  return account.user ? h("span", {}, h("strong", { class: "mono", text: account.user }), ` on ${account.host}`) : null;
}

function stepTime(j, states) {
  const step = (j.history || []).find((s) => states.includes(s.state));
  return step ? toDate(step.time) : null;
}

function waited(j) {
  const created = toDate(j.created);
  const started = stepTime(j, ["ACTIVE"]);
  if (!created) return null;
  if (started) return fmtDuration((started - created) / 1000);
  return isFinal(j.state) ? null : `${fmtDuration((Date.now() - created) / 1000)} so far`;
}

/** How long the job has run (from ACTIVE to its end, or to now while it runs). */
function elapsed(j) {
  const started = stepTime(j, ["ACTIVE"]);
  if (!started) return isFinal(j.state) ? "never started" : null;
  const ended = isFinal(j.state) ? (stepTime(j, ["COMPLETED", "FAILED", "CANCELED"]) || toDate(j.updated)) : new Date();
  return `${fmtDuration((ended - started) / 1000)}${isFinal(j.state) ? "" : " so far"}`;
}

// --- why a job waits or failed -------------------------------------------------------------------

let schedulerJob = null; // the scheduler's record of this job (queue_info), when known
let schedulerAsked = 0;
let explaining = null;

async function askScheduler(j, force) {
  if (!queueInfo || !j.native_id || j.executor === "local") return null;
  if (!force && Date.now() - schedulerAsked < 15000) return schedulerJob;
  schedulerAsked = Date.now();
  try {
    const answer = await queueInfo.get("list_jobs/{sid}", { query: { state: "all", force: force ? "true" : "" } });
    const native = String(j.native_id);
    schedulerJob = (answer.jobs || []).find((q) => String(q.job_id) === native) || null;
  } catch {
    schedulerJob = null;
  }
  return schedulerJob;
}

function whereOutputWent(j) {
  return h("ul", { class: "small" },
    h("li", {}, "Standard output: ", h("span", { class: "mono", text: j.stdout_path || "–" }),
      ` (${j.stdout_size != null ? fmtBytes(j.stdout_size) : "size unknown"})`),
    h("li", {}, "Standard error: ", h("span", { class: "mono", text: j.stderr_path || "–" }),
      ` (${j.stderr_size != null ? fmtBytes(j.stderr_size) : "size unknown"})`),
    h("li", {}, "Working directory: ", h("span", { class: "mono", text: j.directory || "–" })));
}

function renderWhy(j, sched) {
  const box = $("#job-why");
  if (j.state === "QUEUED" && sched && sched.reason) {
    const fatal = reasonIsFatal(sched.reason);
    replace(box, h("div", { class: `alert ${fatal ? "warning" : "info"}`, role: "status", id: "job-pending-reason" },
      h("p", { class: "title", text: fatal ? "This job will not start as it is" : "Why it is waiting" }),
      h("p", { text: reasonText(sched.reason) }),
      h("p", { class: "muted small" }, `The scheduler says: ${sched.native_state || sched.state}, reason `,
        h("code", { text: sched.reason }), sched.partition ? ` (partition ${sched.partition})` : "")));
    return;
  }
  if (j.state !== "FAILED") {
    replace(box);
    return;
  }
  const facts = [];
  facts.push(h("p", { text: j.message ? `PSI/J says: ${j.message}` : "PSI/J gives no message." }));
  facts.push(h("p", { text: j.exit_code === null || j.exit_code === undefined
    ? "No exit code: the program did not run to its end (the batch script failed before or while starting it)."
    : `Exit code ${j.exit_code}.` }));
  if (sched) {
    const state = sched.native_state || sched.state;
    facts.push(h("p", {}, `The scheduler says: ${state}`,
      sched.reason && sched.reason !== "None" ? [", reason ", h("code", { text: sched.reason }), ` — ${reasonText(sched.reason)}`] : "",
      state === "COMPLETED" ? " (the batch script itself ended normally: the program it started failed)" : "", "."));
  } else if (j.native_id && j.executor !== "local") {
    facts.push(h("p", { class: "muted", text: `The scheduler no longer lists job ${j.native_id}.` }));
  }
  // psij's own marker lines say nothing to a person.
  const batch = String(j.batch_output || "").split("\n").filter((line) => !/^_PSI_J_/.test(line)).join("\n").trim();
  if (batch) {
    facts.push(h("p", { text: "Output of the batch script itself (not of your program):" }),
      h("pre", { class: "plain mono", id: "job-batch-output", text: batch }));
  }
  const stderr = $("#job-stderr").textContent.trimEnd().split("\n").slice(-8).join("\n");
  if (stderr) {
    facts.push(h("p", { text: "The last lines of its standard error:" }),
      h("pre", { class: "plain mono", id: "job-stderr-tail", text: stderr }));
  }
  facts.push(h("p", { text: "Where output went:" }), whereOutputWent(j));
  replace(box, h("div", { class: "alert error", role: "status", id: "job-failure" },
    h("p", { class: "title", text: "Why it failed" }), facts));
}

/** Show what psij and the scheduler know about a waiting or failed job. */
function explain(j) {
  if (explaining) return;
  if (j.state !== "QUEUED" && j.state !== "FAILED") {
    replace($("#job-why"));
    return;
  }
  explaining = askScheduler(j, j.state === "FAILED" && !schedulerJob)
    .then((sched) => renderWhy(job || j, sched))
    .finally(() => { explaining = null; });
}

/** One status call; resolves to true if more output is waiting already. */
async function poll() {
  if (inflight) return inflight;
  inflight = (async () => {
    const answer = await psij.get(`status/{sid}/${encodeURIComponent(jobId)}`, {
      query: { stdout_offset: offsets.stdout, stderr_offset: offsets.stderr },
    });
    for (const stream of ["stdout", "stderr"]) {
      appendOutput(stream, answer[stream]);
      if (typeof answer[`${stream}_offset`] === "number") offsets[stream] = answer[`${stream}_offset`];
    }
    renderJob(answer);
    replace($("#job-status"));
    return Boolean(answer.stdout_truncated || answer.stderr_truncated);
  })().finally(() => { inflight = null; });
  return inflight;
}

/** Poll until the job has ended and its output is read to the end. */
async function follow() {
  if (timer) window.clearTimeout(timer);
  timer = null;
  if (gone || !edge.online) return;
  let more = false;
  try {
    more = await poll();
  } catch (exc) {
    if (exc instanceof ApiError && exc.error === "unknown_job") {
      gone = true;
      showMessage($("#job-status"), "error", "No such job",
        "This edge knows no job with this id, or it belongs to someone else.");
      replace($("#job-state"), stateBadge("unknown"));
      replace($("#job-details"), h("p", { class: "muted", text: "No details." }));
      return;
    }
    showMessage($("#job-status"), "error", "Could not read the job's state", describeError(exc));
  }
  const grew = offsets.stdout + offsets.stderr !== lastTotal;
  lastTotal = offsets.stdout + offsets.stderr;
  quietPolls = grew ? 0 : quietPolls + 1;
  if (more) {
    timer = window.setTimeout(follow, 0);
  } else if (!job || !isFinal(job.state)) {
    // State changes arrive as events (and poll at once); only output needs polling, and a
    // job that prints nothing is asked less and less often, up to every QUIET_MAX_MS.
    timer = window.setTimeout(follow, Math.min(TAIL_MS * 2 ** Math.min(quietPolls, 4), QUIET_MAX_MS));
  }
}
let lastTotal = 0;
let quietPolls = 0;

$("#job-cancel").addEventListener("click", async (event) => {
  const button = event.currentTarget;
  const ok = await confirmAction({
    title: `Cancel job ${jobId}?`,
    text: `${job?.name ? `“${job.name}”: ` : ""}${job ? shellJoin([job.executable, ...(job.arguments || [])]) : ""}. `
      + "A running job is stopped and its work so far is lost.",
    confirmLabel: "Cancel job", cancelLabel: "Keep it running",
  });
  if (!ok) return;
  button.disabled = true;
  button.textContent = "Canceling…";
  try {
    await psij.post(`cancel/{sid}/${encodeURIComponent(jobId)}`, {});
    showMessage($("#job-status"), "success", null, "Cancel requested; the state below follows.");
  } catch (exc) {
    showMessage($("#job-status"), "error", "Could not cancel the job", describeError(exc));
  } finally {
    button.textContent = "Cancel job";
    follow();
  }
});

$("#job-notify").addEventListener("click", async (event) => {
  const button = event.currentTarget;
  button.disabled = true;
  try {
    await notifyWhenJobEnds(edge.name, jobId);
    button.dataset.done = "1";
    button.hidden = true;
    showMessage($("#job-status"), "success", null,
      "You will be told when this job ends (a desktop notification while a portal page is open).");
  } catch (exc) {
    showMessage($("#job-status"), "error", "Could not subscribe", describeError(exc));
  } finally {
    button.disabled = false;
  }
});
reloadSubscriptions().then(() => {
  if (watchesJob(edge.name, jobId)) {
    $("#job-notify").dataset.done = "1";
    $("#job-notify").hidden = true;
  }
});

live.on("notification", (event) => {
  if (event.edge === edge.name && event.plugin === "psij" && event.topic === "array_tasks"
      && event.data?.job_id === jobId) loadTasks();
  if (event.edge !== edge.name || event.plugin !== "psij" || event.topic !== "job_status") return;
  if (event.data && event.data.job_id === jobId) follow();
  else if (event.data && related.has(event.data.job_id)) loadPipelineSoon();
});
live.on("resync", () => follow());

// --- the whole output: page through it from the start, or download it ---------------------------

async function readPage(stream, offset, maxBytes = PAGE_BYTES) {
  const other = stream === "stdout" ? "stderr" : "stdout";
  const answer = await psij.get(`status/{sid}/${encodeURIComponent(jobId)}`, {
    query: { [`${stream}_offset`]: offset, [`${other}_offset`]: Number(job?.[`${other}_size`]) || 2 ** 50, max_bytes: maxBytes },
  });
  return { text: answer[stream] || "", next: answer[`${stream}_offset`], size: answer[`${stream}_size`] };
}

const pagers = { stdout: null, stderr: null };

async function showPage(stream, offset) {
  const pager = $(`#${stream}-pager`);
  const pre = $(`#job-${stream}`);
  try {
    const got = await readPage(stream, offset);
    pagers[stream] = offset;
    pre.textContent = got.text;
    pre.scrollTop = 0;
    const end = typeof got.next === "number" ? got.next : offset + got.text.length;
    replace(pager, h("p", { class: "small" }, `Bytes ${offset.toLocaleString("en-US")}–${end.toLocaleString("en-US")} of `
      + `${got.size != null ? fmtBytes(got.size) : "?"}. `),
    h("div", { class: "output-tools" },
      h("button", { type: "button", class: "btn small", text: "Previous page", disabled: offset === 0,
        on: { click: () => showPage(stream, Math.max(0, offset - PAGE_BYTES)) } }),
      h("button", { type: "button", class: "btn small", text: "Next page", disabled: got.size != null && end >= got.size,
        on: { click: () => showPage(stream, end) } }),
      h("button", { type: "button", class: "btn small", text: "Back to the live tail", on: { click: () => tail(stream) } })));
    pager.hidden = false;
  } catch (exc) {
    replace(pager, h("p", { class: "error-text", text: `Could not read the output: ${describeError(exc)}` }));
    pager.hidden = false;
  }
}

function tail(stream) {
  pagers[stream] = null;
  $(`#${stream}-pager`).hidden = true;
  $(`#job-${stream}`).textContent = "";
  offsets[stream] = Math.max(0, (Number(job?.[`${stream}_size`]) || 0) - KEEP_CHARS);
  trimmed[stream] = offsets[stream] > 0;
  follow();
}

async function download(stream, button) {
  button.disabled = true;
  const label = button.textContent;
  const parts = [];
  try {
    let offset = 0;
    for (;;) {
      const got = await readPage(stream, offset, 1024 * 1024);
      parts.push(got.text);
      button.textContent = `Downloading… ${fmtBytes(got.next ?? offset)}`;
      if (typeof got.next !== "number" || got.next <= offset || (got.size != null && got.next >= got.size)) break;
      offset = got.next;
    }
    const url = URL.createObjectURL(new Blob(parts, { type: "text/plain" }));
    const link = h("a", { href: url, download: `${jobId}.${stream}.txt`, hidden: true });
    document.body.appendChild(link);
    link.click();
    link.remove();
    window.setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (exc) {
    showMessage($("#job-status"), "error", `Could not download ${stream}`, describeError(exc));
  } finally {
    button.textContent = label;
    button.disabled = false;
  }
}

for (const button of $$("[data-page-stream]")) button.addEventListener("click", () => showPage(button.dataset.pageStream, 0));
for (const button of $$("[data-download-stream]")) {
  button.addEventListener("click", () => download(button.dataset.downloadStream, button));
}
onEdgeState((online) => {
  if (online) follow();
  else showMessage($("#job-status"), "warning", "The edge is offline",
    "The job's state and output are followed again when its agent reconnects.");
});

if (edge.online) follow();
else showMessage($("#job-status"), "warning", "The edge is offline",
  "The job's state and output are shown when its agent reconnects.");
