//! The project's own rules for `k8s/` and `k8s/loadtest/`, beyond schema validation (which
//! `kubernetes-validate` does), and the checks of what `scripts/k8s.sh render` prints.
//!
//! Rules: one object per file, named `<component>-<kind>.yaml` (`.example.yaml` in
//! `examples/`); each folder's Kustomization lists every manifest of that folder; the labels
//! app/role/tier + app.kubernetes.io/{name,component,part-of} on every object, identical in
//! selectors, pod templates and the objects that select them; per container a pinned image,
//! CPU+memory requests, memory limit = request, no CPU limit, a restricted securityContext; no
//! service account token; no password in a ConfigMap, no Secret outside `examples/`; the grace
//! period outlasts preStop + SHUTDOWN_GRACE; a port named by a probe or by a Service's
//! targetPort is a named port of the container (of the selected pods); no two workloads' pods
//! carry the same labels; a workload a HorizontalPodAutoscaler scales sets no `spec.replicas`
//! (the autoscaler owns the size: every apply would reset the live one to it), and each
//! autoscaler's target is a workload checked here. Selectors may point at pods of any folder
//! checked in the same run.
//!
//! The render checks: every image of ours (`redis-api*`) is one of the images `deploy` was
//! given, and every workload that mounts a ConfigMap carries the
//! [`CONFIG_CHECKSUM`] annotation on its pod template (a changed configuration rolls it).
//!
//! Each rule is a function from the loaded YAML to the rules it finds broken; nothing here
//! panics on a malformed manifest (a missing field reads as absent).

use crate::manifests::{self, EnvValue, Object};
use anyhow::{Context, Result};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use yaml_rust2::{Yaml, YamlLoader};

/// The `role` label's values.
pub const ROLES: &[&str] = &["master", "replica", "api", "updater", "loadgen", "aggregator", "hello"];
/// The labels every object carries besides `role` (a Secret has no role).
const LABELS: &[&str] =
    &["app", "tier", "app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/part-of"];
