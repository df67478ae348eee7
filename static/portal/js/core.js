// Shared helpers of the portal's pages: calling plugins through the bridge's proxy with the
// session cookie, plugin sessions, building DOM safely, and formatting.
//
// Everything an agent or a user supplies reaches the page through textContent or attribute
// setters, never as HTML: h() below is the only way these scripts create elements.

/** The page's context, rendered by the view with json_script (an object, possibly empty). */
export const page = (() => {
  const node = document.getElementById("page-context");
  try {
    return node ? JSON.parse(node.textContent) : {};
  } catch {
    return {};
  }
})();

export const currentUser = document.body.dataset.user || page.user || "";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

/** An error answer of the bridge or a plugin: {error, detail} with the HTTP status. */
export class ApiError extends Error {
  constructor(status, error, detail, body) {
    super(detail || error || `HTTP ${status}`);
    this.status = status;
    this.error = error || `http_${status}`;
    this.detail = detail || "";
    this.body = body;
  }
}

/**
 * Call a bridge path. JSON bodies go out as JSON; JSON answers come back parsed, text
 * answers as strings. Non-2xx answers throw ApiError; a network failure throws ApiError
 * with status 0.
 */
export async function request(path, { method = "GET", body, query, headers = {}, timeout } = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null && value !== "") params.append(key, String(value));
    }
    const qs = params.toString();
    if (qs) url += (url.includes("?") ? "&" : "?") + qs;
  }
  const init = {
    method,
    credentials: "same-origin",
    headers: { Accept: "application/json", "X-CSRFToken": csrfToken(), ...headers },
  };
  if (timeout) init.headers["X-Request-Timeout"] = String(timeout);
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (exc) {
    throw new ApiError(0, "network", "The bridge could not be reached. Check your connection; the page retries by itself.");
  }
  const type = response.headers.get("content-type") || "";
  let data = null;
  if (response.status !== 204) {
    const text = await response.text();
    if (type.includes("json")) {
      try {
        data = text ? JSON.parse(text) : null;
      } catch {
        data = text;
      }
    } else {
      data = text;
    }
  }
  if (!response.ok) {
    const obj = data && typeof data === "object" ? data : {};
    const detail = typeof obj.detail === "string" ? obj.detail : (typeof data === "string" ? data.slice(0, 300) : "");
    throw new ApiError(response.status, typeof obj.error === "string" ? obj.error : "", detail, data);
  }
  return data;
}

/** `text` and what percent-decoding makes of it, round after round (null if it never settles). */
function decodings(text) {
  const forms = [text];
  for (let round = 0; round < 4; round += 1) {
    let decoded;
    try {
      decoded = decodeURIComponent(forms[forms.length - 1]);
    } catch {
      return forms; // a stray % decodes no further
    }
    if (decoded === forms[forms.length - 1]) return forms;
    forms.push(decoded);
  }
  return null;
}

/**
 * Why `route` is not a plain relative route of a plugin, or "" if it is: the rule of the
 * bridge's check of hellos (bridge_app/agents/hello.py). Refused: schemes, "//", backslashes, "#",
 * control characters (the URL parser drops tabs and line ends, so ".\t." becomes ".."), and
 * "." or ".." segments, however often percent-encoded (browsers read "%2e%2e" as "..").
 * `strict: false` is for routes with values filled in (URL-encoded by fillRoute): there
 * only ".." must be looked for under the encoding, since an encoded "/" or "\" in a value
 * ("%2Fhome%2Fme") separates nothing.
 */
export function routeProblem(route, { strict = true } = {}) {
  const text = String(route);
  if (text.includes("#")) return "it contains “#”";
  const forms = decodings(text);
  if (!forms) return "it is percent-encoded over and over";
  for (const form of strict ? forms : [text]) {
    if (/[\x00-\x1f\x7f-\x9f]/.test(form)) return "it contains control characters";
    if (form.includes("\\")) return "it contains a backslash";
  }
  const pathForms = decodings(text.split("?")[0]) || forms;
  for (const form of strict ? pathForms : [text]) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(form.replace(/^\/+/, ""))) return "it is an absolute URL";
    if (form.includes("//")) return "it contains “//”";
  }
  for (const form of pathForms) {
    if (form.split("/").some((segment) => segment === "." || segment === "..")) return "it would leave the plugin (“..”)";
  }
  return "";
}

/**
 * The proxy path of a plugin route, as the browser will request it. Throws if the route
 * (after its values were filled in) is not plainly relative or, resolved against this
 * origin, would leave /{edge}/{plugin}/: a plugin's page must never act elsewhere with
 * the viewer's session (a rogue agent's UI schema may name "%2e%2e/%2e%2e/api/v1/tokens/").
 */
