//! `credwatch run`: wires the stages of the flow together. Kafka in
//! ([`crate::source::kafka`]), the same engine as `replay`
//! ([`crate::engine`]), actions out ([`crate::sink::kafka`]).
//!
//! Threads:
//! - the **consumer** thread owns the group member
//!   ([`crate::source::kafka::consumer`]).
//! - **workers** (`kafka.workers`, [`worker`]) judge events. A partition
//!   belongs to one worker, so an account's events are judged in partition
//!   order.
//! - the **restorer** rebuilds the state of newly assigned partitions from
//!   their own recent past before they are consumed
//!   ([`crate::source::kafka::restore`]).
//! - the **GeoIP watcher** reloads changed database files ([`geoip`]).
//! - with a policy server configured, the **lock view** reads the whole
//!   actions topic ([`crate::enforce::feed`]); the judging stage also
//!   applies its own locks and unlocks to it the moment it decides them.
//! - librdkafka's own threads, among them the idempotent producer's.
//!
//! With `kafka.sources_topic` set and a detector keyed by source address
//! enabled, two stages run, each with the detectors keyed by what its
//! input is partitioned by (asked of the registry, [`KeyedBy`]).

mod geoip;
mod lines;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;

use crate::config::Settings;
use crate::enforce::LockView;
use crate::engine::Engine;
use crate::geo::GeoError;
use crate::http::Status;
use crate::kafka::{client_config, Logger, Role};
use crate::metrics::Metrics;
use crate::sink::kafka::Producer;
use crate::source::kafka::consumer::consume;
use crate::source::kafka::{restore, ConsumerCtx, Feed, Input, Work};
use crate::state::KeyedBy;

/// Why the service cannot start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Geo(#[from] GeoError),
    #[error("cannot create the Kafka producer for brokers {brokers:?} (check kafka.brokers and kafka.properties): {source}")]
    Producer { brokers: String, source: KafkaError },
    #[error("cannot create the Kafka consumer for brokers {brokers:?} (check kafka.brokers and kafka.properties): {source}")]
    Consumer { brokers: String, source: KafkaError },
    #[error("cannot subscribe to kafka.input_topics {topics:?}: {source}")]
    Subscribe {
        topics: Vec<String>,
        source: KafkaError,
    },
    #[error(transparent)]
    StateTopic(#[from] crate::source::kafka::durable::StateTopicError),
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
}

/// One stage of the pipeline: its input, where it forwards logins, and the
/// other stages it is ready with.
pub struct Stage {
    pub input: Arc<Input>,
    /// The account stage of a split pipeline writes every login with an
    /// address here, keyed by the address (see `kafka.sources_topic`).
    forward: Option<Forward>,
    /// Other stages of the pipeline: this one is ready when they are.
    others: Vec<Arc<Stage>>,
}

impl Status for Stage {
    fn ready(&self) -> bool {
        self.input.consuming()
            && self.others.iter().all(|o| o.ready())
            && self.input.locks.as_ref().is_none_or(|l| l.caught_up())
    }
}

/// A running service.
pub struct Service {
    stage: Arc<Stage>,
    consumer: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    restorer: Option<JoinHandle<()>>,
    /// The source stage, when `kafka.sources_topic` is set.
    sources: Option<Box<Service>>,
    /// The log stage, when `kafka.log_topics` is set.
    logs: Option<Box<Service>>,
    /// The lock view's reader of the actions topic, with a policy server.
    feed: Option<(JoinHandle<()>, Arc<AtomicBool>)>,
}

/// Where the account stage forwards logins: the topic, and the prefix that
/// makes one source (`password_spray`'s), so that a whole IPv6 /64 lands on
/// one partition of the source stage.
#[derive(Clone)]
pub(crate) struct Forward {
    pub topic: Arc<str>,
    pub v4: u8,
    pub v6: u8,
}

