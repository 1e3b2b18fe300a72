//! `tools k8s`: redis-api on the cluster of kubectl's current context (what `scripts/k8s.sh`
//! runs): the Secret with generated Redis passwords, the manifests of `k8s/` and of the load-test
//! kit `k8s/loadtest/` with the images `scripts/image.sh` pushed, scaling, a port-forward, load
//! from a pod in the cluster, and removal of all of it. Every command can be re-run. kubectl and
//! openssl run as child processes with argument vectors; a password only ever reaches them in a
//! file or on stdin.

mod bench;
mod overlay;
mod secret;

use super::{REPO, WorkDir};
use anyhow::{Context, Result, bail};
use cli::{Args, Flag, UsageError};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const USAGE: &str = "\
tools k8s: redis-api on the cluster of kubectl's current context (see scripts/gke.sh); each
command can be re-run. scripts/k8s.sh builds this binary and runs it.

Usage: tools k8s COMMAND [ARGS] [FLAGS]     (`tools k8s COMMAND --help` lists its flags)

  secret [--replace]   create the Secret redis-auth (a generated password per Redis ACL user:
                       reader, writer, replication, admin; the ACL files of k8s/acl/), unless it
                       exists; --replace deletes and recreates it (new passwords: restart the
                       master and the API pods after, README \"Security\")
  acl master|replica DIR
                       print that ACL file as secret renders it, from the passwords in
                       DIR/password-read, -write, -replication, -admin (no cluster needed)
  tls-secret [--replace]
                       the Secrets k8s/components/tls/ mounts, made with openssl for clusters
                       without cert-manager: a new CA, the master's certificate (for the names
                       of NAMESPACE), the API pods' client certificate (TLS_DAYS, default 365)
  image REGISTRY TAG   build and push REGISTRY/redis-api:TAG and REGISTRY/redis-api-loadtest:TAG
                       (scripts/image.sh)
  deploy               secret, then apply K8S_DIR (kubectl apply -k) with the last pushed images
                       and its configuration checksums; waits for every workload's rollout
  render               print what deploy would apply (no cluster needed)
  loadtest             apply the load-test kit k8s/loadtest/ with the kit's image (LOADTEST_IMAGE,
                       else the last pushed); waits for each of its Deployments' rollout;
                       PRINT=1 prints what it would apply instead (no cluster needed)
  scale N              keep at least N API pods (the autoscaler's minimum; scale 3 restores it)
  port-forward [PORT]  the Service redis-api on localhost:PORT (default 8080)
  bench wrk|vegeta service|pod [DURATION]
                       load from a one-shot pod in the cluster (deleted after): GET / through the
                       Service redis-api (spread over the ready pods, per connection), or at one
                       ready API pod's own address; DURATION default 30s. Refuses CONNECTIONS at
                       or above MAX_CONNECTIONS x the pods aimed at (README \"Load from wrk or
                       vegeta\"); PRINT=1 prints the pod instead (no cluster needed)
  teardown             delete all of it: the objects of k8s/ and k8s/loadtest/, the Secret,
                       Redis's data volume

Every setting is a flag with an environment twin (NAMESPACE, K8S_DIR, IMAGE, LOADTEST_IMAGE,
REDIS_HASH, REDIS_FIELD, TLS_DAYS, CONNECTIONS, THREADS, RATE, PRINT): see each command's --help.";

const EXIT: &str = "Exit status: 0 done, 1 the command failed, 2 bad arguments.";

const NAMESPACE: Flag = Flag::new("--namespace", "NS", "namespace to use (default: the context's)").env("NAMESPACE");
const K8S_DIR: Flag = Flag::new(
    "--k8s-dir",
    "DIR",
    "the kustomization to deploy, relative to the repository; overlays/tls turns TLS on (README \"Security\")",
)
.env("K8S_DIR")
.default("k8s");
const IMAGE: Flag =
    Flag::new("--image", "NAME:TAG", "the API's image (default: the last one image pushed, else redis-api:0.1.0)")
        .env("IMAGE")
        .accepts("an image NAME:TAG", overlay::is_image_ref);
const LOADTEST_IMAGE: Flag = Flag::new(
    "--loadtest-image",
    "NAME:TAG",
    "the kit's image, for the updater and k8s/loadtest/ (default: the last one image pushed, else redis-api-loadtest:0.1.0)",
)
.env("LOADTEST_IMAGE")
.accepts("an image NAME:TAG", overlay::is_image_ref);
const REDIS_HASH: Flag = Flag::new(
    "--redis-hash",
    "KEY",
    "the hash the API uses, for the ACL users' key and channel; must match the API's --redis-hash",
)
.env("REDIS_HASH")
.default(crate::acl::DEFAULT_HASH)
.accepts("letters, digits and . _ : - only (it becomes an ACL pattern)", crate::acl::safe_name);
const REDIS_FIELD: Flag = Flag::new(
    "--redis-field",
    "FIELD",
    "the field the API uses, for the ACL users' channel; must match the API's --redis-field",
)
.env("REDIS_FIELD")
.default(crate::acl::DEFAULT_FIELD)
.accepts("letters, digits and . _ : - only (it becomes an ACL pattern)", crate::acl::safe_name);
const REPLACE: Flag = Flag::switch("--replace", "delete what exists and make it anew (new passwords or certificates)");
const TLS_DAYS: Flag = Flag::new("--tls-days", "DAYS", "how long the certificates last (the CA ten times as long)")
    .env("TLS_DAYS")
    .default("365")
    .number_in(1, 3650);
const CONNECTIONS: Flag = Flag::new(
    "--connections",
    "N",
    "connections at most (wrk -c; vegeta -max-workers, -connections and -max-connections)",
)
.env("CONNECTIONS")
.default("64")
.number_in(1, 1_000_000);
const THREADS: Flag = Flag::new("--threads", "N", "wrk's threads (-t)").env("THREADS").default("2").number_in(1, 1024);
const RATE: Flag = Flag::new("--rate", "N", "vegeta's requests per second (-rate)")
    .env("RATE")
    .default("1000")
    .number_in(1, 10_000_000);
const PRINT: Flag =
    Flag::switch("--print", "print what would be applied or run, and do nothing (no cluster needed)").env("PRINT");
const REPO_FLAG: Flag = Flag { help: "the repository root (k8s/, scripts/; scripts/k8s.sh passes it)", ..REPO };

/// One command: its name, its arguments as usage shows them and how many it takes (at least, at
/// most), what it does, its flags, and whether it talks to the cluster (checked first: kubectl
/// and a current context).
struct Cmd {
    name: &'static str,
    args: &'static str,
    free: (usize, usize),
    summary: &'static str,
    flags: &'static [Flag],
    cluster: bool,
}

impl Cmd {
    /// `tools k8s NAME ARGS`.
    fn synopsis(&self) -> String {
        format!("tools k8s {} {}", self.name, self.args).trim_end().to_owned()
    }

    fn has(&self, flag: &Flag) -> bool {
        self.flags.iter().any(|f| f.name == flag.name)
    }
}

const COMMANDS: &[Cmd] = &[
    Cmd {
        name: "secret",
        free: (0, 0),
        summary: "the Secret redis-auth, unless it exists",
        args: "[--replace]",
        flags: &[REPLACE, NAMESPACE, REDIS_HASH, REDIS_FIELD, REPO_FLAG],
        cluster: true,
    },
    Cmd {
        name: "acl",
        free: (2, 2),
        summary: "that ACL file from the passwords in DIR/password-*",
        args: "master|replica DIR",
        flags: &[REDIS_HASH, REDIS_FIELD, REPO_FLAG],
        cluster: false,
    },
    Cmd {
        name: "tls-secret",
        free: (0, 0),
        summary: "the TLS Secrets of k8s/components/tls/, made with openssl",
        args: "[--replace]",
        flags: &[REPLACE, NAMESPACE, TLS_DAYS, REPO_FLAG],
        cluster: true,
    },
    Cmd {
        name: "image",
        free: (2, 2),
        summary: "build and push both images (scripts/image.sh)",
        args: "REGISTRY TAG",
        flags: &[REPO_FLAG],
        cluster: false,
    },
    Cmd {
        name: "deploy",
        free: (0, 0),
        summary: "the Secret, then K8S_DIR with the images; waits for every rollout",
        args: "",
        flags: &[NAMESPACE, K8S_DIR, IMAGE, LOADTEST_IMAGE, REDIS_HASH, REDIS_FIELD, REPO_FLAG],
        cluster: true,
    },
    Cmd {
        name: "render",
        free: (0, 0),
        summary: "print what deploy would apply (no cluster needed)",
        args: "",
        flags: &[K8S_DIR, IMAGE, LOADTEST_IMAGE, REPO_FLAG],
        cluster: false,
    },
    Cmd {
        name: "loadtest",
        free: (0, 0),
        summary: "apply k8s/loadtest/ with the kit's image; waits for its rollouts",
        args: "[--print]",
        flags: &[NAMESPACE, LOADTEST_IMAGE, PRINT, REPO_FLAG],
        cluster: true,
    },
    Cmd {
        name: "scale",
        free: (1, 1),
        summary: "keep at least N API pods (N >= 1)",
        args: "N",
        flags: &[NAMESPACE, REPO_FLAG],
        cluster: true,
    },
    Cmd {
        name: "port-forward",
        free: (0, 1),
        summary: "the Service redis-api on localhost:PORT (default 8080)",
        args: "[PORT]",
        flags: &[NAMESPACE, REPO_FLAG],
        cluster: true,
    },
    Cmd {
        name: "bench",
        free: (2, 3),
        summary: "load from a one-shot pod (DURATION default 30s)",
        args: "wrk|vegeta service|pod [DURATION]",
        flags: &[NAMESPACE, CONNECTIONS, THREADS, RATE, PRINT, REPO_FLAG],
        cluster: true,
    },
    Cmd {
        name: "teardown",
        free: (0, 0),
        summary: "delete k8s/, k8s/loadtest/, the Secret and the master's volume",
        args: "",
        flags: &[NAMESPACE, REPO_FLAG],
        cluster: true,
    },
];

fn names() -> String {
    COMMANDS.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
}

pub(super) fn run(mut argv: Vec<OsString>) -> Result<bool> {
    let first = if argv.is_empty() { None } else { Some(argv.remove(0)) };
    let cmd = match first.as_ref().and_then(|a| a.to_str()) {
        Some("-h" | "--help") => {
            println!("{USAGE}\n\n{EXIT}");
            return Ok(true);
        }
        Some("-V" | "--version") => {
            println!("tools {}", env!("CARGO_PKG_VERSION"));
            return Ok(true);
        }
        // The text is not echoed: it may be a password typed in the wrong place.
        Some(name) if !name.starts_with('-') => COMMANDS
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| UsageError(format!("unknown command (one of {}); see tools k8s --help", names())))?,
        _ => return Err(UsageError(format!("a command is required: {}; see tools k8s --help", names())).into()),
    };
    let program = format!("tools k8s {}", cmd.name);
    let usage = format!("{program}: {}\n\nUsage: {} [FLAGS]", cmd.summary, cmd.synopsis());
    let Some(args) = super::parse(&program, &usage, cmd.flags, EXIT, argv, cmd.free.1)? else { return Ok(true) };
    if args.free().len() < cmd.free.0 {
        return Err(UsageError(format!("usage: {}; see {program} --help", cmd.synopsis())).into());
    }
    let k = K8s::new(cmd, &args)?;
    let print = cmd.has(&PRINT) && args.switch(&PRINT)?;
    // Bad arguments are reported before anything asks the cluster.
    check(cmd, &args)?;
    if cmd.cluster && !print {
        need_cluster()?;
    }
    let free = args.free();
    match cmd.name {
        "secret" => secret::secret(&k, &args, args.switch(&REPLACE)?),
        "acl" => secret::acl(&k, &args, &free[0], Path::new(&free[1])),
        "tls-secret" => secret::tls_secret(&k, args.switch(&REPLACE)?, args.number(&TLS_DAYS)?),
        "image" => image(&k, &free[0], &free[1]),
        "deploy" => deploy(&k, &args),
        "render" => {
            let dir = overlay::k8s_dir(&k, &args)?;
            let work = WorkDir::new("k8s")?;
            overlay::write(&k, &work, &dir, &overlay::images(&k, &args, true)?, true)?;
            run_cmd(kubectl(&["kustomize", &work.path().to_string_lossy()]))
        }
        "loadtest" => loadtest(&k, &args, print),
        "scale" => scale(&k, count(&free[0])?),
        "port-forward" => port_forward(&k, port(free.first().map(String::as_str))?),
        "bench" => bench::bench(&k, &args, free, print),
        _ => teardown(&k),
    }?;
    Ok(true)
}

/// What every command shares: the repository root and the namespace.
struct K8s {
    repo: PathBuf,
    namespace: Option<String>,
}

impl K8s {
    fn new(cmd: &Cmd, args: &Args) -> Result<K8s> {
        let repo: PathBuf = args.value(&REPO_FLAG)?;
        let repo = std::fs::canonicalize(&repo).with_context(|| format!("--repo {}", repo.display()))?;
        let namespace = if cmd.has(&NAMESPACE) { args.opt_value(&NAMESPACE)? } else { None };
        Ok(K8s { repo, namespace: namespace.filter(|n: &String| !n.is_empty()) })
    }

    /// kubectl in the namespace `--namespace` (NAMESPACE) names, else the context's.
    fn kc(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        if let Some(ns) = &self.namespace {
            cmd.args(["--namespace", ns]);
        }
        cmd.args(args);
        cmd
    }
}

/// Writes a line to stderr under the program's name (the scripts' `log`).
fn log(line: &str) {
    eprintln!("tools k8s: {line}");
}

/// kubectl without a namespace (for what is not namespaced: kustomize, the version, config).
fn kubectl(args: &[&str]) -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.args(args);
    cmd
}

