//! The kit's servers (hello-world, the generators in pod mode, the aggregator, the updater)
//! export their own HTTP metrics at `/metrics`, next to the tool's.

use testkit::*;

/// hello-world counts its answers in `hello_http_requests_total` by route and status, and the
/// 404 of an unknown path is JSON.
#[test]
fn kit_servers_export_their_http_metrics() {
    let server = loadtest::hello::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr();
    assert_eq!(get(addr, "/").status, 200);
    assert_eq!(get(addr, "/").status, 200);
    let missing = get(addr, "/nowhere");
    assert_eq!((missing.status, missing.text()), (404, "{\"error\":\"not found\"}\n".to_owned()));
    let text = get(addr, "/metrics").text();
    assert!(text.contains("hello_http_requests_total{route=\"hello\",status=\"200\"} 2"), "{text}");
    assert!(text.contains("hello_http_requests_total{route=\"not_found\",status=\"404\"} 1"), "{text}");
    assert!(text.contains("hello_requests_total 2"), "the tool's own counter stays: {text}");
    assert!(text.contains("hello_http_connections_open"), "{text}");
    server.shutdown(std::time::Duration::from_secs(1));
}
