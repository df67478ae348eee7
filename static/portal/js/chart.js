// A small SVG line chart of recent samples (no library): a fixed time window ending now,
// a 0..max value axis, one polyline per series, and a text summary for screen readers.

import { h } from "./core.js";

const SVG = "http://www.w3.org/2000/svg";
const W = 640;
const H = 170;
const PAD = { left: 34, right: 8, top: 8, bottom: 20 };

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

export class LineChart {
  /** series: [{key, label, color}]; values pushed as {key: number}. */
  constructor({ series, windowSeconds = 600, max = 100, unit = "%", label = "History" }) {
    this.series = series;
    this.windowSeconds = windowSeconds;
    this.max = max;
    this.unit = unit;
    this.samples = [];
    this.svg = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": label });
    this.title = svg("title", {}, label);
    this.svg.appendChild(this.title);
    this.legend = h("div", { class: "legend" }, series.map((s) => {
      const swatch = h("span", { class: "swatch" });
      swatch.style.background = s.color;
      return h("span", {}, swatch, s.label);
    }));
    this.element = h("figure", { class: "chart-figure", style: null }, this.legend);
    this.element.style.margin = "0";
    this.element.prepend(this.svg);
    this.label = label;
    this.draw();
  }

  push(time, values) {
    this.samples.push({ t: time, v: values });
    const horizon = time - this.windowSeconds * 1000;
    while (this.samples.length && this.samples[0].t < horizon) this.samples.shift();
    this.draw();
  }

  draw() {
    while (this.svg.lastChild && this.svg.lastChild !== this.title) this.svg.removeChild(this.svg.lastChild);
    const plotW = W - PAD.left - PAD.right;
    const plotH = H - PAD.top - PAD.bottom;
    const now = this.samples.length ? this.samples[this.samples.length - 1].t : Date.now();
    // The time axis spans what was sampled (at least a minute), up to the whole window.
    const first = this.samples.length ? this.samples[0].t : now;
    const span = Math.min(this.windowSeconds, Math.max(60, Math.ceil((now - first) / 1000)));
    const start = now - span * 1000;
    const x = (t) => PAD.left + ((t - start) / (span * 1000)) * plotW;
    const y = (v) => PAD.top + plotH - (Math.max(0, Math.min(this.max, v)) / this.max) * plotH;
    for (const frac of [0, 0.25, 0.5, 0.75, 1]) {
      const value = this.max * frac;
      this.svg.appendChild(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(value), y2: y(value), class: "grid-line" }));
      this.svg.appendChild(svg("text", { x: PAD.left - 4, y: y(value) + 3, "text-anchor": "end", class: "axis-label" },
        `${Math.round(value)}${this.unit}`));
    }
    const step = [10, 15, 30, 60, 120, 300].find((s) => span / s <= 6) || 600;
    for (let ago = 0; ago <= span; ago += step) {
      const label = ago === 0 ? "now" : span <= 120 ? `−${ago} s` : `−${Math.round(ago / 60)} min`;
      this.svg.appendChild(svg("text", { x: x(now - ago * 1000), y: H - 5, "text-anchor": ago === 0 ? "end" : "middle",
        class: "axis-label" }, label));
    }
    for (const s of this.series) {
      const points = this.samples.filter((p) => typeof p.v[s.key] === "number")
        .map((p) => `${x(p.t).toFixed(1)},${y(p.v[s.key]).toFixed(1)}`);
      if (!points.length) continue;
      if (points.length === 1) {
        const [px, py] = points[0].split(",");
        this.svg.appendChild(svg("circle", { cx: px, cy: py, r: 2.5, fill: s.color }));
      } else {
        this.svg.appendChild(svg("polyline", { points: points.join(" "), class: "series", stroke: s.color }));
      }
    }
    const last = this.samples[this.samples.length - 1];
    const summary = last ? this.series.map((s) => `${s.label} ${last.v[s.key] ?? "–"}${this.unit}`).join(", ") : "no samples yet";
    this.svg.setAttribute("aria-label", `${this.label}: ${this.samples.length} samples; latest ${summary}`);
  }
}
