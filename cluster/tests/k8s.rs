//! `tools k8s` (what `scripts/k8s.sh` runs) without a cluster: its renders through the real
//! `kubectl kustomize` (offline, an empty kubeconfig) checked by `tools manifests --render`, the
//! bench pods it prints, its argument errors, and what deploy, loadtest, scale and teardown ask
//! of a stand-in `kubectl` that records every command line and stdin.

use local_cluster::manifests;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use yaml_rust2::{Yaml, YamlLoader};

const API: &str = "registry.example/p/redis-api:0.0.1";
const KIT: &str = "registry.example/p/redis-api-loadtest:0.0.1";
/// The settings `tools k8s` reads from the environment; cleared so the caller's cannot leak in.
const ENV: &[&str] = &[
    "NAMESPACE",
    "K8S_DIR",
    "IMAGE",
    "LOADTEST_IMAGE",
    "REDIS_HASH",
    "REDIS_FIELD",
    "TLS_DAYS",
    "CONNECTIONS",
    "THREADS",
    "RATE",
    "PRINT",
];

/// Environment settings of one run.
type Env<'a> = &'a [(&'a str, &'a str)];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// `tools k8s ARGS --repo REPO` with `env` (and nothing else of ours), an empty kubeconfig, and
/// `path_first` (the stand-in's folder) first on PATH when given.
fn k8s(args: &[&str], env: &[(&str, &str)], repo: &Path, path_first: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tools"));
    cmd.arg("k8s").args(args).arg("--repo").arg(repo).env("KUBECONFIG", "/dev/null");
    for name in ENV {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().copied());
    if let Some(dir) = path_first {
        cmd.env("PATH", format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default()));
    }
    cmd.stdin(Stdio::null()).output().expect("tools runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `tools manifests --render IMAGES` on `render`: whether every rule held, and its report.
fn render_rules_hold(render: &str, images: &[&str]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tools"))
        .args(["manifests", "--render"])
        .args(images)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("tools manifests");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), render.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), text(&out.stdout))
}

/// The images of every container of every workload in a YAML stream, by workload.
fn images(render: &str) -> Vec<(String, Vec<String>)> {
    let docs = YamlLoader::load_from_str(render).expect("the render is YAML");
    docs.iter()
        .filter(|d| ["Deployment", "StatefulSet"].contains(&d["kind"].as_str().unwrap_or("")))
        .map(|d| {
            let spec = &d["spec"]["template"]["spec"];
            let images = ["initContainers", "containers"]
                .iter()
                .flat_map(|k| spec[*k].as_vec().cloned().unwrap_or_default())
                .filter_map(|c| c["image"].as_str().map(str::to_owned))
                .collect();
            (format!("{}/{}", d["kind"].as_str().unwrap(), d["metadata"]["name"].as_str().unwrap()), images)
        })
        .collect()
}

/// `render`, for k8s/ and for overlays/tls: the rules of a render hold with the two images
/// given, and both images replace the manifests' own names.
#[test]
fn render_overrides_both_images() {
    for dir in ["k8s", "overlays/tls"] {
        let out = k8s(&["render"], &[("IMAGE", API), ("LOADTEST_IMAGE", KIT), ("K8S_DIR", dir)], &repo(), None);
        assert!(out.status.success(), "render {dir}: {}", text(&out.stderr));
        let render = text(&out.stdout);
        let (ok, report) = render_rules_hold(&render, &[API, KIT]);
        assert!(ok, "{dir}: {report}");
        let all: Vec<String> = images(&render).into_iter().flat_map(|(_, i)| i).collect();
        assert!(all.iter().any(|i| i == API) && all.iter().any(|i| i == KIT), "{dir}: {all:?}");
        assert!(!all.iter().any(|i| i.starts_with("redis-api")), "{dir}: an image not overridden: {all:?}");
    }
}

