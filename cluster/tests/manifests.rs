//! Cross-checks of `k8s/` against each other and against the code: selectors, named ports,
//! env names, probe paths, Secret and ConfigMap keys, and the Redis configs run for real; and
//! the project's rules (`local_cluster::rules`, `tools manifests`) on `k8s/` and on broken fixtures.

use local_cluster::acl;
use local_cluster::manifests::{self, EnvValue, Object, container_env};
use local_cluster::rules;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use yaml_rust2::Yaml;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

fn objects() -> Vec<Object> {
    manifests::load_dir(&repo().join("k8s")).expect("k8s/ parses")
}

fn examples() -> Vec<Object> {
    manifests::load_dir(&repo().join("k8s/examples")).expect("k8s/examples parses")
}

fn labels(y: &Yaml) -> BTreeMap<String, String> {
    y.as_hash()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str().unwrap_or("").to_owned(), v.as_str().unwrap_or("").to_owned()))
        .collect()
}

fn subset(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    !a.is_empty() && a.iter().all(|(k, v)| b.get(k) == Some(v))
}

fn workloads(objs: &[Object]) -> Vec<&Object> {
    objs.iter().filter(|o| o.pod_spec().is_some()).collect()
}

/// Workloads whose pod template labels `selector` selects.
fn selected<'a>(objs: &'a [Object], selector: &BTreeMap<String, String>) -> Vec<&'a Object> {
    workloads(objs)
        .into_iter()
        .filter(|w| subset(selector, &labels(&w.doc["spec"]["template"]["metadata"]["labels"])))
        .collect()
}

/// Every workload's selector matches its own pod template; every Service, PDB, HPA target and
/// NetworkPolicy selects an existing workload.
#[test]
fn selectors_match_templates() {
    let objs = objects();
    assert!(workloads(&objs).len() >= 2, "the master StatefulSet and the API Deployment");
    for w in workloads(&objs) {
        let sel = labels(&w.doc["spec"]["selector"]["matchLabels"]);
        let tpl = labels(&w.doc["spec"]["template"]["metadata"]["labels"]);
        assert!(subset(&sel, &tpl), "{}: selector {sel:?} not in template labels {tpl:?}", w.name());
    }
    for o in &objs {
        let sel = match o.kind() {
            "Service" => labels(&o.doc["spec"]["selector"]),
            "PodDisruptionBudget" => labels(&o.doc["spec"]["selector"]["matchLabels"]),
            "NetworkPolicy" => labels(&o.doc["spec"]["podSelector"]["matchLabels"]),
            "HorizontalPodAutoscaler" => {
                let target = &o.doc["spec"]["scaleTargetRef"];
                let kind = target["kind"].as_str().unwrap_or("");
                let name = target["name"].as_str().unwrap_or("");
                manifests::find(&objs, kind, name).unwrap_or_else(|e| panic!("{}: {e}", o.name()));
                let container = o.doc["spec"]["metrics"][0]["containerResource"]["container"].as_str();
                if let Some(c) = container {
                    assert!(manifests::find(&objs, kind, name).unwrap().container(c).is_some(), "HPA container {c}");
                }
                continue;
            }
            _ => continue,
        };
        assert!(!selected(&objs, &sel).is_empty(), "{} {} selects no pods: {sel:?}", o.kind(), o.name());
    }
}

/// Service ports target container ports that exist (by name or number) in the selected pods.
#[test]
fn services_target_existing_ports() {
    let objs = objects();
    let services: Vec<&Object> = objs.iter().filter(|o| o.kind() == "Service").collect();
    assert!(services.iter().any(|s| s.name() == "redis-master") && services.iter().any(|s| s.name() == "redis-api"));
    for svc in services {
        let pods = selected(&objs, &labels(&svc.doc["spec"]["selector"]));
        for port in svc.doc["spec"]["ports"].as_vec().expect("ports") {
            let target = &port["targetPort"];
            let found = pods
                .iter()
                .flat_map(|w| w.containers())
                .flat_map(|c| c["ports"].as_vec().cloned().unwrap_or_default())
                .any(|p| match target {
                    Yaml::String(name) => p["name"].as_str() == Some(name.as_str()),
                    Yaml::Integer(n) => p["containerPort"].as_i64() == Some(*n),
                    _ => p["containerPort"].as_i64() == port["port"].as_i64(),
                });
            assert!(found, "Service {} port {:?} targets no container port", svc.name(), target);
        }
    }
}

/// The API container's env names are ones the server (or run.sh) reads; the addresses are the
/// pod's loopback replica and the master Service.
#[test]
fn api_env_is_understood() {
    let objs = objects();
    let api = manifests::find(&objs, "Deployment", "redis-api").unwrap().container("redis-api").expect("API container");
    let mut known: Vec<String> = redis_api::config::FLAGS.iter().filter_map(|f| f.env.map(str::to_owned)).collect();
    for s in redis_api::config::SECRET_ENVS {
        known.push(s.to_string());
        known.push(format!("{s}_FILE"));
    }
    known.extend(["RUST_LOG".into(), "REDIS_API_BIN".into()]);
    let run_sh = std::fs::read_to_string(repo().join("run.sh")).unwrap();
    let env = container_env(api);
    for (name, _) in &env {
        assert!(known.contains(name), "env {name} is read by neither the server nor run.sh");
        if ["REDIS_ADDR_READ", "REDIS_ADDR_WRITE", "LISTEN_ADDR"].contains(&name.as_str()) {
            assert!(run_sh.contains(name.as_str()), "run.sh must map {name}");
        }
    }
    let value = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(value("REDIS_ADDR_READ"), Some(EnvValue::Literal("127.0.0.1:6379".into())));
    assert_eq!(value("REDIS_ADDR_WRITE"), Some(EnvValue::Literal("redis-master:6379".into())));
    // The master's Service is the host name the API and the replicas use.
    manifests::find(&objs, "Service", "redis-master").unwrap();
    let replica_conf = manifests::configmap_data(&objs, "redis-replica-config", "replica.conf").unwrap();
    assert!(replica_conf.lines().any(|l| l.trim() == "replicaof redis-master 6379"));
}

/// Probes use paths the server serves, on its probe listener (its own port, which client
/// connections cannot fill).
#[test]
fn probes_hit_served_paths() {
    let objs = objects();
    let deploy = manifests::find(&objs, "Deployment", "redis-api").unwrap();
    let api = deploy.container("redis-api").unwrap();
    assert_eq!(api["ports"][0]["containerPort"].as_i64(), Some(8080), "run.sh's default listen port");
    let probe_port = api["ports"].as_vec().unwrap().iter().find(|p| p["name"].as_str() == Some("probes"));
    let probe_port = probe_port.expect("a port named probes");
    let number = probe_port["containerPort"].as_i64().unwrap();
    let listen = container_env(api).into_iter().find(|(n, _)| n == "PROBE_LISTEN").map(|(_, v)| v);
    assert_eq!(listen, Some(EnvValue::Literal(format!("0.0.0.0:{number}"))), "PROBE_LISTEN matches the port");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &api[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        let port_ok = get["port"].as_str() == Some("probes") || get["port"].as_i64() == Some(number);
        assert!(port_ok, "{probe} port {:?}", get["port"]);
    }
    // The sidecar is native: an init container that keeps running, with a startup probe.
    let sidecars = local_cluster::pod::sidecars(deploy);
    assert_eq!(sidecars.len(), 1, "{sidecars:?}");
    assert!(!deploy.container(&sidecars[0]).unwrap()["startupProbe"].is_badvalue());
}

