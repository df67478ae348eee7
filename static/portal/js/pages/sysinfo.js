// sysinfo: the host's CPU, memory, disks, network and GPUs as figures, meters and tables,
// refreshed on demand or every few seconds, with a chart of the samples taken while the page
// is open.

import {
  $, PluginClient, describeError, every, fmtBytes, fmtDuration, fmtNumber, fmtPercent, fmtRate, fmtTime, h,
  meter, replace, showMessage,
} from "../core.js";
import { LineChart } from "../chart.js";
import { edge, onEdgeState } from "../edgepage.js";
import { DataTable } from "../table.js";

const client = new PluginClient(edge.name, "sysinfo");
let previous = null; // the last sample, for network rates

const chart = new LineChart({
  label: "CPU and memory use over the last 10 minutes",
  series: [{ key: "cpu", label: "CPU %", color: "#2f7dd1" }, { key: "mem", label: "Memory %", color: "#c2410c" }],
});
replace($("#sysinfo-history"), chart.element);

function figure(label, value, detail, percent, { text = false } = {}) {
  return h("div", { class: "figure", dataset: { figure: label.toLowerCase() } },
    h("div", { class: "label", text: label }),
    h("div", { class: text ? "value text" : "value", text: value }),
    percent !== undefined ? meter(percent, { label: `${label} use` }) : null,
    detail ? h("div", { class: "detail", text: detail }) : null);
}

const disks = new DataTable({
  label: "Disks", rowKey: "mount", sort: { key: "mount", dir: 1 }, emptyText: "No file systems reported.",
  columns: [
    { key: "mount", label: "Mount point", render: (d) => h("span", { class: "mono", text: d.mount }) },
    { key: "device", label: "Device", render: (d) => h("span", { class: "mono", text: d.device || "–" }) },
    { key: "fstype", label: "File system" },
    { key: "type", label: "Kind" },
    { key: "total", label: "Size", numeric: true, render: (d) => fmtBytes(d.total) },
    { key: "used", label: "Used", numeric: true, render: (d) => fmtBytes(d.used) },
    { key: "free", label: "Free", numeric: true, render: (d) => fmtBytes(d.free ?? (d.total - d.used)) },
    {
      key: "percent", label: "Use", value: (d) => d.percent,
      render: (d) => [meter(d.percent, { inline: true, label: `${d.mount} use` }), fmtPercent(d.percent)],
    },
  ],
});
replace($("#sysinfo-disks"), disks.element);

const network = new DataTable({
  label: "Network interfaces", rowKey: "interface", sort: { key: "interface", dir: 1 },
  emptyText: "No network interfaces reported.",
  columns: [
    { key: "interface", label: "Interface", render: (n) => h("span", { class: "mono", text: n.interface }) },
    { key: "up", label: "State", render: (n) => (n.up === false ? h("span", { class: "badge offline", text: "down" })
      : h("span", { class: "badge online", text: "up" })) },
    { key: "ip", label: "IPv4", render: (n) => h("span", { class: "mono", text: n.ip || "–" }) },
    { key: "ipv6", label: "IPv6", render: (n) => h("span", { class: "mono", text: n.ipv6 || "–" }) },
    { key: "mac", label: "MAC", render: (n) => h("span", { class: "mono", text: n.mac || "–" }) },
    { key: "speed_mbps", label: "Speed", numeric: true, render: (n) => (n.speed_mbps ? `${fmtNumber(n.speed_mbps)} Mb/s` : "–") },
    { key: "rx_bytes", label: "Received", numeric: true, render: (n) => fmtBytes(n.rx_bytes) },
    { key: "tx_bytes", label: "Sent", numeric: true, render: (n) => fmtBytes(n.tx_bytes) },
    { key: "rx_rate", label: "In", numeric: true, render: (n) => fmtRate(n.rx_rate) },
    { key: "tx_rate", label: "Out", numeric: true, render: (n) => fmtRate(n.tx_rate) },
  ],
});
replace($("#sysinfo-network"), network.element);

const gpus = new DataTable({
  label: "GPUs", rowKey: (g) => String(g.index ?? g.name), sort: { key: "index", dir: 1 },
  emptyText: "No GPUs found on this host (nvidia-smi and rocm-smi report none).",
  columns: [
    { key: "index", label: "#", numeric: true },
    { key: "name", label: "Model" },
    { key: "vendor", label: "Vendor" },
    { key: "util_gpu", label: "Utilization", render: (g) => [meter(g.util_gpu, { inline: true, label: "GPU utilization" }), fmtPercent(g.util_gpu)] },
    { key: "util_mem", label: "Memory activity", render: (g) => fmtPercent(g.util_mem) },
    { key: "mem_used", label: "Memory", numeric: true, render: (g) => `${fmtBytes(g.mem_used_bytes ?? g.mem_used)} of ${fmtBytes(g.mem_total_bytes ?? g.mem_total)}` },
    { key: "temperature", label: "Temp.", numeric: true, render: (g) => (g.temperature != null ? `${g.temperature} °C` : "–") },
    { key: "power_draw", label: "Power", numeric: true, render: (g) => (g.power_draw != null ? `${fmtNumber(g.power_draw)} W` : "–") },
  ],
});
replace($("#sysinfo-gpus"), gpus.element);

