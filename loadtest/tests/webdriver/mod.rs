//! A tiny WebDriver client for the browser tests: starts Debian's `chromedriver` on a free
//! port, opens one headless Chromium session with a fresh profile, and speaks the W3C
//! WebDriver JSON protocol over the kit's own HTTP client. Dropping the [`Browser`] ends the
//! session (which quits Chromium) and then kills chromedriver.
#![allow(dead_code)] // not every test uses every call

use loadtest::client::{Client, Target};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's packages (`apt-get install chromium chromium-driver`); `CHROMEDRIVER` and
/// `CHROMIUM` override them.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// Longest a single WebDriver command may take (a navigation waits for the page's load).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest chromedriver may take to say it is ready.
const DRIVER_START: Duration = Duration::from_secs(15);
/// The W3C key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// An element reference from [`Browser::find_all`].
#[derive(Debug, Clone)]
pub struct Element(String);

/// A chromedriver process with one headless Chromium session.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile (window 1280×1100, so
    /// screenshots show whole pages).
    pub fn start() -> Browser {
        let driver_bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.into());
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
        for bin in [&driver_bin, &chromium] {
            assert!(Path::new(bin).exists(), "{bin} missing: apt-get install chromium chromium-driver");
        }
        let (driver, port) = spawn_driver(&driver_bin);
        let profile = tempfile::tempdir().expect("profile dir");
        let mut browser = Browser { driver, port, session: String::new(), profile };
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1280,1100".into(),
            format!("--user-data-dir={}", browser.profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let answer = browser.call("POST", "/session", Some(caps)).unwrap_or_else(|e| panic!("new session: {e}"));
        browser.session = answer["sessionId"].as_str().expect("sessionId").to_owned();
        browser
    }

    /// Sends one command; the answer's `value`, or the WebDriver error as text.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let target = Target::parse(&format!("http://127.0.0.1:{}{path}", self.port))?;
        let mut client = Client::new(target, COMMAND_TIMEOUT);
        let body = body.map(|b| b.to_string());
        let answer =
            client.request(method, body.as_deref().map(str::as_bytes)).map_err(|e| format!("{method} {path}: {e}"))?;
        let parsed: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| format!("{method} {path}: {e}: {:?}", String::from_utf8_lossy(&answer.body)))?;
        let value = parsed.get("value").cloned().unwrap_or(Value::Null);
        if answer.status == 200 {
            Ok(value)
        } else {
            Err(format!("{method} {path}: {} {}: {}", answer.status, value["error"], value["message"]))
        }
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Loads `url` and waits for its `load` event.
    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body: `return ...`) in the page; its result as JSON.
    pub fn eval(&self, script: &str) -> Value {
        self.session_call("POST", "/execute/sync", Some(json!({"script": script, "args": []})))
    }

    /// The elements matching a CSS selector.
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self.session_call("POST", "/elements", Some(json!({"using": "css selector", "value": css})));
        found
            .as_array()
            .expect("element list")
            .iter()
            .map(|e| Element(e[ELEMENT_KEY].as_str().expect("element id").to_owned()))
            .collect()
    }

    /// The rendered text of an element.
    pub fn text(&self, el: &Element) -> String {
        self.session_call("GET", &format!("/element/{}/text", el.0), None).as_str().unwrap_or_default().to_owned()
    }

    /// Saves a PNG of the viewport to `path`, creating its directory.
    pub fn screenshot(&self, path: &Path) {
        let b64 = self.session_call("GET", "/screenshot", None);
        let png = base64_decode(b64.as_str().expect("base64 screenshot"));
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Polls `script` until it returns something other than `false`/`null`, at most `timeout`;
    /// returns that. On timeout, panics with `what` and the script's last answer.
    pub fn wait_for(&self, timeout: Duration, what: &str, script: &str) -> Value {
        let until = Instant::now() + timeout;
        loop {
            let v = self.eval(script);
            if !matches!(v, Value::Null | Value::Bool(false)) {
                return v;
            }
            if Instant::now() >= until {
                let page = self.eval("return document.body ? document.body.innerText : ''");
                panic!("timed out after {timeout:?} waiting for {what}; page text:\n{}", page.as_str().unwrap_or(""));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Starts chromedriver on a free port and waits until it reports ready; a port taken in the
/// meantime makes it exit, and then another port is tried.
fn spawn_driver(bin: &str) -> (Child, u16) {
    for _ in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let mut child = Command::new(bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin}: {e}"));
        let until = Instant::now() + DRIVER_START;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            let ready = Target::parse(&format!("http://127.0.0.1:{port}/status"))
                .ok()
                .and_then(|t| Client::new(t, Duration::from_secs(2)).request("GET", None).ok())
                .and_then(|a| serde_json::from_slice::<Value>(&a.body).ok())
                .is_some_and(|v| v["value"]["ready"] == Value::Bool(true));
            if ready {
                return (child, port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("chromedriver did not start");
}

/// Standard base64 (with padding) to bytes; enough for screenshots.
fn base64_decode(text: &str) -> Vec<u8> {
    fn sextet(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c:?}"),
        }
    }
    let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let data: Vec<u8> = chunk.iter().copied().filter(|&c| c != b'=').collect();
        let mut n = 0u32;
        for (i, &c) in data.iter().enumerate() {
            n |= sextet(c) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..data.len().max(1)]);
    }
    out
}
