//! The Kafka connection shared by the source (the input consumer) and the
//! sinks (the producer, the webhooks' consumers of the actions topic): the
//! `[kafka]` section, librdkafka's configuration per client, the logging of
//! its errors once per change of state rather than once per message, and
//! the commit bookkeeping of at-least-once consumption.

pub mod commit;
mod config;

pub use commit::Tracker;
pub use config::KafkaConfig;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;

use crate::metrics::Metrics;

/// Which client a configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The group member that reads the input topics.
    Consumer,
    /// Reads a partition's recent past to rebuild state (no group membership).
    Restorer,
    /// Writes actions and dead letters.
    Producer,
}

/// The librdkafka configuration of one client: our defaults first, then
/// every `[kafka.properties]` entry, which wins.
pub fn client_config(k: &KafkaConfig, role: Role) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers);
    c.set("client.id", "credwatch");
    match role {
        Role::Consumer => {
            c.set("group.id", &k.group_id)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest")
                .set("enable.partition.eof", "false")
                // Incremental rebalancing: a partition that stays with this
                // instance keeps its state; only moved partitions restore.
                .set("partition.assignment.strategy", "cooperative-sticky")
                .set("statistics.interval.ms", "5000")
                // When judging falls behind fetching (a backlog, a catch-up
                // after a restart), librdkafka's queue fills and it waits
                // this long before fetching again: at its default of a
                // second the judges sat idle for most of that second once
                // they had emptied the queue (the kafka bench's run spent
                // 0.9 of 1.4 s so).
                .set("fetch.queue.backoff.ms", "10")
                // Each partition is read from its own queue (the consumer
                // thread skips a busy judge's partitions), and librdkafka
                // then bounds its prefetch per partition, not per consumer:
                // at its default of 64 MiB an instance with twelve
                // backlogged partitions could hold 768 MiB of unread
                // events. 16 MiB is about 65,000 events of the contract's
                // size, a fifth of a second of one judge's work, refetched
                // as it drains.
                .set("queued.max.messages.kbytes", "16384");
        }
        Role::Restorer => {
            c.set("group.id", &k.group_id)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("enable.partition.eof", "true")
                // As for the consumer: at librdkafka's default of a second
                // the judges sat idle for most of the restore once they had
                // emptied its queue (the kafka bench's restart restored
                // 3.6 M events in 13.6-14.5 s; 6.7-7.3 s with 10 ms).
                .set("fetch.queue.backoff.ms", "10");
        }
        Role::Producer => {
            c.set("enable.idempotence", "true")
                .set("acks", "all")
                // Retry for as long as it takes: an action is never dropped
                // because the broker was away (0 = no timeout).
                .set("message.timeout.ms", "0")
                .set("linger.ms", "2");
        }
    }
    for (key, value) in &k.properties {
        if applies(key, role) {
            c.set(key, value);
        }
    }
    c
}

/// Properties that belong to one kind of client only are not passed to
/// the other (librdkafka would warn about each).
fn applies(key: &str, role: Role) -> bool {
    const CONSUMER_ONLY: &[&str] = &[
        "group.id",
        "group.instance.id",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "max.poll.interval.ms",
        "auto.offset.reset",
        "partition.assignment.strategy",
        "fetch.min.bytes",
        "fetch.max.bytes",
        "fetch.wait.max.ms",
        "fetch.queue.backoff.ms",
        "queued.min.messages",
        "queued.max.messages.kbytes",
        "max.partition.fetch.bytes",
        "isolation.level",
        "group.protocol",
    ];
    const PRODUCER_ONLY: &[&str] = &[
        "acks",
        "linger.ms",
        "batch.size",
        "batch.num.messages",
        "compression.type",
        "compression.codec",
        "message.timeout.ms",
        "enable.idempotence",
        "queue.buffering.max.messages",
        "queue.buffering.max.kbytes",
        "request.timeout.ms",
    ];
    match role {
        Role::Producer => !CONSUMER_ONLY.contains(&key),
        Role::Consumer | Role::Restorer => {
            !(PRODUCER_ONLY.contains(&key) || role == Role::Restorer && key == "group.instance.id")
        }
    }
}

