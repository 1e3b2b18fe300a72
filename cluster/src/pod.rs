//! A manifest container made runnable on this machine: the files its volumes mount (ConfigMap
//! and Secret keys, emptyDir and claim directories) are written under a directory of its own,
//! and the absolute paths in its command, env and config files (`include`, `dir`, `aclfile`,
//! the TLS files) are mapped there. What runs is the manifest's own command with the manifest's own configuration.

use crate::acl;
use crate::manifests::{self, EnvValue, Object, container_env, volume, volume_mounts};
use anyhow::{Context, Result, anyhow, bail};
use std::fs;
use std::path::{Path, PathBuf};
use yaml_rust2::Yaml;

/// The Secret's data: the keys a container mounts or reads into its env.
pub struct Secret {
    pub name: String,
    pub data: Vec<(String, String)>,
}

impl Secret {
    /// The Secret `name` as `scripts/k8s.sh secret` creates it: fresh passwords and the ACL files
    /// rendered from the templates in `acl_dir` ([`acl::secret_data`]). Its keys must be exactly
    /// those of the example Secret `name` in `examples`, so the example cannot drift from what
    /// runs. Returns the passwords too (the harness's own logins).
    pub fn generated(
        examples: &[Object],
        name: &str,
        acl_dir: &Path,
        names: &acl::Names,
    ) -> Result<(Secret, acl::Passwords)> {
        let example = manifests::find(examples, "Secret", name)
            .map_err(|_| anyhow!("no example Secret {name} in k8s/examples/"))?;
        let mut shown: Vec<String> = ["stringData", "data"]
            .iter()
            .flat_map(|k| example.doc[*k].as_hash().into_iter().flatten())
            .filter_map(|(k, _)| k.as_str().map(str::to_owned))
            .collect();
        let passwords = acl::Passwords::generate()?;
        let data = acl::secret_data(acl_dir, names, &passwords)?;
        let mut made: Vec<String> = data.iter().map(|(k, _)| k.clone()).collect();
        shown.sort();
        made.sort();
        if shown != made {
            bail!("example Secret {name} has keys {shown:?}, scripts/k8s.sh secret makes {made:?}");
        }
        Ok((Secret { name: name.to_owned(), data }, passwords))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.data.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Appends `line` to the text of `key` (e.g. a user of the harness's own to an ACL file).
    pub fn append_line(&mut self, key: &str, line: &str) -> Result<()> {
        let (_, text) = self.data.iter_mut().find(|(k, _)| k == key).with_context(|| format!("no key {key}"))?;
        text.push_str(line);
        text.push('\n');
        Ok(())
    }
}

/// A process to start: argv and its whole environment.
#[derive(Debug, Clone)]
pub struct Cmd {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Names of a workload's native sidecars (init containers with `restartPolicy: Always`).
pub fn sidecars(workload: &Object) -> Vec<String> {
    let Some(spec) = workload.pod_spec() else { return Vec::new() };
    spec["initContainers"]
        .as_vec()
        .into_iter()
        .flatten()
        .filter(|c| c["restartPolicy"].as_str() == Some("Always"))
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// Mount path → local path, longest mount first.
struct Mounts(Vec<(String, PathBuf)>);

impl Mounts {
    fn map(&self, path: &str) -> Option<PathBuf> {
        self.0.iter().find_map(|(mount, local)| {
            let rest = path.strip_prefix(mount.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then(|| local.join(rest.trim_start_matches('/')))
        })
    }

    /// `path` mapped if it lies under a mount, else unchanged.
    fn rewrite(&self, s: &str) -> String {
        if s.starts_with('/') {
            self.map(s).map_or_else(|| s.to_owned(), |p| p.display().to_string())
        } else {
            s.to_owned()
        }
    }
}

/// Where container `name`'s files are written under its pod's directory `dir` (see [`prepare`]).
pub fn container_root(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}-fs"))
}

/// `text` (e.g. an exec probe's `sh -c` line) with every mount path of `container` followed by
/// `/` mapped under `root` (the container's [`container_root`]), longest mount first.
pub fn map_mount_paths(container: &Yaml, root: &Path, text: &str) -> String {
    let mut mounts: Vec<String> = volume_mounts(container).into_iter().map(|(m, _, _)| m).collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while !rest.is_empty() {
        for m in &mounts {
            let m = m.trim_end_matches('/');
            if let Some(after) = rest.strip_prefix(m).filter(|a| a.starts_with('/')) {
                out.push_str(&root.join(m.trim_start_matches('/')).display().to_string());
                rest = after;
                continue 'scan;
            }
        }
        let mut chars = rest.chars();
        out.extend(chars.next());
        rest = chars.as_str();
    }
    out
}

/// Materializes container `name` of `workload` under `dir` and returns how to run it.
pub fn prepare(workload: &Object, name: &str, objects: &[Object], secret: &Secret, dir: &Path) -> Result<Cmd> {
    let container = workload.container(name).with_context(|| format!("{}: no container {name}", workload.name()))?;
    let spec = workload.pod_spec().with_context(|| format!("{}: no pod template", workload.name()))?;
    let root = container_root(dir, name);
    let mut mounts = Vec::new();
    let mut files = Vec::new();
    for (mount_path, vol_name, sub_path) in volume_mounts(container) {
        let local = root.join(mount_path.trim_start_matches('/'));
        let vol = volume(spec, &vol_name).or_else(|| claim_template(workload, &vol_name));
        let vol = vol.with_context(|| format!("{}: volume {vol_name} not defined", workload.name()))?;
        let entries = volume_files(vol, objects, secret, workload.name())?;
        match (&sub_path, entries) {
            (Some(key), Some(entries)) => {
                let (_, text) = entries
                    .into_iter()
                    .find(|(k, _)| k == key)
                    .with_context(|| format!("{}: volume {vol_name} has no key {key} (subPath)", workload.name()))?;
                files.push((local.clone(), text));
            }
            (None, Some(entries)) => files.extend(entries.into_iter().map(|(k, t)| (local.join(k), t))),
            (_, None) => fs::create_dir_all(&local).with_context(|| local.display().to_string())?,
        }
        mounts.push((mount_path, local));
    }
    mounts.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
    let mounts = Mounts(mounts);
    for (path, text) in files {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
        }
        fs::write(&path, rewrite_config(&text, &mounts)).with_context(|| path.display().to_string())?;
    }
    let argv: Vec<String> = ["command", "args"]
        .iter()
        .flat_map(|k| container[*k].as_vec().into_iter().flatten())
        .map(|a| mounts.rewrite(a.as_str().unwrap_or("")))
        .collect();
    let mut env = Vec::new();
    for (key, value) in container_env(container) {
        let value = match value {
            EnvValue::Literal(v) => mounts.rewrite(&v),
            EnvValue::Secret { name, key: k } if name == secret.name => {
                secret.get(&k).with_context(|| format!("env {key}: Secret {name} has no key {k}"))?.to_owned()
            }
            EnvValue::Secret { name, .. } => bail!("env {key}: unknown Secret {name}"),
            EnvValue::ConfigMap { name, key: k } => manifests::configmap_data(objects, &name, &k)?.to_owned(),
            EnvValue::Other => continue,
        };
        env.push((key, value));
    }
    Ok(Cmd { argv, env })
}

/// A StatefulSet's volumeClaimTemplate named `name`, standing in for a volume.
fn claim_template<'a>(workload: &'a Object, name: &str) -> Option<&'a Yaml> {
    workload.doc["spec"]["volumeClaimTemplates"].as_vec()?.iter().find(|t| t["metadata"]["name"].as_str() == Some(name))
}

/// The files of a ConfigMap or Secret volume (`None`: a directory volume).
fn volume_files(vol: &Yaml, objects: &[Object], secret: &Secret, owner: &str) -> Result<Option<Vec<(String, String)>>> {
    let (all, items): (Vec<(String, String)>, &Yaml) = if let Some(cm) = vol["configMap"]["name"].as_str() {
        let obj = manifests::find(objects, "ConfigMap", cm)?;
        let data = obj.doc["data"].as_hash().into_iter().flatten();
        (
            data.map(|(k, v)| (k.as_str().unwrap_or("").into(), v.as_str().unwrap_or("").into())).collect(),
            &vol["configMap"]["items"],
        )
    } else if let Some(s) = vol["secret"]["secretName"].as_str() {
        if s != secret.name {
            bail!("{owner}: unknown Secret {s}");
        }
        (secret.data.clone(), &vol["secret"]["items"])
    } else {
        return Ok(None);
    };
    let Some(items) = items.as_vec() else { return Ok(Some(all)) };
    let mut out = Vec::new();
    for item in items {
        let key = item["key"].as_str().unwrap_or("");
        let path = item["path"].as_str().unwrap_or(key);
        let text =
            all.iter().find(|(k, _)| k == key).with_context(|| format!("{owner}: volume item key {key} missing"))?;
        out.push((path.to_owned(), text.1.clone()));
    }
    Ok(Some(out))
}

/// The Redis config directives that name a file or directory.
const PATH_DIRECTIVES: [&str; 8] = [
    "include ",
    "dir ",
    "aclfile ",
    "tls-cert-file ",
    "tls-key-file ",
    "tls-ca-cert-file ",
    "tls-client-cert-file ",
    "tls-client-key-file ",
];

/// Maps the absolute paths of Redis config directives that name files ([`PATH_DIRECTIVES`]).
fn rewrite_config(text: &str, mounts: &Mounts) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim_start();
        let mapped = PATH_DIRECTIVES.iter().find_map(|d| {
            let arg = trimmed.strip_prefix(d)?.trim();
            Some(format!("{}{}", d, mounts.rewrite(arg)))
        });
        out.push_str(mapped.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe's `sh -c` line reads the file its container mounts, where `up` wrote it; other
    /// absolute paths (a prefix of a mount, not under it) stay as they are.
    #[test]
    fn probe_paths_map_under_the_container_root() {
        let c = yaml_rust2::YamlLoader::load_from_str(
            "name: r\nvolumeMounts:\n  - {name: a, mountPath: /etc/redis-auth}\n  - {name: b, mountPath: /etc/redis}\n",
        )
        .unwrap()
        .remove(0);
        let line = "REDISCLI_AUTH=$(cat /etc/redis-auth/password-read) redis-cli -c /etc/redis/x /etc/redis-authx";
        assert_eq!(
            map_mount_paths(&c, Path::new("/st/pod-1/r-fs"), line),
            "REDISCLI_AUTH=$(cat /st/pod-1/r-fs/etc/redis-auth/password-read) redis-cli -c /st/pod-1/r-fs/etc/redis/x /etc/redis-authx"
        );
    }
}
