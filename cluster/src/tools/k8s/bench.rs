//! `bench wrk|vegeta service|pod [DURATION]`: wrk or vegeta in a one-shot pod of its own next to
//! the Service (a port-forward would pin one pod and measure the tunnel); streams its report and
//! deletes the pod. Refuses connections at or above the API's cap times the pods aimed at.

use super::{CONNECTIONS, K8s, RATE, THREADS, log, read_cmd, run_cmd};
use anyhow::{Context, Result, bail};
use cli::{Args, UsageError};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The images of the one-shot pods, pinned: Debian's wrk (apt-get at start: the pod needs a way
/// out to deb.debian.org), and vegeta built by `go install` at start (the module proxy and the Go
/// checksum database check what it fetches). Both run as root, for apt-get and the Go cache: a
/// throwaway client, not part of the deployment.
const BENCH_DEBIAN: &str = "debian:bookworm-20251229-slim";
const BENCH_GO: &str = "golang:1.24-bookworm";
const VEGETA_VERSION: &str = "v12.13.0";
/// The API's --max-connections default (README "Connections"), when its Deployment sets none.
const MAX_CONNECTIONS_DEFAULT: u64 = 1024;
/// What `--print` assumes: the autoscaler's minimum of pods behind the Service.
const PRINT_PODS: u64 = 3;
/// How long the pod may take to pull its image and start.
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the pod's status may lag behind the end of its log.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The arguments: wrk or vegeta, service or pod, and a duration such as 30s, 5m or 1h.
pub(super) fn check(free: &[String]) -> Result<(), UsageError> {
    let usage = || UsageError("usage: tools k8s bench wrk|vegeta service|pod [DURATION]".into());
    if !["wrk", "vegeta"].contains(&free[0].as_str()) || !["service", "pod"].contains(&free[1].as_str()) {
        return Err(usage());
    }
    let duration = free.get(2).map_or("30s", String::as_str);
    let valid = duration.len() >= 2
        && duration.ends_with(['s', 'm', 'h'])
        && duration[..duration.len() - 1].chars().all(|c| c.is_ascii_digit())
        && !duration.starts_with('0');
    if !valid {
        return Err(UsageError(format!("DURATION must be like 30s, 5m or 1h, not '{duration}'")));
    }
    Ok(())
}

