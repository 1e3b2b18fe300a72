//! The errors the HTTP layer answers itself (framing, limits, timeouts, the connection cap, a
//! panicking handler), each with the status it maps to. The application renders them its own
//! way through [`Handler::on_error`](crate::Handler::on_error); [`Error::to_response`] is the
//! default rendering.

use crate::Response;
use std::fmt;
use std::time::Duration;

/// `Retry-After` of a refusal at the connection cap: clients come back after a second.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A request the HTTP layer cannot pass to the handler, or a handler that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The request cannot be framed (a malformed line, header or chunk).
    BadRequest(String),
    UriTooLong,
    HeadersTooLarge(&'static str),
    PayloadTooLarge {
        limit: usize,
    },
    NotImplemented(&'static str),
    VersionNotSupported,
    ExpectationFailed,
    /// The head or body did not arrive in time, or the connection was displaced mid-request.
    RequestTimeout,
    /// The connection cap is reached and every worker is busy.
    Overloaded,
    /// The handler panicked, or dropped a deferred answer.
    Internal,
}

impl Error {
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::RequestTimeout => 408,
            Error::PayloadTooLarge { .. } => 413,
            Error::UriTooLong => 414,
            Error::ExpectationFailed => 417,
            Error::HeadersTooLarge(_) => 431,
            Error::Internal => 500,
            Error::NotImplemented(_) => 501,
            Error::Overloaded => 503,
            Error::VersionNotSupported => 505,
        }
    }

    /// Errors after which the byte stream cannot be trusted, or the server wants the client
    /// gone: every one but a handler's failure.
    pub fn closes_connection(&self) -> bool {
        !matches!(self, Error::Internal)
    }

    /// The default answer: the status, `{"error": "..."}`, `Retry-After` on a refusal at the
    /// cap, `Connection: close` where [`Error::closes_connection`].
    pub fn to_response(&self) -> Response {
        let mut resp = Response::json(self.status(), format!("{{\"error\":\"{}\"}}", escape_json(&self.to_string())));
        if *self == Error::Overloaded {
            resp = resp.header("Retry-After", RETRY_AFTER.as_secs().to_string());
        }
        if self.closes_connection() {
            resp = resp.closing();
        }
        resp
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadRequest(why) => write!(f, "bad request: {why}"),
            Error::UriTooLong => f.write_str("request line too long"),
            Error::HeadersTooLarge(why) => f.write_str(why),
            Error::PayloadTooLarge { limit } => write!(f, "request body larger than {limit} bytes"),
            Error::NotImplemented(what) => write!(f, "not implemented: {what}"),
            Error::VersionNotSupported => f.write_str("only HTTP/1.0 and HTTP/1.1 are supported"),
            Error::ExpectationFailed => f.write_str("only Expect: 100-continue is supported"),
            Error::RequestTimeout => f.write_str("request not received in time"),
            Error::Overloaded => f.write_str("too many connections; retry later"),
            Error::Internal => f.write_str("internal error"),
        }
    }
}

impl std::error::Error for Error {}

/// `s` as the inside of a JSON string.
fn escape_json(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default rendering is JSON with the status's headers; quotes and controls are escaped.
    #[test]
    fn default_rendering() {
        let r = Error::Overloaded.to_response();
        assert_eq!((r.status, r.close), (503, true));
        assert!(r.headers.contains(&("Retry-After", "1".into())));
        assert_eq!(r.body, b"{\"error\":\"too many connections; retry later\"}\n");
        let r = Error::BadRequest("a \"b\"\n".into()).to_response();
        assert_eq!(r.body, b"{\"error\":\"bad request: a \\\"b\\\"\\u000a\"}\n");
        assert!(!Error::Internal.to_response().close);
    }
}
