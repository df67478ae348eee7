// Any plugin, from its UI schema (docs/WRITING-A-PLUGIN.md, "A UI without portal code"):
// forms with typed fields and a submit {label, endpoint, method}, monitors (table, task_list,
// metrics, raw), and notifications from the event stream. A third-party plugin gets a
// usable page without portal code. Schemas come from agents: every part is checked before
// use, and a broken part is reported in words while the rest of the page works.

import {
  $, ApiError, PluginClient, debounce, describeError, fillRoute, fmtTime, fmtValue, h, isFinal, keyValueLines, page,
  replace, routeProblem, shellWords, showMessage, stateBadge,
} from "../core.js";
import { edge, onEdgeState, setFormEnabled, whyReadOnly } from "../edgepage.js";
import { live } from "../live.js";
import { DataTable } from "../table.js";
import { atPath, humanKey, renderMetrics, renderValue } from "../values.js";

const pluginName = page.plugin;
const schema = page.uiSchema && typeof page.uiSchema === "object" ? page.uiSchema : null;
const client = new PluginClient(edge.name, pluginName);
const root = $("#generic-root");
const routes = Array.isArray(page.routes) ? page.routes : [];
const str = (v, fallback = "") => (typeof v === "string" ? v : fallback);
const list = (v) => (Array.isArray(v) ? v : []);
let uid = 0;
const nextId = (prefix) => `${prefix}-${(uid += 1)}`;

/** Whether a route (method + template) is read-only per the plugin's manifest. */
function routeReadonly(method, template) {
  const path = String(template).split("?")[0];
  const r = routes.find((x) => x && x.path === path && String(x.method).toUpperCase() === method.toUpperCase());
  return r ? Boolean(r.readonly) : method.toUpperCase() === "GET";
}

// Endpoints from a schema are relative plugin routes; anything else is refused here, and
// again by pluginPath once the values are filled in (a value may spell "..").
function endpointProblem(template) {
  if (typeof template !== "string" || !template) return "it is empty";
  return routeProblem(template);
}

async function callEndpoint(method, template, { values = {}, body, query } = {}) {
  const problem = endpointProblem(template);
  if (problem) throw new Error(`the plugin's UI names an unusable endpoint “${str(template).slice(0, 120)}”: ${problem}.`);
  // {sid} is the session, other {names} come from the form: PluginClient fills both.
  return client.call(method.toUpperCase(), template, { params: values, body, query });
}

// --- monitors -------------------------------------------------------------------------------

const monitors = new Map(); // id -> monitor object

function monitorEndpoint(m) {
  if (typeof m.endpoint === "string") return m.endpoint;
  if (typeof m.auto_load === "string") return m.auto_load;
  return null;
}

function columnsOf(m) {
  return list(m.columns).map((c) => (typeof c === "string" ? { key: c, label: humanKey(c) }
    : c && typeof c === "object" && c.key !== undefined ? { key: String(c.key), label: str(c.label, humanKey(c.key)) } : null))
    .filter(Boolean);
}

function itemsOf(answer, field) {
  if (field) {
    const items = atPath(answer, field);
    if (Array.isArray(items)) return items;
    if (items && typeof items === "object") return Object.values(items);
    return [];
  }
  if (Array.isArray(answer)) return answer;
  if (answer && typeof answer === "object") {
    const firstList = Object.values(answer).find(Array.isArray);
    if (firstList) return firstList;
  }
  return [];
}

