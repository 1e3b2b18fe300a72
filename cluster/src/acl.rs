//! The content of the Secret `redis-auth` as `tools k8s secret` (`scripts/k8s.sh secret`) makes
//! it: a generated password per Redis ACL user (reader, writer, replication, admin) and the ACL
//! files rendered from the templates in `k8s/acl/` — the one rendering of them — and the Secret
//! objects `tools k8s` sends to `kubectl create -f -` on stdin ([`secret_manifest`]).

use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The hash the API uses when `REDIS_HASH` is not set (its `--redis-hash` default).
pub const DEFAULT_HASH: &str = "currency";
/// The field the API uses when `REDIS_FIELD` is not set (its `--redis-field` default).
pub const DEFAULT_FIELD: &str = "current-value";
/// The ACL templates in `k8s/acl/` (`<name>.acl.template`), each a key `<name>.acl` of the Secret.
pub const TEMPLATES: [&str; 2] = ["master", "replica"];

/// One password per ACL user.
#[derive(Clone)]
pub struct Passwords {
    /// The reader's, on the replicas (the Secret's key `password-read`).
    pub read: String,
    /// The writer's, on the master (`password-write`).
    pub write: String,
    /// The replication user's, on the master (`password-replication`).
    pub replication: String,
    /// The operator's, on the master (`password-admin`): ACL LOAD only, to rotate a password.
    pub admin: String,
}

impl std::fmt::Debug for Passwords {
    // Never shown, not even in a test's failure message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passwords(..)")
    }
}

impl Passwords {
    /// Four fresh passwords, 24 random bytes each in hex (as `openssl rand -hex 24`).
    pub fn generate() -> Result<Passwords> {
        Ok(Passwords {
            read: random_hex(24)?,
            write: random_hex(24)?,
            replication: random_hex(24)?,
            admin: random_hex(24)?,
        })
    }
}

/// The key and channel the ACL users are granted: the API's hash and `<hash>:<field>:changed`.
#[derive(Debug, Clone)]
pub struct Names {
    pub hash: String,
    pub field: String,
}

impl Default for Names {
    fn default() -> Self {
        Names { hash: DEFAULT_HASH.into(), field: DEFAULT_FIELD.into() }
    }
}

impl Names {
    /// Refuses a glob character (or a space): it would widen the `~key` and `&channel` patterns.
    fn check(&self) -> Result<()> {
        if safe_name(&self.hash) && safe_name(&self.field) {
            Ok(())
        } else {
            bail!("REDIS_HASH and REDIS_FIELD may hold only letters, digits and . _ : - (they become ACL patterns)")
        }
    }
}

/// Whether `name` may be the hash or field of the ACL users' patterns: letters, digits and
/// `. _ : -` only (a glob character or a space would widen `~key` and `&channel`).
pub fn safe_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
}

/// Renders an ACL template: comment lines (`#` first) and blank lines dropped (an ACL file allows
/// neither), `@HASH@` and `@CHANNEL@` replaced by the names, `@WRITER_SHA256@`,
/// `@REPLICATION_SHA256@`, `@READER_SHA256@` and `@ADMIN_SHA256@` by the hex SHA-256 in `sha256`
/// (user → hash: `writer`, `replication`, `reader`, `admin`). A placeholder left over is an error.
pub fn render(template: &str, names: &Names, sha256: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    names.check()?;
    let channel = format!("{}:{}:changed", names.hash, names.field);
    let mut out = String::new();
    for line in template.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut line = line.replace("@HASH@", &names.hash).replace("@CHANNEL@", &channel);
        for user in ["writer", "replication", "reader", "admin"] {
            let placeholder = format!("@{}_SHA256@", user.to_uppercase());
            if line.contains(&placeholder) {
                let sum = sha256(user).with_context(|| format!("no password for the ACL user {user}"))?;
                line = line.replace(&placeholder, &sum);
            }
        }
        if let Some(name) = placeholder(&line) {
            bail!("a placeholder left unreplaced in the ACL template: {name}");
        }
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

/// The first `@NAME@` (capitals, digits, `_`) in `line`, if any.
fn placeholder(line: &str) -> Option<&str> {
    line.match_indices('@').find_map(|(i, _)| {
        let rest = &line[i + 1..];
        let end = rest.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))?;
        (end > 0 && rest[end..].starts_with('@') && rest.starts_with(|c: char| c.is_ascii_uppercase()))
            .then(|| &line[i..i + end + 2])
    })
}

