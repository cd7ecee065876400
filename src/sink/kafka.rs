//! The Kafka sink: one idempotent producer for everything credwatch writes
//! because of an input message (an action, the message's dead letter, a
//! login forwarded to the sources topic), as one record type. A record is
//! acknowledged to its input partition's [`Tracker`](crate::kafka::Tracker)
//! once the broker has it, so the input offset is committed only then.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;

use crate::action::Action;
use crate::kafka::{client_config, KafkaConfig, Logger, Role};
use crate::metrics::Metrics;
use crate::source::kafka::Part;

/// Header of a dead letter that says why the message was rejected.
pub const REASON_HEADER: &str = "credwatch-reject-reason";
/// Header of a dead letter with the human-readable detail of the reason.
pub const DETAIL_HEADER: &str = "credwatch-reject-detail";

/// The headers of a dead letter: why (a closed reason), the detail, and
/// where it came from (`origin`: the source topic, partition and offset,
/// or the webhook endpoint). Both dead-letter paths build them here.
pub fn dead_letter_headers(
    reason: &str,
    detail: &str,
    origin: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    let mut h = vec![
        (REASON_HEADER, reason.to_string()),
        (DETAIL_HEADER, detail.to_string()),
    ];
    h.extend(origin.iter().cloned());
    h
}

