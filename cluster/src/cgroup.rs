//! CPU quotas through cgroup v1's `cpu` controller: a group per process under
//! `/sys/fs/cgroup/cpu/<name>/`, with `cpu.cfs_quota_us` out of every `cpu.cfs_period_us`, so a
//! process gets e.g. 10 % of one core however idle the machine is (a small hosted Redis).
//! Needs root and a v1 `cpu` hierarchy mounted there.

use anyhow::{Context, Result, anyhow, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the v1 `cpu` controller is mounted.
pub const CPU_ROOT: &str = "/sys/fs/cgroup/cpu";
/// The CFS period every group gets: the kernel's default, 100 ms. A process that spends its
/// quota early in a period waits for the next one, so near its limit a request can stall for
/// up to `period - quota` (90 ms at 10 %): that stall is how saturation shows in latency.
pub const PERIOD_US: u64 = 100_000;

/// A CPU quota in percent of one core (1 to 100 here), per CFS period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    pub percent: f64,
    /// `cpu.cfs_period_us`: [`PERIOD_US`] unless a caller wants shorter stalls.
    pub period_us: u64,
}

impl Quota {
    /// `cpu.cfs_quota_us` for the period; the kernel's minimum is 1000 µs.
    pub fn quota_us(&self) -> u64 {
        ((self.percent / 100.0 * self.period_us as f64).round() as u64).max(1000)
    }
}

/// `25` or `25%`: 1 to 100 % of one core, per [`PERIOD_US`].
impl std::str::FromStr for Quota {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<Quota> {
        let percent: f64 = text.trim().trim_end_matches('%').parse().map_err(|_| anyhow!("bad CPU quota {text:?}"))?;
        if !(1.0..=100.0).contains(&percent) {
            bail!("CPU quota {text:?}: 1 to 100 (% of one core)");
        }
        Ok(Quota { percent, period_us: PERIOD_US })
    }
}

/// The group directory of `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new(CPU_ROOT).join(name)
}

/// Creates group `name` with `quota` (it must not exist yet) and returns its directory.
pub fn create(name: &str, quota: Quota) -> Result<PathBuf> {
    if !Path::new(CPU_ROOT).join("cpu.cfs_quota_us").exists() {
        bail!("no cgroup v1 cpu controller at {CPU_ROOT} (needed for CPU quotas)");
    }
    let dir = path(name);
    fs::create_dir(&dir).with_context(|| dir.display().to_string())?;
    let set = || -> Result<()> {
        write(&dir, "cpu.cfs_period_us", &quota.period_us.to_string())?;
        write(&dir, "cpu.cfs_quota_us", &quota.quota_us().to_string())
    };
    set().inspect_err(|_| {
        let _ = fs::remove_dir(&dir);
    })?;
    Ok(dir)
}

/// Moves process `pid` (all its threads; children it forks later follow) into group `dir`.
pub fn add(dir: &Path, pid: u32) -> Result<()> {
    write(dir, "cgroup.procs", &pid.to_string())
}

/// Removes group `dir`. A group can only go once its processes have exited, which may lag
/// their SIGKILL a little: retries for up to `wait`.
pub fn remove(dir: &Path, wait: Duration) -> Result<()> {
    let until = Instant::now() + wait;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= until => bail!("{}: {e:#}", dir.display()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Groups under [`CPU_ROOT`] whose names start with `prefix`.
pub fn list(prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(CPU_ROOT) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix) && e.path().is_dir())
        .map(|e| e.path())
        .collect()
}

/// `cpu.stat` of a group: periods elapsed and periods in which it was throttled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    pub nr_periods: u64,
    pub nr_throttled: u64,
}

/// Read with the parser the server paces by (`redis_api::cpu::throttling`): one reading of
/// `cpu.stat` in the workspace.
pub fn stat(dir: &Path) -> Result<Stat> {
    let file = dir.join("cpu.stat");
    let text = fs::read_to_string(&file).with_context(|| file.display().to_string())?;
    let (nr_periods, nr_throttled) =
        redis_api::cpu::throttling(&text).with_context(|| format!("{}: no nr_periods/nr_throttled", file.display()))?;
    Ok(Stat { nr_periods, nr_throttled })
}

fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let p = dir.join(file);
    fs::write(&p, value).map_err(|e| anyhow!("writing {value} to {}: {e:#}", p.display()))
}

/// CPU time process `pid` has used so far, threads that exited included, in nanoseconds
/// (`utime + stime` of `/proc/PID/stat`: 10 ms ticks, fine over seconds).
pub fn process_cpu_ns(pid: u32) -> Result<u64> {
    let file = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&file).with_context(|| file.to_string())?;
    // Fields after the command (which may hold spaces) end in ')': utime and stime are the
    // 14th and 15th fields, i.e. the 12th and 13th after it.
    let rest = text.rsplit_once(')').map(|(_, r)| r).with_context(|| format!("{file}: unexpected format"))?;
    let f: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    // USER_HZ is 100 on every architecture Linux supports.
    Ok(f.iter().sum::<u64>() * 10_000_000)
}

/// CPU time the live threads of process `pid` have used so far, in nanoseconds (from each
/// thread's `schedstat`: nanosecond resolution, but a thread that exited is no longer counted;
/// for a long-lived process such as Redis).
pub fn thread_cpu_ns(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for task in fs::read_dir(&dir).with_context(|| dir.to_string())?.filter_map(|e| e.ok()) {
        // A thread may exit between the listing and the read: it is skipped.
        if let Ok(text) = fs::read_to_string(task.path().join("schedstat")) {
            total += text.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Percent of a core → quota µs per 100 ms period, with the kernel's 1 ms floor.
    #[test]
    fn quota_in_microseconds() {
        assert_eq!("10".parse::<Quota>().unwrap().quota_us(), 10_000);
        assert_eq!("2.5%".parse::<Quota>().unwrap().quota_us(), 2_500);
        assert_eq!(Quota { percent: 0.5, period_us: PERIOD_US }.quota_us(), 1_000);
        assert_eq!(Quota { percent: 25.0, period_us: 10_000 }.quota_us(), 2_500);
        assert!(["0", "101", "x"].iter().all(|q| q.parse::<Quota>().is_err()));
    }

    /// A group's `cpu.stat` as either cgroup version writes it; a file without the counts is an
    /// error (the experiment then reports no throttling rather than made-up shares).
    #[test]
    fn reads_a_groups_cpu_stat() {
        let dir = tempfile::tempdir().unwrap();
        let v2 =
            "usage_usec 1200\nuser_usec 700\nsystem_usec 500\nnr_periods 40\nnr_throttled 7\nthrottled_usec 9000\n";
        fs::write(dir.path().join("cpu.stat"), v2).unwrap();
        assert_eq!(stat(dir.path()).unwrap(), Stat { nr_periods: 40, nr_throttled: 7 });
        fs::write(dir.path().join("cpu.stat"), "nr_periods 12\nnr_throttled 3\nthrottled_time 4500000\n").unwrap();
        assert_eq!(stat(dir.path()).unwrap(), Stat { nr_periods: 12, nr_throttled: 3 });
        fs::write(dir.path().join("cpu.stat"), "usage_usec 1200\n").unwrap();
        assert!(stat(dir.path()).is_err());
        assert!(stat(&dir.path().join("gone")).is_err());
    }
}
