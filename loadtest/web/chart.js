// chart.js: a small SVG line chart shared by the dashboard and the currency page.
//
// LineChart.draw(svg, opts) redraws `svg` from scratch (cheap at a few hundred points):
//   opts.series  [{key, label, color, points: [[t, v], ...]}]  t in unix seconds, oldest first;
//                a null v, or a gap longer than opts.gapS between two points, breaks the line.
//   opts.xMin, opts.xMax   the time span shown (defaults: the data's span)
//   opts.yMin, opts.yMax   fixed y bounds; unset ones follow the data (yZero: include 0, and
//                          never go below 0 while no value is negative: no empty chart from -1)
//   opts.yFormat           tick label formatter for y values
//   opts.fitKeys, opts.clipRatio   when set, the y-axis fits the series named in fitKeys and
//                          clips the others if their peak is above clipRatio times theirs
//                          (one latency spike must not flatten p50-p99); each clipped point
//                          becomes a marker at the top edge (<path class="over" data-series
//                          data-value>) and the top right says how high they went
//   opts.yUnit             appended to the clipped points' label (e.g. " ms")
//   opts.yLog              a log10 y-axis from the decade below the smallest positive value to
//                          the decade above the largest, ticks at the powers of ten (1, 10, 100
//                          ...) and unlabelled grid lines at 2-9 times them; yMin, yMax, yZero
//                          and clipping do not apply. A value <= 0 has no place on it: it
//                          breaks the line as null does. The axis is never negative.
//   series[].width, series[].opacity   line width and opacity (default: the stylesheet's)
//   opts.legend            an element to fill with one swatch per series (optional)
// Each series is one <path class="series" data-series=KEY data-points=N>, so tests (and
// people in devtools) can find a line and count its points.
"use strict";

