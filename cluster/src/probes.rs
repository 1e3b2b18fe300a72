//! A container's probes as `k8s/` defines them (startup, liveness, readiness), with
//! Kubernetes' defaults for every field left out, ports resolved by name through the
//! container's `ports`: what the emulated kubelet ([`crate::kubelet`]) runs.

use anyhow::{Context, Result, anyhow, bail};
use std::time::Duration;
use yaml_rust2::Yaml;

/// `periodSeconds` when absent (Kubernetes' default).
pub const DEFAULT_PERIOD_S: u64 = 10;
/// `timeoutSeconds` when absent.
pub const DEFAULT_TIMEOUT_S: u64 = 1;
/// `failureThreshold` when absent.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// `successThreshold` when absent (and the only value liveness and startup probes accept).
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;
/// The pod's `terminationGracePeriodSeconds` when absent.
pub const DEFAULT_GRACE_S: u64 = 30;

/// Which of a container's probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Startup => "startup",
            Kind::Liveness => "liveness",
            Kind::Readiness => "readiness",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Kind::Startup => "startupProbe",
            Kind::Liveness => "livenessProbe",
            Kind::Readiness => "readinessProbe",
        }
    }
}

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `httpGet`: a GET of `path` on the pod's IP at `port`; 200-399 is a success.
    Http { path: String, port: u16 },
    /// `exec`: the command, run in the container (its namespace and environment); exit 0 is a
    /// success.
    Exec { command: Vec<String> },
    /// `tcpSocket`: a TCP connect to the pod's IP at `port`.
    Tcp { port: u16 },
}

/// As a manifest reader says it: `httpGet :8081/healthz`, `exec redis-cli ping`, `tcpSocket :6379`.
impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Http { path, port } => write!(f, "httpGet :{port}{path}"),
            Action::Exec { command } => write!(f, "exec {}", command.join(" ")),
            Action::Tcp { port } => write!(f, "tcpSocket :{port}"),
        }
    }
}

/// One probe, every field filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub kind: Kind,
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// The probe's own `terminationGracePeriodSeconds` (liveness and startup), else `None`: the
    /// pod's applies.
    pub termination_grace: Option<Duration>,
}

/// The probes of one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probes {
    pub startup: Option<Probe>,
    pub liveness: Option<Probe>,
    pub readiness: Option<Probe>,
}

impl Probes {
    pub fn all(&self) -> impl Iterator<Item = &Probe> {
        [&self.startup, &self.liveness, &self.readiness].into_iter().flatten()
    }
}

/// The probes of `container` (a container's YAML from a pod spec).
pub fn of_container(container: &Yaml) -> Result<Probes> {
    let name = container["name"].as_str().unwrap_or("?");
    let one = |kind: Kind| -> Result<Option<Probe>> {
        let y = &container[kind.key()];
        if y.is_badvalue() || y.is_null() {
            return Ok(None);
        }
        parse(kind, y, container).map(Some).map_err(|e| anyhow!("container {name}: {}: {e:#}", kind.key()))
    };
    Ok(Probes { startup: one(Kind::Startup)?, liveness: one(Kind::Liveness)?, readiness: one(Kind::Readiness)? })
}

/// The pod spec's `terminationGracePeriodSeconds` (default 30 s).
pub fn pod_grace(pod_spec: &Yaml) -> Duration {
    Duration::from_secs(
        pod_spec["terminationGracePeriodSeconds"]
            .as_i64()
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(DEFAULT_GRACE_S),
    )
}

/// The container's `lifecycle.preStop.sleep.seconds`, if any (an `exec` preStop is not run).
pub fn pre_stop_sleep(container: &Yaml) -> Option<Duration> {
    let s = container["lifecycle"]["preStop"]["sleep"]["seconds"].as_i64()?;
    u64::try_from(s).ok().map(Duration::from_secs)
}

fn parse(kind: Kind, y: &Yaml, container: &Yaml) -> Result<Probe> {
    let handlers = ["httpGet", "exec", "tcpSocket", "grpc"].iter().filter(|k| !y[**k].is_badvalue()).count();
    if handlers != 1 {
        bail!("{handlers} handlers (exactly one of httpGet, exec, tcpSocket)");
    }
    let action = if !y["httpGet"].is_badvalue() {
        let h = &y["httpGet"];
        if h["host"].as_str().is_some() {
            bail!("httpGet.host is not emulated (the pod's IP is probed)");
        }
        if h["scheme"].as_str().is_some_and(|s| s != "HTTP") {
            bail!("httpGet.scheme: only HTTP");
        }
        let path = h["path"].as_str().unwrap_or("/").to_owned();
        Action::Http { path, port: port(&h["port"], container)? }
    } else if !y["exec"].is_badvalue() {
        let command: Vec<String> =
            y["exec"]["command"].as_vec().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_owned)).collect();
        if command.is_empty() {
            bail!("exec.command is empty");
        }
        Action::Exec { command }
    } else if !y["tcpSocket"].is_badvalue() {
        Action::Tcp { port: port(&y["tcpSocket"]["port"], container)? }
    } else {
        bail!("grpc probes are not emulated");
    };
    let secs = |key: &str, default: u64, min: u64| -> Result<u64> {
        match &y[key] {
            Yaml::BadValue | Yaml::Null => Ok(default),
            Yaml::Integer(n) => {
                u64::try_from(*n).ok().filter(|n| *n >= min).with_context(|| format!("{key} {n}: below {min}"))
            }
            other => Err(anyhow!("{key}: not an integer: {other:?}")),
        }
    };
    let success_threshold = secs("successThreshold", u64::from(DEFAULT_SUCCESS_THRESHOLD), 1)? as u32;
    if kind != Kind::Readiness && success_threshold != 1 {
        bail!("successThreshold {success_threshold}: must be 1 for {} probes", kind.as_str());
    }
    let grace = match (&y["terminationGracePeriodSeconds"], kind) {
        (Yaml::Integer(n), Kind::Liveness | Kind::Startup) => {
            Some(Duration::from_secs(u64::try_from(*n).map_err(|_| anyhow!("terminationGracePeriodSeconds < 0"))?))
        }
        (Yaml::Integer(_), Kind::Readiness) => bail!("terminationGracePeriodSeconds on a readiness probe"),
        _ => None,
    };
    Ok(Probe {
        kind,
        action,
        initial_delay: Duration::from_secs(secs("initialDelaySeconds", 0, 0)?),
        period: Duration::from_secs(secs("periodSeconds", DEFAULT_PERIOD_S, 1)?),
        timeout: Duration::from_secs(secs("timeoutSeconds", DEFAULT_TIMEOUT_S, 1)?),
        success_threshold,
        failure_threshold: secs("failureThreshold", u64::from(DEFAULT_FAILURE_THRESHOLD), 1)? as u32,
        termination_grace: grace,
    })
}

