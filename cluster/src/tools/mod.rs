//! The `tools` binary: one command line for the local cluster, the chaos suite, the scaling
//! experiment, the benchmark, the manifests' rules and a real cluster through kubectl (`k8s`). Each subcommand owns its flag table (the
//! workspace's `cli` convention: help per (sub)command, env twins, durations with units); the
//! flags of the ones that bring up a cluster are read into one [`Common`]. Errors are `anyhow`
//! with context; a [`cli::UsageError`] among them exits 2, any other failure 1.

mod bench;
mod chaos;
mod cluster;
mod k8s;
mod manifests;
mod scale;

use anyhow::{Context, Result};
use cli::{Args, Failure, Flag, Parsed, UsageError};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A subcommand: its name, one line for `tools --help`, and what runs it (`Ok(false)`: it ran
/// and found a failure, exit 1 without a message of its own).
struct Subcommand {
    name: &'static str,
    summary: &'static str,
    run: fn(Vec<OsString>) -> Result<bool>,
}

const SUBCOMMANDS: &[Subcommand] = &[
    Subcommand {
        name: "cluster",
        summary: "the k8s/ topology in network namespaces: up N, down, cut I, restore I, serve",
        run: cluster::run,
    },
    Subcommand {
        name: "chaos",
        summary: "the overload and chaos suite against two local pods, one PASS/FAIL line per scenario",
        run: chaos::run,
    },
    Subcommand {
        name: "scale",
        summary: "the scaling experiment: run (the sweep), chart and tables of a results file",
        run: scale::run,
    },
    Subcommand { name: "bench", summary: "the benchmark against its yardsticks, in one run", run: bench::run },
    Subcommand {
        name: "manifests",
        summary: "the project's rules for k8s/ and k8s/loadtest/ (or, with --render, for a render on stdin)",
        run: manifests::run,
    },
    Subcommand {
        name: "k8s",
        summary: "a real cluster through kubectl: secret, deploy, loadtest, scale, bench, teardown (scripts/k8s.sh)",
        run: k8s::run,
    },
];

const EXIT: &str = "Exit status: 0 done, 1 the run failed, 2 bad arguments.";

/// `tools --help`: the subcommands, from [`SUBCOMMANDS`].
fn usage() -> String {
    let mut out = String::from(
        "tools: the redis-api local cluster, chaos suite, scaling experiment, benchmark, manifest rules\n\
         and a real cluster (k8s).\n\n\
         Usage: tools SUBCOMMAND [ARGS] [FLAGS]    (`tools SUBCOMMAND --help` lists its flags)\n\nSubcommands:\n",
    );
    for s in SUBCOMMANDS {
        out.push_str(&format!("  {:<9} {}\n", s.name, s.summary));
    }
    out.push('\n');
    out.push_str(EXIT);
    out.push('\n');
    out
}

/// Runs `tools` with `argv` (without the program name); the exit status.
pub fn main(argv: impl IntoIterator<Item = OsString>) -> ExitCode {
    let mut argv: Vec<OsString> = argv.into_iter().collect();
    let first = if argv.is_empty() { None } else { Some(argv.remove(0)) };
    let names = || SUBCOMMANDS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ");
    let result = match first.as_ref().and_then(|a| a.to_str()) {
        Some("-h" | "--help") => {
            print!("{}", usage());
            Ok(true)
        }
        Some("-V" | "--version") => {
            println!("tools {}", env!("CARGO_PKG_VERSION"));
            Ok(true)
        }
        Some(name) => match SUBCOMMANDS.iter().find(|s| s.name == name) {
            Some(s) => return report(&format!("tools {}", s.name), (s.run)(argv)),
            // The text is not echoed: it may be a password typed in the wrong place.
            None => Err(UsageError(format!("unknown subcommand (one of {}); see tools --help", names())).into()),
        },
        None => Err(UsageError(format!("a subcommand is required: {}; see tools --help", names())).into()),
    };
    report("tools", result)
}

/// The exit status of a run: a usage error anywhere in the chain exits 2, any other error 1;
/// the message is the whole chain on one line.
fn report(program: &str, result: Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(cli::EXIT_FAILURE),
        Err(e) => match e.downcast_ref::<UsageError>() {
            Some(usage) => Failure::Usage(usage.clone()).report(program),
            None => Failure::Run(format!("{e:#}")).report(program),
        },
    }
}

/// A (sub)command's arguments: `None` when its help (`usage`, the flags, `footer`) or the
/// version was printed. Deprecation warnings go to stderr under `program`.
fn parse(
    program: &str,
    usage: &str,
    flags: &'static [Flag],
    footer: &str,
    argv: Vec<OsString>,
    free_max: usize,
) -> Result<Option<Args>, UsageError> {
    let env = |k: &str| std::env::var(k).ok();
    match Args::parse(flags, argv, &env, free_max)? {
        Parsed::Help => {
            print!("{}", cli::help(usage, flags, footer));
            Ok(None)
        }
        Parsed::Version => {
            println!("tools {}", env!("CARGO_PKG_VERSION"));
            Ok(None)
        }
        Parsed::Run(args) => {
            for warning in args.warnings() {
                eprintln!("{program}: warning: {warning}");
            }
            Ok(Some(args))
        }
    }
}

/// `--repo`: shared by the subcommands that bring up a cluster.
const REPO: Flag = Flag::new("--repo", "DIR", "repository root holding k8s/ and run.sh").default(".");
/// `--state`; each subcommand sets its own default (clusters of different tools may coexist).
const STATE: Flag = Flag::new("--state", "DIR", "the cluster's state, logs and pod files");
/// `--prefix`; each subcommand sets its own default.
const PREFIX: Flag = Flag::new("--prefix", "P", "prefix of namespace, link and CPU group names, 1-6 characters")
    .accepts("1 to 6 characters", |s| (1..=6).contains(&s.len()));
