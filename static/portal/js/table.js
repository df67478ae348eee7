// A sortable table with keyed rows: rows update in place (a focused button in a row that did
// not move keeps its focus), and headers are buttons that sort (aria-sort tells screen readers).

import { fmtValue, h, replace } from "./core.js";

function compare(a, b) {
  const empty = (v) => v === null || v === undefined || v === "" || v === "–";
  if (empty(a) && empty(b)) return 0;
  if (empty(a)) return 1;
  if (empty(b)) return -1;
  if (typeof a === "number" && typeof b === "number") return a - b;
  if (typeof a === "boolean" || typeof b === "boolean") return Number(a) - Number(b);
  return String(a).localeCompare(String(b), "en", { numeric: true, sensitivity: "base" });
}

/** A row's state column stays in view while a wide table scrolls sideways (on phones). */
function stateClass(col) {
  return col.key === "state" ? "state-col" : "";
}

export class DataTable {
  /**
   * columns: [{key, label, render(row) -> Node|string, value(row) -> sort key, numeric,
   *            sortable (default true), className}]
   * rowKey: field name or function giving a row's unique key.
   * detail(row, cell): fills the cell of an expanded row's detail line (see toggle()).
   */
  constructor({ columns, rowKey, emptyText = "Nothing to show.", caption, sort, label, rowAttrs, detail } = {}) {
    this.columns = columns;
    this.rowKey = typeof rowKey === "function" ? rowKey : (row) => String(row[rowKey ?? "id"]);
    this.emptyText = emptyText;
    this.rows = new Map();
    this.trs = new Map();
    this.signatures = new Map();
    this.order = [];
    this.sort = sort || null; // {key, dir: 1|-1}
    this.rowAttrs = rowAttrs;
    this.detail = detail;
    this.details = new Map(); // key -> the <tr> under an expanded row
    this.tbody = h("tbody");
    this.headRow = h("tr");
    this.table = h("table", { class: "data", "aria-label": label || null },
      caption ? h("caption", { text: caption }) : null, h("thead", {}, this.headRow), this.tbody);
    this.element = h("div", { class: "table-wrap" }, this.table);
    this.renderHead();
    this.render();
  }

  renderHead() {
    replace(this.headRow, this.columns.map((col) => {
      const th = h("th", { scope: "col", class: [col.numeric ? "num" : "", col.headerClass || "", stateClass(col)].join(" ").trim() || null });
      if (col.sortable === false) {
        th.appendChild(col.label instanceof Node ? col.label : document.createTextNode(col.label ?? col.key));
      } else {
        const active = this.sort && this.sort.key === col.key;
        th.setAttribute("aria-sort", active ? (this.sort.dir > 0 ? "ascending" : "descending") : "none");
        th.appendChild(h("button", {
          type: "button", class: "sort", text: col.label ?? col.key,
          on: { click: () => this.sortBy(col.key) },
        }));
      }
      return th;
    }));
  }

  sortBy(key, dir) {
    const next = dir ?? (this.sort && this.sort.key === key ? -this.sort.dir : 1);
    this.sort = { key, dir: next };
    this.renderHead();
    this.render(true);
  }

  value(row, col) {
    if (col.value) return col.value(row);
    return row[col.key];
  }

  /** Replace all rows. */
  setRows(rows) {
    const keep = new Set();
    for (const row of rows) {
      const key = this.rowKey(row);
      keep.add(key);
      this.rows.set(key, row);
    }
    for (const key of [...this.rows.keys()]) {
      if (!keep.has(key)) this.remove(key, false);
    }
    this.render();
  }

  /** Add or update rows (merging fields into known rows). */
  upsert(rows, { merge = true } = {}) {
    for (const row of Array.isArray(rows) ? rows : [rows]) {
      const key = this.rowKey(row);
      const known = this.rows.get(key);
      this.rows.set(key, merge && known ? { ...known, ...row } : row);
    }
    this.render();
  }

  get(key) {
    return this.rows.get(String(key));
  }