/// `loadtest --print` (PRINT=1): k8s/loadtest/ with the kit's image in every container of each
/// of its three Deployments, from LOADTEST_IMAGE, else from the second line of .k8s-image.
#[test]
fn loadtest_print_overrides_the_kit_image() {
    let kit_deployments = manifests::load_dir(&repo().join("k8s/loadtest"))
        .unwrap()
        .into_iter()
        .filter(|o| o.kind() == "Deployment")
        .count();
    assert_eq!(kit_deployments, 3, "loadgen, aggregator, hello-world");
    // A copy of the repository's k8s/ with a .k8s-image, for the image pushed last.
    let pushed = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("k8s"), &pushed.path().join("k8s"));
    std::fs::write(pushed.path().join(".k8s-image"), "r.example/x/redis-api:7\nr.example/x/redis-api-loadtest:7\n")
        .unwrap();
    let cases: [(Env, &Path, &str); 3] = [
        (&[("PRINT", "1"), ("LOADTEST_IMAGE", KIT)], &repo(), KIT),
        (&[("PRINT", "1")], pushed.path(), "r.example/x/redis-api-loadtest:7"),
        (&[("PRINT", "1"), ("LOADTEST_IMAGE", KIT)], pushed.path(), KIT),
    ];
    for (env, repo, kit) in cases {
        let out = k8s(&["loadtest"], env, repo, None);
        assert!(out.status.success(), "loadtest --print: {}", text(&out.stderr));
        let render = text(&out.stdout);
        let workloads = images(&render);
        assert_eq!(workloads.len(), kit_deployments, "{render}");
        for (name, images) in &workloads {
            assert!(name.starts_with("Deployment/") && !images.is_empty(), "{name}");
            assert!(images.iter().all(|i| i == kit), "{name}: {images:?}, wanted {kit}");
        }
        let (ok, report) = render_rules_hold(&render, &[kit]);
        assert!(ok, "{report}");
    }
    let out = k8s(&["loadtest", "--print"], &[("LOADTEST_IMAGE", KIT)], &repo(), None);
    assert!(out.status.success() && text(&out.stdout).contains(&format!("image: {KIT}")), "--print as a flag");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `bench` with PRINT=1 prints the one-shot pod for wrk and for vegeta (the tool's command line
/// with the settings, at the Service or a pod's address), and refuses CONNECTIONS at or above the
/// cap x the pods aimed at (3 behind the Service, 1 for a pod), exit 2 in one line.
#[test]
fn bench_prints_the_pod_and_refuses_too_many_connections() {
    let pod = |args: &[&str], env: &[(&str, &str)]| -> (Yaml, String) {
        let mut with_print = vec![("PRINT", "1")];
        with_print.extend_from_slice(env);
        let out = k8s(args, &with_print, &repo(), None);
        assert!(out.status.success(), "bench {args:?}: {}", text(&out.stderr));
        let doc = YamlLoader::load_from_str(&text(&out.stdout)).expect("a pod in YAML").remove(0);
        assert_eq!(doc["kind"].as_str(), Some("Pod"));
        assert_eq!(doc["spec"]["restartPolicy"].as_str(), Some("Never"));
        let script = doc["spec"]["containers"][0]["command"][2].as_str().expect("sh -c SCRIPT").to_owned();
        (doc, script)
    };
    let (doc, script) = pod(&["bench", "wrk", "service"], &[]);
    assert_eq!(doc["spec"]["containers"][0]["image"].as_str(), Some("debian:bookworm-20251229-slim"));
    assert!(script.contains("exec wrk -t 2 -c 64 -d 30s --latency http://redis-api:8080/"), "{script}");
    let (doc, script) =
        pod(&["bench", "vegeta", "pod", "60s"], &[("RATE", "5000"), ("CONNECTIONS", "512"), ("THREADS", "9")]);
    assert_eq!(doc["spec"]["containers"][0]["image"].as_str(), Some("golang:1.24-bookworm"));
    assert!(script.contains("echo 'GET http://POD_IP:8080/' | vegeta attack -rate 5000 -duration 60s"), "{script}");
    assert!(script.contains("-max-workers 512 -connections 512 -max-connections 512 | vegeta report"), "{script}");
    let (_, script) = pod(&["bench", "wrk", "pod", "5m"], &[("CONNECTIONS", "1023"), ("THREADS", "4")]);
    assert!(script.contains("wrk -t 4 -c 1023 -d 5m --latency http://POD_IP:8080/"), "{script}");
    for (target, conns, pods) in [("service", "3072", 3), ("service", "9999", 3), ("pod", "1024", 1)] {
        let out = k8s(&["bench", "wrk", target], &[("PRINT", "1"), ("CONNECTIONS", conns)], &repo(), None);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{target} {conns}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("CONNECTIONS={conns} is at or above the cap of {pods} pod(s) x 1024")), "{err}");
        assert!(out.stdout.is_empty(), "no pod printed");
    }
}