export function pluginPath(edge, plugin, route) {
  const base = `/${encodeURIComponent(edge)}/${encodeURIComponent(plugin)}/`;
  const relative = String(route).replace(/^\//, "");
  const problem = routeProblem(route, { strict: false });
  const url = new URL(base + relative, window.location.origin);
  if (problem || url.origin !== window.location.origin || !url.pathname.startsWith(base)) {
    throw new Error(`refused to call “${String(route).slice(0, 120)}” of plugin “${plugin}”: `
      + `${problem || "it would leave the plugin"}.`);
  }
  return url.pathname + url.search;
}

/** Fill a route template: {sid} and any {name} from values (URL-encoded). */
export function fillRoute(template, values) {
  return template.replace(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name) => encodeURIComponent(values[name] ?? ""));
}

/**
 * A plugin of an edge, with a plugin session opened on first use and kept in localStorage
 * (per user, edge and plugin), so reloading a page does not open a new one. A session that
 * expired or vanished (agent restart) is replaced once, transparently.
 */
export class PluginClient {
  constructor(edge, plugin, { sessionParams = {}, storageKey } = {}) {
    this.edge = edge;
    this.plugin = plugin;
    this.sessionParams = sessionParams;
    this.storageKey = storageKey || `radical-edge:sid:${currentUser}:${edge}:${plugin}`;
    this._sid = null;
    this._opening = null;
  }

  async sid() {
    if (this._sid) return this._sid;
    const stored = safeStorage.get(this.storageKey);
    if (stored) {
      this._sid = stored;
      return stored;
    }
    return this.openSession();
  }

  /** Open a new session (several callers at once share one request). */
  openSession() {
    if (!this._opening) {
      this._opening = request(pluginPath(this.edge, this.plugin, "register_session"), {
        method: "POST", body: this.sessionParams,
      }).then((answer) => {
        this._sid = answer.sid;
        safeStorage.set(this.storageKey, answer.sid);
        return answer.sid;
      }).finally(() => { this._opening = null; });
    }
    return this._opening;
  }

  useSession(sid) {
    this._sid = sid;
    safeStorage.set(this.storageKey, sid);
  }

  forgetSession() {
    this._sid = null;
    safeStorage.remove(this.storageKey);
  }

  /** Call a route; {sid} in it is filled with the session, other {names} from `params`. */
  async call(method, route, { body, query, params = {}, timeout, headers, retry = true } = {}) {
    const needsSid = route.includes("{sid}");
    const sid = needsSid ? await this.sid() : "";
    const path = pluginPath(this.edge, this.plugin, fillRoute(route, { ...params, sid }));
    try {
      return await request(path, { method, body, query, timeout, headers });
    } catch (exc) {
      const lost = exc instanceof ApiError && (exc.status === 410 || exc.error === "unknown_session");
      if (needsSid && retry && lost) {
        if (this._sid === sid) this.forgetSession();
        return this.call(method, route, { body, query, params, timeout, headers, retry: false });
      }
      throw exc;
    }
  }

  get(route, options = {}) { return this.call("GET", route, options); }
  post(route, body, options = {}) { return this.call("POST", route, { ...options, body: body ?? {} }); }
}

export const safeStorage = {
  get(key) { try { return window.localStorage.getItem(key); } catch { return null; } },
  set(key, value) { try { window.localStorage.setItem(key, value); } catch { /* private mode */ } },
  remove(key) { try { window.localStorage.removeItem(key); } catch { /* private mode */ } },
};

// --- DOM ----------------------------------------------------------------------------------

/**
 * Create an element. `attrs`: class, text (textContent), dataset {}, on {event: fn}, and any
 * other attribute (set with setAttribute, so values are never parsed as HTML; attributes
 * named on… are refused). Children: nodes, strings (as text) or arrays; null/false skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "on") for (const [type, fn] of Object.entries(value)) el.addEventListener(type, fn);
    else if (key === "value" && "value" in el) el.value = value;
    else if (key === "checked" || key === "disabled" || key === "selected" || key === "hidden") el[key] = Boolean(value);
    else if (/^on/i.test(key)) throw new Error(`refusing inline handler attribute ${key}`);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

// --- states and messages --------------------------------------------------------------------

const FINAL = new Set(["COMPLETED", "FAILED", "CANCELED", "CANCELLED", "DONE", "TIMEOUT"]);
export const isFinal = (state) => FINAL.has(String(state || "").toUpperCase());

/** A state badge; its class comes from the state name, its text is the state itself. */
export function stateBadge(state) {
  const text = state === null || state === undefined || state === "" ? "unknown" : String(state);
  const cls = "state-" + text.toLowerCase().replace(/[^a-z0-9_]+/g, "_");
  return h("span", { class: `badge ${cls}`, text });
}