/// Every Secret and ConfigMap key a manifest refers to exists where it is created: ConfigMaps in
/// k8s/, Secret keys in the example Secret and in the Secret `tools k8s secret` sends to
/// `kubectl create -f -` (`acl::redis_auth_manifest`), with a value.
#[test]
fn referenced_keys_exist() {
    let objs = objects();
    let ex = examples();
    let created =
        acl::redis_auth_manifest(&repo().join("k8s/acl"), &acl::Names::default(), &acl::Passwords::generate().unwrap())
            .unwrap();
    let created: serde_json::Value = serde_json::from_str(&created).expect("the Secret is JSON");
    let secret_has = |name: &str, key: &str| {
        let example = manifests::find(&ex, "Secret", name).unwrap_or_else(|e| panic!("{e}"));
        let in_example = !example.doc["stringData"][key].is_badvalue() || !example.doc["data"][key].is_badvalue();
        assert!(in_example, "Secret {name} example lacks key {key}");
        assert_eq!(created["metadata"]["name"].as_str(), Some(name), "tools k8s secret creates only redis-auth");
        let value = created["stringData"][key].as_str().unwrap_or("");
        assert!(!value.trim().is_empty(), "tools k8s secret does not create key {key}");
    };
    let mut checked = 0;
    for w in workloads(&objs) {
        for c in w.containers() {
            for (env, value) in container_env(c) {
                match value {
                    EnvValue::Secret { name, key } => secret_has(&name, &key),
                    EnvValue::ConfigMap { name, key } => {
                        manifests::configmap_data(&objs, &name, &key).unwrap_or_else(|e| panic!("env {env}: {e}"));
                    }
                    _ => continue,
                }
                checked += 1;
            }
        }
        for v in w.pod_spec().unwrap()["volumes"].as_vec().into_iter().flatten() {
            if let Some(name) = v["secret"]["secretName"].as_str() {
                for item in v["secret"]["items"].as_vec().into_iter().flatten() {
                    secret_has(name, item["key"].as_str().unwrap());
                    checked += 1;
                }
            }
            if let Some(name) = v["configMap"]["name"].as_str() {
                manifests::find(&objs, "ConfigMap", name).unwrap_or_else(|e| panic!("{e}"));
                checked += 1;
            }
        }
    }
    assert!(checked >= 5, "only {checked} references found");
}

/// A Redis server of a test, stopped when dropped.
struct Server {
    child: std::process::Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Secret's files as `tools k8s secret` makes them, written into `dir` (the stand-in for
/// /etc/redis-auth), and the passwords.
fn secret_files(dir: &Path) -> acl::Passwords {
    let pw = acl::Passwords::generate().unwrap();
    for (key, text) in acl::secret_data(&repo().join("k8s/acl"), &acl::Names::default(), &pw).unwrap() {
        std::fs::write(dir.join(key), text).unwrap();
    }
    pw
}

/// Starts redis-server with `conf` (its /etc/redis-auth and /data mapped into `dir`, `replicaof
/// redis-master 6379` pointed at `master`) on a free loopback port; returns once it answers
/// (NOAUTH counts: the default user is off) or panics with its log.
fn run_redis_conf(conf: &str, dir: &Path, master: Option<u16>) -> Server {
    let data = dir.join(format!("data-{}", master.is_some()));
    std::fs::create_dir_all(&data).unwrap();
    let mapped: String = conf
        .lines()
        .map(|l| match l.trim() {
            "dir /data" => format!("dir {}", data.display()),
            "replicaof redis-master 6379" => format!("replicaof 127.0.0.1 {}", master.expect("a master port")),
            t => t.replace("/etc/redis-auth", &dir.display().to_string()),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.join(format!("redis-{}.conf", master.is_some()));
    std::fs::write(&path, mapped).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("redis-server")
        .arg(&path)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--repl-diskless-sync-delay", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-server");
    let mut server = Server { child, port };
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let out = Command::new("redis-cli").args(["-p", &port.to_string(), "PING"]).output().unwrap();
        if !out.stdout.is_empty() {
            return server;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            let mut log = String::new();
            let _ = std::io::Read::read_to_string(server.child.stdout.as_mut().unwrap(), &mut log);
            panic!("redis-server refused the config ({status}): {log}");
        }
        assert!(Instant::now() < until, "redis-server with the config did not answer");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `redis-cli --user USER ARGS` on `port`, the password in REDISCLI_AUTH; stdout and stderr.
fn cli(port: u16, user: &str, password: &str, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--user", user])
        .args(args)
        .env("REDISCLI_AUTH", password)
        .output()
        .unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)).trim().to_owned()
}

/// Runs container `name`'s exec probes of `workload` against the server on `port`, with its env
/// and the Secret files it mounts from the Secret's data (`secret`, written under `dir`, their
/// mount paths in the commands mapped there): each must pass.
fn run_probes(workload: &Object, name: &str, secret: &[(String, String)], port: u16, dir: &Path) {
    let c = workload.container(name).unwrap();
    let value = |k: &str| &secret.iter().find(|(s, _)| *s == k).unwrap_or_else(|| panic!("no Secret key {k}")).1;
    let mut env = Vec::new();
    for (key, v) in container_env(c) {
        if let EnvValue::Secret { key: k, .. } = v {
            env.push((key, value(&k).clone()));
        }
    }
    let mut mapped = Vec::new();
    for (mount, volume_name, _) in manifests::volume_mounts(c) {
        let Some(v) = manifests::volume(workload.pod_spec().unwrap(), &volume_name) else { continue };
        let Some(items) = v["secret"]["items"].as_vec() else { continue };
        let files = dir.join(format!("{name}-{volume_name}"));
        std::fs::create_dir_all(&files).unwrap();
        for item in items {
            std::fs::write(files.join(item["path"].as_str().unwrap()), value(item["key"].as_str().unwrap())).unwrap();
        }
        mapped.push((format!("{}/", mount.trim_end_matches('/')), format!("{}/", files.display())));
    }
    let mut ran = 0;
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let Some(argv) = c[probe]["exec"]["command"].as_vec() else { continue };
        let argv: Vec<String> = argv
            .iter()
            .map(|a| {
                let a = a.as_str().unwrap().replace("redis-cli", &format!("redis-cli -p {port}"));
                mapped.iter().fold(a, |a, (from, to)| a.replace(from, to))
            })
            .collect();
        let ok = Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .envs(env.clone())
            .status()
            .unwrap();
        assert!(ok.success(), "{}/{name} {probe} {argv:?} failed", workload.name());
        ran += 1;
    }
    assert!(ran >= 2, "{}/{name}: only {ran} exec probes", workload.name());
}