pub(super) fn bench(k: &K8s, args: &Args, free: &[String], print: bool) -> Result<()> {
    check(free)?;
    let (tool, target) = (free[0].as_str(), free[1].as_str());
    let duration = free.get(2).map_or("30s", String::as_str);
    let conns: u64 = args.number(&CONNECTIONS)?;
    let (url, pods) = aim(k, target, print)?;
    let cap = if print { MAX_CONNECTIONS_DEFAULT } else { cap(k)? };
    // At the cap a new connection displaces an idle one, or waits and gets 503 when every worker
    // is busy: past it the tool measures the queue, not the API. The Service spreads connections
    // at random, so one pod can get well over its share: keep below half of the total.
    if conns >= cap * pods {
        return Err(UsageError(format!(
            "{}={conns} is at or above the cap of {pods} pod(s) x {cap} connections",
            CONNECTIONS.env.unwrap_or(CONNECTIONS.name)
        ))
        .into());
    }
    if conns * 2 > cap * pods {
        log(&format!(
            "warning: CONNECTIONS={conns} is over half of {pods} pod(s) x {cap}: some pods may reach their cap"
        ));
    }
    let (image, script) = if tool == "wrk" {
        let threads: u64 = args.number(&THREADS)?;
        (
            BENCH_DEBIAN,
            format!(
                "apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk >/dev/null &&\n\
                 exec wrk -t {threads} -c {conns} -d {duration} --latency {url}"
            ),
        )
    } else {
        let rate: u64 = args.number(&RATE)?;
        (
            BENCH_GO,
            format!(
                "go install github.com/tsenart/vegeta/v12@{VEGETA_VERSION} &&\n\
                 echo 'GET {url}' | vegeta attack -rate {rate} -duration {duration} -timeout 2s \\\n  \
                 -max-workers {conns} -connections {conns} -max-connections {conns} | vegeta report"
            ),
        )
    };
    let name = format!("bench-{tool}-{}", std::process::id());
    let pod = pod(&name, image, &script);
    if print {
        print!("{pod}");
        return Ok(());
    }
    log(&format!("{tool} against {url} ({pods} pod(s)), {conns} connections, for {duration}"));
    read_cmd(k.kc(&["create", "-f", "-"]), Some(&pod))?;
    let _pod = DeletePod::new(k, &name)?;
    let started = Instant::now();
    let mut phase = String::new();
    while !["Running", "Succeeded", "Failed"].contains(&phase.as_str()) {
        if started.elapsed() > START_TIMEOUT {
            bail!(
                "pod {name} did not start in 5 minutes (phase {}): kubectl describe pod {name}",
                if phase.is_empty() { "unknown" } else { &phase }
            );
        }
        std::thread::sleep(Duration::from_secs(2));
        phase =
            read_cmd(k.kc(&["get", &format!("pod/{name}"), "-o", "jsonpath={.status.phase}"]), None)?.trim().to_owned();
    }
    run_cmd(k.kc(&["logs", "-f", &format!("pod/{name}")]))?;
    // The log ends when the container does; its status may lag by a moment.
    let ended = Instant::now();
    let mut code = String::new();
    while code.is_empty() && ended.elapsed() < EXIT_TIMEOUT {
        code = read_cmd(
            k.kc(&[
                "get",
                &format!("pod/{name}"),
                "-o",
                "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}",
            ]),
            None,
        )?
        .trim()
        .to_owned();
        if code.is_empty() {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    if code != "0" {
        bail!("{tool} exited with status {}", if code.is_empty() { "unknown" } else { &code });
    }
    Ok(())
}

/// Where bench aims and how many API pods share its connections: every ready pod behind the
/// Service, or one pod's own address. With `print`, placeholders (no cluster asked).
fn aim(k: &K8s, target: &str, print: bool) -> Result<(String, u64)> {
    if print {
        return Ok(if target == "service" {
            ("http://redis-api:8080/".into(), PRINT_PODS)
        } else {
            ("http://POD_IP:8080/".into(), 1)
        });
    }
    let listing = read_cmd(
        k.kc(&[
            "get",
            "pods",
            "-l",
            "app=redis-api,role=api",
            "-o",
            r#"jsonpath={range .items[*]}{.status.podIP} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
        ]),
        None,
    )?;
    let ready: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_once(' ').filter(|(ip, status)| !ip.is_empty() && status.trim() == "True"))
        .map(|(ip, _)| ip)
        .collect();
    match (ready.first(), target) {
        (None, _) => bail!("no ready redis-api pod (scripts/k8s.sh deploy first)"),
        (Some(_), "service") => Ok(("http://redis-api:8080/".into(), ready.len() as u64)),
        (Some(ip), _) => Ok((format!("http://{ip}:8080/"), 1)),
    }
}

/// The API's connection cap: MAX_CONNECTIONS of its Deployment, else the server's default.
fn cap(k: &K8s) -> Result<u64> {
    let path =
        r#"jsonpath={.spec.template.spec.containers[?(@.name=="redis-api")].env[?(@.name=="MAX_CONNECTIONS")].value}"#;
    let text = read_cmd(k.kc(&["get", "deployment", "redis-api", "-o", path]), None)?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(MAX_CONNECTIONS_DEFAULT);
    }
    text.parse().with_context(|| format!("the Deployment redis-api's MAX_CONNECTIONS: {text:?}"))
}

/// The one-shot client pod, as YAML: a CPU request, so the client gets its share of a node;
/// 1 GiB, for `go install` building vegeta; no service account token; it never restarts.
fn pod(name: &str, image: &str, script: &str) -> String {
    // The script as a YAML block: every line indented under `- |`.
    let indent = "            ";
    let script: String = script.lines().map(|l| format!("{indent}{l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: bench, role: bench}}\nspec:\n  \
         restartPolicy: Never\n  automountServiceAccountToken: false\n  enableServiceLinks: false\n  containers:\n    \
         - name: bench\n      image: {image}\n      command:\n        - sh\n        - -c\n        - |\n{script}      \
         resources:\n        requests: {{cpu: \"1\", memory: 1Gi}}\n        limits: {{memory: 1Gi}}\n"
    )
}

/// Deletes the bench pod when dropped, and on SIGINT/SIGTERM (then exits 130/143).
struct DeletePod {
    namespace: Option<String>,
    name: String,
}

impl DeletePod {
    fn new(k: &K8s, name: &str) -> Result<DeletePod> {
        let guard = DeletePod { namespace: k.namespace.clone(), name: name.to_owned() };
        let (namespace, name) = (guard.namespace.clone(), guard.name.clone());
        crate::tools::on_signal(move |sig| {
            delete(namespace.as_deref(), &name);
            std::process::exit(128 + sig);
        })?;
        Ok(guard)
    }
}

impl Drop for DeletePod {
    fn drop(&mut self) {
        delete(self.namespace.as_deref(), &self.name);
    }
}

fn delete(namespace: Option<&str>, name: &str) {
    let k = K8s { repo: Default::default(), namespace: namespace.map(str::to_owned) };
    let mut cmd = k.kc(&["delete", "pod", name, "--ignore-not-found", "--wait=false"]);
    let _ = cmd.stdout(Stdio::null()).status();
}
