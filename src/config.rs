//! Configuration: argv and environment → a validated [`Config`]. The only module that reads
//! either. Two phases: every flag is first collected as raw text (flag, else env twin, else
//! default), then each is validated into a typed field with an error that names the flag.
//! The flags are declared with the workspace's `cli` convention (durations with units, old
//! spellings kept as deprecated aliases).
//! Secrets (Redis passwords) come only from the environment or from files, never from flags.

use crate::store::{Tls, TlsError, TlsFile};
use cli::{Args, Flag, Parsed, looks_like_flag};
use rustls::pki_types::ServerName;
use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// Every flag the server takes, in help order.
pub const LISTEN: Flag = Flag::new("--listen", "ADDR", "address:port the HTTP server listens on")
    .env("LISTEN_ADDR")
    .default("0.0.0.0:8080")
    .parsed::<SocketAddr>("an address:port such as 0.0.0.0:8080");
pub const READ_REDIS_ADDR: Flag = Flag::new(
    "--read-redis-addr",
    "ADDR",
    "host:port of the local Redis read replica (GET); redis://host:port too, rediss://host:port for TLS",
)
.env("REDIS_ADDR_READ")
.default("127.0.0.1:6379")
.parsed::<RedisAddr>(REDIS_ADDR_EXPECTED);
pub const WRITE_REDIS_ADDR: Flag = Flag::new(
    "--write-redis-addr",
    "ADDR",
    "host:port of the Redis master (POST); required; redis://host:port too, rediss://host:port for TLS",
)
.env("REDIS_ADDR_WRITE")
.required()
.parsed::<RedisAddr>(REDIS_ADDR_EXPECTED);
pub const REDIS_TLS_CA_FILE: Flag = Flag::new(
    "--redis-tls-ca-file",
    "FILE",
    "PEM bundle of the CA certificates a rediss:// server's certificate must chain to; required with rediss://",
)
.env("REDIS_TLS_CA_FILE")
.default("");
pub const REDIS_TLS_CERT_FILE: Flag = Flag::new(
    "--redis-tls-cert-file",
    "FILE",
    "PEM client certificate (chain) for servers that ask for one (tls-auth-clients); with --redis-tls-key-file",
)
.env("REDIS_TLS_CERT_FILE")
.default("");
pub const REDIS_TLS_KEY_FILE: Flag =
    Flag::new("--redis-tls-key-file", "FILE", "PEM private key of --redis-tls-cert-file")
        .env("REDIS_TLS_KEY_FILE")
        .default("");
pub const REDIS_TLS_SERVER_NAME: Flag = Flag::new("--redis-tls-server-name", "NAME", "name a rediss:// server's certificate must be valid for, instead of the address's host (e.g. when addressing by IP)")
    .env("REDIS_TLS_SERVER_NAME")
    .default("");
pub const REDIS_USER_READ: Flag = Flag::new(
    "--redis-user-read",
    "USER",
    "ACL user the API reads the replica as (GET, health checks); `default`: Redis's default user (plain AUTH password)",
)
.env("REDIS_USER_READ")
.default("default")
.accepts(ACL_USER_EXPECTED, is_acl_user);
pub const REDIS_USER_WRITE: Flag = Flag::new(
    "--redis-user-write",
    "USER",
    "ACL user the API writes the master as (POST, its health check); `default`: Redis's default user",
)
.env("REDIS_USER_WRITE")
.default("default")
.accepts(ACL_USER_EXPECTED, is_acl_user);
pub const READ_POOL_SIZE: Flag = Flag::new(
    "--read-pool-size",
    "N",
    "connections to the replica (GETs share one read in flight, so one is used at a time; the other is a warm spare)",
)
.env("READ_POOL_SIZE")
.default("2")
.number_in(1, 1024);
pub const WRITE_POOL_SIZE: Flag = Flag::new(
    "--write-pool-size",
    "N",
    "connections to the master: POSTs in flight at once (each pod opens this many)",
)
.env("WRITE_POOL_SIZE")
.default("16")
.number_in(1, 1024);
pub const MAX_CONNECTIONS: Flag = Flag::new("--max-connections", "N", "max client connections on workers (= worker threads); at the cap a new connection displaces one doing nothing (see Connections)")
    .env("MAX_CONNECTIONS")
    .default("1024")
    .number_in(1, 100_000);
