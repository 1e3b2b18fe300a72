//! Request heads: parsing with `httparse`, the limits on request line and headers, and the
//! framing rules (Content-Length vs chunked, no smuggling) that decide how the body is read.

use crate::Error;
use std::time::Instant;

/// Most headers a request may carry (431 beyond).
pub const MAX_HEADERS: usize = 64;
/// Longest request line (method + URI + version) accepted (414 beyond).
pub const MAX_REQUEST_LINE: usize = 8 * 1024;

/// HTTP methods the routes care about; anything else is kept by name for the 405 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Options,
    Other(String),
}

impl Method {
    fn parse(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        }
    }
}

/// How the body of a request is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head, owning what later steps need (the read buffer moves on).
#[derive(Debug)]
pub struct Head {
    pub method: Method,
    pub path: String,
    /// HTTP/1.x minor version.
    pub minor_version: u8,
    pub keep_alive: bool,
    pub framing: BodyFraming,
    pub expect_continue: bool,
    pub origin: Option<String>,
    /// Bytes of the head in the read buffer, including the blank line.
    pub len: usize,
}

/// A complete request as handed to a [`crate::Handler`].
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    /// The path, without query string.
    pub path: String,
    pub origin: Option<String>,
    pub body: Vec<u8>,
    /// When the first byte of this request arrived: the start of its time budget.
    pub started: Instant,
    /// The application's state for this request's connection
    /// ([`Handler::connection_state`](crate::Handler::connection_state)), if it keeps one.
    pub conn: Option<crate::ConnState>,
    /// Whether the handler may answer later ([`Request::defer`]).
    pub(crate) deferral: super::defer::Deferral,
}

impl Request {
    /// The connection's state as the application's type `T`, if it keeps one of that type.
    pub fn conn_state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.conn.as_deref().and_then(|s| s.downcast_ref::<T>())
    }
}

/// Outcome of trying to parse a head out of the bytes received so far.
pub enum Parsed {
    Complete(Head),
    /// Need more bytes.
    Partial,
}

