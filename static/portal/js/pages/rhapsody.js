// rhapsody: run many small tasks (executables, shell commands, registered functions) in a
// session on the edge; the task list follows batched task_status events, statistics follow
// along, and a task's full output and return value open in a side panel.

import {
  $, $$, ApiError, currentUser, debounce, describeError, fmtDuration, fmtNumber, fmtTime, h, isFinal,
  keyValueLines, page, pluginPath, replace, request, safeStorage, shellWords, showMessage, stateBadge, timeAgo,
} from "../core.js";
import { confirmAction } from "../confirm.js";
import { edge, onEdgeState, setFormEnabled, whyReadOnly } from "../edgepage.js";
import { live } from "../live.js";
import { DataTable } from "../table.js";

const SHOWN = 500; // tasks listed at most (the newest)
const DETAILED = 100; // finished tasks whose results are fetched with the list
const storageKey = `radical-edge:rhapsody:${currentUser}:${edge.name}`;
const form = $("#rh-form");
// A link to one task (from the dashboard) names its session and the task: ?session=…&task=…
const linked = new URLSearchParams(window.location.search);
let sid = linked.get("session") || safeStorage.get(storageKey) || "";
let linkedTask = linked.get("task") || "";
let sessions = [];

const call = (method, route, options = {}) => request(pluginPath(edge.name, "rhapsody", route), { method, ...options });
const sidPath = (route) => route.replace("{sid}", encodeURIComponent(sid));

// --- the task list ----------------------------------------------------------------------------

function short(text, max = 90) {
  const line = String(text).split("\n").find((l) => l.trim()) ?? "";
  return line.length > max ? `${line.slice(0, max)}…` : line;
}

function resultCell(t) {
  if (t.error) return h("span", { class: "error-text", text: short(t.error) });
  if (t.return_value !== undefined && t.return_value !== null) {
    return h("span", { class: "mono", text: `→ ${short(JSON.stringify(t.return_value))}` });
  }
  if (t.stdout) return h("span", { class: "mono", text: short(t.stdout) });
  if (t.stderr) return h("span", { class: "mono muted", text: short(t.stderr) });
  return isFinal(t.state) && t.stdout === undefined ? h("span", { class: "muted", text: "see details" }) : "";
}

function actions(t) {
  const buttons = [h("button", {
    type: "button", class: "btn small", text: "Details", "aria-label": `Details of task ${t.uid}`,
    on: { click: () => showDetail(t.uid) },
  })];
  if (edge.canWrite && !isFinal(t.state)) {
    buttons.push(" ", h("button", {
      type: "button", class: "btn small danger", text: "Cancel", "aria-label": `Cancel task ${t.uid}`,
      on: { click: (e) => cancelTask(t.uid, e.currentTarget) },
    }));
  }
  return buttons;
}

const tasks = new DataTable({
  label: "Tasks of this session",
  rowKey: "uid",
  sort: { key: "uid", dir: -1 },
  emptyText: edge.canWrite ? "No tasks in this session yet." : "No tasks that you may see.",
  rowAttrs: (t) => ({ "data-state": t.state || "" }),
  columns: [
    { key: "uid", label: "Task", render: (t) => h("span", { class: "mono", text: t.uid }) },
    { key: "label", label: "Label or command", value: (t) => t.name || t.label,
      render: (t) => [t.name ? h("strong", { text: t.name }) : null, t.name && t.label ? " " : null,
        t.label ? h("span", { class: "mono", text: t.label }) : null] },
    { key: "kind", label: "Kind" },
    { key: "state", label: "State", render: (t) => stateBadge(t.state) },
    { key: "exit_code", label: "Exit", numeric: true },
    { key: "result", label: "Result", sortable: false, render: resultCell },
    { key: "submitted", label: "Submitted", render: (t) => (t.submitted ? timeAgo(t.submitted) : "–") },
    { key: "duration", label: "Took", numeric: true, value: (t) => (t.finished && t.started ? t.finished - t.started : null),
      render: (t) => (!(t.finished && t.started) ? "–" : t.finished - t.started < 1 ? "< 1 s" : fmtDuration(t.finished - t.started)) },
    { key: "actions", label: "", sortable: false, className: "actions", render: actions },
  ],
});
replace($("#rh-tasks"), tasks.element);

