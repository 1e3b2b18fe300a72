//! Request heads: parsing with `httparse`, the limits on request line and headers, and the
//! framing rules (Content-Length vs chunked, no smuggling) that decide how the body is read.

use crate::deadline::Deadline;
use crate::error::ApiError;
use crate::gate::Admit;
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

/// A complete request as handed to a [`crate::http::Handler`].
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    /// The path, without query string.
    pub path: String,
    pub origin: Option<String>,
    pub body: Vec<u8>,
    /// When the first byte of this request arrived.
    pub started: Instant,
    pub deadline: Deadline,
    /// Whether overload may refuse this request at once ([`Admit::Wait`] when this
    /// connection was refused for overload within the last [`crate::gate::RETRY_AFTER`]).
    pub admit: Admit,
}

/// Outcome of trying to parse a head out of the bytes received so far.
pub enum Parsed {
    Complete(Head),
    /// Need more bytes.
    Partial,
}

/// Parses a request head from `buf`, enforcing the size limits on what has arrived so far.
pub fn parse_head(buf: &[u8], max_header_bytes: usize) -> Result<Parsed, ApiError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::Version) => return Err(version_error(buf)),
        Err(httparse::Error::TooManyHeaders) => return Err(ApiError::HeadersTooLarge("too many header fields")),
        Err(httparse::Error::Token | httparse::Error::Status) => {
            return Err(ApiError::BadRequest("malformed request line".into()));
        }
        Err(e) => return Err(ApiError::BadRequest(format!("malformed request: {e}"))),
    };
    let len = match status {
        httparse::Status::Partial => {
            let line_end = buf.iter().position(|&b| b == b'\n');
            let line_done = line_end.is_some();
            if line_end.unwrap_or(buf.len()) > MAX_REQUEST_LINE {
                return Err(ApiError::UriTooLong);
            }
            if buf.len() > max_header_bytes {
                return Err(if line_done {
                    ApiError::HeadersTooLarge("request header fields too large")
                } else {
                    ApiError::UriTooLong
                });
            }
            return Ok(Parsed::Partial);
        }
        httparse::Status::Complete(len) => len,
    };
    if buf[..len].iter().position(|&b| b == b'\n').is_some_and(|p| p > MAX_REQUEST_LINE) {
        return Err(ApiError::UriTooLong);
    }
    if len > max_header_bytes {
        return Err(ApiError::HeadersTooLarge("request header fields too large"));
    }
    // httparse guarantees method, path and version are set on Complete.
    let method = Method::parse(req.method.unwrap_or(""));
    let target = req.path.unwrap_or("");
    let minor_version = req.version.unwrap_or(1);
    let path = request_path(target)?;

    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<String> = None;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    let mut origin = None;
    let mut host_seen = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| ApiError::BadRequest("invalid Content-Length".into()))?;
            if content_length.is_some_and(|prev| prev != v) {
                return Err(ApiError::BadRequest("conflicting Content-Length headers".into()));
            }
            content_length = Some(v);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            transfer_encoding = Some(match transfer_encoding {
                Some(prev) => format!("{prev}, {v}"),
                None => v,
            });
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
                return Err(ApiError::ExpectationFailed);
            }
        } else if name.eq_ignore_ascii_case("origin") {
            origin = std::str::from_utf8(h.value).ok().map(|s| s.trim().to_owned());
        } else if name.eq_ignore_ascii_case("host") {
            host_seen = true;
        }
    }
    if minor_version == 1 && !host_seen {
        return Err(ApiError::BadRequest("HTTP/1.1 request without Host header".into()));
    }
    let framing = match (transfer_encoding, content_length) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest("both Content-Length and Transfer-Encoding".into()));
        }
        (Some(te), None) => {
            let codings: Vec<&str> = te.split(',').map(str::trim).filter(|c| !c.is_empty()).collect();
            match codings.as_slice() {
                ["chunked"] => BodyFraming::Chunked,
                [.., "chunked"] => return Err(ApiError::NotImplemented("transfer codings other than chunked")),
                _ => return Err(ApiError::BadRequest("Transfer-Encoding must end in chunked".into())),
            }
        }
        (None, Some(0)) | (None, None) => BodyFraming::None,
        (None, Some(n)) => BodyFraming::Length(n),
    };
    if framing == BodyFraming::Chunked && minor_version == 0 {
        return Err(ApiError::BadRequest("chunked encoding in an HTTP/1.0 request".into()));
    }
    let keep_alive = if minor_version == 0 { conn_keep_alive && !conn_close } else { !conn_close };
    Ok(Parsed::Complete(Head { method, path, minor_version, keep_alive, framing, expect_continue, origin, len }))
}

