// currency.js: the currency page. Asks the aggregator for the API's URL (/api/config), then
// reads the API's current value every second (a cross-origin GET: the API answers CORS) and
// charts it. A failed reading (network error, non-200, bad JSON) is skipped: it leaves a gap
// in the line and a note in #last-error, and polling goes on.
"use strict";

(function () {
  /** One reading per second. */
  const POLL_MS = 1000;
  /** A reading slower than this counts as failed. */
  const FETCH_TIMEOUT_MS = 2000;
  /** Retries of /api/config back off from POLL_MS up to this. */
  const BACKOFF_MAX_MS = 10000;
  /** Readings older than this leave the chart. */
  const WINDOW_S = 600;
  /** The chart spans at least this much time, so the first points do not fill it alone. */
  const MIN_SPAN_S = 30;
  /** Readings further apart than this (a failed reading between them) break the line. */
  const GAP_S = 2.5;

  const $ = (id) => document.getElementById(id);
  const points = [];
  let errors = 0;

  function setStatus(kind, text) {
    $("status").className = kind;
    $("status").textContent = text;
  }

  function clock() {
    return new Date().toLocaleTimeString([], { hour12: false });
  }

  async function fetchWithTimeout(url) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
    try {
      return await fetch(url, { cache: "no-store", signal: abort.signal });
    } catch (e) {
      throw new Error(e.name === "AbortError" ? "timed out" : "network error: " + e.message);
    } finally {
      clearTimeout(timer);
    }
  }

  // The API's URL, asked of the aggregator until it answers.
  async function apiUrl() {
    for (let failures = 0; ; failures++) {
      try {
        const r = await fetchWithTimeout("/api/config");
        if (!r.ok) throw new Error("HTTP " + r.status);
        const cfg = await r.json();
        if (typeof cfg.api_url !== "string" || !cfg.api_url) throw new Error("no api_url");
        return cfg.api_url;
      } catch (e) {
        const delay = Math.min(BACKOFF_MAX_MS, POLL_MS * Math.pow(2, failures));
        setStatus("disconnected", "disconnected (config: " + e.message + "), retrying in " + delay / 1000 + " s");
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  // One reading: the value, or an Error saying why there is none.
  async function read(url) {
    const r = await fetchWithTimeout(url);
    const text = await r.text();
    let body;
    try {
      body = JSON.parse(text);
    } catch (e) {
      throw new Error((r.ok ? "" : "HTTP " + r.status + ", ") + "not JSON: " + text.slice(0, 80));
    }
    if (!r.ok) throw new Error("HTTP " + r.status + (body && body.error ? ": " + body.error : ""));
    if (!body || typeof body.current !== "number" || !isFinite(body.current)) {
      throw new Error("no number in answer: " + text.slice(0, 80));
    }
    return body.current;
  }

  function draw() {
    const now = Date.now() / 1000;
    while (points.length && points[0][0] < now - WINDOW_S) points.shift();
    const first = points.length ? points[0][0] : now;
    const span = Math.min(WINDOW_S, Math.max(MIN_SPAN_S, now - first));
    LineChart.draw($("chart-currency"), {
      xMin: now - span,
      xMax: now,
      gapS: GAP_S,
      series: [{ key: "currency", label: "Currency (USD)", color: "#1f6fd1", points: points }],
    });
    $("points").textContent = String(points.length);
    $("points").dataset.value = String(points.length);
  }

  async function poll(url) {
    const started = Date.now();
    try {
      const value = await read(url);
      points.push([Date.now() / 1000, value]);
      $("current-value").textContent = String(value);
      $("current-value").dataset.value = String(value);
      setStatus("live", "live");
    } catch (e) {
      errors++;
      $("errors").textContent = String(errors);
      $("errors").dataset.value = String(errors);
      const unreachable = e.message.startsWith("network") || e.message === "timed out";
      // A browser says only "Failed to fetch": name the usual causes.
      const hint = unreachable
        ? " (is the API at " + url + " up? does its CORS_ORIGINS allow this page's origin, " +
          location.origin + "? is the aggregator's --api-url right?)"
        : "";
      $("last-error").textContent = "last failed reading at " + clock() + ": " + e.message + hint;
      setStatus("disconnected", unreachable ? "disconnected" : "API error");
    }
    draw();
    setTimeout(() => poll(url), Math.max(0, POLL_MS - (Date.now() - started)));
  }

  (async function start() {
    draw();
    const url = await apiUrl();
    $("api-url").textContent = url;
    poll(url);
  })();
})();