function tasksNote(kind, title, text) {
  const box = $("#rh-tasks-status");
  if (!kind) replace(box);
  else showMessage(box, kind, title, text);
}

async function loadTasks() {
  if (!sid || !edge.online) {
    tasks.setRows([]);
    $("#rh-tasks-meta").textContent = "";
    return;
  }
  const state = $("#rh-filter").value;
  try {
    let listing = await call("GET", sidPath(`list_tasks/{sid}`), { query: { state, offset: 0, limit: SHOWN } });
    if (listing.total > SHOWN) {
      listing = await call("GET", sidPath(`list_tasks/{sid}`), { query: { state, offset: listing.total - SHOWN, limit: SHOWN } });
    }
    const rows = listing.tasks || [];
    // Results (stdout, return value) of the newest finished tasks, in one call.
    const finished = rows.filter((t) => isFinal(t.state)).slice(-DETAILED).map((t) => t.uid);
    if (finished.length) {
      const full = await call("POST", sidPath("wait/{sid}"), { body: { uids: finished, timeout: 0 } });
      const byUid = new Map((Array.isArray(full) ? full : []).map((t) => [t.uid, t]));
      rows.forEach((t, i) => { if (byUid.has(t.uid)) rows[i] = { ...t, ...byUid.get(t.uid) }; });
    }
    tasks.setRows(rows);
    $("#rh-tasks-meta").textContent = listing.total > rows.length ? `newest ${rows.length} of ${fmtNumber(listing.total)}`
      : `${fmtNumber(listing.total)} task${listing.total === 1 ? "" : "s"}`;
    tasksNote(null);
  } catch (exc) {
    if (sessionGone(exc)) return;
    tasksNote("error", "Could not list the tasks", describeError(exc));
  }
}
const loadTasksSoon = debounce(loadTasks, 300);

async function cancelTask(uid, button) {
  const ok = await confirmAction({
    title: `Cancel task ${uid}?`, text: "A running task is stopped; what it did so far stays done.",
    confirmLabel: "Cancel task", cancelLabel: "Keep it running",
  });
  if (!ok) return;
  button.disabled = true;
  button.textContent = "Canceling…";
  try {
    const answer = await call("POST", sidPath(`cancel/{sid}/${encodeURIComponent(uid)}`), { body: {} });
    tasks.upsert({ uid, state: answer.state });
    tasksNote(answer.canceled ? "success" : "info", null, `${uid}: ${answer.detail || (answer.canceled ? "canceled" : "not canceled")}`);
  } catch (exc) {
    tasksNote("error", `Could not cancel ${uid}`, describeError(exc));
    button.disabled = false;
    button.textContent = "Cancel";
  }
}

// --- one task's details ---------------------------------------------------------------------

let detailUid = null;
function pre(text, empty) {
  return h("pre", { class: "plain mono", text: text || empty });
}

