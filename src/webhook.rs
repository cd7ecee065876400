//! Lock webhooks (contract §3): Standard Webhooks v1, delivered from the
//! durable actions topic so that neither a receiver outage nor a restart
//! loses one.
//!
//! Each endpoint has its own consumer group on the actions topic
//! (`<group_id>.webhook.<hash of the URL>`): a slow or dead endpoint lags
//! alone and holds up neither detection nor the other endpoints. An
//! action's offset is committed once its request got a 2xx, or failed for
//! good (another 4xx, or still failing at `webhook.retry_horizon_secs`: then
//! it is logged, counted and copied to the dead-letter topic). A restart
//! re-delivers whatever was not finished; receivers dedupe on
//! `webhook-id`, the action's deterministic id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sha2::Sha256;

use crate::config::{Settings, WebhookConfig};
use crate::metrics::Metrics;
use crate::service::kafka::{client_config, Logger, Role};
use crate::service::offsets::Tracker;

/// The keys of `webhook.secret`: `whsec_` + base64, several separated by
/// spaces. The error never contains the value.
pub fn parse_secrets(text: &str) -> Result<Vec<Vec<u8>>, String> {
    text.split_whitespace()
        .enumerate()
        .map(|(i, s)| {
            let b64 = s.strip_prefix("whsec_").ok_or_else(|| {
                format!("secret #{} must start with whsec_ followed by the base64 key (the value is not shown)", i + 1)
            })?;
            let key = B64
                .decode(b64)
                .map_err(|_| format!("secret #{} is not valid base64 after whsec_ (the value is not shown)", i + 1))?;
            if key.is_empty() {
                return Err(format!("secret #{} is empty", i + 1));
            }
            Ok(key)
        })
        .collect()
}