pub const DEADLINE: Flag =
    Flag::new("--deadline", "DURATION", "per-request budget from its first byte; past it the answer is 504")
        .env("DEADLINE")
        .default("400ms")
        .old("--deadline-ms", Some("DEADLINE_MS"), "ms")
        .duration_in(ms(1), ms(60_000));
pub const REDIS_CONNECT_TIMEOUT: Flag =
    Flag::new("--redis-connect-timeout", "DURATION", "TCP connect + handshake timeout for a new Redis connection")
        .env("REDIS_CONNECT_TIMEOUT")
        .default("1s")
        .old("--redis-connect-timeout-ms", Some("REDIS_CONNECT_TIMEOUT_MS"), "ms")
        .duration_in(ms(1), ms(60_000));
pub const REDIS_MAX_REPLY: Flag = Flag::new(
    "--redis-max-reply",
    "BYTES",
    "largest Redis reply a request reads, in bytes; a larger stored value is refused (500) unread",
)
.env("REDIS_MAX_REPLY")
.default("65536")
.number_in(64, 512 << 20);
pub const MAX_BODY_BYTES: Flag = Flag::new("--max-body-bytes", "BYTES", "largest request body accepted (413 beyond)")
    .env("MAX_BODY_BYTES")
    .default("65536")
    .number_in(1, 64 << 20);
pub const MAX_HEADER_BYTES: Flag =
    Flag::new("--max-header-bytes", "BYTES", "largest request head (request line + headers) accepted (431 beyond)")
        .env("MAX_HEADER_BYTES")
        .default("16384")
        .number_in(1024, 1 << 20);
pub const HEADER_TIMEOUT: Flag =
    Flag::new("--header-timeout", "DURATION", "time for a whole request head to arrive after its first byte")
        .env("HEADER_TIMEOUT")
        .default("5s")
        .old("--header-timeout-ms", Some("HEADER_TIMEOUT_MS"), "ms")
        .duration_in(ms(1), ms(600_000));
pub const BODY_TIMEOUT: Flag = Flag::new("--body-timeout", "DURATION", "time for a whole request body to arrive")
    .env("BODY_TIMEOUT")
    .default("5s")
    .old("--body-timeout-ms", Some("BODY_TIMEOUT_MS"), "ms")
    .duration_in(ms(1), ms(600_000));
pub const IDLE_TIMEOUT: Flag =
    Flag::new("--idle-timeout", "DURATION", "an idle keep-alive connection is closed after this")
        .env("IDLE_TIMEOUT")
        .default("30s")
        .old("--idle-timeout-ms", Some("IDLE_TIMEOUT_MS"), "ms")
        .duration_in(ms(1), ms(3_600_000));
pub const WRITE_TIMEOUT: Flag = Flag::new(
    "--write-timeout",
    "DURATION",
    "a response write that makes no progress for this long closes the connection",
)
.env("WRITE_TIMEOUT")
.default("5s")
.old("--write-timeout-ms", Some("WRITE_TIMEOUT_MS"), "ms")
.duration_in(ms(1), ms(600_000));
pub const CORS_ORIGINS: Flag =
    Flag::new("--cors-origins", "ORIGINS", "allowed CORS origins: * or a comma-separated list of scheme://host[:port]")
        .env("CORS_ORIGINS")
        .default("*")
        .parsed::<CorsOrigins>("* or a comma-separated list of scheme://host[:port]");
pub const REDIS_HASH: Flag = Flag::new("--redis-hash", "KEY", "Redis hash holding the value")
    .env("REDIS_HASH")
    .default("currency")
    .accepts("a non-empty name", is_name);
