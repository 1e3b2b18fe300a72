//! A Service as kube-proxy makes one: one address on the host; each new client connection
//! goes to the next ready endpoint (round robin) and is then relayed as is, both ways, until
//! either side closes. Connections already made stay with their pod when it turns not ready
//! (kube-proxy's conntrack does the same); with no ready endpoint a new connection is reset at
//! once (kube-proxy's REJECT: the client fails fast instead of waiting).

use anyhow::{Context, Result};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Connections relayed at once; past it a new one is reset (two threads each).
pub const MAX_CONNECTIONS: usize = 1024;
/// How long to wait for a pod to accept a relayed connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Stack of a relay thread: it only copies through a small buffer.
const RELAY_STACK: usize = 64 * 1024;

/// One endpoint: a pod's address and whether it is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub pod: usize,
    pub addr: SocketAddr,
    pub ready: bool,
}

/// The endpoints of a Service, kept current by the kubelet; shared with the proxy.
#[derive(Debug, Default)]
pub struct Endpoints {
    list: Mutex<Vec<Endpoint>>,
    next: AtomicUsize,
}

impl Endpoints {
    pub fn new(list: Vec<Endpoint>) -> Arc<Endpoints> {
        Arc::new(Endpoints { list: Mutex::new(list), next: AtomicUsize::new(0) })
    }

    /// Marks pod `pod` ready or not; returns whether that changed anything.
    pub fn set_ready(&self, pod: usize, ready: bool) -> bool {
        let mut list = self.list.lock().unwrap_or_else(PoisonError::into_inner);
        let mut changed = false;
        for e in list.iter_mut().filter(|e| e.pod == pod) {
            changed |= e.ready != ready;
            e.ready = ready;
        }
        changed
    }

    /// The pods that are ready now.
    pub fn ready(&self) -> Vec<usize> {
        self.list.lock().unwrap_or_else(PoisonError::into_inner).iter().filter(|e| e.ready).map(|e| e.pod).collect()
    }

    /// The next ready endpoint, round robin (`None`: none is ready).
    pub fn pick(&self) -> Option<Endpoint> {
        let list = self.list.lock().unwrap_or_else(PoisonError::into_inner);
        let ready: Vec<&Endpoint> = list.iter().filter(|e| e.ready).collect();
        if ready.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % ready.len();
        Some(ready[i].clone())
    }
}

/// What the proxy did.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections relayed, by pod number (index).
    per_pod: Mutex<Vec<u64>>,
    /// New connections reset because no endpoint was ready.
    pub refused_no_endpoint: AtomicU64,
    /// New connections reset because the chosen pod did not accept within [`CONNECT_TIMEOUT`].
    pub refused_pod_down: AtomicU64,
    /// New connections reset at [`MAX_CONNECTIONS`].
    pub refused_full: AtomicU64,
    active: AtomicUsize,
}

impl Stats {
    /// Connections relayed to each pod so far, `(pod, count)`.
    pub fn per_pod(&self) -> Vec<(usize, u64)> {
        let v = self.per_pod.lock().unwrap_or_else(PoisonError::into_inner);
        v.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, n)| (i, *n)).collect()
    }

    pub fn refused(&self) -> u64 {
        self.refused_no_endpoint.load(Ordering::Relaxed)
            + self.refused_pod_down.load(Ordering::Relaxed)
            + self.refused_full.load(Ordering::Relaxed)
    }

    fn relayed(&self, pod: usize) {
        let mut v = self.per_pod.lock().unwrap_or_else(PoisonError::into_inner);
        if v.len() <= pod {
            v.resize(pod + 1, 0);
        }
        v[pod] += 1;
    }
}

