// Links into the files plugin from other pages (a job's directory and output files) and a
// small picker for paths on the edge (a job form's executable and working directory).
// Everything here does nothing when the edge offers no files plugin.

import { $, describeError, h, pluginPath, replace, request } from "./core.js";
import { edge } from "./edgepage.js";

export const hasFiles = () => edge.plugins.includes("files");

const route = (name, path) => `${name}/${path.replace(/^\/+/, "").split("/").map(encodeURIComponent).join("/")}`;

/** The Files tab opened at directory `dir`. */
export function browseHref(dir) {
  return `/edges/${encodeURIComponent(edge.name)}/plugins/files/#${encodeURIComponent(dir)}`;
}

/** `path` as text, plus links to its directory in the Files tab (and to download it, for files). */
export function pathLinks(path, { file = false } = {}) {
  const text = h("span", { class: "mono", text: path });
  if (!hasFiles() || !path || !path.startsWith("/")) return text;
  const dir = file ? path.replace(/\/[^/]+$/, "") || "/" : path;
  return h("span", {}, text, " ",
    h("a", { class: "btn small", href: browseHref(dir), text: file ? "Folder" : "Browse",
      "aria-label": `Open ${dir} in Files` }),
    file ? " " : null,
    file ? h("a", { class: "btn small", href: pluginPath(edge.name, "files", route("download", path)),
      download: path.split("/").pop(), text: "Download", "aria-label": `Download ${path}` }) : null);
}

/**
 * Let the person pick a path on the edge: a modal listing directories, starting at `start`
 * (or the first root). `want` is "directory" or "file". Resolves to the path, or null.
 */
export function pickPath({ title = "Choose a path", want = "directory", start = "" } = {}) {
  return new Promise((resolve) => {
    const list = h("ul", { class: "files-pick-list" });
    const here = h("p", { class: "mono small" });
    const note = h("p", { class: "muted small", "aria-live": "polite" });
    let current = "";
    const done = (value) => { dialog.close(); dialog.remove(); resolve(value); };
    const choose = h("button", { type: "button", class: "btn primary", text: "Choose this folder",
      hidden: want !== "directory", on: { click: () => done(current) } });
    const dialog = h("dialog", { class: "files-pick", "aria-label": title },
      h("h2", { text: title }), here, note, list,
      h("div", { class: "form-actions" }, choose,
        h("button", { type: "button", class: "btn", text: "Cancel", on: { click: () => done(null) } })));
    dialog.addEventListener("cancel", () => done(null));

    async function show(dir) {
      choose.disabled = true;  // until the folder asked for is the one shown
      try {
        const answer = await request(pluginPath(edge.name, "files", route("list", dir)), { query: { limit: 1000 } });
        current = answer.path;
        choose.disabled = false;
        here.textContent = answer.path;
        replace(note);
        const items = [];
        if (answer.parent) {
          items.push(h("li", {}, h("button", { type: "button", class: "btn link", text: "../",
            on: { click: () => show(answer.parent) } })));
        }
        for (const e of answer.entries) {
          const isDir = e.type === "directory" || e.target_type === "directory";
          if (!isDir && want === "directory") continue;
          items.push(h("li", {}, h("button", {
            type: "button", class: "btn link", text: isDir ? `${e.name}/` : e.name, dataset: { name: e.name },
            on: { click: () => (isDir ? show(e.path) : done(e.path)) },
          })));
        }
        replace(list, items);
      } catch (exc) {
        note.textContent = describeError(exc);
        choose.disabled = !current;  // the folder shown is still the one before
      }
    }

    document.body.appendChild(dialog);
    dialog.showModal();
    (async () => {
      let first = start;
      if (!first) {
        try {
          const roots = await request(pluginPath(edge.name, "files", "roots"));
          first = roots.roots[0]?.path || roots.home;
        } catch (exc) {
          note.textContent = describeError(exc);
          return;
        }
      }
      show(first);
    })();
  });
}

/** Put a "Browse…" button after input `#id` that fills it with a picked path. */
export function addPicker(id, { want, title }) {
  const input = $(`#${id}`);
  if (!input || !hasFiles()) return;
  const label = want === "directory" ? "Browse the edge for a folder" : "Browse the edge for a program";
  const button = h("button", { type: "button", class: "btn small", text: "Browse…", "aria-label": label,
    on: { click: async () => {
      const start = want === "directory" ? input.value : input.value.replace(/\/[^/]*$/, "");
      const picked = await pickPath({ title, want, start: start.startsWith("/") ? start : "" });
      if (picked) {
        input.value = picked;
        input.dispatchEvent(new Event("input", { bubbles: true }));
      }
    } } });
  input.insertAdjacentElement("afterend", button);
}
