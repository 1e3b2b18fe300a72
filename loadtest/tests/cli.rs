//! The kit's command line follows the workspace convention: help per subcommand, durations
//! with units, one-line errors naming flag and value, exit 2 for bad arguments and 1 for a run
//! that failed, old spellings accepted with a warning.

use std::net::TcpListener;
use std::process::{Command, Output};

fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadtest")).args(args).env_remove("LISTEN_ADDR").output().expect("loadtest runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `loadtest SUBCOMMAND --help` lists that subcommand's flags with env twins and defaults.
#[test]
fn help_per_subcommand() {
    let out = loadtest(&["attack", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--post-ratio X") && help.contains("env ATTACK_RATE, default 1000"), "{help}");
    assert!(!help.contains("--window"), "the aggregator's flags are not attack's: {help}");
    let out = loadtest(&["aggregator", "-h"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--window DURATION") && help.contains("env WINDOW, default 5m"), "{help}");
    let out = loadtest(&["--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("loadtest SUBCOMMAND --help"));
}

/// A bad value is one line on stderr naming the flag, its env twin and the value, exit 2; a
/// duration without its unit is refused.
#[test]
fn bad_arguments_exit_2_in_one_line() {
    for (args, wanted) in [
        (
            &["attack", "--target", "http://127.0.0.1:1/", "--timeout", "5"][..],
            "--timeout (ATTACK_TIMEOUT): expected a duration",
        ),
        (
            &["attack", "--target", "http://127.0.0.1:1/", "--rate", "fast"][..],
            "--rate (ATTACK_RATE): expected a positive number",
        ),
        (&["updater", "--interval", "1000"][..], "--interval (UPDATE_INTERVAL): expected a duration"),
        (&["aggregator", "--generators", "127.0.0.1:1"][..], "--generators (GENERATORS): expected http:// URLs"),
        (&["attack", "--bogus"][..], "unknown flag --bogus; see --help"),
        (&[][..], "a subcommand is required"),
        (&["bogus"][..], "unknown subcommand \"bogus\""),
    ] {
        let out = loadtest(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line, no usage dump: {err}");
        assert!(err.contains(wanted), "{args:?}: {err}");
    }
    let err = stderr(&loadtest(&["updater", "--interval", "1000"]));
    assert!(err.contains("got \"1000\""), "the bad value is named: {err}");
}

/// A server that cannot bind its address is a failed run: exit 1, as redis-api's.
#[test]
fn address_in_use_exits_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = loadtest(&["hello-world", "--listen", &addr]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

/// The old `-ms` spelling still works, with a warning naming the new one.
#[test]
fn old_spellings_still_work_with_a_warning() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    // The updater starts (the old flag is accepted), then fails to bind: exit 1, not 2.
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["updater", "--interval-ms", "250", "--listen", &addr])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--interval-ms is deprecated; use --interval 250ms"), "{err}");
}
