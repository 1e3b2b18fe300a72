//! The aggregator's pages in a real headless Chromium, driven over WebDriver, against the real
//! rig: Redis master + replica, the API, load generators, the updater and the aggregator, each
//! its own process. Screenshots go to `target/test-artifacts/pages/<test>.png`, the kit's logs
//! next to them.

mod webdriver;

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::*;
use webdriver::Browser;

/// Load of each generator: enough to show, light on a 2-core machine.
const RATE: &str = "200";

/// Where screenshots and logs go: `target/test-artifacts/pages/`.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").join("test-artifacts/pages");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

/// A `loadtest` subcommand as a child process, started on port 0 (its address read from its
/// log, so no other process can take the port first) and restarted on the same address; its
/// stderr goes to `<artifacts>/<log>.log` (appended across restarts). Killed on drop.
struct Kit {
    child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
    addr: SocketAddr,
}

impl Kit {
    fn start(log: &str, args: &[&str]) -> Kit {
        let log = artifacts().join(format!("{log}.log"));
        let _ = std::fs::remove_file(&log);
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.extend(["--listen".into(), "127.0.0.1:0".into()]);
        let mut kit = Kit { child: None, args, log, addr: local(0) };
        kit.launch();
        // A restart asks for the same address.
        let listen = kit.args.len() - 1;
        kit.args[listen] = kit.addr.to_string();
        kit
    }

