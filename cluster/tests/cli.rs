//! The `tools` command line follows the workspace convention (no root needed: nothing here
//! starts a cluster): help per subcommand, durations with units, one name per idea, one-line
//! errors naming flag and value, exit 2 for bad arguments.

use std::process::{Command, Output};

fn tools(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tools")).args(args).output().expect("tools runs")
}

/// Bad arguments: exit 2 and one line naming the flag and the value, in every subcommand.
#[test]
fn bad_arguments_exit_2_in_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["chaos", "--overload", "30"], "--overload: expected a duration"),
        (&["chaos", "--only", "99"], "--only: expected scenario numbers"),
        (&["chaos", "--env", "NOEQUALS"], "--env: expected KEY=VALUE"),
        (&["bench", "--duration", "10"], "--duration: expected a duration"),
        (&["bench", "--conns", "0"], "--conns: expected a number from 1"),
        (&["scale", "run", "--trial", "fast"], "--trial: expected a duration"),
        (&["scale", "chart"], "chart needs 2 file name(s)"),
        (&["scale"], "a subcommand is required"),
        (&["cluster", "up"], "`up` needs a number"),
        (&["cluster", "up", "2", "--net", "300"], "--net: expected a number from 1 to 253"),
        (&["cluster", "sideways"], "unknown subcommand"),
    ];
    for (args, wanted) in cases {
        let out = tools(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "tools {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "tools {args:?}: one line, no usage dump: {err}");
        assert!(err.contains(wanted), "tools {args:?}: {err}");
    }
}

/// `--help` of a subcommand lists its flags; `--version` works in every subcommand.
#[test]
fn help_and_version_everywhere() {
    let help = |args: &[&str]| {
        let out = tools(args);
        assert_eq!(out.status.code(), Some(0), "tools {args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let h = help(&["scale", "run", "--help"]);
    assert!(h.contains("--trial DURATION") && h.contains("default 5s") && h.contains("--state DIR"), "{h}");
    let h = help(&["cluster", "up", "--help"]);
    assert!(h.starts_with("Usage: tools cluster up N") && h.contains("--cpu-quota PCT"), "{h}");
    let h = help(&["chaos", "--help"]);
    assert!(
        h.contains("--overload-cpu-quota PCT") && h.contains("--cut DURATION") && h.contains("Scenarios: 1"),
        "{h}"
    );
    for sub in ["chaos", "bench", "scale", "cluster"] {
        assert!(help(&[sub, "--version"]).contains(" 0."), "tools {sub} --version");
    }
}

/// One binary: `tools --help` names the four subcommands, each with a line of its own; a
/// missing or unknown subcommand exits 2 in one line that does not echo the unknown text.
#[test]
fn one_binary_four_subcommands() {
    let out = tools(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let h = String::from_utf8_lossy(&out.stdout);
    for sub in ["cluster", "chaos", "scale", "bench"] {
        assert!(h.lines().any(|l| l.trim_start().starts_with(&format!("{sub} "))), "{sub} missing: {h}");
    }
    assert!(tools(&["--version"]).stdout.starts_with(b"tools 0."));
    for args in [&["sideways"][..], &[]] {
        let out = tools(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "tools {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "tools {args:?}: {err}");
        assert!(err.contains("cluster, chaos, scale, bench") && !err.contains("sideways"), "{err}");
    }
}

/// One name per idea: the old spellings (`--work`, `--overload-cpu`, `--trial-s`) still parse,
/// and say which name replaced them.
#[test]
fn old_spellings_name_their_replacement() {
    // chaos checks its arguments before it needs root or a binary: a bad value after an old
    // spelling proves the old name was taken as the new one.
    let out = tools(&["chaos", "--overload-cpu", "-5"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--overload-cpu-quota: expected 0 (none), or a quota"), "{err}");
    let out = tools(&["scale", "run", "--trial-s", "2", "--work", "/tmp/x", "--step", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--trial-s is deprecated; use --trial 2s"), "{err}");
    assert!(err.contains("--work is deprecated; use --state /tmp/x"), "{err}");
    assert!(err.contains("--step: expected a factor above 1"), "{err}");
}