/// Parses a request head from `buf`, enforcing the size limits on what has arrived so far.
pub fn parse_head(buf: &[u8], max_header_bytes: usize) -> Result<Parsed, Error> {
    // Left uninitialized: httparse fills only the slots it uses, so a request touches a few
    // of the array's 2 KiB (on every worker's stack, at every request) instead of all of it.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let status = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(s) => s,
        Err(httparse::Error::Version) => return Err(version_error(buf)),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::HeadersTooLarge("too many header fields")),
        Err(httparse::Error::Token | httparse::Error::Status) => {
            return Err(Error::BadRequest("malformed request line".into()));
        }
        Err(e) => return Err(Error::BadRequest(format!("malformed request: {e}"))),
    };
    let len = match status {
        httparse::Status::Partial => {
            let line_end = buf.iter().position(|&b| b == b'\n');
            let line_done = line_end.is_some();
            if line_end.unwrap_or(buf.len()) > MAX_REQUEST_LINE {
                return Err(Error::UriTooLong);
            }
            if buf.len() > max_header_bytes {
                return Err(if line_done {
                    Error::HeadersTooLarge("request header fields too large")
                } else {
                    Error::UriTooLong
                });
            }
            return Ok(Parsed::Partial);
        }
        httparse::Status::Complete(len) => len,
    };
    if buf[..len].iter().position(|&b| b == b'\n').is_some_and(|p| p > MAX_REQUEST_LINE) {
        return Err(Error::UriTooLong);
    }
    if len > max_header_bytes {
        return Err(Error::HeadersTooLarge("request header fields too large"));
    }
    // httparse guarantees method, path and version are set on Complete.
    let method = Method::parse(req.method.unwrap_or(""));
    let target = req.path.unwrap_or("");
    let minor_version = req.version.unwrap_or(1);
    let path = request_path(&method, target)?;

    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<Vec<String>> = None;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    let mut origin = None;
    let mut host_seen = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let v = content_length_value(h.value).ok_or_else(|| Error::BadRequest("invalid Content-Length".into()))?;
            if content_length.is_some_and(|prev| prev != v) {
                return Err(Error::BadRequest("conflicting Content-Length headers".into()));
            }
            content_length = Some(v);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let codings = transfer_encoding.get_or_insert_with(Vec::new);
            for coding in h.value.split(|&b| b == b',').map(trim_ows).filter(|c| !c.is_empty()) {
                if token_len(coding) != coding.len() {
                    return Err(Error::BadRequest("invalid Transfer-Encoding".into()));
                }
                // A token is ASCII.
                codings.push(String::from_utf8_lossy(coding).to_ascii_lowercase());
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                conn_close |= token.eq_ignore_ascii_case(b"close");
                conn_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(Error::ExpectationFailed);
            }
        } else if name.eq_ignore_ascii_case("origin") {
            origin = std::str::from_utf8(h.value).ok().map(|s| s.trim().to_owned());
        } else if name.eq_ignore_ascii_case("host") {
            // RFC 9112 §3.2: more than one Host, or an invalid one, is a 400 in any version.
            if host_seen {
                return Err(Error::BadRequest("more than one Host header".into()));
            }
            if !valid_host(h.value) {
                return Err(Error::BadRequest("invalid Host header".into()));
            }
            host_seen = true;
        }
    }
    if minor_version == 1 && !host_seen {
        return Err(Error::BadRequest("HTTP/1.1 request without Host header".into()));
    }
    // RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored (an
    // HTTP/1.0 client may not understand the interim 100).
    let expect_continue = expect_continue && minor_version != 0;
    let framing = match (transfer_encoding, content_length) {
        (Some(_), Some(_)) => {
            return Err(Error::BadRequest("both Content-Length and Transfer-Encoding".into()));
        }
        (Some(codings), None) => match codings.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["chunked"] => BodyFraming::Chunked,
            [.., "chunked"] => return Err(Error::NotImplemented("transfer codings other than chunked")),
            _ => return Err(Error::BadRequest("Transfer-Encoding must end in chunked".into())),
        },
        (None, Some(0)) | (None, None) => BodyFraming::None,
        (None, Some(n)) => BodyFraming::Length(n),
    };
    if framing == BodyFraming::Chunked && minor_version == 0 {
        return Err(Error::BadRequest("chunked encoding in an HTTP/1.0 request".into()));
    }
    let keep_alive = if minor_version == 0 { conn_keep_alive && !conn_close } else { !conn_close };
    Ok(Parsed::Complete(Head { method, path, minor_version, keep_alive, framing, expect_continue, origin, len }))
}

/// `HTTP/2` in place of `HTTP/1.x` (including the h2 connection preface) is answered 505; any
/// other garbage where the version goes is a 400.
fn version_error(buf: &[u8]) -> Error {
    let line_end = buf.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(buf.len());
    let line = &buf[..line_end];
    let looks_http = line.rsplit(|&b| b == b' ').next().is_some_and(|v| v.starts_with(b"HTTP/"));
    if looks_http { Error::VersionNotSupported } else { Error::BadRequest("malformed request line".into()) }
}

