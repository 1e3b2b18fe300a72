//! Configuration errors from the real binary: exit status 2, a message naming the flag or
//! variable at fault, and never the text of a value that may be a secret (here `hunter2`).

use std::process::{Command, Output};

/// The stand-in secret: it must appear in no output.
const SECRET: &str = "hunter2";

/// Runs the server with `args` and a clean environment plus `env`. The base environment would
/// let a config that wrongly passes stop on its own: an unreachable replica, given 1 s.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redis-api"));
    cmd.env_clear()
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("REDIS_ADDR_READ", "127.0.0.1:1")
        .env("REDIS_ADDR_WRITE", "127.0.0.1:1")
        .env("REDIS_WAIT", "1s")
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run redis-api")
}

/// Asserts a config error (exit 2) whose message holds every one of `wanted` and no secret.
fn assert_refused(args: &[&str], env: &[(&str, &str)], wanted: &[&str]) {
    let out = run(args, env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let case = format!("args {args:?} env {env:?}: status {:?}, stderr {stderr:?}", out.status);
    assert_eq!(out.status.code(), Some(2), "{case}");
    for w in wanted {
        assert!(stderr.contains(w), "{case}: lacks {w:?}");
    }
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET), "{case}: stdout {stdout:?}");
}

/// Every spelling of a password flag (`=`, separate value, empty, `--*-password`) gets the
/// message saying where passwords go, without the value.
#[test]
fn password_flags_in_every_spelling_are_refused_without_echo() {
    let read = ["not accepted on the command line", "REDIS_PASS_READ"];
    let write = ["not accepted on the command line", "REDIS_PASS_WRITE"];
    let cases: &[(&[&str], &[&str])] = &[
        (&["--read-redis-password=hunter2"], &read),
        (&["--read-redis-password", "hunter2"], &read),
        (&["--read-redis-pass=hunter2"], &read),
        (&["--read-redis-pass", "hunter2"], &read),
        (&["--write-redis-pass="], &write),
        (&["--write-redis-pass", "hunter2"], &write),
        (&["--write-redis-password=hunter2"], &write),
        (&["--deadline", "300ms", "--write-redis-pass=hunter2"], &write),
    ];
    for (args, wanted) in cases {
        let flag = args.iter().find(|a| a.contains("-pass")).map(|a| a.split('=').next().unwrap_or(a));
        let mut wanted = wanted.to_vec();
        wanted.push(flag.expect("a password flag in the case"));
        assert_refused(args, &[], &wanted);
    }
}

/// A Redis address holding credentials, by flag or by env, is refused without its value and
/// points at the password variable.
#[test]
fn address_with_credentials_is_refused_without_echo() {
    assert_refused(
        &[],
        &[("REDIS_ADDR_READ", "redis://:hunter2@host:6379")],
        &["REDIS_ADDR_READ", "credentials", "REDIS_PASS_READ"],
    );
    assert_refused(
        &["--write-redis-addr=admin:hunter2@master:6379"],
        &[],
        &["--write-redis-addr", "credentials", "REDIS_PASS_WRITE"],
    );
    assert_refused(&["--cors-origins", "https://u:hunter2@app.example"], &[], &["--cors-origins"]);
}

/// A flag given twice is reported as such, not as an unknown argument.
#[test]
fn repeated_flag_is_reported_as_repeated() {
    assert_refused(&["--deadline", "300ms", "--deadline=350ms"], &[], &["--deadline given more than once"]);
    let out = run(&["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("unknown flag") && stderr.contains("--listen given more than once"), "{stderr}");
}

/// An unknown argument shows only its flag name; one not shaped like a flag is not shown.
#[test]
fn unknown_argument_shows_only_its_flag_name() {
    assert_refused(&["--redis-pw=hunter2"], &[], &["unknown flag --redis-pw"]);
    assert_refused(&["--deadline", "300ms", "hunter2"], &[], &["argument 3 is not a flag"]);
    assert_refused(&["-Phunter2"], &[], &["argument 1 is not a flag"]);
}

/// A password put in a *_FILE variable by mistake is not printed as a path.
#[test]
fn secret_file_error_does_not_show_the_path() {
    assert_refused(&[], &[("REDIS_PASS_WRITE_FILE", "hunter2")], &["REDIS_PASS_WRITE_FILE", "cannot read"]);
}