/** Words a person can act on for an error of the bridge, a plugin or the network. */
export function describeError(exc) {
  if (!(exc instanceof ApiError)) return String(exc && exc.message ? exc.message : exc);
  switch (exc.error) {
    case "edge_offline": return "The edge is offline: its agent is not connected. " + (exc.detail || "");
    case "edge_suspended": return "The edge is suspended by its owner or an administrator.";
    case "edge_disconnected": return "The edge disconnected before answering. Try again when it is back.";
    case "edge_timeout": return "The edge did not answer in time. " + (exc.detail || "");
    case "unknown_edge": return "You may not use this edge (it is unknown or no longer shared with you).";
    case "unknown_plugin": return "The edge does not offer this plugin any more.";
    case "unauthorized": return "Your login has expired. Reload the page to log in again.";
    case "rate_limited": return "Too many requests; slow down and try again in a moment.";
    default: break;
  }
  if (exc.status === 403) {
    return "You may not do this on this edge" + (exc.detail ? `: ${exc.detail}` : ".");
  }
  if (exc.status === 0) return exc.detail;
  const code = exc.error && !exc.error.startsWith("http_") ? `${exc.error}: ` : "";
  return `${code}${exc.detail || `the request failed (HTTP ${exc.status})`}`;
}

/** An alert box (role=alert for errors, status otherwise). */
export function alertBox(kind, title, text) {
  return h("div", { class: `alert ${kind}`, role: kind === "error" ? "alert" : "status" },
    title ? h("p", { class: "title", text: title }) : null,
    text ? h("p", { text }) : null);
}

/** Show a message in a container (replacing what was there); returns the element. */
export function showMessage(container, kind, title, text) {
  if (!container) return null;
  const box = alertBox(kind, title, text);
  replace(container, box);
  return box;
}

export function emptyState(title, text) {
  return h("div", { class: "empty" }, h("div", { class: "title", text: title }), text ? h("p", { text }) : null);
}

// --- formatting -----------------------------------------------------------------------------

export function fmtBytes(n, { binary = true } = {}) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return "–";
  let value = Number(n);
  const base = binary ? 1024 : 1000;
  const units = binary ? ["B", "KiB", "MiB", "GiB", "TiB", "PiB"] : ["B", "kB", "MB", "GB", "TB", "PB"];
  let i = 0;
  while (Math.abs(value) >= base && i < units.length - 1) {
    value /= base;
    i += 1;
  }
  return `${value >= 100 || i === 0 ? Math.round(value) : value.toFixed(1)} ${units[i]}`;
}

export function fmtRate(bytesPerSecond) {
  if (bytesPerSecond === null || bytesPerSecond === undefined) return "–";
  return `${fmtBytes(bytesPerSecond, { binary: false })}/s`;
}

export function fmtPercent(p) {
  if (p === null || p === undefined || Number.isNaN(Number(p))) return "–";
  return `${Number(p).toFixed(Number(p) >= 10 ? 0 : 1)} %`;
}

export function fmtNumber(n) {
  if (n === null || n === undefined || n === "") return "–";
  if (typeof n !== "number") return String(n);
  return Number.isInteger(n) ? n.toLocaleString("en-US") : n.toLocaleString("en-US", { maximumFractionDigits: 2 });
}

/** Seconds as "3 d 4 h", "5 h 2 min", "4 min 10 s", "12 s". */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(Number(seconds))) return "–";
  let s = Math.max(0, Math.round(Number(seconds)));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hh = Math.floor(s / 3600); s -= hh * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return `${d} d ${hh} h`;
  if (hh) return `${hh} h ${m} min`;
  if (m) return `${m} min ${s} s`;
  return `${s} s`;
}

/** A moment (epoch seconds, ms, ISO string or Date) as local "YYYY-MM-DD HH:MM:SS". */
export function fmtTime(value) {
  const date = toDate(value);
  if (!date) return "–";
  const pad = (x) => String(x).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} `
    + `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

