// Job arrays: an array job's tasks as a table (state, exit code, output on demand) with a
// retry of the failed ones; used by the jobs list (an expanded row) and the job's own page.

import { describeError, h, replace, stateBadge } from "./core.js";
import { DataTable } from "./table.js";

/** "17 done · 3 failed" from an array's task counts. */
export function taskCountsText(counts) {
  const words = [["COMPLETED", "done"], ["FAILED", "failed"], ["CANCELED", "canceled"], ["ACTIVE", "running"],
    ["QUEUED", "queued"]];
  return words.filter(([state]) => counts?.[state]).map(([state, word]) => `${counts[state]} ${word}`).join(" · ");
}

function idempotencyKey() {
  const bytes = new Uint8Array(16);
  window.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Fill ``cell`` with the tasks of array ``job`` (``{job_id, tasks: counts}``): ``psij`` is the
 * page's PluginClient, ``jobUrl(id)`` a job's page, ``canWrite`` whether to offer the retry,
 * ``onRetried(answer)`` what to do once the retry was submitted, ``onError(title, text)`` how to say it failed.
 */
export async function showTasks(cell, { psij, job, jobUrl, canWrite, onRetried, onError }) {
  replace(cell, h("p", { class: "muted small", text: "Loading the tasks…" }));
  let answer;
  try {
    answer = await psij.get(`tasks/{sid}/${encodeURIComponent(job.job_id)}`);
  } catch (exc) {
    replace(cell, h("p", { class: "error", text: `Could not list the tasks: ${describeError(exc)}` }));
    return;
  }
  const tasks = answer.tasks || [];
  const counts = {};
  for (const t of tasks) counts[t.state] = (counts[t.state] || 0) + 1;
  const output = h("div", { class: "task-output", "aria-live": "polite" });
  const retryable = tasks.filter((t) => (t.state === "FAILED" || t.state === "CANCELED") && !t.retried_by);
  const table = new DataTable({
    label: `Tasks of job ${job.job_id}`,
    rowKey: "index",
    sort: { key: "index", dir: 1 },
    columns: [
      { key: "index", label: "Task", numeric: true },
      { key: "state", label: "State", render: (t) => stateBadge(t.state) },
      { key: "exit_code", label: "Exit", numeric: true },
      { key: "native_id", label: "Scheduler ID", render: (t) => h("span", { class: "mono", text: t.native_id || "–" }) },
      { key: "message", label: "Note", render: (t) => (t.retried_by
        ? ["retried in ", h("a", { href: jobUrl(t.retried_by), class: "mono", text: t.retried_by })] : t.message || "") },
      { key: "output", label: "", sortable: false, className: "actions", render: (t) => h("button", {
        type: "button", class: "btn small", text: "Output", "aria-label": `Output of task ${t.index}`,
        on: { click: () => showTaskOutput(psij, job, t.index, output) } }) },
    ],
  });
  table.setRows(tasks);
  const retry = canWrite && retryable.length ? h("button", {
    type: "button", class: "btn small primary", text: `Retry the ${retryable.length} failed task${retryable.length > 1 ? "s" : ""}`,
    dataset: { retry: job.job_id }, on: { click: (e) => retryTasks(e.currentTarget, { psij, job, onRetried, onError }) },
  }) : null;
  replace(cell, h("div", { class: "array-tasks" },
    h("p", { class: "small" }, `Array ${answer.array.indices}${answer.array.throttle ? `, at most ${answer.array.throttle} at once` : ""}: `,
      taskCountsText(counts) || "no task has started", " ", retry),
    table.element, output));
}

async function showTaskOutput(psij, job, index, box) {
  try {
    const t = await psij.get(`task/{sid}/${encodeURIComponent(job.job_id)}/${index}`);
    replace(box, h("h4", { text: `Task ${index}: ${t.state}${t.exit_code != null ? `, exit code ${t.exit_code}` : ""}` }),
      h("pre", { class: "plain mono", text: t.stdout || "(no standard output)" }),
      t.stderr ? h("pre", { class: "plain mono stderr", text: t.stderr }) : "");
  } catch (exc) {
    replace(box, h("p", { class: "error", text: `Could not read task ${index}: ${describeError(exc)}` }));
  }
}

async function retryTasks(button, { psij, job, onRetried, onError }) {
  button.disabled = true;
  try {
    const answer = await psij.post(`retry/{sid}/${encodeURIComponent(job.job_id)}`, {},
      { headers: { "Idempotency-Key": idempotencyKey() } });
    await onRetried(answer);
  } catch (exc) {
    button.disabled = false;
    onError(`Could not retry the tasks of job ${job.job_id}`, describeError(exc));
  }
}