/// How one stage of the pipeline is to be started (the default: a
/// secondary stage with every detector, forwarding nothing).
#[derive(Default)]
struct Plan {
    /// Only the detectors keyed by this (a split pipeline); `None`: all.
    keyed_by: Option<KeyedBy>,
    forward: Option<Forward>,
    primary: bool,
    others: Vec<Arc<Stage>>,
    sources: Option<Box<Service>>,
    /// The log stage: lines in, events out to this topic.
    lines: Option<lines::LineMode>,
    logs: Option<Box<Service>>,
    /// The lock view the stage applies its own locks and unlocks to.
    locks: Option<Arc<LockView>>,
}

impl Service {
    /// Opens the GeoIP databases, connects to Kafka and starts consuming.
    /// Returns once the threads are running (the group join goes on).
    ///
    /// With `kafka.log_topics` set, a log stage (group `<group_id>.logs`)
    /// reads Dovecot's and Postfix's lines from them and writes their
    /// events to the first input topic, keyed by account; then the
    /// pipeline below judges them like every other event.
    pub fn start(settings: Settings, metrics: Arc<Metrics>) -> Result<Service, ServiceError> {
        let c = &settings.config;
        // Durable state: the topic, and the hash key every instance keys
        // its tables with, before anything is keyed.
        if !c.kafka.state_topic.trim().is_empty() {
            crate::source::kafka::durable::ensure_topic(&c.kafka)?;
            crate::source::kafka::durable::establish_key(&c.kafka)?;
        }
        let locks = (c.dovecot_policy.enabled() || c.postfix_policy.enabled())
            .then(|| Arc::new(LockView::new(c.policy.lock_ttl_secs)));
        let feed = match &locks {
            Some(view) => {
                let stop = Arc::new(AtomicBool::new(false));
                let h = crate::enforce::feed::start(
                    view.clone(),
                    &c.kafka,
                    metrics.clone(),
                    stop.clone(),
                )
                .map_err(|source| ServiceError::Consumer {
                    brokers: c.kafka.brokers.clone(),
                    source,
                })?;
                Some((h, stop))
            }
            None => None,
        };
        let mut service = Self::start_logs_and_pipeline(settings, metrics, locks)?;
        service.feed = feed;
        Ok(service)
    }

    fn start_logs_and_pipeline(
        settings: Settings,
        metrics: Arc<Metrics>,
        locks: Option<Arc<LockView>>,
    ) -> Result<Service, ServiceError> {
        let k = &settings.config.kafka;
        if k.log_topics.is_empty() {
            return Self::start_pipeline(settings, metrics, None, locks);
        }
        let mut l = settings.clone();
        l.config.kafka.group_id = format!("{}.logs", k.group_id);
        l.config.kafka.input_topics = k.log_topics.clone();
        l.config.kafka.restore_secs = 0;
        l.config.kafka.sources_topic = String::new();
        let logs = Self::start_stage(
            l,
            metrics.clone(),
            Plan {
                keyed_by: Some(KeyedBy::Source),
                lines: Some(lines::LineMode {
                    target: k.input_topics[0].as_str().into(),
                    cfg: settings.config.maillog.clone(),
                }),
                ..Plan::default()
            },
        )?;
        Self::start_pipeline(settings, metrics, Some(Box::new(logs)), locks)
    }

    /// The judging pipeline: one stage, or the account and source stages.
    ///
    /// With `kafka.sources_topic` set and a detector keyed by source address
    /// enabled, two stages run: the account stage (the detectors keyed by
    /// account) forwards each login with an address to the sources topic,
    /// keyed by the address; the source stage (group `<group_id>.sources`)
    /// judges the detectors keyed by source from that topic.
    fn start_pipeline(
        settings: Settings,
        metrics: Arc<Metrics>,
        logs: Option<Box<Service>>,
        locks: Option<Arc<LockView>>,
    ) -> Result<Service, ServiceError> {
        let k = &settings.config.kafka;
        let topic = k.sources_topic.trim().to_string();
        let log_stage: Vec<Arc<Stage>> = logs.iter().map(|l| l.stage.clone()).collect();
        let split = settings.config.detectors.any_enabled(KeyedBy::Source);
        if topic.is_empty() || !split {
            return Self::start_stage(
                settings,
                metrics,
                Plan {
                    primary: true,
                    others: log_stage,
                    logs,
                    locks,
                    ..Plan::default()
                },
            );
        }
        let spray = &settings.config.detectors.password_spray;
        let forward = Forward {
            topic: topic.as_str().into(),
            v4: spray.source_prefix_v4,
            v6: spray.source_prefix_v6,
        };
        let mut src = settings.clone();
        src.config.kafka.group_id = format!("{}.sources", k.group_id);
        src.config.kafka.input_topics = vec![topic.clone()];
        src.config.kafka.sources_topic = String::new();
        let sources = Self::start_stage(
            src,
            metrics.clone(),
            Plan {
                keyed_by: Some(KeyedBy::Source),
                ..Plan::default()
            },
        )?;
        let mut others = vec![sources.stage.clone()];
        others.extend(log_stage);
        Self::start_stage(
            settings,
            metrics,
            Plan {
                keyed_by: Some(KeyedBy::Account),
                forward: Some(forward),
                primary: true,
                others,
                sources: Some(Box::new(sources)),
                logs,
                locks,
                ..Plan::default()
            },
        )
    }

