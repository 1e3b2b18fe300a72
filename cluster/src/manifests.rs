//! Reading the Kubernetes manifests in `k8s/`: every YAML document, and the few lookups the
//! local cluster and the cross-checks need (objects by kind and name, ConfigMap data, a
//! container's env).

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

/// One parsed manifest document and the file it came from.
#[derive(Debug, Clone)]
pub struct Object {
    pub file: PathBuf,
    pub doc: Yaml,
}

impl Object {
    pub fn kind(&self) -> &str {
        self.doc["kind"].as_str().unwrap_or("")
    }

    pub fn name(&self) -> &str {
        self.doc["metadata"]["name"].as_str().unwrap_or("")
    }

    /// The pod spec of a workload (Deployment, StatefulSet), if any.
    pub fn pod_spec(&self) -> Option<&Yaml> {
        let spec = &self.doc["spec"]["template"]["spec"];
        (!spec.is_badvalue()).then_some(spec)
    }

    /// All containers of a workload: init (sidecar) containers and regular ones.
    pub fn containers(&self) -> Vec<&Yaml> {
        let Some(spec) = self.pod_spec() else { return Vec::new() };
        ["initContainers", "containers"].iter().flat_map(|k| spec[*k].as_vec().into_iter().flatten()).collect()
    }

    pub fn container(&self, name: &str) -> Option<&Yaml> {
        self.containers().into_iter().find(|c| c["name"].as_str() == Some(name))
    }
}

/// Every document of every `*.yaml` file directly in `dir` (sorted by file name).
pub fn load_dir(dir: &Path) -> Result<Vec<Object>> {
    let mut out = Vec::new();
    for file in yaml_files(dir)? {
        out.extend(load_file(&file)?);
    }
    Ok(out)
}

/// The `*.yaml` (and `*.yml`) files directly in `dir`, sorted by name.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| dir.display().to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// The documents of one file, empty ones (`---` alone, comments only) left out.
pub fn load_file(file: &Path) -> Result<Vec<Object>> {
    let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
    let docs = YamlLoader::load_from_str(&text).with_context(|| file.display().to_string())?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).map(|doc| Object { file: file.to_path_buf(), doc }).collect())
}

/// The object of `kind` named `name`.
pub fn find<'a>(objects: &'a [Object], kind: &str, name: &str) -> Result<&'a Object> {
    objects
        .iter()
        .find(|o| o.kind() == kind && o.name() == name)
        .with_context(|| format!("no {kind} named {name} in k8s/"))
}

/// The text under `data.<key>` of ConfigMap `name`.
pub fn configmap_data<'a>(objects: &'a [Object], name: &str, key: &str) -> Result<&'a str> {
    find(objects, "ConfigMap", name)?.doc["data"][key]
        .as_str()
        .with_context(|| format!("ConfigMap {name} has no data key {key}"))
}

/// How a container's environment variable gets its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    Literal(String),
    /// `valueFrom.secretKeyRef`.
    Secret {
        name: String,
        key: String,
    },
    /// `valueFrom.configMapKeyRef`.
    ConfigMap {
        name: String,
        key: String,
    },
    /// Anything else (fieldRef, resourceFieldRef).
    Other,
}

/// A container's `env` list, in order.
pub fn container_env(container: &Yaml) -> Vec<(String, EnvValue)> {
    let mut out = Vec::new();
    for e in container["env"].as_vec().into_iter().flatten() {
        let Some(name) = e["name"].as_str() else { continue };
        let value = if let Some(v) = e["value"].as_str() {
            EnvValue::Literal(v.to_owned())
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_hash().map(|_| &e["valueFrom"]["secretKeyRef"]) {
            EnvValue::Secret { name: str_of(&r["name"]), key: str_of(&r["key"]) }
        } else if let Some(r) = e["valueFrom"]["configMapKeyRef"].as_hash().map(|_| &e["valueFrom"]["configMapKeyRef"])
        {
            EnvValue::ConfigMap { name: str_of(&r["name"]), key: str_of(&r["key"]) }
        } else if let Some(v) = e["value"].as_i64() {
            EnvValue::Literal(v.to_string())
        } else {
            EnvValue::Other
        };
        out.push((name.to_owned(), value));
    }
    out
}

fn str_of(y: &Yaml) -> String {
    y.as_str().unwrap_or("").to_owned()
}

/// `(mountPath, volume name, subPath)` of a container's volume mounts.
pub fn volume_mounts(container: &Yaml) -> Vec<(String, String, Option<String>)> {
    container["volumeMounts"]
        .as_vec()
        .into_iter()
        .flatten()
        .map(|m| (str_of(&m["mountPath"]), str_of(&m["name"]), m["subPath"].as_str().map(str::to_owned)))
        .collect()
}

/// The pod volume `name`.
pub fn volume<'a>(pod_spec: &'a Yaml, name: &str) -> Option<&'a Yaml> {
    pod_spec["volumes"].as_vec()?.iter().find(|v| v["name"].as_str() == Some(name))
}