/// `webhook-signature`: `v1,` + base64(HMAC-SHA256(key, "{id}.{ts}.{body}"))
/// for each key, separated by spaces.
pub fn sign(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| {
            let mut mac = Hmac::<Sha256>::new_from_slice(k).expect("HMAC takes any key length");
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

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
fn jitter() -> f64 {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let x = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    x as f64 / (1u64 << 53) as f64
}

/// The host of a URL, for logs (never the path or credentials).
fn host_of(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or("");
    authority.rsplit('@').next().unwrap_or("").to_string()
}

fn group_of(settings: &Settings, url: &str) -> String {
    use sha2::Digest;
    let h = Sha256::digest(url.as_bytes());
    format!(
        "{}.webhook.{:02x}{:02x}{:02x}{:02x}",
        settings.config.kafka.group_id, h[0], h[1], h[2], h[3]
    )
}

/// Actions waiting per endpoint before its consumer pauses.
const MAX_PENDING: usize = 10_000;

struct Ctx {
    logger: Logger,
    trackers: Arc<Mutex<HashMap<i32, Arc<Tracker>>>>,
    topic: String,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.logger.log(level, fac, log_message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.logger.error(error, reason)
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Commit what is finished of the partitions that leave; the
            // rest is delivered again by their new owner (same webhook-id).
            let mut t = self.trackers.lock().unwrap_or_else(|e| e.into_inner());
            let mut commit = TopicPartitionList::new();
            for e in tpl.elements() {
                if let Some(tr) = t.remove(&e.partition()) {
                    if let Some(o) = tr.committable() {
                        let _ = commit.add_partition_offset(
                            &self.topic,
                            e.partition(),
                            Offset::Offset(o),
                        );
                    }
                }
            }
            if commit.count() > 0 {
                let _ = consumer.commit(&commit, CommitMode::Sync);
            }
        }
    }
}

struct Endpoint {
    index: usize,
    url: String,
    host: String,
}

struct Shared {
    cfg: WebhookConfig,
    keys: Vec<Vec<u8>>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    producer: FutureProducer,
    dead_letter_topic: String,
    stop: AtomicBool,
    log: Logger,
}

/// Running webhook delivery.
pub struct Webhooks {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Webhooks {
    /// Starts one delivery loop per `webhook.urls` entry on the current
    /// tokio runtime; `None` when no URL is configured.
    pub fn start(settings: &Settings, metrics: Arc<Metrics>) -> anyhow::Result<Option<Webhooks>> {
        let cfg = settings.config.webhook.clone();
        if cfg.urls.is_empty() {
            return Ok(None);
        }
        let keys =
            parse_secrets(&cfg.secret).map_err(|m| anyhow::anyhow!("webhook.secret: {m}"))?;
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_secs))
            .connect_timeout(Duration::from_secs(cfg.timeout_secs.min(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("credwatch/", env!("CARGO_PKG_VERSION")));
        if !cfg.ca_file.is_empty() {
            let pem = std::fs::read(&cfg.ca_file)
                .map_err(|e| anyhow::anyhow!("cannot read webhook.ca_file {}: {e}", cfg.ca_file))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                anyhow::anyhow!(
                    "webhook.ca_file {} is not a PEM certificate: {e}",
                    cfg.ca_file
                )
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the webhook HTTP client: {e}"))?;
        let k = &settings.config.kafka;
        let producer: FutureProducer = client_config(k, Role::Producer)
            .create()
            .map_err(|e| anyhow::anyhow!("cannot create the webhook dead-letter producer: {e}"))?;
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            keys,
            client,
            metrics: metrics.clone(),
            producer,
            dead_letter_topic: k.dead_letter_topic.clone(),
            stop: AtomicBool::new(false),
            log: Logger::new("webhook", None),
        });
        let mut tasks = Vec::new();
        for (index, url) in cfg.urls.iter().enumerate() {
            let ep = Endpoint {
                index,
                url: url.clone(),
                host: host_of(url),
            };
            let trackers: Arc<Mutex<HashMap<i32, Arc<Tracker>>>> = Arc::default();
            let mut c = client_config(k, Role::Consumer);
            c.set("group.id", group_of(settings, url));
            c.set("statistics.interval.ms", "0");
            // Actions are few: a long fetch wait would be pure latency on
            // brokers that answer a fetch only when the wait is over.
            c.set("fetch.wait.max.ms", "10");
            let consumer: StreamConsumer<Ctx> = c
                .create_with_context(Ctx {
                    logger: Logger::new("webhook-consumer", None),
                    trackers: trackers.clone(),
                    topic: k.actions_topic.clone(),
                })
                .map_err(|e| anyhow::anyhow!("cannot create the webhook consumer: {e}"))?;
            consumer
                .subscribe(&[k.actions_topic.as_str()])
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot subscribe to kafka.actions_topic {}: {e}",
                        k.actions_topic
                    )
                })?;
            tracing::info!(endpoint = index, host = %ep.host, group = %group_of(settings, url), "Webhook delivery started.");
            let s = shared.clone();
            let commit_every = Duration::from_millis(k.commit_interval_ms);
            tasks.push(tokio::spawn(endpoint_loop(
                ep,
                consumer,
                trackers,
                s,
                commit_every,
            )));
        }
        Ok(Some(Webhooks { shared, tasks }))
    }

    /// Stops taking new actions, lets requests under way finish (within
    /// `webhook.timeout_secs`), commits what is finished. Actions waiting
    /// for a retry are delivered after the next start.
    pub async fn shutdown(self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn endpoint_loop(
    ep: Endpoint,
    consumer: StreamConsumer<Ctx>,
    trackers: Arc<Mutex<HashMap<i32, Arc<Tracker>>>>,
    s: Arc<Shared>,
    commit_every: Duration,
) {
    let ep = Arc::new(ep);
    let sem = Arc::new(tokio::sync::Semaphore::new(s.cfg.concurrency));
    let pending = Arc::new(AtomicUsize::new(0));
    let horizon_ms = s.cfg.retry_horizon_secs as i64 * 1000;
    let mut last_commit = Instant::now();
    let mut paused = false;
    let mut inflight = tokio::task::JoinSet::new();
    while !s.stop.load(Ordering::Relaxed) {
        // Too much waiting for this endpoint: stop fetching, keep polling
        // (group membership), resume when it drains.
        let full = pending.load(Ordering::Relaxed) >= MAX_PENDING;
        if full != paused {
            if let Ok(a) = consumer.assignment() {
                let _ = if full {
                    consumer.pause(&a)
                } else {
                    consumer.resume(&a)
                };
            }
            paused = full;
        }
        while inflight.try_join_next().is_some() {}
        if last_commit.elapsed() >= commit_every {
            commit(&consumer, &trackers, CommitMode::Async);
            last_commit = Instant::now();
        }
        let msg = match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            Err(_) => continue,
            Ok(Err(e)) => {
                if s.log.allow("webhook-recv").is_some() {
                    tracing::warn!(endpoint = ep.index, error = %e, "Reading the actions topic for webhooks failed; retrying.");
                }
                continue;
            }
            Ok(Ok(m)) => m,
        };
        let (partition, offset) = (msg.partition(), msg.offset());
        let tracker = trackers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(partition)
            .or_default()
            .clone();
        let body: Arc<[u8]> = msg.payload().unwrap_or_default().into();
        let key: Arc<[u8]> = msg.key().unwrap_or_default().into();
        let created = msg.timestamp().to_millis();
        drop(msg);
        let too_old = created.is_some_and(|t| crate::time::now_millis() - t > horizon_ms);
        let id = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_string));
        let Some(id) = id.filter(|_| !too_old) else {
            if !too_old && s.log.allow("webhook-not-action").is_some() {
                tracing::warn!(
                    endpoint = ep.index,
                    partition,
                    offset,
                    "A record on the actions topic is not an action (no id); skipped."
                );
            }
            tracker.processed(offset);
            continue;
        };
        tracker.begin(offset, 1);
        tracker.processed(offset);
        pending.fetch_add(1, Ordering::Relaxed);
        let (s2, ep2, sem2, pending2) = (s.clone(), ep.clone(), sem.clone(), pending.clone());
        inflight.spawn(async move {
            let done = deliver(&s2, &ep2, &sem2, &id, &key, &body).await;
            if done {
                tracker.acked(offset);
            }
            pending2.fetch_sub(1, Ordering::Relaxed);
        });
    }
    // Requests under way get their answer (bounded by the request
    // timeout); deliveries waiting to retry stop and are resumed after a
    // restart from the committed offset.
    let grace = Duration::from_secs(s.cfg.timeout_secs + 1);
    let _ = tokio::time::timeout(grace, async {
        while inflight.join_next().await.is_some() {
            if s.stop.load(Ordering::Relaxed) && pending.load(Ordering::Relaxed) == 0 {
                break;
            }
        }
    })
    .await;
    commit(&consumer, &trackers, CommitMode::Sync);
    inflight.abort_all();
}