    /// Spawns the process and waits until its log says where it listens.
    fn launch(&mut self) {
        let before = std::fs::metadata(&self.log).map_or(0, |m| m.len() as usize);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_loadtest"))
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn loadtest");
        let child = self.child.insert(child);
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let said = text.get(before..).and_then(|t| t.split("listening on ").nth(1));
            if let Some(addr) = said.and_then(|rest| rest.split_whitespace().next()).and_then(|a| a.parse().ok()) {
                self.addr = addr;
                return;
            }
            let exited = child.try_wait().expect("try_wait");
            if exited.is_some() || Instant::now() > until {
                panic!("loadtest {:?} not listening ({exited:?}); log:\n{text}", self.args);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process (SIGKILL: a crash, no goodbye).
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the same command again, on the same address.
    fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for Kit {
    fn drop(&mut self) {
        self.kill();
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Redis pair, the API (with a value set), `generators` load generators and the aggregator.
struct Rig {
    _pair: Pair,
    api: Api,
    generators: Vec<Kit>,
    aggregator: Kit,
}

impl Rig {
    fn start(test: &str, generators: usize) -> Rig {
        let pair = Pair::new();
        let api = Api::on(&pair, &[]);
        api.wait_ready();
        assert_eq!(post_value(api.addr, 1.25).status, 200);
        // The replica has it before the load starts, so the first seconds are not all 404s.
        wait_until(Duration::from_secs(5), "the value on the replica", || get(api.addr, "/").status == 200);
        let target = format!("http://{}/", api.addr);
        let gens: Vec<Kit> = (1..=generators)
            .map(|i| {
                let name = format!("gen-{i}");
                let args = ["attack", "--target", &target, "--rate", RATE, "--duration", "0", "--name", &name];
                Kit::start(&format!("{test}-{name}"), &args)
            })
            .collect();
        let urls: Vec<String> = gens.iter().map(|g| format!("http://{}/", g.addr)).collect();
        let agg = aggregator(test, &urls.join(","), &target);
        Rig { _pair: pair, api, generators: gens, aggregator: agg }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.aggregator.addr)
    }
}

fn aggregator(test: &str, generators: &str, api_url: &str) -> Kit {
    let args = ["aggregator", "--generators", generators, "--api-url", api_url];
    Kit::start(&format!("{test}-aggregator"), &args)
}

/// What the dashboard shows: its numbers (raw `data-value`s), the points of each chart's
/// lines, the codes in the legend, the generators table.
const DASHBOARD: &str = r#"
    const value = (id) => {
        const v = document.getElementById(id).dataset.value;
        return v ? Number(v) : null;
    };
    const points = (chart) => Array.from(document.querySelectorAll('#' + chart + ' path.series'))
        .map((p) => Number(p.dataset.points));
    return {
        status: document.getElementById('status').textContent,
        latest: document.getElementById('latest').textContent,
        offered: value('offered-now'),
        achieved: value('achieved-now'),
        success: value('success-now'),
        p50: value('p50-now'),
        p99: value('p99-now'),
        max: value('max-now'),
        charts: {
            rate: points('chart-rate'),
            success: points('chart-success'),
            codes: points('chart-codes'),
            latency: points('chart-latency'),
        },
        codes: Array.from(document.querySelectorAll('#legend-codes .legend-item')).map((e) => e.dataset.series),
        generators: Array.from(document.querySelectorAll('#generators tbody tr'))
            .map((tr) => ({name: tr.dataset.name, state: tr.dataset.state})),
    };
"#;

/// The dashboard once it shows live data: a positive achieved rate, every chart line with at
/// least `min_points` points, `generators` rows all ok; else `false`.
fn dashboard_ready(min_points: u64, generators: usize) -> String {
    format!(
        "const d = (function () {{ {DASHBOARD} }})();
         const lines = Object.values(d.charts);
         const ok = d.status === 'live' && d.achieved > 0 && d.p99 > 0
             && lines.every((l) => l.length > 0 && l.every((n) => n >= {min_points}))
             && d.generators.length === {generators} && d.generators.every((g) => g.state === 'ok');
         return ok ? d : false;"
    )
}

fn points(d: &Value, chart: &str) -> Vec<u64> {
    d["charts"][chart].as_array().expect("chart lines").iter().map(|n| n.as_u64().expect("points")).collect()
}

fn screenshot(browser: &Browser, name: &str) {
    let path = artifacts().join(format!("{name}.png"));
    browser.screenshot(&path);
    eprintln!("screenshot: {}", path.display());
}

/// Two generators hit the API through Redis; the dashboard shows rising numbers, the four
/// charts fill up second by second, and both generators are listed as ok.
#[test]
#[ignore = "needs Chromium: scripts/test.sh runs it"]
fn dashboard_shows_live_data() {
    let _serial = serial();
    let rig = Rig::start("dashboard_shows_live_data", 2);
    let browser = Browser::start();
    browser.goto(&rig.url("/"));
    let first = browser.wait_for(Duration::from_secs(20), "live data on the dashboard", &dashboard_ready(3, 2));
    std::thread::sleep(Duration::from_secs(2));
    let second = browser.eval(DASHBOARD);
    assert_eq!(second["status"], "live");
    assert_ne!(first["latest"], second["latest"], "the latest second moves on:\n{first}\n{second}");
    // Every line has a point per second (a code missing in a second counts 0 there).
    for chart in ["rate", "success", "codes", "latency"] {
        let (a, b) = (points(&first, chart), points(&second, chart));
        assert!(a.iter().max() < b.iter().max() && b.iter().min() == b.iter().max(), "{chart}: {a:?} -> {b:?}");
    }
    assert_eq!(points(&second, "rate").len(), 2, "offered and achieved");
    assert_eq!(points(&second, "latency").len(), 4, "p50, p90, p99, max");
    assert!(second["codes"].as_array().unwrap().contains(&Value::from("code-200")), "{}", second["codes"]);
    let success = second["success"].as_f64().unwrap();
    assert!(success > 0.9 && success <= 1.0, "a healthy API: success ratio {success}");
    let (p50, p99, max) =
        (second["p50"].as_f64().unwrap(), second["p99"].as_f64().unwrap(), second["max"].as_f64().unwrap());
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "percentiles in order: {p50} {p99} {max}");
    let names: Vec<&str> = second["generators"].as_array().unwrap().iter().filter_map(|g| g["name"].as_str()).collect();
    assert!(names.contains(&"gen-1") && names.contains(&"gen-2"), "{names:?}");
    let rows = browser.find_all("#generators tbody tr");
    assert_eq!(rows.len(), 2);
    assert!(browser.text(&rows[0]).contains("ok"), "{}", browser.text(&rows[0]));
    screenshot(&browser, "dashboard_shows_live_data");
}

/// The aggregator dies and comes back on the same port: the page says "disconnected", keeps
/// the last data on screen, retries on its own and is live again with fresh data.
#[test]
#[ignore = "needs Chromium: scripts/test.sh runs it"]
fn dashboard_survives_aggregator_restart() {
    let _serial = serial();
    let mut rig = Rig::start("dashboard_survives_aggregator_restart", 1);
    let browser = Browser::start();
    browser.goto(&rig.url("/"));
    let before = browser.wait_for(Duration::from_secs(20), "live data on the dashboard", &dashboard_ready(2, 1));

    rig.aggregator.kill();
    browser.wait_for(
        Duration::from_secs(10),
        "status disconnected",
        "const s = document.getElementById('status').textContent; return s.includes('disconnected') && s;",
    );
    let down = browser.eval(DASHBOARD);
    assert_eq!(down["achieved"], before["achieved"], "the last data stays on screen while disconnected");
    screenshot(&browser, "dashboard_survives_aggregator_restart-disconnected");

    rig.aggregator.restart();
    let after = browser.wait_for(Duration::from_secs(25), "live again with fresh data", &dashboard_ready(1, 1));
    assert_eq!(after["status"], "live");
    assert_ne!(after["latest"], before["latest"]);
    screenshot(&browser, "dashboard_survives_aggregator_restart");
}

/// Both generators stop (killed): the aggregator still answers, but within seconds the badge
/// says "stale, last data N s ago" instead of a green "live", and 0 of 2 generators report.
#[test]
#[ignore = "needs Chromium: scripts/test.sh runs it"]
fn dashboard_says_stale_when_generators_stop() {
    let _serial = serial();
    let mut rig = Rig::start("dashboard_says_stale_when_generators_stop", 2);
    let browser = Browser::start();
    browser.goto(&rig.url("/"));
    browser.wait_for(Duration::from_secs(20), "live data on the dashboard", &dashboard_ready(2, 2));
    let reporting = "Number(document.getElementById('reporting-now').dataset.value)";
    assert_eq!(browser.eval(&format!("return {reporting};")), 2);
    for g in &mut rig.generators {
        g.kill();
    }
    let stale = browser.wait_for(
        Duration::from_secs(15),
        "the badge to say stale",
        "const s = document.getElementById('status'); return s.textContent.startsWith('stale') && s.className;",
    );
    assert_eq!(stale, "stale");
    let text = browser.eval("return document.getElementById('status').textContent;");
    let text = text.as_str().unwrap();
    assert!(text.starts_with("stale, last data ") && text.ends_with(" s ago"), "{text}");
    assert_eq!(browser.eval(&format!("return {reporting};")), 0, "no generator reports");
    assert_eq!(browser.eval("return Number(document.getElementById('generators-total').dataset.value);"), 2);
    screenshot(&browser, "dashboard_says_stale_when_generators_stop");
}

/// No generator reachable: the badge says "no data yet" and every chart's y-axis starts at 0
/// (it went from -1 to 1: negative req/s and ms).
#[test]
#[ignore = "needs Chromium: scripts/test.sh runs it"]
fn empty_dashboard_has_no_negative_axes() {
    let _serial = serial();
    let test = "empty_dashboard_has_no_negative_axes";
    let agg = aggregator(test, &format!("http://127.0.0.1:{}/", free_port()), "http://127.0.0.1:1/");
    let browser = Browser::start();
    browser.goto(&format!("http://{}/", agg.addr));
    let ticks = browser.wait_for(
        Duration::from_secs(15),
        "the first poll drawn",
        "if (document.getElementById('status').textContent !== 'no data yet') return false;
         return Array.from(document.querySelectorAll('svg.chart')).map((svg) =>
             Array.from(svg.querySelectorAll('text.y-tick')).map((t) => t.textContent));",
    );
    let charts = ticks.as_array().unwrap();
    assert_eq!(charts.len(), 4, "{ticks}");
    for chart in charts {
        let labels: Vec<&str> = chart.as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        assert!(!labels.is_empty(), "{ticks}");
        assert_eq!(labels[0].trim_end_matches('%'), "0", "the axis starts at 0: {labels:?}");
        assert!(labels.iter().all(|l| !l.starts_with('-') && !l.starts_with('−')), "{labels:?}");
    }
    screenshot(&browser, test);
}

/// The run totals as the dashboard shows them (raw `data-value`s) and the target it names.
const TOTALS: &str = r#"
    const value = (id) => {
        const v = document.getElementById(id).dataset.value;
        return v ? Number(v) : null;
    };
    const codes = {};
    for (const e of document.querySelectorAll('#total-codes .code')) codes[e.dataset.code] = Number(e.dataset.value);
    return {
        status: document.getElementById('status').textContent,
        requests: value('total-requests'),
        success: value('total-success'),
        p50: value('total-p50'),
        p99: value('total-p99'),
        max: value('total-max'),
        codes: codes,
        span: document.getElementById('run-span').textContent,
        target: document.getElementById('target').textContent,
    };
"#;

/// Two generators run, then stop: the run totals beside the last-second tiles add up every
/// second the aggregator merged (requests, per status, success, p50 <= p99 <= max, max the
/// largest of any second) and the target URL is shown.
#[test]
#[ignore = "needs Chromium: scripts/test.sh runs it"]
fn dashboard_shows_run_totals() {
    let _serial = serial();
    let mut rig = Rig::start("dashboard_shows_run_totals", 2);
    let browser = Browser::start();
    browser.goto(&rig.url("/"));
    browser.wait_for(Duration::from_secs(20), "live data on the dashboard", &dashboard_ready(3, 2));
    let live = browser.eval(TOTALS);
    assert!(live["requests"].as_u64().unwrap_or(0) > 0, "{live}");
    std::thread::sleep(Duration::from_secs(3));
    for g in &mut rig.generators {
        g.kill();
    }
    // Once stale nothing more arrives: the page and /api/series hold the same final run.
    browser.wait_for(
        Duration::from_secs(15),
        "the badge to say stale",
        "return document.getElementById('status').textContent.startsWith('stale');",
    );
    std::thread::sleep(Duration::from_millis(1500));
    let shown = browser.eval(TOTALS);
    let series = get(rig.aggregator.addr, "/api/series").json();
    let intervals = series["intervals"].as_array().expect("intervals");
    let sum = |f: &dyn Fn(&Value) -> u64| intervals.iter().map(f).sum::<u64>();
    let requests = sum(&|i| i["achieved"].as_u64().unwrap());
    let ok = sum(&|i| i["codes"]["200"].as_u64().unwrap_or(0));
    assert!(requests > live["requests"].as_u64().unwrap(), "the totals grew: {live}\n{shown}");
    assert_eq!(shown["requests"].as_u64(), Some(requests), "every second of the run: {shown}");
    assert_eq!(shown["codes"]["200"].as_u64(), Some(ok), "{shown}");
    let counted: u64 = shown["codes"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(counted, requests, "every request under one status or failure: {shown}");
    let success = shown["success"].as_f64().unwrap();
    assert!((success - ok as f64 / requests as f64).abs() < 1e-9 && success > 0.9, "{shown}");
    let (p50, p99, max) =
        (shown["p50"].as_f64().unwrap(), shown["p99"].as_f64().unwrap(), shown["max"].as_f64().unwrap());
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "percentiles over the run in order: {shown}");
    let lat = |k: &str| intervals.iter().map(|i| i["latency_ms"][k].as_f64().unwrap()).collect::<Vec<f64>>();
    let worst = lat("max").into_iter().fold(0.0, f64::max);
    assert_eq!(max, worst, "the run's max is the largest second's max: {shown}");
    let p99s = lat("p99");
    let (lo, hi) = (p99s.iter().copied().fold(f64::MAX, f64::min), p99s.iter().copied().fold(0.0, f64::max));
    assert!(lo * 0.99 <= p99 && p99 <= hi * 1.01, "p99 over the run between the seconds' p99s {lo}..{hi}: {p99}");
    assert!(shown["span"].as_str().unwrap().starts_with("since "), "{shown}");
    assert_eq!(shown["target"], format!("http://{}/", rig.api.addr), "the attacked URL is shown");
    screenshot(&browser, "dashboard_shows_run_totals");
}

/// Where the points of a chart's line sit across its plot: `[first, last]` as fractions of the
/// plot's width (0 the left edge, 1 the right).
fn line_span(browser: &Browser, chart: &str, series: &str) -> (f64, f64) {
    let script = format!(
        "const svg = document.getElementById('{chart}');
         const frame = svg.querySelector('rect.frame');
         const path = svg.querySelector('path.series[data-series=\"{series}\"]');
         const xs = Array.from(path.getAttribute('d').matchAll(/[ML]([-\\d.]+),/g)).map((m) => Number(m[1]));
         const left = Number(frame.getAttribute('x')), width = Number(frame.getAttribute('width'));
         return [(xs[0] - left) / width, (xs[xs.length - 1] - left) / width];"
    );
    let v = browser.eval(&script);
    (v[0].as_f64().expect("first x"), v[1].as_f64().expect("last x"))
}

/// A run of a few seconds fills the charts from edge to edge (the fixed 5-minute axis put it
/// in a sliver at the right); choosing "5 min" puts it back at the right edge, and the choice
/// is remembered across a reload.
#[test]
#[ignore = "needs Chromium: scripts/test.sh runs it"]
fn dashboard_time_axis_fits_a_short_run() {
    let _serial = serial();
    let rig = Rig::start("dashboard_time_axis_fits_a_short_run", 1);
    let browser = Browser::start();
    browser.goto(&rig.url("/"));
    browser.wait_for(Duration::from_secs(20), "live data on the dashboard", &dashboard_ready(3, 1));
    for chart in [("chart-rate", "achieved"), ("chart-latency", "p50"), ("chart-codes", "code-200")] {
        let (first, last) = line_span(&browser, chart.0, chart.1);
        assert!(first < 0.02 && last > 0.98, "{chart:?} spans the plot: {first:.3}..{last:.3}");
    }
    screenshot(&browser, "dashboard_time_axis_fits_a_short_run");

    browser.eval(
        "const s = document.getElementById('x-window'); s.value = '300'; s.dispatchEvent(new Event('change'));
         return true;",
    );
    let (first, last) = line_span(&browser, "chart-rate", "achieved");
    assert!(first > 0.9 && last > first, "a few seconds at the right of 5 minutes: {first:.3}..{last:.3}");
    browser.goto(&rig.url("/"));
    browser.wait_for(Duration::from_secs(10), "live again", &dashboard_ready(1, 1));
    assert_eq!(browser.eval("return document.getElementById('x-window').value;"), "300");
    let (first, _) = line_span(&browser, "chart-rate", "achieved");
    assert!(first > 0.9, "the choice survives a reload: {first:.3}");
}

/// Makes the page's polls answer ten seconds ending a second ago (k = 10 down to 1 seconds
/// ago), 100 requests each, with the latency object the JS expression `latency` makes of `k`.
fn fake_seconds(browser: &Browser, latency: &str) {
    browser.eval(&format!(
        "const now = Math.floor(Date.now() / 1000);
         const intervals = [];
         for (let k = 10; k >= 1; k--) {{
             intervals.push({{t: now - k, offered: 100, achieved: 100, success_ratio: 1, codes: {{'200': 100}},
                 generators_reporting: 1, latency_ms: {latency}}});
         }}
         const body = JSON.stringify({{now: now, window_s: 300, generators: [], intervals: intervals, totals: null}});
         window.fetch = async () => new Response(body, {{status: 200}});
         return true;"
    ));
}

/// The dashboard of an aggregator whose one generator is not there, once its first poll is
/// drawn ("no data yet"): a page to inject data into.
fn dashboard_without_data(test: &str) -> (Kit, Browser) {
    let agg = aggregator(test, &format!("http://127.0.0.1:{}/", free_port()), "http://127.0.0.1:1/");
    let browser = Browser::start();
    browser.goto(&format!("http://{}/", agg.addr));
    browser.wait_for(
        Duration::from_secs(15),
        "the first poll drawn",
        "return document.getElementById('status').textContent === 'no data yet';",
    );
    (agg, browser)
}

/// One second whose max is 400 ms among p50-p99 of 1-5 ms: the latency axis still fits
/// p50-p99 (top tick below 10 ms) and the spike is a marker at the top edge saying 400 ms;
/// without a spike nothing is clipped. Data injected into the real page's fetch.
#[test]
#[ignore = "needs Chromium: scripts/test.sh runs it"]
fn latency_axis_clips_a_max_spike() {
    let _serial = serial();
    let test = "latency_axis_clips_a_max_spike";
    let (_agg, browser) = dashboard_without_data(test);
    let inject = |spike: f64, drawn: &str| {
        fake_seconds(&browser, &format!("{{mean: 1.5, p50: 1, p90: 3, p99: 5, max: k === 5 ? {spike} : 6}}"));
        browser.wait_for(
            Duration::from_secs(10),
            "the injected data drawn",
            &format!(
                "const p = document.querySelector('#chart-latency path.series[data-series=\"p50\"]');
                 if (!p || Number(p.dataset.points) !== 10) return false;
                 const svg = document.getElementById('chart-latency');
                 const r = {{
                     ticks: Array.from(svg.querySelectorAll('text.y-tick')).map((t) => Number(t.textContent)),
                     over: Array.from(svg.querySelectorAll('path.over')).map((m) => [m.dataset.series, Number(m.dataset.value)]),
                     label: (svg.querySelector('text.over-label') || {{}}).textContent || null,
                 }};
                 return ({drawn}) && r;"
            ),
        )
    };
    let spiked = inject(400.0, "r.over.length > 0");
    let ticks: Vec<f64> = spiked["ticks"].as_array().unwrap().iter().map(|t| t.as_f64().unwrap()).collect();
    assert_eq!(ticks.first(), Some(&0.0), "{spiked}");
    let top = *ticks.last().unwrap();
    assert!((5.0..10.0).contains(&top), "the axis fits p99 = 5 ms, not the 400 ms max: {spiked}");
    assert_eq!(spiked["over"], serde_json::json!([["max", 400]]), "the spike is marked: {spiked}");
    assert!(spiked["label"].as_str().is_some_and(|l| l.contains("400")), "{spiked}");
    screenshot(&browser, test);

    // A max twice p99 is no spike: the axis takes it in, nothing clipped.
    let calm = inject(10.0, "r.over.length === 0");
    let top = calm["ticks"].as_array().unwrap().last().and_then(|t| t.as_f64()).unwrap();
    assert!(top >= 10.0, "{calm}");
    assert_eq!(calm["over"], serde_json::json!([]), "{calm}");
}

/// The latency axis switched to log: ticks at 1, 10, 100, 1000 ms for p50 of 2 ms and a 400 ms
/// max spike, nothing clipped, p50 drawn well above the axis floor (on a linear axis to 400 ms
/// it would sit on it), a p50 of 0 ms breaks its line instead of going below the axis. Data
/// injected into the real page's fetch.
#[test]
#[ignore = "needs Chromium: scripts/test.sh runs it"]
fn latency_axis_log_scale() {
    let _serial = serial();
    let test = "latency_axis_log_scale";
    let (_agg, browser) = dashboard_without_data(test);
    fake_seconds(&browser, "{mean: 2, p50: k === 3 ? 0 : 2, p90: 3, p99: 5, max: k === 5 ? 400 : 6}");
    browser.eval(
        "const s = document.getElementById('y-scale'); s.value = 'log'; s.dispatchEvent(new Event('change'));
         return true;",
    );
    // Where each line's points sit, as fractions of the plot's height above its floor.
    let drawn = browser.wait_for(
        Duration::from_secs(10),
        "the injected data drawn on a log axis",
        r#"const svg = document.getElementById('chart-latency');
         const frame = svg.querySelector('rect.frame');
         const p50 = svg.querySelector('path.series[data-series="p50"]');
         if (!p50 || Number(p50.dataset.points) !== 9) return false;
         const bottom = Number(frame.getAttribute('y')) + Number(frame.getAttribute('height'));
         const height = Number(frame.getAttribute('height'));
         const heights = (key) => Array.from(svg.querySelector('path.series[data-series="' + key + '"]')
             .getAttribute('d').matchAll(/[ML][-\d.]+,([-\d.]+)/g)).map((m) => (bottom - Number(m[1])) / height);
         return {
             ticks: Array.from(svg.querySelectorAll('text.y-tick')).map((t) => t.textContent),
             over: svg.querySelectorAll('path.over').length,
             p50: heights('p50'),
             p99: heights('p99'),
             max: heights('max'),
             note: document.getElementById('latency-note').textContent,
         };"#,
    );
    assert_eq!(drawn["ticks"], serde_json::json!(["1", "10", "100", "1000"]), "decades: {drawn}");
    assert_eq!(drawn["over"], 0, "nothing clipped on a log axis: {drawn}");
    let fractions = |key: &str| -> Vec<f64> {
        drawn[key].as_array().unwrap_or_else(|| panic!("{drawn}")).iter().map(|f| f.as_f64().unwrap()).collect()
    };
    // log10(2) / 3 decades ≈ 0.10 of the height; log10(5) / 3 ≈ 0.23; log10(400) / 3 ≈ 0.87.
    for (key, at) in [("p50", 0.1003), ("p99", 0.233)] {
        assert!(fractions(key).iter().all(|f| (f - at).abs() < 0.01), "{key} at {at}: {drawn}");
    }
    let max = fractions("max");
    assert_eq!(max.len(), 10, "{drawn}");
    assert!(max.iter().any(|f| (f - 0.867).abs() < 0.01), "the spike inside the plot: {drawn}");
    assert!(max.iter().all(|f| (0.0..=1.0).contains(f)), "{drawn}");
    assert!(drawn["note"].as_str().is_some_and(|n| n.contains("log")), "{drawn}");
    screenshot(&browser, test);
}

/// What the currency page shows.
const CURRENCY: &str = r#"
    const el = (id) => document.getElementById(id);
    const line = document.querySelector('#chart-currency path.series');
    return {
        status: el('status').textContent,
        value: el('current-value').dataset.value || null,
        points: Number(el('points').textContent),
        line_points: line ? Number(line.dataset.points) : 0,
        errors: Number(el('errors').textContent),
        last_error: el('last-error').textContent,
    };
"#;

fn currency_when(cond: &str) -> String {
    format!("const c = (function () {{ {CURRENCY} }})(); return ({cond}) ? c : false;")
}

fn api_value(api: &Api) -> f64 {
    get(api.addr, "/").json()["current"].as_f64().expect("current")
}

/// The updater moves the value every 300 ms; the currency page (reading the API cross-origin)
/// charts it, skips the readings lost while the API is down for 2 s, keeps its points and goes
/// on once the API is back; it ends on the API's value.
#[test]
#[ignore = "needs Chromium: scripts/test.sh runs it"]
fn currency_page_charts_the_value() {
    let _serial = serial();
    let test = "currency_page_charts_the_value";
    let pair = Pair::new();
    let api_listen = local(free_port()).to_string();
    let api = Api::on(&pair, &[("LISTEN_ADDR", &api_listen)]);
    api.wait_ready();
    let api_url = format!("http://{api_listen}/");
    let args = ["updater", "--api-url", &api_url, "--interval", "300ms"];
    let mut updater = Kit::start(&format!("{test}-updater"), &args);
    // The page needs no generator; the aggregator requires a list: one that is not there.
    let agg = aggregator(test, &format!("http://127.0.0.1:{}/", free_port()), &api_url);

    let browser = Browser::start();
    browser.goto(&format!("http://{}/currency", agg.addr));
    let first = browser.wait_for(Duration::from_secs(15), "3 points", &currency_when("c.points >= 3 && c.value"));
    assert_eq!(first["status"], "live");
    let moved = format!("c.value !== {}", first["value"]);
    browser.wait_for(Duration::from_secs(10), "the value to change", &currency_when(&moved));

    // The API goes away for 2 s: readings fail, the chart keeps what it has.
    drop(api);
    let down_at = Instant::now();
    let failing = browser.wait_for(
        Duration::from_secs(10),
        "a failed reading",
        &currency_when(&format!("c.errors > {} && c.last_error", first["errors"])),
    );
    let why = failing["last_error"].as_str().unwrap_or_default();
    assert!(why.contains(&format!("is the API at {api_url} up?")) && why.contains("CORS_ORIGINS"), "a hint: {why}");
    std::thread::sleep(Duration::from_secs(2).saturating_sub(down_at.elapsed()));
    let down = browser.eval(CURRENCY);
    let kept = failing["points"].as_u64().unwrap();
    assert!(kept >= first["points"].as_u64().unwrap(), "{first}\n{failing}");
    assert!(down["points"].as_u64().unwrap() >= kept, "points kept while the API is down: {failing}\n{down}");
    assert_eq!(down["points"], down["line_points"], "every point is on the line");
    assert_ne!(down["status"], "live");

    let api = Api::on(&pair, &[("LISTEN_ADDR", &api_listen)]);
    api.wait_ready();
    let grows = format!("c.status === 'live' && c.points >= {} + 3", down["points"]);
    browser.wait_for(Duration::from_secs(15), "new points after the restart", &currency_when(&grows));

    // With the updater stopped the value settles: the page shows exactly what the API answers.
    updater.kill();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let want = api_value(&api);
        let shown = browser.eval(CURRENCY);
        let got: Option<f64> = shown["value"].as_str().and_then(|v| v.parse().ok());
        if got == Some(want) {
            assert_eq!(shown["points"], shown["line_points"]);
            break;
        }
        assert!(Instant::now() < until, "page shows {shown}, the API answers {want}");
        std::thread::sleep(Duration::from_millis(200));
    }
    screenshot(&browser, test);
}