/// A running Service proxy; stopped when dropped (relays under way finish on their own).
pub struct Service {
    addr: SocketAddr,
    pub endpoints: Arc<Endpoints>,
    pub stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Service {
    /// Listens on `bind` (port 0: any free port) and forwards to `endpoints`.
    pub fn start(bind: SocketAddr, endpoints: Arc<Endpoints>) -> Result<Service> {
        let listener = TcpListener::bind(bind).with_context(|| format!("Service: bind {bind}"))?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (eps, st, halt) = (endpoints.clone(), stats.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("service".into())
            .spawn(move || accept_loop(&listener, &eps, &st, &halt))
            .context("Service")?;
        Ok(Service { addr, endpoints, stats, stop, thread: Some(thread) })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept; the loop sees the flag and ends.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, endpoints: &Arc<Endpoints>, stats: &Arc<Stats>, stop: &AtomicBool) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = conn else {
            // EMFILE and the like: let descriptors free up rather than spin.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if stats.active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            stats.refused_full.fetch_add(1, Ordering::Relaxed);
            reset(client);
            continue;
        }
        let Some(endpoint) = endpoints.pick() else {
            stats.refused_no_endpoint.fetch_add(1, Ordering::Relaxed);
            reset(client);
            continue;
        };
        stats.active.fetch_add(1, Ordering::SeqCst);
        let st = stats.clone();
        let spawned =
            std::thread::Builder::new().name("service-relay".into()).stack_size(RELAY_STACK).spawn(move || {
                match TcpStream::connect_timeout(&endpoint.addr, CONNECT_TIMEOUT) {
                    Ok(pod) => {
                        st.relayed(endpoint.pod);
                        relay(client, pod);
                    }
                    Err(_) => {
                        st.refused_pod_down.fetch_add(1, Ordering::Relaxed);
                        reset(client);
                    }
                }
                st.active.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            stats.active.fetch_sub(1, Ordering::SeqCst);
            stats.refused_full.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Closes `s` with a RST (linger 0), as a REJECT would answer the connection attempt.
fn reset(s: TcpStream) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket descriptor owned by `s` and a pointer to a local struct of the
    // size passed; the socket is closed right after by the drop.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

/// Copies both ways until both directions have ended; a half-close is passed on.
fn relay(client: TcpStream, pod: TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = pod.set_nodelay(true);
    let (Ok(client2), Ok(pod2)) = (client.try_clone(), pod.try_clone()) else { return };
    let up = std::thread::Builder::new().name("service-relay".into()).stack_size(RELAY_STACK).spawn(move || {
        copy(client2, pod2);
    });
    copy(pod, client);
    if let Ok(up) = up {
        let _ = up.join();
    }
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    let _ = from.shutdown(Shutdown::Both);
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// A backend that answers each connection with its own name, then closes.
    fn backend(name: &'static str) -> SocketAddr {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for c in l.incoming().take(64) {
                let Ok(mut c) = c else { continue };
                let _ = c.write_all(name.as_bytes());
            }
        });
        addr
    }

    fn ask(addr: SocketAddr) -> Result<String, io::Error> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    fn endpoints(addrs: &[SocketAddr]) -> Arc<Endpoints> {
        Endpoints::new(addrs.iter().enumerate().map(|(i, a)| Endpoint { pod: i + 1, addr: *a, ready: true }).collect())
    }

    /// New connections go round robin over the ready pods only, skipping a not-ready one.
    #[test]
    fn round_robin_over_ready_only() {
        let eps = endpoints(&[backend("a"), backend("b"), backend("c")]);
        let svc = Service::start((Ipv4Addr::LOCALHOST, 0).into(), eps.clone()).unwrap();
        let seen: Vec<String> = (0..6).map(|_| ask(svc.addr()).unwrap()).collect();
        assert_eq!(seen, ["a", "b", "c", "a", "b", "c"]);
        assert!(eps.set_ready(2, false));
        let seen: Vec<String> = (0..4).map(|_| ask(svc.addr()).unwrap()).collect();
        assert_eq!(seen.iter().filter(|s| *s == "b").count(), 0, "{seen:?}");
        assert_eq!(seen.iter().filter(|s| *s == "a").count(), 2, "{seen:?}");
        assert_eq!(svc.stats.per_pod(), vec![(1, 4), (2, 2), (3, 4)]);
    }

    /// With no ready pod a new connection is reset at once, and served again once one is.
    #[test]
    fn no_ready_endpoint_refuses() {
        let eps = endpoints(&[backend("a")]);
        let svc = Service::start((Ipv4Addr::LOCALHOST, 0).into(), eps.clone()).unwrap();
        eps.set_ready(1, false);
        let t = std::time::Instant::now();
        let r = ask(svc.addr());
        assert!(matches!(&r, Err(e) if e.kind() == io::ErrorKind::ConnectionReset), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(svc.stats.refused_no_endpoint.load(Ordering::Relaxed), 1);
        eps.set_ready(1, true);
        assert_eq!(ask(svc.addr()).unwrap(), "a");
    }

    /// Bytes go both ways, and a half-close by the client reaches the pod.
    #[test]
    fn relays_both_ways() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut c, _)) = l.accept() {
                let mut got = Vec::new();
                let _ = c.read_to_end(&mut got);
                got.reverse();
                let _ = c.write_all(&got);
            }
        });
        let svc = Service::start((Ipv4Addr::LOCALHOST, 0).into(), endpoints(&[addr])).unwrap();
        let mut s = TcpStream::connect(svc.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"abc").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert_eq!(out, "cba");
    }
}
