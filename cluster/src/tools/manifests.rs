//! `tools manifests`: the project's own rules for the manifests (`crate::rules`), over folders
//! of them or over what `scripts/k8s.sh render` prints; one `error:` line per broken rule and a
//! summary line.

use super::REPO;
use crate::rules::{self, Outcome};
use anyhow::{Context, Result};
use cli::{Flag, UsageError};
use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;

const PROGRAM: &str = "tools manifests";

const USAGE: &str = "\
tools manifests: the project's own rules for k8s/ and k8s/loadtest/, beyond schema validation
(one object per file, labels, selectors, images, resources, security contexts, ports,
autoscalers, Kustomizations; see cluster/src/rules.rs). Reads files only.

Usage: tools manifests [DIR...] [FLAGS]      the folders (default: k8s k8s/loadtest, relative
                                             to --repo); selectors may point at pods of any
                                             folder of the run
       tools manifests --render IMAGE...     checks what `scripts/k8s.sh render` printed, on
                                             stdin: our images are among IMAGE, pod templates
                                             mounting a ConfigMap carry its checksum

Prints one `error: FILE: RULE` line per broken rule, then a summary line.";

const EXIT: &str = "Exit status: 0 every rule holds, 1 a rule is broken, 2 bad arguments.";

/// The folders checked when none is given, relative to `--repo`.
const DEFAULT_DIRS: &[&str] = &["k8s", "k8s/loadtest"];
/// At most this many folders or images (a bound on the free arguments).
const MAX_ARGS: usize = 64;

const RENDER: Flag = Flag::switch("--render", "check a render on stdin; the arguments are the images deploy was given");
const FLAGS: &[Flag] = &[Flag { help: "repository root the folders are relative to", ..REPO }, RENDER];

pub(super) fn run(argv: Vec<OsString>) -> Result<bool> {
    let Some(args) = super::parse(PROGRAM, USAGE, FLAGS, EXIT, argv, MAX_ARGS)? else { return Ok(true) };
    let outcome = if args.switch(&RENDER)? {
        if args.free().is_empty() {
            return Err(
                UsageError("--render needs the IMAGE(s) deploy was given; see tools manifests --help".into()).into()
            );
        }
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading the render from stdin")?;
        let outcome = rules::check_render(&text, args.free())?;
        report(&outcome, &format!("{} workloads in the render", outcome.checked))
    } else {
        let repo = PathBuf::from(args.text(&REPO).unwrap_or("."));
        let dirs: Vec<PathBuf> = if args.free().is_empty() {
            DEFAULT_DIRS.iter().map(PathBuf::from).collect()
        } else {
            args.free().iter().map(PathBuf::from).collect()
        };
        if let Some(dir) = dirs.iter().find(|d| !repo.join(d).is_dir()) {
            return Err(UsageError(format!("{}: no such folder under --repo {}", dir.display(), repo.display())).into());
        }
        let outcome = rules::check_folders(&repo, &dirs)?;
        let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        report(&outcome, &format!("{} manifests in {}", outcome.checked, names.join(", ")))
    };
    Ok(outcome)
}

/// Prints the broken rules and the summary (`what`: what was checked); whether none is broken.
fn report(outcome: &Outcome, what: &str) -> bool {
    for b in &outcome.broken {
        println!("error: {b}");
    }
    println!("{what}: {} rule(s) broken", outcome.broken.len());
    outcome.broken.is_empty()
}
