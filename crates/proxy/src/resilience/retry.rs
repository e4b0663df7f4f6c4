//! Retry policy of an HTTP route (a VirtualService's `retries`, Envoy's `retry_policy`): how
//! many retries, on which conditions (`retryOn`: Envoy's condition names and HTTP status
//! codes), the per-try timeout, and the jittered exponential back-off between tries. When a
//! route sets no `retries`, Istio's default applies: 2 retries on
//! `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes` with 503
//! retriable, on other hosts. `attempts: 0` disables retries.

use ferry_model::istio::virtual_service::HttpRetry;
use std::time::Duration;

/// A retry condition (Envoy's `x-envoy-retry-on` / `x-envoy-retry-grpc-on` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Condition {
    /// `5xx`: any 5xx, or no response at all (includes connect failures and resets).
    FiveXx = 1,
    /// `gateway-error`: 502, 503, 504, or no response at all.
    GatewayError = 1 << 1,
    /// `reset`: the upstream did not respond (disconnect, reset, timeout).
    Reset = 1 << 2,
    /// `connect-failure`: the connection could not be made.
    ConnectFailure = 1 << 3,
    /// `retriable-4xx`: 409.
    Retriable4xx = 1 << 4,
    /// `refused-stream`: the upstream refused the HTTP/2 stream.
    RefusedStream = 1 << 5,
    /// `retriable-status-codes`: the configured codes.
    RetriableStatusCodes = 1 << 6,
    /// gRPC `cancelled` (1).
    Cancelled = 1 << 7,
    /// gRPC `deadline-exceeded` (4).
    DeadlineExceeded = 1 << 8,
    /// gRPC `resource-exhausted` (8).
    ResourceExhausted = 1 << 9,
    /// gRPC `internal` (13).
    Internal = 1 << 10,
    /// gRPC `unavailable` (14).
    Unavailable = 1 << 11,
}

impl Condition {
    /// The condition named `name`, if Ferry knows it.
    pub fn named(name: &str) -> Option<Condition> {
        Some(match name {
            "5xx" => Condition::FiveXx,
            "gateway-error" => Condition::GatewayError,
            "reset" | "reset-before-request" => Condition::Reset,
            "connect-failure" => Condition::ConnectFailure,
            "retriable-4xx" => Condition::Retriable4xx,
            "refused-stream" => Condition::RefusedStream,
            "retriable-status-codes" => Condition::RetriableStatusCodes,
            "cancelled" => Condition::Cancelled,
            "deadline-exceeded" => Condition::DeadlineExceeded,
            "resource-exhausted" => Condition::ResourceExhausted,
            "internal" => Condition::Internal,
            "unavailable" => Condition::Unavailable,
            _ => return None,
        })
    }
}

/// How one try ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryOutcome {
    /// No connection could be made (refused, unreachable, connect timeout).
    ConnectFailure,
    /// The connection or stream was reset before a response.
    Reset,
    /// The upstream refused the stream (HTTP/2 `REFUSED_STREAM`).
    RefusedStream,
    /// The per-try timeout fired before response headers.
    Timeout,
    /// Response headers arrived.
    Response {
        /// HTTP status.
        status: u16,
        /// `grpc-status` of a trailers-only gRPC response.
        grpc_status: Option<u32>,
    },
}

/// Istio's default back-off base (Envoy's 25 ms).
const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);

/// A compiled retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub retries: u32,
    /// Timeout of each try (the route timeout when absent).
    pub per_try_timeout: Option<Duration>,
    conditions: u16,
    /// Status codes for `retriable-status-codes`.
    pub codes: Vec<u16>,
    /// Base back-off interval.
    pub backoff: Duration,
    /// Prefer endpoints not tried yet.
    pub other_hosts: bool,
}