/// `--net`; each subcommand sets its own default.
const NET: Flag =
    Flag::new("--net", "N", "pods' master links on 10.N.i.0/24, client links on 10.(N+1).i.0/24").number_in(1, 253);
/// `--api-bin`; its default is each subcommand's (see [`Common::api_bin`]).
const API_BIN: Flag = Flag::new("--api-bin", "PATH", "redis-api binary (default: REPO/target/release/redis-api)");
/// `--env`, repeatable.
const ENV: Flag = Flag::new("--env", "KEY=VALUE", "extra environment for every API, after the manifest's")
    .many()
    .accepts("KEY=VALUE", crate::is_env_pair);

/// What the subcommands that bring up a cluster (`cluster`, `chaos`, `scale run`) share: each
/// lists [`REPO`], [`STATE`], [`PREFIX`], [`NET`], [`API_BIN`] and [`ENV`] in its table, with
/// its own defaults, and reads them here.
#[derive(Debug, Clone)]
struct Common {
    repo: PathBuf,
    state: PathBuf,
    prefix: String,
    net: u8,
    /// `None`: the subcommand's default ([`Common::api_bin`]).
    api_bin: Option<PathBuf>,
    env: Vec<(String, String)>,
}

impl Common {
    /// Reads the shared flags; `args` was parsed against a table holding all six.
    fn parse(args: &Args) -> Result<Common, UsageError> {
        Ok(Common {
            repo: args.opt_value(&REPO)?.unwrap_or_else(|| ".".into()),
            state: args.value(&STATE)?,
            prefix: args.value(&PREFIX)?,
            net: args.number(&NET)?,
            api_bin: args.opt_value(&API_BIN)?,
            env: crate::env_pairs(args, &ENV)?,
        })
    }

    /// The repository root as an absolute path (run.sh and the pods' files are named by it).
    fn repo(&self) -> Result<PathBuf> {
        std::fs::canonicalize(&self.repo).with_context(|| format!("--repo {}", self.repo.display()))
    }

    /// `--api-bin`, else `repo`/target/release/redis-api; with `debug_fallback`, the debug
    /// build when there is no release one.
    fn api_bin(&self, repo: &Path, debug_fallback: bool) -> PathBuf {
        self.api_bin.clone().unwrap_or_else(|| {
            let release = repo.join("target/release/redis-api");
            if debug_fallback && !release.exists() { repo.join("target/debug/redis-api") } else { release }
        })
    }
}

/// On SIGINT or SIGTERM, `on_signal` runs on a thread of its own (once).
fn on_signal(on_signal: impl FnOnce(i32) + Send + 'static) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            on_signal(sig);
        }
    });
    Ok(())
}

/// A private temporary folder (mode 700: k8s makes the Secret's files and keys in it), removed
/// when dropped, however the subcommand ends.
pub(super) struct WorkDir(PathBuf);

impl WorkDir {
    /// `redis-api-NAME-PID-N` in the system's temporary folder.
    pub(super) fn new(name: &str) -> Result<WorkDir> {
        use std::os::unix::fs::DirBuilderExt;
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("redis-api-{name}-{}-{n}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).with_context(|| dir.display().to_string())?;
        // Canonical: kustomize is given a path relative to it.
        let dir = std::fs::canonicalize(&dir)?;
        Ok(WorkDir(dir))
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(argv: &[&str]) -> Result<Common, UsageError> {
        const FLAGS: &[Flag] =
            &[REPO, STATE.default("/tmp/s"), PREFIX.default("rapi"), NET.default("77"), API_BIN, ENV];
        let argv = argv.iter().map(OsString::from);
        match Args::parse(FLAGS, argv, &|_| None, 0)? {
            Parsed::Run(args) => Common::parse(&args),
            _ => panic!("help or version"),
        }
    }

    /// The shared flags read as each subcommand's table sets them; the defaults come from it.
    #[test]
    fn common_flags_with_the_tables_defaults() {
        let c = common(&[]).expect("defaults parse");
        assert_eq!((c.state.to_str(), c.prefix.as_str(), c.net), (Some("/tmp/s"), "rapi", 77));
        assert_eq!(c.api_bin(Path::new("/r"), false), Path::new("/r/target/release/redis-api"));
        let c = common(&["--env", "A=1", "--env", "B=2=3", "--api-bin", "/x"]).expect("parses");
        assert_eq!(c.env, [("A".into(), "1".into()), ("B".into(), "2=3".into())]);
        assert_eq!(c.api_bin(Path::new("/r"), true), Path::new("/x"));
        assert!(common(&["--prefix", "toolong"]).unwrap_err().0.contains("--prefix: expected 1 to 6"));
        assert!(common(&["--net", "254"]).unwrap_err().0.contains("--net: expected a number from 1 to 253"));
    }

    /// A usage error exits 2 even under context; a run failure 1, with its whole chain.
    #[test]
    fn usage_errors_exit_2_run_failures_1() {
        let bad: Result<bool> = Err(anyhow::Error::new(UsageError("bad".into())).context("reading flags"));
        assert_eq!(report("t", bad), ExitCode::from(2));
        let run: Result<bool> = Err(anyhow::anyhow!("refused").context("connecting"));
        assert_eq!(report("t", run), ExitCode::from(1));
        assert_eq!(report("t", Ok(false)), ExitCode::from(1));
        assert!(usage().contains("  chaos "));
    }
}
