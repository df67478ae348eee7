// files: a file browser for the directories an edge serves. Breadcrumbs, a sortable listing
// paged for huge directories, uploads (file picker or drag and drop) over tus with progress
// and cancel, downloads, new folder, rename, delete with confirmation, text and image
// previews, copy path. Viewers browse and download; writing needs the user role.

import {
  $, ApiError, describeError, fmtBytes, fmtTime, h, page, pluginPath, replace, request, showMessage,
} from "../core.js";
import { edge, onEdgeState, whyReadOnly } from "../edgepage.js";
import { DataTable } from "../table.js";

const CHUNK = 8 * 1024 * 1024;
const PAGE = 1000;
const IMAGE = /\.(png|jpe?g|gif|webp|svg|bmp|ico)$/i;

const state = { path: "", roots: [], home: "", offset: 0, total: 0 };

// A remote path as a route suffix: each segment URL-encoded, without the leading slash.
const routeFor = (route, path) => `${route}/${path.replace(/^\/+/, "").split("/").map(encodeURIComponent).join("/")}`;
const url = (route, path) => pluginPath(edge.name, "files", routeFor(route, path));
const call = (method, route, path, options = {}) => request(url(route, path), { method, ...options });
const join = (dir, name) => `${dir.replace(/\/+$/, "")}/${name}`;
const parentOf = (path) => path.replace(/\/[^/]+\/?$/, "") || "/";
const canWrite = () => !whyReadOnly();

const table = new DataTable({
  label: "Directory listing", rowKey: "name", sort: { key: "name", dir: 1 }, emptyText: "This directory is empty.",
  rowAttrs: (e) => ({ "data-name": e.name, "data-type": e.type }),
  columns: [
    { key: "name", label: "Name", value: (e) => `${e.type === "directory" ? "0" : "1"}${e.name.toLowerCase()}`,
      render: (e) => nameCell(e) },
    { key: "size", label: "Size", numeric: true, render: (e) => (e.type === "directory" ? "–" : fmtBytes(e.size)) },
    { key: "mtime", label: "Modified", render: (e) => (e.mtime ? fmtTime(e.mtime * 1000) : "–") },
    { key: "permissions", label: "Mode", render: (e) => h("span", { class: "mono", text: e.permissions || "" }) },
    { key: "owner", label: "Owner" },
    { key: "actions", label: "Actions", sortable: false, render: (e) => actions(e) },
  ],
});
replace($("#files-list"), table.element);

function nameCell(e) {
  const label = e.type === "symlink" ? `${e.name} → ${e.target ?? "?"}` : e.name;
  if (e.type === "directory" || (e.type === "symlink" && e.target_type === "directory")) {
    return h("a", { href: "#", class: "files-dir", text: `${label}/`, on: { click: (ev) => { ev.preventDefault(); go(e.path); } } });
  }
  if (e.type === "file" || (e.type === "symlink" && e.target_type === "file")) {
    return h("a", { href: "#", class: "files-file", text: label, on: { click: (ev) => { ev.preventDefault(); preview(e); } } });
  }
  return h("span", { text: label, title: e.target_type === "outside" ? "leads outside the directories served" : e.type });
}

function actions(e) {
  const isFile = e.type === "file" || (e.type === "symlink" && e.target_type === "file");
  const isDir = e.type === "directory";
  const ro = !canWrite();
  return h("span", { class: "nowrap" },
    isFile || isDir ? h("a", { class: "btn small", href: url("download", e.path) + (isDir ? "?archive=tar" : ""),
      download: isDir ? `${e.name}.tar` : e.name, text: "Download", "aria-label": `Download ${e.name}` }) : null,
    " ",
    h("button", { type: "button", class: "btn small", text: "Rename", disabled: ro, "aria-label": `Rename ${e.name}`,
      on: { click: () => rename(e) } }),
    " ",
    h("button", { type: "button", class: "btn small danger", text: "Delete", disabled: ro, "aria-label": `Delete ${e.name}`,
      on: { click: () => remove(e) } }));
}

function status(kind, title, text) {
  showMessage($("#files-status"), kind, title, text);
}