/// The path of a request target (RFC 9112 §3.2), without query: origin-form (`/a?b`) as is;
/// absolute-form (`http://h/a`, scheme `http` or `https` in any case, a non-empty authority)
/// gives its path, `/` when it has none; asterisk-form (`*`) only with OPTIONS. Anything else
/// is a 400, so no target can pass for another by carrying `://` somewhere inside.
fn request_path(method: &Method, target: &str) -> Result<String, Error> {
    let path = if target.starts_with('/') {
        target
    } else if target == "*" {
        return if *method == Method::Options {
            Ok("*".into())
        } else {
            Err(Error::BadRequest("request target * is only for OPTIONS".into()))
        };
    } else if let Some(rest) =
        strip_prefix_ignore_case(target, "http://").or_else(|| strip_prefix_ignore_case(target, "https://"))
    {
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if authority_end == 0 {
            return Err(Error::BadRequest("absolute request target without a host".into()));
        }
        let rest = &rest[authority_end..];
        if rest.starts_with('/') { rest } else { "/" }
    } else {
        return Err(Error::BadRequest("request target must be a path".into()));
    };
    let end = path.find(['?', '#']).unwrap_or(path.len());
    Ok(path[..end].to_owned())
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// Content-Length (RFC 9110 §8.6): `1*DIGIT`, with only ASCII OWS (SP, HTAB) around it; any
/// other byte (a Unicode space, a sign) makes it invalid, as it is for nginx.
fn content_length_value(value: &[u8]) -> Option<u64> {
    let digits = trim_ows(value);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// `s` without leading and trailing SP and HTAB (OWS), and nothing else.
fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_ows(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

fn skip_ows(s: &[u8]) -> &[u8] {
    &s[s.iter().position(|&b| !is_ows(b)).unwrap_or(s.len())..]
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `tchar` (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Length of the token at the start of `s` (0: none).
fn token_len(s: &[u8]) -> usize {
    s.iter().position(|&b| !is_tchar(b)).unwrap_or(s.len())
}

/// A field value byte: VCHAR, obs-text, SP or HTAB (no CTL, so no CR, LF or NUL).
fn is_field_byte(b: u8) -> bool {
    is_ows(b) || (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// A Host value (RFC 9112 §3.2, RFC 3986 §3.2.2): empty, or `uri-host [":" port]` where
/// uri-host is an `[IP-literal]` or a reg-name (which covers IPv4) and port is digits.
fn valid_host(value: &[u8]) -> bool {
    let (host_ok, port) = match value.strip_prefix(b"[") {
        Some(rest) => {
            let Some(end) = rest.iter().position(|&b| b == b']') else { return false };
            (valid_ip_literal(&rest[..end]), &rest[end + 1..])
        }
        None => {
            let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
            (valid_reg_name(&value[..end]), &value[end..])
        }
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    host_ok && port_ok
}

/// The inside of `[...]`: an IPv6 address (hex digits, `:` and `.` for an embedded IPv4) or
/// an IPvFuture (`v` HEXDIG `.` followed by unreserved, sub-delims and `:`).
fn valid_ip_literal(s: &[u8]) -> bool {
    match s {
        [b'v' | b'V', rest @ ..] => {
            !rest.is_empty() && rest.iter().all(|&b| is_unreserved(b) || is_sub_delim(b) || b == b':')
        }
        _ => s.contains(&b':') && s.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
    }
}

/// `*( unreserved / pct-encoded / sub-delims )`.
fn valid_reg_name(s: &[u8]) -> bool {
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == b'%' {
            let hex = |j: usize| s.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else if is_unreserved(b) || is_sub_delim(b) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

fn is_sub_delim(b: u8) -> bool {
    b"!$&'()*+,;=".contains(&b)
}

/// Incremental decoder of a chunked body (RFC 9112 §7.1), strict where a laxer reading could
/// frame the stream differently from a proxy in front: every line ends in CRLF, a chunk size
/// is hex digits from the first byte of its line, extensions and trailer fields are checked
/// against their grammar, and the trailer section is bounded.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// Trailer field lines read so far.
    trailer_lines: usize,
    /// Bytes of the trailer section read so far, CRLFs included.
    trailer_bytes: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Expecting trailer lines until an empty one.
    Trailer,
    Done,
}

/// Longest chunk-size line (size, extensions, CRLF) accepted (400 beyond).
const MAX_CHUNK_LINE: usize = 1024;
/// Most hex digits of a chunk size: 16 hold any `u64`.
const MAX_CHUNK_SIZE_DIGITS: usize = 16;
/// Most bytes of a trailer section, CRLFs and the closing empty line included (431 beyond);
/// it holds at most [`MAX_HEADERS`] field lines.
pub const MAX_TRAILER_BYTES: usize = 8 * 1024;

impl ChunkedDecoder {
    /// Decodes as much of `input` as possible into `out`; returns bytes consumed. `Ok` with
    /// [`Self::is_done`] false means more input is needed.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>, max_body: usize) -> Result<usize, Error> {
        let mut pos = 0;
        loop {
            match self.state {
                ChunkState::Done => return Ok(pos),
                ChunkState::DataEnd => match &input[pos..] {
                    [b'\r', b'\n', ..] => {
                        pos += 2;
                        self.state = ChunkState::Size;
                    }
                    [] | [b'\r'] => return Ok(pos),
                    _ => return Err(Error::BadRequest("chunk data not followed by CRLF".into())),
                },
                ChunkState::Size | ChunkState::Trailer => {
                    let trailer = self.state == ChunkState::Trailer;
                    // The longest line (LF included) still acceptable here.
                    let limit = if trailer { MAX_TRAILER_BYTES - self.trailer_bytes } else { MAX_CHUNK_LINE };
                    let too_long = || {
                        if trailer {
                            Error::HeadersTooLarge("trailer section too large")
                        } else {
                            Error::BadRequest("chunk line too long".into())
                        }
                    };
                    let rest = &input[pos..];
                    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                        // The line, once its LF arrives, will be longer than what is here.
                        if rest.len() >= limit {
                            return Err(too_long());
                        }
                        return Ok(pos);
                    };
                    if nl + 1 > limit {
                        return Err(too_long());
                    }
                    let Some(line) = rest[..nl].strip_suffix(b"\r") else {
                        return Err(Error::BadRequest("chunk line not ended by CRLF".into()));
                    };
                    pos += nl + 1;
                    if trailer {
                        self.trailer_bytes += nl + 1;
                        if line.is_empty() {
                            self.state = ChunkState::Done;
                            continue;
                        }
                        self.trailer_lines += 1;
                        if self.trailer_lines > MAX_HEADERS {
                            return Err(Error::HeadersTooLarge("too many trailer fields"));
                        }
                        if !valid_field_line(line) {
                            return Err(Error::BadRequest("malformed trailer field".into()));
                        }
                        continue;
                    }
                    let size = chunk_size(line)?;
                    self.state = if size == 0 {
                        ChunkState::Trailer
                    } else if (out.len() as u64).saturating_add(size) > max_body as u64 {
                        return Err(Error::PayloadTooLarge { limit: max_body });
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    let avail = input.len() - pos;
                    if avail == 0 {
                        return Ok(pos);
                    }
                    let take = avail.min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[pos..pos + take]);
                    pos += take;
                    let left = left - take as u64;
                    self.state = if left == 0 { ChunkState::DataEnd } else { ChunkState::Data(left) };
                }
            }
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

/// The size of a chunk-size line without its CRLF: `1*HEXDIG` from the first byte (no sign,
/// no leading space), at most [`MAX_CHUNK_SIZE_DIGITS`], then only well-formed extensions.
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let digits = line.iter().position(|b| !b.is_ascii_hexdigit()).unwrap_or(line.len());
    if digits == 0 || digits > MAX_CHUNK_SIZE_DIGITS {
        return Err(Error::BadRequest("invalid chunk size".into()));
    }
    if !valid_chunk_ext(&line[digits..]) {
        return Err(Error::BadRequest("invalid chunk extension".into()));
    }
    // At most 16 hex digits: no overflow.
    Ok(line[..digits].iter().fold(0u64, |n, &d| n << 4 | u64::from(hex_value(d))))
}

fn hex_value(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        _ => d - b'A' + 10,
    }
}

/// `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )` (RFC 9112 §7.1.1): the
/// extensions are ignored, but only once they are known to end where the line ends.
fn valid_chunk_ext(mut s: &[u8]) -> bool {
    while !s.is_empty() {
        let Some(rest) = skip_ows(s).strip_prefix(b";") else { return false };
        s = skip_ows(rest);
        let name = token_len(s);
        if name == 0 {
            return false;
        }
        s = &s[name..];
        if let Some(rest) = skip_ows(s).strip_prefix(b"=") {
            s = skip_ows(rest);
            let value = if s.first() == Some(&b'"') { quoted_string_len(s) } else { token_len(s) };
            if value == 0 {
                return false;
            }
            s = &s[value..];
        }
    }
    true
}

/// Length of the quoted-string at the start of `s` (0: none, or unterminated).
fn quoted_string_len(s: &[u8]) -> usize {
    let mut i = 1;
    while let Some(&b) = s.get(i) {
        match b {
            b'"' => return i + 1,
            b'\\' => match s.get(i + 1) {
                Some(&q) if is_field_byte(q) => i += 2,
                _ => return 0,
            },
            _ if is_field_byte(b) => i += 1,
            _ => return 0,
        }
    }
    0
}

/// A field line without its CRLF (RFC 9112 §5): `token ":" OWS value`, nothing between the
/// name and the colon, no obs-fold (a line starting with whitespace), no CTL in the value.
fn valid_field_line(line: &[u8]) -> bool {
    let name = token_len(line);
    name > 0 && line[name..].strip_prefix(b":").is_some_and(|value| value.iter().all(|&b| is_field_byte(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Head, Error> {
        match parse_head(raw.as_bytes(), 16 * 1024)? {
            Parsed::Complete(h) => Ok(h),
            Parsed::Partial => panic!("partial"),
        }
    }

    /// A plain keep-alive GET parses; the query is dropped from the path.
    #[test]
    fn simple_get() {
        let h = head("GET /x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.path, "/x");
        assert!(h.keep_alive);
        assert_eq!(h.framing, BodyFraming::None);
    }

    /// HTTP/1.0 is close by default, keep-alive on request.
    #[test]
    fn http10_keep_alive() {
        assert!(!head("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap().keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap().keep_alive);
    }

    /// Smuggling shapes are refused.
    #[test]
    fn framing_conflicts() {
        let both = head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(matches!(both, Err(Error::BadRequest(_))));
        let two = head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n");
        assert!(matches!(two, Err(Error::BadRequest(_))));
        let same = head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert_eq!(same.framing, BodyFraming::Length(3));
        assert!(matches!(head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n"), Err(Error::BadRequest(_))));
        assert!(matches!(
            head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Err(Error::NotImplemented(_))
        ));
        assert!(matches!(
            head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(Error::BadRequest(_))
        ));
    }

    /// HTTP/2 is a 505; the limits give 414 and 431.
    #[test]
    fn versions_and_limits() {
        assert!(matches!(parse_head(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 16384), Err(Error::VersionNotSupported)));
        assert!(matches!(parse_head(b"GET / HTTP/2.0\r\n\r\n", 16384), Err(Error::VersionNotSupported)));
        let long_uri = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_REQUEST_LINE + 10));
        assert!(matches!(parse_head(long_uri.as_bytes(), 16384), Err(Error::UriTooLong)));
        let big_header = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(20000));
        assert!(matches!(parse_head(big_header.as_bytes(), 16384), Err(Error::HeadersTooLarge(_))));
        let many: String = (0..MAX_HEADERS + 1).map(|i| format!("X-{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert!(matches!(parse_head(many.as_bytes(), 16384), Err(Error::HeadersTooLarge(_))));
        assert!(matches!(parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n", 16384), Ok(Parsed::Partial)));
    }

    /// Chunked bodies decode across arbitrary splits and respect the body limit.
    #[test]
    fn chunked_decoding() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for split in 0..body.len() {
            let mut d = ChunkedDecoder::default();
            let mut out = Vec::new();
            let mut input = body[..split].to_vec();
            let mut used = d.decode(&input, &mut out, 100).unwrap();
            input.drain(..used);
            input.extend_from_slice(&body[split..]);
            used = d.decode(&input, &mut out, 100).unwrap();
            assert!(d.is_done(), "split {split}");
            assert_eq!(out, b"Wikipedia");
            assert_eq!(&input[used..], b"NEXT");
        }
        let mut d = ChunkedDecoder::default();
        assert!(matches!(d.decode(b"ffff\r\n", &mut Vec::new(), 100), Err(Error::PayloadTooLarge { .. })));
        let mut d = ChunkedDecoder::default();
        assert!(matches!(d.decode(b"zz\r\n", &mut Vec::new(), 100), Err(Error::BadRequest(_))));
    }

    fn head_bytes(raw: &[u8]) -> Result<Head, Error> {
        match parse_head(raw, 16 * 1024)? {
            Parsed::Complete(h) => Ok(h),
            Parsed::Partial => panic!("partial"),
        }
    }

    fn is_bad(r: Result<Head, Error>) -> bool {
        matches!(r, Err(Error::BadRequest(_)))
    }

    /// Decodes `body` in one call: the body, or the error; panics if more input is wanted.
    fn decode_all(body: &[u8]) -> Result<Vec<u8>, Error> {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let used = d.decode(body, &mut out, 1 << 20)?;
        assert!(d.is_done(), "wants more input after {used} of {:?}", String::from_utf8_lossy(body));
        assert_eq!(used, body.len());
        Ok(out)
    }

    fn chunk_bad(body: &[u8]) -> bool {
        matches!(decode_all(body), Err(Error::BadRequest(_)))
    }

    /// `://` inside an origin-form target is part of its path or query, never an absolute URL.
    #[test]
    fn origin_form_with_scheme_separator_inside() {
        assert_eq!(head("GET /?x=://y/metrics HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().path, "/");
        assert_eq!(head("GET /static://y/readyz HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().path, "/static://y/readyz");
        let post = head("POST /anything?://x/ HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n").unwrap();
        assert_eq!(post.path, "/anything");
    }

    /// Absolute-form is only `http://` or `https://` (any case) with a host; its path, or `/`.
    #[test]
    fn absolute_form() {
        assert_eq!(head("GET http://h/metrics?x HTTP/1.1\r\nHost: h\r\n\r\n").unwrap().path, "/metrics");
        assert_eq!(head("GET HTTPS://h:8080 HTTP/1.1\r\nHost: h\r\n\r\n").unwrap().path, "/");
        assert_eq!(head("GET http://h?q=/metrics HTTP/1.1\r\nHost: h\r\n\r\n").unwrap().path, "/");
        for target in ["http:///metrics", "https://", "x://y/metrics", "ftp://h/", "metrics", "http:/h/x", "?x=://y/"] {
            assert!(is_bad(head(&format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n"))), "{target}");
        }
    }

    /// `*` is OPTIONS-only.
    #[test]
    fn asterisk_form_only_for_options() {
        assert_eq!(head("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().path, "*");
        assert!(is_bad(head("GET * HTTP/1.1\r\nHost: a\r\n\r\n")));
        assert!(is_bad(head("POST * HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")));
    }

    /// Content-Length is ASCII digits with ASCII OWS only: Unicode spaces are not trimmed.
    #[test]
    fn content_length_ascii_only() {
        assert!(is_bad(head_bytes(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\xc2\xa0\r\n\r\n")));
        assert!(is_bad(head_bytes(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \xe3\x80\x8011\r\n\r\n")));
        for bad in ["1 1", "-1", "0x5", "", "99999999999999999999999", "5,5"] {
            assert!(is_bad(head(&format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {bad}\r\n\r\n"))), "{bad}");
        }
        let ok = head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \t 11 \t\r\n\r\n").unwrap();
        assert_eq!(ok.framing, BodyFraming::Length(11));
    }

    /// Transfer codings are tokens compared after ASCII OWS only.
    #[test]
    fn transfer_encoding_tokens() {
        assert!(is_bad(head_bytes(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\xc2\xa0\r\n\r\n")));
        assert!(is_bad(head_bytes(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \xc2\xa0chunked\r\n\r\n")));
        for bad in ["chu nked", "chunked;x=1", "\"chunked\"", "chunked\x0b"] {
            let r = head(&format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {bad}\r\n\r\n"));
            assert!(r.is_err(), "{bad:?}");
            assert!(!matches!(r, Err(Error::NotImplemented(_))), "{bad:?}");
        }
        for ok in ["chunked", "Chunked", " \tCHUNKED\t ", ", chunked,"] {
            let h = head(&format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {ok}\r\n\r\n")).unwrap();
            assert_eq!(h.framing, BodyFraming::Chunked, "{ok:?}");
        }
        let split = head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(matches!(split, Err(Error::NotImplemented(_))));
    }

    /// A chunk size is hex digits from the first byte of its line, at most 16 of them.
    #[test]
    fn chunk_size_strict() {
        assert!(chunk_bad(b"+b\r\nhello world\r\n0\r\n\r\n"));
        assert!(chunk_bad(b" b\r\nhello world\r\n0\r\n\r\n"));
        assert!(chunk_bad(b"\tb\r\nhello world\r\n0\r\n\r\n"));
        assert!(chunk_bad(b"0x5\r\nhello\r\n0\r\n\r\n"));
        assert!(chunk_bad(b"-0\r\n\r\n"));
        assert!(chunk_bad(b"\r\n"));
        assert!(chunk_bad(b"00000000000000005\r\nhello\r\n0\r\n\r\n"));
        assert_eq!(decode_all(b"0000000000000005\r\nhello\r\n0\r\n\r\n").unwrap(), b"hello");
        assert_eq!(decode_all(b"B\r\nhello world\r\n0\r\n\r\n").unwrap(), b"hello world");
        let mut d = ChunkedDecoder::default();
        let long = format!("5;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
        assert!(matches!(d.decode(long.as_bytes(), &mut Vec::new(), 100), Err(Error::BadRequest(_))));
        let mut d = ChunkedDecoder::default();
        let long = format!("5;{}", "x".repeat(MAX_CHUNK_LINE));
        assert!(matches!(d.decode(long.as_bytes(), &mut Vec::new(), 100), Err(Error::BadRequest(_))));
    }

    /// Chunk extensions must be `;name[=token/quoted-string]` with BWS only around `;` and `=`.
    #[test]
    fn chunk_extensions() {
        for ok in [
            &b"5;a\r\nhello\r\n0\r\n\r\n"[..],
            b"5 ;a\r\nhello\r\n0\r\n\r\n",
            b"5 \t; a = b ;c\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"q \\\" ;x\"\r\nhello\r\n0;z=1\r\n\r\n",
        ] {
            assert_eq!(decode_all(ok).unwrap(), b"hello", "{:?}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"5 \r\nhello\r\n0\r\n\r\n"[..],
            b"5;\r\nhello\r\n0\r\n\r\n",
            b"5;a=\r\nhello\r\n0\r\n\r\n",
            b"5;a b\r\nhello\r\n0\r\n\r\n",
            b"5;a=b c\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"open\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"x\"y\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n",
            b"5x\r\nhello\r\n0\r\n\r\n",
            b"5\rX\r\nhello\r\n0\r\n\r\n",
        ] {
            assert!(chunk_bad(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// Chunk lines, the CRLF after data and trailer lines must end in CRLF, not a bare LF.
    #[test]
    fn chunk_lines_need_crlf() {
        assert!(chunk_bad(b"5\nhello\r\n0\r\n\r\n"));
        assert!(chunk_bad(b"5\r\nhello\n0\r\n\r\n"));
        assert!(chunk_bad(b"5\r\nhelloXY0\r\n\r\n"));
        assert!(chunk_bad(b"5\r\nhello\r\n0\n\r\n"));
        assert!(chunk_bad(b"5\r\nhello\r\n0\r\n\n"));
        assert!(chunk_bad(b"5\r\nhello\r\n0\r\nX: y\n\r\n"));
    }

    /// Trailer lines are header fields: a request head cannot hide in them.
    #[test]
    fn trailer_fields_checked() {
        assert_eq!(
            decode_all(b"5\r\nhello\r\n0\r\nX: y\r\nY-Z:\t\r\nE:\r\nU: \xc3\xa9 \"v\"\r\n\r\n").unwrap(),
            b"hello"
        );
        for bad in [
            &b"0\r\nGET /metrics HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"0\r\nX : y\r\n\r\n",
            b"0\r\nX\t: y\r\n\r\n",
            b"0\r\nX: y\r\n folded\r\n\r\n",
            b"0\r\n\tX: y\r\n\r\n",
            b"0\r\n: y\r\n\r\n",
            b"0\r\nX y\r\n\r\n",
            b"0\r\nX: a\x00b\r\n\r\n",
            b"0\r\nX: a\rb\r\n\r\n",
            b"0\r\nX(: y\r\n\r\n",
        ] {
            assert!(chunk_bad(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// The trailer section is bounded in lines (MAX_HEADERS) and bytes (MAX_TRAILER_BYTES).
    #[test]
    fn trailer_bounds() {
        let lines = |n: usize| -> String { (0..n).map(|i| format!("T-{i}: v\r\n")).collect() };
        let ok = format!("0\r\n{}\r\n", lines(MAX_HEADERS));
        assert!(decode_all(ok.as_bytes()).is_ok());
        let many = format!("0\r\n{}\r\n", lines(MAX_HEADERS + 1));
        assert!(matches!(decode_all(many.as_bytes()), Err(Error::HeadersTooLarge(_))));
        let big = format!("0\r\nX: {}\r\n\r\n", "v".repeat(MAX_TRAILER_BYTES));
        assert!(matches!(decode_all(big.as_bytes()), Err(Error::HeadersTooLarge(_))));
        // Fed in pieces, an endless trailer line is refused once past the bound.
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let mut input = b"0\r\nX: ".to_vec();
        let mut refused = false;
        for _ in 0..(MAX_TRAILER_BYTES / 1000 + 2) {
            input.extend_from_slice(&[b'v'; 1000]);
            match d.decode(&input, &mut out, 100) {
                Ok(used) => drop(input.drain(..used)),
                Err(e) => {
                    assert!(matches!(e, Error::HeadersTooLarge(_)));
                    refused = true;
                    break;
                }
            }
        }
        assert!(refused);
        // Exactly at the byte bound is fine.
        let pad = MAX_TRAILER_BYTES - "X: \r\n".len() - "\r\n".len();
        let exact = format!("0\r\nX: {}\r\n\r\n", "v".repeat(pad));
        assert!(decode_all(exact.as_bytes()).is_ok());
    }

    /// Two Host headers, or an invalid Host value, are a 400 (RFC 9112 §3.2).
    #[test]
    fn host_checked() {
        assert!(is_bad(head("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n")));
        assert!(is_bad(head("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")));
        assert!(is_bad(head("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n")));
        assert!(is_bad(head("GET / HTTP/1.0\r\nHost: a b/c\r\n\r\n")));
        for bad in ["a b/c", "a/b", "a@b", "a:b", "a:80:80", "[::1", "[::1]x", "[]", "[v]", "a%2", "a%zz", "h\u{e9}"] {
            assert!(is_bad(head(&format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n"))), "{bad}");
        }
        for ok in ["", "a", "example.com:8080", "127.0.0.1", "[::1]:80", "[::ffff:1.2.3.4]", "[v1.x:y]", "a%20b", "a:"]
        {
            assert!(head(&format!("GET / HTTP/1.1\r\nHost: {ok}\r\n\r\n")).is_ok(), "{ok}");
        }
    }

    /// HTTP/1.0 ignores Expect: 100-continue (no interim 100); HTTP/1.1 keeps it.
    #[test]
    fn expect_continue_only_http11() {
        let h10 = head("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n").unwrap();
        assert!(!h10.expect_continue);
        let h11 = head("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n").unwrap();
        assert!(h11.expect_continue);
    }
}
