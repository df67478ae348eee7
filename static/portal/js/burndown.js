// A burn-down chart of one account's allocation (SVG, no library): core-hours used so far
// (solid), the limit (flat), the pace that would spend what remains by the period's end
// (dashed) and where the recent rate leads (dotted), plus a text verdict for everyone.

import { h } from "./core.js";

const SVG = "http://www.w3.org/2000/svg";
const W = 640;
const H = 190;
const PAD = { left: 44, right: 10, top: 10, bottom: 22 };
const DAY = 86400000;
export const SERIES = [
  { key: "used", label: "used", color: "#2f7dd1" },
  { key: "limit", label: "limit", color: "#c2410c", dash: "2 0" },
  { key: "pace", label: "pace to spend it by the end", color: "#15803d", dash: "6 4" },
  { key: "forecast", label: "forecast at the recent rate", color: "#7c3aed", dash: "2 3" },
];

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

const day = (iso) => new Date(`${iso}T00:00:00`).getTime();

/** A figure for one account of queue_info's usage answer. */
export function burnDownChart(a) {
  const history = a.history || [];
  const start = day(a.period_start);
  const today = history.length ? day(history[history.length - 1].date) : start;
  const end = a.period_end ? day(a.period_end) : today;
  const span = Math.max(end - start, DAY);
  const daysLeft = Math.max((end - today) / DAY, 0);
  const rate = a.forecast?.rate_per_day || 0;
  const atEnd = a.used + rate * daysLeft;
  const max = Math.max(a.limit || 0, a.used, a.period_end ? atEnd : 0, 1) * 1.08;
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const x = (t) => PAD.left + ((t - start) / span) * plotW;
  const y = (v) => PAD.top + plotH - (Math.max(0, Math.min(max, v)) / max) * plotH;
  const label = `Burn-down of account ${a.account}: ${a.verdict}`;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart burndown", role: "img", "aria-label": label,
    "data-account": a.account });
  chart.appendChild(svg("title", {}, label));
  for (const frac of [0, 0.5, 1]) {
    const v = (max / 1.08) * frac;
    chart.appendChild(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid-line" }));
    chart.appendChild(svg("text", { x: PAD.left - 4, y: y(v) + 3, "text-anchor": "end", class: "axis-label" },
      v >= 10 ? Math.round(v).toLocaleString() : v.toPrecision(2)));
  }
  chart.appendChild(svg("text", { x: PAD.left, y: H - 5, class: "axis-label" }, a.period_start));
  chart.appendChild(svg("text", { x: W - PAD.right, y: H - 5, "text-anchor": "end", class: "axis-label" },
    a.period_end || "today"));
  const line = (key, points) => {
    const s = SERIES.find((one) => one.key === key);
    chart.appendChild(svg("polyline", {
      points: points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
      class: `series burn-${key}`, stroke: s.color, "stroke-dasharray": s.dash || "none", "data-series": key,
    }));
  };
  if (a.limit != null) line("limit", [[start, a.limit], [end, a.limit]]);
  line("used", history.map((p) => [day(p.date), p.used]));
  if (a.period_end && a.limit != null && daysLeft > 0) line("pace", [[today, a.used], [end, a.limit]]);
  if (a.period_end && daysLeft > 0) line("forecast", [[today, a.used], [end, atEnd]]);
  const legend = h("div", { class: "legend" }, SERIES.filter((s) => chart.querySelector(`[data-series="${s.key}"]`)).map((s) => {
    const swatch = h("span", { class: "swatch" });
    swatch.style.background = s.color;
    return h("span", {}, swatch, s.label);
  }));
  const figure = h("figure", { class: "chart-figure burndown-figure", "data-account": a.account },
    h("figcaption", {}, h("strong", { class: "mono", text: a.account }), " — ", h("span", { class: "verdict", text: `${a.verdict}.` })));
  figure.append(chart, legend);
  return figure;
}