pub const REDIS_FIELD: Flag = Flag::new("--redis-field", "FIELD", "field of that hash holding the value")
    .env("REDIS_FIELD")
    .default("current-value")
    .accepts("a non-empty name", is_name);
pub const REPLICA_LINK_GRACE: Flag =
    Flag::new("--replica-link-grace", "DURATION", "how long the replica may be cut from its master and still be ready")
        .env("REPLICA_LINK_GRACE")
        .default("30s")
        .bare("s")
        .duration_in(Duration::ZERO, YEAR);
pub const HEALTH_INTERVAL: Flag =
    Flag::new("--health-interval", "DURATION", "how often the replica and master are checked for /readyz")
        .env("HEALTH_INTERVAL")
        .default("1s")
        .old("--health-interval-ms", Some("HEALTH_INTERVAL_MS"), "ms")
        .duration_in(ms(10), ms(60_000));
pub const REDIS_WAIT: Flag =
    Flag::new("--redis-wait", "DURATION", "give up (exit 1) if the replica has not answered once within this")
        .env("REDIS_WAIT")
        .default("5m")
        .bare("s")
        .duration_in(Duration::ZERO, YEAR);
pub const SHUTDOWN_DELAY: Flag = Flag::new(
    "--shutdown-delay",
    "DURATION",
    "on SIGTERM, keep serving (with /readyz 503) this long before closing the listener",
)
.env("SHUTDOWN_DELAY")
.default("0s")
.bare("s")
.duration_in(Duration::ZERO, YEAR);
pub const SHUTDOWN_GRACE: Flag =
    Flag::new("--shutdown-grace", "DURATION", "on SIGTERM, time allowed for in-flight requests before exit")
        .env("SHUTDOWN_GRACE")
        .default("10s")
        .bare("s")
        .duration_in(Duration::ZERO, YEAR);
pub const BREAKER_FAILURES: Flag = Flag::new(
    "--breaker-failures",
    "N",
    "failed writes in a row after which the master is refused at once (503) for the cooldown",
)
.env("BREAKER_FAILURES")
.default("3")
.number_in(1, 1000);
pub const BREAKER_COOLDOWN: Flag =
    Flag::new("--breaker-cooldown", "DURATION", "how long writes are refused before one probe write is let through")
        .env("BREAKER_COOLDOWN")
        .default("1s")
        .old("--breaker-cooldown-ms", Some("BREAKER_COOLDOWN_MS"), "ms")
        .duration_in(ms(1), ms(600_000));
pub const READ_MODE: Flag = Flag::new(
    "--read-mode",
    "MODE",
    "replica: every GET reads the local replica; memory: GET serves a copy kept fresh by notices from the replica",
)
.env("READ_MODE")
.default("replica")
.parsed::<ReadMode>("replica or memory");
pub const MEMORY_REFRESH: Flag = Flag::new(
    "--memory-refresh",
    "DURATION",
    "memory mode: re-read the value at least this often (the safety net for missed notices)",
)
.env("MEMORY_REFRESH")
.default("1s")
.old("--memory-refresh-ms", Some("MEMORY_REFRESH_MS"), "ms")
.duration_in(ms(10), ms(600_000));
pub const PROBE_LISTEN: Flag = Flag::new(
    "--probe-listen",
    "ADDR",
    "address:port of the probe listener (/healthz, /readyz, /metrics only, its own small connection cap); off: none",
)
.env("PROBE_LISTEN")
.default("0.0.0.0:8081")
.parsed::<OrOff<SocketAddr>>("an address:port such as 0.0.0.0:8081, or off");
pub const MAX_STALENESS: Flag = Flag::new("--max-staleness", "DURATION", "GET answers 503 once the replica has not heard from its master for longer than this (e.g. 5m); off: serve the last synced value however old")
    .env("MAX_STALENESS")
    .default("off")
    .bare("s")
    .duration_in(ms(1), YEAR)
    .or_off();
