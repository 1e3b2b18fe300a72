//! Cross-checks of `k8s/` against each other and against the code: selectors, named ports,
//! env names, probe paths, Secret and ConfigMap keys, and the Redis configs run for real.

use local_cluster::manifests::{self, EnvValue, Object, container_env};
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
    let mut known: Vec<String> = redis_api::config::FLAGS.iter().map(|f| f.env.to_owned()).collect();
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
/// k8s/, Secret keys in the example Secret and in the script that creates the real one.
#[test]
fn referenced_keys_exist() {
    let objs = objects();
    let ex = examples();
    let k8s_sh = std::fs::read_to_string(repo().join("scripts/k8s.sh")).unwrap();
    let secret_has = |name: &str, key: &str| {
        let example = manifests::find(&ex, "Secret", name).unwrap_or_else(|e| panic!("{e}"));
        let in_example = !example.doc["stringData"][key].is_badvalue() || !example.doc["data"][key].is_badvalue();
        assert!(in_example, "Secret {name} example lacks key {key}");
        assert!(k8s_sh.contains(&format!("--from-file={key}=")), "scripts/k8s.sh does not create key {key}");
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

/// Starts redis-server with `conf` (paths mapped into `dir`) on a free port; returns its INFO.
fn run_redis_conf(conf: &str, dir: &Path, auth: &str) -> String {
    std::fs::write(dir.join("auth.conf"), auth).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let mapped: String = conf
        .lines()
        .map(|l| match l.trim() {
            "dir /data" => format!("dir {}", dir.join("data").display()),
            "include /etc/redis-auth/auth.conf" => format!("include {}", dir.join("auth.conf").display()),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.join("redis.conf");
    std::fs::write(&path, mapped).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new("redis-server")
        .arg(&path)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-server");
    let until = Instant::now() + Duration::from_secs(5);
    let info = loop {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "INFO"])
            .env("REDISCLI_AUTH", "test-password")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("redis_version") {
            break text;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let out = child.wait_with_output().unwrap();
            panic!("redis-server refused the config ({status}): {}", String::from_utf8_lossy(&out.stdout));
        }
        assert!(Instant::now() < until, "redis-server with the config did not answer");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    info
}

/// The ConfigMaps' Redis configs are valid for a real redis-server, with the Secret's include.
#[test]
fn redis_configs_start_a_real_server() {
    let objs = objects();
    let auth = "requirepass test-password\nmasterauth test-password\n";
    let dir = tempfile::tempdir().unwrap();
    let replica = manifests::configmap_data(&objs, "redis-replica-config", "replica.conf").unwrap();
    let info = run_redis_conf(replica, dir.path(), auth);
    assert!(info.contains("role:slave"), "{info}");
    let dir = tempfile::tempdir().unwrap();
    let master = manifests::configmap_data(&objs, "redis-master-config", "redis.conf").unwrap();
    let info = run_redis_conf(master, dir.path(), auth);
    assert!(info.contains("role:master") && info.contains("aof_enabled:1"), "{info}");
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