/// Bad arguments exit 2 with one line, before any kubectl is needed.
#[test]
fn bad_arguments_exit_2_in_one_line() {
    let cases: &[(&[&str], Env, &str)] = &[
        (&[], &[], "a command is required: secret, acl"),
        (&["sideways"], &[], "unknown command"),
        (&["scale"], &[], "usage: tools k8s scale N"),
        (&["scale", "0"], &[], "usage: tools k8s scale N (N >= 1)"),
        (&["scale", "3", "4"], &[], "not expected here"),
        (&["acl", "master"], &[], "usage: tools k8s acl master|replica DIR"),
        (&["acl", "other", "/tmp"], &[], "usage: tools k8s acl master|replica DIR"),
        (&["acl", "master", "/tmp"], &[("REDIS_HASH", "cur*")], "REDIS_HASH"),
        (&["secret", "--bogus"], &[], "--bogus"),
        (&["port-forward", "http"], &[], "PORT must be a port number"),
        (&["bench", "ab", "service"], &[("PRINT", "1")], "usage: tools k8s bench wrk|vegeta"),
        (&["bench", "wrk", "node"], &[("PRINT", "1")], "usage: tools k8s bench wrk|vegeta"),
        (&["bench", "wrk", "pod", "30"], &[("PRINT", "1")], "DURATION must be like 30s"),
        (&["bench", "wrk", "pod"], &[("PRINT", "1"), ("CONNECTIONS", "0")], "CONNECTIONS"),
        (&["bench", "vegeta", "pod"], &[("PRINT", "1"), ("RATE", "fast")], "RATE"),
        (&["render"], &[("IMAGE", "no-tag")], "IMAGE"),
        (&["render"], &[("K8S_DIR", "nowhere")], "K8S_DIR"),
        (&["tls-secret"], &[("TLS_DAYS", "0")], "TLS_DAYS"),
    ];
    for (args, env, wanted) in cases {
        let out = k8s(args, env, &repo(), None);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "tools k8s {args:?} {env:?}: {err}");
        assert_eq!(err.lines().count(), 1, "tools k8s {args:?}: one line: {err}");
        assert!(err.contains(wanted), "tools k8s {args:?} {env:?}: {err}");
    }
}

/// A stand-in `kubectl` in a folder of its own: it appends each command line to `argv`, what it
/// reads on stdin (`-f -`) to `stdin`, and the kustomization of `apply -k DIR` to `overlays`; it
/// answers the queries the commands make: a context, the server's version (1.$MINOR), the
/// objects `apply -k` applied (the file `apply`), the autoscaler's maximum (10), any Deployment
/// asked for by name (it exists), the Secret
/// redis-auth when $SECRET_KEYS names its keys, and for bench: two ready API pods of three, a pod
/// that has finished, its log, its exit code ($EXIT_CODE, default 0).
struct StandIn {
    dir: tempfile::TempDir,
}

const STAND_IN: &str = r#"#!/bin/sh
rec=$(dirname "$0")
printf '%s\n' "$*" >>"$rec/argv"
prev=""
for a in "$@"; do
  if [ "$a" = "-" ] && [ "$prev" = "-f" ]; then printf '%s\n' '--- stdin' >>"$rec/stdin"; cat >>"$rec/stdin"; fi
  if [ "$prev" = "-k" ] && [ -f "$a/kustomization.yaml" ]; then cat "$a/kustomization.yaml" >>"$rec/overlays"; fi
  prev=$a
