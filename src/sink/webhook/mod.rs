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

mod config;
mod delivery;
pub mod retry;
pub mod signing;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use sha2::Sha256;

pub use config::WebhookConfig;
pub use signing::{parse_secrets, sign};

use crate::kafka::commit::commit_finished;
use crate::kafka::{client_config, KafkaConfig, Logger, Role, Tracker};
use crate::metrics::Metrics;
use delivery::{deliver, give_up, host_of};

/// Webhook delivery cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook.secret: {0}")]
    Secret(String),
    #[error("cannot read webhook.ca_file {path}: {source}")]
    CaFile {
        path: String,
        source: std::io::Error,
    },
    #[error("webhook.ca_file {path} is not a PEM certificate: {source}")]
    CaCert {
        path: String,
        source: reqwest::Error,
    },
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("cannot create the webhook {what}: {source}")]
    Kafka {
        what: &'static str,
        source: KafkaError,
    },
    #[error("cannot subscribe to kafka.actions_topic {topic}: {source}")]
    Subscribe { topic: String, source: KafkaError },
}

fn group_of(k: &KafkaConfig, url: &str) -> String {
    use sha2::Digest;
    let h = Sha256::digest(url.as_bytes());
    format!(
        "{}.webhook.{:02x}{:02x}{:02x}{:02x}",
        k.group_id, h[0], h[1], h[2], h[3]
    )
}

/// Actions waiting per endpoint before its consumer pauses.
const MAX_PENDING: usize = 10_000;

