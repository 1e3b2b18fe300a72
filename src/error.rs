//! Every error a request can meet — protocol, routing, input, Redis, deadline — and the one
//! place where each becomes an HTTP status with a `{"error": "..."}` JSON body.

use crate::gate::RETRY_AFTER;
use crate::store::{StoreError, WriteEffect};
use http1::Response;
use serde_json::json;
use std::fmt;

/// A JSON response from a `serde_json` value (final newline included).
pub fn json(status: u16, value: &serde_json::Value) -> Response {
    // Serializing a `Value` into memory cannot fail.
    Response::json(status, serde_json::to_vec(value).unwrap_or_default())
}

/// An error on the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The HTTP layer's own: the request cannot be framed or is over a limit, the connection
    /// cap is reached, a handler panicked.
    Http(http1::Error),
    // Routing.
    NotFound,
    MethodNotAllowed {
        allow: &'static str,
    },
    // Input.
    InvalidBody(String),
    // Data and Redis.
    NoValue,
    NotSynced,
    /// The budget ran out while Redis was being asked.
    DeadlineExceeded(WriteEffect),
    /// The budget was spent before the request reached Redis.
    BudgetSpent,
    /// Refused at once: the queue for Redis would outlast the request's budget.
    Shed {
        expected_wait_ms: u64,
    },
    Unavailable {
        reason: String,
        outcome: WriteEffect,
    },
    /// Redis is up but what it holds or answers cannot be served (not a number, too large, a
    /// refused command): a retry will not help, so no `Retry-After`.
    BadData {
        reason: String,
        outcome: WriteEffect,
    },
    ShuttingDown,
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::Http(e) => e.status(),
            ApiError::InvalidBody(_) => 400,
            ApiError::NotFound | ApiError::NoValue => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::BadData { .. } => 500,
            ApiError::NotSynced
            | ApiError::BudgetSpent
            | ApiError::Shed { .. }
            | ApiError::Unavailable { .. }
            | ApiError::ShuttingDown => 503,
            ApiError::DeadlineExceeded { .. } => 504,
        }
    }

    /// Errors after which the byte stream cannot be trusted, or the server wants the client gone.
    pub fn closes_connection(&self) -> bool {
        match self {
            ApiError::Http(e) => e.closes_connection(),
            ApiError::ShuttingDown => true,
            _ => false,
        }
    }

    /// Counts as a deadline expiration in the metrics.
    pub fn is_deadline(&self) -> bool {
        matches!(self, ApiError::DeadlineExceeded { .. } | ApiError::BudgetSpent)
    }

    /// The response: status, `{"error": "..."}`, and the headers the status calls for.
    pub fn to_response(&self) -> Response {
        let mut resp = json(self.status(), &json!({ "error": self.to_string() }));
        match self {
            ApiError::MethodNotAllowed { allow } => resp = resp.header("Allow", *allow),
            ApiError::Http(http1::Error::Overloaded)
            | ApiError::NotSynced
            | ApiError::BudgetSpent
            | ApiError::Shed { .. }
            | ApiError::Unavailable { .. }
            | ApiError::ShuttingDown => resp = resp.header("Retry-After", RETRY_AFTER.as_secs().to_string()),
            _ => {}
        }
        if self.closes_connection() {
            resp = resp.closing();
        }
        resp
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Http(e) => e.fmt(f),
            ApiError::NotFound => f.write_str("not found"),
            ApiError::MethodNotAllowed { allow } => write!(f, "method not allowed; allowed: {allow}"),
            ApiError::InvalidBody(why) => f.write_str(why),
            ApiError::NoValue => f.write_str("no value has been set"),
            ApiError::NotSynced => {
                f.write_str("the local replica has not finished its first sync; no value can be served yet")
            }
            ApiError::DeadlineExceeded(outcome) => write!(f, "deadline exceeded{}", outcome_note(*outcome)),
            ApiError::BudgetSpent => f.write_str("deadline exceeded before the request could be processed; retry"),
            ApiError::Shed { expected_wait_ms } => write!(
                f,
                "overloaded: the requests queued for redis would take ~{expected_wait_ms} ms, more than this \
                 request's deadline allows; retry later"
            ),
            ApiError::Unavailable { reason, outcome } => {
                write!(f, "redis unavailable: {reason}{}", outcome_note(*outcome))
            }
            ApiError::BadData { reason, outcome } => write!(f, "{reason}{}", outcome_note(*outcome)),
            ApiError::ShuttingDown => f.write_str("server is shutting down"),
        }
    }
}

impl From<http1::Error> for ApiError {
    fn from(e: http1::Error) -> Self {
        ApiError::Http(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Timeout(outcome) => ApiError::DeadlineExceeded(outcome),
            StoreError::BudgetSpent => ApiError::BudgetSpent,
            StoreError::Shed { expected_wait } => {
                ApiError::Shed { expected_wait_ms: u64::try_from(expected_wait.as_millis()).unwrap_or(u64::MAX) }
            }
            StoreError::NotSynced => ApiError::NotSynced,
            StoreError::Unavailable { reason, outcome }
            | StoreError::NotServing { reason, outcome }
            | StoreError::TlsRefused { reason, outcome } => ApiError::Unavailable { reason, outcome },
            StoreError::BadData { reason, outcome } => ApiError::BadData { reason, outcome },
            StoreError::CircuitOpen { retry_in } => ApiError::Unavailable {
                reason: format!(
                    "the master failed repeatedly; writes are refused for {:.1}s more",
                    retry_in.as_secs_f64()
                ),
                outcome: WriteEffect::NotWritten,
            },
        }
    }
}

/// What a failed request tells the client about its write.
fn outcome_note(outcome: WriteEffect) -> &'static str {
    match outcome {
        WriteEffect::Read => "",
        WriteEffect::NotWritten => "; the value was not written",
        WriteEffect::Unknown => {
            "; the write may or may not have been applied (setting the value is idempotent, a retry is safe)"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A request the pool's queue could not serve in time is a 503 that tells the client when
    /// to come back, and keeps its connection (the client did nothing wrong).
    #[test]
    fn shed_is_a_polite_503() {
        let resp = ApiError::from(StoreError::Shed { expected_wait: Duration::from_millis(512) }).to_response();
        assert_eq!(resp.status, 503);
        assert!(resp.headers.iter().any(|(k, v)| *k == "Retry-After" && v == "1"), "{:?}", resp.headers);
        assert!(!resp.close);
        let body = String::from_utf8_lossy(&resp.body);
        assert!(body.contains("overloaded") && body.contains("512 ms"), "{body}");
    }

    /// Bad data in Redis is a 500 that names the problem and invites no retry.
    #[test]
    fn bad_data_is_500_without_retry_after() {
        let e = StoreError::BadData { reason: "the stored value is not a number".into(), outcome: WriteEffect::Read };
        let resp = ApiError::from(e).to_response();
        assert_eq!(resp.status, 500);
        assert!(!resp.headers.iter().any(|(k, _)| *k == "Retry-After"), "{:?}", resp.headers);
        assert!(!resp.close);
        assert!(String::from_utf8_lossy(&resp.body).contains("not a number"));
    }
}
