// Readable views of answers whose shape the portal does not know: objects as key/value
// tables, lists of objects as tables, numbers formatted; never raw HTML, never a JSON dump
// unless a plugin asks for one (a "raw" monitor).

import { fmtValue, h, stateBadge } from "./core.js";

const MAX_ROWS = 500;
const MAX_COLUMNS = 12;

export function humanKey(key) {
  const text = String(key).replace(/_/g, " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function isPlainObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** A cell: state-like fields as badges, short lists joined, objects summarised. */
export function cellValue(key, value) {
  if (/(^|_)(state|status)$/i.test(String(key)) && typeof value === "string") return stateBadge(value);
  return fmtValue(value);
}

/** A table of objects: columns from `columns` (strings or {key, label}) or the rows' keys. */
export function objectTable(rows, columns) {
  const list = rows.slice(0, MAX_ROWS);
  let cols = (columns || []).map((c) => (typeof c === "string" ? { key: c, label: humanKey(c) }
    : { key: String(c.key), label: c.label ?? humanKey(c.key) }));
  if (!cols.length) {
    const keys = [];
    for (const row of list) {
      for (const key of Object.keys(isPlainObject(row) ? row : {})) if (!keys.includes(key)) keys.push(key);
      if (keys.length >= MAX_COLUMNS) break;
    }
    cols = keys.slice(0, MAX_COLUMNS).map((key) => ({ key, label: humanKey(key) }));
  }
  const table = h("table", { class: "data" },
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col", text: c.label })))),
    h("tbody", {}, list.map((row) => h("tr", {}, cols.map((c) => {
      const v = isPlainObject(row) ? row[c.key] : row;
      const content = cellValue(c.key, v);
      return h("td", { class: typeof v === "number" ? "num" : null }, content);
    })))));
  return h("div", { class: "table-wrap" }, table,
    rows.length > MAX_ROWS ? h("p", { class: "muted small", text: `Showing ${MAX_ROWS} of ${rows.length}.` }) : null);
}

/** Any JSON value as a readable view. */
export function renderValue(value, depth = 0) {
  if (value === null || value === undefined || value === "") return h("span", { class: "muted", text: "–" });
  if (Array.isArray(value)) {
    if (!value.length) return h("span", { class: "muted", text: "none" });
    if (value.every(isPlainObject) && depth < 3) return objectTable(value);
    if (value.every((v) => !isPlainObject(v) && !Array.isArray(v))) return h("span", { text: value.map(fmtValue).join(", ") });
    return h("ol", {}, value.slice(0, MAX_ROWS).map((v) => h("li", {}, renderValue(v, depth + 1))));
  }
  if (isPlainObject(value)) {
    const entries = Object.entries(value);
    if (!entries.length) return h("span", { class: "muted", text: "empty" });
    return h("table", { class: "kv" }, entries.map(([k, v]) => h("tr", {},
      h("th", { scope: "row", text: humanKey(k) }),
      h("td", {}, depth < 3 && (isPlainObject(v) || Array.isArray(v)) ? renderValue(v, depth + 1) : cellValue(k, v)))));
  }
  if (typeof value === "string" && value.includes("\n")) return h("pre", { class: "plain mono", text: value });
  return h("span", { text: fmtValue(value) });
}

/** Metrics: top-level numbers and short strings as figures, nested groups as tables. */
export function renderMetrics(value) {
  if (!isPlainObject(value)) return renderValue(value);
  const figures = [];
  const groups = [];
  for (const [k, v] of Object.entries(value)) {
    if (typeof v === "number" || typeof v === "boolean" || (typeof v === "string" && v.length < 40)) {
      figures.push(h("div", { class: "figure", dataset: { figure: String(k) } },
        h("div", { class: "label", text: humanKey(k) }), h("div", { class: "value", text: fmtValue(v) })));
    } else {
      groups.push(h("div", {}, h("h3", { text: humanKey(k) }), renderValue(v, 1)));
    }
  }
  return h("div", {}, figures.length ? h("div", { class: "figures" }, figures) : null, groups);
}

/** The value at a dotted path ("a.b.c") of an object. */
export function atPath(value, path) {
  if (!path) return value;
  let current = value;
  for (const part of String(path).split(".")) {
    if (current === null || current === undefined || typeof current !== "object") return undefined;
    current = current[part];
  }
  return current;
}
