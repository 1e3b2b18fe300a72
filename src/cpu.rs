//! Whether this process's CPU quota throttles it, read from its cgroup's `cpu.stat`, and the
//! HTTP layer paced while it does ([`http1::Pacer`]); and whether the machine's CPUs are all
//! busy ([`Saturation`], from `/proc/stat`), when shared reads gather bigger batches.
//!
//! Under a quota that runs out, every runnable thread costs a switch per CFS period just to be
//! held (docs/chaos.md, #1): with a thousand busy keep-alive connections, those switches eat
//! the quota. Paced, the workers read their next requests a few at a time. A pod without a CPU
//! limit (the Deployment sets none) is never throttled, so never paced.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the throttling is looked at.
pub const EVERY: Duration = Duration::from_millis(250);
/// Share of the last interval's CFS periods throttled from which the server is paced...
const PACE_FROM: f64 = 0.5;
/// ... and below which it stops being paced.
const PACE_UNTIL: f64 = 0.1;

/// The `cpu.stat` of the cgroup that `/proc/self/cgroup` names (v2, or v1's `cpu` hierarchy),
/// under `root` (`/sys/fs/cgroup`); `None` without one that counts throttling. Where the named
/// path does not exist, the hierarchy's own root is read: a container without a cgroup namespace
/// is shown its cgroup there, while `/proc/self/cgroup` names the host's path.
pub fn stat_path(proc_self_cgroup: &str, root: &Path) -> Option<PathBuf> {
    let counts = |p: &PathBuf| std::fs::read_to_string(p).is_ok_and(|t| throttling(&t).is_some());
    let mut found = None;
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        // v1's hierarchy is mounted under its controllers' names, often also linked as `cpu`.
        let mounts = if controllers.is_empty() {
            vec![root.to_path_buf()]
        } else if controllers.split(',').any(|c| c == "cpu") {
            vec![root.join(controllers), root.join("cpu")]
        } else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        let own = mounts.iter().map(|m| m.join(rel).join("cpu.stat"));
        let Some(stat) = own.chain(mounts.iter().map(|m| m.join("cpu.stat"))).find(counts) else { continue };
        // v1's cpu line wins over v2's unified one (a hybrid host counts there).
        if !controllers.is_empty() || found.is_none() {
            found = Some(stat);
        }
    }
    found
}

/// `nr_periods` and `nr_throttled` from a `cpu.stat`.
pub fn throttling(stat: &str) -> Option<(u64, u64)> {
    let field =
        |name: &str| stat.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<u64>().ok());
    Some((field("nr_periods")?, field("nr_throttled")?))
}

/// This process's throttling, followed across cgroups: the `cpu.stat` is looked up again when
/// `/proc/self/cgroup` changes (a process may be moved into its cgroup after it starts).
#[derive(Debug, Default)]
pub struct Throttling {
    cgroup: String,
    stat: Option<PathBuf>,
    watch: Watch,
}

impl Throttling {
    /// Takes a reading now; `Some(on)` when pacing should change.
    pub fn poll(&mut self) -> Option<bool> {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        if cgroup != self.cgroup {
            self.stat = stat_path(&cgroup, Path::new("/sys/fs/cgroup"));
            log::debug!("CPU throttling read from {:?}", self.stat);
            self.cgroup = cgroup;
            self.watch.moved();
        }
        let reading = self.stat.as_ref().and_then(|p| std::fs::read_to_string(p).ok()).and_then(|t| throttling(&t))?;
        self.watch.reading(reading)
    }
}

/// An on/off decision from successive readings of two counters, a total and a part of it: on
/// once the part's share of the last interval reaches `from`, off once it falls below `until`
/// (the gap keeps a share near one bound from flapping).
#[derive(Debug, Default)]
struct Switch {
    last: Option<(u64, u64)>,
    on: bool,
}

impl Switch {
    /// Takes a reading (total, part); `Some(on)` when the switch changes. `still`: the share
    /// to judge when the total did not move (none: nothing is judged).
    fn reading(&mut self, now: (u64, u64), from: f64, until: f64, still: Option<f64>) -> Option<bool> {
        let before = self.last.replace(now)?;
        let total = now.0.saturating_sub(before.0);
        let share = if total == 0 { still? } else { now.1.saturating_sub(before.1) as f64 / total as f64 };
        let on = if self.on { share >= until } else { share >= from };
        (on != self.on).then(|| {
            self.on = on;
            on
        })
    }
}

/// Decides pacing from successive `cpu.stat` readings.
#[derive(Debug, Default)]
pub struct Watch {
    switch: Switch,
}

impl Watch {
    /// The readings come from another cgroup from now on: the next one starts afresh.
    pub fn moved(&mut self) {
        self.switch.last = None;
    }

    /// Takes a reading (periods, throttled); `Some(on)` when pacing should change.
    pub fn reading(&mut self, now: (u64, u64)) -> Option<bool> {
        // No period ran: the process was idle, nothing throttled it.
        self.switch.reading(now, PACE_FROM, PACE_UNTIL, Some(0.0))
    }
}

