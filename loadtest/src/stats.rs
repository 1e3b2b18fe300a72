//! Results in 1-second intervals: counts by status code and error, and an HDR histogram of
//! latencies. Intervals travel between processes with their histogram serialized (HDR V2 +
//! deflate, base64), so the aggregator merges raw histograms, never percentiles.

use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest latency recorded, in microseconds (larger values are clamped): one minute.
pub const MAX_LATENCY_US: u64 = 60_000_000;
/// Significant digits kept by the histograms.
pub const SIGFIG: u8 = 3;

/// An empty latency histogram (microseconds).
pub fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s at 3 significant digits: valid bounds, cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGFIG).unwrap_or_else(|_| unreachable!())
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// One second of results.
#[derive(Debug, Clone)]
pub struct Interval {
    /// Unix second.
    pub t: u64,
    /// Requests due to be sent in this second (the offered load).
    pub offered: u64,
    /// Answers (or failures) completed in this second, by status code.
    pub codes: BTreeMap<u16, u64>,
    /// Failures without an answer, by kind (timeout, connect, io, overflow, ...).
    pub errors: BTreeMap<String, u64>,
    /// Latency of everything completed in this second, from its intended send time.
    pub hist: Histogram<u64>,
}

impl Interval {
    pub fn new(t: u64) -> Interval {
        Interval { t, offered: 0, codes: BTreeMap::new(), errors: BTreeMap::new(), hist: histogram() }
    }

    pub fn record_latency(&mut self, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        self.hist.saturating_record(us);
    }

    /// Completed requests (answered or failed).
    pub fn completed(&self) -> u64 {
        self.codes.values().sum::<u64>() + self.errors.values().sum::<u64>()
    }

    /// Answers with a 2xx status.
    pub fn ok(&self) -> u64 {
        self.codes.iter().filter(|(c, _)| (200..300).contains(*c)).map(|(_, n)| n).sum()
    }

    /// Adds `other` (same second) into this one.
    pub fn merge(&mut self, other: &Interval) {
        self.offered += other.offered;
        for (c, n) in &other.codes {
            *self.codes.entry(*c).or_default() += n;
        }
        for (e, n) in &other.errors {
            *self.errors.entry(e.clone()).or_default() += n;
        }
        // Same bounds on both sides: cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    pub fn to_wire(&self) -> WireInterval {
        let mut bytes = Vec::new();
        // Serializing into memory cannot fail for a valid histogram.
        let _ = V2DeflateSerializer::new().serialize(&self.hist, &mut bytes);
        WireInterval {
            t: self.t,
            offered: self.offered,
            codes: self.codes.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
            errors: self.errors.clone(),
            hist: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    pub fn from_wire(w: &WireInterval) -> Result<Interval, String> {
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(&w.hist).map_err(|e| format!("histogram base64: {e}"))?;
        let decoded: Histogram<u64> =
            Deserializer::new().deserialize(&mut &bytes[..]).map_err(|e| format!("histogram: {e:?}"))?;
        let mut hist = histogram();
        hist.add(&decoded).map_err(|e| format!("histogram bounds: {e:?}"))?;
        let mut codes = BTreeMap::new();
        for (c, n) in &w.codes {
            codes.insert(c.parse().map_err(|_| format!("status code {c:?}"))?, *n);
        }
        Ok(Interval { t: w.t, offered: w.offered, codes, errors: w.errors.clone(), hist })
    }

    /// Latency summary in milliseconds.
    pub fn latency_ms(&self) -> LatencyMs {
        let ms = |us: u64| us as f64 / 1000.0;
        if self.hist.is_empty() {
            return LatencyMs::default();
        }
        LatencyMs {
            mean: self.hist.mean() / 1000.0,
            p50: ms(self.hist.value_at_quantile(0.50)),
            p90: ms(self.hist.value_at_quantile(0.90)),
            p99: ms(self.hist.value_at_quantile(0.99)),
            max: ms(self.hist.max()),
        }
    }
}

/// An interval as JSON: counts, and the histogram serialized.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireInterval {
    pub t: u64,
    pub offered: u64,
    pub codes: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    /// HDR histogram (µs), V2 + deflate, base64.
    pub hist: String,
}

/// What a generator serves at `GET /`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GeneratorReport {
    pub name: String,
    /// Offered rate, requests per second.
    pub rate: f64,
    pub targets: Vec<String>,
    /// Completed seconds, oldest first.
    pub intervals: Vec<WireInterval>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencyMs {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An interval survives the wire: counts and every recorded latency.
    #[test]
    fn wire_roundtrip() {
        let mut i = Interval::new(42);
        i.offered = 10;
        for ms in 1..=10 {
            i.record_latency(Duration::from_millis(ms));
            *i.codes.entry(200).or_default() += 1;
        }
        *i.errors.entry("timeout".into()).or_default() += 1;
        let back = Interval::from_wire(&i.to_wire()).unwrap();
        assert_eq!((back.t, back.offered, back.completed(), back.ok()), (42, 10, 11, 10));
        assert_eq!(back.hist.len(), 10);
        assert_eq!(back.latency_ms(), i.latency_ms());
    }
}