done
case "$*" in
  "config current-context") echo stand-in ;;
  "get --raw /version") printf '{"major": "1", "minor": "%s"}\n' "${MINOR:-32}" ;;
  *"apply -k "*) cat "$rec/apply" ;;
  *"get hpa redis-api -o jsonpath={.spec.maxReplicas}") printf 10 ;;
  *"get deployment "*" --ignore-not-found -o name") echo deployment.apps/found ;;
  *"get secret redis-auth --ignore-not-found -o name") if [ -n "${SECRET_KEYS:-}" ]; then echo secret/redis-auth; fi ;;
  *"get secret redis-auth -o go-template="*) printf '%s\n' $SECRET_KEYS ;;
  *"get pods -l app=redis-api,role=api "*) printf '10.0.0.1 True\n10.0.0.2 False\n10.0.0.3 True\n' ;;
  *"jsonpath={.status.phase}") echo Succeeded ;;
  *"logs -f pod/"*) echo "Requests/sec: 1234" ;;
  *"state.terminated.exitCode}") echo "${EXIT_CODE:-0}" ;;
esac
exit 0
"#;

impl StandIn {
    /// The stand-in; `apply -k` answers with `applied`, one object name a line.
    fn new(applied: &str) -> StandIn {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("kubectl");
        std::fs::write(&bin, STAND_IN).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("apply"), applied).unwrap();
        StandIn { dir }
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        k8s(args, env, &repo(), Some(self.dir.path()))
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// The command lines it was given, one per call.
    fn argv(&self) -> Vec<String> {
        self.read("argv").lines().map(str::to_owned).collect()
    }

    /// Whether it was given exactly `line`.
    fn ran(&self, line: &str) -> bool {
        self.argv().iter().any(|l| l == line)
    }
}

