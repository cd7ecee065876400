//! One action to one endpoint: signed requests, retried with back-off
//! until delivered or given up (then counted, logged and copied to the
//! dead-letter topic).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::producer::FutureRecord;

use super::retry::{backoff, classify, jitter, Outcome};
use super::signing::sign;
use super::{Endpoint, Shared};
use crate::sink::kafka::{dead_letter_headers, owned_headers};

/// The host of a URL, for logs (never the path or credentials).
pub(super) fn host_of(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or("");
    authority.rsplit('@').next().unwrap_or("").to_string()
}

/// Delivers one action to one endpoint until it is delivered or given up;
/// false when stopped before either (it is delivered after a restart).
pub(super) async fn deliver(
    s: &Shared,
    ep: &Endpoint,
    sem: &tokio::sync::Semaphore,
    id: &str,
    key: &[u8],
    body: &Arc<[u8]>,
) -> bool {
    let first = Instant::now();
    let horizon = Duration::from_secs(s.cfg.retry_horizon_secs);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let outcome = {
            let Ok(_permit) = sem.acquire().await else {
                return false;
            };
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let started = Instant::now();
            let res = s
                .client
                .post(&ep.url)
                .header("content-type", "application/json")
                .header("webhook-id", id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sign(&s.keys, id, ts, body))
                .body(body.to_vec())
                .send()
                .await;
            s.metrics
                .webhook_duration
                .observe(started.elapsed().as_secs_f64());
            match res {
                Ok(r) => {
                    let retry_after = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    classify(r.status().as_u16(), retry_after.as_deref())
                }
                // Connection refused, reset, TLS, timeout: the error's kind
                // only (its text may carry the URL).
                Err(e) => {
                    let kind = if e.is_timeout() {
                        "timeout"
                    } else if e.is_connect() {
                        "connect"
                    } else {
                        "request"
                    };
                    if s.log
                        .allow(&format!("webhook-{}-{kind}", ep.index))
                        .is_some()
                    {
                        tracing::warn!(endpoint = ep.index, host = %ep.host, error = kind, "Webhook request failed; retrying with back-off (logged at most every 30 s per endpoint and kind).");
                    }
                    Outcome::Retry(None, None)
                }
            }
        };
        match outcome {
            Outcome::Delivered(status) => {
                s.metrics
                    .webhook_deliveries
                    .with_label_values(&["delivered"])
                    .inc();
                tracing::info!(endpoint = ep.index, host = %ep.host, id, status, attempt, "Webhook delivered.");
                return true;
            }
            Outcome::Permanent(status) => {
                give_up(s, ep, id, key, body, &format!("status {status}")).await;
                return true;
            }
            Outcome::Retry(status, retry_after) => {
                let wait = backoff(&s.cfg, attempt, retry_after, jitter());
                if first.elapsed() + wait > horizon {
                    give_up(s, ep, id, key, body, "retry horizon reached").await;
                    return true;
                }
                s.metrics
                    .webhook_deliveries
                    .with_label_values(&["retried"])
                    .inc();
                if let Some(status) = status {
                    if s.log
                        .allow(&format!("webhook-{}-{status}", ep.index))
                        .is_some()
                    {
                        tracing::warn!(endpoint = ep.index, host = %ep.host, status, retry_in_ms = wait.as_millis() as u64, "Webhook receiver asked to retry (logged at most every 30 s per endpoint and status).");
                    }
                }
                let step = Duration::from_millis(100);
                let until = Instant::now() + wait;
                while Instant::now() < until {
                    if s.stop.load(Ordering::Relaxed) {
                        return false;
                    }
                    tokio::time::sleep(step.min(until - Instant::now())).await;
                }
            }
        }
    }
}

/// A delivery that failed for good: logged, counted, copied to the
/// dead-letter topic with why.
pub(super) async fn give_up(
    s: &Shared,
    ep: &Endpoint,
    id: &str,
    key: &[u8],
    body: &[u8],
    why: &str,
) {
    s.metrics
        .webhook_deliveries
        .with_label_values(&["failed"])
        .inc();
    tracing::error!(endpoint = ep.index, host = %ep.host, id, reason = why, "Webhook not delivered: given up; the action is copied to the dead-letter topic.");
    let headers = owned_headers(&dead_letter_headers(
        "webhook_failed",
        why,
        &[("credwatch-webhook-endpoint", ep.index.to_string())],
    ));
    let record = FutureRecord::to(&s.dead_letter_topic)
        .key(key)
        .payload(body)
        .headers(headers);
    if let Err((e, _)) = s.producer.send(record, Duration::from_secs(30)).await {
        tracing::error!(error = %e, "Could not copy a failed webhook to the dead-letter topic.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_in_logs_carry_no_credentials_or_paths() {
        assert_eq!(
            host_of("https://user:pw@hooks.example.net:8443/lock?k=1"),
            "hooks.example.net:8443"
        );
    }
}
