//! Network namespaces and veth links through `ip` (iproute2), and processes started inside a
//! namespace with `ip netns exec`, detached, their pids kept for `down`.

use anyhow::{Context, Result, anyhow};
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `ip ARGS...`; an error carries the command and its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().map_err(|e| anyhow!("ip: {e:#} (is iproute2 installed?)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(anyhow!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Names of the namespaces that exist now.
pub fn list() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    text.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect()
}

/// Creates namespace `ns` with its loopback up.
pub fn create(ns: &str) -> Result<()> {
    ip(&["netns", "add", ns])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])
}

/// Deletes `ns` (its veth ends go with it, and so do their peers).
pub fn delete(ns: &str) -> Result<()> {
    ip(&["netns", "delete", ns])
}

/// One end of a veth pair: where it lives (`None`: the root namespace), its name, its address.
pub struct End<'a> {
    pub ns: Option<&'a str>,
    pub name: &'a str,
    pub cidr: &'a str,
}

/// A veth pair between two ends, addressed and up. Each end is created in its namespace
/// directly, so names only need to be unique there (every pod has its own `eth0`).
pub fn link(a: End<'_>, b: End<'_>) -> Result<()> {
    let mut add = vec!["link", "add", a.name];
    if let Some(ns) = a.ns {
        add.extend(["netns", ns]);
    }
    add.extend(["type", "veth", "peer", "name", b.name]);
    if let Some(ns) = b.ns {
        add.extend(["netns", ns]);
    }
    ip(&add)?;
    for end in [&a, &b] {
        let mut args: Vec<&str> = Vec::new();
        if let Some(ns) = end.ns {
            args.extend(["-n", ns]);
        }
        let mut addr = args.clone();
        addr.extend(["addr", "add", end.cidr, "dev", end.name]);
        ip(&addr)?;
        args.extend(["link", "set", end.name, "up"]);
        ip(&args)?;
    }
    Ok(())
}

/// Sets interface `dev` in `ns` up or down.
pub fn set_link(ns: &str, dev: &str, up: bool) -> Result<()> {
    ip(&["-n", ns, "link", "set", dev, if up { "up" } else { "down" }])
}

/// Starts `cmd` inside `ns`, detached (own session), output to `log`, environment exactly
/// `env`. Returns its pid (the pid of the program itself: `ip netns exec` execs it).
pub fn spawn(ns: &str, cmd: &[String], env: &[(String, String)], log: &Path) -> Result<u32> {
    let out = File::create(log).with_context(|| log.display().to_string())?;
    spawn_into(ns, cmd, env, out)
}

/// [`spawn`], appending to `log` (a restarted container keeps its earlier output).
pub fn spawn_appending(ns: &str, cmd: &[String], env: &[(String, String)], log: &Path) -> Result<u32> {
    let out = File::options().append(true).create(true).open(log).with_context(|| log.display().to_string())?;
    spawn_into(ns, cmd, env, out)
}

fn spawn_into(ns: &str, cmd: &[String], env: &[(String, String)], out: File) -> Result<u32> {
    let err = out.try_clone()?;
    let mut c = Command::new("setsid");
    // The shell execs the program: the pid stays the program's.
    let script =
        format!("{}exec \"$@\"", cgroup_remounts(&std::fs::read_to_string("/proc/self/mounts").unwrap_or_default()));
    c.args(["ip", "netns", "exec", ns, "sh", "-c", &script, "sh"])
        .args(cmd)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    c.env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()));
    for (k, v) in env {
        c.env(k, v);
    }
    let child = c.spawn().map_err(|e| anyhow!("starting {:?} in {ns}: {e:#}", cmd))?;
    Ok(child.id())
}

/// Shell commands that mount the host's cgroup filesystems again inside `ip netns exec`, whose
/// fresh `/sys` has none: a pod's process then finds its cgroup under `/sys/fs/cgroup` as in a
/// container (the API reads its CPU throttling there). A mount that fails is left out.
fn cgroup_remounts(proc_mounts: &str) -> String {
    let mut script = String::new();
    for line in proc_mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [_, dir, kind, options, ..] = f[..] else { continue };
        let plain = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || ",=_-./".contains(c));
        if !dir.starts_with("/sys/fs/cgroup")
            || !matches!(kind, "tmpfs" | "cgroup" | "cgroup2")
            || !plain(dir)
            || !plain(options)
        {
            continue;
        }
        script.push_str(&format!(
            "mkdir -p {dir} 2>/dev/null && mount -t {kind} -o {options} {kind} {dir} 2>/dev/null; "
        ));
    }
    script
}

/// Whether `pid` runs (exists and is not a zombie).
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid)
}

/// SIGTERM, then SIGKILL after `grace` if still alive.
pub fn stop(pid: u32, grace: std::time::Duration) {
    let _ = Command::new("kill").args(["-CONT", &pid.to_string()]).status();
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let until = std::time::Instant::now() + grace;
    while alive(pid) && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if alive(pid) {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remounts_cgroups_only() {
        let mounts = "sysfs /sys sysfs rw 0 0\n\
                      tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n\
                      tmpfs /tmp tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/x;rm cgroup rw 0 0\n";
        assert_eq!(
            cgroup_remounts(mounts),
            "mkdir -p /sys/fs/cgroup 2>/dev/null && mount -t tmpfs -o rw,relatime,mode=755 tmpfs /sys/fs/cgroup 2>/dev/null; \
             mkdir -p /sys/fs/cgroup/cpu 2>/dev/null && mount -t cgroup -o rw,relatime,cpu cgroup /sys/fs/cgroup/cpu 2>/dev/null; \
             mkdir -p /sys/fs/cgroup/unified 2>/dev/null && mount -t cgroup2 -o rw,relatime cgroup2 /sys/fs/cgroup/unified 2>/dev/null; "
        );
    }
}
