//! The kustomize overlay `deploy`, `render` and `loadtest` apply: a base (K8S_DIR, or
//! k8s/loadtest/) with our images overridden (IMAGE/LOADTEST_IMAGE, else the ones
//! scripts/image.sh pushed last, recorded in `.k8s-image`) and, for k8s/, a checksum of the
//! ConfigMaps each workload mounts on its pod template, so a changed configuration rolls its pods
//! (and only theirs).

use super::{IMAGE, K8S_DIR, K8s, LOADTEST_IMAGE, WorkDir, log};
use anyhow::{Context, Result};
use cli::{Args, UsageError};
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

/// The manifests' own name for the API's image, and what deploy uses when none was pushed.
const API: (&str, &str) = ("redis-api", "redis-api:0.1.0");
/// The same for the kit's image (the updater and k8s/loadtest/).
const KIT: (&str, &str) = ("redis-api-loadtest", "redis-api-loadtest:0.1.0");
/// The file scripts/image.sh writes: the API's image reference, then the kit's, one a line.
const IMAGE_FILE: &str = ".k8s-image";

/// `NAME:TAG` split into its name and tag; a registry's port (`host:5000/name:tag`) belongs to
/// the name. `None` for anything else (no tag, a digest, an empty part).
pub(super) fn split_image(image: &str) -> Option<(&str, &str)> {
    let (name, tag) = image.rsplit_once(':')?;
    let name_ok = match name.split_once(':') {
        None => !name.is_empty(),
        Some((host, rest)) => {
            let (port, path) = rest.split_once('/')?;
            !host.is_empty() && !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) && !path.is_empty()
        }
    };
    (name_ok && !tag.is_empty() && !tag.contains('/')).then_some((name, tag))
}

/// Whether `image` is a `NAME:TAG` kustomize can override an image with.
pub(super) fn is_image_ref(image: &str) -> bool {
    split_image(image).is_some()
}

/// The images of an overlay: the API's (none for k8s/loadtest/, which does not run it) and the
/// kit's.
pub(super) struct Images {
    pub api: String,
    pub kit: String,
}

/// The images: IMAGE and LOADTEST_IMAGE when the command has those flags and they are set, else
/// the lines of `.k8s-image`, else the manifests' own names.
pub(super) fn images(k: &K8s, args: &Args, with_api: bool) -> Result<Images> {
    let pushed = std::fs::read_to_string(k.repo.join(IMAGE_FILE)).unwrap_or_default();
    let mut lines = pushed.lines().map(str::trim);
    let (pushed_api, pushed_kit) = (lines.next().filter(|l| !l.is_empty()), lines.next().filter(|l| !l.is_empty()));
    let api = if with_api { args.opt_value::<String>(&IMAGE)? } else { None };
    let kit = args.opt_value::<String>(&LOADTEST_IMAGE)?;
    let api = api.or_else(|| pushed_api.map(str::to_owned));
    let kit = kit.or_else(|| pushed_kit.map(str::to_owned));
    if (with_api && api.is_none()) || kit.is_none() {
        log("no images pushed yet (scripts/k8s.sh image): the manifests' own names are used");
    }
    let images = Images { api: api.unwrap_or_else(|| API.1.into()), kit: kit.unwrap_or_else(|| KIT.1.into()) };
    for image in [&images.api, &images.kit] {
        if !is_image_ref(image) {
            anyhow::bail!("an image must be NAME:TAG, not '{image}' (from {IMAGE_FILE})");
        }
    }
    Ok(images)
}

/// The kustomization K8S_DIR names, under the repository.
pub(super) fn k8s_dir(k: &K8s, args: &Args) -> Result<PathBuf> {
    let dir = k.repo.join(args.value::<String>(&K8S_DIR)?);
    if !dir.is_dir() {
        return Err(UsageError(format!("{}: no such folder in the repository", K8S_DIR.label())).into());
    }
    Ok(std::fs::canonicalize(&dir)?)
}