async function showDetail(uid, { fromHistory = null } = {}) {
  detailUid = uid;
  const panel = $("#rh-detail-panel");
  panel.hidden = false;
  $("#rh-detail-uid").textContent = uid;
  const body = $("#rh-detail");
  try {
    // A task of a session that has ended (the agent restarted, or it was idle) is read from
    // the edge's task history, which keeps a summary of it.
    const t = fromHistory
      ? await call("GET", `history/${encodeURIComponent(fromHistory)}/${encodeURIComponent(uid)}`)
      : await call("GET", sidPath(`task/{sid}/${encodeURIComponent(uid)}`));
    if (!fromHistory) tasks.upsert(t);
    const row = (label, value) => (value === null || value === undefined || value === "" ? null
      : h("tr", {}, h("th", { scope: "row", text: label }), h("td", { text: String(value) })));
    replace(body,
      fromHistory ? h("p", { class: "note", text: `From the task history: session ${fromHistory.slice(0, 8)}… has ended, `
        + "so only a summary is kept (the tails of its output, a small return value)." }) : null,
      h("table", { class: "kv" },
        row("State", t.state), row("Kind", t.kind), row("Label", t.name), row("Command or function", t.label),
        row("Backend", t.backend), row("Runs as", page.runsAs?.user ? `${page.runsAs.user} on ${page.runsAs.host}` : null),
        row("Exit code", t.exit_code), row("Process", t.pid), row("Error", t.error),
        row("Submitted", t.submitted && fmtTime(t.submitted)), row("Started", t.started && fmtTime(t.started)),
        row("Finished", t.finished && fmtTime(t.finished)),
        row("Cut short", (t.truncated || []).length ? `${t.truncated.join(", ")} (only the head and tail are kept)` : null)),
      h("h3", { text: "Standard output" }), pre(t.stdout, "(none)"),
      h("h3", { text: "Standard error" }), pre(t.stderr, "(none)"),
      t.kind === "function" ? [h("h3", { text: "Return value" }),
        pre(t.return_value === null || t.return_value === undefined ? "" : JSON.stringify(t.return_value, null, 2), "(none)")] : null);
  } catch (exc) {
    showMessage(body, "error", "Could not read the task", describeError(exc));
  }
  $("#rh-detail-close").focus();
}
$("#rh-detail-close").addEventListener("click", () => {
  $("#rh-detail-panel").hidden = true;
  detailUid = null;
});

// --- statistics -----------------------------------------------------------------------------

function figure(label, value, detail) {
  return h("div", { class: "figure", dataset: { figure: label.toLowerCase() } },
    h("div", { class: "label", text: label }), h("div", { class: "value", text: value }),
    detail ? h("div", { class: "detail", text: detail }) : null);
}

async function loadStats() {
  if (!sid || !edge.online) {
    replace($("#rh-stats"), h("p", { class: "muted", text: sid ? "The edge is offline." : "No session yet: submitting tasks starts one." }));
    return;
  }
  try {
    const s = await call("GET", sidPath("statistics/{sid}"));
    const by = s.tasks?.by_state || {};
    replace($("#rh-stats"),
      figure("Submitted", fmtNumber(s.tasks?.submitted ?? 0), s.tasks?.forgotten ? `${fmtNumber(s.tasks.forgotten)} forgotten` : null),
      figure("Queued", fmtNumber(by.QUEUED ?? 0)),
      figure("Running", fmtNumber(by.RUNNING ?? 0)),
      figure("Done", fmtNumber(by.DONE ?? 0)),
      figure("Failed", fmtNumber(by.FAILED ?? 0)),
      figure("Canceled", fmtNumber(by.CANCELED ?? 0)),
      figure("Processes", `${fmtNumber(s.processes?.running ?? 0)} / ${fmtNumber(s.processes?.limit ?? 0)}`,
        `agent-wide ${fmtNumber(s.processes?.running_on_agent ?? 0)} / ${fmtNumber(s.processes?.limit_on_agent ?? 0)}`),
      figure("Function threads", `${fmtNumber(s.functions?.running ?? 0)} / ${fmtNumber(s.functions?.threads ?? 0)}`));
    $("#rh-stats-meta").textContent = `backends: ${(s.backends || []).join(", ")} · updated ${fmtTime(new Date()).slice(11)}`;
    const known = sessions.find((x) => x.sid === sid);
    if (known && known.tasks !== s.tasks?.retained) {
      known.tasks = s.tasks?.retained ?? known.tasks;
      renderSessions();
    }
    $("#rh-tasks-meta").textContent = `${fmtNumber(s.tasks?.retained ?? tasks.size)} task${s.tasks?.retained === 1 ? "" : "s"}`;
  } catch (exc) {
    if (sessionGone(exc)) return;
    showMessage($("#rh-stats"), "error", "No statistics", describeError(exc));
  }
}
const loadStatsSoon = debounce(loadStats, 1000);