struct Ctx {
    logger: Logger,
    trackers: Arc<Mutex<HashMap<i32, Arc<Tracker>>>>,
    topic: String,
    group: String,
    /// From the last statistics: the consumer's positions summed over its
    /// partitions of the actions topic, and the actions past them.
    progress: Mutex<Option<(i64, i64)>>,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.logger.log(level, fac, log_message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.logger.error(error, reason)
    }
    fn stats(&self, stats: rdkafka::statistics::Statistics) {
        let Some(t) = stats.topics.get(&self.topic) else {
            return;
        };
        let (mut at, mut unread) = (0, 0);
        for (&partition, p) in &t.partitions {
            // Only the partitions it reads (the -1 entry is the topic's
            // unassigned-messages bucket).
            if partition < 0 || p.app_offset < 0 || p.hi_offset < 0 {
                continue;
            }
            at += p.app_offset;
            unread += (p.hi_offset - p.app_offset).max(0);
        }
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = Some((at, unread));
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Commit what is finished of the partitions that leave; the
            // rest is delivered again by their new owner (same webhook-id).
            let leaving: Vec<(i32, Arc<Tracker>)> = {
                let mut t = self.trackers.lock().unwrap_or_else(|e| e.into_inner());
                tpl.elements()
                    .iter()
                    .filter_map(|e| t.remove(&e.partition()).map(|tr| (e.partition(), tr)))
                    .collect()
            };
            let done = leaving
                .iter()
                .map(|(p, tr)| (self.topic.as_str(), *p, &**tr));
            let _ = commit_finished(consumer, done, CommitMode::Sync);
            tracing::info!(
                group = %self.group,
                partitions = %partition_list(tpl),
                "Webhook delivery gave actions-topic partitions up (a rebalance); what it finished is committed."
            );
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => tracing::info!(
                group = %self.group,
                partitions = %partition_list(tpl),
                "Webhook delivery took actions-topic partitions (a rebalance)."
            ),
            Rebalance::Error(e) => tracing::warn!(
                group = %self.group,
                error = %e,
                "Webhook delivery's rebalance failed; the consumer rejoins its group."
            ),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// `topic[p],topic[q]` of a rebalance's list.
fn partition_list(tpl: &rdkafka::TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}[{}]", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
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
    pub fn start(
        cfg: &WebhookConfig,
        k: &KafkaConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Webhooks>, WebhookError> {
        let cfg = cfg.clone();
        if cfg.urls.is_empty() {
            return Ok(None);
        }
        let keys = parse_secrets(&cfg.secret).map_err(WebhookError::Secret)?;
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_secs))
            .connect_timeout(Duration::from_secs(cfg.timeout_secs.min(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("credwatch/", env!("CARGO_PKG_VERSION")));
        if !cfg.ca_file.is_empty() {
            let pem = std::fs::read(&cfg.ca_file).map_err(|source| WebhookError::CaFile {
                path: cfg.ca_file.clone(),
                source,
            })?;
            let cert =
                reqwest::Certificate::from_pem(&pem).map_err(|source| WebhookError::CaCert {
                    path: cfg.ca_file.clone(),
                    source,
                })?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder.build().map_err(WebhookError::Client)?;
        let producer: FutureProducer =
            client_config(k, Role::Producer)
                .create()
                .map_err(|e| WebhookError::Kafka {
                    what: "dead-letter producer",
                    source: crate::kafka::redact_error(e),
                })?;
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
            let group = group_of(k, url);
            c.set("group.id", &group);
            // Statistics once a second: the endpoint's lag (positions and
            // partition ends, with no request to the broker).
            c.set("statistics.interval.ms", "1000");
            // Actions are few: a long fetch wait is latency on brokers
            // that answer a fetch only when the wait is over (tansu). Not
            // shorter: tansu 0.6 on S3 served a consumer fetching ~90
            // times a second (10 ms) the same stale end of the partition
            // for good, so webhook delivery stopped after its first action
            // (the fault tests' failures; at 100 and 500 ms it never did).
            c.set("fetch.wait.max.ms", "100");
            let consumer: StreamConsumer<Ctx> = c
                .create_with_context(Ctx {
                    logger: Logger::new("webhook-consumer", None),
                    trackers: trackers.clone(),
                    topic: k.actions_topic.clone(),
                    group: group.clone(),
                    progress: Mutex::new(None),
                })
                .map_err(|e| WebhookError::Kafka {
                    what: "consumer",
                    source: crate::kafka::redact_error(e),
                })?;
            consumer
                .subscribe(&[k.actions_topic.as_str()])
                .map_err(|source| WebhookError::Subscribe {
                    topic: k.actions_topic.clone(),
                    source,
                })?;
            tracing::info!(endpoint = index, host = %ep.host, %group, "Webhook delivery started.");
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
    let mut stall = Stall::default();
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
            let waiting = pending.load(Ordering::Relaxed);
            stall.observe(&consumer, &ep, &s, waiting, paused);
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
        let Some(id) = id else {
            if s.log.allow("webhook-not-action").is_some() {
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
            let done = if too_old {
                // The endpoint read it too late to try (it was behind by
                // more than the retry horizon): not lost, but given up at
                // once, counted, logged and dead-lettered like any other.
                give_up(
                    &s2,
                    &ep2,
                    &id,
                    &key,
                    &body,
                    "older than webhook.retry_horizon_secs when the endpoint first read it",
                )
                .await;
                true
            } else {
                deliver(&s2, &ep2, &sem2, &id, &key, &body).await
            };
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
    let topic = consumer.context().topic.as_str();
    let parts: Vec<(i32, Arc<Tracker>)> = trackers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(p, tr)| (*p, tr.clone()))
        .collect();
    let done = parts.iter().map(|(p, tr)| (topic, *p, &**tr));
    let _ = commit_finished(consumer, done, mode);
}

/// How far an endpoint is behind, and whether its consumer has stopped
/// reading while the topic has more (a broker that answers its fetches with
/// nothing: seen on tansu 0.6 on S3 with a 10 ms fetch wait).
#[derive(Default)]
struct Stall {
    /// The consumer's positions summed, and since when they have not moved
    /// while there was more to read and nothing to wait for.
    last: Option<(i64, Instant)>,
    warned: bool,
}

/// How long a consumer may stand still with actions to read before it is
/// reported.
const STALL: Duration = Duration::from_secs(60);

impl Stall {
    fn observe(
        &mut self,
        consumer: &StreamConsumer<Ctx>,
        ep: &Endpoint,
        s: &Shared,
        waiting: usize,
        paused: bool,
    ) {
        let Some((position, unread)) = unread(consumer) else {
            return;
        };
        let behind = unread + waiting as i64;
        s.metrics
            .webhook_lag
            .with_label_values(&[&ep.index.to_string()])
            .set(behind);
        // Standing still is normal when there is nothing to read, or when
        // it waits for the endpoint (paused, or requests under way).
        if unread == 0 || paused || waiting > 0 {
            self.last = None;
            self.warned = false;
            return;
        }
        match self.last {
            Some((p, since)) if p == position => {
                if since.elapsed() >= STALL && !self.warned {
                    self.warned = true;
                    tracing::warn!(
                        endpoint = ep.index,
                        host = %ep.host,
                        unread,
                        secs = since.elapsed().as_secs(),
                        "Webhook delivery is not reading the actions topic: it has actions past this endpoint's position, which has not moved. Check the broker's fetch answers and the endpoint's consumer group (credwatch_webhook_lag_actions)."
                    );
                }
            }
            _ => {
                self.last = Some((position, Instant::now()));
                self.warned = false;
            }
        }
    }
}

/// The consumer's positions summed over its assignment, and how many
/// actions are on the topic past them, from its last statistics.
fn unread(consumer: &StreamConsumer<Ctx>) -> Option<(i64, i64)> {
    *consumer
        .context()
        .progress
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}