  has(key) {
    return this.rows.has(String(key));
  }

  get size() {
    return this.rows.size;
  }

  /** Whether the row ``key`` shows its detail line. */
  expanded(key) {
    return this.details.has(String(key));
  }

  /**
   * Show (or hide) a detail line under row ``key``, one cell wide as the table, filled by
   * ``detail(row, cell)``; returns the cell (null when hidden). Stays open across updates.
   */
  toggle(key, open = !this.expanded(key)) {
    key = String(key);
    const known = this.details.get(key);
    if (!open || !this.rows.has(key)) {
      if (known) known.remove();
      this.details.delete(key);
      this.render(true);
      return null;
    }
    if (known) return known.firstChild;
    const cell = h("td", { colspan: String(this.columns.length) });
    this.details.set(key, h("tr", { class: "detail-row", dataset: { detailOf: key } }, cell));
    if (this.detail) this.detail(this.rows.get(key), cell);
    this.render(true);
    return cell;
  }

  /** The detail cell of an expanded row, or null. */
  detailCell(key) {
    return this.details.get(String(key))?.firstChild || null;
  }

  remove(key, render = true) {
    this.rows.delete(key);
    this.details.get(key)?.remove();
    this.details.delete(key);
    const tr = this.trs.get(key);
    if (tr) tr.remove();
    this.trs.delete(key);
    this.signatures.delete(key);
    if (render) this.render();
  }

  sortedKeys() {
    const keys = [...this.rows.keys()];
    if (!this.sort) return keys;
    const col = this.columns.find((c) => c.key === this.sort.key);
    if (!col) return keys;
    return keys.sort((a, b) => {
      const va = this.value(this.rows.get(a), col);
      const vb = this.value(this.rows.get(b), col);
      const empty = (v) => v === null || v === undefined || v === "";
      if (empty(va) !== empty(vb)) return empty(va) ? 1 : -1; // empty last either way
      return this.sort.dir * compare(va, vb);
    });
  }

  cell(row, col) {
    let content;
    if (col.render) content = col.render(row);
    else content = fmtValue(row[col.key]);
    const td = h("td", { class: [col.numeric ? "num" : "", col.className || "", stateClass(col)].join(" ").trim() || null });
    if (content instanceof Node || Array.isArray(content)) replace(td, content);
    else td.textContent = content === null || content === undefined ? "–" : String(content);
    return td;
  }

  render(force = false) {
    if (!this.rows.size) {
      this.trs.clear();
      this.details.clear();
      this.signatures.clear();
      this.order = [];
      // The text stays at the left edge of a table wider than the screen.
      replace(this.tbody, h("tr", { class: "empty-row" }, h("td", { colspan: String(this.columns.length) },
        h("span", { class: "empty-text", text: this.emptyText }))));
      return;
    }
    const emptyRow = this.tbody.querySelector("tr.empty-row");
    if (emptyRow) emptyRow.remove();
    const keys = this.sortedKeys();
    for (const key of keys) {
      const row = this.rows.get(key);
      const signature = JSON.stringify(row);
      let tr = this.trs.get(key);
      if (!tr) {
        tr = h("tr", { dataset: { key } });
        this.trs.set(key, tr);
      }
      if (force || this.signatures.get(key) !== signature) {
        replace(tr, this.columns.map((col) => this.cell(row, col)));
        if (this.rowAttrs) {
          for (const [name, value] of Object.entries(this.rowAttrs(row) || {})) tr.setAttribute(name, value);
        }
        this.signatures.set(key, signature);
      }
    }
    // Each row, then its detail line if expanded; nodes move only when the order changed.
    const wanted = keys.flatMap((k) => (this.details.has(k) ? [this.trs.get(k), this.details.get(k)] : [this.trs.get(k)]));
    const children = this.tbody.children;
    const same = wanted.length === children.length && wanted.every((tr, i) => tr === children[i]);
    if (!same) {
      for (const tr of wanted) this.tbody.appendChild(tr);
      this.order = keys;
    }
  }
}