export function toDate(value) {
  if (value === null || value === undefined || value === "") return null;
  if (value instanceof Date) return value;
  if (typeof value === "number") return new Date(value < 1e12 ? value * 1000 : value);
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** "12 s ago", "3 min ago", "2 h ago", "in 5 min". */
export function fmtAgo(value) {
  const date = toDate(value);
  if (!date) return "never";
  const diff = (Date.now() - date.getTime()) / 1000;
  if (Math.abs(diff) < 5) return "just now";
  return diff >= 0 ? `${fmtDuration(diff).split(" ").slice(0, 2).join(" ")} ago`
    : `in ${fmtDuration(-diff).split(" ").slice(0, 2).join(" ")}`;
}

/** A <time> element showing a relative time, kept current by refreshRelativeTimes(). */
export function timeAgo(value) {
  const date = toDate(value);
  if (!date) return h("span", { class: "muted", text: "–" });
  return h("time", { datetime: date.toISOString(), title: fmtTime(date), "data-relative": "", text: fmtAgo(date) });
}

export function refreshRelativeTimes(root = document) {
  for (const el of $$("time[data-relative]", root)) {
    const date = toDate(el.getAttribute("datetime"));
    if (date) {
      el.textContent = fmtAgo(date);
      if (!el.title) el.title = fmtTime(date);
    }
  }
}

/** A value of unknown shape as readable text (objects as "key: value" pairs, not JSON). */
export function fmtValue(value) {
  if (value === null || value === undefined || value === "") return "–";
  if (Array.isArray(value)) return value.map(fmtValue).join(", ");
  if (typeof value === "object") return Object.entries(value).map(([k, v]) => `${k}: ${fmtValue(v)}`).join("; ");
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "number") return fmtNumber(value);
  return String(value);
}

/** A meter (role=meter) for a percentage. */
export function meter(percent, { label, inline = false } = {}) {
  const p = Math.max(0, Math.min(100, Number(percent) || 0));
  const level = p >= 90 ? "high" : p >= 75 ? "warn" : "";
  const bar = h("div", {
    class: `meter ${level} ${inline ? "inline" : ""}`.trim(), role: "meter", "aria-valuemin": "0",
    "aria-valuemax": "100", "aria-valuenow": String(Math.round(p)), "aria-label": label || "usage",
  }, h("span"));
  bar.firstChild.style.width = `${p}%`;
  return bar;
}

/** Run fn every `ms` while the page is visible (and once at start unless `now` is false). */
export function every(ms, fn, { now = true } = {}) {
  let timer = null;
  const tick = async () => {
    timer = null;
    if (!document.hidden) {
      try { await fn(); } catch (exc) { console.warn(exc); }
    }
    timer = window.setTimeout(tick, ms);
  };
  if (now) tick(); else timer = window.setTimeout(tick, ms);
  return { stop() { if (timer) window.clearTimeout(timer); timer = null; } };
}

/** Coalesce bursts of calls into one call after `ms`. */
export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    if (timer) window.clearTimeout(timer);
    timer = window.setTimeout(() => { timer = null; fn(...args); }, ms);
  };
}

/** Split a command line like a POSIX shell does (quotes and backslashes; no expansion). */
export function shellWords(text) {
  const words = [];
  let word = "";
  let inWord = false;
  let quote = null;
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    if (quote === "'") {
      if (c === "'") quote = null; else word += c;
    } else if (quote === '"') {
      if (c === '"') quote = null;
      else if (c === "\\" && i + 1 < text.length && '"\\$`'.includes(text[i + 1])) { word += text[i + 1]; i += 1; }
      else word += c;
    } else if (c === "'" || c === '"') {
      quote = c; inWord = true;
    } else if (c === "\\" && i + 1 < text.length) {
      word += text[i + 1]; i += 1; inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) { words.push(word); word = ""; inWord = false; }
    } else {
      word += c; inWord = true;
    }
  }
  if (quote) throw new Error("unbalanced quotes in the arguments");
  if (inWord) words.push(word);
  return words;
}

/** Words as a command line a shell would split back into them (for display). */
export function shellJoin(words) {
  return words.filter((w) => w !== null && w !== undefined).map((w) => {
    const s = String(w);
    if (s && /^[A-Za-z0-9_@%+=:,./-]+$/.test(s)) return s;
    return `'${s.replace(/'/g, "'\\''")}'`;
  }).join(" ");
}

/** "KEY=value" lines as an object (blank lines and # comments skipped). */
export function keyValueLines(text, what = "line") {
  const result = {};
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    if (!line || line.startsWith("#")) return;
    const at = line.indexOf("=");
    if (at <= 0) throw new Error(`${what} ${index + 1}: expected NAME=value, got “${line}”`);
    result[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  });
  return result;
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => refreshRelativeTimes());
else refreshRelativeTimes();
window.setInterval(() => refreshRelativeTimes(), 10000);