// --- sessions -------------------------------------------------------------------------------

function setSession(next) {
  sid = next || "";
  if (sid) safeStorage.set(storageKey, sid);
  else safeStorage.remove(storageKey);
  renderSessions();
  $("#rh-detail-panel").hidden = true;
  loadTasks();
  loadStats();
}

/** A session that expired or vanished (agent restart): forget it and say so. */
function sessionGone(exc) {
  if (!(exc instanceof ApiError) || !(exc.status === 410 || exc.error === "unknown_session")) return false;
  sessions = sessions.filter((s) => s.sid !== sid);
  showMessage($("#rh-session-status"), "warning", "That session has ended",
    "It expired after being idle, or the edge's agent restarted; its tasks are gone. Submitting starts a new session.");
  setSession(sessions.length ? sessions[0].sid : "");
  return true;
}

function renderSessions() {
  const select = $("#rh-session");
  if (!sessions.length) {
    replace(select, h("option", { value: "", text: "no session yet" }));
  } else {
    replace(select, sessions.map((s) => h("option", {
      value: s.sid,
      text: `${s.sid.slice(0, 8)}… started ${fmtTime(s.created).slice(11, 16)} · ${fmtNumber(s.tasks ?? 0)} tasks`
        + `${s.backends ? ` · ${s.backends.join(", ")}` : ""}`,
    })));
  }
  select.value = sid;
  $("#rh-close-session").disabled = !sid || !edge.online;
}

async function loadSessions() {
  try {
    const answer = await call("GET", "list_sessions");
    // The edge's owner sees every session; this page shows one's own.
    sessions = (answer.sessions || []).filter((s) => s.owner === currentUser).sort((a, b) => b.created - a.created);
    if (!sessions.some((s) => s.sid === sid)) sid = sessions.length ? sessions[0].sid : "";
    if (sid) safeStorage.set(storageKey, sid);
    renderSessions();
    replace($("#rh-session-status"));
  } catch (exc) {
    showMessage($("#rh-session-status"), "error", "Could not list your sessions", describeError(exc));
  }
}

async function newSession() {
  const backend = $("#rh-backend").value || "concurrent";
  showMessage($("#rh-session-status"), "info", null, `Starting a session on the ${backend} backend…`);
  const answer = await call("POST", "register_session", { body: { backends: [backend] } });
  sessions.unshift({ sid: answer.sid, created: Date.now() / 1000, tasks: 0, backends: [backend], owner: currentUser });
  replace($("#rh-session-status"));
  setSession(answer.sid);
  return answer.sid;
}

$("#rh-session").addEventListener("change", (e) => setSession(e.target.value));
$("#rh-new-session").addEventListener("click", () => newSession().catch((exc) => {
  showMessage($("#rh-session-status"), "error", "No session was started", describeError(exc));
}));
$("#rh-close-session").addEventListener("click", async () => {
  if (!sid) return;
  try {
    await call("POST", sidPath("unregister_session/{sid}"), { body: {} });
    sessions = sessions.filter((s) => s.sid !== sid);
    showMessage($("#rh-session-status"), "success", null, "The session is closed; its running tasks were stopped.");
    setSession(sessions.length ? sessions[0].sid : "");
  } catch (exc) {
    if (!sessionGone(exc)) showMessage($("#rh-session-status"), "error", "Could not close the session", describeError(exc));
  }
});