/// Waits until the replica on `port` reports its link to the master up (as the reader).
fn wait_synced(port: u16, reader: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    while !cli(port, "reader", reader, &["INFO", "replication"]).contains("master_link_status:up") {
        assert!(
            Instant::now() < until,
            "the replica did not sync: {}",
            cli(port, "reader", reader, &["INFO", "replication"])
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The ConfigMaps' Redis configs run a real master and replica with the Secret's ACL files: the
/// replica syncs as the replication user, the writer's value reaches the reader, every container's
/// exec probes pass with its own env, and the default user and the admin commands are refused.
#[test]
fn redis_configs_start_a_real_server() {
    let objs = objects();
    let dir = tempfile::tempdir().unwrap();
    let pw = secret_files(dir.path());
    let secret = acl::secret_data(&repo().join("k8s/acl"), &acl::Names::default(), &pw).unwrap();
    let master_conf = manifests::configmap_data(&objs, "redis-master-config", "redis.conf").unwrap();
    let master = run_redis_conf(master_conf, dir.path(), None);
    let replica_conf = manifests::configmap_data(&objs, "redis-replica-config", "replica.conf").unwrap();
    let replica = run_redis_conf(replica_conf, dir.path(), Some(master.port));
    wait_synced(replica.port, &pw.read);
    assert_eq!(cli(master.port, "writer", &pw.write, &["HSET", "currency", "current-value", "1.25"]), "1");
    let until = Instant::now() + Duration::from_secs(5);
    while cli(replica.port, "reader", &pw.read, &["HGET", "currency", "current-value"]) != "1.25" {
        assert!(Instant::now() < until, "the write did not reach the replica");
        std::thread::sleep(Duration::from_millis(20));
    }
    let info = cli(master.port, "replication", &pw.replication, &["PING"]);
    assert_eq!(info, "PONG");
    let sts = manifests::find(&objs, "StatefulSet", "redis-master").unwrap();
    run_probes(sts, "redis", &secret, master.port, dir.path());
    let deploy = manifests::find(&objs, "Deployment", "redis-api").unwrap();
    run_probes(deploy, "redis-replica", &secret, replica.port, dir.path());
    // Nobody without a user name; no admin command for anyone.
    for port in [master.port, replica.port] {
        let out = Command::new("redis-cli").args(["-p", &port.to_string(), "PING"]).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("NOAUTH"), "the default user answered");
    }
    let users = [
        (master.port, "writer", &pw.write),
        (master.port, "replication", &pw.replication),
        (replica.port, "reader", &pw.read),
    ];
    for (port, user, password) in users {
        for cmd in [
            &["FLUSHALL"][..],
            &["CONFIG", "GET", "dir"],
            &["KEYS", "*"],
            &["MODULE", "LIST"],
            &["ACL", "LIST"],
            &["EVAL", "return 1", "0"],
            &["SHUTDOWN"],
        ] {
            let out = cli(port, user, password, cmd);
            assert!(out.contains("NOPERM"), "{user} ran {cmd:?}: {out}");
        }
    }
}

/// Both ACL templates disable the default user; every other user starts from `-@all`, grants
/// single commands only (no category, no key or channel wildcard) and none of the admin or
/// scripting commands; the example Secret shows exactly their rendering.
#[test]
fn acl_templates_are_least_privilege() {
    const DENIED: [&str; 19] = [
        "flushall",
        "flushdb",
        "config",
        "debug",
        "keys",
        "shutdown",
        "module",
        "acl",
        "eval",
        "evalsha",
        "script",
        "function",
        "save",
        "bgsave",
        "replicaof",
        "slaveof",
        "migrate",
        "restore",
        "fcall",
    ];
    let ex = examples();
    let example = manifests::find(&ex, "Secret", "redis-auth").unwrap();
    for name in acl::TEMPLATES {
        let template = std::fs::read_to_string(repo().join(format!("k8s/acl/{name}.acl.template"))).unwrap();
        let placeholders = |user: &str| {
            let key = match user {
                "writer" => "password-write",
                "reader" => "password-read",
                "admin" => "password-admin",
                _ => "password-replication",
            };
            Some(format!("<sha256 of {key}>"))
        };
        let rendered = acl::render(&template, &acl::Names::default(), &placeholders).unwrap();
        let shown = example.doc["stringData"][format!("{name}.acl").as_str()].as_str().unwrap_or("");
        assert_eq!(shown, rendered, "the example Secret's {name}.acl is not the template rendered");
        let users: Vec<Vec<&str>> = rendered
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|t| t.first() == Some(&"user"))
            .collect();
        let default =
            users.iter().find(|t| t[1] == "default").unwrap_or_else(|| panic!("{name}: no default user line"));
        assert!(
            default.contains(&"off") && !default.contains(&"on") && !default.contains(&"nopass"),
            "{name}: {default:?}"
        );
        assert!(users.len() >= 2, "{name}: no user besides default");
        for tokens in &users {
            let reset = tokens
                .iter()
                .position(|t| *t == "-@all")
                .unwrap_or_else(|| panic!("{name}: {} lacks -@all", tokens[1]));
            for (i, t) in tokens.iter().enumerate() {
                let grant = t.strip_prefix('+');
                assert!(grant.is_none() || i > reset, "{name}: {} grants {t} before -@all", tokens[1]);
                assert!(
                    !["allcommands", "allkeys", "allchannels", "~*", "&*", "nopass", "*"].contains(t),
                    "{name}: {t}"
                );
                if let Some(cmd) = grant {
                    assert!(!cmd.starts_with('@'), "{name}: {} grants a category {t}", tokens[1]);
                    // The operator's user may make the master re-read its ACL file, nothing more.
                    if tokens[1] == "admin" {
                        assert!(["acl|load", "ping"].contains(&cmd), "{name}: admin may run {cmd}");
                        continue;
                    }
                    let base = cmd.split('|').next().unwrap().to_lowercase();
                    assert!(!DENIED.contains(&base.as_str()), "{name}: {} may run {cmd}", tokens[1]);
                }
            }
        }
    }
}

/// `scripts/k8s.sh acl` (the wrapper, running this build's `tools k8s acl`: what scripts and
/// operators render from password files) renders both templates exactly as the Secret's data
/// has them, from the same passwords.
#[test]
fn script_and_cluster_render_alike() {
    let dir = tempfile::tempdir().unwrap();
    let pw = secret_files(dir.path());
    let data = acl::secret_data(&repo().join("k8s/acl"), &acl::Names::default(), &pw).unwrap();
    for name in acl::TEMPLATES {
        let out = Command::new(repo().join("scripts/k8s.sh"))
            .args(["acl", name, dir.path().to_str().unwrap()])
            .env("TOOLS_BIN", env!("CARGO_BIN_EXE_tools"))
            .output()
            .unwrap();
        assert!(out.status.success(), "k8s.sh acl {name}: {}", String::from_utf8_lossy(&out.stderr));
        let rust = &data.iter().find(|(k, _)| *k == format!("{name}.acl")).unwrap().1;
        assert_eq!(&String::from_utf8_lossy(&out.stdout), rust, "{name}.acl");
    }
}

/// No Redis password setting in a ConfigMap (no requirepass: the default user would get it; no
/// masterauth/masteruser: that is the Secret's replica-auth.conf); the master loads the ACL
/// file of the master, the replica its own and its login to the master from the Secret.
#[test]
fn configmaps_load_the_acl_users() {
    let objs = objects();
    for cm in objs.iter().filter(|o| o.kind() == "ConfigMap") {
        for (_, text) in cm.doc["data"].as_hash().into_iter().flatten() {
            for line in text.as_str().unwrap_or("").lines() {
                let word = line.split_whitespace().next().unwrap_or("");
                assert!(
                    !["requirepass", "masterauth", "masteruser"].contains(&word),
                    "ConfigMap {}: {line}",
                    cm.name()
                );
            }
        }
    }
    let lines = |name: &str, key: &str| -> Vec<String> {
        manifests::configmap_data(&objs, name, key).unwrap().lines().map(|l| l.trim().to_owned()).collect()
    };
    let master = lines("redis-master-config", "redis.conf");
    assert!(master.contains(&"aclfile /etc/redis-auth/master.acl".to_owned()), "{master:?}");
    assert!(!master.iter().any(|l| l.starts_with("include ")), "the master includes nothing: {master:?}");
    let replica = lines("redis-replica-config", "replica.conf");
    assert!(replica.contains(&"aclfile /etc/redis-auth/replica.acl".to_owned()), "{replica:?}");
    assert!(replica.contains(&"include /etc/redis-auth/replica-auth.conf".to_owned()), "{replica:?}");
}

/// Each container sees only the keys of the Secret redis-auth that it needs (mounted or as env),
/// and the updater, which writes through the API, none at all.
#[test]
fn each_container_gets_only_its_secret_keys() {
    let objs = objects();
    let expected: [(&str, &str, &[&str]); 4] = [
        ("redis-master", "redis", &["master.acl", "password-replication", "password-admin"]),
        ("redis-api", "redis-replica", &["replica.acl", "replica-auth.conf", "password-read"]),
        ("redis-api", "redis-api", &["password-read", "password-write"]),
        ("updater", "updater", &[]),
    ];
    for w in workloads(&objs) {
        let spec = w.pod_spec().unwrap();
        for c in w.containers() {
            let name = c["name"].as_str().unwrap();
            let mut keys: Vec<String> = Vec::new();
            for (_, value) in container_env(c) {
                if let EnvValue::Secret { name: s, key } = value {
                    assert_eq!(s, "redis-auth");
                    keys.push(key);
                }
            }
            for (_, vol, _) in manifests::volume_mounts(c) {
                let v = manifests::volume(spec, &vol).unwrap_or(&Yaml::BadValue);
                if v["secret"]["secretName"].as_str() == Some("redis-auth") {
                    let items = v["secret"]["items"].as_vec();
                    let items = items.unwrap_or_else(|| panic!("{}/{name}: the whole Secret mounted", w.name()));
                    keys.extend(items.iter().map(|i| i["key"].as_str().unwrap().to_owned()));
                }
            }
            keys.sort();
            let want = expected.iter().find(|(wl, cn, _)| *wl == w.name() && *cn == name);
            let mut want: Vec<String> = want.map(|e| e.2.iter().map(|k| k.to_string()).collect()).unwrap_or_default();
            want.sort();
            assert_eq!(keys, want, "{}/{name}: Secret keys", w.name());
        }
    }
    assert!(manifests::find(&objs, "Deployment", "updater").is_ok());
}

/// Newest patch releases of each Redis line that fix CVE-2025-49844 (Lua RCE), CVE-2025-21605
/// (unauthenticated output buffers) and CVE-2024-31228: an image of an older one, or of a line
/// not listed (7.0 and older: no longer patched), fails.
const PATCHED_REDIS: [((u32, u32), u32); 4] = [((7, 2), 11), ((7, 4), 6), ((8, 0), 4), ((8, 2), 2)];

/// Every Redis image named in k8s/ (and the README's and the image test's recipes) is a patched
/// release, pinned to its patch version.
#[test]
fn redis_images_are_patched() {
    let mut texts: Vec<(String, String)> = Vec::new();
    for dir in ["k8s", "k8s/loadtest", "k8s/components/tls"] {
        for entry in std::fs::read_dir(repo().join(dir)).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "yaml") {
                texts.push((p.display().to_string(), std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    texts.push(("README.md".into(), std::fs::read_to_string(repo().join("README.md")).unwrap()));
    let mut seen = 0;
    for (file, text) in &texts {
        for (at, _) in text.match_indices("redis:") {
            let before = text[..at].chars().last().unwrap_or(' ');
            if before.is_ascii_alphanumeric() || before == '-' || before == '/' && !text[..at].ends_with("library/") {
                continue;
            }
            let tag: String =
                text[at + 6..].chars().take_while(|c| c.is_ascii_alphanumeric() || ".-_".contains(*c)).collect();
            let Some(version) = tag.split('-').next().filter(|v| v.starts_with(|c: char| c.is_ascii_digit())) else {
                continue;
            };
            let parts: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
            assert_eq!(parts.len(), 3, "{file}: redis:{tag} is not pinned to a patch release");
            let min = PATCHED_REDIS.iter().find(|(line, _)| *line == (parts[0], parts[1]));
            let (_, min) =
                min.unwrap_or_else(|| panic!("{file}: redis:{tag}: line {}.{} gets no fixes", parts[0], parts[1]));
            assert!(parts[2] >= *min, "{file}: redis:{tag} lacks the CVE fixes of {}.{}.{min}", parts[0], parts[1]);
            seen += 1;
        }
    }
    assert!(seen >= 2, "only {seen} Redis images found");
}

/// Every Redis container the manifests run pulls its image by digest (the tag names the
/// release, the digest the exact bytes), and takes no password from its environment: its
/// probes read the password from a mounted file, for redis-cli alone.
#[test]
fn redis_containers_are_pinned_and_keep_passwords_in_files() {
    let objs = objects();
    let mut seen = 0;
    for o in &objs {
        for c in o.containers() {
            let image = c["image"].as_str().unwrap_or("");
            if !image.starts_with("redis:") {
                continue;
            }
            seen += 1;
            let name = format!("{}/{}", o.name(), c["name"].as_str().unwrap_or("?"));
            let digest = image.split_once("@sha256:").map(|(_, d)| d).unwrap_or("");
            assert!(
                digest.len() == 64 && digest.chars().all(|ch| ch.is_ascii_hexdigit()),
                "{name}: {image} is not pinned by digest"
            );
            for (key, value) in container_env(c) {
                assert!(
                    !matches!(value, EnvValue::Secret { .. }),
                    "{name}: {key} comes from a Secret in the environment"
                );
            }
            for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
                let argv: Vec<&str> =
                    c[probe]["exec"]["command"].as_vec().into_iter().flatten().filter_map(|a| a.as_str()).collect();
                let line = argv.join(" ");
                if line.contains("redis-cli") {
                    assert!(line.contains("REDISCLI_AUTH=$(cat /etc/redis-auth/"), "{name} {probe}: {line}");
                }
            }
        }
    }
    assert!(seen >= 2, "only {seen} Redis containers found");
}

/// A NetworkPolicy fences the master: it selects the master's pods (and nothing else), admits on
/// TCP 6379 only, from the API pods only (same namespace: no namespaceSelector, no ipBlock),
/// and allows no egress beyond DNS.
#[test]
fn master_is_fenced_off() {
    let objs = objects();
    let master = manifests::find(&objs, "StatefulSet", "redis-master").unwrap();
    let api = manifests::find(&objs, "Deployment", "redis-api").unwrap();
    let pod_labels = |w: &Object| labels(&w.doc["spec"]["template"]["metadata"]["labels"]);
    let policies: Vec<&Object> = objs
        .iter()
        .filter(|o| o.kind() == "NetworkPolicy")
        .filter(|o| subset(&labels(&o.doc["spec"]["podSelector"]["matchLabels"]), &pod_labels(master)))
        .collect();
    assert_eq!(policies.len(), 1, "one NetworkPolicy selects the master's pods");
    let np = policies[0];
    let sel = labels(&np.doc["spec"]["podSelector"]["matchLabels"]);
    assert_eq!(selected(&objs, &sel).iter().map(|w| w.name()).collect::<Vec<_>>(), vec!["redis-master"]);
    let types: Vec<&str> = np.doc["spec"]["policyTypes"].as_vec().unwrap().iter().filter_map(Yaml::as_str).collect();
    assert!(types.contains(&"Ingress") && types.contains(&"Egress"), "{types:?}");
    let ingress = np.doc["spec"]["ingress"].as_vec().expect("ingress rules");
    assert_eq!(ingress.len(), 1, "one ingress rule");
    let ports = ingress[0]["ports"].as_vec().expect("ports named");
    assert_eq!(ports.len(), 1);
    assert_eq!((ports[0]["protocol"].as_str(), ports[0]["port"].as_i64()), (Some("TCP"), Some(6379)));
    let from = ingress[0]["from"].as_vec().expect("peers named");
    assert!(!from.is_empty());
    for peer in from {
        assert!(peer["namespaceSelector"].is_badvalue() && peer["ipBlock"].is_badvalue(), "{peer:?}");
        let s = labels(&peer["podSelector"]["matchLabels"]);
        assert!(subset(&s, &pod_labels(api)), "a peer that is not the API pods: {s:?}");
        assert_eq!(selected(&objs, &s).iter().map(|w| w.name()).collect::<Vec<_>>(), vec!["redis-api"]);
    }
    for rule in np.doc["spec"]["egress"].as_vec().into_iter().flatten() {
        for port in rule["ports"].as_vec().expect("egress names its ports") {
            assert_eq!(port["port"].as_i64(), Some(53), "egress beyond DNS: {rule:?}");
        }
    }
}

/// The updater's env names are ones `loadtest updater` reads; it POSTs to the API's Service;
/// its probes hit the path its own server answers.
#[test]
fn updater_env_and_probes() {
    let objs = objects();
    let updater = manifests::find(&objs, "Deployment", "updater").unwrap();
    let c = updater.container("updater").expect("updater container");
    assert_eq!(c["args"][0].as_str(), Some("updater"));
    let main_rs = std::fs::read_to_string(repo().join("loadtest/src/main.rs")).unwrap();
    let env = container_env(c);
    for (name, _) in &env {
        assert!(main_rs.contains(&format!("\"{name}\"")), "env {name} is not read by `loadtest updater`");
    }
    let url = env.iter().find(|(n, _)| n == "API_URL").map(|(_, v)| v.clone());
    let service = manifests::find(&objs, "Service", "redis-api").unwrap();
    let port = service.doc["spec"]["ports"][0]["port"].as_i64().unwrap();
    assert_eq!(url, Some(EnvValue::Literal(format!("http://redis-api:{port}/"))));
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"].as_str(), Some("/healthz"), "{probe}");
    }
}

/// The TLS component: every file its Kustomizations name exists, each patch targets an object of
/// k8s/ (kind and name), the Secrets it mounts are those cert-manager's Certificates write; and,
/// where kubectl is installed, `kubectl kustomize overlays/tls` builds with the master on TLS
/// and the API writing to rediss://.
#[test]
fn tls_component_builds() {
    let objs = objects();
    let tls = repo().join("k8s/components/tls");
    let mut secrets_written = Vec::new();
    for dir in [tls.clone(), tls.join("cert-manager")] {
        let kust = &yaml_rust2::YamlLoader::load_from_str(&std::fs::read_to_string(dir.join("Kustomization")).unwrap())
            .unwrap()[0];
        assert_eq!(kust["kind"].as_str(), Some("Component"), "{}", dir.display());
        let files =
            kust["resources"].as_vec().into_iter().flatten().chain(kust["patches"].as_vec().into_iter().flatten());
        for entry in files {
            let file = entry.as_str().or(entry["path"].as_str()).unwrap();
            let text =
                std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()));
            let doc = &yaml_rust2::YamlLoader::load_from_str(&text).unwrap()[0];
            let (kind, name) = (doc["kind"].as_str().unwrap(), doc["metadata"]["name"].as_str().unwrap());
            if entry["path"].as_str().is_some() {
                let target = manifests::find(&objs, kind, name).unwrap_or_else(|e| panic!("patch {file}: {e}"));
                for c in doc["spec"]["template"]["spec"]["initContainers"]
                    .as_vec()
                    .into_iter()
                    .flatten()
                    .chain(doc["spec"]["template"]["spec"]["containers"].as_vec().into_iter().flatten())
                {
                    let cname = c["name"].as_str().unwrap();
                    assert!(target.container(cname).is_some(), "patch {file}: no container {cname} in {kind} {name}");
                }
            }
            if kind == "Certificate" {
                secrets_written.push(doc["spec"]["secretName"].as_str().unwrap().to_owned());
            }
        }
    }
    for patch in ["redis-master-statefulset-patch.yaml", "redis-api-deployment-patch.yaml"] {
        let text = std::fs::read_to_string(tls.join(patch)).unwrap();
        let doc = &yaml_rust2::YamlLoader::load_from_str(&text).unwrap()[0];
        for v in doc["spec"]["template"]["spec"]["volumes"].as_vec().unwrap() {
            if let Some(s) = v["secret"]["secretName"].as_str() {
                assert!(secrets_written.iter().any(|w| w == s), "{patch}: Secret {s} is written by no Certificate");
            }
        }
    }
    let Ok(out) = Command::new("kubectl")
        .args(["kustomize", "overlays/tls"])
        .current_dir(repo())
        .env("KUBECONFIG", "/dev/null")
        .output()
    else {
        eprintln!("kubectl not installed: the static checks only");
        return;
    };
    assert!(out.status.success(), "kubectl kustomize overlays/tls: {}", String::from_utf8_lossy(&out.stderr));
    let rendered: Vec<Object> = yaml_rust2::YamlLoader::load_from_str(&String::from_utf8_lossy(&out.stdout))
        .unwrap()
        .into_iter()
        .map(|doc| Object { file: PathBuf::from("overlays/tls"), doc })
        .collect();
    let master = manifests::find(&rendered, "StatefulSet", "redis-master").unwrap().container("redis").unwrap();
    let command: Vec<&str> = master["command"].as_vec().unwrap().iter().filter_map(Yaml::as_str).collect();
    assert!(command.contains(&"/etc/redis-tls-config/master-tls.conf"), "{command:?}");
    let api = manifests::find(&rendered, "Deployment", "redis-api").unwrap().container("redis-api").unwrap();
    let env = container_env(api);
    let write = env.iter().find(|(n, _)| n == "REDIS_ADDR_WRITE").map(|(_, v)| v.clone());
    assert_eq!(write, Some(EnvValue::Literal("rediss://redis-master:6379".into())));
    assert!(env.iter().any(|(n, _)| n == "REDIS_TLS_CA_FILE"));
}