/// A probe's `port`: a number, or the name of one of the container's `ports`.
pub fn port(y: &Yaml, container: &Yaml) -> Result<u16> {
    match y {
        Yaml::Integer(n) => u16::try_from(*n).ok().filter(|p| *p > 0).with_context(|| format!("port {n} out of range")),
        Yaml::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            container["ports"]
                .as_vec()
                .into_iter()
                .flatten()
                .find(|p| p["name"].as_str() == Some(name.as_str()))
                .and_then(|p| p["containerPort"].as_i64())
                .and_then(|n| u16::try_from(n).ok())
                .with_context(|| format!("no container port named {name:?}"))
        }
        _ => Err(anyhow!("port missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yaml_rust2::YamlLoader;

    fn container(text: &str) -> Yaml {
        YamlLoader::load_from_str(text).unwrap().remove(0)
    }

    /// A probe with only its handler gets every Kubernetes default.
    #[test]
    fn defaults_when_absent() {
        let c = container("name: c\nlivenessProbe:\n  tcpSocket:\n    port: 6379\n");
        let p = of_container(&c).unwrap().liveness.unwrap();
        assert_eq!(p.action, Action::Tcp { port: 6379 });
        assert_eq!(p.initial_delay, Duration::ZERO);
        assert_eq!(p.period, Duration::from_secs(10));
        assert_eq!(p.timeout, Duration::from_secs(1));
        assert_eq!((p.success_threshold, p.failure_threshold), (1, 3));
        assert_eq!(p.termination_grace, None);
        assert!(of_container(&c).unwrap().readiness.is_none());
    }

    /// httpGet on a named port resolves through the container's ports; given fields are kept.
    #[test]
    fn named_port_and_fields() {
        let c = container(
            "name: api\nports:\n  - name: http\n    containerPort: 8080\n  - name: probes\n    containerPort: 8081\n\
             readinessProbe:\n  httpGet:\n    path: /readyz\n    port: probes\n  periodSeconds: 2\n  timeoutSeconds: 2\n  \
             failureThreshold: 2\n  successThreshold: 3\n  initialDelaySeconds: 5\n",
        );
        let p = of_container(&c).unwrap().readiness.unwrap();
        assert_eq!(p.action, Action::Http { path: "/readyz".into(), port: 8081 });
        assert_eq!((p.period, p.timeout), (Duration::from_secs(2), Duration::from_secs(2)));
        assert_eq!((p.success_threshold, p.failure_threshold), (3, 2));
        assert_eq!(p.initial_delay, Duration::from_secs(5));
        let bad = container("name: api\nlivenessProbe:\n  httpGet:\n    path: /\n    port: nope\n");
        assert!(format!("{:#}", of_container(&bad).unwrap_err()).contains("no container port named \"nope\""));
    }

    /// exec keeps the manifest's argv as is; liveness may not ask for more than one success.
    #[test]
    fn exec_and_invalid_thresholds() {
        let c = container(
            "name: redis\nlivenessProbe:\n  exec:\n    command: [\"sh\", \"-c\", \"redis-cli ping | grep -qx PONG\"]\n  \
             terminationGracePeriodSeconds: 5\n",
        );
        let p = of_container(&c).unwrap().liveness.unwrap();
        assert_eq!(
            p.action,
            Action::Exec { command: vec!["sh".into(), "-c".into(), "redis-cli ping | grep -qx PONG".into()] }
        );
        assert_eq!(p.termination_grace, Some(Duration::from_secs(5)));
        let bad = container("name: r\nlivenessProbe:\n  exec:\n    command: [\"true\"]\n  successThreshold: 2\n");
        assert!(of_container(&bad).is_err());
        let two = container("name: r\nstartupProbe:\n  exec:\n    command: [\"true\"]\n  tcpSocket:\n    port: 1\n");
        assert!(of_container(&two).is_err());
    }

    /// The repository's own manifests parse, every probe of every container.
    #[test]
    fn the_manifests_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s");
        let objects = crate::manifests::load_dir(&dir).unwrap();
        let mut n = 0;
        for o in objects.iter().filter(|o| o.pod_spec().is_some()) {
            for c in o.containers() {
                n += of_container(c).unwrap().all().count();
            }
        }
        assert!(n >= 5, "{n} probes");
    }
}