async function loadChoices() {
  try {
    const answer = await call("GET", "backends");
    const select = $("#rh-backend");
    replace(select, Object.entries(answer.backends || {}).filter(([, b]) => b.allowed).map(([name, b]) => h("option", {
      value: name, disabled: !b.available, text: b.available ? name : `${name} (unavailable)`, title: b.detail || null,
    })));
    select.value = answer.default || "concurrent";
  } catch (exc) {
    if (exc instanceof ApiError && exc.error === "rhapsody_missing") {
      showMessage($("#rh-session-status"), "error", "rhapsody-py is not installed on this edge", exc.detail);
    }
  }
  try {
    const answer = await call("GET", "functions");
    const functions = answer.functions || [];
    const select = $("#rh-function");
    replace(select, functions.map((f) => h("option", { value: f.name, text: `${f.name}${f.signature || ""}` })));
    const help = () => {
      const f = functions.find((x) => x.name === select.value);
      $("#rh-function-help").textContent = f && f.doc ? f.doc : "";
    };
    select.addEventListener("change", help);
    help();
    if (answer.allow_shell === false) {
      const option = $('#rh-kind option[value="shell"]');
      option.disabled = true;
      option.textContent = "shell command (not allowed on this edge)";
    }
  } catch {
    /* the form still works for executables */
  }
}

// --- submitting -----------------------------------------------------------------------------

function showKindFields() {
  const kind = $("#rh-kind").value;
  for (const field of $$("[data-kinds]", form)) field.hidden = !field.dataset.kinds.split(" ").includes(kind);
  $("#rh-executable-label").textContent = kind === "shell" ? "Shell command" : "Executable";
  $("#rh-executable").placeholder = kind === "shell" ? "grep -c ERROR *.log | sort" : "/bin/hostname";
}
$("#rh-kind").addEventListener("change", showKindFields);

function buildTasks() {
  const kind = $("#rh-kind").value;
  const value = (id) => $(`#${id}`).value.trim();
  const task = {};
  if (kind === "function") {
    task.function = value("rh-function");
    if (!task.function) throw new Error("Choose a function.");
    const args = value("rh-args");
    if (args) {
      let parsed;
      try { parsed = JSON.parse(args); } catch { throw new Error("Function arguments must be a JSON list, e.g. [1, 2]."); }
      if (!Array.isArray(parsed)) throw new Error("Function arguments must be a JSON list, e.g. [1, 2].");
      task.args = parsed;
    }
  } else {
    task.executable = value("rh-executable");
    if (!task.executable) throw new Error(kind === "shell" ? "Type the shell command to run." : "Name the program to run.");
    if (kind === "shell") task.shell = true;
    const args = shellWords($("#rh-arguments").value);
    if (args.length) task.arguments = args;
    if (value("rh-cwd")) task.cwd = value("rh-cwd");
    const env = keyValueLines($("#rh-env").value);
    if (Object.keys(env).length) task.env = env;
    if (value("rh-timeout")) task.timeout = Number(value("rh-timeout"));
  }
  if (value("rh-name")) task.name = value("rh-name");
  const count = Number(value("rh-count") || 1);
  if (!Number.isInteger(count) || count < 1 || count > 10000) throw new Error("Copies: a whole number from 1 to 10000.");
  return Array.from({ length: count }, () => ({ ...task }));
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  let list;
  try {
    list = buildTasks();
  } catch (exc) {
    showMessage($("#rh-submit-status"), "error", "Nothing was submitted", exc.message);
    return;
  }
  const button = $("#rh-submit");
  button.disabled = true;
  try {
    if (!sid) await newSession();
    showMessage($("#rh-submit-status"), "info", null, `Submitting ${list.length} task${list.length === 1 ? "" : "s"}…`);
    let accepted;
    try {
      accepted = await call("POST", sidPath("submit/{sid}"), { body: { tasks: list } });
    } catch (exc) {
      if (!(exc instanceof ApiError && (exc.status === 410 || exc.error === "unknown_session"))) throw exc;
      await newSession(); // the session ended meanwhile: start another and submit there
      accepted = await call("POST", sidPath("submit/{sid}"), { body: { tasks: list } });
    }
    const now = Date.now() / 1000;
    const kind = $("#rh-kind").value;
    tasks.upsert(accepted.map((a, i) => ({
      uid: a.uid, state: a.state, name: list[i].name || null, kind: kind === "shell" ? "shell" : kind,
      label: list[i].function || list[i].executable, submitted: now,
    })));
    showMessage($("#rh-submit-status"), "success", null,
      `Submitted ${accepted.length} task${accepted.length === 1 ? "" : "s"}: ${accepted[0]?.uid}${accepted.length > 1 ? ` … ${accepted[accepted.length - 1].uid}` : ""}.`);
    loadStatsSoon();
  } catch (exc) {
    showMessage($("#rh-submit-status"), "error", "Nothing was submitted", describeError(exc));
  } finally {
    button.disabled = Boolean(whyReadOnly());
  }
});