/// The TLS settings of the component, on top of the ConfigMaps' configs and as the patched
/// commands include them, run a real master (TLS only, client certificates required) and a
/// replica that syncs over TLS, with certificates made by openssl as `k8s.sh tls-secret` makes
/// them; a client without a certificate is refused.
#[test]
fn tls_configs_sync_a_real_replica() {
    let objs = objects();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pw = secret_files(d);
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(d).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(
        &[&["req", "-x509"][..], &key, &["-subj", "/CN=ca", "-days", "1", "-keyout", "ca.key", "-out", "ca.crt"]]
            .concat(),
    );
    for (name, ext) in [
        ("master", "subjectAltName=DNS:redis-master\nextendedKeyUsage=serverAuth,clientAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(d.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            &[
                &["req", "-new"][..],
                &key,
                &["-subj", &format!("/CN={name}"), "-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr")],
            ]
            .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ]);
    }
    let tls_conf = std::fs::read_to_string(repo().join("k8s/components/tls/redis-tls-configmap.yaml")).unwrap();
    let tls_cm =
        Object { file: PathBuf::new(), doc: yaml_rust2::YamlLoader::load_from_str(&tls_conf).unwrap().remove(0) };
    let tls = |key: &str, cert: &str| -> String {
        let text = tls_cm.doc["data"][key].as_str().unwrap();
        text.replace("/etc/redis-tls/tls.crt", &d.join(format!("{cert}.crt")).display().to_string())
            .replace("/etc/redis-tls/tls.key", &d.join(format!("{cert}.key")).display().to_string())
            .replace("/etc/redis-tls/ca.crt", &d.join("ca.crt").display().to_string())
    };
    let port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (mport, rport) = (port(), port());
    let start = |conf: &str, name: &str, tls_conf: String, extra: &[String]| -> Server {
        let data = d.join(format!("data-{name}"));
        std::fs::create_dir_all(&data).unwrap();
        let text = conf
            .replace("/etc/redis-auth", &d.display().to_string())
            .replace("dir /data", &format!("dir {}", data.display()));
        std::fs::write(d.join(format!("{name}.conf")), text).unwrap();
        std::fs::write(d.join(format!("{name}-tls.conf")), tls_conf).unwrap();
        // As the patched command: redis-server CONF --include TLS_CONF, then this test's ports.
        let child = Command::new("redis-server")
            .arg(d.join(format!("{name}.conf")))
            .args(["--include".to_owned(), d.join(format!("{name}-tls.conf")).display().to_string()])
            .args(extra)
            .args(["--bind", "127.0.0.1", "--repl-diskless-sync-delay", "0"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        Server { child, port: 0 }
    };
    let master_conf = manifests::configmap_data(&objs, "redis-master-config", "redis.conf").unwrap();
    let _master =
        start(master_conf, "master", tls("master-tls.conf", "master"), &["--tls-port".into(), mport.to_string()]);
    let replica_conf = manifests::configmap_data(&objs, "redis-replica-config", "replica.conf")
        .unwrap()
        .replace("replicaof redis-master 6379", &format!("replicaof 127.0.0.1 {mport}"));
    let _replica =
        start(&replica_conf, "replica", tls("replica-tls.conf", "client"), &["--port".into(), rport.to_string()]);
    wait_synced(rport, &pw.read);
    let ca = d.join("ca.crt").display().to_string();
    let tls_cli = |cert: bool, args: &[&str]| -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &mport.to_string(), "--tls", "--cacert", &ca, "--user", "writer"])
            .env("REDISCLI_AUTH", &pw.write);
        if cert {
            cmd.args([
                "--cert",
                &d.join("client.crt").display().to_string(),
                "--key",
                &d.join("client.key").display().to_string(),
            ]);
        }
        let out = cmd.args(args).output().unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)).trim().to_owned()
    };
    assert_eq!(tls_cli(true, &["HSET", "currency", "current-value", "2.5"]), "1");
    let until = Instant::now() + Duration::from_secs(5);
    while cli(rport, "reader", &pw.read, &["HGET", "currency", "current-value"]) != "2.5" {
        assert!(Instant::now() < until, "the TLS write did not reach the replica");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_ne!(tls_cli(false, &["PING"]), "PONG", "a client without a certificate was let in");
    let plain = Command::new("redis-cli").args(["-p", &mport.to_string(), "PING"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("NOAUTH"), "the master spoke plaintext");
}

// The project's own rules (local_cluster::rules, `tools manifests`): today's folders keep them,
// and a fixture breaking one rule is reported with that rule's message. The fixture is a small
// valid folder (FIXTURE); each case changes one thing in it.

/// The labels every fixture object carries (a Service's selector, a workload's pods).
const L: &str = "{app: redis-api, role: api, tier: backend, app.kubernetes.io/name: redis-api, \
                 app.kubernetes.io/component: api, app.kubernetes.io/part-of: redis-api}";
/// How the messages show `L`.
const L_SHOWN: &str = "{'app': 'redis-api', 'role': 'api', 'tier': 'backend', 'app.kubernetes.io/name': 'redis-api', \
                       'app.kubernetes.io/component': 'api', 'app.kubernetes.io/part-of': 'redis-api'}";

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: redis-api
  labels: L
spec:
  selector:
    matchLabels: L
  template:
    metadata:
      labels: L
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 30
      securityContext:
        runAsNonRoot: true
        seccompProfile: {type: RuntimeDefault}
      volumes:
        - name: config
          configMap: {name: redis-master}
      containers:
        - name: redis-api
          image: redis-api:0.1.0
          env:
            - name: SHUTDOWN_GRACE
              value: 10s
          ports:
            - name: http
              containerPort: 8080
          readinessProbe:
            httpGet: {path: /readyz, port: http}
          lifecycle:
            preStop:
              sleep: {seconds: 5}
          resources:
            requests: {cpu: 100m, memory: 64Mi}
            limits: {memory: 64Mi}
          securityContext:
            runAsNonRoot: true
            runAsUser: 10001
            runAsGroup: 10001
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
            seccompProfile: {type: RuntimeDefault}
";

const SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: redis-api
  labels: L
spec:
  selector: L
  ports:
    - port: 80
      targetPort: http
";

const HPA: &str = "\
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: redis-api
  labels: L
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: redis-api}
  minReplicas: 2
  maxReplicas: 4
