//! Where the policy servers' events go: the first of `kafka.input_topics`,
//! keyed by the canonical account, where they are judged like every other
//! event. Producing never waits: a request is answered from memory while
//! librdkafka sends in the background, and when its queue is full (a broker
//! away for long) the event is dropped and counted
//! (`credwatch_policy_events_total{outcome="dropped"}`), never the answer
//! delayed.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};

use crate::kafka::{client_config, KafkaConfig, Logger, Role};
use crate::metrics::Metrics;
use crate::source::event::{Fields, ParseLimits};
use crate::time::now_millis;

struct Ctx {
    logger: Logger,
    metrics: Arc<Metrics>,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.logger.log(level, fac, log_message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.logger.error(error, reason)
    }
}

impl ProducerContext for Ctx {
    /// The server whose event it was.
    type DeliveryOpaque = Box<&'static str>;
    fn delivery(&self, result: &DeliveryResult<'_>, server: Self::DeliveryOpaque) {
        let outcome = if result.is_ok() { "sent" } else { "failed" };
        self.metrics
            .policy_events
            .with_label_values(&[*server, outcome])
            .inc();
    }
}

/// Sends the policy servers' events.
pub struct Emitter {
    producer: ThreadedProducer<Ctx>,
    topic: String,
    metrics: Arc<Metrics>,
    events: crate::source::event::EventsConfig,
}

impl Emitter {
    pub fn new(
        k: &KafkaConfig,
        events: &crate::source::event::EventsConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Emitter, KafkaError> {
        let mut cfg = client_config(k, Role::Producer);
        // Events, not actions: one that cannot be delivered within a
        // minute is counted as failed rather than held for ever, and the
        // queue is bounded (a full queue drops, it never blocks a request).
        cfg.set("message.timeout.ms", "60000");
        cfg.set("queue.buffering.max.messages", "200000");
        let producer = cfg
            .create_with_context(Ctx {
                logger: Logger::new("policy-events", None),
                metrics: metrics.clone(),
            })
            .map_err(crate::kafka::redact_error)?;
        Ok(Emitter {
            producer,
            topic: k.input_topics.first().cloned().unwrap_or_default(),
            metrics,
            events: events.clone(),
        })
    }

    /// Checks `fields` as the input checks any event and sends it, keyed by
    /// its canonical account; never waits.
    pub fn send(&self, server: &'static str, fields: &Fields) {
        let limits =
            ParseLimits::new(self.events.max_bytes, now_millis()).with_form(self.events.form());
        let count = |outcome: &str| {
            self.metrics
                .policy_events
                .with_label_values(&[server, outcome])
                .inc()
        };
        let event = match fields.to_event(&limits) {
            Ok(e) => e,
            Err(_) => return count("invalid"),
        };
        let json = fields.to_json();
        let record = BaseRecord::with_opaque_to(&self.topic, Box::new(server))
            .key(event.account.as_bytes())
            .payload(&json);
        if self.producer.send(record).is_err() {
            count("dropped");
        }
    }

    /// Waits (at most `timeout`) for what is queued to be sent.
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}