fn commit(
    consumer: &StreamConsumer<Ctx>,
    trackers: &Mutex<HashMap<i32, Arc<Tracker>>>,
    mode: CommitMode,
) {
    let topic = consumer.context().topic.clone();
    let t = trackers.lock().unwrap_or_else(|e| e.into_inner());
    let mut tpl = TopicPartitionList::new();
    let mut offered = Vec::new();
    for (p, tr) in t.iter() {
        if let Some(o) = tr.committable() {
            if tpl
                .add_partition_offset(&topic, *p, Offset::Offset(o))
                .is_ok()
            {
                offered.push((tr.clone(), o));
            }
        }
    }
    drop(t);
    if offered.is_empty() {
        return;
    }
    if consumer.commit(&tpl, mode).is_ok() {
        for (tr, o) in offered {
            tr.committed(o);
        }
    }
}

/// Delivers one action to one endpoint until it is delivered or given up;
/// false when stopped before either (it is delivered after a restart).
async fn deliver(
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
async fn give_up(s: &Shared, ep: &Endpoint, id: &str, key: &[u8], body: &[u8], why: &str) {
    s.metrics
        .webhook_deliveries
        .with_label_values(&["failed"])
        .inc();
    tracing::error!(endpoint = ep.index, host = %ep.host, id, reason = why, "Webhook not delivered: given up; the action is copied to the dead-letter topic.");
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: crate::service::REASON_HEADER,
            value: Some("webhook_failed"),
        })
        .insert(Header {
            key: "credwatch-reject-detail",
            value: Some(why),
        })
        .insert(Header {
            key: "credwatch-webhook-endpoint",
            value: Some(&ep.index.to_string()),
        });
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
    fn signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification's reference
        // libraries (msg_p5jXN8AQM9LWM0D4loKWxJek, MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw).
        let keys = parse_secrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign(
            &keys,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn two_secrets_give_two_signatures() {
        let keys = parse_secrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw  whsec_c2Vjb25k").unwrap();
        let sig = sign(&keys, "cw_1", 1, b"{}");
        let parts: Vec<&str> = sig.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn bad_secrets_are_refused_without_echoing_them() {
        for bad in ["sk_live_abc", "whsec_***", "whsec_"] {
            let e = parse_secrets(bad).unwrap_err();
            assert!(
                !e.contains(bad.trim_start_matches("whsec_")) || bad == "whsec_",
                "{e}"
            );
        }
    }

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

    #[test]
    fn hosts_in_logs_carry_no_credentials_or_paths() {
        assert_eq!(
            host_of("https://user:pw@hooks.example.net:8443/lock?k=1"),
            "hooks.example.net:8443"
        );
    }
}
