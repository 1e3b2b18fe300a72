//! Configuration: argv and environment → a validated [`Config`]. The only module that reads
//! either. Two phases: every flag is first collected as raw text (flag, else env twin, else
//! default), then each is validated into a typed field with an error that names the flag.
//! Secrets (Redis passwords) come only from the environment or from files, never from flags.

use crate::store::{Tls, TlsError, TlsFile};
use rustls::pki_types::ServerName;
use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// One command-line flag: its env twin, its default and what it means. The table below drives
/// parsing, `--help` and the README's config table alike, so they cannot drift apart.
pub struct Flag {
    pub name: &'static str,
    pub env: &'static str,
    /// `None`: the setting is required.
    pub default: Option<&'static str>,
    pub help: &'static str,
}

/// Every flag the server takes.
pub const FLAGS: &[Flag] = &[
    Flag {
        name: "--listen",
        env: "LISTEN_ADDR",
        default: Some("0.0.0.0:8080"),
        help: "address:port the HTTP server listens on",
    },
    Flag {
        name: "--read-redis-addr",
        env: "REDIS_ADDR_READ",
        default: Some("127.0.0.1:6379"),
        help: "host:port of the local Redis read replica (GET); redis://host:port too, rediss://host:port for TLS",
    },
    Flag {
        name: "--write-redis-addr",
        env: "REDIS_ADDR_WRITE",
        default: None,
        help: "host:port of the Redis master (POST); required; redis://host:port too, rediss://host:port for TLS",
    },
    Flag {
        name: "--redis-tls-ca-file",
        env: "REDIS_TLS_CA_FILE",
        default: Some(""),
        help: "PEM bundle of the CA certificates a rediss:// server's certificate must chain to; required with rediss://",
    },
    Flag {
        name: "--redis-tls-cert-file",
        env: "REDIS_TLS_CERT_FILE",
        default: Some(""),
        help: "PEM client certificate (chain) for servers that ask for one (tls-auth-clients); with --redis-tls-key-file",
    },
    Flag {
        name: "--redis-tls-key-file",
        env: "REDIS_TLS_KEY_FILE",
        default: Some(""),
        help: "PEM private key of --redis-tls-cert-file",
    },
    Flag {
        name: "--redis-tls-server-name",
        env: "REDIS_TLS_SERVER_NAME",
        default: Some(""),
        help: "name a rediss:// server's certificate must be valid for, instead of the address's host (e.g. when addressing by IP)",
    },
    Flag {
        name: "--redis-user-read",
        env: "REDIS_USER_READ",
        default: Some("default"),
        help: "ACL user the API reads the replica as (GET, health checks); `default`: Redis's default user (plain AUTH password)",
    },
    Flag {
        name: "--redis-user-write",
        env: "REDIS_USER_WRITE",
        default: Some("default"),
        help: "ACL user the API writes the master as (POST, its health check); `default`: Redis's default user",
    },
    Flag {
        name: "--read-pool-size",
        env: "READ_POOL_SIZE",
        default: Some("2"),
        help: "connections to the replica (GETs share one read in flight, so one is used at a time; the other is a warm spare)",
    },
    Flag {
        name: "--write-pool-size",
        env: "WRITE_POOL_SIZE",
        default: Some("16"),
        help: "connections to the master: POSTs in flight at once (each pod opens this many)",
    },
    Flag {
        name: "--max-connections",
        env: "MAX_CONNECTIONS",
        default: Some("1024"),
        help: "max open client connections (= worker threads); beyond it new connections get 503",
    },
    Flag {
        name: "--deadline-ms",
        env: "DEADLINE_MS",
        default: Some("400"),
        help: "per-request budget from its first byte; past it the answer is 504",
    },
    Flag {
        name: "--redis-connect-timeout-ms",
        env: "REDIS_CONNECT_TIMEOUT_MS",
        default: Some("1000"),
        help: "TCP connect + handshake timeout for a new Redis connection",
    },
    Flag {
        name: "--redis-max-reply",
        env: "REDIS_MAX_REPLY",
        default: Some("65536"),
        help: "largest Redis reply a request reads, in bytes; a larger stored value is refused (500) unread",
    },
    Flag {
        name: "--max-body-bytes",
        env: "MAX_BODY_BYTES",
        default: Some("65536"),
        help: "largest request body accepted (413 beyond)",
    },
    Flag {
        name: "--max-header-bytes",
        env: "MAX_HEADER_BYTES",
        default: Some("16384"),
        help: "largest request head (request line + headers) accepted (431 beyond)",
    },
    Flag {
        name: "--header-timeout-ms",
        env: "HEADER_TIMEOUT_MS",
        default: Some("5000"),
        help: "time for a whole request head to arrive after its first byte",
    },
    Flag {
        name: "--body-timeout-ms",
        env: "BODY_TIMEOUT_MS",
        default: Some("5000"),
        help: "time for a whole request body to arrive",
    },
    Flag {
        name: "--idle-timeout-ms",
        env: "IDLE_TIMEOUT_MS",
        default: Some("30000"),
        help: "an idle keep-alive connection is closed after this",
    },
    Flag {
        name: "--write-timeout-ms",
        env: "WRITE_TIMEOUT_MS",
        default: Some("5000"),
        help: "a response write that makes no progress for this long closes the connection",
    },
    Flag {
        name: "--cors-origins",
        env: "CORS_ORIGINS",
        default: Some("*"),
        help: "allowed CORS origins: * or a comma-separated list of scheme://host[:port]",
    },
    Flag { name: "--redis-hash", env: "REDIS_HASH", default: Some("currency"), help: "Redis hash holding the value" },
    Flag {
        name: "--redis-field",
        env: "REDIS_FIELD",
        default: Some("current-value"),
        help: "field of that hash holding the value",
    },
    Flag {
        name: "--replica-link-grace",
        env: "REPLICA_LINK_GRACE",
        default: Some("30s"),
        help: "how long the replica may be cut from its master and still be ready",
    },
    Flag {
        name: "--health-interval-ms",
        env: "HEALTH_INTERVAL_MS",
        default: Some("1000"),
        help: "how often the replica and master are checked for /readyz",
    },
    Flag {
        name: "--redis-wait",
        env: "REDIS_WAIT",
        default: Some("5m"),
        help: "give up (exit 1) if the replica has not answered once within this",
    },
    Flag {
        name: "--shutdown-delay",
        env: "SHUTDOWN_DELAY",
        default: Some("0s"),
        help: "on SIGTERM, keep serving (with /readyz 503) this long before closing the listener",
    },
    Flag {
        name: "--shutdown-grace",
        env: "SHUTDOWN_GRACE",
        default: Some("10s"),
        help: "on SIGTERM, time allowed for in-flight requests before exit",
    },
    Flag {
        name: "--breaker-failures",
        env: "BREAKER_FAILURES",
        default: Some("3"),
        help: "failed writes in a row after which the master is refused at once (503) for the cooldown",
    },
    Flag {
        name: "--breaker-cooldown-ms",
        env: "BREAKER_COOLDOWN_MS",
        default: Some("1000"),
        help: "how long writes are refused before one probe write is let through",
    },
    Flag {
        name: "--read-mode",
        env: "READ_MODE",
        default: Some("replica"),
        help: "replica: every GET reads the local replica; memory: GET serves a copy kept fresh by notices from the replica",
    },
    Flag {
        name: "--memory-refresh-ms",
        env: "MEMORY_REFRESH_MS",
        default: Some("1000"),
        help: "memory mode: re-read the value at least this often (the safety net for missed notices)",
    },
    Flag {
        name: "--probe-listen",
        env: "PROBE_LISTEN",
        default: Some("0.0.0.0:8081"),
        help: "address:port of the probe listener (/healthz, /readyz, /metrics only, its own small connection cap); off: none",
    },
    Flag {
        name: "--max-staleness",
        env: "MAX_STALENESS",
        default: Some("off"),
        help: "GET answers 503 once the replica has not heard from its master for longer than this (e.g. 5m); off: serve the last synced value however old",
    },
    Flag {
        name: "--log-format",
        env: "LOG_FORMAT",
        default: Some("text"),
        help: "text or json (level filter: RUST_LOG, default info)",
    },
];

