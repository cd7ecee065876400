//! What a receiver's answer means (contract §3), and how long to wait
//! before the next attempt.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::WebhookConfig;

/// What a receiver said, and what follows from it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered(u16),
    /// Connection error, timeout, 408, 429 or 5xx: try again (after the
    /// server's `Retry-After`, if it gave one).
    Retry(Option<u16>, Option<Duration>),
    /// Any other status: the receiver refuses this request for good.
    Permanent(u16),
}

pub fn classify(status: u16, retry_after: Option<&str>) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered(status),
        408 | 429 | 500..=599 => Outcome::Retry(
            Some(status),
            retry_after
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
        ),
        _ => Outcome::Permanent(status),
    }
}

/// The wait before attempt `n + 1` (n ≥ 1): doubling from the initial
/// back-off, capped, ±20 % jitter; a server's `Retry-After` wins when longer.
pub fn backoff(
    cfg: &WebhookConfig,
    attempt: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let base = cfg.initial_backoff_ms as f64 * 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
    let capped = base.min(cfg.max_backoff_secs as f64 * 1000.0);
    let with_jitter = capped * (0.8 + 0.4 * jitter.clamp(0.0, 1.0));
    let d = Duration::from_millis(with_jitter as u64);
    match retry_after {
        Some(r) if r > d => r.min(Duration::from_secs(cfg.max_backoff_secs)),
        _ => d,
    }
}

/// A small, fast source of jitter (no need for a CSPRNG).
pub(super) fn jitter() -> f64 {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let x = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    x as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_as_the_contract_says() {
        assert_eq!(classify(204, None), Outcome::Delivered(204));
        assert_eq!(classify(400, None), Outcome::Permanent(400));
        assert_eq!(classify(410, None), Outcome::Permanent(410));
        assert_eq!(classify(408, None), Outcome::Retry(Some(408), None));
        assert_eq!(
            classify(429, Some("7")),
            Outcome::Retry(Some(429), Some(Duration::from_secs(7)))
        );
        assert_eq!(classify(503, None), Outcome::Retry(Some(503), None));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after() {
        let cfg = WebhookConfig::default();
        assert_eq!(backoff(&cfg, 1, None, 0.5), Duration::from_millis(5000));
        assert_eq!(backoff(&cfg, 2, None, 0.5), Duration::from_millis(10_000));
        assert_eq!(backoff(&cfg, 2, None, 0.0), Duration::from_millis(8000));
        assert_eq!(backoff(&cfg, 30, None, 0.5), Duration::from_secs(3600));
        assert_eq!(
            backoff(&cfg, 1, Some(Duration::from_secs(60)), 0.5),
            Duration::from_secs(60)
        );
    }
}
