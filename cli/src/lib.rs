//! The workspace's one command-line convention, shared by `redis-api`, `loadtest` and the
//! tools. Each flag is declared once ([`Flag`]: name, environment twin, default, help) and
//! parsed in two phases: [`Args::parse`] takes each flag's text from argv, else its env twin,
//! else its default; typed getters ([`Args::duration`], [`Args::number`], [`Args::value`]) then
//! check it against what the flag declares it accepts ([`Accepts`]) and convert it. No reader
//! passes a parser of its own: the declaration owns it. The conventions, everywhere:
//! - durations carry a unit (`400ms`, `30s`, `1.5s`, `5m`, `1h`; `0` alone needs none);
//! - an error is one line naming the flag (and its env twin) and the bad value;
//! - `-h`/`--help` prints the flags of the (sub)command, `-V`/`--version` the version;
//! - exit status [`EXIT_USAGE`] (2) for bad arguments, [`EXIT_FAILURE`] (1) for a run that
//!   failed, 0 for success;
//! - a renamed flag keeps its old spelling as a deprecated alias, with a warning.
//!
//! Help text and the README's tables are rendered from the same declarations.

use std::cell::RefCell;
use std::ffi::OsString;
use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

/// Exit status of a run that failed (an address in use, a peer unreachable, a failed check).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for bad arguments or settings: nothing was started.
pub const EXIT_USAGE: u8 = 2;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--flag VALUE` or `--flag=VALUE`, at most once; the text names the value in help.
    Value(&'static str),
    /// `--flag VALUE`, any number of times; its env twin is a comma-separated list.
    Many(&'static str),
    /// `--flag` alone; its env twin is `1`/`true`/`yes` or `0`/`false`/`no`.
    Switch,
}

/// What a flag is when neither argv nor the environment sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Default {
    /// It must be set.
    Required,
    /// It stays unset (the program says what that means in the help).
    Unset,
    /// This text, parsed like a given value.
    To(&'static str),
}

/// The values a flag accepts, declared with it, so every reader of the flag and its help agree.
#[derive(Debug, Clone, Copy)]
pub enum Accepts {
    /// Any text, read with [`Args::value`] or [`Args::text`] (paths, names).
    Text,
    /// A duration within `min..=max` ([`Flag::duration_in`]), read with [`Args::duration`];
    /// with [`Flag::or_off`], `off` too, read as `None` by [`Args::opt_duration`].
    Duration(Duration, Duration),
    /// A whole number within `min..=max` ([`Flag::number_in`]), read with [`Args::number`].
    Number(u64, u64),
    /// Text that `check` accepts ([`Flag::accepts`], [`Flag::parsed`]), read with
    /// [`Args::value`] into a type whose `FromStr` agrees; `expected` names it in errors.
    Checked { expected: &'static str, check: fn(&str) -> bool },
}

/// A deprecated spelling of a flag, still accepted with a warning that names the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Old {
    pub name: &'static str,
    pub env: Option<&'static str>,
    /// The unit the old spelling implied for a bare number (`ms` for `--deadline-ms 400`);
    /// empty: the value is taken as it is.
    pub unit: &'static str,
}

/// One flag of a (sub)command. Built with the `const fn`s below, so tables are constants.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    pub name: &'static str,
    pub env: Option<&'static str>,
    pub kind: Kind,
    pub default: Default,
    pub help: &'static str,
    pub old: Option<Old>,
    /// A bare number given to a duration flag is taken in this unit, with a deprecation
    /// warning (flags that took bare seconds before units were required).
    pub bare_unit: Option<&'static str>,
    pub accepts: Accepts,
    /// `off` is a value too: the feature is off ([`Flag::or_off`]).
    pub off: bool,
}

impl Flag {
    /// A flag taking one value, unset by default.
    pub const fn new(name: &'static str, value: &'static str, help: &'static str) -> Flag {
        Flag {
            name,
            env: None,
            kind: Kind::Value(value),
            default: Default::Unset,
            help,
            old: None,
            bare_unit: None,
            accepts: Accepts::Text,
            off: false,
        }
    }

    /// A flag that is on when present.
    pub const fn switch(name: &'static str, help: &'static str) -> Flag {
        Flag { kind: Kind::Switch, ..Flag::new(name, "", help) }
    }

    /// A flag that may be given several times.
    pub const fn many(self) -> Flag {
        match self.kind {
            Kind::Value(v) | Kind::Many(v) => Flag { kind: Kind::Many(v), ..self },
            Kind::Switch => self,
        }
    }

    pub const fn env(self, env: &'static str) -> Flag {
        Flag { env: Some(env), ..self }
    }

    pub const fn default(self, text: &'static str) -> Flag {
        Flag { default: Default::To(text), ..self }
    }

    pub const fn required(self) -> Flag {
        Flag { default: Default::Required, ..self }
    }

    /// Keeps `name` (and its env twin `env`) as a deprecated alias; a bare number given to it
    /// is read in `unit`.
    pub const fn old(self, name: &'static str, env: Option<&'static str>, unit: &'static str) -> Flag {
        Flag { old: Some(Old { name, env, unit }), ..self }
    }

    /// A duration within `min..=max`, read with [`Args::duration`].
    pub const fn duration_in(self, min: Duration, max: Duration) -> Flag {
        Flag { accepts: Accepts::Duration(min, max), ..self }
    }

    /// A whole number within `min..=max`, read with [`Args::number`].
    pub const fn number_in(self, min: u64, max: u64) -> Flag {
        Flag { accepts: Accepts::Number(min, max), ..self }
    }

    /// Takes `off` as well, which [`Args::opt_duration`] reads as `None`.
    pub const fn or_off(self) -> Flag {
        Flag { off: true, ..self }
    }

    /// Text that `check` accepts (its surrounding spaces trimmed), read with [`Args::value`];
    /// `expected` says what that is in an error ("a ratio from 0 to 1").
    pub const fn accepts(self, expected: &'static str, check: fn(&str) -> bool) -> Flag {
        Flag { accepts: Accepts::Checked { expected, check }, ..self }
    }

    /// Text that `T`'s `FromStr` accepts, read with [`Args::value`] as a `T`.
    pub const fn parsed<T: std::str::FromStr>(self, expected: &'static str) -> Flag {
        self.accepts(expected, parses::<T>)
    }

    /// Accepts a bare number in `unit`, with a deprecation warning.
    pub const fn bare(self, unit: &'static str) -> Flag {
        Flag { bare_unit: Some(unit), ..self }
    }

    /// `--name (ENV)`, or `--name` for a flag without an env twin: how errors name it.
    pub fn label(&self) -> String {
        match self.env {
            Some(env) => format!("{} ({env})", self.name),
            None => self.name.to_owned(),
        }
    }
}

fn parses<T: std::str::FromStr>(text: &str) -> bool {
    text.parse::<T>().is_ok()
}

/// Bad arguments or settings; the message is one line naming the flag at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// How a binary's `run` fails: bad arguments (exit 2) or a run that did not succeed (exit 1).
#[derive(Debug)]
pub enum Failure {
    Usage(UsageError),
    Run(String),
}

impl From<UsageError> for Failure {
    fn from(e: UsageError) -> Self {
        Failure::Usage(e)
    }
}

impl Failure {
    /// Prints `program: message` to stderr and returns the exit status for it.
    pub fn report(&self, program: &str) -> ExitCode {
        match self {
            Failure::Usage(e) => {
                eprintln!("{program}: {e}");
                ExitCode::from(EXIT_USAGE)
            }
            Failure::Run(e) => {
                eprintln!("{program}: {e}");
                ExitCode::from(EXIT_FAILURE)
            }
        }
    }
}

/// What the command line asks for.
pub enum Parsed {
    Run(Args),
    Help,
    Version,
}

/// The raw phase: each flag's text (argv, else env, else default) and the free arguments.
pub struct Args {
    flags: &'static [Flag],
    values: Vec<Option<Vec<String>>>,
    free: Vec<String>,
    warnings: RefCell<Vec<String>>,
}

impl Args {
    /// Parses `args` (without the program name) against `flags`, with `env` as the
    /// environment. At most `free_max` arguments that are not flags are kept (see
    /// [`Args::free`]). Text that is neither a flag nor expected is never echoed: it may be a
    /// password typed after a misspelt flag.
    pub fn parse(
        flags: &'static [Flag],
        args: impl IntoIterator<Item = OsString>,
        env: &dyn Fn(&str) -> Option<String>,
        free_max: usize,
    ) -> Result<Parsed, UsageError> {
        let args: Vec<OsString> = args.into_iter().collect();
        if args.iter().any(|a| a == "-h" || a == "--help") {
            return Ok(Parsed::Help);
        }
        if args.iter().any(|a| a == "-V" || a == "--version") {
            return Ok(Parsed::Version);
        }
        // Per flag: values given under its name, and under its old name.
        let mut given: Vec<[Vec<String>; 2]> = vec![[Vec::new(), Vec::new()]; flags.len()];
        let mut free = Vec::new();
        let mut iter = args.into_iter().enumerate();
        while let Some((i, arg)) = iter.next() {
            let position = i + 1;
            let arg = arg
                .into_string()
                .map_err(|_| UsageError(format!("argument {position} is not valid UTF-8; see --help")))?;
            if !arg.starts_with('-') || arg == "-" {
                if free.len() == free_max {
                    return Err(UsageError(format!(
                        "argument {position} is not a flag and not expected here (its text is not shown); see --help"
                    )));
                }
                free.push(arg);
                continue;
            }
            let name = flag_name(&arg);
            let found = flags.iter().enumerate().find_map(|(index, f)| {
                if f.name == name { Some((index, 0)) } else { f.old.filter(|o| o.name == name).map(|_| (index, 1)) }
            });
            let Some((index, slot)) = found else {
                return Err(unknown(position, name));
            };
            let flag = &flags[index];
            let value = match (flag.kind, arg.split_once('=')) {
                (Kind::Switch, Some(_)) => return Err(UsageError(format!("{name} takes no value"))),
                (Kind::Switch, None) => "1".to_owned(),
                (_, Some((_, inline))) => inline.to_owned(),
                // A following flag is not taken as the value: `--listen --deadline 5s` lacks
                // the address, it does not set it to "--deadline".
                (_, None) => match iter.next() {
                    Some((_, next)) if !next.to_str().is_some_and(|n| n.starts_with("--")) => {
                        next.into_string().map_err(|_| UsageError(format!("{name}: the value is not valid UTF-8")))?
                    }
                    _ => return Err(UsageError(format!("{name} needs a value; see --help"))),
                },
            };
            let values = &mut given[index][slot];
            if !values.is_empty() && !matches!(flag.kind, Kind::Many(_)) {
                return Err(UsageError(format!("{name} given more than once")));
            }
            values.push(value);
        }
        let mut warnings = Vec::new();
        let mut values = Vec::with_capacity(flags.len());
        for (flag, [new, old]) in flags.iter().zip(given) {
            values.push(resolve(flag, new, old, env, &mut warnings)?);
        }
        Ok(Parsed::Run(Args { flags, values, free, warnings: RefCell::new(warnings) }))
    }

    /// The arguments that are not flags, in order.
    pub fn free(&self) -> &[String] {
        &self.free
    }

    /// Deprecation notices met while parsing, for the program to log once it can.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.borrow().clone()
    }

    fn entry(&self, flag: &Flag) -> Option<&Vec<String>> {
        let index = self
            .flags
            .iter()
            .position(|f| f.name == flag.name)
            .unwrap_or_else(|| panic!("{} is not in this command's flag table", flag.name));
        self.values[index].as_ref()
    }

    /// The flag's text; `None` when unset.
    pub fn text(&self, flag: &Flag) -> Option<&str> {
        self.entry(flag).and_then(|v| v.last()).map(String::as_str)
    }

    /// Every value of a repeatable flag, in order (from argv, else its env twin's list), each
    /// checked against the flag's declaration.
    pub fn many(&self, flag: &Flag) -> Result<Vec<String>, UsageError> {
        let values = self.entry(flag).cloned().unwrap_or_default();
        if let Accepts::Checked { expected, check } = flag.accepts
            && let Some(v) = values.iter().find(|v| !check(v))
        {
            return Err(bad(flag, expected, v));
        }
        Ok(values)
    }

    /// Whether a switch is on.
    pub fn switch(&self, flag: &Flag) -> Result<bool, UsageError> {
        match self.text(flag) {
            None => Ok(false),
            Some(t) => match t.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" | "" => Ok(false),
                _ => Err(bad(flag, "1/true/yes or 0/false/no", t)),
            },
        }
    }

    /// The flag's value as a `T`, checked against its declaration ([`Flag::parsed`],
    /// [`Flag::accepts`], or any text); `None` when unset. An error names the flag, what it
    /// accepts and the text.
    pub fn opt_value<T: std::str::FromStr>(&self, flag: &Flag) -> Result<Option<T>, UsageError> {
        let Some(text) = self.text(flag) else { return Ok(None) };
        let text = text.trim();
        let expected = match flag.accepts {
            Accepts::Text => "text",
            Accepts::Checked { expected, check } if check(text) => expected,
            Accepts::Checked { expected, .. } => return Err(bad(flag, expected, text)),
            Accepts::Duration(..) | Accepts::Number(..) => {
                panic!("{} is a duration or a number: read it with duration() or number()", flag.name)
            }
        };
        text.parse().map(Some).map_err(|_| bad(flag, expected, text))
    }

    /// As [`Args::opt_value`], for a flag that must have a value (required, or with a default).
    pub fn value<T: std::str::FromStr>(&self, flag: &Flag) -> Result<T, UsageError> {
        self.opt_value(flag)?.ok_or_else(|| required(flag))
    }

    /// The flag's duration within its declared bounds ([`Flag::duration_in`]).
    pub fn duration(&self, flag: &Flag) -> Result<Duration, UsageError> {
        self.opt_duration(flag)?.ok_or_else(|| required(flag))
    }

    /// As [`Args::duration`], `None` when unset or `off` ([`Flag::or_off`]).
    pub fn opt_duration(&self, flag: &Flag) -> Result<Option<Duration>, UsageError> {
        let Accepts::Duration(min, max) = flag.accepts else { panic!("{} declares no duration bounds", flag.name) };
        let Some(text) = self.text(flag) else { return Ok(None) };
        let text = text.trim();
        if flag.off && text == "off" {
            return Ok(None);
        }
        let or_off = if flag.off { "off, or " } else { "" };
        let expected = format!("{or_off}a duration from {} to {} such as 400ms, 30s or 5m", show(min), show(max));
        let parsed = match (parse_duration(text), flag.bare_unit) {
            (Ok(d), _) => d,
            (Err(DurationError::NoUnit), Some(unit)) => {
                let with_unit = format!("{text}{unit}");
                self.warnings
                    .borrow_mut()
                    .push(format!("{}: a bare number is deprecated; write {with_unit:?}", flag.label()));
                parse_duration(&with_unit).map_err(|_| bad(flag, &expected, text))?
            }
            (Err(DurationError::NoUnit), None) => {
                return Err(bad(flag, &format!("{expected} (a number needs its unit)"), text));
            }
            (Err(DurationError::Invalid), _) => return Err(bad(flag, &expected, text)),
        };
        if parsed < min || parsed > max {
            return Err(bad(flag, &expected, text));
        }
        Ok(Some(parsed))
    }

    /// The flag's whole number within its declared bounds ([`Flag::number_in`]), as `T`.
    pub fn number<T: TryFrom<u64>>(&self, flag: &Flag) -> Result<T, UsageError> {
        let Accepts::Number(min, max) = flag.accepts else { panic!("{} declares no number bounds", flag.name) };
        let text = self.text(flag).ok_or_else(|| required(flag))?.trim();
        let n = text
            .parse::<u64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| bad(flag, &format!("a number from {min} to {max}"), text))?;
        T::try_from(n).map_err(|_| self.bad(flag, "a smaller number"))
    }

    /// An error about this flag's value, for checks the program makes itself.
    pub fn bad(&self, flag: &Flag, expected: &str) -> UsageError {
        bad(flag, expected, self.text(flag).unwrap_or(""))
    }
}

fn required(flag: &Flag) -> UsageError {
    UsageError(format!("{} is required", flag.label()))
}

/// The flag's raw values: new spelling on argv, else old spelling on argv, else new env, else
/// old env, else the default. Old spellings add a warning and their unit to a bare number.
fn resolve(
    flag: &Flag,
    new: Vec<String>,
    old: Vec<String>,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Option<Vec<String>>, UsageError> {
    let split = |text: String| -> Vec<String> {
        match flag.kind {
            Kind::Many(_) => text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            _ => vec![text],
        }
    };
    let old_spelling = flag.old;
    if !new.is_empty() {
        if let (Some(o), false) = (old_spelling, old.is_empty()) {
            return Err(UsageError(format!("{} and its old name {} are both given", flag.name, o.name)));
        }
        return Ok(Some(new));
    }
    if let (Some(o), false) = (old_spelling, old.is_empty()) {
        let values: Vec<String> = old.iter().map(|v| with_unit(v, o.unit)).collect();
        let last = values.last().cloned().unwrap_or_default();
        warnings.push(format!("{} is deprecated; use {} {last}", o.name, flag.name));
        return Ok(Some(values));
    }
    if let Some(text) = flag.env.and_then(env) {
        return Ok(Some(split(text)));
    }
    if let Some((o, name, text)) = old_spelling.and_then(|o| o.env.and_then(|e| env(e).map(|t| (o, e, t)))) {
        let text = with_unit(&text, o.unit);
        let new_env = flag.env.unwrap_or(flag.name);
        warnings.push(format!("{name} is deprecated; use {new_env}={text}"));
        return Ok(Some(split(text)));
    }
    Ok(match flag.default {
        Default::To(text) => Some(split(text.to_owned())),
        Default::Unset | Default::Required => None,
    })
}

fn with_unit(text: &str, unit: &str) -> String {
    let t = text.trim();
    if !unit.is_empty() && !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        format!("{t}{unit}")
    } else {
        t.to_owned()
    }
}

/// The name part of an argument: before the first `=`, if any.
fn flag_name(arg: &str) -> &str {
    arg.split_once('=').map_or(arg, |(name, _)| name)
}

/// `--word-word` or `-x`: text shaped like a flag name, safe to echo.
pub fn looks_like_flag(name: &str) -> bool {
    let long = name.strip_prefix("--").is_some_and(|n| {
        n.starts_with(|c: char| c.is_ascii_alphanumeric())
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    });
    let short = name.len() == 2 && name.starts_with('-') && name[1..].starts_with(|c: char| c.is_ascii_alphabetic());
    long || short
}

fn unknown(position: usize, name: &str) -> UsageError {
    if looks_like_flag(name) {
        UsageError(format!("unknown flag {name}; see --help"))
    } else {
        UsageError(format!("argument {position} is not a flag (its text is not shown); see --help"))
    }
}

/// A value is echoed only if it cannot hold credentials: one with `@` may be
/// `user:password@host`, so it is described instead.
fn bad(flag: &Flag, expected: &str, got: &str) -> UsageError {
    if got.contains('@') {
        UsageError(format!(
            "{}: expected {expected}; the value holds '@' and is not shown (credentials do not go in settings)",
            flag.label()
        ))
    } else {
        UsageError(format!("{}: expected {expected}, got {got:?}", flag.label()))
    }
}

/// Why a text is not a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationError {
    /// A bare number other than 0.
    NoUnit,
    Invalid,
}

/// `400ms`, `30s`, `1.5s`, `5m`, `1h`, or `0`. Fractions down to the millisecond.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let valid_number = !num.is_empty() && !num.starts_with('.') && !num.ends_with('.') && num.matches('.').count() <= 1;
    if !valid_number {
        return Err(DurationError::Invalid);
    }
    let per_unit_ms: f64 = match unit {
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        "" if num.chars().all(|c| c == '0' || c == '.') => return Ok(Duration::ZERO),
        "" => return Err(DurationError::NoUnit),
        _ => return Err(DurationError::Invalid),
    };
    let n: f64 = num.parse().map_err(|_| DurationError::Invalid)?;
    let ms = (n * per_unit_ms).round();
    // A year: beyond any timeout or run these tools have, and far from f64/u64 limits.
    if !(0.0..=365.0 * 86_400e3).contains(&ms) {
        return Err(DurationError::Invalid);
    }
    Ok(Duration::from_millis(ms as u64))
}

/// A duration the way it is written on the command line: `400ms`, `30s`, `1.5s`, `5m`, `1h`.
pub fn show(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0".to_owned(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms if ms < 1000 => format!("{ms}ms"),
        ms => format!("{}s", ms as f64 / 1000.0),
    }
}

/// Help for one (sub)command: `usage` (its first lines), then every flag with its value,
/// env twin, default and meaning, then `footer`.
pub fn help(usage: &str, flags: &[Flag], footer: &str) -> String {
    let mut out = format!("{}\n", usage.trim_end());
    if !flags.is_empty() {
        out.push_str("\nFlags (an env twin, where named, is read when the flag is not given):\n");
    }
    for f in flags {
        let left = match f.kind {
            Kind::Value(v) => format!("{} {v}", f.name),
            Kind::Many(v) => format!("{} {v}...", f.name),
            Kind::Switch => f.name.to_owned(),
        };
        let mut right = Vec::new();
        if let Some(env) = f.env {
            right.push(format!("env {env}"));
        }
        right.push(default_text(f));
        match f.accepts {
            Accepts::Duration(min, max) => right.push(format!("{} to {}", show(min), show(max))),
            Accepts::Number(min, max) => right.push(format!("{min} to {max}")),
            Accepts::Text | Accepts::Checked { .. } => {}
        }
        out.push_str(&format!("  {left:<30} {}\n      {}\n", right.join(", "), f.help));
    }
    out.push_str("  -h, --help                     this text\n  -V, --version                  the version\n");
    if !footer.is_empty() {
        out.push_str(&format!("\n{}\n", footer.trim_end()));
    }
    out
}

fn default_text(f: &Flag) -> String {
    match (f.default, f.kind) {
        (Default::Required, _) => "required".to_owned(),
        (_, Kind::Switch) => "default off".to_owned(),
        (Default::Unset, _) | (Default::To(""), _) => "default none".to_owned(),
        (Default::To(d), _) => format!("default {d}"),
    }
}

/// The README's table for `flags`: `| flag | env | default | meaning |`, one row per flag.
pub fn markdown_table(flags: &[Flag]) -> String {
    let mut out = String::from("| flag | env | default | meaning |\n| --- | --- | --- | --- |\n");
    for f in flags {
        let env = f.env.map(|e| format!("`{e}`")).unwrap_or_default();
        let default = match (f.default, f.kind) {
            (Default::Required, _) => "required".to_owned(),
            (_, Kind::Switch) => "off".to_owned(),
            (Default::Unset, _) | (Default::To(""), _) => "none".to_owned(),
            (Default::To(d), _) => format!("`{d}`"),
        };
        let bounds = match f.accepts {
            Accepts::Duration(min, max) => format!(" ({} to {})", show(min), show(max)),
            Accepts::Number(min, max) => format!(" ({min} to {max})"),
            Accepts::Text | Accepts::Checked { .. } => String::new(),
        };
        out.push_str(&format!("| `{}` | {env} | {default} | {}{bounds} |\n", f.name, f.help.replace('|', "\\|")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const LISTEN: Flag = Flag::new("--listen", "ADDR", "where to listen")
        .env("LISTEN_ADDR")
        .default("0.0.0.0:8080")
        .parsed::<std::net::SocketAddr>("an address:port");
    const DEADLINE: Flag = Flag::new("--deadline", "DURATION", "per-request budget")
        .env("DEADLINE")
        .default("400ms")
        .old("--deadline-ms", Some("DEADLINE_MS"), "ms")
        .duration_in(Duration::from_millis(1), Duration::from_secs(60));
    const WAIT: Flag = Flag::new("--wait", "DURATION", "how long to wait")
        .env("WAIT")
        .default("5m")
        .bare("s")
        .duration_in(Duration::from_millis(1), Duration::from_secs(3600));
    const TARGET: Flag = Flag::new("--target", "URL", "what to attack")
        .env("TARGET_URL")
        .many()
        .accepts("an http:// URL", |s| s.starts_with("http://"));
    const JSON: Flag = Flag::switch("--json", "print JSON").env("JSON");
    const ADDR: Flag = Flag::new("--addr", "HOST:PORT", "the master").env("ADDR").required();
    const RATIO: Flag = Flag::new("--ratio", "R", "a share")
        .default("0.5")
        .accepts("a ratio from 0 to 1", |s| s.parse::<f64>().is_ok_and(|r| (0.0..=1.0).contains(&r)));
    const POOL: Flag = Flag::new("--pool", "N", "connections").env("POOL").default("2").number_in(1, 1024);
    const FLAGS: &[Flag] = &[LISTEN, DEADLINE, WAIT, TARGET, JSON, ADDR, POOL, RATIO];

    fn parse(args: &[&str], env: &[(&str, &str)], free: usize) -> Result<Parsed, UsageError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Args::parse(FLAGS, args.iter().map(OsString::from), &|k| env.get(k).cloned(), free)
    }

    fn args(args: &[&str], env: &[(&str, &str)]) -> Args {
        match parse(args, env, 1) {
            Ok(Parsed::Run(a)) => a,
            Ok(_) => panic!("expected a run"),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn error(a: &[&str], env: &[(&str, &str)]) -> String {
        match parse(a, env, 0) {
            Err(e) => e.0,
            Ok(_) => panic!("expected an error for {a:?}"),
        }
    }

    /// Durations need a unit (0 aside); fractions and every unit parse; junk does not.
    #[test]
    fn durations_carry_units() {
        assert_eq!(parse_duration("400ms"), Ok(Duration::from_millis(400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("400"), Err(DurationError::NoUnit));
        for junk in ["", "ms", "1.s", ".5s", "1..5s", "5 s", "-1s", "5d", "1e3ms", "99999999h"] {
            assert_eq!(parse_duration(junk), Err(DurationError::Invalid), "{junk:?}");
        }
        for d in [Duration::ZERO, Duration::from_millis(400), Duration::from_millis(1500), Duration::from_secs(90)] {
            assert_eq!(parse_duration(&show(d)), Ok(d), "{}", show(d));
        }
        assert_eq!(show(Duration::from_secs(90)), "90s");
        assert_eq!(show(Duration::from_secs(300)), "5m");
    }

    /// argv beats env beats default; `--flag=value` and `--flag value` both work.
    #[test]
    fn precedence_and_forms() {
        let a = args(&["--listen=1.2.3.4:5"], &[("LISTEN_ADDR", "9.9.9.9:9"), ("ADDR", "m:1")]);
        assert_eq!(a.text(&LISTEN), Some("1.2.3.4:5"));
        let a = args(&[], &[("LISTEN_ADDR", "9.9.9.9:9")]);
        assert_eq!(a.text(&LISTEN), Some("9.9.9.9:9"));
        let a = args(&["--deadline", "250ms"], &[]);
        assert_eq!(a.duration(&DEADLINE), Ok(Duration::from_millis(250)));
        assert_eq!(a.text(&WAIT), Some("5m"));
        assert_eq!(a.text(&ADDR), None);
        assert!(a.warnings().is_empty());
    }

    /// An error is one line naming the flag, its env twin and the bad value.
    #[test]
    fn errors_name_flag_and_value() {
        let a = args(&["--deadline", "400"], &[]);
        let e = a.duration(&DEADLINE).unwrap_err().0;
        assert!(e.starts_with("--deadline (DEADLINE): expected a duration from 1ms to 1m"), "{e}");
        assert!(e.contains("needs its unit") && e.contains("got \"400\"") && !e.contains('\n'), "{e}");
        let a = args(&[], &[("DEADLINE", "2m")]);
        let e = a.duration(&DEADLINE).unwrap_err().0;
        assert!(e.contains("got \"2m\""), "{e}");
        let e = a.value::<String>(&ADDR).unwrap_err().0;
        assert_eq!(e, "--addr (ADDR) is required");
        let a = args(&["--listen", "user:pw@host:1"], &[]);
        let e = a.value::<std::net::SocketAddr>(&LISTEN).unwrap_err().0;
        assert!(!e.contains("pw") && e.contains("not shown"), "{e}");
        assert_eq!(error(&["--nope"], &[]), "unknown flag --nope; see --help");
        assert!(error(&["hunter2"], &[]).contains("argument 1 is not a flag"));
        assert!(!error(&["hunter2"], &[]).contains("hunter2"));
        assert!(!error(&["--listen", "1", "hunter2"], &[]).contains("hunter2"));
        assert_eq!(error(&["--listen"], &[]), "--listen needs a value; see --help");
        assert_eq!(error(&["--listen", "--json"], &[]), "--listen needs a value; see --help");
        assert_eq!(error(&["--listen", "a", "--listen", "b"], &[]), "--listen given more than once");
        assert_eq!(error(&["--json=1"], &[]), "--json takes no value");
    }

    /// Old spellings still work, read their implied unit and warn with the new spelling.
    #[test]
    fn old_spellings_warn() {
        let a = args(&["--deadline-ms", "250"], &[]);
        assert_eq!(a.duration(&DEADLINE), Ok(Duration::from_millis(250)));
        assert_eq!(a.warnings(), ["--deadline-ms is deprecated; use --deadline 250ms"]);
        let a = args(&[], &[("DEADLINE_MS", "300")]);
        assert_eq!(a.duration(&DEADLINE), Ok(Duration::from_millis(300)));
        assert_eq!(a.warnings(), ["DEADLINE_MS is deprecated; use DEADLINE=300ms"]);
        let a = args(&[], &[("DEADLINE_MS", "300"), ("DEADLINE", "200ms")]);
        assert_eq!(a.duration(&DEADLINE), Ok(Duration::from_millis(200)));
        assert!(a.warnings().is_empty());
        assert!(error(&["--deadline", "1s", "--deadline-ms", "5"], &[]).contains("both given"));
        let a = args(&["--wait", "30"], &[]);
        assert_eq!(a.duration(&WAIT), Ok(Duration::from_secs(30)));
        assert_eq!(a.warnings(), ["--wait (WAIT): a bare number is deprecated; write \"30s\""]);
    }

    /// A duration flag declared `or_off` reads `off` as `None` and says so when refusing.
    #[test]
    fn durations_or_off() {
        const STALE: Flag = Flag::new("--stale", "DURATION", "how stale")
            .default("off")
            .duration_in(Duration::from_millis(1), Duration::from_secs(60))
            .or_off();
        const FLAGS: &[Flag] = &[STALE, DEADLINE];
        let parse = |args: &[&str]| match Args::parse(FLAGS, args.iter().map(OsString::from), &|_| None, 0) {
            Ok(Parsed::Run(a)) => a,
            _ => panic!("parses"),
        };
        assert_eq!(parse(&[]).opt_duration(&STALE), Ok(None));
        assert_eq!(parse(&["--stale", "5s"]).opt_duration(&STALE), Ok(Some(Duration::from_secs(5))));
        let e = parse(&["--stale", "soon"]).opt_duration(&STALE).unwrap_err().0;
        assert!(e.starts_with("--stale: expected off, or a duration from 1ms to 1m"), "{e}");
        assert!(parse(&["--deadline", "off"]).duration(&DEADLINE).is_err(), "off only where declared");
    }

    /// Repeatable flags collect argv, else split their env twin; switches read both forms.
    #[test]
    fn many_and_switches() {
        let a = args(&["--target", "http://a/", "--target=http://b/"], &[("TARGET_URL", "http://c/")]);
        assert_eq!(a.many(&TARGET), Ok(vec!["http://a/".to_owned(), "http://b/".to_owned()]));
        let a = args(&[], &[("TARGET_URL", "http://c/, http://d/")]);
        assert_eq!(a.many(&TARGET), Ok(vec!["http://c/".to_owned(), "http://d/".to_owned()]));
        let e = args(&["--target", "http://a/", "--target", "ftp://b/"], &[]).many(&TARGET).unwrap_err().0;
        assert_eq!(e, "--target (TARGET_URL): expected an http:// URL, got \"ftp://b/\"");
        assert_eq!(a.switch(&JSON), Ok(false));
        assert_eq!(args(&["--json"], &[]).switch(&JSON), Ok(true));
        assert_eq!(args(&[], &[("JSON", "true")]).switch(&JSON), Ok(true));
        assert!(args(&[], &[("JSON", "maybe")]).switch(&JSON).unwrap_err().0.contains("JSON"));
        let a = args(&["up", "--json"], &[]);
        assert_eq!(a.free(), ["up"]);
    }

    /// A flag's declared bounds check its value and show in its help.
    #[test]
    fn declared_bounds() {
        const BUDGET: Flag = Flag::new("--budget", "DURATION", "a budget")
            .default("400ms")
            .duration_in(Duration::from_millis(1), Duration::from_secs(60));
        const FLAGS: &[Flag] = &[BUDGET, POOL];
        let parse = |args: &[&str]| match Args::parse(FLAGS, args.iter().map(OsString::from), &|_| None, 0) {
            Ok(Parsed::Run(a)) => a,
            _ => panic!("parses"),
        };
        assert_eq!(parse(&[]).duration(&BUDGET), Ok(Duration::from_millis(400)));
        assert_eq!(parse(&[]).number::<u32>(&POOL), Ok(2));
        let e = parse(&["--budget", "2m"]).duration(&BUDGET).unwrap_err().0;
        assert!(e.contains("from 1ms to 1m") && e.contains("got \"2m\""), "{e}");
        let e = parse(&["--pool", "0"]).number::<u32>(&POOL).unwrap_err().0;
        assert!(e.contains("from 1 to 1024"), "{e}");
        assert!(parse(&["--pool", "300"]).number::<u8>(&POOL).is_err(), "300 is no u8");
        let h = help("Usage: t", FLAGS, "");
        assert!(h.contains("default 400ms, 1ms to 1m") && h.contains("env POOL, default 2, 1 to 1024"), "{h}");
    }

    /// A flag's declared check decides what its reader accepts, whatever type it reads into.
    #[test]
    fn declared_checks() {
        let a = args(&["--listen", " 127.0.0.1:80 ", "--ratio", "0.25"], &[]);
        assert_eq!(a.value::<std::net::SocketAddr>(&LISTEN), Ok("127.0.0.1:80".parse().unwrap()));
        assert_eq!(a.value::<f64>(&RATIO), Ok(0.25));
        let a = args(&["--ratio", "1.5", "--listen", "nowhere"], &[]);
        assert_eq!(a.value::<f64>(&RATIO).unwrap_err().0, "--ratio: expected a ratio from 0 to 1, got \"1.5\"");
        let e = a.value::<std::net::SocketAddr>(&LISTEN).unwrap_err().0;
        assert_eq!(e, "--listen (LISTEN_ADDR): expected an address:port, got \"nowhere\"");
        assert_eq!(args(&[], &[]).value::<f64>(&RATIO), Ok(0.5));
        assert_eq!(args(&[], &[]).opt_value::<String>(&ADDR), Ok(None));
        // A reader whose type is narrower than the declaration still fails cleanly.
        assert!(args(&["--ratio", "0.5"], &[]).value::<u8>(&RATIO).is_err());
    }

    /// Help and the README table list every flag with its env twin and default.
    #[test]
    fn help_and_table() {
        assert!(matches!(parse(&["x", "--help"], &[], 0), Ok(Parsed::Help)));
        assert!(matches!(parse(&["-V"], &[], 0), Ok(Parsed::Version)));
        let h = help("Usage: t [FLAGS]", FLAGS, "Exit status: 0, 1, 2.");
        assert!(h.contains("--deadline DURATION") && h.contains("env DEADLINE, default 400ms"), "{h}");
        assert!(h.contains("--target URL...") && h.contains("--addr HOST:PORT") && h.contains("required"));
        let t = markdown_table(FLAGS);
        assert!(t.contains("| `--deadline` | `DEADLINE` | `400ms` | per-request budget (1ms to 1m) |"), "{t}");
        assert!(t.contains("| `--json` | `JSON` | off | print JSON |"), "{t}");
        assert_eq!(t.lines().count(), FLAGS.len() + 2);
    }
}
