//! TLS to Redis against real `redis-server` processes with TLS ports, certificates made at test
//! time (rcgen): writes and reads over TLS, replication over TLS, refusals (wrong CA, expired
//! certificate, wrong name, missing client certificate) as clear errors and a not-ready pod, the
//! rule for a refusal after the pod has been ready, and memory mode over a TLS read address.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use testkit::*;

/// A test CA: its certificate file and what signs with it.
struct Ca {
    cert: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, as files.
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
}

impl Leaf {
    fn path(&self, which: &str) -> &str {
        let p = if which == "cert" { &self.cert } else { &self.key };
        p.to_str().expect("utf-8 path")
    }
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&path, cert.pem()).unwrap();
        Ca { cert: path, issuer: Issuer::new(params, key) }
    }

    fn path(&self) -> &str {
        self.cert.to_str().expect("utf-8 path")
    }

    /// A certificate for `names` (DNS names or IP addresses), valid now unless `expired`.
    fn leaf(&self, dir: &Path, file: &str, names: &[&str], expired: bool) -> Leaf {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("client"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let leaf = Leaf { cert: dir.join(format!("{file}.pem")), key: dir.join(format!("{file}-key.pem")) };
        std::fs::write(&leaf.cert, cert.pem()).unwrap();
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        leaf
    }
}

/// The certificates every test draws from, in one temp dir.
struct Pki {
    _dir: tempfile::TempDir,
    ca: Ca,
    /// Another CA, which signed nothing the servers present.
    other_ca: Ca,
    server: Leaf,
    expired: Leaf,
    other_name: Leaf,
    client: Leaf,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new(dir.path(), "main");
        let other_ca = Ca::new(dir.path(), "other");
        Pki {
            server: ca.leaf(dir.path(), "server", &["localhost", "127.0.0.1"], false),
            expired: ca.leaf(dir.path(), "expired", &["localhost", "127.0.0.1"], true),
            other_name: ca.leaf(dir.path(), "other-name", &["redis.other.example"], false),
            client: ca.leaf(dir.path(), "client", &["api-client"], false),
            ca,
            other_ca,
            _dir: dir,
        }
    }

    /// `redis-server` TLS arguments presenting `cert`, trusting the main CA.
    fn server_args<'a>(&'a self, cert: &'a Leaf, auth_clients: bool) -> Vec<&'a str> {
        vec![
            "--tls-cert-file",
            cert.path("cert"),
            "--tls-key-file",
            cert.path("key"),
            "--tls-ca-cert-file",
            self.ca.path(),
            "--tls-auth-clients",
            if auth_clients { "yes" } else { "no" },
        ]
    }
}

/// A TLS master presenting `cert` and a replica synced from it over TLS.
fn tls_pair(pki: &Pki, cert: &Leaf, auth_clients: bool) -> (Redis, Redis) {
    let master = Redis::start_tls(&pki.server_args(cert, auth_clients));
    // The replica checks the master's chain (not its name) and shows it the client certificate;
    // its own TLS port presents the server certificate.
    let mut args = pki.server_args(&pki.server, false);
    args.extend(["--tls-client-cert-file", pki.client.path("cert"), "--tls-client-key-file", pki.client.path("key")]);
    let replica = Redis::replica_of_tls(&master, &args);
    replica.wait_synced();
    (master, replica)
}

fn rediss(r: &Redis) -> String {
    format!("rediss://localhost:{}", r.tls_port.expect("a TLS server"))
}

/// The `reason` of `/readyz` once it mentions TLS (bounded wait), with its status.
fn tls_readiness(api: &Api) -> (u16, String) {
    let mut last = (0, String::new());
    wait_until(Duration::from_secs(10), "a TLS reason in /readyz", || {
        let r = get(api.probe_addr, "/readyz");
        last = (r.status, r.json()["reason"].as_str().unwrap_or_default().to_owned());
        last.1.contains("TLS")
    });
    last
}

/// POST and GET with the master over TLS; the replica syncs from it over TLS.
#[test]
fn post_and_get_with_a_tls_master_and_tls_replication() {
    let pki = Pki::new();
    let (master, replica) = tls_pair(&pki, &pki.server, false);
    let api = Api::start(&replica.addr(), &rediss(&master), &[("REDIS_TLS_CA_FILE", pki.ca.path())]);
    api.wait_ready();
    let r = post_value(api.addr, 42.5);
    assert_eq!(r.status, 200, "{}", r.text());
    wait_until(Duration::from_secs(5), "the value replicated over TLS", || replica.hget() == "42.5");
    let r = get(api.addr, "/");
    assert_eq!((r.status, r.json()["current"].as_f64()), (200, Some(42.5)), "{}", r.text());
}

/// A refused master certificate: POST fails at once with the reason, and a pod that has never
/// been ready stays not ready with it (a rollout with the fault stalls).
fn refused(server_cert: fn(&Pki) -> &Leaf, api_ca: fn(&Pki) -> &Ca, expect: &str) {
    let pki = Pki::new();
    let master = Redis::start_tls(&pki.server_args(server_cert(&pki), false));
    // Plaintext replication: the replica would refuse such a master too.
    let replica = Redis::replica_of(&master);
    let api = Api::start(&replica.addr(), &rediss(&master), &[("REDIS_TLS_CA_FILE", api_ca(&pki).path())]);
    let (status, reason) = tls_readiness(&api);
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains(expect) && reason.contains("never been ready"), "{reason}");
    // Every POST says why (the refusal neither opens the circuit nor hides behind the backoff).
    for i in 0..5 {
        let r = post_value(api.addr, 1.0);
        assert!(r.status >= 500, "{}", r.text());
        let error = r.error();
        assert!(error.contains("TLS") && error.contains(expect), "POST {i}: {error}");
    }
    // It stays so: the replica is in sync, yet the pod is not ready.
    std::thread::sleep(Duration::from_millis(500));
    let r = get(api.probe_addr, "/readyz");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(master.hget(), "(nil)", "nothing was written");
}