";

const NETWORK_POLICY: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: redis-api
  labels: L
spec:
  podSelector:
    matchLabels: L
  ingress:
    - from:
        - podSelector:
            matchLabels: L
";

const CONFIGMAP: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: redis-master
  labels: L
data:
  redis.conf: |
    appendonly no
";

const SECRET: &str = "\
apiVersion: v1
kind: Secret
metadata:
  name: redis-auth
  labels: {app: redis, tier: cache, app.kubernetes.io/name: redis, app.kubernetes.io/component: auth, \
app.kubernetes.io/part-of: redis-api}
stringData:
  password: example
";

/// Files of a fixture's `k8s/`: name (relative to it) and text.
type Files = Vec<(String, String)>;

/// The valid fixture.
fn fixture() -> Files {
    [
        ("redis-api-deployment.yaml", DEPLOYMENT),
        ("redis-api-service.yaml", SERVICE),
        ("redis-api-horizontalpodautoscaler.yaml", HPA),
        ("redis-api-networkpolicy.yaml", NETWORK_POLICY),
        ("redis-master-configmap.yaml", CONFIGMAP),
        ("examples/redis-auth-secret.example.yaml", SECRET),
    ]
    .into_iter()
    .map(|(name, text)| (name.to_owned(), text.replace(": L", &format!(": {L}"))))
    .collect()
}