function renderFigures(m) {
  const cpu = m.cpu || {};
  const mem = m.memory || {};
  const sys = m.system || {};
  const load = Array.isArray(cpu.load_avg) ? cpu.load_avg : [];
  const cores = cpu.cores_logical || 1;
  replace($("#sysinfo-figures"),
    figure("CPU", fmtPercent(cpu.percent),
      `${cpu.cores_logical ?? "?"} logical / ${cpu.cores_physical ?? "?"} physical cores`, cpu.percent),
    figure("Memory", fmtPercent(mem.percent), `${fmtBytes(mem.used)} used of ${fmtBytes(mem.total)}, `
      + `${fmtBytes(mem.available)} available`, mem.percent),
    figure("Load", load.length ? load.map((x) => x.toFixed(2)).join("  ") : "–",
      load.length ? `1, 5, 15 min · ${(load[0] / cores).toFixed(2)} per core` : "not reported"),
    mem.swap_total ? figure("Swap", fmtPercent((100 * mem.swap_used) / mem.swap_total),
      `${fmtBytes(mem.swap_used)} of ${fmtBytes(mem.swap_total)}`, (100 * mem.swap_used) / mem.swap_total)
      : figure("Swap", "none", "no swap configured"),
    figure("Uptime", fmtDuration(sys.uptime), sys.hostname ? `host ${sys.hostname}` : ""),
    figure("System", sys.os || "–", [sys.kernel && `kernel ${sys.kernel}`, sys.arch].filter(Boolean).join(" · "),
      undefined, { text: true }));
}

function renderCpu(cpu) {
  const per = Array.isArray(cpu.per_cpu) ? cpu.per_cpu : [];
  replace($("#sysinfo-cpu"),
    h("table", { class: "kv" },
      h("tr", {}, h("th", { scope: "row", text: "Model" }), h("td", { text: cpu.model || "–" })),
      h("tr", {}, h("th", { scope: "row", text: "Vendor" }), h("td", { text: cpu.vendor || "–" })),
      h("tr", {}, h("th", { scope: "row", text: "Frequency" }), h("td", { text: cpu.freq_mhz ? `${fmtNumber(cpu.freq_mhz)} MHz` : "–" })),
      h("tr", {}, h("th", { scope: "row", text: "Cores" }),
        h("td", { text: `${cpu.cores_logical ?? "?"} logical, ${cpu.cores_physical ?? "?"} physical` }))),
    per.length ? h("h3", { text: "Per core" }) : null,
    per.length ? h("div", { class: "percpu" }, per.map((p, i) => h("div", { class: "cpu" },
      h("span", { class: "mono", text: `cpu${i}` }), meter(p, { label: `cpu${i} use` }),
      h("span", { class: "mono", text: fmtPercent(p) })))) : null);
}

function withRates(current, now) {
  const rows = (current || []).map((n) => ({ ...n }));
  if (previous) {
    const dt = (now - previous.time) / 1000;
    for (const n of rows) {
      const before = previous.network.get(n.interface);
      if (before && dt > 0) {
        n.rx_rate = Math.max(0, (n.rx_bytes - before.rx_bytes) / dt);
        n.tx_rate = Math.max(0, (n.tx_bytes - before.tx_bytes) / dt);
      }
    }
  }
  return rows;
}

let latestNetwork = [];
function renderNetwork() {
  const all = $("#net-all").checked;
  network.setRows(latestNetwork.filter((n) => all || n.up !== false || n.ip));
}
$("#net-all").addEventListener("change", renderNetwork);

let busy = false;
async function load(force = false) {
  if (busy || (!edge.online && !force)) return;
  busy = true;
  try {
    const m = await client.get("metrics/{sid}");
    const now = Date.now();
    renderFigures(m);
    renderCpu(m.cpu || {});
    disks.setRows(m.disks || []);
    latestNetwork = withRates(m.interfaces || m.network, now);
    renderNetwork();
    gpus.setRows(m.gpus || []);
    previous = { time: now, network: new Map((m.interfaces || m.network || []).map((n) => [n.interface, n])) };
    chart.push(now, { cpu: m.cpu?.percent, mem: m.memory?.percent });
    $("#sysinfo-updated").textContent = `Updated ${fmtTime(now)}`;
    replace($("#sysinfo-status"));
  } catch (exc) {
    showMessage($("#sysinfo-status"), "error", "Could not read the host's metrics", describeError(exc));
  } finally {
    busy = false;
  }
}

let ticker = null;
function schedule() {
  if (ticker) ticker.stop();
  ticker = null;
  if ($("#sysinfo-auto").checked) {
    ticker = every(Number($("#sysinfo-interval").value) * 1000, () => load(), { now: false });
  }
}
$("#sysinfo-auto").addEventListener("change", schedule);
$("#sysinfo-interval").addEventListener("change", schedule);
$("#sysinfo-refresh").addEventListener("click", () => load(true));
onEdgeState((online) => { if (online) load(); });

if (edge.online) {
  load();
} else {
  showMessage($("#sysinfo-status"), "warning", "No metrics while the edge is offline",
    "They load by themselves when its agent reconnects.");
  replace($("#sysinfo-figures"));
  offlineTables();
}

/** The tables of an offline edge say that there is no data, not that there is nothing. */
function offlineTables() {
  for (const table of [disks, network, gpus]) {
    if (!table.size) {
      table.emptyText = "No data while the edge is offline.";
      table.render(true);
    }
  }
  const cpu = $("#sysinfo-cpu");
  if (cpu) replace(cpu, h("p", { class: "muted", text: "No data while the edge is offline." }));
}
onEdgeState((online) => {
  if (!online) offlineTables();
  else {
    disks.emptyText = "No file systems reported.";
    network.emptyText = "No network interfaces reported.";
    gpus.emptyText = "No GPUs found on this host (nvidia-smi and rocm-smi report none).";
  }
});
schedule();
