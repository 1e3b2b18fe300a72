//! Responses: what a handler returns, and its serialization to HTTP/1.1 bytes.

use std::io::Write;

/// A response as built by a handler. The connection layer adds framing headers.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// Close the connection after this response.
    pub close: bool,
    /// Route label for metrics (a fixed set, never the raw path).
    pub route: &'static str,
    /// Refused for overload: the connection's next requests wait their turn for a while.
    pub shed: bool,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        Response { status, content_type, headers: Vec::new(), body, close: false, route: "other", shed: false }
    }

    /// A JSON body.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        // Serializing a `Value` into memory cannot fail.
        let body = serde_json::to_vec(value).unwrap_or_default();
        Response::new(status, "application/json", body)
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn route(mut self, route: &'static str) -> Self {
        self.route = route;
        self
    }

    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// Appends the wire form to `out`. `head_only` (a HEAD request) keeps Content-Length but
    /// sends no body; `keep_alive` decides the Connection header.
    pub fn write_to(&self, out: &mut Vec<u8>, head_only: bool, keep_alive: bool, http10: bool) {
        let _ = write!(out, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        if self.status != 204 {
            if !self.content_type.is_empty() {
                let _ = write!(out, "Content-Type: {}\r\n", self.content_type);
            }
            let _ = write!(out, "Content-Length: {}\r\n", self.body.len());
        }
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if http10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only && self.status != 204 {
            out.extend_from_slice(&self.body);
        }
    }
}

/// Reason phrases of the statuses this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}