/// Environment-only secrets: `NAME` holds the value, `NAME_FILE` a path to a file holding it.
pub const SECRET_ENVS: &[&str] = &["REDIS_PASS_READ", "REDIS_PASS_WRITE"];

/// A configuration error; the message names the flag or variable at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// What the command line asked for besides running.
pub enum Command {
    Run(Box<Config>),
    Help,
    Version,
}

/// CORS allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    Any,
    List(Vec<String>),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A Redis endpoint: where it is and how to authenticate.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisEndpoint {
    pub host: String,
    pub port: u16,
    /// ACL user (`AUTH user password`); `None`: Redis's default user (`AUTH password`, which
    /// Redis before 6 understands too).
    pub user: Option<String>,
    pub password: Option<String>,
    /// `rediss://`: TLS, the server's certificate valid for this name (with [`Config::redis_tls`]).
    pub tls: Option<ServerName<'static>>,
}

impl fmt::Debug for RedisEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password is never printed, only whether one is set.
        let scheme = if self.tls.is_some() { "rediss://" } else { "" };
        let password = if self.password.is_some() { "set" } else { "none" };
        let user = self.user.as_deref().unwrap_or("default");
        write!(f, "{scheme}{}:{} (user: {user}, password: {password})", self.host, self.port)
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub read: RedisEndpoint,
    pub write: RedisEndpoint,
    /// TLS settings, loaded when an address is `rediss://` (`None` otherwise).
    pub redis_tls: Option<Tls>,
    pub read_pool_size: u32,
    pub write_pool_size: u32,
    pub max_connections: usize,
    pub deadline: Duration,
    pub redis_connect_timeout: Duration,
    pub redis_max_reply: usize,
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub cors_origins: CorsOrigins,
    pub redis_hash: String,
    pub redis_field: String,
    pub replica_link_grace: Duration,
    pub health_interval: Duration,
    pub redis_wait: Duration,
    pub shutdown_delay: Duration,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    pub read_mode: ReadMode,
    pub memory_refresh: Duration,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    /// `None`: no probe listener (`--probe-listen off`).
    pub probe_listen: Option<SocketAddr>,
    /// `None`: GET serves the last synced value however old (`--max-staleness off`).
    pub max_staleness: Option<Duration>,
}

/// Where GET takes the value from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// One HGET on the local replica per request.
    Replica,
    /// A copy in memory, refreshed on change notices and periodically.
    Memory,
}

/// Raw phase: every flag's text, taken from argv, else its env twin, else its default.
struct Raw {
    values: Vec<(&'static Flag, Option<String>)>,
}

impl Raw {
    fn get(&self, name: &str) -> (&'static Flag, Option<&str>) {
        let (flag, value) = self
            .values
            .iter()
            .find(|(f, _)| f.name == name)
            .unwrap_or_else(|| panic!("flag {name} missing from FLAGS"));
        (flag, value.as_deref())
    }
}

impl Config {
    /// Parses the process's own arguments and environment.
    pub fn from_process() -> Result<Command, ConfigError> {
        let args: Vec<OsString> = std::env::args_os().skip(1).collect();
        Self::parse(args, |k| std::env::var(k).ok())
    }