function crumbs(path) {
  const root = state.roots.find((r) => path === r.path || path.startsWith(`${r.path.replace(/\/$/, "")}/`));
  const items = [];
  if (root) {
    items.push(h("li", {}, h("a", { href: "#", text: root.path, on: { click: (ev) => { ev.preventDefault(); go(root.path); } } })));
    let at = root.path.replace(/\/$/, "");
    for (const part of path.slice(at.length).split("/").filter(Boolean)) {
      at = `${at}/${part}`;
      const target = at;
      items.push(h("li", {}, h("a", { href: "#", text: part, on: { click: (ev) => { ev.preventDefault(); go(target); } } })));
    }
  } else {
    items.push(h("li", { text: path }));
  }
  items[items.length - 1].setAttribute("aria-current", "page");
  replace($("#files-crumbs"), items);
}

async function load({ more = false } = {}) {
  const offset = more ? state.offset : 0;
  try {
    const answer = await call("GET", "list", state.path, { query: { offset, limit: PAGE } });
    state.path = answer.path;
    state.total = answer.total;
    state.offset = answer.next_offset ?? answer.total;
    if (more) table.upsert(answer.entries);
    else table.setRows(answer.entries);
    $("#files-more").hidden = answer.next_offset == null;
    $("#files-count").textContent = `${table.size} of ${answer.total} entries`;
    $("#files-path").value = answer.path;
    crumbs(answer.path);
    replace($("#files-status"));
    const url = new URL(window.location.href);
    url.hash = encodeURIComponent(answer.path);
    window.history.replaceState(null, "", url);
  } catch (exc) {
    status("error", "Cannot list this directory", describeError(exc));
  }
}

function go(path) {
  state.path = path;
  load();
}

async function preview(e) {
  const panel = $("#files-preview-panel");
  panel.hidden = false;
  $("#files-preview-heading").textContent = `Preview: ${e.name}`;
  const body = $("#files-preview");
  if (IMAGE.test(e.name)) {
    replace(body, h("img", { class: "files-preview-img", alt: e.name, src: `${url("download", e.path)}?inline=1` }));
    return;
  }
  replace(body, h("p", { class: "muted", text: "Loading…" }));
  try {
    const answer = await call("GET", "head", e.path, { query: { lines: 200 } });
    replace(body, h("pre", { class: "files-preview-text", text: answer.lines.join("\n") }),
      answer.truncated ? h("p", { class: "muted small", text: "First 200 lines shown." }) : null);
  } catch (exc) {
    replace(body, h("p", { text: describeError(exc) }));
  }
}

async function mkdir() {
  const name = window.prompt("Name of the new folder");
  if (!name) return;
  try {
    await call("POST", "mkdir", join(state.path, name), { query: { parents: "true" }, body: {} });
    await load();
  } catch (exc) {
    status("error", "Could not create the folder", describeError(exc));
  }
}

async function rename(e) {
  const name = window.prompt(`Rename ${e.name} to`, e.name);
  if (!name || name === e.name) return;
  try {
    await call("POST", "move", e.path, { body: { to: join(state.path, name) } });
    await load();
  } catch (exc) {
    status("error", `Could not rename ${e.name}`, describeError(exc));
  }
}

async function remove(e) {
  const what = e.type === "directory" ? `the folder ${e.name} and everything in it` : e.name;
  if (!window.confirm(`Delete ${what}? This cannot be undone.`)) return;
  try {
    await call("DELETE", "remove", e.path, { query: { recursive: e.type === "directory" ? "true" : "false" } });
    table.remove(e.name);
    await load();
  } catch (exc) {
    status("error", `Could not delete ${e.name}`, describeError(exc));
  }
}

// --- uploads (tus) --------------------------------------------------------------------