/// librdkafka's headers from ours.
pub fn owned_headers(headers: &[(&'static str, String)]) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(headers.len());
    for (k, v) in headers {
        out = out.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    out
}

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// An action, on `kafka.actions_topic`.
    Action,
    /// A rejected input message with why, on `kafka.dead_letter_topic`.
    DeadLetter,
    /// A login forwarded to `kafka.sources_topic`, keyed by its address.
    Forward,
    /// A chunk of a partition's checkpoint on `kafka.state_topic` (or a
    /// tombstone removing one).
    State,
}

/// A record being produced because of one input message; carried through
/// librdkafka as the delivery opaque.
pub struct Record {
    part: Arc<Part>,
    offset: i64,
    received: Instant,
    kind: RecordKind,
    topic: Arc<str>,
    key: Arc<[u8]>,
    payload: Arc<[u8]>,
    headers: Vec<(&'static str, String)>,
    attempts: u32,
    /// The topic partition to write to (state chunks); `None`: by key.
    partition: Option<i32>,
    /// Written without a value (a tombstone).
    tombstone: bool,
}

/// Where a record comes from: an input message.
#[derive(Clone)]
pub struct Origin {
    pub part: Arc<Part>,
    pub offset: i64,
    pub received: Instant,
}

impl Record {
    fn new(
        origin: &Origin,
        kind: RecordKind,
        topic: Arc<str>,
        key: Arc<[u8]>,
        payload: Arc<[u8]>,
    ) -> Box<Record> {
        Box::new(Record {
            part: origin.part.clone(),
            offset: origin.offset,
            received: origin.received,
            kind,
            topic,
            key,
            payload,
            headers: Vec::new(),
            attempts: 0,
            partition: None,
            tombstone: false,
        })
    }

    /// A chunk of a checkpoint (`None`: a tombstone for `key`), to one
    /// partition of the state topic.
    pub fn state(
        origin: &Origin,
        topic: Arc<str>,
        partition: i32,
        key: &str,
        chunk: Option<Vec<u8>>,
    ) -> Box<Record> {
        let tombstone = chunk.is_none();
        let mut r = Self::new(
            origin,
            RecordKind::State,
            topic,
            key.as_bytes().into(),
            chunk.unwrap_or_default().into(),
        );
        r.partition = Some(partition);
        r.tombstone = tombstone;
        r
    }

    /// An action, keyed by its account.
    pub fn action(origin: &Origin, topic: Arc<str>, action: &Action) -> Box<Record> {
        Self::new(
            origin,
            RecordKind::Action,
            topic,
            action.data.account.as_bytes().into(),
            action.to_json().into_bytes().into(),
        )
    }

    /// The input message itself, byte for byte, with why it was rejected.
    pub fn dead_letter(
        origin: &Origin,
        topic: Arc<str>,
        key: &[u8],
        payload: &[u8],
        reason: &str,
        detail: &str,
    ) -> Box<Record> {
        let mut r = Self::new(
            origin,
            RecordKind::DeadLetter,
            topic,
            key.into(),
            payload.into(),
        );
        let part = &origin.part;
        r.headers = dead_letter_headers(
            reason,
            detail,
            &[
                ("credwatch-source-topic", part.topic.to_string()),
                ("credwatch-source-partition", part.partition.to_string()),
                ("credwatch-source-offset", origin.offset.to_string()),
            ],
        );
        r
    }

    /// A login, keyed by its source address, for the source stage.
    /// `hint`: what the account stage's profiles know of the account.
    pub fn forward(
        origin: &Origin,
        topic: Arc<str>,
        address: &str,
        payload: &[u8],
        hint: Option<crate::source::event::ProfileHint>,
    ) -> Box<Record> {
        let mut r = Self::new(
            origin,
            RecordKind::Forward,
            topic,
            address.as_bytes().into(),
            payload.into(),
        );
        if let Some(h) = hint {
            r.headers
                .push((crate::source::event::ProfileHint::HEADER, h.to_header()));
        }
        r
    }
}

/// Records the broker refused, waiting to be sent again.
type Retries = Mutex<Vec<(Instant, Box<Record>)>>;

pub struct ProduceCtx {
    logger: Logger,
    metrics: Arc<Metrics>,
    retries: Arc<Retries>,
}

impl ClientContext for ProduceCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.logger.log(level, fac, log_message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.logger.error(error, reason)
    }
}

impl ProducerContext for ProduceCtx {
    type DeliveryOpaque = Box<Record>;

    fn delivery(&self, result: &DeliveryResult<'_>, record: Box<Record>) {
        match result {
            Ok(_) => {
                self.logger.up();
                record.part.tracker.acked(record.offset);
                match record.kind {
                    RecordKind::DeadLetter => self
                        .metrics
                        .dead_letters
                        .with_label_values(&["delivered"])
                        .inc(),
                    RecordKind::Action => self
                        .metrics
                        .action_ack_duration
                        .observe(record.received.elapsed().as_secs_f64()),
                    RecordKind::Forward => {}
                    RecordKind::State => {
                        self.metrics.state_bytes.inc_by(record.payload.len() as u64)
                    }
                }
            }
            Err((e, _)) => self.retry(record, e),
        }
    }
}

impl ProduceCtx {
    /// The broker refused a record for good (with `message.timeout.ms = 0`
    /// librdkafka itself retries everything transient). It is sent again
    /// after a back-off, and the partition's offset is held meanwhile.
    fn retry(&self, mut record: Box<Record>, e: &KafkaError) {
        record.attempts += 1;
        let wait = Duration::from_millis(500u64 << record.attempts.min(6));
        if self.logger.allow("produce-refused").is_some() {
            tracing::error!(
                topic = %record.topic,
                error = %e,
                retry_in_ms = wait.as_millis() as u64,
                "Kafka refused a record credwatch must write; it is retried, and the offsets of its input partition are not committed until it is written. Check that the topic exists and that credwatch may write to it."
            );
        }
        if record.kind == RecordKind::DeadLetter {
            self.metrics
                .dead_letters
                .with_label_values(&["failed"])
                .inc();
        }
        self.retries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((Instant::now() + wait, record));
    }
}

/// The producer of one pipeline stage.
pub struct Producer {
    producer: ThreadedProducer<ProduceCtx>,
    retries: Arc<Retries>,
}

impl Producer {
    pub fn new(k: &KafkaConfig, metrics: Arc<Metrics>) -> Result<Producer, KafkaError> {
        let retries: Arc<Retries> = Arc::default();
        let producer = client_config(k, Role::Producer)
            .create_with_context(ProduceCtx {
                logger: Logger::new("producer", Some(metrics.clone())),
                metrics,
                retries: retries.clone(),
            })
            .map_err(crate::kafka::redact_error)?;
        Ok(Producer { producer, retries })
    }

    /// Produces a record, waiting while librdkafka's queue is full. Call
    /// the partition tracker's `begin` first, so the acknowledgement
    /// cannot come before it.
    pub fn produce(&self, record: Box<Record>) {
        let topic = record.topic.clone();
        let key = record.key.clone();
        let payload = record.payload.clone();
        let headers = owned_headers(&record.headers);
        let (partition, tombstone) = (record.partition, record.tombstone);
        let mut base = BaseRecord::with_opaque_to(&topic, record)
            .key(&*key)
            .headers(headers);
        if !tombstone {
            base = base.payload(&*payload);
        }
        if let Some(p) = partition {
            base = base.partition(p);
        }
        loop {
            match self.producer.send(base) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    base = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, r)) => {
                    self.producer.context().retry(r.delivery_opaque, &e);
                    return;
                }
            }
        }
    }

    /// Sends again the refused records whose back-off has passed.
    pub fn resend_due(&self) {
        let due: Vec<Box<Record>> = {
            let mut r = self.retries.lock().unwrap_or_else(|e| e.into_inner());
            if r.is_empty() {
                return;
            }
            let now = Instant::now();
            let (due, wait): (Vec<_>, Vec<_>) = r.drain(..).partition(|(at, _)| *at <= now);
            *r = wait;
            due.into_iter().map(|(_, a)| a).collect()
        };
        for record in due {
            if record.part.revoked.load(Ordering::Relaxed) && record.kind != RecordKind::DeadLetter
            {
                // The new owner re-reads the event and emits it again.
                continue;
            }
            self.produce(record);
        }
    }

    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}