/// The `app.kubernetes.io/part-of` of every object.
const PART_OF: &str = "redis-api";
/// The kinds of object `k8s/` may hold.
pub const KINDS: &[&str] = &[
    "ConfigMap",
    "Deployment",
    "HorizontalPodAutoscaler",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "Secret",
    "Service",
    "StatefulSet",
];
/// The kinds with a pod template.
const WORKLOADS: &[&str] = &["Deployment", "StatefulSet"];
/// A container's restricted securityContext: each key and its value, written as JSON (the
/// messages show it so; JSON is YAML, so it is also what the manifest's value is compared to).
const RESTRICTED: &[(&str, &str)] = &[
    ("runAsNonRoot", "true"),
    ("readOnlyRootFilesystem", "true"),
    ("allowPrivilegeEscalation", "false"),
    ("capabilities", r#"{"drop": ["ALL"]}"#),
    ("seccompProfile", r#"{"type": "RuntimeDefault"}"#),
];
/// The seccomp profile of every pod and container.
const SECCOMP: &str = r#"{"type": "RuntimeDefault"}"#;
/// Kubernetes' default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE_SECONDS: i64 = 30;
/// The settings a ConfigMap's Redis configuration must not hold: a password (the Secret's ACL
/// files and replica-auth.conf hold them).
const PASSWORD_SETTINGS: &[&str] = &["requirepass", "masterauth"];
/// The pod template annotation `scripts/k8s.sh render` sets from the ConfigMaps' content.
pub const CONFIG_CHECKSUM: &str = "redis-api/config-checksum";
/// The folder of example objects (not applied) inside a checked folder.
const EXAMPLES: &str = "examples";

/// One broken rule: where (a file as shown, with ` container NAME` for a container's rules, or
/// `Kind/name` in a render) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub at: String,
    pub message: String,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

fn broken(at: &str, message: impl Into<String>) -> Broken {
    Broken { at: at.to_owned(), message: message.into() }
}

/// What a check looked at (manifest files, or workloads of a render) and the rules broken.
#[derive(Debug, Default)]
pub struct Outcome {
    pub checked: usize,
    pub broken: Vec<Broken>,
}

/// One object that passed the per-file rules far enough to take part in the cross-checks: the
/// file as shown, and the object.
struct Checked {
    at: String,
    obj: Object,
}

/// Checks the manifests of `folders` (each relative to `repo`, or absolute), files shown
/// relative to `repo`. `Err` only when a folder cannot be listed.
pub fn check_folders(repo: &Path, folders: &[PathBuf]) -> Result<Outcome> {
    let repo = std::fs::canonicalize(repo).with_context(|| format!("repository {}", repo.display()))?;
    let mut out = Outcome::default();
    let mut checked = Vec::new();
    for folder in folders {
        let dir = repo.join(folder);
        let mut files = manifests::yaml_files(&dir)?;
        if dir.join(EXAMPLES).is_dir() {
            files.extend(manifests::yaml_files(&dir.join(EXAMPLES))?);
        }
        out.checked += files.len();
        for file in &files {
            let at = shown(&repo, file);
            match file_rules(&at, file) {
                Ok(obj) => {
                    out.broken.extend(object_rules(&at, &obj));
                    checked.push(Checked { at, obj });
                }
                Err(b) => out.broken.push(b),
            }
        }
        out.broken.extend(kustomization_rules(&repo, &dir)?);
    }
    out.broken.extend(autoscaler_rules(&checked));
    out.broken.extend(selector_rules(&checked));
    Ok(out)
}

/// The file as messages show it: relative to the repository when inside it.
fn shown(repo: &Path, path: &Path) -> String {
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    match abs.strip_prefix(repo) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".to_owned(),
        Ok(rel) => rel.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

/// The file holds one object of a kind used here, in a file named for it: the object, else
/// the rule it breaks (the object's own rules are then not checked).
fn file_rules(at: &str, file: &Path) -> Result<Object, Broken> {
    let mut docs =
        manifests::load_file(file).map_err(|e| broken(at, format!("not readable YAML: {}", e.root_cause())))?;
    if docs.len() != 1 {
        return Err(broken(at, format!("one object per file, found {}", docs.len())));
    }
    let obj = docs.remove(0);
    if !KINDS.contains(&obj.kind()) || obj.doc["metadata"].as_hash().is_none() {
        return Err(broken(at, format!("not one of the Kubernetes kinds used here ({})", KINDS.join(", "))));
    }
    Ok(obj)
}

/// Whether the object's file is in an `examples/` folder.
fn in_examples(obj: &Object) -> bool {
    obj.file.parent().and_then(Path::file_name).is_some_and(|n| n == EXAMPLES)
}

/// The rules of one object on its own: its file name, labels, no Secret, no password in a
/// ConfigMap, and a workload's selector and pod template.
fn object_rules(at: &str, obj: &Object) -> Vec<Broken> {
    let mut out = Vec::new();
    let kind = obj.kind();
    let examples = in_examples(obj);
    let suffix = format!("-{}{}", kind.to_lowercase(), if examples { ".example.yaml" } else { ".yaml" });
    if !obj.file.file_name().is_some_and(|n| n.to_string_lossy().ends_with(&suffix)) {
        out.push(broken(at, format!("a {kind} belongs in a file named <component>{suffix}")));
    }
    let labels = object_labels(obj);
    let missing: Vec<String> = LABELS.iter().filter(|k| labels[**k].is_badvalue()).map(|k| k.to_string()).collect();
    if !missing.is_empty() || labels["app.kubernetes.io/part-of"].as_str() != Some(PART_OF) {
        let what = if missing.is_empty() { "app.kubernetes.io/part-of".to_owned() } else { py_list(&missing) };
        out.push(broken(at, format!("labels missing or wrong: {what}")));
    }
    if kind != "Secret" && !labels["role"].as_str().is_some_and(|r| ROLES.contains(&r)) {
        out.push(broken(at, format!("label role must be one of {}", ROLES.join(", "))));
    }
    if kind == "Secret" && !examples {
        out.push(broken(at, "no Secret in k8s/: scripts/k8s.sh secret creates it"));
    }
    if kind == "ConfigMap" && configmap_has_password(&obj.doc) {
        out.push(broken(
            at,
            "a password setting in a ConfigMap (the Secret's ACL files and replica-auth.conf hold them)",
        ));
    }
    if WORKLOADS.contains(&kind) {
        if !same(&obj.doc["spec"]["selector"]["matchLabels"], &labels) {
            out.push(broken(at, "selector differs from the labels"));
        }
        out.extend(pod_rules(at, obj, &labels));
    }
    out
}

/// `metadata.labels`, an empty mapping when there are none.
fn object_labels(obj: &Object) -> Yaml {
    match &obj.doc["metadata"]["labels"] {
        Yaml::BadValue | Yaml::Null => Yaml::Hash(Default::default()),
        labels => labels.clone(),
    }
}

/// Whether a line of the ConfigMap's data sets a Redis password.
fn configmap_has_password(doc: &Yaml) -> bool {
    let values = doc["data"].as_hash().into_iter().flatten().filter_map(|(_, v)| v.as_str());
    values.flat_map(str::lines).any(|line| {
        let line = line.trim_start();
        PASSWORD_SETTINGS.iter().any(|s| {
            line.strip_prefix(s).is_some_and(|rest| !rest.starts_with(|c: char| c.is_alphanumeric() || c == '_'))
        })
    })
}

/// The rules of a workload's pod template: its labels are the object's (`labels`), no service
/// account token, a restricted pod securityContext, and each container's rules.
fn pod_rules(at: &str, workload: &Object, labels: &Yaml) -> Vec<Broken> {
    let mut out = Vec::new();
    let template = &workload.doc["spec"]["template"];
    let spec = &template["spec"];
    if !same(&template["metadata"]["labels"], labels) {
        out.push(broken(at, "pod template labels differ from the object's labels"));
    }
    if spec["automountServiceAccountToken"] != Yaml::Boolean(false) {
        out.push(broken(at, "automountServiceAccountToken must be false"));
    }
    let psc = &spec["securityContext"];
    if psc["runAsNonRoot"] != Yaml::Boolean(true) || !same(&psc["seccompProfile"], &json(SECCOMP)) {
        out.push(broken(at, "pod securityContext needs runAsNonRoot and seccompProfile RuntimeDefault"));
    }
    for c in workload.containers() {
        out.extend(container_rules(&format!("{at} container {}", py_text(&c["name"])), spec, c));
    }
    out
}

/// The names of a container's ports.
fn port_names(c: &Yaml) -> Vec<&Yaml> {
    c["ports"].as_vec().into_iter().flatten().map(|p| &p["name"]).filter(|n| !n.is_badvalue()).collect()
}

/// The rules of one container (`at` names it) of pod spec `spec`: a pinned image, resources,
/// a restricted securityContext, probes on named ports it has, and a grace period longer than
/// its preStop sleep and drain.
fn container_rules(at: &str, spec: &Yaml, c: &Yaml) -> Vec<Broken> {
    let mut out = Vec::new();
    let image = c["image"].as_str().unwrap_or("");
    let last = image.rsplit('/').next().unwrap_or(image);
    if !last.contains(':') || image.ends_with(":latest") {
        out.push(broken(at, format!("image not pinned to a tag: {image}")));
    }
    let (req, lim) = (&c["resources"]["requests"], &c["resources"]["limits"]);
    if req["cpu"].is_badvalue() || req["memory"].is_badvalue() {
        out.push(broken(at, "needs cpu and memory requests"));
    }
    if !lim["cpu"].is_badvalue() {
        out.push(broken(at, "no CPU limit (it throttles a latency-sensitive server)"));
    }
    if !same(&lim["memory"], &req["memory"]) {
        out.push(broken(at, "memory limit must equal the memory request"));
    }
    let sc = &c["securityContext"];
    for (key, want) in RESTRICTED {
        if !same(&sc[*key], &json(want)) {
            out.push(broken(at, format!("securityContext.{key} must be {want}")));
        }
    }
    if !matches!(sc["runAsUser"], Yaml::Integer(_)) || !matches!(sc["runAsGroup"], Yaml::Integer(_)) {
        out.push(broken(at, "securityContext needs a numeric runAsUser and runAsGroup"));
    }
    let names = port_names(c);
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let action =
            ["httpGet", "tcpSocket"].iter().map(|a| &c[probe][*a]).find(|a| a.as_hash().is_some_and(|h| !h.is_empty()));
        if let Some(Yaml::String(port)) = action.map(|a| &a["port"])
            && !names.iter().any(|n| n.as_str() == Some(port))
        {
            out.push(broken(at, format!("{probe} port {} is not a named port of the container", py_str(port))));
        }
    }
    match shutdown_grace(c) {
        Ok(grace) => {
            let stop =
                Duration::from_secs(c["lifecycle"]["preStop"]["sleep"]["seconds"].as_i64().unwrap_or(0).max(0) as u64);
            let limit = spec["terminationGracePeriodSeconds"].as_i64().unwrap_or(DEFAULT_GRACE_SECONDS).max(0);
            if stop + grace >= Duration::from_secs(limit as u64) {
                out.push(broken(at, "terminationGracePeriodSeconds must exceed preStop sleep + SHUTDOWN_GRACE"));
            }
        }
        Err(message) => out.push(broken(at, message)),
    }
    out
}

/// The container's `SHUTDOWN_GRACE` as the server reads it (its own flag and parser: a bare
/// number is seconds, deprecated); zero when unset (a container that is no redis-api server
/// drains nothing). `Err`: the message of a value that cannot be checked.
fn shutdown_grace(c: &Yaml) -> Result<Duration, String> {
    const FLAGS: &[cli::Flag] = &[redis_api::config::SHUTDOWN_GRACE];
    let env = manifests::container_env(c);
    let Some((_, value)) = env.iter().find(|(name, _)| name == "SHUTDOWN_GRACE") else { return Ok(Duration::ZERO) };
    let EnvValue::Literal(text) = value else {
        return Err("SHUTDOWN_GRACE must be a literal value (the grace period rule reads it)".to_owned());
    };
    let lookup = |key: &str| (key == "SHUTDOWN_GRACE").then(|| text.clone());
    match cli::Args::parse(FLAGS, Vec::<std::ffi::OsString>::new(), &lookup, 0) {
        Ok(cli::Parsed::Run(args)) => args.duration(&FLAGS[0]).map_err(|e| e.0),
        Ok(_) => Err("SHUTDOWN_GRACE: not read".to_owned()),
        Err(e) => Err(e.0),
    }
}

/// The folder's Kustomization lists exactly the folder's manifests (those of `examples/` are
/// not applied).
fn kustomization_rules(repo: &Path, dir: &Path) -> Result<Vec<Broken>> {
    let file = dir.join("Kustomization");
    if !file.is_file() {
        return Ok(vec![broken(&shown(repo, dir), "no Kustomization file")]);
    }
    let at = shown(repo, &file);
    let kust = match manifests::load_file(&file) {
        Ok(docs) if docs.len() == 1 => docs.into_iter().next().map(|o| o.doc).unwrap_or(Yaml::BadValue),
        Ok(docs) => return Ok(vec![broken(&at, format!("one object per file, found {}", docs.len()))]),
        Err(e) => return Ok(vec![broken(&at, format!("not readable YAML: {}", e.root_cause()))]),
    };
    let mut listed: Vec<String> = kust["resources"].as_vec().into_iter().flatten().map(py_text).collect();
    listed.sort();
    let mut present: Vec<String> = manifests::yaml_files(dir)?
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    present.sort();
    if listed == present {
        return Ok(Vec::new());
    }
    let message =
        format!("resources {} != the manifests in {}/ {}", py_list(&listed), shown(repo, dir), py_list(&present));
    Ok(vec![broken(&at, message)])
}

/// A workload an autoscaler scales sets no `spec.replicas`; every autoscaler's target is a
/// workload checked in this run.
fn autoscaler_rules(checked: &[Checked]) -> Vec<Broken> {
    // Each autoscaler and the (kind, name) it scales, in file order.
    let autoscalers: Vec<(&str, String, String)> = checked
        .iter()
        .filter(|c| c.obj.kind() == "HorizontalPodAutoscaler")
        .map(|c| {
            let target = &c.obj.doc["spec"]["scaleTargetRef"];
            (c.at.as_str(), py_text(&target["kind"]), py_text(&target["name"]))
        })
        .collect();
    let workloads: Vec<&Checked> = checked.iter().filter(|c| WORKLOADS.contains(&c.obj.kind())).collect();
    let mut out = Vec::new();
    for (hpa, kind, name) in &autoscalers {
        if !workloads.iter().any(|w| w.obj.kind() == kind && w.obj.name() == name) {
            out.push(broken(hpa, format!("scaleTargetRef {kind}/{name} is no workload checked here")));
        }
    }
    for w in workloads.iter().filter(|w| !w.obj.doc["spec"]["replicas"].is_badvalue()) {
        let scaler = autoscalers.iter().find(|(_, kind, name)| w.obj.kind() == kind && w.obj.name() == name);
        if let Some((hpa, _, _)) = scaler {
            out.push(broken(&w.at, format!("spec.replicas set, but {hpa} owns the size: applying this resets it")));
        }
    }
    out
}

/// The selectors of an object (a Service's, a PodDisruptionBudget's, a NetworkPolicy's and its
/// same-namespace peers'): each must equal some pod template's labels.
fn selectors(obj: &Object) -> Vec<&Yaml> {
    let spec = &obj.doc["spec"];
    match obj.kind() {
        "Service" => vec![&spec["selector"]],
        "PodDisruptionBudget" => vec![&spec["selector"]["matchLabels"]],
        "NetworkPolicy" => {
            let mut out = vec![&spec["podSelector"]["matchLabels"]];
            // A peer without a namespaceSelector is in the policy's namespace: a pod of ours.
            let rules = ["egress", "ingress"].into_iter().flat_map(|k| spec[k].as_vec().into_iter().flatten());
            for rule in rules {
                let peers = ["to", "from"].into_iter().flat_map(|k| rule[k].as_vec().into_iter().flatten());
                for peer in peers.filter(|p| !p["podSelector"].is_badvalue() && p["namespaceSelector"].is_badvalue()) {
                    out.push(&peer["podSelector"]["matchLabels"]);
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// No two workloads' pods carry the same labels; every selector equals some pod template's
/// labels; a Service's named targetPorts are named ports of the pods it selects.
fn selector_rules(checked: &[Checked]) -> Vec<Broken> {
    let pods: Vec<(&str, &Object)> =
        checked.iter().filter(|c| WORKLOADS.contains(&c.obj.kind())).map(|c| (c.at.as_str(), &c.obj)).collect();
    let mut out = Vec::new();
    for (at, pod) in &pods {
        if pods.iter().filter(|(_, other)| same(labels(other), labels(pod))).count() > 1 {
            out.push(broken(at, "another workload's pods carry the same labels (selectors would take both)"));
        }
    }
    for c in checked {
        for sel in selectors(&c.obj) {
            if !pods.iter().any(|(_, pod)| same(labels(pod), sel)) {
                out.push(broken(&c.at, format!("selector matches no pod template's labels exactly: {}", py(sel))));
            }
        }
    }
    for c in checked.iter().filter(|c| c.obj.kind() == "Service") {
        let spec = &c.obj.doc["spec"];
        let named: Vec<&str> =
            spec["ports"].as_vec().into_iter().flatten().filter_map(|p| p["targetPort"].as_str()).collect();
        for (_, pod) in pods.iter().filter(|(_, pod)| same(labels(pod), &spec["selector"])) {
            let names: Vec<&Yaml> = pod.containers().into_iter().flat_map(port_names).collect();
            for port in named.iter().filter(|p| !names.iter().any(|n| n.as_str() == Some(p))) {
                out.push(broken(
                    &c.at,
                    format!("targetPort {} is not a named port of the selected pods", py_str(port)),
                ));
            }
        }
    }
    out
}

/// Checks what `scripts/k8s.sh render` printed (`text`, a YAML stream): every image of ours is
/// one of `images`, every workload mounting a ConfigMap carries [`CONFIG_CHECKSUM`], and there
/// is a workload at all. `Err`: `text` is not YAML.
pub fn check_render(text: &str, images: &[String]) -> Result<Outcome> {
    let docs = YamlLoader::load_from_str(text).context("the render is not YAML")?;
    let workloads: Vec<Object> = docs
        .into_iter()
        .map(|doc| Object { file: PathBuf::from("-"), doc })
        .filter(|o| WORKLOADS.contains(&o.kind()))
        .collect();
    let mut out = Outcome { checked: workloads.len(), broken: Vec::new() };
    if workloads.is_empty() {
        out.broken.push(broken("render", "no Deployment or StatefulSet in it"));
    }
    for obj in &workloads {
        out.broken.extend(render_rules(obj, images));
    }
    Ok(out)
}

/// The render rules of one workload.
fn render_rules(obj: &Object, images: &[String]) -> Vec<Broken> {
    let at = format!("{}/{}", obj.kind(), obj.name());
    let pod = &obj.doc["spec"]["template"];
    let mut out = Vec::new();
    for image in obj.containers().into_iter().filter_map(|c| c["image"].as_str()) {
        if image.starts_with("redis-api") && !images.iter().any(|i| i == image) {
            out.push(broken(&at, format!("image {image} is not overridden by deploy")));
        }
    }
    let mounts = pod["spec"]["volumes"].as_vec().into_iter().flatten().any(|v| !v["configMap"].is_badvalue());
    if mounts && pod["metadata"]["annotations"][CONFIG_CHECKSUM].is_badvalue() {
        out.push(broken(&at, format!("mounts a ConfigMap but has no {CONFIG_CHECKSUM} annotation")));
    }
    out
}

/// A workload's pod template labels.
fn labels(workload: &Object) -> &Yaml {
    &workload.doc["spec"]["template"]["metadata"]["labels"]
}

/// Whether two YAML values are equal as data: mappings whatever their key order (yaml-rust2's
/// own `==` compares their order too), numbers by value.
fn same(a: &Yaml, b: &Yaml) -> bool {
    match (a, b) {
        (Yaml::Hash(a), Yaml::Hash(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| same(v, w)))
        }
        (Yaml::Array(a), Yaml::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(v, w)| same(v, w)),
        (Yaml::Real(_), Yaml::Real(_)) => a.as_f64() == b.as_f64(),
        _ => a == b,
    }
}

/// A constant JSON value of this module's tables, as YAML.
fn json(text: &str) -> Yaml {
    YamlLoader::load_from_str(text).ok().and_then(|docs| docs.into_iter().next()).unwrap_or(Yaml::BadValue)
}

/// A value as messages show it (Python's notation, as the rules' messages always have):
/// `'text'`, `{'k': 'v'}`, `['a', 'b']`, `None`.
fn py(y: &Yaml) -> String {
    match y {
        Yaml::String(s) => py_str(s),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Real(r) => r.clone(),
        Yaml::Boolean(true) => "True".to_owned(),
        Yaml::Boolean(false) => "False".to_owned(),
        Yaml::Array(a) => format!("[{}]", a.iter().map(py).collect::<Vec<_>>().join(", ")),
        Yaml::Hash(h) => {
            format!("{{{}}}", h.iter().map(|(k, v)| format!("{}: {}", py(k), py(v))).collect::<Vec<_>>().join(", "))
        }
        Yaml::Null | Yaml::BadValue | Yaml::Alias(_) => "None".to_owned(),
    }
}

/// A text value as is; any other as [`py`] shows it.
fn py_text(y: &Yaml) -> String {
    y.as_str().map_or_else(|| py(y), str::to_owned)
}

fn py_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn py_list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| py_str(s)).collect::<Vec<_>>().join(", "))
}
