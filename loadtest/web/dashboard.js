// dashboard.js: polls the aggregator's /api/series every second and draws the latest second's
// numbers, the run's totals (every request since the run began, beyond the window), four
// charts and the generators table.
//
// The time axis (#x-window, remembered in localStorage, or ?window= in the URL): "run" spans
// the current run's seconds kept, from its first to its newest (a 10 s run fills the chart);
// 60 or 300 end at the aggregator's clock, "all" spans the aggregator's whole window. The
// latency axis (#y-scale, remembered in localStorage, or ?scale= in the URL): "linear" fits
// p50-p99, a max more than 3 times their peak is clipped, its points marked; "log" is a log10
// axis (ticks 1, 10, 100 ms ...) that holds every line, spikes included.
//
// Polling never stops: a failed poll shows "disconnected" in #status and retries after 1, 2,
// 4, 8, then every 10 s. An aggregator that answers is not enough for "live": its newest
// second must be at most STALE_S old, else the badge says "stale, last data Ns ago" (or "no
// data yet"), and "generators reporting" counts only those whose last data is that fresh. The
// last data stays on screen, greyed, while disconnected or stale. Every number element carries its raw value in
// `data-value` (empty when there is none), so tests need not parse formatted text.
"use strict";

(function () {
  /** Time between two polls while the aggregator answers. */
  const POLL_MS = 1000;
  /** The backoff doubles from POLL_MS after each failed poll, up to this. */
  const BACKOFF_MAX_MS = 10000;
  /** A poll that takes longer than this counts as failed (a hung aggregator). */
  const FETCH_TIMEOUT_MS = 5000;
  /** Seconds between two intervals beyond which the lines break (seconds without data). */
  const GAP_S = 1.5;
  /** Data older than this (s, against the aggregator's clock) is stale: a generator's seconds
   * reach the page 1-3 s after they end (completed seconds only, pulled every second). */
  const STALE_S = 5;
  /** The "run" time axis spans at least this many seconds (a first second alone is a dot). */
  const MIN_SPAN_S = 2;
  /** The latency axis clips max when its peak is above this many times p50-p99's. */
  const CLIP_RATIO = 3;
  const WINDOWS = ["run", "60", "300", "all"];
  const SCALES = ["linear", "log"];
  /** What the latency panel's heading says under each scale. */
  const LATENCY_NOTES = {
    linear: "ms, merged across generators; max above the axis is marked ▲",
    log: "ms, log scale, merged across generators",
  };

  /** The last answer drawn, redrawn at once when the time axis changes. */
  let lastData = null;

  const $ = (id) => document.getElementById(id);
  let failures = 0;

  function setStatus(kind, text) {
    const s = $("status");
    s.className = kind;
    s.textContent = text;
    document.body.classList.toggle("stale", kind !== "live");
  }

  function setNumber(id, value, format) {
    const e = $(id);
    const ok = value != null && isFinite(value);
    e.textContent = ok ? format(value) : "–";
    e.dataset.value = ok ? String(value) : "";
  }

  const fmtRate = (v) => String(Math.round(v));
  const fmtPct = (v) => (v * 100).toFixed(2);
  function fmtMs(v) {
    return v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0);
  }

  function clock(t) {
    return new Date(t * 1000).toLocaleTimeString([], { hour12: false });
  }

  // Codes in a stable order: numeric ascending, then anything else ("error") last.
  function sortCodes(codes) {
    return codes.sort((a, b) => {
      const na = /^\d+$/.test(a);
      const nb = /^\d+$/.test(b);
      if (na !== nb) return na ? -1 : 1;
      return na ? +a - +b : a < b ? -1 : a > b ? 1 : 0;
    });
  }

  const PALETTE = {
    2: ["#1d8a4e", "#52b27a", "#0f5f35"],
    3: ["#1f6fd1", "#6a9fe0"],
    4: ["#e08a00", "#c9a000", "#8d5a00"],
    5: ["#c62828", "#8e24aa", "#d84315", "#ad1457", "#6d4c41"],
  };
  function codeColors(codes) {
    const used = {};
    const out = {};
    for (const c of codes) {
      const cls = /^\d{3}$/.test(c) ? c[0] : "";
      const list = PALETTE[cls];
      if (!list) {
        out[c] = c === "error" ? "#444" : "#999";
        continue;
      }
      used[cls] = (used[cls] || 0) + 1;
      out[c] = list[(used[cls] - 1) % list.length];
    }
    return out;
  }

  // The URLs the generators attack, each once.
  function renderTarget(data) {
    const urls = [];
    for (const g of data.generators) for (const u of g.targets || []) if (!urls.includes(u)) urls.push(u);
    const text = urls.length ? urls.join(", ") : "–";
    if ($("target").textContent !== text) $("target").textContent = text;
  }

  function renderTotals(data) {
    const t = data.totals;
    const lat = (t && t.latency_ms) || {};
    setNumber("total-requests", t && t.requests, (v) => v.toLocaleString("en-US"));
    setNumber("total-success", t && t.requests ? t.success_ratio : null, fmtPct);
    setNumber("total-p50", t && t.requests ? lat.p50 : null, fmtMs);
    setNumber("total-p99", t && t.requests ? lat.p99 : null, fmtMs);
    setNumber("total-max", t && t.requests ? lat.max : null, fmtMs);
    $("run-span").textContent = t
      ? "since " + clock(t.start) + ", " + (t.end - t.start + 1) + " s with data, offered " +
        t.offered.toLocaleString("en-US")
      : "no data yet";
    // One entry per status code, then per failure kind: <span class="code" data-code data-value>.
    const box = $("total-codes");
    box.textContent = "";
    const counts = Object.assign({}, (t && t.codes) || {}, (t && t.errors) || {});
    const colors = codeColors(sortCodes(Object.keys(counts)));
    for (const c of sortCodes(Object.keys(counts))) {
      const e = document.createElement("span");
      e.className = "code";
      e.dataset.code = c;
      e.dataset.value = String(counts[c]);
      const b = document.createElement("b");
      b.style.color = colors[c];
      b.textContent = c;
      e.appendChild(b);
      e.appendChild(document.createTextNode(" " + counts[c].toLocaleString("en-US")));
      box.appendChild(e);
    }
    if (!box.childNodes.length) box.textContent = "–";
  }

  function renderNumbers(data) {
    const iv = data.intervals;
    const last = iv.length ? iv[iv.length - 1] : null;
    const lat = (last && last.latency_ms) || {};
    setNumber("offered-now", last && last.offered, fmtRate);
    setNumber("achieved-now", last && last.achieved, fmtRate);
    setNumber("success-now", last && last.success_ratio, fmtPct);
    setNumber("p50-now", lat.p50, fmtMs);
    setNumber("p90-now", lat.p90, fmtMs);
    setNumber("p99-now", lat.p99, fmtMs);
    setNumber("max-now", lat.max, fmtMs);
    setNumber("reporting-now", freshGenerators(data).length, String);
    setNumber("generators-total", data.generators.length, String);
    $("latest").textContent = last ? clock(last.t) : "none yet";
    $("now").textContent = clock(data.now);
    $("window").textContent = data.window_s >= 120 ? data.window_s / 60 + " min" : data.window_s + " s";
  }

  // Generators that answer and whose last second is fresh (a stopped one is not reporting,
  // however many seconds it reported before).
  function freshGenerators(data) {
    return data.generators.filter(
      (g) => g.state === "ok" && g.last_data_s != null && data.now - g.last_data_s <= STALE_S,
    );
  }

  // The badge for data that arrived: live, stale or none yet.
  function freshness(data) {
    const iv = data.intervals;
    if (!iv.length) return ["stale", "no data yet"];
    const age = Math.max(0, data.now - iv[iv.length - 1].t);
    return age > STALE_S ? ["stale", "stale, last data " + age + " s ago"] : ["live", "live"];
  }

  // A chosen setting: ?PARAM= in the URL, else the last choice (localStorage KEY), else the
  // first of `allowed`.
  function chosen(param, key, allowed) {
    const asked = new URLSearchParams(location.search).get(param);
    let stored = null;
    try {
      stored = localStorage.getItem(key);
    } catch (e) {
      // Storage refused (a private window, a file: URL): the default will do.
    }
    return [asked, stored].find((w) => allowed.includes(w)) || allowed[0];
  }

  // Remembers a choice and redraws the charts with it.
  function remember(key, value) {
    try {
      localStorage.setItem(key, value);
    } catch (e) {
      // Not remembered: the choice still holds until the page reloads.
    }
    if (lastData) renderCharts(lastData);
  }

  // [xMin, xMax] of the charts for the chosen window.
  function timeRange(data, choice) {
    const kept = data.now - data.window_s;
    if (choice === "all") return [kept, data.now];
    if (choice !== "run") return [Math.max(kept, data.now - Number(choice)), data.now];
    const start = data.totals ? data.totals.start : -Infinity;
    const inRun = data.intervals.filter((i) => i.t >= start);
    if (!inRun.length) return [data.now - 60, data.now];
    const first = inRun[0].t;
    return [first, Math.max(inRun[inRun.length - 1].t, first + MIN_SPAN_S)];
  }

  function renderCharts(data) {
    const [xMin, xMax] = timeRange(data, $("x-window").value);
    const iv = data.intervals.filter((i) => i.t >= xMin && i.t <= xMax);
    const range = { xMin: xMin, xMax: xMax, gapS: GAP_S };
    const pick = (f) => iv.map((i) => [i.t, f(i)]);
    const lat = (k) => (i) => (i.latency_ms ? i.latency_ms[k] : null);

    LineChart.draw($("chart-rate"), Object.assign({}, range, {
      yMin: 0,
      legend: $("legend-rate"),
      series: [
        // A wide pale band under a thin line: both stay visible when they are equal.
        { key: "offered", label: "offered", color: "#9aa3ad", width: 7, opacity: 0.45, points: pick((i) => i.offered) },
        { key: "achieved", label: "achieved", color: "#1f6fd1", points: pick((i) => i.achieved) },
      ],
    }));

    LineChart.draw($("chart-success"), Object.assign({}, range, {
      yMin: 0,
      yMax: 1,
      yFormat: (v) => Math.round(v * 100) + "%",
      legend: $("legend-success"),
      series: [{ key: "success", label: "success ratio", color: "#1d8a4e", points: pick((i) => i.success_ratio) }],
    }));

    const seen = new Set();
    for (const i of iv) for (const c in i.codes || {}) seen.add(c);
    const codes = sortCodes(Array.from(seen));
    const colors = codeColors(codes);
    const latest = iv.length ? iv[iv.length - 1].codes || {} : {};
    LineChart.draw($("chart-codes"), Object.assign({}, range, {
      yMin: 0,
      legend: $("legend-codes"),
      series: codes.map((c) => ({
        key: "code-" + c,
        label: c + " (" + (latest[c] || 0) + "/s)",
        color: colors[c],
        points: pick((i) => (i.codes && i.codes[c]) || 0),
      })),
    }));

    const log = $("y-scale").value === "log";
    $("latency-note").textContent = LATENCY_NOTES[log ? "log" : "linear"];
    // Log: every line fits, so nothing is clipped; linear: from 0, max clipped above p50-p99.
    const scale = log ? { yLog: true } : { yMin: 0, fitKeys: ["p50", "p90", "p99"], clipRatio: CLIP_RATIO };
    LineChart.draw($("chart-latency"), Object.assign({}, range, scale, {
      yFormat: (v) => LineChart.format(v),
      yUnit: " ms",
      legend: $("legend-latency"),
      series: [
        { key: "p50", label: "p50", color: "#1d8a4e", points: pick(lat("p50")) },
        { key: "p90", label: "p90", color: "#1f6fd1", points: pick(lat("p90")) },
        { key: "p99", label: "p99", color: "#e08a00", points: pick(lat("p99")) },
        { key: "max", label: "max", color: "#c62828", points: pick(lat("max")) },
      ],
    }));
  }

  // Rows are updated in place (not rebuilt), so a selection or an element reference survives
  // the next poll.
  function renderGenerators(data) {
    const body = document.querySelector("#generators tbody");
    while (body.rows.length > data.generators.length) body.deleteRow(-1);
    data.generators.forEach((g, n) => {
      const tr = body.rows[n] || body.insertRow();
      tr.dataset.state = g.state;
      tr.dataset.name = g.name;
      tr.className = g.state === "ok" ? "" : "missing";
      const ago = g.last_seen_s == null ? "never" : Math.max(0, data.now - g.last_seen_s) + " s ago";
      const cells = [
        ["name", g.name],
        ["url", g.url],
        ["state", g.state],
        ["rate", g.rate == null ? "–" : String(g.rate)],
        ["last-seen", ago],
        ["error", g.error || ""],
      ];
      cells.forEach(([cls, text], i) => {
        const td = tr.cells[i] || tr.insertCell();
        td.className = cls;
        if (td.textContent !== text) td.textContent = text;
      });
    });
  }

  async function fetchSeries() {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
    try {
      const r = await fetch("/api/series", { cache: "no-store", signal: abort.signal });
      if (!r.ok) throw new Error("HTTP " + r.status);
      const data = await r.json();
      if (!data || !Array.isArray(data.intervals) || !Array.isArray(data.generators)) {
        throw new Error("unexpected answer");
      }
      return data;
    } catch (e) {
      throw new Error(e.name === "AbortError" ? "timed out" : e.message);
    } finally {
      clearTimeout(timer);
    }
  }

  async function poll() {
    let delay = POLL_MS;
    try {
      const data = await fetchSeries();
      lastData = data;
      renderTarget(data);
      renderNumbers(data);
      renderTotals(data);
      renderCharts(data);
      renderGenerators(data);
      failures = 0;
      const [kind, text] = freshness(data);
      setStatus(kind, text);
    } catch (e) {
      failures++;
      delay = Math.min(BACKOFF_MAX_MS, POLL_MS * Math.pow(2, failures - 1));
      setStatus("disconnected", "disconnected (" + e.message + "), retrying in " + delay / 1000 + " s");
    }
    setTimeout(poll, delay);
  }

  $("x-window").value = chosen("window", "dashboard.window", WINDOWS);
  $("x-window").addEventListener("change", () => remember("dashboard.window", $("x-window").value));
  $("y-scale").value = chosen("scale", "dashboard.latency-scale", SCALES);
  $("y-scale").addEventListener("change", () => remember("dashboard.latency-scale", $("y-scale").value));
  poll();
})();