function makeMonitor(m) {
  const id = str(m.id, nextId("monitor"));
  const title = str(m.title, humanKey(id));
  const type = str(m.type, "raw");
  const headingId = nextId("monitor-heading");
  const status = h("div", { "aria-live": "polite" });
  const body = h("div", { class: type === "table" || type === "task_list" ? "" : "panel-body" });
  const endpoint = monitorEndpoint(m);
  const refresh = h("button", { type: "button", class: "btn small", text: m.auto_load ? "Refresh" : "Load" });
  const panel = h("section", { class: "panel", "aria-labelledby": headingId, dataset: { monitor: id, type } },
    h("header", {}, h("h2", { id: headingId, text: title }), h("span", { class: "tools" },
      h("span", { class: "muted small", dataset: { role: "updated" } }), endpoint ? refresh : null)),
    status, body);
  const monitor = { id, m, type, panel, body, status, endpoint, loaded: false };

  if (type === "table" || type === "task_list") {
    const idField = str(m.row_key, str(m.id_field, ""));
    const stateField = str(m.state_field, "state");
    let columns = columnsOf(m);
    const buildTable = (cols) => {
      const tableColumns = cols.map((c) => ({
        key: c.key, label: c.label,
        render: (row) => {
          const v = row[c.key];
          if (c.key === stateField && typeof v === "string") return stateBadge(v);
          if (type === "task_list" && c.key === idField && m.detail_endpoint) {
            return h("button", { type: "button", class: "btn link mono", text: fmtValue(v),
              on: { click: () => showDetail(monitor, row) } });
          }
          return fmtValue(v);
        },
        numeric: false,
      }));
      if (type === "task_list" && typeof m.cancel_endpoint === "string" && edge.canWrite) {
        tableColumns.push({ key: "__actions", label: "", sortable: false, className: "actions",
          render: (row) => (isFinal(row[stateField]) ? "" : h("button", {
            type: "button", class: "btn small danger", text: "Cancel", "aria-label": `Cancel ${fmtValue(row[idField])}`,
            on: { click: (e) => cancelItem(monitor, row, e.currentTarget) } })) });
      }
      return new DataTable({
        label: title, columns: tableColumns,
        rowKey: (row) => String(idField && row[idField] !== undefined ? row[idField] : JSON.stringify(row)),
        emptyText: str(m.empty_text, "Nothing to show."),
      });
    };
    monitor.idField = idField;
    monitor.stateField = stateField;
    monitor.setItems = (items) => {
      if (!columns.length) {
        const keys = [];
        for (const row of items.slice(0, 50)) {
          for (const key of Object.keys(row && typeof row === "object" ? row : {})) if (!keys.includes(key)) keys.push(key);
        }
        columns = keys.slice(0, 10).map((key) => ({ key, label: humanKey(key) }));
      }
      if (!monitor.table || monitor.table.columns.length !== columns.length + (monitor.table.columns.some((c) => c.key === "__actions") ? 1 : 0)) {
        monitor.table = buildTable(columns);
        replace(body, monitor.table.element);
      }
      monitor.table.setRows(items.filter((x) => x && typeof x === "object"));
    };
    monitor.render = (answer) => monitor.setItems(itemsOf(answer, str(m.data_path, str(m.items_field, ""))));
    monitor.table = buildTable(columns);
    replace(body, monitor.table.element);
  } else if (type === "metrics") {
    monitor.render = (answer) => replace(body, renderMetrics(answer));
  } else {
    // "raw" (or a type this portal does not know): the answer as formatted JSON, by request.
    monitor.render = (answer) => replace(body, h("details", { open: true }, h("summary", { text: "Answer" }),
      h("pre", { class: "plain mono", text: JSON.stringify(answer, null, 2) })));
  }

  monitor.load = async (queryOverride) => {
    if (!monitor.endpoint || !edge.online) return;
    refresh.disabled = true;
    try {
      const answer = await callEndpoint("GET", monitor.endpoint, { query: queryOverride });
      monitor.render(answer);
      monitor.loaded = true;
      replace(status);
      panel.querySelector('[data-role="updated"]').textContent = `updated ${fmtTime(new Date()).slice(11)}`;
    } catch (exc) {
      showMessage(status, "error", `Could not load ${title}`, describeError(exc));
    } finally {
      refresh.disabled = false;
    }
  };
  refresh.addEventListener("click", () => monitor.load());
  if (!m.auto_load && endpoint) {
    replace(body, h("p", { class: "muted", text: "Not loaded yet: press Load." }));
  }
  monitors.set(id, monitor);
  return monitor;
}

async function showDetail(monitor, row) {
  const m = monitor.m;
  const values = { ...row, [monitor.idField]: row[monitor.idField] };
  let box = monitor.panel.querySelector(".monitor-detail");
  if (!box) {
    box = h("div", { class: "panel-body monitor-detail", "aria-live": "polite" });
    monitor.panel.appendChild(box);
  }
  replace(box, h("p", { class: "muted", text: "Loading…" }));
  try {
    const answer = await callEndpoint("GET", m.detail_endpoint, { values });
    replace(box, h("h3", { text: `${fmtValue(row[monitor.idField])}` }), renderValue(answer));
  } catch (exc) {
    showMessage(box, "error", "Could not load the details", describeError(exc));
  }
}

async function cancelItem(monitor, row, button) {
  button.disabled = true;
  try {
    await callEndpoint("POST", monitor.m.cancel_endpoint, { values: { ...row }, body: {} });
    showMessage(monitor.status, "success", null, `Cancel of ${fmtValue(row[monitor.idField])} requested.`);
    monitor.load();
  } catch (exc) {
    button.disabled = false;
    showMessage(monitor.status, "error", "Could not cancel", describeError(exc));
  }
}