    fn start_stage(
        settings: Settings,
        metrics: Arc<Metrics>,
        plan: Plan,
    ) -> Result<Service, ServiceError> {
        let k = &settings.config.kafka;
        let mut engine = Engine::for_stage(&settings, plan.keyed_by)?;
        let n = k.workers;
        engine.set_lanes(n);
        let engine = Arc::new(engine);
        let producer =
            Producer::new(k, metrics.clone()).map_err(|source| ServiceError::Producer {
                brokers: k.brokers.clone(),
                source,
            })?;
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..n {
            let (tx, rx) = mpsc::sync_channel(64);
            senders.push(tx);
            receivers.push(rx);
        }
        // Durable state: the judging stages keyed by account (the source
        // stage's state, keyed by address, is rebuilt from its input).
        let durable = !k.state_topic.trim().is_empty()
            && plan.lines.is_none()
            && plan.keyed_by != Some(KeyedBy::Source);
        let (state_topic, state_partitions) = if durable {
            let n = crate::source::kafka::durable::ensure_topic(k)?;
            (Some(Arc::<str>::from(k.state_topic.trim())), n)
        } else {
            (None, 0)
        };
        let (restore_tx, restore_rx) = mpsc::channel();
        let generation = Duration::from_secs(k.restore_secs.max(3600));
        let shared = Arc::new(Input {
            engine,
            metrics: metrics.clone(),
            producer,
            parts: Mutex::new(HashMap::new()),
            workers: senders,
            feed: Mutex::new(Feed::new(n)),
            resume: Mutex::new(Vec::new()),
            restores: Mutex::new(Some(restore_tx)),
            restoring: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            joined: AtomicBool::new(false),
            generation,
            keys: crate::source::kafka::KeyBudget::new(settings.config.state.max_accounts),
            trusts_hints: plan.keyed_by == Some(KeyedBy::Source),
            log: Logger::new("consumer", Some(metrics.clone())),
            primary: plan.primary,
            locks: plan.locks,
            state_topic,
            state_partitions,
            kafka: settings.config.kafka.clone(),
            events: settings.config.events.clone(),
            geoip: settings.config.geoip.clone(),
        });
        let stage = Arc::new(Stage {
            input: shared.clone(),
            forward: plan.forward,
            others: plan.others,
        });
        let consumer: BaseConsumer<ConsumerCtx> = client_config(shared.kafka(), Role::Consumer)
            .create_with_context(ConsumerCtx {
                shared: shared.clone(),
            })
            .map_err(|e| ServiceError::Consumer {
                brokers: shared.kafka().brokers.clone(),
                source: crate::kafka::redact_error(e),
            })?;
        let topics: Vec<&str> = shared
            .kafka()
            .input_topics
            .iter()
            .map(String::as_str)
            .collect();
        consumer
            .subscribe(&topics)
            .map_err(|source| ServiceError::Subscribe {
                topics: shared.kafka().input_topics.clone(),
                source,
            })?;
        let workers = receivers
            .into_iter()
            .enumerate()
            .map(|(i, rx)| {
                let (s, forward) = (shared.clone(), stage.forward.clone());
                let lines = plan.lines.clone();
                let name = if lines.is_some() { "lines" } else { "judge" };
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || worker::run(i, rx, &s, forward, lines))
                    .expect("spawn a worker thread")
            })
            .collect();
        let restorer = {
            let s = shared.clone();
            std::thread::Builder::new()
                .name("restorer".into())
                .spawn(move || restore::run(restore_rx, &s))
                .expect("spawn the restorer thread")
        };
        if shared.geoip.reload_check_secs > 0 {
            let s = shared.clone();
            std::thread::Builder::new()
                .name("geoip-watch".into())
                .spawn(move || geoip::watch(&s))
                .expect("spawn the GeoIP watcher");
        }
        let consumer = {
            let s = shared.clone();
            std::thread::Builder::new()
                .name("consumer".into())
                .spawn(move || consume(consumer, &s))
                .expect("spawn the consumer thread")
        };
        tracing::info!(
            brokers = %shared.kafka().brokers,
            group = %shared.kafka().group_id,
            topics = ?shared.kafka().input_topics,
            workers = n,
            "Service started; joining the consumer group."
        );
        Ok(Service {
            stage,
            consumer: Some(consumer),
            workers,
            restorer: Some(restorer),
            sources: plan.sources,
            logs: plan.logs,
            feed: None,
        })
    }

    /// Consuming, and the state of every assigned partition restored.
    pub fn ready(&self) -> bool {
        self.stage.ready()
    }

    pub fn status(&self) -> Arc<dyn Status> {
        self.stage.clone()
    }

    /// The accounts refused now (with a policy server configured).
    pub fn locks(&self) -> Option<&Arc<LockView>> {
        self.stage.input.locks.as_ref()
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.stage.input.engine
    }

    /// Input partitions assigned to this instance.
    pub fn partitions(&self) -> usize {
        self.stage
            .input
            .parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Offsets handed over by the workers, summed over assigned partitions
    /// (+1 each: how many messages were judged, if partitions start at 0).
    pub fn processed(&self) -> i64 {
        self.stage
            .input
            .all_parts()
            .iter()
            .map(|p| p.tracker.processed_offset() + 1)
            .sum()
    }

    /// True when a consumer thread stopped on its own (an error).
    pub fn stopped(&self) -> bool {
        self.consumer.as_ref().is_none_or(|c| c.is_finished())
            || self.sources.as_ref().is_some_and(|s| s.stopped())
            || self.logs.as_ref().is_some_and(|s| s.stopped())
    }

    /// Stops consuming, judges what is in flight, waits for its actions to
    /// be acknowledged, commits, leaves the group and stops the threads.
    pub fn shutdown(mut self) -> Result<(), ServiceError> {
        // The log stage first: what it forwarded is acknowledged before the
        // stages that judge it stop.
        let logs = match self.logs.take() {
            Some(l) => l.shutdown(),
            None => Ok(()),
        };
        self.stage.input.shutdown.store(true, Ordering::Relaxed);
        let result = match self.consumer.take() {
            Some(c) => c.join().map_err(|_| ServiceError::Panicked("consumer")),
            None => Ok(()),
        };
        self.stage
            .input
            .restores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(r) = self.restorer.take() {
            let _ = r.join();
        }
        for w in &self.stage.input.workers {
            let _ = w.send(Work::Stop);
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.stage.input.producer.flush(Duration::from_secs(5));
        // The source stage last: what the account stage forwarded is
        // acknowledged by now, and is judged after a restart at the latest.
        if let Some((h, stop)) = self.feed.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = h.join();
        }
        let result = logs.and(result);
        match self.sources.take() {
            Some(src) => result.and(src.shutdown()),
            None => result,
        }
    }

    /// Lines of the log topics read by the log stage (0 without one).
    pub fn logs_processed(&self) -> i64 {
        self.logs.as_ref().map_or(0, |s| s.processed())
    }

    /// Messages of the sources topic judged by the source stage (0 without one).
    pub fn sources_processed(&self) -> i64 {
        self.sources.as_ref().map_or(0, |s| s.processed())
    }
}