/// The fixture with `from` replaced by `to` in file `name` (`from` must be there).
fn changed(name: &str, from: &str, to: &str) -> Files {
    let mut files = fixture();
    let (_, text) = files.iter_mut().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no fixture file {name}"));
    assert!(text.contains(from), "{name} has no {from:?}");
    *text = text.replacen(from, to, 1);
    files
}

/// A repository in a temp dir whose `k8s/` holds `files` and a Kustomization listing those
/// outside `examples/`.
fn fixture_repo(files: &[(String, String)]) -> tempfile::TempDir {
    let repo = tempfile::tempdir().expect("temp dir");
    let k8s = repo.path().join("k8s");
    std::fs::create_dir_all(k8s.join("examples")).unwrap();
    let mut kustomization =
        String::from("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n");
    for (name, text) in files {
        std::fs::write(k8s.join(name), text).unwrap();
        if !name.starts_with("examples/") {
            kustomization.push_str(&format!("  - {name}\n"));
        }
    }
    std::fs::write(k8s.join("Kustomization"), kustomization).unwrap();
    repo
}

/// The broken rules of `k8s/` in `repo`, as `tools manifests` prints them (without `error: `).
fn broken_in(repo: &Path) -> Vec<String> {
    let outcome = rules::check_folders(repo, &[PathBuf::from("k8s")]).expect("k8s/ is listed");
    outcome.broken.iter().map(ToString::to_string).collect()
}

fn broken(files: &[(String, String)]) -> Vec<String> {
    broken_in(fixture_repo(files).path())
}

/// Checks each case: (the fixture changed, the messages expected, all of them).
fn expect(cases: Vec<(Files, Vec<String>)>) {
    for (i, (files, want)) in cases.into_iter().enumerate() {
        assert_eq!(broken(&files), want, "case {i}");
    }
}

fn at(file: &str, message: &str) -> String {
    format!("k8s/{file}: {message}")
}

const DEPLOY: &str = "redis-api-deployment.yaml";
const CONTAINER: &str = "redis-api-deployment.yaml container redis-api";

/// Today's k8s/ and k8s/loadtest/ keep every rule (as `tools manifests` checks them by default);
/// so does the valid fixture the other rule tests break.
#[test]
fn rules_hold_for_todays_manifests() {
    let outcome = rules::check_folders(&repo(), &[PathBuf::from("k8s"), PathBuf::from("k8s/loadtest")]).unwrap();
    let today: Vec<String> = outcome.broken.iter().map(ToString::to_string).collect();
    assert_eq!(today, Vec::<String>::new());
    let files = manifests::yaml_files(&repo().join("k8s")).unwrap().len()
        + manifests::yaml_files(&repo().join("k8s/examples")).unwrap().len()
        + manifests::yaml_files(&repo().join("k8s/loadtest")).unwrap().len();
    assert_eq!(outcome.checked, files);
    assert_eq!(broken(&fixture()), Vec::<String>::new());
}