impl RetryPolicy {
    /// Istio's default policy.
    pub fn istio_default(consistent_hash: bool) -> RetryPolicy {
        RetryPolicy {
            retries: 2,
            per_try_timeout: None,
            conditions: [
                Condition::ConnectFailure,
                Condition::RefusedStream,
                Condition::Unavailable,
                Condition::Cancelled,
                Condition::RetriableStatusCodes,
            ]
            .iter()
            .fold(0, |acc, c| acc | *c as u16),
            codes: vec![503],
            backoff: DEFAULT_BACKOFF,
            // With consistent hashing Istio keeps retries on the same endpoint.
            other_hosts: !consistent_hash,
        }
    }

    /// The policy of a route's `retries` (`None`: Istio's default); `None` when retries are
    /// off (`attempts: 0`).
    pub fn from_istio(retries: Option<&HttpRetry>, consistent_hash: bool) -> Option<RetryPolicy> {
        let mut p = RetryPolicy::istio_default(consistent_hash);
        let Some(r) = retries else {
            return Some(p);
        };
        let attempts = r.attempts.unwrap_or(0);
        if attempts <= 0 {
            return None;
        }
        p.retries = u32::try_from(attempts).unwrap_or(0);
        if let Some(on) = r.retry_on.as_deref().filter(|s| !s.trim().is_empty()) {
            p.conditions = 0;
            p.codes.clear();
            for part in on.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match part.parse::<u16>() {
                    Ok(code) if (100..600).contains(&code) => {
                        p.codes.push(code);
                        p.conditions |= Condition::RetriableStatusCodes as u16;
                    }
                    _ => {
                        if let Some(c) = Condition::named(part) {
                            p.conditions |= c as u16;
                        }
                    }
                }
            }
        }
        p.per_try_timeout = r.per_try_timeout.as_ref().map(|d| d.get());
        if let Some(b) = &r.backoff {
            p.backoff = b.get();
        }
        if let Some(ignore) = r.retry_ignore_previous_hosts {
            p.other_hosts = ignore;
        }
        Some(p)
    }

    /// Whether the policy has condition `c`.
    pub fn has(&self, c: Condition) -> bool {
        self.conditions & c as u16 != 0
    }

    fn status_retriable(&self, status: u16) -> bool {
        (self.has(Condition::FiveXx) && status >= 500)
            || (self.has(Condition::GatewayError) && (502..=504).contains(&status))
            || (self.has(Condition::Retriable4xx) && status == 409)
            || (self.has(Condition::RetriableStatusCodes) && self.codes.contains(&status))
    }

    /// Whether a try that ended with `outcome` is retried (attempts left permitting).
    pub fn retriable(&self, outcome: TryOutcome) -> bool {
        let no_response = self.has(Condition::Reset)
            || self.has(Condition::FiveXx)
            || self.has(Condition::GatewayError);
        match outcome {
            TryOutcome::ConnectFailure => no_response || self.has(Condition::ConnectFailure),
            TryOutcome::Reset => no_response,
            TryOutcome::RefusedStream => no_response || self.has(Condition::RefusedStream),
            TryOutcome::Timeout => no_response || self.status_retriable(504),
            TryOutcome::Response {
                status,
                grpc_status,
            } => {
                self.status_retriable(status)
                    || match grpc_status {
                        Some(1) => self.has(Condition::Cancelled),
                        Some(4) => self.has(Condition::DeadlineExceeded),
                        Some(8) => self.has(Condition::ResourceExhausted),
                        Some(13) => self.has(Condition::Internal),
                        Some(14) => self.has(Condition::Unavailable),
                        _ => false,
                    }
            }
        }
    }

    /// The pause before retry number `n` (1-based): uniformly random in
    /// `[0, (2^n - 1) * base]`, capped at ten times the base (Envoy's back-off).
    pub fn backoff(&self, n: u32) -> Duration {
        let base = self.backoff.as_millis().max(1) as u64;
        let factor = (1u64 << n.min(20)) - 1;
        let upper = base.saturating_mul(factor).min(base.saturating_mul(10));
        Duration::from_millis(fastrand::u64(0..=upper))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::Duration as D;

    fn resp(status: u16) -> TryOutcome {
        TryOutcome::Response {
            status,
            grpc_status: None,
        }
    }

    fn grpc(code: u32) -> TryOutcome {
        TryOutcome::Response {
            status: 200,
            grpc_status: Some(code),
        }
    }

    fn policy(retry_on: &str) -> RetryPolicy {
        RetryPolicy::from_istio(
            Some(&HttpRetry {
                attempts: Some(3),
                retry_on: Some(retry_on.into()),
                ..Default::default()
            }),
            false,
        )
        .expect("retries on")
    }

    #[test]
    fn istio_default_policy() {
        let p = RetryPolicy::from_istio(None, false).expect("default");
        assert_eq!(p.retries, 2);
        assert!(p.other_hosts);
        let cases = [
            (TryOutcome::ConnectFailure, true),
            (TryOutcome::RefusedStream, true),
            (resp(503), true),
            (resp(502), false),
            (resp(500), false),
            (TryOutcome::Reset, false),
            (TryOutcome::Timeout, false),
            (grpc(14), true),
            (grpc(1), true),
            (grpc(13), false),
        ];
        for (outcome, want) in cases {
            assert_eq!(p.retriable(outcome), want, "{outcome:?}");
        }
        assert!(
            !RetryPolicy::from_istio(None, true)
                .expect("default")
                .other_hosts
        );
    }

    #[test]
    fn attempts_zero_disables_and_unset_retry_on_keeps_defaults() {
        let off = HttpRetry {
            attempts: Some(0),
            ..Default::default()
        };
        assert_eq!(RetryPolicy::from_istio(Some(&off), false), None);
        let three = HttpRetry {
            attempts: Some(3),
            per_try_timeout: D::parse("2s").ok(),
            backoff: D::parse("10ms").ok(),
            ..Default::default()
        };
        let p = RetryPolicy::from_istio(Some(&three), false).expect("on");
        assert_eq!(p.retries, 3);
        assert_eq!(p.per_try_timeout, Some(Duration::from_secs(2)));
        assert_eq!(p.backoff, Duration::from_millis(10));
        assert!(p.retriable(resp(503)) && p.retriable(TryOutcome::ConnectFailure));
    }

    #[test]
    fn envoy_conditions_table() {
        let cases: &[(&str, TryOutcome, bool)] = &[
            ("5xx", resp(500), true),
            ("5xx", resp(404), false),
            ("5xx", TryOutcome::Reset, true),
            ("5xx", TryOutcome::ConnectFailure, true),
            ("5xx", TryOutcome::Timeout, true),
            ("gateway-error", resp(502), true),
            ("gateway-error", resp(504), true),
            ("gateway-error", resp(500), false),
            ("gateway-error", TryOutcome::ConnectFailure, true),
            ("reset", TryOutcome::Reset, true),
            ("reset", resp(503), false),
            ("connect-failure", TryOutcome::ConnectFailure, true),
            ("connect-failure", TryOutcome::Reset, false),
            ("connect-failure", resp(503), false),
            ("retriable-4xx", resp(409), true),
            ("retriable-4xx", resp(404), false),
            ("refused-stream", TryOutcome::RefusedStream, true),
            ("503", resp(503), true),
            ("503,504", resp(504), true),
            ("503", resp(502), false),
            ("retriable-status-codes", resp(503), false),
            ("unavailable", grpc(14), true),
            ("internal", grpc(13), true),
            ("cancelled,deadline-exceeded", grpc(4), true),
            ("resource-exhausted", grpc(8), true),
            ("resource-exhausted", grpc(14), false),
            ("bogus", resp(503), false),
        ];
        for (on, outcome, want) in cases {
            assert_eq!(policy(on).retriable(*outcome), *want, "{on} {outcome:?}");
        }
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let p = policy("5xx");
        for n in 1..8 {
            let limit = (25u64 * ((1 << n) - 1)).min(250);
            for _ in 0..200 {
                assert!(p.backoff(n) <= Duration::from_millis(limit));
            }
        }
        let mean = (0..2_000).map(|_| p.backoff(1).as_millis()).sum::<u128>() / 2_000;
        assert!((9..=16).contains(&mean), "{mean}");
    }
}
