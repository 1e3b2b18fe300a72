//! UTC times for what the tools record (result directories, run headers): always UTC and
//! always saying so, from the system clock, so a time copied into the docs needs no guessing
//! about the zone it was read in.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch now (0 if the clock is before it).
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// (year, month, day, hour, minute, second) of a Unix time, in UTC (proleptic Gregorian;
/// Howard Hinnant's days-to-civil algorithm).
pub fn parts(unix: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (unix / 86_400) as i64;
    let secs = (unix % 86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, secs / 3600, secs / 60 % 60, secs % 60)
}

/// `2026-11-26 00:54 UTC`: for run headers and logs.
pub fn stamp(unix: u64) -> String {
    let (y, mo, d, h, mi, _) = parts(unix);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC")
}

/// `20261126T005412Z` (ISO 8601 basic): for directory names, sorting by time.
pub fn compact(unix: u64) -> String {
    let (y, mo, d, h, mi, s) = parts(unix);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known instants: the epoch, a leap day, and this project's chaos run.
    #[test]
    fn known_instants() {
        assert_eq!(stamp(0), "1970-01-01 00:00 UTC");
        assert_eq!(compact(951_782_400), "20000229T000000Z");
        assert_eq!(stamp(1_795_654_440), "2026-11-26 00:54 UTC");
        assert_eq!(compact(1_795_654_452), "20261126T005412Z");
    }
}