/// One object per file, of a kind used here, in a file named for it; no Secret outside
/// examples/; no password in a ConfigMap; the Kustomization lists every manifest.
#[test]
fn rules_files_kinds_and_kustomization() {
    let kinds = "ConfigMap, Deployment, HorizontalPodAutoscaler, NetworkPolicy, PodDisruptionBudget, Secret, \
                 Service, StatefulSet";
    let mut misnamed = fixture();
    misnamed[1].0 = "redis-api-svc.yaml".into();
    let mut secret = fixture();
    secret[5].0 = "redis-auth-secret.yaml".into();
    let mut example_misnamed = fixture();
    example_misnamed[5].0 = "examples/redis-auth-secret.yaml".into();
    expect(vec![
        (
            changed("redis-api-service.yaml", "targetPort: http\n", "targetPort: http\n---\nkind: ConfigMap\n"),
            vec![at("redis-api-service.yaml", "one object per file, found 2")],
        ),
        (
            changed("redis-api-service.yaml", "kind: Service", "kind: Ingress"),
            vec![at("redis-api-service.yaml", &format!("not one of the Kubernetes kinds used here ({kinds})"))],
        ),
        (misnamed, vec![at("redis-api-svc.yaml", "a Service belongs in a file named <component>-service.yaml")]),
        (
            example_misnamed,
            vec![at(
                "examples/redis-auth-secret.yaml",
                "a Secret belongs in a file named <component>-secret.example.yaml",
            )],
        ),
        (secret, vec![at("redis-auth-secret.yaml", "no Secret in k8s/: scripts/k8s.sh secret creates it")]),
        (
            changed("redis-master-configmap.yaml", "    appendonly no", "    appendonly no\n    requirepass hunter2"),
            vec![at(
                "redis-master-configmap.yaml",
                "a password setting in a ConfigMap (the Secret's ACL files and replica-auth.conf hold them)",
            )],
        ),
    ]);
    let unreadable = broken(&changed("redis-api-service.yaml", "  ports:", "  ports: [\n"));
    let prefix = at("redis-api-service.yaml", "not readable YAML: ");
    assert!(unreadable.len() == 1 && unreadable[0].starts_with(&prefix), "{unreadable:?}");
    // masterauth too, indented; a longer word that starts the same is no password setting.
    let cm = changed("redis-master-configmap.yaml", "    appendonly no", "    appendonly no\n      masterauth x");
    assert_eq!(broken(&cm).len(), 1);
    let cm = changed("redis-master-configmap.yaml", "    appendonly no", "    appendonly no\n    requirepassword x");
    assert_eq!(broken(&cm), Vec::<String>::new());

    let repo = fixture_repo(&fixture());
    std::fs::write(repo.path().join("k8s/extra-configmap.yaml"), CONFIGMAP.replace(": L", &format!(": {L}"))).unwrap();
    let listed = "['redis-api-deployment.yaml', 'redis-api-horizontalpodautoscaler.yaml', \
                  'redis-api-networkpolicy.yaml', 'redis-api-service.yaml', 'redis-master-configmap.yaml']";
    let present = "['extra-configmap.yaml', 'redis-api-deployment.yaml', 'redis-api-horizontalpodautoscaler.yaml', \
                   'redis-api-networkpolicy.yaml', 'redis-api-service.yaml', 'redis-master-configmap.yaml']";
    let want = format!("k8s/Kustomization: resources {listed} != the manifests in k8s/ {present}");
    assert_eq!(broken_in(repo.path()), vec![want]);
    std::fs::remove_file(repo.path().join("k8s/Kustomization")).unwrap();
    std::fs::remove_file(repo.path().join("k8s/extra-configmap.yaml")).unwrap();
    assert_eq!(broken_in(repo.path()), vec!["k8s: no Kustomization file".to_owned()]);
}

/// The labels on every object; a workload's selector and pod template carry its labels; every
/// selector (Service, NetworkPolicy and its peers) equals some pod template's labels; no two
/// workloads' pods carry the same labels.
#[test]
fn rules_labels_and_selectors() {
    let svc = "redis-api-service.yaml";
    let np = "redis-api-networkpolicy.yaml";
    let other_role = L.replace("role: api", "role: updater");
    let other_shown = L_SHOWN.replace("'role': 'api'", "'role': 'updater'");
    let mut twin = fixture();
    twin.push(("twin-deployment.yaml".into(), twin[0].1.replacen("name: redis-api\n", "name: twin\n", 1)));
    let same = "another workload's pods carry the same labels (selectors would take both)";
    expect(vec![
        (
            changed(svc, &format!("  labels: {L}"), &format!("  labels: {}", L.replace("tier: backend, ", ""))),
            vec![at(svc, "labels missing or wrong: ['tier']")],
        ),
        (
            changed(
                svc,
                &format!("  labels: {L}"),
                &format!("  labels: {}", L.replace("part-of: redis-api", "part-of: x")),
            ),
            vec![at(svc, "labels missing or wrong: app.kubernetes.io/part-of")],
        ),
        (
            changed(svc, &format!("  labels: {L}"), &format!("  labels: {}", L.replace("role: api", "role: web"))),
            vec![at(svc, "label role must be one of master, replica, api, updater, loadgen, aggregator, hello")],
        ),
        (
            changed(DEPLOY, &format!("matchLabels: {L}"), &format!("matchLabels: {other_role}")),
            vec![at(DEPLOY, "selector differs from the labels")],
        ),
        (
            changed(svc, &format!("selector: {L}"), &format!("selector: {other_role}")),
            vec![at(svc, &format!("selector matches no pod template's labels exactly: {other_shown}"))],
        ),
        (
            changed(np, &format!("            matchLabels: {L}"), &format!("            matchLabels: {other_role}")),
            vec![at(np, &format!("selector matches no pod template's labels exactly: {other_shown}"))],
        ),
        (twin, vec![at(DEPLOY, same), at("twin-deployment.yaml", same)]),
    ]);
    // A pod template with other labels: its own rule, and the selectors then find no pods.
    let files = changed(DEPLOY, &format!("      labels: {L}"), &format!("      labels: {other_role}"));
    let got = broken(&files);
    assert_eq!(got[0], at(DEPLOY, "pod template labels differ from the object's labels"));
    assert!(got.contains(&at(svc, &format!("selector matches no pod template's labels exactly: {L_SHOWN}"))));
}