/// Writes `work`/kustomization.yaml: `base` with the images (the API's only when `deploy`, i.e.
/// `config_checksums`) and, with `config_checksums`, the ConfigMap checksum patches of k8s/.
pub(super) fn write(k: &K8s, work: &WorkDir, base: &Path, images: &Images, config_checksums: bool) -> Result<()> {
    // kustomize wants the base as a relative path.
    let base = std::fs::canonicalize(base).with_context(|| base.display().to_string())?;
    let mut text = format!("resources:\n  - {}\nimages:\n", relative(work.path(), &base).display());
    if config_checksums {
        text.push_str(&image_override(API.0, &images.api));
    }
    text.push_str(&image_override(KIT.0, &images.kit));
    if config_checksums {
        text.push_str("patches:\n");
        text.push_str(&config_patches(&k.repo.join("k8s"))?);
    }
    let file = work.path().join("kustomization.yaml");
    std::fs::write(&file, text).with_context(|| file.display().to_string())
}

/// A kustomize `images` entry setting image `name` to `image` (checked: NAME:TAG).
fn image_override(name: &str, image: &str) -> String {
    let (new_name, tag) = split_image(image).unwrap_or((image, ""));
    format!("  - name: {name}\n    newName: \"{new_name}\"\n    newTag: \"{tag}\"\n")
}

/// `to` relative to the folder `from` (both absolute).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out: PathBuf = from[common..].iter().map(|_| Component::ParentDir).collect();
    out.extend(&to[common..]);
    out
}

/// The files of `dir` whose names end in `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| dir.display().to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(suffix)))
        .collect();
    out.sort();
    Ok(out)
}

/// For each workload of `k8s` (its `*-deployment.yaml`, then `*-statefulset.yaml`) that mounts
/// ConfigMaps of `k8s` (a `configMap:` line, its `name:` on the next), a patch putting the
/// checksum of those ConfigMaps' files on its pod template (the first 16 hex digits of the
/// SHA-256 of the files, in the order the workload names them).
fn config_patches(k8s: &Path) -> Result<String> {
    let maps = files(k8s, "-configmap.yaml")?;
    let mut out = String::new();
    for file in files(k8s, "-deployment.yaml")?.into_iter().chain(files(k8s, "-statefulset.yaml")?) {
        let text = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
        let lines: Vec<&str> = text.lines().collect();
        let mut content = String::new();
        for (i, _) in lines.iter().enumerate().filter(|(_, l)| l.trim_start() == "configMap:") {
            let Some(map) = lines.get(i + 1).and_then(|l| l.trim_start().strip_prefix("name:")) else { continue };
            let named = format!("  name: {}", map.trim_start());
            for m in &maps {
                let text = std::fs::read_to_string(m).with_context(|| m.display().to_string())?;
                if text.lines().any(|l| l == named) {
                    content.push_str(&text);
                }
            }
        }
        if content.is_empty() {
            continue;
        }
        let field = |prefix: &str| lines.iter().find_map(|l| l.strip_prefix(prefix)).unwrap_or("").to_owned();
        let (kind, name) = (field("kind: "), field("  name: "));
        let sum = crate::acl::sha256_hex(&content)?;
        let _ = write!(
            out,
            "  - patch: |\n      apiVersion: apps/v1\n      kind: {kind}\n      metadata: {{name: {name}}}\n      \
             spec: {{template: {{metadata: {{annotations: {{{}: \"{}\"}}}}}}}}\n",
            crate::rules::CONFIG_CHECKSUM,
            &sum[..16]
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Image references split as kustomize's `newName`/`newTag` want them; a registry port
    /// stays in the name; no tag, or a tag with a slash, is refused.
    #[test]
    fn splits_image_references() {
        assert_eq!(split_image("redis-api:0.1.0"), Some(("redis-api", "0.1.0")));
        assert_eq!(split_image("host:5000/p/redis-api:1"), Some(("host:5000/p/redis-api", "1")));
        assert_eq!(
            split_image("europe-docker.pkg.dev/p/r/redis-api:v2"),
            Some(("europe-docker.pkg.dev/p/r/redis-api", "v2"))
        );
        for bad in ["redis-api", "redis-api:", ":1", "host:5000/redis-api", "a:b:c", "host:x/y:1"] {
            assert_eq!(split_image(bad), None, "{bad}");
        }
    }

    /// A path relative to a folder climbs out of it as far as they differ.
    #[test]
    fn relative_paths() {
        assert_eq!(relative(Path::new("/tmp/w"), Path::new("/r/k8s")), Path::new("../../r/k8s"));
        assert_eq!(relative(Path::new("/r/w"), Path::new("/r/k8s/loadtest")), Path::new("../k8s/loadtest"));
    }
}