// --- forms ----------------------------------------------------------------------------------

function optionList(options) {
  return list(options).map((o) => {
    if (o && typeof o === "object") {
      const value = o.value ?? o.name ?? o.id;
      return { value: String(value ?? ""), label: str(o.label, String(value ?? "")), disabled: o.enabled === false || o.ready === false };
    }
    return { value: String(o), label: String(o), disabled: false };
  });
}

function makeField(f, formId) {
  const name = str(f.name);
  if (!name) return null;
  const type = str(f.type, "text");
  const id = `${formId}-${name.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  const label = str(f.label, humanKey(name.split(".").pop()));
  const help = str(f.help, str(f.description));
  const helpId = help ? `${id}-help` : null;
  const common = { id, name, required: Boolean(f.required), "aria-describedby": helpId, placeholder: str(f.placeholder) || null };
  let control;
  if (type === "hidden") {
    return { name, f, type, element: h("input", { type: "hidden", id, name, value: f.default ?? "" }) };
  }
  if (type === "select") {
    control = h("select", { id, name, required: Boolean(f.required), "aria-describedby": helpId },
      f.required ? null : h("option", { value: "", text: "—" }),
      optionList(f.options).map((o) => h("option", { value: o.value, text: o.label, disabled: o.disabled })));
    if (f.default !== undefined && f.default !== null) control.value = String(f.default);
    if (typeof f.options_endpoint === "string") {
      callEndpoint("GET", f.options_endpoint).then((answer) => {
        const items = optionList(itemsOf(answer, str(f.options_field)));
        if (!items.length) return;
        const current = control.value;
        replace(control, f.required ? null : h("option", { value: "", text: "—" }),
          items.map((o) => h("option", { value: o.value, text: o.label, disabled: o.disabled })));
        control.value = items.some((o) => o.value === current) ? current : String(f.default ?? items.find((o) => !o.disabled)?.value ?? "");
      }).catch(() => { /* the static options stay */ });
    }
  } else if (type === "textarea") {
    control = h("textarea", { ...common, rows: "3", spellcheck: "false" });
    if (f.default !== undefined && f.default !== null) control.value = String(f.default);
  } else if (type === "checkbox") {
    control = h("input", { type: "checkbox", id, name, "aria-describedby": helpId, checked: Boolean(f.default) });
    return { name, f, type, element: h("div", { class: "field check" }, control, h("label", { for: id, text: label }),
      help ? h("span", { class: "help", id: helpId, text: help }) : null), control };
  } else {
    control = h("input", { ...common, type: type === "number" ? "number" : "text", autocomplete: "off",
      step: type === "number" ? "any" : null });
    if (f.default !== undefined && f.default !== null) control.value = String(f.default);
  }
  return {
    name, f, type, control,
    element: h("div", { class: "field" }, h("label", { for: id, text: label + (f.required ? " *" : "") }), control,
      help ? h("span", { class: "help", id: helpId, text: help }) : null),
  };
}

function setPath(target, dotted, value) {
  const parts = dotted.split(".");
  let obj = target;
  for (const part of parts.slice(0, -1)) {
    if (!obj[part] || typeof obj[part] !== "object") obj[part] = {};
    obj = obj[part];
  }
  obj[parts[parts.length - 1]] = value;
}

/** A field's value as the plugin expects it, or undefined when left empty. */
function fieldValue(field) {
  if (field.type === "checkbox") return field.control.checked;
  const raw = field.type === "hidden" ? field.element.value : field.control.value;
  if (raw === "" || raw === null || raw === undefined) return undefined;
  const text = String(raw);
  const parse = str(field.f.parse);
  if (parse === "shell_words") return shellWords(text);
  if (parse === "key_value_lines") return keyValueLines(text);
  if (parse === "json") return JSON.parse(text);
  if (field.type === "number") {
    const n = Number(text);
    if (Number.isNaN(n)) throw new Error(`${str(field.f.label, field.name)}: not a number`);
    return n;
  }
  return text;
}

function makeForm(f) {
  const formId = str(f.id, nextId("form"));
  const domId = `form-${formId.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  const submit = f.submit && typeof f.submit === "object" ? f.submit : {};
  const method = str(submit.method, "POST").toUpperCase();
  const layout = { grid2: "grid2", grid3: "grid3" }[str(f.layout)] || "";
  const fields = list(f.fields).map((x) => (x && typeof x === "object" ? makeField(x, domId) : null)).filter(Boolean);
  const status = h("div", { "aria-live": "polite" });
  const result = h("div", { class: "form-result" });
  const headingId = `${domId}-heading`;
  const button = h("button", { type: "submit", class: "btn primary", text: str(submit.label, "Submit") });
  const form = h("form", { id: domId, novalidate: true },
    h("div", { class: `form-grid ${layout}`.trim() }, fields.filter((x) => x.type !== "hidden").map((x) => x.element)),
    fields.filter((x) => x.type === "hidden").map((x) => x.element),
    h("div", { class: "form-actions" }, button));
  const panel = h("section", { class: "panel", "aria-labelledby": headingId, dataset: { form: formId } },
    h("header", {}, h("h2", { id: headingId, text: str(f.title, humanKey(formId)) })),
    h("div", { class: "panel-body" }, str(f.description) ? h("p", { class: "note", text: f.description }) : null,
      form, status, result));
  const writes = !routeReadonly(method, str(submit.endpoint));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = {};
    try {
      for (const field of fields) {
        const v = fieldValue(field);
        if (v !== undefined) values[field.name] = v;
      }
      for (const field of fields) {
        if (field.f.required && (values[field.name] === undefined || values[field.name] === "")) {
          field.control?.setAttribute("aria-invalid", "true");
          throw new Error(`${str(field.f.label, field.name)} is required.`);
        }
        field.control?.removeAttribute("aria-invalid");
      }
    } catch (exc) {
      showMessage(status, "error", "Not sent", exc.message);
      return;
    }
    // Choose the endpoint: a {name} whose field is empty may have an endpoint_without_<name>.
    let template = str(submit.endpoint);
    for (const [, name] of template.matchAll(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g)) {
      if (name !== "sid" && (values[name] === undefined || values[name] === "") && typeof submit[`endpoint_without_${name}`] === "string") {
        template = submit[`endpoint_without_${name}`];
      }
    }
    const inPath = new Set([...template.matchAll(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g)].map((x) => x[1]));
    const rest = Object.fromEntries(Object.entries(values).filter(([k]) => !inPath.has(k)));
    let body;
    let query;
    if (method === "GET") {
      const wanted = Array.isArray(submit.query) ? submit.query : Object.keys(rest);
      query = Object.fromEntries(Object.entries(rest).filter(([k]) => wanted.includes(k)).map(([k, v]) => [k, fmtValue(v)]));
    } else {
      body = {};
      for (const [k, v] of Object.entries(rest)) setPath(body, k, v);
    }
    const pathValues = Object.fromEntries([...inPath].map((k) => [k, values[k] === undefined ? "" : String(values[k])]));
    button.disabled = true;
    showMessage(status, "info", null, "Sending…");
    try {
      const answer = await callEndpoint(method, template, { values: pathValues, body, query });
      const target = [...monitors.values()].find((mon) => mon.m.form === formId);
      if (target) {
        target.render(answer);
        showMessage(status, "success", null, `Done: shown in “${str(target.m.title, target.id)}” below.`);
        replace(result);
      } else {
        showMessage(status, "success", null, "Done.");
        replace(result, h("h3", { text: "Answer" }), renderValue(answer));
      }
      for (const mon of monitors.values()) if (mon.type === "task_list" && mon !== target && mon.loaded) mon.load();
    } catch (exc) {
      showMessage(status, "error", exc instanceof ApiError ? "The plugin refused" : "Not sent", describeError(exc));
    } finally {
      button.disabled = writes && Boolean(whyReadOnly());
    }
  });
  return { panel, form, writes };
}