/// Per container: a pinned image, cpu+memory requests, no CPU limit, memory limit = request,
/// the restricted securityContext with numeric ids, probes on named ports; per pod: no service
/// account token, runAsNonRoot + RuntimeDefault, a grace period past preStop + SHUTDOWN_GRACE.
#[test]
fn rules_pods_and_containers() {
    let c = |m: &str| at(CONTAINER, m);
    let pinned = |image: &str| vec![c(&format!("image not pinned to a tag: {image}"))];
    let grace = || vec![c("terminationGracePeriodSeconds must exceed preStop sleep + SHUTDOWN_GRACE")];
    expect(vec![
        (changed(DEPLOY, "image: redis-api:0.1.0", "image: redis-api"), pinned("redis-api")),
        (changed(DEPLOY, "image: redis-api:0.1.0", "image: redis-api:latest"), pinned("redis-api:latest")),
        (changed(DEPLOY, "image: redis-api:0.1.0", "image: reg:5000/redis-api"), pinned("reg:5000/redis-api")),
        (
            changed(DEPLOY, "requests: {cpu: 100m, memory: 64Mi}", "requests: {memory: 64Mi}"),
            vec![c("needs cpu and memory requests")],
        ),
        (
            changed(DEPLOY, "limits: {memory: 64Mi}", "limits: {cpu: 100m, memory: 64Mi}"),
            vec![c("no CPU limit (it throttles a latency-sensitive server)")],
        ),
        (
            changed(DEPLOY, "limits: {memory: 64Mi}", "limits: {memory: 128Mi}"),
            vec![c("memory limit must equal the memory request")],
        ),
        (
            changed(DEPLOY, "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"),
            vec![c("securityContext.readOnlyRootFilesystem must be true")],
        ),
        (
            changed(DEPLOY, "capabilities: {drop: [ALL]}", "capabilities: {drop: [ALL], add: [NET_ADMIN]}"),
            vec![c(r#"securityContext.capabilities must be {"drop": ["ALL"]}"#)],
        ),
        (changed(DEPLOY, "            runAsNonRoot: true\n", ""), vec![c("securityContext.runAsNonRoot must be true")]),
        (
            changed(
                DEPLOY,
                "            seccompProfile: {type: RuntimeDefault}",
                "            seccompProfile: {type: Unconfined}",
            ),
            vec![c(r#"securityContext.seccompProfile must be {"type": "RuntimeDefault"}"#)],
        ),
        (
            changed(DEPLOY, "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true"),
            vec![c("securityContext.allowPrivilegeEscalation must be false")],
        ),
        (
            changed(DEPLOY, "runAsGroup: 10001", "runAsGroup: \"10001\""),
            vec![c("securityContext needs a numeric runAsUser and runAsGroup")],
        ),
        (
            changed(DEPLOY, "automountServiceAccountToken: false", "automountServiceAccountToken: true"),
            vec![at(DEPLOY, "automountServiceAccountToken must be false")],
        ),
        (
            changed(DEPLOY, "      securityContext:\n        runAsNonRoot: true\n", "      securityContext:\n"),
            vec![at(DEPLOY, "pod securityContext needs runAsNonRoot and seccompProfile RuntimeDefault")],
        ),
        (
            changed(DEPLOY, "port: http}", "port: probe}"),
            vec![c("readinessProbe port 'probe' is not a named port of the container")],
        ),
        // 5 s preStop + 10 s drain: not within 15 s; a bare number is seconds (as the server
        // reads it); without SHUTDOWN_GRACE the preStop alone counts; Kubernetes' default is 30 s.
        (changed(DEPLOY, "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 15"), grace()),
        (changed(DEPLOY, "value: 10s", "value: \"25\""), grace()),
        (changed(DEPLOY, "value: 10s", "value: 24s"), vec![]),
        (changed(DEPLOY, "sleep: {seconds: 5}", "sleep: {seconds: 30}"), grace()),
        (changed(DEPLOY, "      terminationGracePeriodSeconds: 30\n", ""), vec![]),
        (
            changed(DEPLOY, "value: 10s", "value: soon"),
            vec![c(
                "--shutdown-grace (SHUTDOWN_GRACE): expected a duration from 0 to 8760h such as 400ms, 30s or 5m, got \"soon\"",
            )],
        ),
    ]);
}

/// A Service's named targetPort is a named port of the pods it selects; a workload an
/// autoscaler scales sets no spec.replicas (without the autoscaler it may); each autoscaler's
/// target is a workload checked here.
#[test]
fn rules_services_and_autoscalers() {
    let svc = "redis-api-service.yaml";
    let hpa = "redis-api-horizontalpodautoscaler.yaml";
    let mut unscaled = changed(DEPLOY, "spec:\n  selector:", "spec:\n  replicas: 3\n  selector:");
    unscaled.retain(|(name, _)| name != hpa);
    expect(vec![
        (
            changed(svc, "targetPort: http", "targetPort: web"),
            vec![at(svc, "targetPort 'web' is not a named port of the selected pods")],
        ),
        (
            changed(DEPLOY, "spec:\n  selector:", "spec:\n  replicas: 3\n  selector:"),
            vec![at(DEPLOY, &format!("spec.replicas set, but k8s/{hpa} owns the size: applying this resets it"))],
        ),
        (unscaled, vec![]),
        (
            changed(hpa, "kind: Deployment, name: redis-api", "kind: Deployment, name: api"),
            vec![at(hpa, "scaleTargetRef Deployment/api is no workload checked here")],
        ),
    ]);
}

/// A render as `tools k8s render` prints it: the fixture's Deployment with `image`, with
/// the config checksum annotation when `checksum`, and the Service.
fn render(image: &str, checksum: bool) -> String {
    let mut deployment = fixture()[0].1.replace("image: redis-api:0.1.0", &format!("image: {image}"));
    if checksum {
        deployment = deployment.replacen(
            "    metadata:\n",
            "    metadata:\n      annotations: {redis-api/config-checksum: abc}\n",
            1,
        );
    }
    format!("{deployment}---\n{}", fixture()[1].1)
}

/// The render checks: our images overridden by deploy's, the config checksum on a pod
/// template that mounts a ConfigMap, and a workload at all.
#[test]
fn render_rules() {
    let ours = ["registry.example/p/redis-api:0.0.1".to_owned()];
    let check = |text: &str| {
        let outcome = rules::check_render(text, &ours).expect("YAML");
        (outcome.checked, outcome.broken.iter().map(ToString::to_string).collect::<Vec<_>>())
    };
    assert_eq!(check(&render(&ours[0], true)), (1, vec![]));
    assert_eq!(
        check(&render("redis-api:0.1.0", true)),
        (1, vec!["Deployment/redis-api: image redis-api:0.1.0 is not overridden by deploy".to_owned()])
    );
    assert_eq!(
        check(&render(&ours[0], false)),
        (
            1,
            vec!["Deployment/redis-api: mounts a ConfigMap but has no redis-api/config-checksum annotation".to_owned()]
        )
    );
    let no_volume = render(&ours[0], false).replace("configMap: {name: redis-master}", "emptyDir: {}");
    assert_eq!(check(&no_volume), (1, vec![]));
    assert_eq!(check(&fixture()[1].1), (0, vec!["render: no Deployment or StatefulSet in it".to_owned()]));
}

/// `tools manifests`: exit 0 and the summary on today's folders (its defaults), 1 with one
/// `error:` line per broken rule, 2 on bad arguments; `--render` reads stdin.
#[test]
fn tools_manifests_exit_status() {
    use std::io::Write;
    let tools = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tools"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tools runs");
        child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("stdin written");
        let out = child.wait_with_output().expect("tools ends");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let repo = repo().display().to_string();
    let (code, out) = tools(&["manifests", "--repo", &repo], "");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.ends_with(" manifests in k8s, k8s/loadtest: 0 rule(s) broken\n"), "{out}");

    let fixture = fixture_repo(&changed(DEPLOY, "image: redis-api:0.1.0", "image: redis-api"));
    let (code, out) = tools(&["manifests", "--repo", &fixture.path().display().to_string(), "k8s"], "");
    assert_eq!(code, Some(1), "{out}");
    let want = "error: k8s/redis-api-deployment.yaml container redis-api: image not pinned to a tag: redis-api\n\
                6 manifests in k8s: 1 rule(s) broken\n";
    assert_eq!(out, want);

    let ours = "registry.example/p/redis-api:0.0.1";
    assert_eq!(tools(&["manifests", "--render", ours], &render(ours, true)).0, Some(0));
    let (code, out) = tools(&["manifests", "--render", ours], &render("redis-api:0.1.0", true));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.ends_with("1 workloads in the render: 1 rule(s) broken\n"), "{out}");

    for args in
        [&["manifests", "--repo", &repo, "k8s/nowhere"][..], &["manifests", "--render"], &["manifests", "--nope"]]
    {
        let (code, out) = tools(args, "");
        assert_eq!(code, Some(2), "{args:?}: {out}");
    }
}
