//! Just enough of the Redis protocol to ask the master how it is doing from outside its
//! namespace: `AUTH user password`, then one command whose reply is a status or a bulk string (`INFO`).

use anyhow::{Context, Result, anyhow, bail};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Runs `AUTH user password` then `args` on a fresh connection; returns the command's reply text.
pub fn command(addr: SocketAddr, login: &crate::Login, args: &[&str]) -> Result<String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).with_context(|| addr.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut out = encode(&["AUTH", &login.user, &login.password]);
    out.extend(encode(args));
    (&stream).write_all(&out).with_context(|| addr.to_string())?;
    let mut reader = BufReader::new(stream);
    read_reply(&mut reader).context("AUTH")?;
    read_reply(&mut reader).map_err(|e| anyhow!("{}: {e:#}", args.first().unwrap_or(&"")))
}

/// `INFO section` as `(key, value)` pairs.
pub fn info(addr: SocketAddr, login: &crate::Login, section: &str) -> Result<Vec<(String, String)>> {
    let text = command(addr, login, &["INFO", section])?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect())
}

/// The integer `key` of an `INFO` answer.
pub fn info_u64(info: &[(String, String)], key: &str) -> Result<u64> {
    info.iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
        .with_context(|| format!("INFO has no integer {key}"))
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n", a.len()).bytes());
        out.extend(a.bytes());
        out.extend(b"\r\n");
    }
    out
}

fn read_reply(r: &mut impl BufRead) -> Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end();
    match line.split_at_checked(1) {
        Some(("+", s)) => Ok(s.to_owned()),
        Some(("-", e)) => bail!("{e}"),
        Some(("$", n)) => {
            let n: usize = n.parse().map_err(|_| anyhow!("bad bulk length {n:?}"))?;
            let mut buf = vec![0; n + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n);
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        _ => Err(anyhow!("unexpected reply {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Status, error and bulk replies; commands as RESP arrays.
    #[test]
    fn replies_and_encoding() {
        let mut r = &b"+OK\r\n-ERR no\r\n$5\r\na:1\r\n\r\n"[..];
        assert_eq!(read_reply(&mut r).unwrap(), "OK");
        assert_eq!(read_reply(&mut r).unwrap_err().to_string(), "ERR no");
        assert_eq!(read_reply(&mut r).unwrap(), "a:1\r\n");
        assert_eq!(encode(&["INFO", "stats"]), b"*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n");
    }
}