/// Logs librdkafka's messages and errors through `tracing`, at most once
/// per `EVERY` for each kind, and tracks whether the cluster is reachable.
pub struct Logger {
    pub name: &'static str,
    last: Mutex<HashMap<String, (Instant, u64)>>,
    down: AtomicBool,
    metrics: Option<std::sync::Arc<Metrics>>,
}

const EVERY: Duration = Duration::from_secs(30);

impl Logger {
    pub fn new(name: &'static str, metrics: Option<std::sync::Arc<Metrics>>) -> Logger {
        if let Some(m) = &metrics {
            m.broker_up.set(1);
        }
        Logger {
            name,
            last: Mutex::new(HashMap::new()),
            down: AtomicBool::new(false),
            metrics,
        }
    }

    /// True if a line of this kind may be logged now; returns how many were
    /// suppressed since the last one.
    pub fn allow(&self, kind: &str) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match last.get_mut(kind) {
            Some((at, suppressed)) if now.duration_since(*at) < EVERY => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                let n = *suppressed;
                *at = now;
                *suppressed = 0;
                Some(n)
            }
            None => {
                if last.len() > 256 {
                    last.clear();
                }
                last.insert(kind.to_string(), (now, 0));
                Some(0)
            }
        }
    }

    /// The cluster answered again.
    pub fn up(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!(client = self.name, "Kafka is reachable again.");
            if let Some(m) = &self.metrics {
                m.broker_up.set(1);
            }
        }
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    pub fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let Some(suppressed) = self.allow(fac) else {
            return;
        };
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(
                    client = self.name,
                    facility = fac,
                    suppressed,
                    "librdkafka: {message}"
                )
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(
                    client = self.name,
                    facility = fac,
                    suppressed,
                    "librdkafka: {message}"
                )
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(
                    client = self.name,
                    facility = fac,
                    suppressed,
                    "librdkafka: {message}"
                )
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(
                    client = self.name,
                    facility = fac,
                    suppressed,
                    "librdkafka: {message}"
                )
            }
        }
    }

    pub fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            if !self.down.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    client = self.name,
                    "Kafka is unreachable (all brokers down): {reason}. Retrying with back-off; nothing is lost, events wait in Kafka and actions in memory."
                );
                if let Some(m) = &self.metrics {
                    m.broker_up.set(0);
                }
            }
            return;
        }
        let kind = format!("error:{:?}", error.rdkafka_error_code());
        if let Some(suppressed) = self.allow(&kind) {
            tracing::warn!(
                client = self.name,
                suppressed,
                "Kafka error: {error}: {reason}"
            );
        }
    }

    pub fn stats(&self, stats: &Statistics) {
        if stats.brokers.values().any(|b| b.state == "UP") {
            self.up();
        }
    }
}

/// A client context that only logs (the restorer).
pub struct Quiet(pub Logger);

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.0.log(level, fac, log_message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.0.error(error, reason)
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

/// A client-creation error with any credential taken out: librdkafka's
/// configuration errors carry the property's value (`sasl.password`,
/// `sasl.oauthbearer.config`), and they end up in logs and on standard
/// error.
pub fn redact_error(e: rdkafka::error::KafkaError) -> rdkafka::error::KafkaError {
    use rdkafka::error::KafkaError;
    match e {
        KafkaError::ClientConfig(code, desc, key, value)
            if crate::config::is_secret_property(&key) =>
        {
            let desc = if value.is_empty() {
                desc
            } else {
                desc.replace(&value, "<redacted>")
            };
            KafkaError::ClientConfig(code, desc, key, "<redacted>".into())
        }
        e => e,
    }
}