// --- notifications --------------------------------------------------------------------------

function makeNotifications(specs) {
  const log = h("ul", { class: "event-log", "aria-live": "polite", "aria-label": "Notifications from this plugin" });
  const empty = h("p", { class: "panel-body muted", text: "Nothing yet. Events of this plugin appear here as they happen." });
  const panel = h("section", { class: "panel", "aria-labelledby": "notif-heading" },
    h("header", {}, h("h2", { id: "notif-heading", text: "Notifications" }),
      h("span", { class: "tools muted small", text: specs.map((s) => s.topic).join(", ") })), empty, log);
  live.on("notification", (event) => {
    if (event.edge !== edge.name || event.plugin !== pluginName) return;
    const spec = specs.find((s) => s.topic === event.topic);
    if (!spec) return;
    const data = event.data;
    const items = spec.items_field ? list(atPath(data, spec.items_field)) : [data];
    empty.hidden = true;
    for (const item of items.slice(0, 50)) {
      const obj = item && typeof item === "object" ? item : { value: item };
      const id = spec.id_field ? obj[spec.id_field] : undefined;
      const state = spec.state_field ? obj[spec.state_field] : undefined;
      const message = spec.message_field ? obj[spec.message_field] : undefined;
      log.prepend(h("li", {}, h("time", { text: fmtTime(new Date()).slice(11) }),
        h("strong", { text: String(event.topic) }), " ",
        id !== undefined ? h("span", { class: "mono", text: fmtValue(id) }) : null, " ",
        state !== undefined ? stateBadge(state) : (id === undefined ? h("span", { text: fmtValue(obj) }) : null),
        message ? h("span", { class: "muted", text: ` ${fmtValue(message)}` }) : null));
      // Task lists follow the states the events carry.
      if (id !== undefined) {
        for (const mon of monitors.values()) {
          if (mon.type === "task_list" && mon.table && mon.table.has(String(id))) {
            mon.table.upsert({ ...obj, [mon.idField]: id, ...(state !== undefined ? { [mon.stateField]: state } : {}) });
          }
        }
      }
    }
    while (log.children.length > 100) log.lastChild.remove();
  });
  return panel;
}