pub const LOG_FORMAT: Flag = Flag::new("--log-format", "FORMAT", "text or json (level filter: RUST_LOG, default info)")
    .env("LOG_FORMAT")
    .default("text")
    .parsed::<LogFormat>("text or json");

/// Every flag the server takes: parsing, `--help` and the README's table come from it.
pub const FLAGS: &[Flag] = &[
    LISTEN,
    READ_REDIS_ADDR,
    WRITE_REDIS_ADDR,
    REDIS_TLS_CA_FILE,
    REDIS_TLS_CERT_FILE,
    REDIS_TLS_KEY_FILE,
    REDIS_TLS_SERVER_NAME,
    REDIS_USER_READ,
    REDIS_USER_WRITE,
    READ_POOL_SIZE,
    WRITE_POOL_SIZE,
    MAX_CONNECTIONS,
    DEADLINE,
    REDIS_CONNECT_TIMEOUT,
    REDIS_MAX_REPLY,
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    HEADER_TIMEOUT,
    BODY_TIMEOUT,
    IDLE_TIMEOUT,
    WRITE_TIMEOUT,
    CORS_ORIGINS,
    REDIS_HASH,
    REDIS_FIELD,
    REPLICA_LINK_GRACE,
    HEALTH_INTERVAL,
    REDIS_WAIT,
    SHUTDOWN_DELAY,
    SHUTDOWN_GRACE,
    BREAKER_FAILURES,
    BREAKER_COOLDOWN,
    READ_MODE,
    MEMORY_REFRESH,
    PROBE_LISTEN,
    MAX_STALENESS,
    LOG_FORMAT,
];

/// Environment-only secrets: `NAME` holds the value, `NAME_FILE` a path to a file holding it.
pub const SECRET_ENVS: &[&str] = &["REDIS_PASS_READ", "REDIS_PASS_WRITE"];

/// A configuration error: one line naming the flag or variable at fault.
pub use cli::UsageError as ConfigError;

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
    /// Settings given on argv or in the environment that differ from their default, as
    /// `--flag value` (addresses aside: the summary shows them); no secret is a flag.
    pub changed: Vec<String>,
    /// Deprecated spellings met while parsing, each naming the new one, logged at start.
    pub warnings: Vec<String>,
}

/// Where GET takes the value from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// One HGET on the local replica per request.
    Replica,
    /// A copy in memory, refreshed on change notices and periodically.
    Memory,
}