/// Busy share of the machine's CPU time from which it counts as saturated (under 5 % idle)...
const BUSY_FROM: f64 = 0.95;
/// ... and under which it no longer does (over 15 % idle). Gathering itself leaves some time
/// idle (a read waits for its batch): measured 6 % at 50 connections, against 11-12 % at 10 or
/// 20 connections without it, where the CPU was not what bounded the rate.
const BUSY_UNTIL: f64 = 0.85;

/// The total and the idle (idle + iowait) jiffies of `/proc/stat`'s first line, over every CPU.
pub fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line.split_whitespace().map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let first = fields.get(..8)?;
    Some((first.iter().sum(), first[3] + first[4]))
}

/// Whether every CPU of the machine is busy, from successive `/proc/stat` readings.
#[derive(Debug, Default)]
pub struct Saturation {
    switch: Switch,
}

impl Saturation {
    /// Takes a reading now; `Some(on)` when saturation changes.
    pub fn poll(&mut self) -> Option<bool> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        self.reading(cpu_times(&stat)?)
    }

    /// Takes a reading (total, idle); `Some(on)` when saturation changes.
    pub fn reading(&mut self, (total, idle): (u64, u64)) -> Option<bool> {
        self.switch.reading((total, total.saturating_sub(idle)), BUSY_FROM, BUSY_UNTIL, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_times() {
        let stat = "cpu  100 5 50 800 40 1 4 0 0 0\ncpu0 50 2 25 400 20 0 2 0 0 0\nintr 1\n";
        assert_eq!(cpu_times(stat), Some((1000, 840)));
        assert_eq!(cpu_times("cpu0 1 2 3 4 5 6 7 8\n"), None, "the first line is the total");
        assert_eq!(cpu_times("cpu  1 2 3\n"), None, "too few fields");
        assert_eq!(cpu_times("cpu  1 2 x 4 5 6 7 8\n"), None);
        assert_eq!(cpu_times(""), None);
    }

    #[test]
    fn saturated_under_5_until_over_15_percent_idle() {
        let mut s = Saturation::default();
        assert_eq!(s.reading((0, 0)), None, "one reading decides nothing");
        assert_eq!(s.reading((100, 10)), None, "10 % idle: not saturated");
        assert_eq!(s.reading((200, 14)), Some(true), "4 % idle");
        assert_eq!(s.reading((300, 24)), None, "10 % idle keeps it");
        assert_eq!(s.reading((300, 24)), None, "no time passed: nothing to judge");
        assert_eq!(s.reading((400, 44)), Some(false), "20 % idle");
        assert_eq!(s.reading((500, 44)), Some(true), "none idle");
    }

    const STAT: &str = "usage_usec 100\nnr_periods 1603\nnr_throttled 1594\nthrottled_usec 20573616\n";

    #[test]
    fn reads_periods_and_throttled() {
        assert_eq!(throttling(STAT), Some((1603, 1594)));
        // cgroup v1 spells the time differently; the counts are the same.
        assert_eq!(throttling("nr_periods 3\nnr_throttled 0\nthrottled_time 0\n"), Some((3, 0)));
        assert_eq!(throttling("usage_usec 5\n"), None);
        assert_eq!(throttling("nr_periods_x 3\nnr_throttled 1\n"), None);
    }

    #[test]
    fn paced_from_half_until_a_tenth() {
        let mut w = Watch::default();
        assert_eq!(w.reading((0, 0)), None, "one reading decides nothing");
        assert_eq!(w.reading((25, 10)), None, "40 % throttled");
        assert_eq!(w.reading((50, 25)), Some(true), "60 %");
        assert_eq!(w.reading((75, 30)), None, "20 % keeps it paced");
        assert_eq!(w.reading((75, 30)), Some(false), "idle: nothing ran");
        assert_eq!(w.reading((100, 55)), Some(true), "every period");
        assert_eq!(w.reading((200, 56)), Some(false), "1 %");
    }

    #[test]
    fn finds_the_cgroup_that_counts() {
        let root = std::env::temp_dir().join(format!("redis-api-cpu-{}", std::process::id()));
        let v2 = root.join("kubepods/pod1");
        let v1 = root.join("cpu,cpuacct/docker/abc");
        for dir in [&v2, &v1] {
            std::fs::create_dir_all(dir).expect("mkdir");
            std::fs::write(dir.join("cpu.stat"), STAT).expect("write");
        }
        assert_eq!(stat_path("0::/kubepods/pod1\n", &root), Some(v2.join("cpu.stat")));
        assert_eq!(
            stat_path("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/kubepods/pod1\n", &root),
            Some(v1.join("cpu.stat"))
        );
        assert_eq!(stat_path("0::/elsewhere\n", &root), None);
        // A container without a cgroup namespace: the host's path is not under its mount.
        std::fs::write(root.join("cpu,cpuacct/cpu.stat"), STAT).expect("write");
        assert_eq!(
            stat_path("4:cpu,cpuacct:/libpod_parent/libpod-1\n", &root),
            Some(root.join("cpu,cpuacct/cpu.stat"))
        );
        assert_eq!(stat_path("4:cpu,cpuacct:/docker/abc\n", &root), Some(v1.join("cpu.stat")), "its own path first");
        assert_eq!(stat_path("garbage", &root), None);
        std::fs::remove_dir_all(&root).expect("cleanup");
    }
}