/// How a command shows in an error: its program and arguments (never a secret: none is ever
/// passed as an argument).
fn shown(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts `cmd`; a missing program is named with how to get it.
fn spawn(cmd: &mut Command) -> Result<std::process::Child> {
    cmd.spawn().map_err(|e| {
        let program = cmd.get_program().to_string_lossy().into_owned();
        if e.kind() == std::io::ErrorKind::NotFound {
            let how = match program.as_str() {
                "kubectl" => "install it, e.g. gcloud components install kubectl",
                "openssl" => "install openssl (it makes the certificates)",
                _ => "install it",
            };
            anyhow::anyhow!("{program} not found: {how}")
        } else {
            anyhow::Error::new(e).context(format!("running {}", shown(cmd)))
        }
    })
}

/// Runs `cmd` with our stdout and stderr; an error when it fails.
fn run_cmd(mut cmd: Command) -> Result<()> {
    let status = spawn(&mut cmd)?.wait().with_context(|| shown(&cmd))?;
    if !status.success() {
        bail!("{} failed ({status})", shown(&cmd));
    }
    Ok(())
}

/// Runs `cmd` with `input` on its stdin (none when `None`) and its stdout captured; its stderr is
/// ours. An error when it fails.
fn read_cmd(mut cmd: Command, input: Option<&str>) -> Result<String> {
    cmd.stdout(Stdio::piped()).stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = spawn(&mut cmd)?;
    if let Some(text) = input {
        let mut stdin = child.stdin.take().context("no stdin")?;
        stdin.write_all(text.as_bytes()).with_context(|| format!("writing to {}", shown(&cmd)))?;
    }
    let out = child.wait_with_output().with_context(|| shown(&cmd))?;
    if !out.status.success() {
        bail!("{} failed ({})", shown(&cmd), out.status);
    }
    String::from_utf8(out.stdout).with_context(|| format!("{}: output not UTF-8", shown(&cmd)))
}

/// kubectl is installed and has a current context.
fn need_cluster() -> Result<()> {
    let mut cmd = kubectl(&["config", "current-context"]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    if !spawn(&mut cmd)?.wait().context("kubectl config current-context")?.success() {
        bail!("kubectl has no current context: scripts/gke.sh up");
    }
    Ok(())
}

/// `image REGISTRY TAG`: scripts/image.sh in this process's place.
fn image(k: &K8s, registry: &str, tag: &str) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let script = k.repo.join("scripts/image.sh");
    let err = Command::new(&script).args([registry, tag]).exec();
    Err(anyhow::Error::new(err).context(script.display().to_string()))
}

/// The oldest Kubernetes minor version (1.x) the manifests need (native sidecars, ...).
const MIN_MINOR: u32 = 32;
/// How long `deploy`, `loadtest` and `scale` wait for each workload's rollout.
const ROLLOUT_TIMEOUT: &str = "--timeout=10m";

/// `deploy`: the Secret, then K8S_DIR through the overlay; waits for every workload it applied.
fn deploy(k: &K8s, args: &Args) -> Result<()> {
    let version = read_cmd(kubectl(&["get", "--raw", "/version"]), None)?;
    let minor = serde_json::from_str::<serde_json::Value>(&version)
        .ok()
        .and_then(|v| v["minor"].as_str().map(|m| m.chars().take_while(char::is_ascii_digit).collect::<String>()))
        .and_then(|m| m.parse::<u32>().ok());
    match minor {
        Some(m) if m >= MIN_MINOR => {}
        m => bail!(
            "the cluster runs Kubernetes 1.{}; k8s/ needs 1.{MIN_MINOR} or later",
            m.map_or("?".to_owned(), |m| m.to_string())
        ),
    }
    secret::secret(k, args, false)?;
    let dir = overlay::k8s_dir(k, args)?;
    let images = overlay::images(k, args, true)?;
    let work = WorkDir::new("k8s")?;
    overlay::write(k, &work, &dir, &images, true)?;
    log(&format!("deploying {} with the images {} and {}", dir.display(), images.api, images.kit));
    apply_and_wait(k, &work, &["deployment.apps/", "statefulset.apps/"])
}

/// `kubectl apply -k` of the overlay in `work`, then the rollout of every object applied whose
/// name starts with one of `kinds` (`deployment.apps/`...). None is an error.
fn apply_and_wait(k: &K8s, work: &WorkDir, kinds: &[&str]) -> Result<()> {
    let applied = read_cmd(k.kc(&["apply", "-k", &work.path().to_string_lossy(), "-o", "name"]), None)?;
    let workloads: Vec<&str> =
        applied.lines().map(str::trim).filter(|l| kinds.iter().any(|kind| l.starts_with(kind))).collect();
    if workloads.is_empty() {
        bail!("kubectl apply -k applied no workload");
    }
    for workload in workloads {
        run_cmd(k.kc(&["rollout", "status", workload, ROLLOUT_TIMEOUT]))?;
    }
    Ok(())
}

/// `loadtest`: k8s/loadtest/ with the kit's image; waits for each of its Deployments. With
/// `print`, prints the render instead.
fn loadtest(k: &K8s, args: &Args, print: bool) -> Result<()> {
    let images = overlay::images(k, args, false)?;
    let work = WorkDir::new("k8s")?;
    overlay::write(k, &work, &k.repo.join("k8s/loadtest"), &images, false)?;
    if print {
        return run_cmd(kubectl(&["kustomize", &work.path().to_string_lossy()]));
    }
    log(&format!("applying k8s/loadtest/ with the image {}", images.kit));
    apply_and_wait(k, &work, &["deployment.apps/"])
}

/// `scale N`'s N: a whole number from 1, without leading zeros.
fn count(n: &str) -> Result<u32, UsageError> {
    Some(n)
        .filter(|n| !n.starts_with('0'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| UsageError("usage: tools k8s scale N (N >= 1)".into()))
}

/// `port-forward`'s PORT, 8080 when not given.
fn port(port: Option<&str>) -> Result<u16, UsageError> {
    port.unwrap_or("8080")
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| UsageError("PORT must be a port number from 1 to 65535".into()))
}

/// Every flag of `cmd` read once as it declares (an error names the flag and its value), and its
/// arguments checked: all that can be wrong before the cluster is asked anything.
fn check(cmd: &Cmd, args: &Args) -> Result<(), UsageError> {
    for flag in cmd.flags {
        match (flag.kind, flag.accepts) {
            (cli::Kind::Switch, _) => drop(args.switch(flag)?),
            (_, cli::Accepts::Number(..)) if args.text(flag).is_some() => drop(args.number::<u64>(flag)?),
            (_, cli::Accepts::Duration(..)) => drop(args.opt_duration(flag)?),
            _ => drop(args.opt_value::<String>(flag)?),
        }
    }
    let free = args.free();
    match cmd.name {
        "scale" => count(&free[0]).map(drop),
        "port-forward" => port(free.first().map(String::as_str)).map(drop),
        "bench" => bench::check(free),
        "acl" if !crate::acl::TEMPLATES.contains(&free[0].as_str()) => {
            Err(UsageError("usage: tools k8s acl master|replica DIR".into()))
        }
        _ => Ok(()),
    }
}

/// `scale N`: the autoscaler's minimum (and maximum, when below) to N, the Deployment to N.
fn scale(k: &K8s, n: u32) -> Result<()> {
    let max = read_cmd(k.kc(&["get", "hpa", "redis-api", "-o", "jsonpath={.spec.maxReplicas}"]), None)?;
    let max: u32 = max.trim().parse().with_context(|| format!("the autoscaler's maxReplicas: {:?}", max.trim()))?;
    let patch = format!(r#"{{"spec":{{"minReplicas":{n},"maxReplicas":{}}}}}"#, max.max(n));
    run_cmd(k.kc(&["patch", "hpa", "redis-api", "--type", "merge", "-p", &patch]))?;
    run_cmd(k.kc(&["scale", "deployment/redis-api", "--replicas", &n.to_string()]))?;
    run_cmd(k.kc(&["rollout", "status", "deployment/redis-api", ROLLOUT_TIMEOUT]))
}

/// `port-forward [PORT]`: kubectl port-forward in this process's place.
fn port_forward(k: &K8s, port: u16) -> Result<()> {
    use std::os::unix::process::CommandExt;
    log(&format!("redis-api on http://localhost:{port} (Ctrl-C stops)"));
    let err = k.kc(&["port-forward", "service/redis-api", &format!("{port}:8080")]).exec();
    Err(anyhow::Error::new(err).context("kubectl port-forward"))
}

/// `teardown`: the objects of k8s/loadtest/ and k8s/, the Secret, and the master's volume
/// claims (a StatefulSet leaves them behind: the master's data goes only here).
fn teardown(k: &K8s) -> Result<()> {
    for dir in ["k8s/loadtest", "k8s"] {
        let dir = k.repo.join(dir);
        run_cmd(k.kc(&["delete", "-k", &dir.to_string_lossy(), "--ignore-not-found", "--wait"]))?;
    }
    run_cmd(k.kc(&["delete", "secret", "redis-auth", "--ignore-not-found"]))?;
    run_cmd(k.kc(&["delete", "pvc", "-l", "app=redis,role=master", "--ignore-not-found"]))
}
