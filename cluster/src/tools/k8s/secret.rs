//! The Secrets: `secret` (redis-auth: generated passwords and the ACL files of k8s/acl/), `acl`
//! (one ACL file from passwords in files, no cluster), and `tls-secret` (the Secrets of
//! k8s/components/tls/, made with openssl). Each Secret goes to `kubectl create -f -` as JSON on
//! stdin ([`acl::secret_manifest`]): never a password on a command line, and `create` (not
//! `apply`) keeps the data out of a last-applied-configuration annotation, readable by anyone who
//! can read the Secret's metadata.

use super::{K8s, REDIS_FIELD, REDIS_HASH, WorkDir, kubectl, log, read_cmd, run_cmd, shown, spawn};
use crate::acl;
use anyhow::{Context, Result, bail};
use cli::{Args, UsageError};
use std::path::Path;
use std::process::{Command, Stdio};

/// The names the ACL users are granted, from `--redis-hash` and `--redis-field` (checked by
/// their flags).
fn names(args: &Args) -> Result<acl::Names> {
    Ok(acl::Names { hash: args.value(&REDIS_HASH)?, field: args.value(&REDIS_FIELD)? })
}

/// `secret [--replace]`: the Secret redis-auth, unless it exists (with `replace`: deleted and
/// made anew, new passwords). A Secret of the old layout (one password for everything, key
/// auth.conf) is not kept: the manifests need the ACL users' keys.
pub(super) fn secret(k: &K8s, args: &Args, replace: bool) -> Result<()> {
    let found = read_cmd(k.kc(&["get", "secret", "redis-auth", "--ignore-not-found", "-o", "name"]), None)
        .context("cannot read Secrets in the cluster")?;
    let found = !found.trim().is_empty();
    if found && !replace {
        let template = r#"go-template={{range $k, $v := .data}}{{$k}}{{"\n"}}{{end}}"#;
        let keys = read_cmd(k.kc(&["get", "secret", "redis-auth", "-o", template]), None)?;
        if keys.lines().any(|l| l.trim() == "master.acl") {
            log("Secret redis-auth exists: keeping its passwords");
            return Ok(());
        }
        bail!(
            "Secret redis-auth has the old layout (one password for every client, key auth.conf); the manifests \
             now use one ACL user per role. Replace it: scripts/k8s.sh secret --replace, then scripts/k8s.sh \
             deploy (the master and the API pods restart with the new passwords; writes fail until they have). \
             README \"Security\"."
        );
    }
    let manifest = acl::redis_auth_manifest(&k.repo.join("k8s/acl"), &names(args)?, &acl::Passwords::generate()?)?;
    if found {
        run_cmd(k.kc(&["delete", "secret", "redis-auth"]))?;
    }
    print!("{}", read_cmd(k.kc(&["create", "-f", "-"]), Some(&manifest))?);
    if found {
        log("Secret redis-auth replaced: new passwords. Restart what read the old ones:");
        log("  kubectl rollout restart statefulset/redis-master deployment/redis-api (or scripts/k8s.sh deploy)");
    }
    Ok(())
}

/// `acl master|replica DIR`: that template of k8s/acl/ rendered as `secret` renders it, from the
/// passwords in DIR/password-read, -write, -replication and -admin (only those it names are
/// read), to stdout.
pub(super) fn acl(k: &K8s, args: &Args, name: &str, dir: &Path) -> Result<()> {
    if !acl::TEMPLATES.contains(&name) {
        return Err(UsageError("usage: tools k8s acl master|replica DIR".into()).into());
    }
    let file = k.repo.join(format!("k8s/acl/{name}.acl.template"));
    let template = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
    let mut sums = Vec::new();
    for (user, key) in [("writer", "write"), ("replication", "replication"), ("reader", "read"), ("admin", "admin")] {
        if template.contains(&format!("@{}_SHA256@", user.to_uppercase())) {
            let path = dir.join(format!("password-{key}"));
            let password = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
            sums.push((user, acl::sha256_hex(&password)?));
        }
    }
    let sum = |user: &str| sums.iter().find(|(u, _)| *u == user).map(|(_, s)| s.clone());
    print!("{}", acl::render(&template, &names(args)?, &sum).with_context(|| file.display().to_string())?);
    Ok(())
}