/// `deploy` (NAMESPACE set): checks the server's version, creates the Secret from stdin with
/// every key the example Secret has (no password in any command line, nor in the overlay),
/// applies the overlay (base k8s/, both images, the ConfigMaps' checksums) and waits for every
/// Deployment and StatefulSet it applied, and only for those. A Secret that exists is kept; one
/// of the old layout, or a server older than 1.32, fails the deploy.
#[test]
fn deploy_creates_the_secret_applies_the_overlay_and_waits() {
    let applied = "deployment.apps/redis-api\ndeployment.apps/updater\nstatefulset.apps/redis-master\n\
                   service/redis-api\nconfigmap/redis-master-config\nhorizontalpodautoscaler.autoscaling/redis-api\n";
    let kc = StandIn::new(applied);
    let env = [("NAMESPACE", "ns1"), ("IMAGE", API), ("LOADTEST_IMAGE", KIT)];
    let out = kc.run(&["deploy"], &env);
    assert!(out.status.success(), "deploy: {}", text(&out.stderr));
    let argv = kc.argv();
    assert!(kc.ran("get --raw /version"), "{argv:?}");
    assert!(kc.ran("--namespace ns1 create -f -"), "{argv:?}");
    // The Secret, as sent on stdin: the example's keys, a password per ACL user.
    let stdin = kc.read("stdin");
    let secret: serde_json::Value =
        serde_json::from_str(stdin.trim_start_matches("--- stdin").trim()).expect("one Secret in JSON");
    assert_eq!(secret["metadata"]["name"], "redis-auth");
    let data = secret["stringData"].as_object().expect("stringData");
    let example = manifests::load_dir(&repo().join("k8s/examples")).unwrap();
    let example = manifests::find(&example, "Secret", "redis-auth").unwrap();
    let mut wanted: Vec<&str> =
        example.doc["stringData"].as_hash().unwrap().keys().filter_map(|k| k.as_str()).collect();
    let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
    wanted.sort();
    keys.sort();
    assert_eq!(keys, wanted);
    let overlays = kc.read("overlays");
    let everything_else = format!("{}\n{overlays}\n{}\n{}", kc.read("argv"), text(&out.stdout), text(&out.stderr));
    for key in ["password-read", "password-write", "password-replication", "password-admin"] {
        let password = data[key].as_str().unwrap();
        assert_eq!(password.len(), 48, "{key}: 24 random bytes in hex");
        assert!(!everything_else.contains(password), "the {key} password left stdin");
    }
    // The overlay, then the rollouts.
    let apply = argv.iter().find(|l| l.starts_with("--namespace ns1 apply -k ")).expect("apply -k");
    assert!(apply.ends_with(" -o name"), "{apply}");
    assert!(overlays.contains("resources:\n  - ../") && overlays.contains("/k8s\n"), "{overlays}");
    for (name, image) in [("redis-api", API), ("redis-api-loadtest", KIT)] {
        let (new_name, tag) = image.rsplit_once(':').unwrap();
        let entry = format!("  - name: {name}\n    newName: \"{new_name}\"\n    newTag: \"{tag}\"\n");
        assert!(overlays.contains(&entry), "{overlays}");
    }
    assert_eq!(overlays.matches("redis-api/config-checksum").count(), 2, "the master and the API pods: {overlays}");
    let rollouts: Vec<&String> = argv.iter().filter(|l| l.contains(" rollout status ")).collect();
    let wanted: Vec<String> = ["deployment.apps/redis-api", "deployment.apps/updater", "statefulset.apps/redis-master"]
        .iter()
        .map(|w| format!("--namespace ns1 rollout status {w} --timeout=10m"))
        .collect();
    assert_eq!(rollouts, wanted.iter().collect::<Vec<_>>());
    let apply_at = argv.iter().position(|l| l.contains(" apply -k ")).unwrap();
    let create_at = argv.iter().position(|l| l.contains(" create -f -")).unwrap();
    assert!(create_at < apply_at, "the Secret before the workloads that mount it: {argv:?}");

    // Again with the Secret there: kept, nothing created.
    let kc = StandIn::new(applied);
    let keys = "master.acl password-read password-write password-replication password-admin replica.acl";
    let out = kc.run(&["deploy"], &[("SECRET_KEYS", keys), ("IMAGE", API), ("LOADTEST_IMAGE", KIT)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("Secret redis-auth exists: keeping its passwords"));
    assert!(!kc.argv().iter().any(|l| l.contains("create") || l.contains("delete")), "{:?}", kc.argv());
    assert!(kc.argv().iter().any(|l| l.contains("rollout status statefulset.apps/redis-master")));

    // The old layout, or an old server: nothing applied, exit 1 in one line.
    for env in [[("SECRET_KEYS", "auth.conf password")], [("MINOR", "31")]] {
        let kc = StandIn::new(applied);
        let out = kc.run(&["deploy"], &env);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{env:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("old layout") || err.contains("Kubernetes 1.31; k8s/ needs 1.32"), "{err}");
        assert!(!kc.argv().iter().any(|l| l.contains("apply") || l.contains("create")), "{:?}", kc.argv());
    }
}

/// `secret --replace` with a Secret there: deleted, then created anew from stdin.
#[test]
fn secret_replace_recreates_it() {
    let kc = StandIn::new("");
    let out = kc.run(&["secret", "--replace"], &[("SECRET_KEYS", "master.acl")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let argv = kc.argv();
    let delete = argv.iter().position(|l| l == "delete secret redis-auth").expect("deleted");
    let create = argv.iter().position(|l| l == "create -f -").expect("created");
    assert!(delete < create, "{argv:?}");
    assert!(kc.read("stdin").contains("\"master.acl\""));
}

/// `teardown` deletes the objects of k8s/loadtest/ and of k8s/, the Secret and the master's
/// volume claims, each ignoring what is not there.
#[test]
fn teardown_deletes_everything() {
    let kc = StandIn::new("");
    let out = kc.run(&["teardown"], &[("NAMESPACE", "ns2")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = repo();
    for line in [
        format!("--namespace ns2 delete -k {} --ignore-not-found --wait", r.join("k8s/loadtest").display()),
        format!("--namespace ns2 delete -k {} --ignore-not-found --wait", r.join("k8s").display()),
        "--namespace ns2 delete secret redis-auth --ignore-not-found".to_owned(),
        "--namespace ns2 delete pvc -l app=redis,role=master --ignore-not-found".to_owned(),
    ] {
        assert!(kc.ran(&line), "{line} not in {:?}", kc.argv());
    }
}

/// `scale N` raises the autoscaler's minimum (and its maximum when N is above it), scales the
/// Deployment and waits for it.
#[test]
fn scale_sets_the_autoscaler_and_waits() {
    for (n, max) in [("20", 20), ("5", 10)] {
        let kc = StandIn::new("");
        let out = kc.run(&["scale", n], &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(
            kc.argv()[1..],
            [
                "get hpa redis-api -o jsonpath={.spec.maxReplicas}".to_owned(),
                format!(r#"patch hpa redis-api --type merge -p {{"spec":{{"minReplicas":{n},"maxReplicas":{max}}}}}"#),
                format!("scale deployment/redis-api --replicas {n}"),
                "rollout status deployment/redis-api --timeout=10m".to_owned(),
            ]
        );
    }
}

/// `loadtest` applies k8s/loadtest/ through an overlay that sets the kit's image, and waits for
/// each Deployment it applied.
#[test]
fn loadtest_applies_the_kit_and_waits() {
    let applied = "deployment.apps/loadgen\ndeployment.apps/aggregator\ndeployment.apps/hello-world\n\
                   service/loadgen\nservice/aggregator\nservice/hello-world\n";
    let kc = StandIn::new(applied);
    let out = kc.run(&["loadtest"], &[("LOADTEST_IMAGE", KIT)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let overlays = kc.read("overlays");
    assert!(overlays.contains("/k8s/loadtest\n"), "{overlays}");
    let (new_name, tag) = KIT.rsplit_once(':').unwrap();
    let entry = format!("  - name: redis-api-loadtest\n    newName: \"{new_name}\"\n    newTag: \"{tag}\"\n");
    assert!(overlays.contains(&entry), "{overlays}");
    assert!(!overlays.contains("name: redis-api\n"), "the kit runs no API: {overlays}");
    let rollouts: Vec<String> = kc.argv().into_iter().filter(|l| l.starts_with("rollout status ")).collect();
    assert_eq!(
        rollouts,
        ["loadgen", "aggregator", "hello-world"].map(|d| format!("rollout status deployment.apps/{d} --timeout=10m"))
    );
    assert!(kc.argv()[1].starts_with("apply -k "), "{:?}", kc.argv());
}

/// `tls-secret` (NAMESPACE set, none there yet): two Secrets of type kubernetes.io/tls made with
/// openssl and sent on stdin, the master's certificate naming the master in that namespace and
/// signed by the CA both carry; no key in any command line.
#[test]
fn tls_secret_creates_both_secrets() {
    let kc = StandIn::new("");
    let out = kc.run(&["tls-secret"], &[("NAMESPACE", "ns3"), ("TLS_DAYS", "30")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdin = kc.read("stdin");
    let secrets: Vec<serde_json::Value> = stdin
        .split("--- stdin")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_json::from_str(d.trim()).expect("a Secret in JSON"))
        .collect();
    let names: Vec<&str> = secrets.iter().map(|s| s["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["redis-master-tls", "redis-client-tls"]);
    let dir = tempfile::tempdir().unwrap();
    for s in &secrets {
        assert_eq!(s["type"], "kubernetes.io/tls");
        assert_eq!(s["metadata"]["labels"]["app.kubernetes.io/part-of"], "redis-api");
        for key in ["tls.crt", "tls.key", "ca.crt"] {
            let value = s["stringData"][key].as_str().unwrap_or("");
            assert!(value.starts_with("-----BEGIN "), "{key}");
            std::fs::write(dir.path().join(key), value).unwrap();
        }
        assert!(!kc.read("argv").contains("PRIVATE KEY"), "a key in a command line");
        let verify = Command::new("openssl")
            .args(["verify", "-CAfile", "ca.crt", "tls.crt"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(verify.status.success(), "{}", text(&verify.stderr));
    }
    let master = &secrets[0]["stringData"]["tls.crt"];
    std::fs::write(dir.path().join("master.crt"), master.as_str().unwrap()).unwrap();
    let shown = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", "master.crt"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let shown = text(&shown.stdout);
    assert!(shown.contains("DNS:redis-master.ns3.svc.cluster.local"), "{shown}");
    assert!(kc.ran("--namespace ns3 get secret redis-master-tls redis-client-tls --ignore-not-found -o name"));
}

/// `bench` on a cluster: aims at the ready pods only (2 of 3 behind the Service, the first
/// ready one for `pod`), reads the cap from the Deployment, creates the pod from stdin, streams
/// its log to stdout, deletes the pod, and fails when the tool did.
#[test]
fn bench_runs_the_pod_streams_its_log_and_deletes_it() {
    let kc = StandIn::new("");
    let out = kc.run(&["bench", "wrk", "service", "10s"], &[("CONNECTIONS", "100")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Requests/sec: 1234\n");
    assert!(text(&out.stderr).contains("wrk against http://redis-api:8080/ (2 pod(s)), 100 connections"));
    let argv = kc.argv();
    let name = format!("bench-wrk-{}", argv.iter().find_map(|l| l.strip_prefix("logs -f pod/bench-wrk-")).unwrap());
    assert!(kc.read("stdin").contains(&format!("name: {name}\n")));
    assert!(argv.iter().any(|l| l.starts_with("get deployment redis-api -o jsonpath=")), "{argv:?}");
    assert_eq!(argv.last().unwrap(), &format!("delete pod {name} --ignore-not-found --wait=false"));
    // 2 ready pods x 1024: 2048 is refused; at one pod's address, the first ready one.
    let out = kc.run(&["bench", "wrk", "service"], &[("CONNECTIONS", "2048")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let kc = StandIn::new("");
    let out = kc.run(&["bench", "vegeta", "pod"], &[("EXIT_CODE", "3")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("vegeta exited with status 3"), "{}", text(&out.stderr));
    assert!(kc.read("stdin").contains("echo 'GET http://10.0.0.1:8080/'"));
    assert!(kc.argv().last().unwrap().starts_with("delete pod bench-vegeta-"));
}

/// `scripts/image.sh REGISTRY TAG` (the engine a stand-in that records its command lines):
/// builds and pushes both images, records them in .k8s-image for deploy and loadtest, and rolls
/// every Deployment of ours that exists to its image: the API's, and the kit's for the updater,
/// loadgen, aggregator and hello-world (the kit's own Deployments kept their old image before).
#[test]
fn image_push_rolls_every_deployment_of_ours() {
    use std::os::unix::fs::PermissionsExt;
    let kc = StandIn::new("");
    // A repository of its own: image.sh writes .k8s-image at the root it runs from.
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("scripts")).unwrap();
    for f in ["lib.sh", "image.sh"] {
        std::fs::copy(repo().join("scripts").join(f), root.path().join("scripts").join(f)).unwrap();
    }
    let engine = kc.dir.path().join("engine");
    std::fs::write(&engine, "#!/bin/sh\nprintf '%s\\n' \"$*\" >>\"$(dirname \"$0\")/engine-argv\"\n").unwrap();
    std::fs::set_permissions(&engine, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(root.path().join("scripts/image.sh"))
        .args(["r.example/p", "9"])
        .env("CONTAINER_ENGINE", &engine)
        .env("PATH", format!("{}:{}", kc.dir.path().display(), std::env::var("PATH").unwrap_or_default()))
        .env("KUBECONFIG", "/dev/null")
        .env_remove("NAMESPACE")
        .stdin(Stdio::null())
        .output()
        .expect("image.sh runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (api, kit) = ("r.example/p/redis-api:9", "r.example/p/redis-api-loadtest:9");
    let built = kc.read("engine-argv");
    for push in [format!("push {api}"), format!("push {kit}")] {
        assert!(built.lines().any(|l| l == push), "{push} not in {built}");
    }
    let recorded = std::fs::read_to_string(root.path().join(".k8s-image")).unwrap();
    assert_eq!(recorded, format!("{api}\n{kit}\n"));
    for (deployment, image) in
        [("redis-api", api), ("updater", kit), ("loadgen", kit), ("aggregator", kit), ("hello-world", kit)]
    {
        let set = format!("set image deployment/{deployment} {deployment}={image}");
        assert!(kc.ran(&set), "{set} not in {:?}", kc.argv());
        assert!(kc.ran(&format!("rollout status deployment/{deployment} --timeout=10m")), "{:?}", kc.argv());
    }
}