/// `HTTP/2` in place of `HTTP/1.x` (including the h2 connection preface) is answered 505; any
/// other garbage where the version goes is a 400.
fn version_error(buf: &[u8]) -> ApiError {
    let line_end = buf.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(buf.len());
    let line = &buf[..line_end];
    let looks_http = line.rsplit(|&b| b == b' ').next().is_some_and(|v| v.starts_with(b"HTTP/"));
    if looks_http { ApiError::VersionNotSupported } else { ApiError::BadRequest("malformed request line".into()) }
}

/// The path of an origin-form (`/a?b`) or absolute-form (`http://h/a`) request target.
fn request_path(target: &str) -> Result<String, ApiError> {
    let target = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    if target == "*" {
        return Ok("*".into());
    }
    if !target.starts_with('/') {
        return Err(ApiError::BadRequest("request target must be a path".into()));
    }
    let end = target.find(['?', '#']).unwrap_or(target.len());
    Ok(target[..end].to_owned())
}

/// Incremental decoder of a chunked body.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
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

/// Longest chunk-size or trailer line accepted.
const MAX_CHUNK_LINE: usize = 1024;

impl ChunkedDecoder {
    /// Decodes as much of `input` as possible into `out`; returns bytes consumed. `Ok` with
    /// [`Self::is_done`] false means more input is needed.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>, max_body: usize) -> Result<usize, ApiError> {
        let mut pos = 0;
        loop {
            match self.state {
                ChunkState::Done => return Ok(pos),
                ChunkState::Size | ChunkState::Trailer | ChunkState::DataEnd => {
                    let rest = &input[pos..];
                    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                        if rest.len() > MAX_CHUNK_LINE {
                            return Err(ApiError::BadRequest("chunk line too long".into()));
                        }
                        return Ok(pos);
                    };
                    let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
                    pos += nl + 1;
                    self.state = match self.state {
                        ChunkState::DataEnd if line.is_empty() => ChunkState::Size,
                        ChunkState::DataEnd => return Err(ApiError::BadRequest("missing CRLF after chunk".into())),
                        ChunkState::Trailer if line.is_empty() => ChunkState::Done,
                        ChunkState::Trailer => ChunkState::Trailer,
                        _ => {
                            let size_text = line.split(|&b| b == b';').next().unwrap_or(b"").trim_ascii();
                            let size = std::str::from_utf8(size_text)
                                .ok()
                                .filter(|s| !s.is_empty() && s.len() <= 16)
                                .and_then(|s| u64::from_str_radix(s, 16).ok())
                                .ok_or_else(|| ApiError::BadRequest("invalid chunk size".into()))?;
                            if size == 0 {
                                ChunkState::Trailer
                            } else if (out.len() as u64).saturating_add(size) > max_body as u64 {
                                return Err(ApiError::PayloadTooLarge { limit: max_body });
                            } else {
                                ChunkState::Data(size)
                            }
                        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Head, ApiError> {
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
        assert!(matches!(both, Err(ApiError::BadRequest(_))));
        let two = head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n");
        assert!(matches!(two, Err(ApiError::BadRequest(_))));
        let same = head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert_eq!(same.framing, BodyFraming::Length(3));
        assert!(matches!(
            head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Err(ApiError::NotImplemented(_))
        ));
        assert!(matches!(
            head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(ApiError::BadRequest(_))
        ));
    }

    /// HTTP/2 is a 505; the limits give 414 and 431.
    #[test]
    fn versions_and_limits() {
        assert!(matches!(parse_head(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 16384), Err(ApiError::VersionNotSupported)));
        assert!(matches!(parse_head(b"GET / HTTP/2.0\r\n\r\n", 16384), Err(ApiError::VersionNotSupported)));
        let long_uri = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_REQUEST_LINE + 10));
        assert!(matches!(parse_head(long_uri.as_bytes(), 16384), Err(ApiError::UriTooLong)));
        let big_header = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(20000));
        assert!(matches!(parse_head(big_header.as_bytes(), 16384), Err(ApiError::HeadersTooLarge(_))));
        let many: String = (0..MAX_HEADERS + 1).map(|i| format!("X-{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert!(matches!(parse_head(many.as_bytes(), 16384), Err(ApiError::HeadersTooLarge(_))));
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
        assert!(matches!(d.decode(b"ffff\r\n", &mut Vec::new(), 100), Err(ApiError::PayloadTooLarge { .. })));
        let mut d = ChunkedDecoder::default();
        assert!(matches!(d.decode(b"zz\r\n", &mut Vec::new(), 100), Err(ApiError::BadRequest(_))));
    }
}