/// The longest duration any setting takes: a year, which `cli::parse_duration` also caps.
const YEAR: Duration = Duration::from_secs(365 * 86_400);

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
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
        match Args::parse(FLAGS, args, &env, 0)? {
            Parsed::Help => Ok(Command::Help),
            Parsed::Version => Ok(Command::Version),
            Parsed::Run(args) => Ok(Command::Run(Box::new(Self::validate(&args, &env)?))),
        }
    }

    fn validate(a: &Args, env: &impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let read_password = secret("REDIS_PASS_READ", env)?;
        let write_password = secret("REDIS_PASS_WRITE", env)?;
        let (read, read_tls) = endpoint(a, [&READ_REDIS_ADDR, &REDIS_USER_READ], "REDIS_PASS_READ", read_password)?;
        let (write, write_tls) =
            endpoint(a, [&WRITE_REDIS_ADDR, &REDIS_USER_WRITE], "REDIS_PASS_WRITE", write_password)?;
        let redis_tls = tls(a, read_tls || write_tls)?;
        let with_name = |mut e: RedisEndpoint, on: bool, flag: &Flag| -> Result<RedisEndpoint, ConfigError> {
            if let (true, Some(t)) = (on, &redis_tls) {
                e.tls = Some(t.server_name(&e.host).map_err(|why| {
                    ConfigError(format!(
                        "{}: the host {:?} cannot be checked against a certificate ({why}); \
                         set {} to the name the certificate is for",
                        flag.label(),
                        e.host,
                        REDIS_TLS_SERVER_NAME.label()
                    ))
                })?);
            }
            Ok(e)
        };
        let read = with_name(read, read_tls, &READ_REDIS_ADDR)?;
        let write = with_name(write, write_tls, &WRITE_REDIS_ADDR)?;
        Ok(Config {
            listen: a.value(&LISTEN)?,
            read,
            write,
            redis_tls,
            read_pool_size: a.number(&READ_POOL_SIZE)?,
            write_pool_size: a.number(&WRITE_POOL_SIZE)?,
            max_connections: a.number(&MAX_CONNECTIONS)?,
            deadline: a.duration(&DEADLINE)?,
            redis_connect_timeout: a.duration(&REDIS_CONNECT_TIMEOUT)?,
            redis_max_reply: a.number(&REDIS_MAX_REPLY)?,
            max_body_bytes: a.number(&MAX_BODY_BYTES)?,
            max_header_bytes: a.number(&MAX_HEADER_BYTES)?,
            header_timeout: a.duration(&HEADER_TIMEOUT)?,
            body_timeout: a.duration(&BODY_TIMEOUT)?,
            idle_timeout: a.duration(&IDLE_TIMEOUT)?,
            write_timeout: a.duration(&WRITE_TIMEOUT)?,
            cors_origins: a.value(&CORS_ORIGINS)?,
            redis_hash: a.value(&REDIS_HASH)?,
            redis_field: a.value(&REDIS_FIELD)?,
            replica_link_grace: a.duration(&REPLICA_LINK_GRACE)?,
            health_interval: a.duration(&HEALTH_INTERVAL)?,
            redis_wait: a.duration(&REDIS_WAIT)?,
            shutdown_delay: a.duration(&SHUTDOWN_DELAY)?,
            shutdown_grace: a.duration(&SHUTDOWN_GRACE)?,
            read_mode: a.value(&READ_MODE)?,
            memory_refresh: a.duration(&MEMORY_REFRESH)?,
            breaker_failures: a.number(&BREAKER_FAILURES)?,
            breaker_cooldown: a.duration(&BREAKER_COOLDOWN)?,
            probe_listen: a.value::<OrOff<SocketAddr>>(&PROBE_LISTEN)?.0,
            max_staleness: a.opt_duration(&MAX_STALENESS)?,
            log_format: a.value(&LOG_FORMAT)?,
            changed: changed(a),
            warnings: a.warnings(),
        })
    }

    /// One line for the startup log: where it listens and reads and writes, then the settings
    /// that differ from their defaults. No secret.
    pub fn summary(&self) -> String {
        let probes = self.probe_listen.map_or("off".to_owned(), |p| p.to_string());
        let mode = match self.read_mode {
            ReadMode::Replica => "replica",
            ReadMode::Memory => "memory",
        };
        let changed = if self.changed.is_empty() { "none".to_owned() } else { self.changed.join(" ") };
        format!(
            "listen {} (probes {probes}), replica {:?}, master {:?}, read mode {mode}; other settings changed: {changed}",
            self.listen, self.read, self.write
        )
    }
}

/// The flags set to something other than their default, addresses aside.
fn changed(a: &Args) -> Vec<String> {
    let shown = [LISTEN.name, PROBE_LISTEN.name, READ_REDIS_ADDR.name, WRITE_REDIS_ADDR.name, READ_MODE.name];
    FLAGS
        .iter()
        .filter(|f| !shown.contains(&f.name))
        .filter_map(|f| {
            let text = a.text(f)?;
            let default = match f.default {
                cli::Default::To(d) => Some(d),
                _ => None,
            };
            (Some(text) != default).then(|| format!("{} {text}", f.name))
        })
        .collect()
}