    /// Parses `args` (without the program name) with `env` as the environment. Each flag is
    /// taken once, as `--flag value` or `--flag=value`. Errors name the flag or variable at
    /// fault but never echo text that may be a secret: an unknown argument shows only its name
    /// (before `=`) and only if it looks like a flag; a value holding `@` is never shown.
    pub fn parse(args: Vec<OsString>, env: impl Fn(&str) -> Option<String>) -> Result<Command, ConfigError> {
        // Before anything else (even --help), so every spelling of a password flag gets the
        // message that says where passwords go, wherever it stands on the line.
        if let Some(name) = args.iter().filter_map(|a| a.to_str()).map(flag_name).find(|n| is_password_flag(n)) {
            return Err(password_on_argv(name));
        }
        if args.iter().any(|a| a == "-h" || a == "--help") {
            return Ok(Command::Help);
        }
        if args.iter().any(|a| a == "-V" || a == "--version") {
            return Ok(Command::Version);
        }
        let mut given: Vec<Option<String>> = vec![None; FLAGS.len()];
        let mut args = args.into_iter().enumerate();
        while let Some((i, arg)) = args.next() {
            let position = i + 1;
            let Some(arg) = arg.to_str() else {
                return Err(ConfigError(format!("argument {position} is not valid UTF-8; see --help")));
            };
            let name = flag_name(arg);
            let Some(index) = FLAGS.iter().position(|f| f.name == name) else {
                return Err(unknown_argument(position, name));
            };
            let flag = &FLAGS[index];
            let value = match arg.split_once('=') {
                Some((_, inline)) => inline.to_owned(),
                // A following flag is not taken as the value: `--listen --deadline-ms 5`
                // lacks the address, it does not set it to "--deadline-ms".
                None => match args.next() {
                    Some((_, next)) if !next.to_str().is_some_and(|n| n.starts_with("--")) => {
                        next.into_string().map_err(|_| {
                            ConfigError(format!("{} ({}): the value is not valid UTF-8", flag.name, flag.env))
                        })?
                    }
                    _ => return Err(ConfigError(format!("{} needs a value; see --help", flag.name))),
                },
            };
            if given[index].is_some() {
                return Err(ConfigError(format!("{} given more than once", flag.name)));
            }
            given[index] = Some(value);
        }
        let values = FLAGS
            .iter()
            .zip(given)
            .map(|(flag, from_arg)| {
                let value = from_arg.or_else(|| env(flag.env)).or(flag.default.map(str::to_owned));
                (flag, value)
            })
            .collect();
        let raw = Raw { values };
        Ok(Command::Run(Box::new(Self::validate(&raw, &env)?)))
    }

    fn validate(raw: &Raw, env: &impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let read_password = secret("REDIS_PASS_READ", env)?;
        let write_password = secret("REDIS_PASS_WRITE", env)?;
        let (read, read_tls) =
            endpoint(raw, ["--read-redis-addr", "--redis-user-read"], "REDIS_PASS_READ", read_password)?;
        let (write, write_tls) =
            endpoint(raw, ["--write-redis-addr", "--redis-user-write"], "REDIS_PASS_WRITE", write_password)?;
        let redis_tls = tls(raw, read_tls || write_tls)?;
        let with_name = |mut e: RedisEndpoint, on: bool, name: &str| -> Result<RedisEndpoint, ConfigError> {
            if let (true, Some(t)) = (on, &redis_tls) {
                let (flag, _) = raw.get(name);
                e.tls = Some(t.server_name(&e.host).map_err(|why| {
                    ConfigError(format!(
                        "{} ({}): the host {:?} cannot be checked against a certificate ({why}); \
                         set --redis-tls-server-name (REDIS_TLS_SERVER_NAME) to the name the certificate is for",
                        flag.name, flag.env, e.host
                    ))
                })?);
            }
            Ok(e)
        };
        let read = with_name(read, read_tls, "--read-redis-addr")?;
        let write = with_name(write, write_tls, "--write-redis-addr")?;
        Ok(Config {
            listen: parse_with(raw, "--listen", "an address:port such as 0.0.0.0:8080", |s| s.parse().ok())?,
            read,
            write,
            redis_tls,
            read_pool_size: int_in(raw, "--read-pool-size", 1, 1024)? as u32,
            write_pool_size: int_in(raw, "--write-pool-size", 1, 1024)? as u32,
            max_connections: int_in(raw, "--max-connections", 1, 100_000)? as usize,
            deadline: millis_in(raw, "--deadline-ms", 1, 60_000)?,
            redis_connect_timeout: millis_in(raw, "--redis-connect-timeout-ms", 1, 60_000)?,
            redis_max_reply: int_in(raw, "--redis-max-reply", 64, 512 << 20)? as usize,
            max_body_bytes: int_in(raw, "--max-body-bytes", 1, 64 << 20)? as usize,
            max_header_bytes: int_in(raw, "--max-header-bytes", 1024, 1 << 20)? as usize,
            header_timeout: millis_in(raw, "--header-timeout-ms", 1, 600_000)?,
            body_timeout: millis_in(raw, "--body-timeout-ms", 1, 600_000)?,
            idle_timeout: millis_in(raw, "--idle-timeout-ms", 1, 3_600_000)?,
            write_timeout: millis_in(raw, "--write-timeout-ms", 1, 600_000)?,
            cors_origins: parse_with(
                raw,
                "--cors-origins",
                "* or a comma-separated list of scheme://host[:port]",
                cors,
            )?,
            redis_hash: non_empty(raw, "--redis-hash")?,
            redis_field: non_empty(raw, "--redis-field")?,
            replica_link_grace: duration(raw, "--replica-link-grace")?,
            health_interval: millis_in(raw, "--health-interval-ms", 10, 60_000)?,
            redis_wait: duration(raw, "--redis-wait")?,
            shutdown_delay: duration(raw, "--shutdown-delay")?,
            shutdown_grace: duration(raw, "--shutdown-grace")?,
            read_mode: parse_with(raw, "--read-mode", "replica or memory", |s| match s {
                "replica" => Some(ReadMode::Replica),
                "memory" => Some(ReadMode::Memory),
                _ => None,
            })?,
            memory_refresh: millis_in(raw, "--memory-refresh-ms", 10, 600_000)?,
            breaker_failures: int_in(raw, "--breaker-failures", 1, 1000)? as u32,
            breaker_cooldown: millis_in(raw, "--breaker-cooldown-ms", 1, 600_000)?,
            probe_listen: parse_with(raw, "--probe-listen", "an address:port such as 0.0.0.0:8081, or off", |s| {
                if s == "off" { Some(None) } else { s.parse().ok().map(Some) }
            })?,
            max_staleness: parse_with(
                raw,
                "--max-staleness",
                "off, or a duration such as 30s or 5m (bare number: seconds)",
                |s| if s == "off" { Some(None) } else { parse_duration(s).filter(|d| !d.is_zero()).map(Some) },
            )?,
            log_format: parse_with(raw, "--log-format", "text or json", |s| match s {
                "text" => Some(LogFormat::Text),
                "json" => Some(LogFormat::Json),
                _ => None,
            })?,
        })
    }

