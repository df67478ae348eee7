// One psij job: state, details and history, and stdout/stderr tailed as they grow. The
// status route answers the bytes after the offsets we pass and the offsets to pass next, so
// each poll moves only new output. Job state changes arrive as events and trigger a poll at
// once; between them, a running job's output is polled every second.

import {
  $, ApiError, PluginClient, describeError, fmtBytes, fmtDuration, fmtTime, fmtValue, h, isFinal, page, replace,
  shellJoin, showMessage, stateBadge,
} from "../core.js";
import { edge, onEdgeState } from "../edgepage.js";
import { live } from "../live.js";

const psij = new PluginClient(edge.name, "psij");
const jobId = page.jobId;
const TAIL_MS = 1000;
const KEEP_CHARS = 2_000_000; // the page keeps the last 2 MB of each stream

const offsets = { stdout: 0, stderr: 0 };
let job = null;
let timer = null;
let inflight = null;
let gone = false;

function appendOutput(stream, text) {
  if (!text) return;
  const pre = $(`#job-${stream}`);
  const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
  pre.appendChild(document.createTextNode(text));
  if (pre.textContent.length > KEEP_CHARS) {
    const keep = pre.textContent.slice(-KEEP_CHARS);
    pre.textContent = `[… earlier output not shown …]\n${keep}`;
  }
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

function row(label, value) {
  if (value === null || value === undefined || value === "" || (Array.isArray(value) && !value.length)) return null;
  return h("tr", {}, h("th", { scope: "row", text: label }),
    h("td", {}, value instanceof Node ? value : String(value)));
}

function renderJob(j) {
  job = j;
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
    row("Directory", j.directory && h("span", { class: "mono", text: j.directory })),
    row("Output file", j.stdout_path && h("span", { class: "mono", text: j.stdout_path })),
    row("Error file", j.stderr_path && h("span", { class: "mono", text: j.stderr_path })),
    row("Owner", j.owner),
    row("Submitted", j.created ? fmtTime(j.created) : null),
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
  const cancel = $("#job-cancel");
  cancel.hidden = !edge.canWrite || isFinal(j.state);
  cancel.disabled = !edge.online;
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
  if (more) {
    timer = window.setTimeout(follow, 0);
  } else if (!job || !isFinal(job.state)) {
    timer = window.setTimeout(follow, TAIL_MS);
  }
}

$("#job-cancel").addEventListener("click", async (event) => {
  const button = event.currentTarget;
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

live.on("notification", (event) => {
  if (event.edge !== edge.name || event.plugin !== "psij" || event.topic !== "job_status") return;
  if (event.data && event.data.job_id === jobId) follow();
});
live.on("resync", () => follow());
onEdgeState((online) => {
  if (online) follow();
  else showMessage($("#job-status"), "warning", "The edge is offline",
    "The job's state and output are followed again when its agent reconnects.");
});

if (edge.online) follow();
else showMessage($("#job-status"), "warning", "The edge is offline",
  "The job's state and output are shown when its agent reconnects.");
