//! The tools' command lines follow the workspace convention (no root needed: nothing here
//! starts a cluster): help per subcommand, durations with units, one name per idea, one-line
//! errors naming flag and value, exit 2 for bad arguments.

use std::process::{Command, Output};

fn tool(bin: &str, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().expect("the tool runs")
}

/// Bad arguments: exit 2 and one line naming the flag and the value, in every tool.
#[test]
fn bad_arguments_exit_2_in_one_line() {
    let cases: &[(&str, &[&str], &str)] = &[
        (env!("CARGO_BIN_EXE_chaos"), &["--overload", "30"], "--overload: expected a duration"),
        (env!("CARGO_BIN_EXE_chaos"), &["--only", "99"], "--only: expected scenario numbers"),
        (env!("CARGO_BIN_EXE_chaos"), &["--env", "NOEQUALS"], "--env: expected KEY=VALUE"),
        (env!("CARGO_BIN_EXE_bench"), &["--duration", "10"], "--duration: expected a duration"),
        (env!("CARGO_BIN_EXE_bench"), &["--conns", "0"], "--conns: expected a number from 1"),
        (env!("CARGO_BIN_EXE_scale-experiment"), &["run", "--trial", "fast"], "--trial: expected a duration"),
        (env!("CARGO_BIN_EXE_scale-experiment"), &["chart"], "chart needs 2 file name(s)"),
        (env!("CARGO_BIN_EXE_scale-experiment"), &[], "a subcommand is required"),
        (env!("CARGO_BIN_EXE_local-cluster"), &["up"], "`up` needs a number"),
        (env!("CARGO_BIN_EXE_local-cluster"), &["up", "2", "--net", "300"], "--net: expected a number from 1 to 253"),
        (env!("CARGO_BIN_EXE_local-cluster"), &["sideways"], "unknown subcommand"),
    ];
    for (bin, args, wanted) in cases {
        let out = tool(bin, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bin} {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{bin} {args:?}: one line, no usage dump: {err}");
        assert!(err.contains(wanted), "{bin} {args:?}: {err}");
    }
}

/// `--help` of a subcommand lists its flags; `--version` works in every tool.
#[test]
fn help_and_version_everywhere() {
    let help = |bin: &str, args: &[&str]| {
        let out = tool(bin, args);
        assert_eq!(out.status.code(), Some(0), "{bin} {args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let h = help(env!("CARGO_BIN_EXE_scale-experiment"), &["run", "--help"]);
    assert!(h.contains("--trial DURATION") && h.contains("default 5s") && h.contains("--state DIR"), "{h}");
    let h = help(env!("CARGO_BIN_EXE_local-cluster"), &["up", "--help"]);
    assert!(h.starts_with("Usage: local-cluster up N") && h.contains("--cpu-quota PCT"), "{h}");
    let h = help(env!("CARGO_BIN_EXE_chaos"), &["--help"]);
    assert!(
        h.contains("--overload-cpu-quota PCT") && h.contains("--cut DURATION") && h.contains("Scenarios: 1"),
        "{h}"
    );
    for bin in [
        env!("CARGO_BIN_EXE_chaos"),
        env!("CARGO_BIN_EXE_bench"),
        env!("CARGO_BIN_EXE_scale-experiment"),
        env!("CARGO_BIN_EXE_local-cluster"),
    ] {
        assert!(help(bin, &["--version"]).contains(" 0."), "{bin} --version");
    }
}

/// One name per idea: the old spellings (`--work`, `--overload-cpu`, `--trial-s`) still parse,
/// and say which name replaced them.
#[test]
fn old_spellings_name_their_replacement() {
    // chaos checks its arguments before it needs root or a binary: a bad value after an old
    // spelling proves the old name was taken as the new one.
    let out = tool(env!("CARGO_BIN_EXE_chaos"), &["--overload-cpu", "-5"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--overload-cpu-quota: expected a quota"), "{err}");
    let out =
        tool(env!("CARGO_BIN_EXE_scale-experiment"), &["run", "--trial-s", "2", "--work", "/tmp/x", "--step", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--trial-s is deprecated; use --trial 2s"), "{err}");
    assert!(err.contains("--work is deprecated; use --state /tmp/x"), "{err}");
    assert!(err.contains("--step: expected a factor above 1"), "{err}");
}