/// The Secret's keys and values, as `tools k8s secret` creates them, from the templates in
/// `acl_dir` (`k8s/acl/`).
pub fn secret_data(acl_dir: &Path, names: &Names, pw: &Passwords) -> Result<Vec<(String, String)>> {
    let (read, write, replication) = (sha256_hex(&pw.read)?, sha256_hex(&pw.write)?, sha256_hex(&pw.replication)?);
    let admin = sha256_hex(&pw.admin)?;
    let sums = |user: &str| match user {
        "reader" => Some(read.clone()),
        "writer" => Some(write.clone()),
        "replication" => Some(replication.clone()),
        "admin" => Some(admin.clone()),
        _ => None,
    };
    let mut data = vec![
        ("password-read".to_owned(), pw.read.clone()),
        ("password-write".to_owned(), pw.write.clone()),
        ("password-replication".to_owned(), pw.replication.clone()),
        ("password-admin".to_owned(), pw.admin.clone()),
    ];
    for name in TEMPLATES {
        let file = acl_dir.join(format!("{name}.acl.template"));
        let template = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
        let acl = render(&template, names, &sums).with_context(|| file.display().to_string())?;
        data.push((format!("{name}.acl"), acl));
    }
    data.push(("replica-auth.conf".to_owned(), format!("masteruser replication\nmasterauth {}\n", pw.replication)));
    Ok(data)
}

/// The labels of every Secret `tools k8s` creates (redis-auth and the TLS ones).
pub const SECRET_LABELS: [(&str, &str); 5] = [
    ("app", "redis"),
    ("tier", "cache"),
    ("app.kubernetes.io/name", "redis"),
    ("app.kubernetes.io/component", "auth"),
    ("app.kubernetes.io/part-of", "redis-api"),
];

/// The Secret `name` (of type `kind`, e.g. `Opaque`) holding `data`, as JSON for `kubectl create
/// -f -`: the values travel on stdin, never on a command line, and `create` (not `apply`) keeps
/// them out of a last-applied-configuration annotation.
pub fn secret_manifest(name: &str, kind: &str, data: &[(String, String)]) -> String {
    let labels: serde_json::Map<String, serde_json::Value> =
        SECRET_LABELS.iter().map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v))).collect();
    let string_data: serde_json::Map<String, serde_json::Value> =
        data.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str()))).collect();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": labels},
        "type": kind,
        "stringData": string_data,
    })
    .to_string()
}

/// The Secret `redis-auth` exactly as `tools k8s secret` sends it to `kubectl create -f -`:
/// [`secret_data`] of the templates in `acl_dir` in a [`secret_manifest`].
pub fn redis_auth_manifest(acl_dir: &Path, names: &Names, pw: &Passwords) -> Result<String> {
    Ok(secret_manifest("redis-auth", "Opaque", &secret_data(acl_dir, names, pw)?))
}

/// The hex SHA-256 of `text`, by coreutils' `sha256sum` (the script's tool), fed on stdin: a
/// password never appears on a command line.
pub fn sha256_hex(text: &str) -> Result<String> {
    let mut child =
        Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().context("sha256sum")?;
    child.stdin.take().context("sha256sum: no stdin")?.write_all(text.as_bytes()).context("sha256sum")?;
    let out = child.wait_with_output().context("sha256sum")?;
    let sum = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_owned();
    if !out.status.success() || sum.len() != 64 {
        bail!("sha256sum failed ({})", out.status);
    }
    Ok(sum)
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    let mut f = std::fs::File::open("/dev/urandom").context("/dev/urandom")?;
    std::io::Read::read_exact(&mut f, &mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Comments and blank lines go, names and hashes are filled in, a stray placeholder is refused.
    #[test]
    fn renders_a_template() {
        let template = "# a comment\n\nuser w on #@WRITER_SHA256@ ~@HASH@ &@CHANNEL@ -@all +hset\n";
        let sums = |u: &str| (u == "writer").then(|| "ab".repeat(32));
        let out = render(template, &Names::default(), &sums).unwrap();
        assert_eq!(
            out,
            format!("user w on #{} ~currency &currency:current-value:changed -@all +hset\n", "ab".repeat(32))
        );
        assert!(render("user r on #@READER_SHA256@\n", &Names::default(), &sums).is_err());
        assert!(render("user x on @TYPO@ -@all\n", &Names::default(), &sums).is_err());
        let wide = Names { hash: "cur*".into(), field: "v".into() };
        assert!(render(template, &wide, &sums).is_err());
    }

    /// sha256sum agrees with a known digest.
    #[test]
    fn sha256_of_known_text() {
        assert_eq!(sha256_hex("abc").unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