    /// One line for the startup log: every setting, no secret.
    pub fn summary(&self) -> String {
        format!("{self:?}")
    }
}

/// `--help` text, generated from [`FLAGS`].
pub fn help_text() -> String {
    let mut out = String::from(
        "redis-api: serves GET / from the local Redis replica and POST / to the Redis master.\n\n\
         Usage: redis-api [FLAGS]\n\nEvery flag has an environment twin; the flag wins.\n\n",
    );
    for f in FLAGS {
        let default = match f.default {
            None => "required".to_owned(),
            Some("") => "default none".to_owned(),
            Some(d) => format!("default {d}"),
        };
        out.push_str(&format!("  {:<28} env {:<26} {}\n  {:<28} {}\n", f.name, f.env, default, "", f.help));
    }
    out.push_str(
        "\nSecrets (environment only, never flags):\n  \
         REDIS_PASS_READ / REDIS_PASS_READ_FILE     password of the replica\n  \
         REDIS_PASS_WRITE / REDIS_PASS_WRITE_FILE   password of the master\n\n  \
         -h, --help       this text\n  -V, --version    version\n",
    );
    out
}

fn missing(flag: &Flag) -> ConfigError {
    ConfigError(format!("{} ({}) is required", flag.name, flag.env))
}

/// A value is echoed in an error only if it cannot hold credentials: one with `@` may be
/// `user:password@host`, so it is described instead.
fn bad(flag: &Flag, expected: &str, got: &str) -> ConfigError {
    if got.contains('@') {
        ConfigError(format!(
            "{} ({}): expected {expected}; the value holds '@' and is not shown (credentials do not go in settings)",
            flag.name, flag.env
        ))
    } else {
        ConfigError(format!("{} ({}): expected {expected}, got {got:?}", flag.name, flag.env))
    }
}

/// The name part of an argument: before the first `=`, if any.
fn flag_name(arg: &str) -> &str {
    arg.split_once('=').map_or(arg, |(name, _)| name)
}

/// `--word-word` or `-x`: text shaped like a flag name, safe to echo. Anything else on the
/// command line may be a value (a password typed after a misspelt flag), so it is not shown.
fn looks_like_flag(name: &str) -> bool {
    let long = name.strip_prefix("--").is_some_and(|n| {
        n.starts_with(|c: char| c.is_ascii_alphanumeric())
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    });
    let short = name.len() == 2 && name.starts_with('-') && name[1..].starts_with(|c: char| c.is_ascii_alphabetic());
    long || short
}

/// Any flag naming a password (`--read-redis-pass`, `--write-redis-password`, `--passwd`, ...):
/// none is taken, whatever its spelling, so each gets the message saying where passwords go.
fn is_password_flag(name: &str) -> bool {
    looks_like_flag(name) && name.to_ascii_lowercase().contains("pass")
}

fn password_on_argv(name: &str) -> ConfigError {
    let lower = name.to_ascii_lowercase();
    let vars = match (lower.contains("read"), lower.contains("write")) {
        (true, false) => "REDIS_PASS_READ (or REDIS_PASS_READ_FILE, a file holding it)",
        (false, true) => "REDIS_PASS_WRITE (or REDIS_PASS_WRITE_FILE, a file holding it)",
        _ => "REDIS_PASS_READ / REDIS_PASS_WRITE (or REDIS_PASS_READ_FILE / REDIS_PASS_WRITE_FILE, files holding them)",
    };
    ConfigError(format!(
        "{name}: passwords are not accepted on the command line (they would show in `ps`); \
         set {vars} in the environment"
    ))
}

fn unknown_argument(position: usize, name: &str) -> ConfigError {
    if looks_like_flag(name) {
        ConfigError(format!("unknown argument {name}; see --help"))
    } else {
        ConfigError(format!("argument {position} is not a flag (its text is not shown); see --help"))
    }
}

fn parse_with<T>(raw: &Raw, name: &str, expected: &str, f: impl Fn(&str) -> Option<T>) -> Result<T, ConfigError> {
    let (flag, value) = raw.get(name);
    let value = value.ok_or_else(|| missing(flag))?;
    f(value.trim()).ok_or_else(|| bad(flag, expected, value))
}

fn int_in(raw: &Raw, name: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    parse_with(raw, name, &format!("an integer from {min} to {max}"), |s| {
        s.parse::<u64>().ok().filter(|v| (min..=max).contains(v))
    })
}

fn millis_in(raw: &Raw, name: &str, min: u64, max: u64) -> Result<Duration, ConfigError> {
    int_in(raw, name, min, max).map(Duration::from_millis)
}

fn duration(raw: &Raw, name: &str) -> Result<Duration, ConfigError> {
    parse_with(raw, name, "a duration such as 500ms, 30s, 5m or 1h (bare number: seconds)", parse_duration)
}

fn non_empty(raw: &Raw, name: &str) -> Result<String, ConfigError> {
    parse_with(raw, name, "a non-empty name", |s| (!s.is_empty()).then(|| s.to_owned()))
}

/// `[address flag, user flag]`; `pass_var`: where this endpoint's password goes instead of the
/// address. An address with userinfo (`redis://:pw@host:port`, `user:pw@host:port`) is refused
/// without being shown. A named ACL user needs a password: without `AUTH` a connection is
/// Redis's default user, whatever the user flag says. The address is `host:port`,
/// `redis://host:port` or `rediss://host:port` (TLS: the `bool`; the name to verify is filled
/// in once the TLS settings are known).
fn endpoint(
    raw: &Raw,
    [name, user_flag]: [&str; 2],
    pass_var: &str,
    password: Option<String>,
) -> Result<(RedisEndpoint, bool), ConfigError> {
    let user = parse_with(raw, user_flag, "an ACL user name (no spaces or control characters)", |s| {
        (!s.is_empty() && s.chars().all(|c| c.is_ascii_graphic())).then(|| s.to_owned())
    })?;
    let user = (user != "default").then_some(user);
    if let (Some(user), None) = (&user, &password) {
        let flag = raw.get(user_flag).0;
        return Err(ConfigError(format!(
            "{} ({}) names the ACL user {user:?} but {pass_var} / {pass_var}_FILE is not set: \
             without a password the connection would be Redis's default user",
            flag.name, flag.env
        )));
    }
    let (flag, value) = raw.get(name);
    if value.is_some_and(|v| v.contains('@')) {
        return Err(ConfigError(format!(
            "{} ({}): the address holds credentials (the part before '@'; the value is not shown); \
             give host:port only and put the password in {pass_var} or {pass_var}_FILE",
            flag.name, flag.env
        )));
    }
    let (tls, (host, port)) = parse_with(
        raw,
        name,
        "host:port such as 127.0.0.1:6379, redis://host:port, or rediss://host:port (TLS)",
        |s| match s.strip_prefix("rediss://") {
            Some(rest) => Some((true, parse_host_port(rest)?)),
            None => Some((false, parse_host_port(s.strip_prefix("redis://").unwrap_or(s))?)),
        },
    )?;
    Ok((RedisEndpoint { host, port, user, password, tls: None }, tls))
}

/// The TLS settings: loaded when an address is `rediss://` (`wanted`), which needs
/// `--redis-tls-ca-file`; set without any `rediss://` address they are refused, so a
/// plaintext connection is never taken for an encrypted one. A bad file is named with its flag
/// and path, never with what it holds.
fn tls(raw: &Raw, wanted: bool) -> Result<Option<Tls>, ConfigError> {
    let value = |name: &str| {
        let (flag, v) = raw.get(name);
        (flag, v.map(str::trim).filter(|v| !v.is_empty()))
    };
    let (ca_flag, ca) = value("--redis-tls-ca-file");
    let (cert_flag, cert) = value("--redis-tls-cert-file");
    let (key_flag, key) = value("--redis-tls-key-file");
    let (name_flag, name) = value("--redis-tls-server-name");
    if !wanted {
        return match [(ca_flag, ca), (cert_flag, cert), (key_flag, key), (name_flag, name)]
            .iter()
            .find(|(_, v)| v.is_some())
        {
            Some((flag, _)) => Err(ConfigError(format!(
                "{} ({}) is set but neither --read-redis-addr nor --write-redis-addr is rediss://host:port: \
                 nothing would use TLS",
                flag.name, flag.env
            ))),
            None => Ok(None),
        };
    }
    let ca = ca.ok_or_else(|| {
        ConfigError(format!(
            "{} ({}) is required with a rediss:// address: the CA bundle the server's certificate is checked against",
            ca_flag.name, ca_flag.env
        ))
    })?;
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((Path::new(cert), Path::new(key))),
        (None, None) => None,
        _ => {
            return Err(ConfigError(format!(
                "{} ({}) and {} ({}) go together: set both or neither",
                cert_flag.name, cert_flag.env, key_flag.name, key_flag.env
            )));
        }
    };
    let server_name = match name {
        None => None,
        Some(n) => {
            Some(ServerName::try_from(n.to_owned()).map_err(|_| bad(name_flag, "a DNS name or an IP address", n))?)
        }
    };
    Tls::load(Path::new(ca), client, server_name).map(Some).map_err(|TlsError { file, reason }| {
        let (flag, path) = match file {
            TlsFile::Ca => (ca_flag, ca),
            TlsFile::Cert => (cert_flag, cert.unwrap_or_default()),
            TlsFile::Key => (key_flag, key.unwrap_or_default()),
        };
        ConfigError(format!("{} ({}): {path}: {reason}", flag.name, flag.env))
    })
}

