// The edge overview: the state badge, offline banner and connection state are kept current
// by edgepage.js; the rest of the page is what the bridge knew when it was rendered.
// "Start an edge on compute nodes" offers the queues and accounts that queue_info reports,
// and keeps the walltime within the chosen queue's limit.

import { $, PluginClient, h, replace } from "../core.js";
import { edge } from "../edgepage.js";

const form = $("#child-launch form");
if (form && edge.plugins.includes("queue_info") && edge.online) {
  offerQueues(new PluginClient(edge.name, "queue_info"));
}

async function offerQueues(queueInfo) {
  const queue = $("#id_queue", form);
  const account = $("#id_account", form);
  const minutes = $("#id_minutes", form);
  const hint = h("span", { class: "muted small", id: "child-queue-limit" });
  queue.after(hint);
  let limits = {};
  try {
    const answer = await queueInfo.get("get_info/{sid}");
    limits = answer.queues || {};
    const names = Object.values(limits).sort((a, b) => Number(b.default) - Number(a.default)
      || String(a.name).localeCompare(String(b.name)));
    attachList(queue, "child-queues", names.map((q) => [q.name, describeQueue(q)]));
    if (!queue.value && names.length) queue.value = names[0].name;
  } catch {
    return; // no list: the field stays free text
  }
  const applyLimit = () => {
    const q = limits[queue.value];
    const max = q && typeof q.time_limit === "number" ? q.time_limit : null;
    if (max) minutes.max = String(max);
    else minutes.removeAttribute("max");
    hint.textContent = q ? describeQueue(q) : "";
  };
  queue.addEventListener("change", applyLimit);
  applyLimit();
  try {
    const answer = await queueInfo.get("list_allocations/{sid}");
    const accounts = [...new Set((answer.allocations || []).map((a) => a.account).filter(Boolean))].sort();
    attachList(account, "child-accounts", accounts.map((a) => [a, ""]));
  } catch {
    // accounts are optional (no slurmdbd): free text
  }
}

function describeQueue(q) {
  const limit = q.time_limit === "UNLIMITED" ? "no time limit"
    : typeof q.time_limit === "number" ? `walltime up to ${q.time_limit} min` : "";
  const nodes = q.nodes_total != null ? `${q.nodes_idle ?? "?"} of ${q.nodes_total} nodes idle` : "";
  return [limit, nodes].filter(Boolean).join(", ");
}

function attachList(input, id, options) {
  const list = h("datalist", { id });
  replace(list, ...options.map(([value, label]) => h("option", { value, text: label })));
  input.after(list);
  input.setAttribute("list", id);
}