// --- live updates ---------------------------------------------------------------------------

// Events carry states and short outputs; times and full results of finished tasks are
// fetched in one call per burst.
const toEnrich = new Set();
const enrichSoon = debounce(async () => {
  const uids = [...toEnrich].slice(-DETAILED);
  toEnrich.clear();
  if (!uids.length || !sid) return;
  try {
    const full = await call("POST", sidPath("wait/{sid}"), { body: { uids, timeout: 0 } });
    const known = (Array.isArray(full) ? full : []).filter((t) => tasks.has(t.uid));
    if (known.length) tasks.upsert(known);
  } catch {
    /* states are right already; the details wait for the next refresh */
  }
}, 800);

live.on("notification", (event) => {
  if (event.edge !== edge.name || event.plugin !== "rhapsody" || event.topic !== "task_status") return;
  const data = event.data || {};
  if (!sid || data.sid !== sid || !Array.isArray(data.tasks)) return;
  const filter = $("#rh-filter").value;
  const updates = data.tasks.filter((t) => t && t.uid && (!filter || t.state === filter));
  if (filter) for (const t of data.tasks) if (t.state !== filter && tasks.has(t.uid)) tasks.remove(t.uid);
  if (updates.length) tasks.upsert(updates);
  for (const t of updates) if (isFinal(t.state)) toEnrich.add(t.uid);
  if (toEnrich.size) enrichSoon();
  if (detailUid && updates.some((t) => t.uid === detailUid && isFinal(t.state))) showDetail(detailUid);
  loadStatsSoon();
});
live.on("resync", () => { loadTasksSoon(); loadStatsSoon(); });
live.whileDown(() => { loadTasks(); loadStats(); }, 8000);
$("#rh-filter").addEventListener("change", loadTasks);
$("#rh-refresh").addEventListener("click", () => { loadTasks(); loadStats(); });

function applyEdgeState() {
  setFormEnabled(form, !whyReadOnly(), whyReadOnly());
  $("#rh-new-session").disabled = !edge.online || !edge.canWrite;
  $("#rh-close-session").disabled = !sid || !edge.online;
}

async function loadAll() {
  applyEdgeState();
  if (!edge.online) {
    tasksNote("warning", "The edge is offline", "Your tasks are listed again when its agent reconnects.");
    return;
  }
  await Promise.all([loadSessions(), loadChoices()]);
  await Promise.all([loadTasks(), loadStats()]);
  applyEdgeState();
  if (linkedTask) {
    const uid = linkedTask;
    const linkedSession = linked.get("session") || "";
    linkedTask = "";
    const live = sessions.some((s) => s.sid === linkedSession);
    showDetail(uid, { fromHistory: live || !linkedSession ? null : linkedSession });
    $("#rh-detail-panel").scrollIntoView({ block: "nearest" });
  }
}

onEdgeState(() => loadAll());
showKindFields();
loadAll();