/// `host:port`, `[v6]:port`; the host is not resolved here (DNS may not be up yet at start).
pub fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let valid = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c));
    valid.then(|| (host.to_owned(), port))
}

/// `500ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

fn cors(s: &str) -> Option<CorsOrigins> {
    if s == "*" {
        return Some(CorsOrigins::Any);
    }
    let list: Vec<String> = s.split(',').map(|o| o.trim().trim_end_matches('/').to_owned()).collect();
    let valid = |o: &String| {
        let rest = o.strip_prefix("http://").or_else(|| o.strip_prefix("https://"));
        // No userinfo: an Origin header never carries one, so such an entry could never match.
        rest.is_some_and(|r| !r.is_empty() && !r.contains(['/', '@']) && !r.contains(char::is_whitespace))
    };
    (!list.is_empty() && list.iter().all(valid)).then_some(CorsOrigins::List(list))
}

/// Reads secret `name` from `name` or from the file named by `name_FILE` (not both). Errors do
/// not show the path: a password set in `name_FILE` by mistake would be printed.
fn secret(name: &str, env: &impl Fn(&str) -> Option<String>) -> Result<Option<String>, ConfigError> {
    let file_var = format!("{name}_FILE");
    match (env(name).filter(|v| !v.is_empty()), env(&file_var).filter(|v| !v.is_empty())) {
        (Some(_), Some(_)) => Err(ConfigError(format!("set {name} or {file_var}, not both"))),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError(format!("{file_var}: cannot read the file it names (path not shown): {e}")))?;
            let value = text.trim_end_matches(['\r', '\n']).to_owned();
            if value.is_empty() {
                return Err(ConfigError(format!("{file_var}: the file it names is empty")));
            }
            Ok(Some(value))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Command, ConfigError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::parse(args.iter().map(OsString::from).collect(), |k| env.get(k).cloned())
    }

    fn config(args: &[&str], env: &[(&str, &str)]) -> Config {
        match parse(args, env) {
            Ok(Command::Run(c)) => *c,
            Ok(_) => panic!("expected a run config"),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn error(args: &[&str], env: &[(&str, &str)]) -> String {
        match parse(args, env) {
            Err(e) => e.0,
            Ok(_) => panic!("expected an error"),
        }
    }

    /// Defaults apply, and the write address is required (the original never passed it).
    #[test]
    fn defaults_and_required_write_addr() {
        let c = config(&["--write-redis-addr", "master:6380"], &[]);
        assert_eq!(c.deadline, Duration::from_millis(400));
        assert_eq!(c.max_connections, 1024);
        assert_eq!((c.read.host.as_str(), c.read.port), ("127.0.0.1", 6379));
        assert_eq!((c.write.host.as_str(), c.write.port), ("master", 6380));
        assert_eq!(c.redis_wait, Duration::from_secs(300));
        assert_eq!(c.redis_hash, "currency");
        assert!(error(&[], &[]).contains("--write-redis-addr (REDIS_ADDR_WRITE) is required"));
    }

    /// A flag beats its env twin; the env twin beats the default.
    #[test]
    fn flag_beats_env_beats_default() {
        let c = config(
            &["--deadline-ms", "250"],
            &[("DEADLINE_MS", "300"), ("REDIS_ADDR_WRITE", "m:1"), ("MAX_CONNECTIONS", "7")],
        );
        assert_eq!(c.deadline, Duration::from_millis(250));
        assert_eq!(c.max_connections, 7);
    }

    /// Bad values name the flag and its env twin.
    #[test]
    fn bad_values_name_the_flag() {
        let env = [("REDIS_ADDR_WRITE", "m:1")];
        assert!(error(&["--deadline-ms", "abc"], &env).starts_with("--deadline-ms (DEADLINE_MS)"));
        assert!(error(&["--deadline-ms", "0"], &env).starts_with("--deadline-ms"));
        assert!(error(&["--read-redis-addr", "nohost"], &env).starts_with("--read-redis-addr"));
        assert!(error(&["--cors-origins", "example.com"], &env).starts_with("--cors-origins"));
        assert!(error(&["--redis-wait", "5 parsecs"], &env).starts_with("--redis-wait"));
        assert!(error(&["--log-format", "xml"], &env).starts_with("--log-format"));
        assert!(error(&["--bogus"], &env).contains("unknown argument"));
    }

    /// ACL users: `default` means none; a named user needs its password; bad names are refused.
    #[test]
    fn acl_users_need_their_passwords() {
        let c = config(&[], &[("REDIS_ADDR_WRITE", "m:1")]);
        assert_eq!((c.read.user.as_deref(), c.write.user.as_deref()), (None, None));
        let c = config(
            &["--redis-user-write", "writer"],
            &[
                ("REDIS_ADDR_WRITE", "m:1"),
                ("REDIS_USER_READ", "reader"),
                ("REDIS_PASS_READ", "r"),
                ("REDIS_PASS_WRITE", "w"),
            ],
        );
        assert_eq!((c.read.user.as_deref(), c.write.user.as_deref()), (Some("reader"), Some("writer")));
        assert!(!format!("{c:?}").contains("\"r\"") && format!("{:?}", c.write).contains("user: writer"));
        let e = error(&["--redis-user-write", "writer"], &[("REDIS_ADDR_WRITE", "m:1")]);
        assert!(e.contains("REDIS_USER_WRITE") && e.contains("REDIS_PASS_WRITE"), "{e}");
        assert!(error(&["--redis-user-read", "a b"], &[("REDIS_ADDR_WRITE", "m:1")]).contains("--redis-user-read"));
    }

    /// Passwords on argv are refused; they come from env or *_FILE, and never show in Debug.
    #[test]
    fn secrets_only_from_env_or_file() {
        assert!(error(&["--write-redis-pass", "hunter2"], &[]).contains("not accepted on the command line"));
        let dir = std::env::temp_dir().join(format!("redis-api-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pass");
        std::fs::write(&file, "s3cret-file\n").unwrap();
        let c = config(
            &[],
            &[
                ("REDIS_ADDR_WRITE", "m:1"),
                ("REDIS_PASS_READ", "s3cret-env"),
                ("REDIS_PASS_WRITE_FILE", file.to_str().unwrap()),
            ],
        );
        assert_eq!(c.read.password.as_deref(), Some("s3cret-env"));
        assert_eq!(c.write.password.as_deref(), Some("s3cret-file"));
        let shown = c.summary();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            error(&[], &[("REDIS_ADDR_WRITE", "m:1"), ("REDIS_PASS_READ", "a"), ("REDIS_PASS_READ_FILE", "/x")])
                .contains("not both")
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Both flag forms work; a missing value is named, and a following flag is not taken as it.
    #[test]
    fn flag_forms_and_missing_values() {
        let env = [("REDIS_ADDR_WRITE", "m:1")];
        let c = config(&["--deadline-ms=250", "--redis-field", "a=b"], &env);
        assert_eq!((c.deadline, c.redis_field.as_str()), (Duration::from_millis(250), "a=b"));
        assert_eq!(error(&["--listen", "--deadline-ms", "5"], &env), "--listen needs a value; see --help");
        assert_eq!(error(&["--deadline-ms"], &env), "--deadline-ms needs a value; see --help");
        assert_eq!(error(&["--redis-hash=a", "--redis-hash", "a"], &env), "--redis-hash given more than once");
        assert!(error(&["--help", "--write-redis-pass="], &env).contains("not accepted on the command line"));
    }

    /// Only flag-shaped text is echoed; password-named flags are recognised in any spelling.
    #[test]
    fn what_counts_as_a_flag_name() {
        for name in ["--bogus", "--read-redis-addr", "--x_y", "-p"] {
            assert!(looks_like_flag(name), "{name}");
        }
        for name in ["hunter2", "-phunter2", "---x", "--", "--a b", "--pass:w", "KEY"] {
            assert!(!looks_like_flag(name), "{name}");
        }
        for name in ["--read-redis-pass", "--write-redis-password", "--Redis-Passwd", "--pass"] {
            assert!(is_password_flag(name), "{name}");
        }
        assert!(!FLAGS.iter().any(|f| is_password_flag(f.name)), "a real flag would be refused as a password");
        assert_eq!(flag_name("--x=a=b"), "--x");
    }

    /// Credentials in an address or an origin are refused, and neither they nor a *_FILE path
    /// show in the error.
    #[test]
    fn credentials_never_shown() {
        let env = [("REDIS_ADDR_WRITE", "m:1")];
        let e = error(&["--read-redis-addr", "u:hunter2@h:1"], &env);
        assert!(e.contains("REDIS_PASS_READ_FILE") && !e.contains("hunter2"), "{e}");
        let e = error(&[], &[("REDIS_ADDR_WRITE", "redis://:hunter2@m:1")]);
        assert!(e.starts_with("--write-redis-addr (REDIS_ADDR_WRITE)") && e.contains("REDIS_PASS_WRITE"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        assert_eq!(cors("https://u:hunter2@a.example"), None);
        let e = error(&["--listen", "hunter2@0.0.0.0:1"], &env);
        assert!(e.starts_with("--listen") && !e.contains("hunter2"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hunter2");
        std::fs::write(&file, "\n").unwrap();
        let e = error(&[], &[("REDIS_ADDR_WRITE", "m:1"), ("REDIS_PASS_READ_FILE", file.to_str().unwrap())]);
        assert!(e.contains("REDIS_PASS_READ_FILE") && e.contains("empty") && !e.contains("hunter2"), "{e}");
    }

    /// Durations accept units; CORS lists parse.
    #[test]
    fn durations_and_cors() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("m"), None);
        let c = config(&["--cors-origins", "https://a.example, http://b.example:8080"], &[("REDIS_ADDR_WRITE", "m:1")]);
        assert_eq!(c.cors_origins, CorsOrigins::List(vec!["https://a.example".into(), "http://b.example:8080".into()]));
    }

    /// Every flag the validator reads is in FLAGS (a miss would panic at startup).
    #[test]
    fn validator_and_table_agree() {
        let c = config(&[], &[("REDIS_ADDR_WRITE", "m:1")]);
        assert_eq!(c.shutdown_delay, Duration::ZERO);
    }

    /// The Redis reply limit: 64 KiB by default, from 64 bytes to Redis's own 512 MiB.
    #[test]
    fn redis_max_reply() {
        let env = [("REDIS_ADDR_WRITE", "m:1")];
        assert_eq!(config(&[], &env).redis_max_reply, 65536);
        assert_eq!(config(&["--redis-max-reply", "1048576"], &env).redis_max_reply, 1 << 20);
        assert!(error(&["--redis-max-reply", "10"], &env).starts_with("--redis-max-reply (REDIS_MAX_REPLY)"));
    }

    /// The probe listener and the staleness limit: defaults, `off`, and bad values named.
    #[test]
    fn probe_listen_and_max_staleness() {
        let env = [("REDIS_ADDR_WRITE", "m:1")];
        let c = config(&[], &env);
        assert_eq!(c.probe_listen, Some("0.0.0.0:8081".parse().unwrap()));
        assert_eq!(c.max_staleness, None);
        let c = config(&["--probe-listen", "off", "--max-staleness", "5m"], &env);
        assert_eq!((c.probe_listen, c.max_staleness), (None, Some(Duration::from_secs(300))));
        let c = config(&[], &[("REDIS_ADDR_WRITE", "m:1"), ("PROBE_LISTEN", "127.0.0.1:0"), ("MAX_STALENESS", "off")]);
        assert_eq!(c.probe_listen, Some("127.0.0.1:0".parse().unwrap()));
        assert!(error(&["--probe-listen", "8081"], &env).starts_with("--probe-listen (PROBE_LISTEN)"));
        assert!(error(&["--max-staleness", "0s"], &env).starts_with("--max-staleness (MAX_STALENESS)"));
    }

    /// Addresses take `host:port`, `redis://` and `rediss://` (TLS, which needs the CA file and
    /// verifies the host, an IP address, or the override); TLS flags without a rediss address, a
    /// lone certificate or key, and a bad file are refused, naming flag and path, never the text.
    #[test]
    fn tls_settings() {
        let env = [("REDIS_ADDR_WRITE", "m:1")];
        let c = config(&["--read-redis-addr", "redis://r:7"], &env);
        assert_eq!((c.read.host.as_str(), c.read.port, c.read.tls.is_none()), ("r", 7, true));
        assert!(c.redis_tls.is_none() && c.write.tls.is_none());
        let e = error(&[], &[("REDIS_ADDR_WRITE", "rediss://m:1")]);
        assert!(e.starts_with("--redis-tls-ca-file (REDIS_TLS_CA_FILE) is required"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".to_owned()]).unwrap().self_signed(&key).unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.to_str().unwrap().to_owned()
        };
        let (ca, key_file) = (file("ca.pem", &cert.pem()), file("key.pem", &key.serialize_pem()));
        let bad_key = file(
            "bad.pem",
            "-----BEGIN PRIVATE KEY-----
hunter2hunter2
-----END PRIVATE KEY-----
",
        );
        let tls = |addr: &str, extra: &[&str]| {
            let mut args = vec!["--write-redis-addr", addr, "--redis-tls-ca-file", ca.as_str()];
            args.extend(extra);
            args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        };
        let run = |args: Vec<String>| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            parse(&args, &[])
        };
        let name = |n: &str| Some(ServerName::try_from(n.to_owned()).unwrap());
        let Ok(Command::Run(c)) = run(tls("rediss://master.example:6380", &[])) else { panic!("rediss parses") };
        assert_eq!(
            (c.write.host.as_str(), c.write.port, c.write.tls.clone()),
            ("master.example", 6380, name("master.example"))
        );
        assert!(c.read.tls.is_none() && c.redis_tls.is_some());
        let Ok(Command::Run(c)) = run(tls("rediss://10.0.0.7:6379", &[])) else { panic!("an IP parses") };
        assert_eq!(c.write.tls, name("10.0.0.7"));
        let over = [
            "--redis-tls-server-name",
            "redis.example",
            "--redis-tls-cert-file",
            &ca,
            "--redis-tls-key-file",
            &key_file,
        ];
        let Ok(Command::Run(c)) = run(tls("rediss://10.0.0.7:6379", &over)) else { panic!("the override parses") };
        assert_eq!(c.write.tls, name("redis.example"));
        let shown = c.summary();
        assert!(shown.contains("rediss://10.0.0.7:6379") && !shown.contains("PRIVATE"), "{shown}");
        let err = |args: Vec<String>| match run(args) {
            Err(e) => e.0,
            Ok(_) => panic!("expected an error"),
        };
        let e = error(&["--redis-tls-ca-file", &ca], &env);
        assert!(e.starts_with("--redis-tls-ca-file (REDIS_TLS_CA_FILE) is set but neither"), "{e}");
        let e = err(tls("rediss://m:1", &["--redis-tls-cert-file", &ca]));
        assert!(e.contains("set both or neither"), "{e}");
        let e = err(tls("rediss://m:1", &["--redis-tls-server-name", "not a name"]));
        assert!(e.starts_with("--redis-tls-server-name (REDIS_TLS_SERVER_NAME)"), "{e}");
        let e = error(&["--write-redis-addr", "rediss://m:1", "--redis-tls-ca-file", "/nonexistent/ca.pem"], &[]);
        assert!(e.starts_with("--redis-tls-ca-file (REDIS_TLS_CA_FILE): /nonexistent/ca.pem: cannot read it"), "{e}");
        let e = error(&["--write-redis-addr", "rediss://m:1", "--redis-tls-ca-file", &key_file], &[]);
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = err(tls("rediss://m:1", &["--redis-tls-cert-file", &ca, "--redis-tls-key-file", &bad_key]));
        assert!(e.starts_with(&format!("--redis-tls-key-file (REDIS_TLS_KEY_FILE): {bad_key}: ")), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    /// Every flag appears in --help with its env twin.
    #[test]
    fn help_lists_every_flag() {
        let help = help_text();
        for f in FLAGS {
            assert!(help.contains(f.name) && help.contains(f.env), "{}", f.name);
        }
    }
}