/// `--help` text, generated from [`FLAGS`].
pub fn help_text() -> String {
    cli::help(
        "redis-api: serves GET / from the local Redis replica and POST / to the Redis master.\n\n\
         Usage: redis-api [FLAGS]",
        FLAGS,
        "Secrets (environment only, never flags):\n  \
         REDIS_PASS_READ / REDIS_PASS_READ_FILE     password of the replica\n  \
         REDIS_PASS_WRITE / REDIS_PASS_WRITE_FILE   password of the master\n\n\
         Durations take a unit: 400ms, 30s, 5m, 1h.\n\
         Exit status: 0 stopped cleanly, 1 the run failed, 2 bad settings.",
    )
}

/// The name part of an argument: before the first `=`, if any.
fn flag_name(arg: &str) -> &str {
    arg.split_once('=').map_or(arg, |(name, _)| name)
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

/// `[address flag, user flag]`; `pass_var`: where this endpoint's password goes instead of the
/// address. An address with userinfo (`redis://:pw@host:port`, `user:pw@host:port`) is refused
/// without being shown. A named ACL user needs a password: without `AUTH` a connection is
/// Redis's default user, whatever the user flag says. The address is `host:port`,
/// `redis://host:port` or `rediss://host:port` (TLS: the `bool`; the name to verify is filled
/// in once the TLS settings are known).
fn endpoint(
    a: &Args,
    [addr_flag, user_flag]: [&Flag; 2],
    pass_var: &str,
    password: Option<String>,
) -> Result<(RedisEndpoint, bool), ConfigError> {
    let user: String = a.value(user_flag)?;
    let user = (user != "default").then_some(user);
    if let (Some(user), None) = (&user, &password) {
        return Err(ConfigError(format!(
            "{} names the ACL user {user:?} but {pass_var} / {pass_var}_FILE is not set: \
             without a password the connection would be Redis's default user",
            user_flag.label()
        )));
    }
    if a.text(addr_flag).is_some_and(|v| v.contains('@')) {
        return Err(ConfigError(format!(
            "{}: the address holds credentials (the part before '@'; the value is not shown); \
             give host:port only and put the password in {pass_var} or {pass_var}_FILE",
            addr_flag.label()
        )));
    }
    let RedisAddr { tls, host, port } = a.value(addr_flag)?;
    Ok((RedisEndpoint { host, port, user, password, tls: None }, tls))
}

/// The TLS settings: loaded when an address is `rediss://` (`wanted`), which needs
/// `--redis-tls-ca-file`; set without any `rediss://` address they are refused, so a
/// plaintext connection is never taken for an encrypted one. A bad file is named with its flag
/// and path, never with what it holds.
fn tls(a: &Args, wanted: bool) -> Result<Option<Tls>, ConfigError> {
    let value = |flag: &Flag| a.text(flag).map(str::trim).filter(|v| !v.is_empty());
    let (ca, cert, key, name) = (
        value(&REDIS_TLS_CA_FILE),
        value(&REDIS_TLS_CERT_FILE),
        value(&REDIS_TLS_KEY_FILE),
        value(&REDIS_TLS_SERVER_NAME),
    );
    if !wanted {
        return match [(&REDIS_TLS_CA_FILE, ca), (&REDIS_TLS_CERT_FILE, cert), (&REDIS_TLS_KEY_FILE, key)]
            .into_iter()
            .chain([(&REDIS_TLS_SERVER_NAME, name)])
            .find(|(_, v)| v.is_some())
        {
            Some((flag, _)) => Err(ConfigError(format!(
                "{} is set but neither --read-redis-addr nor --write-redis-addr is rediss://host:port: \
                 nothing would use TLS",
                flag.label()
            ))),
            None => Ok(None),
        };
    }
    let ca = ca.ok_or_else(|| {
        ConfigError(format!(
            "{} is required with a rediss:// address: the CA bundle the server's certificate is checked against",
            REDIS_TLS_CA_FILE.label()
        ))
    })?;
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((Path::new(cert), Path::new(key))),
        (None, None) => None,
        _ => {
            return Err(ConfigError(format!(
                "{} and {} go together: set both or neither",
                REDIS_TLS_CERT_FILE.label(),
                REDIS_TLS_KEY_FILE.label()
            )));
        }
    };
    let server_name = match name {
        None => None,
        Some(n) => Some(
            ServerName::try_from(n.to_owned())
                .map_err(|_| a.bad(&REDIS_TLS_SERVER_NAME, "a DNS name or an IP address"))?,
        ),
    };
    Tls::load(Path::new(ca), client, server_name).map(Some).map_err(|TlsError { file, reason }| {
        let (flag, path) = match file {
            TlsFile::Ca => (&REDIS_TLS_CA_FILE, ca),
            TlsFile::Cert => (&REDIS_TLS_CERT_FILE, cert.unwrap_or_default()),
            TlsFile::Key => (&REDIS_TLS_KEY_FILE, key.unwrap_or_default()),
        };
        ConfigError(format!("{}: {path}: {reason}", flag.label()))
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

impl FromStr for CorsOrigins {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if s == "*" {
            return Ok(CorsOrigins::Any);
        }
        let list: Vec<String> = s.split(',').map(|o| o.trim().trim_end_matches('/').to_owned()).collect();
        let valid = |o: &String| {
            let rest = o.strip_prefix("http://").or_else(|| o.strip_prefix("https://"));
            // No userinfo: an Origin header never carries one, so such an entry could never match.
            rest.is_some_and(|r| !r.is_empty() && !r.contains(['/', '@']) && !r.contains(char::is_whitespace))
        };
        if !list.is_empty() && list.iter().all(valid) { Ok(CorsOrigins::List(list)) } else { Err(()) }
    }
}

impl FromStr for ReadMode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "replica" => Ok(ReadMode::Replica),
            "memory" => Ok(ReadMode::Memory),
            _ => Err(()),
        }
    }
}