const LineChart = (function () {
  const NS = "http://www.w3.org/2000/svg";
  const MARGIN = { top: 10, right: 28, bottom: 24, left: 56 };

  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  // Ticks at 1, 2 or 5 times a power of ten, about `count` of them over [lo, hi].
  function niceStep(span, count) {
    const raw = span / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
  }

  // Time ticks land on round seconds/minutes of the local clock.
  const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];

  function timeLabel(t, step) {
    const d = new Date(t * 1000);
    const p = (n) => String(n).padStart(2, "0");
    const hm = p(d.getHours()) + ":" + p(d.getMinutes());
    return step < 60 ? hm + ":" + p(d.getSeconds()) : hm;
  }

  function defaultFormat(v) {
    const a = Math.abs(v);
    if (a >= 1e6) return +(v / 1e6).toFixed(2) + "M";
    if (a >= 1e4) return +(v / 1e3).toFixed(1) + "k";
    return String(+v.toPrecision(6));
  }

  // The peak of `series` inside the x range (-Infinity when there is nothing).
  function peak(opts, series) {
    let hi = -Infinity;
    for (const s of series) {
      for (const [t, v] of s.points) {
        if (v != null && isFinite(v) && t >= opts.xMin && t <= opts.xMax && v > hi) hi = v;
      }
    }
    return hi;
  }

  function yBounds(opts) {
    let lo = Infinity;
    let hi = -Infinity;
    if (opts.fitKeys && opts.yMax == null) {
      const fit = peak(opts, opts.series.filter((s) => opts.fitKeys.includes(s.key)));
      const all = peak(opts, opts.series);
      // Some headroom above the fitted lines, so they do not run along the top edge.
      if (fit > 0 && all > opts.clipRatio * fit) opts = Object.assign({}, opts, { yMax: fit * 1.2, yClipped: true });
    }
    for (const s of opts.series) {
      for (const [t, v] of s.points) {
        if (v == null || !isFinite(v) || t < opts.xMin || t > opts.xMax) continue;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
    if (opts.yZero) {
      lo = Math.min(lo, 0);
      hi = Math.max(hi, 0);
    }
    if (opts.yMin != null) lo = opts.yMin;
    if (opts.yMax != null) hi = opts.yMax;
    if (opts.yClipped) return [lo, hi, true];
    if (!isFinite(lo) || !isFinite(hi)) return [opts.yMin != null ? opts.yMin : 0, opts.yMax != null ? opts.yMax : 1];
    if (hi === lo) {
      const pad = Math.abs(hi) * 0.01 || 1;
      // Padding below a floor of 0 would invent negative values (req/s, ms, counts).
      const floor = opts.yZero && lo >= 0 ? 0 : -Infinity;
      return [opts.yMin != null ? lo : Math.max(floor, lo - pad), opts.yMax != null ? hi : hi + pad];
    }
    return [lo, hi];
  }

  // [lo, hi] of a log axis: whole decades around the positive values in the x range ([1, 10]
  // when there are none).
  function logBounds(opts) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const s of opts.series) {
      for (const [t, v] of s.points) {
        if (v == null || !isFinite(v) || v <= 0 || t < opts.xMin || t > opts.xMax) continue;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
    if (!isFinite(lo)) return [1, 10];
    const a = Math.floor(Math.log10(lo) + 1e-9);
    const b = Math.max(a + 1, Math.ceil(Math.log10(hi) - 1e-9));
    return [Math.pow(10, a), Math.pow(10, b)];
  }

  // The y ticks of a linear axis: [y0, y1] rounded outwards to whole steps where free, and the
  // values of the ticks.
  function linearTicks(opts, y0, y1, clipped) {
    const ystep = niceStep(y1 - y0, 4);
    // Round the free ends outwards to whole ticks so the top line carries a label.
    if (opts.yMax == null || clipped) y1 = Math.ceil(y1 / ystep - 1e-9) * ystep;
    if (opts.yMin == null) y0 = Math.floor(y0 / ystep + 1e-9) * ystep;
    if (y1 <= y0) y1 = y0 + ystep;
    const ticks = [];
    for (let v = y0, i = 0; v <= y1 + ystep * 1e-6 && i < 50; v = y0 + ++i * ystep) {
      ticks.push(Math.abs(v) < ystep * 1e-9 ? 0 : v);
    }
    return [y0, y1, ticks];
  }

  function draw(svg, opts) {
    opts = Object.assign({ gapS: Infinity, yFormat: defaultFormat, yZero: false }, opts);
    const w = svg.clientWidth || 600;
    const h = svg.clientHeight || 220;
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    while (svg.firstChild) svg.removeChild(svg.firstChild);

    if (opts.xMin == null || opts.xMax == null) {
      let a = Infinity;
      let b = -Infinity;
      for (const s of opts.series) {
        if (s.points.length) {
          a = Math.min(a, s.points[0][0]);
          b = Math.max(b, s.points[s.points.length - 1][0]);
        }
      }
      if (opts.xMin == null) opts.xMin = isFinite(a) ? a : 0;
      if (opts.xMax == null) opts.xMax = isFinite(b) ? b : opts.xMin + 60;
    }
    if (opts.xMax <= opts.xMin) opts.xMax = opts.xMin + 1;

    let y0, y1, clipped, ticks;
    if (opts.yLog) {
      [y0, y1] = logBounds(opts);
      clipped = false;
      ticks = [];
      for (let v = y0, i = 0; v <= y1 * (1 + 1e-9) && i < 30; v = y0 * Math.pow(10, ++i)) ticks.push(+v.toPrecision(12));
    } else {
      [y0, y1, clipped] = yBounds(opts);
      [y0, y1, ticks] = linearTicks(opts, y0, y1, clipped);
    }

    const pw = Math.max(10, w - MARGIN.left - MARGIN.right);
    const ph = Math.max(10, h - MARGIN.top - MARGIN.bottom);
    const x = (t) => MARGIN.left + ((t - opts.xMin) / (opts.xMax - opts.xMin)) * pw;
    const y = opts.yLog
      ? (v) => MARGIN.top + ph - ((Math.log10(v) - Math.log10(y0)) / (Math.log10(y1) - Math.log10(y0))) * ph
      : (v) => MARGIN.top + ph - ((v - y0) / (y1 - y0)) * ph;
    // A value the axis cannot show: none, or <= 0 on a log axis.
    const off = (v) => v == null || !isFinite(v) || (opts.yLog && v <= 0);

    const axes = el("g", { class: "axes" }, svg);
    for (const v of ticks) {
      const yy = y(v);
      el("line", { class: "grid", x1: MARGIN.left, x2: MARGIN.left + pw, y1: yy, y2: yy }, axes);
      const label = el("text", { class: "tick y-tick", x: MARGIN.left - 6, y: yy + 4, "text-anchor": "end" }, axes);
      label.textContent = opts.yFormat(v);
      // Between two decades: faint lines at 2-9 times the lower, so values can be read.
      for (let m = 2; opts.yLog && v < y1 / 2 && m < 10; m++) {
        const ym = y(v * m);
        el("line", { class: "grid minor", x1: MARGIN.left, x2: MARGIN.left + pw, y1: ym, y2: ym }, axes);
      }
    }
    const span = opts.xMax - opts.xMin;
    const tstep = TIME_STEPS.find((s) => span / s <= 6) || TIME_STEPS[TIME_STEPS.length - 1];
    for (let t = Math.ceil(opts.xMin / tstep) * tstep; t <= opts.xMax; t += tstep) {
      const xx = x(t);
      el("line", { class: "grid", x1: xx, x2: xx, y1: MARGIN.top, y2: MARGIN.top + ph }, axes);
      const label = el("text", { class: "tick x-tick", x: xx, y: MARGIN.top + ph + 16, "text-anchor": "middle" }, axes);
      label.textContent = timeLabel(t, tstep);
    }
    el("rect", { class: "frame", x: MARGIN.left, y: MARGIN.top, width: pw, height: ph }, axes);

    el("clipPath", { id: svg.id + "-clip" }, svg).appendChild(
      el("rect", { x: MARGIN.left, y: MARGIN.top - 2, width: pw, height: ph + 4 }),
    );
    const lines = el("g", { class: "lines", "clip-path": "url(#" + svg.id + "-clip)" }, svg);
    for (const s of opts.series) {
      let d = "";
      let n = 0;
      let prev = null;
      for (const [t, v] of s.points) {
        if (off(v)) {
          prev = null;
          continue;
        }
        const move = prev === null || t - prev > opts.gapS;
        d += (move ? "M" : "L") + x(t).toFixed(1) + "," + y(v).toFixed(1);
        prev = t;
        n++;
      }
      // A lone point would be an invisible path: give it a dot.
      if (n === 1) d += "h0.01";
      const attrs = { class: "series", "data-series": s.key, "data-points": n, d: d, stroke: s.color };
      // Inline style: the stylesheet's .series width would override a presentation attribute.
      const style = [];
      if (s.width) style.push("stroke-width:" + s.width);
      if (s.opacity) style.push("stroke-opacity:" + s.opacity);
      if (style.length) attrs.style = style.join(";");
      el("path", attrs, lines);
    }

    // Points above a clipped axis: a marker each at the top edge, and the highest in words.
    if (clipped) {
      let top = null;
      for (const s of opts.series) {
        for (const [t, v] of s.points) {
          if (v == null || !isFinite(v) || v <= y1 || t < opts.xMin || t > opts.xMax) continue;
          const xx = x(t);
          const m = el("path", {
            class: "over",
            "data-series": s.key,
            "data-value": v,
            d: "M" + (xx - 4).toFixed(1) + "," + (MARGIN.top + 7) + "L" + xx.toFixed(1) + "," + MARGIN.top + "L" +
              (xx + 4).toFixed(1) + "," + (MARGIN.top + 7) + "Z",
            fill: s.color,
          }, svg);
          el("title", {}, m).textContent = (s.label || s.key) + " " + opts.yFormat(v) + " at " + timeLabel(t, 1);
          if (!top || v > top.v) top = { v: v, s: s };
        }
      }
      if (top) {
        const label = el("text", {
          class: "tick over-label",
          x: MARGIN.left + pw - 4,
          y: MARGIN.top + 18,
          "text-anchor": "end",
          fill: top.s.color,
        }, svg);
        label.textContent = "▲ " + (top.s.label || top.s.key) + " up to " + opts.yFormat(top.v) + (opts.yUnit || "");
      }
    }

    if (opts.legend) {
      opts.legend.textContent = "";
      for (const s of opts.series) {
        const item = document.createElement("span");
        item.className = "legend-item";
        item.dataset.series = s.key;
        const sw = document.createElement("i");
        sw.style.background = s.color;
        item.appendChild(sw);
        item.appendChild(document.createTextNode(s.label || s.key));
        opts.legend.appendChild(item);
      }
    }
  }

  return { draw: draw, format: defaultFormat };
})();