/// `tls-secret [--replace]`: without cert-manager, the Secrets k8s/components/tls/ mounts, in
/// the shape cert-manager writes (tls.crt, tls.key, ca.crt): redis-master-tls (the master's
/// certificate, for redis-master and its names in the namespace, also for client auth: its probes
/// present it) and redis-client-tls (the API pods'), both of a new CA whose key is thrown away
/// (renewing means running this again with --replace, then restarting the master and the API
/// pods). Certificates last `days`, the CA ten times as long.
pub(super) fn tls_secret(k: &K8s, replace: bool, days: u32) -> Result<()> {
    let ns = match &k.namespace {
        Some(ns) => ns.clone(),
        None => {
            read_cmd(kubectl(&["config", "view", "--minify", "-o", "jsonpath={..namespace}"]), None)?.trim().to_owned()
        }
    };
    let ns = if ns.is_empty() { "default".to_owned() } else { ns };
    let found = read_cmd(
        k.kc(&["get", "secret", "redis-master-tls", "redis-client-tls", "--ignore-not-found", "-o", "name"]),
        None,
    )
    .context("cannot read Secrets in the cluster")?;
    let found: Vec<&str> = found.split_whitespace().collect();
    if !found.is_empty() && !replace {
        log(&format!("TLS Secrets exist, kept: {} (tls-secret --replace makes new ones)", found.join(" ")));
        return Ok(());
    }
    let work = WorkDir::new("k8s")?;
    let dir = work.path();
    let (ca_key, ca_crt) = (dir.join("ca.key"), dir.join("ca.crt"));
    let ca_days = (days * 10).to_string();
    let mut ca = vec!["req", "-x509"];
    ca.extend(NEW_P256_KEY);
    ca.extend(["-subj", "/CN=redis-api-redis-ca", "-days", &ca_days]);
    openssl(&[ca, vec!["-keyout", &s(&ca_key), "-out", &s(&ca_crt)]].concat())?;
    let master_ext = format!(
        "subjectAltName=DNS:redis-master,DNS:redis-master.{ns}.svc,DNS:redis-master.{ns}.svc.cluster.local\n\
         extendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n"
    );
    tls_cert(dir, "master", "redis-master", &master_ext, days)?;
    tls_cert(dir, "client", "redis-api", "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n", days)?;
    for name in ["master", "client"] {
        let secret = format!("redis-{name}-tls");
        let mut data = Vec::new();
        for (key, file) in
            [("tls.crt", format!("{name}.crt")), ("tls.key", format!("{name}.key")), ("ca.crt", "ca.crt".into())]
        {
            let path = dir.join(file);
            data.push((key.to_owned(), std::fs::read_to_string(&path).with_context(|| path.display().to_string())?));
        }
        if !found.is_empty() {
            run_cmd(k.kc(&["delete", "secret", &secret, "--ignore-not-found"]))?;
        }
        let manifest = acl::secret_manifest(&secret, "kubernetes.io/tls", &data);
        print!("{}", read_cmd(k.kc(&["create", "-f", "-"]), Some(&manifest))?);
    }
    log(&format!("TLS Secrets made for namespace {ns}, valid {days} days (the CA's key is not kept)"));
    if !found.is_empty() {
        log(
            "restart the master and the API pods: kubectl rollout restart statefulset/redis-master deployment/redis-api",
        );
    }
    Ok(())
}

/// `openssl req`'s arguments for a new P-256 key, unencrypted (the CA's and each certificate's).
const NEW_P256_KEY: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

fn s(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A P-256 key and a certificate `dir`/NAME.{key,crt} for `cn`, signed by the CA in `dir`, with
/// the X.509 extensions `ext` (one a line).
fn tls_cert(dir: &Path, name: &str, cn: &str, ext: &str, days: u32) -> Result<()> {
    let (key, csr, extfile, crt) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.csr")),
        dir.join(format!("{name}.ext")),
        dir.join(format!("{name}.crt")),
    );
    let subject = format!("/CN={cn}");
    let mut req = vec!["req", "-new"];
    req.extend(NEW_P256_KEY);
    req.extend(["-subj", &subject]);
    openssl(&[req, vec!["-keyout", &s(&key), "-out", &s(&csr)]].concat())?;
    std::fs::write(&extfile, ext).with_context(|| extfile.display().to_string())?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        &s(&csr),
        "-CA",
        &s(&dir.join("ca.crt")),
        "-CAkey",
        &s(&dir.join("ca.key")),
        "-CAcreateserial",
        "-days",
        &days.to_string(),
        "-extfile",
        &s(&extfile),
        "-out",
        &s(&crt),
    ])
}

/// openssl with `args`, quietly; a failure shows the last line it printed.
fn openssl(args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("openssl");
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let out = spawn(&mut cmd)?.wait_with_output().with_context(|| shown(&cmd))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("{} failed ({}): {}", shown(&cmd), out.status, err.lines().last().unwrap_or(""));
    }
    Ok(())
}
