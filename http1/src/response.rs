//! Responses: what a handler returns, and its serialization to HTTP/1.1 bytes (with the
//! `Date` header every answer carries, formatted at most once a second per thread).

use std::borrow::Cow;
use std::cell::Cell;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// A response as built by a handler. The connection layer adds framing headers.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Fixed values (`*`, a header list) are borrowed: most answers allocate none for them.
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    pub body: Vec<u8>,
    /// Close the connection after this response.
    pub close: bool,
    /// Route label for metrics (a fixed set, never the raw path); reported with
    /// [`Event::Answered`](crate::Event::Answered).
    pub route: &'static str,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        Response { status, content_type, headers: Vec::new(), body, close: false, route: "other" }
    }

    /// A JSON body, given as JSON text; a final newline is added, as curl users expect (and
    /// JSON parsers ignore).
    pub fn json(status: u16, json: impl Into<Vec<u8>>) -> Self {
        let mut body = json.into();
        body.push(b'\n');
        Response::new(status, "application/json", body)
    }

    pub fn header(mut self, name: &'static str, value: impl Into<Cow<'static, str>>) -> Self {
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
        // RFC 9110 §6.6.1: an origin server with a clock sends Date.
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(&date_now());
        out.extend_from_slice(b"\r\n");
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
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only && self.status != 204 {
            out.extend_from_slice(&self.body);
        }
    }
}

/// Length of an IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
const DATE_LEN: usize = 29;
/// 9999-12-31T23:59:59Z, the last second an IMF-fixdate (a four-digit year) can say.
const LAST_DATE_SECS: u64 = 253_402_300_799;

thread_local! {
    /// This thread's last `Date` value and the Unix second it stands for: each answer reads
    /// the clock (a vDSO call) and copies 29 bytes; formatting happens once a second.
    static DATE: Cell<(u64, [u8; DATE_LEN])> = const { Cell::new((u64::MAX, [0; DATE_LEN])) };
}

/// The current time as an IMF-fixdate (RFC 9110 §5.6.7).
fn date_now() -> [u8; DATE_LEN] {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cached| {
        let (at, text) = cached.get();
        if at == secs {
            return text;
        }
        let text = imf_fixdate(secs);
        cached.set((secs, text));
        text
    })
}

/// Formats Unix time `secs` as an IMF-fixdate; times past year 9999 say its last second.
fn imf_fixdate(secs: u64) -> [u8; DATE_LEN] {
    const WEEKDAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let secs = secs.min(LAST_DATE_SECS);
    let days = secs / 86_400;
    let in_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    // 1970-01-01 was a Thursday.
    out[..3].copy_from_slice(WEEKDAYS[(days % 7) as usize]);
    put_digits(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTHS[month as usize - 1]);
    put_digits(&mut out[12..16], year);
    put_digits(&mut out[17..19], in_day / 3600);
    put_digits(&mut out[20..22], in_day / 60 % 60);
    put_digits(&mut out[23..25], in_day % 60);
    out
}

/// Writes the low `dst.len()` decimal digits of `n`, zero-padded.
fn put_digits(dst: &mut [u8], mut n: u64) {
    for d in dst.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// (year, month 1..=12, day 1..=31) of day `days` after 1970-01-01: Howard Hinnant's
/// `civil_from_days`, in eras of 400 years counted from 0000-03-01 (so leap days fall last).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn date(secs: u64) -> String {
        String::from_utf8(imf_fixdate(secs).to_vec()).unwrap()
    }

    /// The formatter against known dates: the epoch, RFC 9110's example, leap days, the
    /// non-leap 2100, and the clamp at year 9999.
    #[test]
    fn imf_fixdate_known_dates() {
        assert_eq!(date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(date(1_709_164_800), "Thu, 29 Feb 2024 00:00:00 GMT");
        assert_eq!(date(1_709_164_800 - 1), "Wed, 28 Feb 2024 23:59:59 GMT");
        assert_eq!(date(4_107_542_400), "Mon, 01 Mar 2100 00:00:00 GMT");
        assert_eq!(date(4_107_542_400 - 1), "Sun, 28 Feb 2100 23:59:59 GMT");
        assert_eq!(date(LAST_DATE_SECS), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(date(u64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    /// The cached value is the formatted current second, and every answer carries it.
    #[test]
    fn date_header_is_now() {
        let now = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let before = now();
        let cached = date_now();
        let after = now();
        assert!(cached == imf_fixdate(before) || cached == imf_fixdate(after));
        let mut out = Vec::new();
        Response::new(404, "text/plain", b"x".to_vec()).write_to(&mut out, false, true, false);
        let text = String::from_utf8(out).unwrap();
        let line = text.lines().find(|l| l.starts_with("Date: ")).expect("Date header");
        assert_eq!(line.len(), "Date: ".len() + DATE_LEN);
        assert!(line.ends_with(" GMT"));
    }
}