impl FromStr for LogFormat {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(()),
        }
    }
}

/// `off`, or a `T`.
struct OrOff<T>(Option<T>);

impl<T: FromStr> FromStr for OrOff<T> {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if s == "off" { Ok(OrOff(None)) } else { s.parse().map(|t| OrOff(Some(t))).map_err(|_| ()) }
    }
}

const REDIS_ADDR_EXPECTED: &str = "host:port such as 127.0.0.1:6379, redis://host:port, or rediss://host:port (TLS)";

/// A Redis address as a flag gives it: `host:port`, `redis://host:port` or `rediss://host:port`.
struct RedisAddr {
    tls: bool,
    host: String,
    port: u16,
}

impl FromStr for RedisAddr {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (tls, rest) = match s.strip_prefix("rediss://") {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix("redis://").unwrap_or(s)),
        };
        let (host, port) = parse_host_port(rest).ok_or(())?;
        Ok(RedisAddr { tls, host, port })
    }
}

const ACL_USER_EXPECTED: &str = "an ACL user name (no spaces or control characters)";

fn is_acl_user(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic())
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
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
            &["--deadline", "250ms"],
            &[("DEADLINE", "300ms"), ("REDIS_ADDR_WRITE", "m:1"), ("MAX_CONNECTIONS", "7")],
        );
        assert_eq!(c.deadline, Duration::from_millis(250));
        assert_eq!(c.max_connections, 7);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    /// Bad values name the flag and its env twin.
    #[test]
    fn bad_values_name_the_flag() {
        let env = [("REDIS_ADDR_WRITE", "m:1")];
        assert!(error(&["--deadline", "abc"], &env).starts_with("--deadline (DEADLINE)"));
        assert!(error(&["--deadline", "0"], &env).starts_with("--deadline (DEADLINE)"));
        let e = error(&["--deadline", "400"], &env);
        assert!(e.contains("got \"400\"") && e.contains("needs its unit"), "{e}");
        assert!(error(&["--read-redis-addr", "nohost"], &env).starts_with("--read-redis-addr"));
        assert!(error(&["--cors-origins", "example.com"], &env).starts_with("--cors-origins"));
        assert!(error(&["--redis-wait", "5 parsecs"], &env).starts_with("--redis-wait"));
        assert!(error(&["--log-format", "xml"], &env).starts_with("--log-format"));
        assert_eq!(error(&["--bogus"], &env), "unknown flag --bogus; see --help");
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
        let c = config(&["--deadline=250ms", "--redis-field", "a=b"], &env);
        assert_eq!((c.deadline, c.redis_field.as_str()), (Duration::from_millis(250), "a=b"));
        assert_eq!(error(&["--listen", "--deadline", "5s"], &env), "--listen needs a value; see --help");
        assert_eq!(error(&["--deadline"], &env), "--deadline needs a value; see --help");
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
        assert!("https://u:hunter2@a.example".parse::<CorsOrigins>().is_err());
        let e = error(&["--listen", "hunter2@0.0.0.0:1"], &env);
        assert!(e.starts_with("--listen") && !e.contains("hunter2"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hunter2");
        std::fs::write(&file, "\n").unwrap();
        let e = error(&[], &[("REDIS_ADDR_WRITE", "m:1"), ("REDIS_PASS_READ_FILE", file.to_str().unwrap())]);
        assert!(e.contains("REDIS_PASS_READ_FILE") && e.contains("empty") && !e.contains("hunter2"), "{e}");
    }

    /// Durations take units; the old `-ms` spellings and bare seconds still work, with a
    /// warning naming the new spelling; CORS lists parse.
    #[test]
    fn durations_old_spellings_and_cors() {
        let env = [("REDIS_ADDR_WRITE", "m:1")];
        let c = config(&["--idle-timeout", "1.5s", "--redis-wait", "2m", "--health-interval", "250ms"], &env);
        assert_eq!(
            (c.idle_timeout, c.redis_wait, c.health_interval),
            (Duration::from_millis(1500), Duration::from_secs(120), Duration::from_millis(250))
        );
        let c = config(&["--deadline-ms", "250"], &[("REDIS_ADDR_WRITE", "m:1"), ("IDLE_TIMEOUT_MS", "9000")]);
        assert_eq!((c.deadline, c.idle_timeout), (Duration::from_millis(250), Duration::from_secs(9)));
        assert_eq!(
            c.warnings,
            [
                "--deadline-ms is deprecated; use --deadline 250ms",
                "IDLE_TIMEOUT_MS is deprecated; use IDLE_TIMEOUT=9000ms"
            ]
        );
        let c = config(&["--shutdown-grace", "20"], &env);
        assert_eq!(c.shutdown_grace, Duration::from_secs(20));
        assert_eq!(c.warnings, ["--shutdown-grace (SHUTDOWN_GRACE): a bare number is deprecated; write \"20s\""]);
        assert!(error(&["--deadline", "1s", "--deadline-ms", "5"], &env).contains("both given"));
        let c = config(&["--cors-origins", "https://a.example, http://b.example:8080"], &[("REDIS_ADDR_WRITE", "m:1")]);
        assert_eq!(c.cors_origins, CorsOrigins::List(vec!["https://a.example".into(), "http://b.example:8080".into()]));
    }

    /// Every flag the validator reads is in FLAGS (a miss would panic at startup), and the
    /// startup summary names only what differs from the defaults.
    #[test]
    fn validator_and_table_agree() {
        let c = config(&[], &[("REDIS_ADDR_WRITE", "m:1")]);
        assert_eq!(c.shutdown_delay, Duration::ZERO);
        assert!(c.changed.is_empty(), "{:?}", c.changed);
        assert!(c.summary().ends_with("other settings changed: none"), "{}", c.summary());
        let c = config(&["--deadline", "300ms"], &[("REDIS_ADDR_WRITE", "m:1"), ("MAX_CONNECTIONS", "1024")]);
        assert_eq!(c.changed, ["--deadline 300ms"]);
        assert!(c.summary().len() < 300, "{}", c.summary());
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
            assert!(help.contains(f.name) && f.env.is_some_and(|e| help.contains(e)), "{}", f.name);
        }
    }
}