function b64(text) {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

async function tusFetch(path, init) {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const response = await fetch(path, {
    credentials: "same-origin", ...init,
    headers: { "Tus-Resumable": "1.0.0", "X-CSRFToken": meta ? meta.content : "", "X-Request-Timeout": "300", ...init.headers },
  });
  if (!response.ok) {
    let data = {};
    try { data = await response.json(); } catch { /* not JSON */ }
    throw new ApiError(response.status, data.error, data.detail, data);
  }
  return response;
}

async function upload(file) {
  const dir = state.path;
  const target = join(dir, file.name);
  const bar = h("progress", { max: String(Math.max(file.size, 1)), value: "0", "aria-label": `Uploading ${file.name}` });
  const text = h("span", { class: "small", text: "starting…" });
  const controller = new AbortController();
  let uploadUrl = null;
  const cancel = h("button", { type: "button", class: "btn small", text: "Cancel", "aria-label": `Cancel ${file.name}`,
    on: { click: () => controller.abort() } });
  const item = h("li", { dataset: { name: file.name } }, h("span", { text: file.name }), bar, text, cancel);
  $("#files-uploads").appendChild(item);
  try {
    const create = (overwrite) => tusFetch(url("upload", target), {
      method: "POST", signal: controller.signal,
      headers: { "Upload-Length": String(file.size),
        "Upload-Metadata": `filename ${b64(file.name)}${overwrite ? `,overwrite ${b64("1")}` : ""}` },
    });
    let created;
    try {
      created = await create(false);
    } catch (exc) {
      if (!(exc instanceof ApiError && exc.error === "exists")) throw exc;
      if (!window.confirm(`${file.name} exists in ${dir}. Replace it?`)) throw new ApiError(0, "kept", "not replaced");
      created = await create(true);
    }
    const info = await created.json();
    uploadUrl = pluginPath(edge.name, "files", info.route);
    let offset = info.offset;
    const started = performance.now();
    while (offset < file.size) {
      const chunk = file.slice(offset, Math.min(offset + CHUNK, file.size));
      const answer = await tusFetch(uploadUrl, {
        method: "PATCH", body: chunk, signal: controller.signal,
        headers: { "Upload-Offset": String(offset), "Content-Type": "application/offset+octet-stream" },
      });
      offset = Number(answer.headers.get("upload-offset"));
      bar.value = offset;
      const rate = offset / Math.max((performance.now() - started) / 1000, 0.001);
      text.textContent = `${fmtBytes(offset)} of ${fmtBytes(file.size)} (${fmtBytes(rate)}/s)`;
    }
    bar.value = file.size;
    text.textContent = `done, ${fmtBytes(file.size)}`;
    item.classList.add("done");
    cancel.remove();
  } catch (exc) {
    const aborted = exc && exc.name === "AbortError";
    const kept = exc instanceof ApiError && exc.error === "kept";
    text.textContent = aborted ? "cancelled" : kept ? "not uploaded: the existing file was kept"
      : `failed: ${describeError(exc)}`;
    item.classList.add(aborted ? "cancelled" : "failed");
    cancel.remove();
    if (uploadUrl) {
      tusFetch(uploadUrl, { method: "DELETE" }).catch(() => {});
    }
  }
  if (state.path === dir) load();
}

function uploadAll(files) {
  if (!canWrite()) {
    status("error", "Uploads are not possible here", whyReadOnly());
    return;
  }
  for (const file of files) upload(file);
}

// --- wiring ---------------------------------------------------------------------------

function applyRole() {
  const reason = whyReadOnly();
  for (const el of [$("#files-mkdir"), $("#files-picker")]) el.disabled = Boolean(reason);
  $("#files-write-note").textContent = reason;
  table.render(true);
}

$("#files-refresh").addEventListener("click", () => load());
$("#files-more").addEventListener("click", () => load({ more: true }));
$("#files-mkdir").addEventListener("click", mkdir);
$("#files-picker").addEventListener("change", (ev) => { uploadAll(Array.from(ev.target.files)); ev.target.value = ""; });
$("#files-goto").addEventListener("submit", (ev) => { ev.preventDefault(); go($("#files-path").value.trim()); });
$("#files-copy-path").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(state.path);
    status("info", "Path copied", state.path);
  } catch {
    $("#files-path").select();
  }
});
$("#files-preview-close").addEventListener("click", () => { $("#files-preview-panel").hidden = true; });
$("#files-root").addEventListener("change", (ev) => go(ev.target.value));
const drop = $("#files-drop");
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
}
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  uploadAll(Array.from(ev.dataTransfer.files));
});
onEdgeState((online) => { applyRole(); if (online) load(); });

async function start() {
  applyRole();
  try {
    const answer = await request(pluginPath(edge.name, "files", "roots"));
    state.roots = answer.roots;
    state.home = answer.home;
    replace($("#files-root"), answer.roots.map((r) => h("option", { value: r.path, text: r.path })));
    const wanted = decodeURIComponent(window.location.hash.slice(1)) || page.filesPath || answer.roots[0]?.path;
    state.path = wanted;
    await load();
  } catch (exc) {
    status("error", "Cannot reach the files on this edge", describeError(exc));
  }
}

start();