// --- the page -------------------------------------------------------------------------------

const forms = [];
function build() {
  if (!schema) return;
  if (typeof schema.refused === "string") {
    // Refused when the agent started (edge_agent/ui_schema.py: the reason says "refused by
    // the agent") or by the bridge when the agent connected (bridge_app/agents/hello.py).
    replace(root, h("div", { class: "alert warning", role: "status" },
      h("p", { class: "title", text: "This plugin's UI description was refused" }),
      h("p", { text: schema.refused }),
      h("p", { text: "Nothing of it is shown. The plugin's routes can still be called through the API and the SDK." })));
    return;
  }
  const problems = [];
  for (const f of list(schema.forms)) {
    try {
      if (f && typeof f === "object") forms.push(makeForm(f));
    } catch (exc) {
      problems.push(`form “${str(f && f.id, "?")}”: ${exc.message}`);
    }
  }
  const monitorPanels = [];
  for (const m of list(schema.monitors)) {
    try {
      if (m && typeof m === "object") monitorPanels.push(makeMonitor(m).panel);
    } catch (exc) {
      problems.push(`monitor “${str(m && m.id, "?")}”: ${exc.message}`);
    }
  }
  const notifications = list(schema.notifications).filter((n) => n && typeof n === "object" && typeof n.topic === "string");
  replace(root,
    problems.length ? h("div", { class: "alert warning", role: "status" },
      h("p", { class: "title", text: "Parts of this plugin's UI description could not be shown" }),
      h("ul", {}, problems.map((p) => h("li", { text: p })))) : null,
    forms.length && monitorPanels.length ? h("div", { class: "grid grid-side" },
      h("div", {}, forms.map((f) => f.panel)), h("div", {}, monitorPanels))
      : [forms.map((f) => f.panel), monitorPanels],
    notifications.length ? makeNotifications(notifications) : null,
    !forms.length && !monitorPanels.length && !notifications.length
      ? h("div", { class: "empty" }, h("div", { class: "title", text: "Nothing to show" }),
        h("p", { text: "This plugin's UI description has no forms, monitors or notifications." }))
      : null);
}

function applyEdgeState() {
  const why = whyReadOnly();
  for (const f of forms) {
    // Forms that only read (GET, read-only routes) work for viewers too.
    if (f.writes) setFormEnabled(f.form, !why, why);
    else setFormEnabled(f.form, edge.online, edge.online ? "" : "The edge is offline.");
  }
}

async function loadMonitors() {
  if (!edge.online) {
    showMessage($("#generic-status"), "warning", "The edge is offline", "This plugin's views load when its agent reconnects.");
    return;
  }
  replace($("#generic-status"));
  await Promise.all([...monitors.values()].filter((m) => m.m.auto_load).map((m) => m.load()));
}

const reloadTaskLists = debounce(() => {
  for (const m of monitors.values()) if (m.type === "task_list" && m.loaded) m.load();
}, 500);

build();
applyEdgeState();
loadMonitors();
onEdgeState(() => { applyEdgeState(); loadMonitors(); });
live.on("resync", (info) => { if (!info.first) reloadTaskLists(); });
live.whileDown(reloadTaskLists, 10000);