/// A master certificate from a CA the API does not trust is refused (unknown issuer).
#[test]
fn wrong_ca_is_refused_and_the_pod_never_ready() {
    refused(|p| &p.server, |p| &p.other_ca, "UnknownIssuer");
}

/// An expired master certificate is refused.
#[test]
fn expired_certificate_is_refused_and_the_pod_never_ready() {
    refused(|p| &p.expired, |p| &p.ca, "certificate expired");
}

/// A master certificate for another name is refused.
#[test]
fn wrong_host_name_is_refused_and_the_pod_never_ready() {
    refused(|p| &p.other_name, |p| &p.ca, "not valid for name");
}

/// `--redis-tls-server-name` names the certificate's host when the address does not.
#[test]
fn server_name_override_verifies_another_name() {
    let pki = Pki::new();
    let (master, replica) = tls_pair(&pki, &pki.other_name, false);
    let env = [("REDIS_TLS_CA_FILE", pki.ca.path()), ("REDIS_TLS_SERVER_NAME", "redis.other.example")];
    let api = Api::start(&replica.addr(), &rediss(&master), &env);
    api.wait_ready();
    assert_eq!(post_value(api.addr, 7.0).status, 200);
}

/// Mutual TLS: a master that asks for client certificates takes the API's, and refuses an API
/// without one with a clear reason.
#[test]
fn mutual_tls_needs_the_client_certificate() {
    let pki = Pki::new();
    let (master, replica) = tls_pair(&pki, &pki.server, true);
    let with = Api::start(
        &replica.addr(),
        &rediss(&master),
        &[
            ("REDIS_TLS_CA_FILE", pki.ca.path()),
            ("REDIS_TLS_CERT_FILE", pki.client.path("cert")),
            ("REDIS_TLS_KEY_FILE", pki.client.path("key")),
        ],
    );
    with.wait_ready();
    let r = post_value(with.addr, 3.5);
    assert_eq!(r.status, 200, "{}", r.text());
    let without = Api::start(&replica.addr(), &rediss(&master), &[("REDIS_TLS_CA_FILE", pki.ca.path())]);
    let (status, reason) = tls_readiness(&without);
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("client certificate"), "{reason}");
    let r = post_value(without.addr, 4.0);
    assert!(r.status >= 500 && r.error().contains("--redis-tls-cert-file"), "{}", r.text());
    assert_eq!(master.hget(), "3.5");
}

/// A pod that has been ready keeps serving reads when the master's certificate turns bad (it
/// hits every pod at once): ready, the reason in /readyz, a warning, writes refused clearly.
#[test]
fn a_refusal_after_ready_counts_as_the_master_unreachable() {
    let pki = Pki::new();
    let (master, replica) = tls_pair(&pki, &pki.server, false);
    let api = Api::start(&replica.addr(), &rediss(&master), &[("REDIS_TLS_CA_FILE", pki.ca.path())]);
    api.wait_ready();
    assert_eq!(post_value(api.addr, 5.0).status, 200);
    // (A replica fresh from a diskless sync gets the stream after its first ACK, up to 1 s.)
    wait_until(Duration::from_secs(5), "the value replicated", || replica.hget() == master.hget());
    // The master now presents an expired certificate to new connections; pooled ones are cut.
    let set = master.cmd(&[
        "CONFIG",
        "SET",
        "tls-cert-file",
        pki.expired.path("cert"),
        "tls-key-file",
        pki.expired.path("key"),
    ]);
    assert!(set.eq_ignore_ascii_case("ok"), "{set}");
    master.cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    let (status, reason) = tls_readiness(&api);
    assert_eq!(status, 200, "{reason}");
    assert!(reason.contains("certificate expired"), "{reason}");
    // Still so once the master counts as down (3 failed checks and more).
    std::thread::sleep(Duration::from_millis(600));
    let r = get(api.probe_addr, "/readyz");
    assert!(r.status == 200 && r.json()["reason"].as_str().is_some_and(|s| s.contains("expired")), "{}", r.text());
    let r = get(api.addr, "/");
    assert_eq!((r.status, r.json()["current"].as_f64()), (200, Some(5.0)), "{}", r.text());
    let r = post_value(api.addr, 6.0);
    assert!(r.status >= 500 && r.error().contains("certificate expired"), "{}", r.text());
    assert!(api.log_text().contains("the master refuses TLS from the API"), "{}", api.log_text());
}

/// Memory mode over a TLS read address: the subscription runs on our TLS connection, and a POST's
/// notice reaches it.
#[test]
fn memory_mode_over_a_tls_read_address() {
    let pki = Pki::new();
    let (master, replica) = tls_pair(&pki, &pki.server, false);
    let env = [("REDIS_TLS_CA_FILE", pki.ca.path()), ("READ_MODE", "memory")];
    let api = Api::start(&rediss(&replica), &rediss(&master), &env);
    api.wait_ready();
    assert_eq!(api.metric("redis_api_memory_subscribed", ""), 1.0);
    assert_eq!(post_value(api.addr, 9.25).status, 200);
    wait_until(Duration::from_secs(5), "the notice over TLS", || {
        api.metric("redis_api_memory_notices_total", "") >= 1.0
    });
    // The notice is counted before the value is read again: poll for the answer.
    wait_until(Duration::from_secs(5), "GET serving 9.25 from memory", || {
        let r = get(api.addr, "/");
        (r.status, r.json()["current"].as_f64()) == (200, Some(9.25))
    });
}
