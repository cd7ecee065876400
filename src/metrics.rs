//! Prometheus metrics (contract §4), in one explicit registry. Label values
//! come from closed sets only: never an account, an address, a URL or the
//! text of an error.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::action::ActionKind;
use crate::policy::Decision;
use crate::source::event::{Event, Kind, RejectReason};

/// Every metric credwatch exports.
pub struct Metrics {
    pub registry: Registry,
    pub events: IntCounterVec,
    pub rejected: IntCounterVec,
    /// Log lines read from `kafka.log_topics`, by outcome.
    pub log_lines: IntCounterVec,
    /// Log lines held for the rest of their message or session.
    pub log_lines_held: prometheus::IntGauge,
    pub detections: IntCounterVec,
    pub actions: IntCounterVec,
    pub webhook_deliveries: IntCounterVec,
    pub webhook_duration: Histogram,
    /// Actions not yet delivered, per endpoint (beyond the contract).
    pub webhook_lag: IntGaugeVec,
    pub decision_duration: Histogram,
    pub accounts_tracked: IntGauge,
    pub breaker_open: IntGauge,
    pub partition_accounts_tracked: IntGauge,
    pub partition_accounts_untracked: IntCounter,
    pub breaker_detector_open: IntGaugeVec,
    pub breaker_uncounted_locks: IntCounter,
    pub breaker_held_locks_sent: IntCounter,
    // Beyond the contract: what an operator of a Kafka consumer watches.
    pub consumer_lag: IntGaugeVec,
    pub rebalances: IntCounterVec,
    /// Batches held back because their worker's queue was full.
    pub consumer_held_batches: IntCounter,
    pub partitions_assigned: IntGauge,
    pub restore_duration: Histogram,
    pub restored_events: IntCounter,
    /// Bytes of checkpoint chunks the broker acknowledged.
    pub state_bytes: IntCounter,
    /// Checkpoints written, by kind (base, delta).
    pub checkpoints: IntCounterVec,
    /// Restores of a partition, by how (checkpoint, input, none, fallback).
    pub state_restores: IntCounterVec,
    /// Bytes of checkpoints read back by restores.
    pub state_restored_bytes: IntCounter,
    pub restoring_partitions: IntGauge,
    pub dead_letters: IntCounterVec,
    pub action_ack_duration: Histogram,
    pub event_lag: Histogram,
    pub commits: IntCounterVec,
    pub broker_up: IntGauge,
    pub state_entries: IntGaugeVec,
    pub state_capacity: IntGaugeVec,
    pub state_evictions: IntCounterVec,
    pub geoip_lookups: IntCounter,
    pub geoip_cache_hits: IntCounter,
    pub geoip_cache_hit_ratio: Gauge,
    pub geoip_reloads: IntCounterVec,
    pub ready: IntGauge,
    // The policy servers (`[dovecot_policy]`, `[postfix_policy]`).
    pub policy_requests: IntCounterVec,
    pub policy_duration: prometheus::HistogramVec,
    pub policy_errors: IntCounterVec,
    pub policy_events: IntCounterVec,
    pub policy_connections: IntGaugeVec,
    pub locks_enforced: IntGauge,
    pub lock_view_actions: IntCounterVec,
    pub lock_view_caught_up: IntGauge,
}

const PROTOCOLS: [&str; 5] = ["smtp", "imap", "pop3", "webmail", "other"];
const RESULTS: [&str; 2] = ["success", "failure"];
/// auth x protocol x result, then submission, then bounce.
const EVENT_SLOTS: usize = PROTOCOLS.len() * RESULTS.len() + 3;

fn event_labels(e: &Event) -> (&'static str, &'static str, &'static str) {
    match e.kind {
        Kind::Auth => (
            "auth",
            e.protocol.map(|p| p.as_str()).unwrap_or("other"),
            e.result.map(|r| r.as_str()).unwrap_or("none"),
        ),
        k => (k.as_str(), "none", "none"),
    }
}

fn event_slot(e: &Event) -> usize {
    match e.kind {
        Kind::Auth => {
            let (_, p, r) = event_labels(e);
            let pi = PROTOCOLS.iter().position(|x| *x == p).unwrap_or(4);
            let ri = RESULTS.iter().position(|x| *x == r).unwrap_or(1);
            pi * RESULTS.len() + ri
        }
        Kind::Submission => EVENT_SLOTS - 3,
        Kind::Bounce => EVENT_SLOTS - 2,
        Kind::Unlock => EVENT_SLOTS - 1,
    }
}

fn slot_labels(i: usize) -> [&'static str; 3] {
    if i == EVENT_SLOTS - 3 {
        ["submission", "none", "none"]
    } else if i == EVENT_SLOTS - 2 {
        ["bounce", "none", "none"]
    } else if i == EVENT_SLOTS - 1 {
        ["unlock", "none", "none"]
    } else {
        [
            "auth",
            PROTOCOLS[i / RESULTS.len()],
            RESULTS[i % RESULTS.len()],
        ]
    }
}

/// Per-thread event counts (see [`Metrics::event_counts`]).
pub struct EventCounts {
    counts: [u64; EVENT_SLOTS],
}

impl EventCounts {
    pub fn add(&mut self, e: &Event) {
        self.counts[event_slot(e)] += 1;
    }

    pub fn flush(&mut self, m: &Metrics) {
        for (i, n) in self.counts.iter_mut().enumerate() {
            if *n > 0 {
                m.events.with_label_values(&slot_labels(i)).inc_by(*n);
                *n = 0;
            }
        }
    }
}

/// Latency buckets from 100 µs to 30 s, fine from 0.5 to 10 ms, where a
/// decision's objective lies (receipt to decision within 2 ms): with a
/// bucket from 2.5 to 5 ms, a p99 read from the histogram could only say
/// "somewhere in there", and interpolated it read 4.1 ms whatever it was.
const LATENCY: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.00125, 0.0015, 0.00175, 0.002, 0.0025, 0.003, 0.004,
    0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn single_counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("metric definition");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

/// Brings a counter up to a cumulative count kept elsewhere (the engine's
/// tables and GeoIP cache count on their own; the counter follows).
fn catch_up(c: &IntCounter, total: u64) {
    let seen = c.get();
    if total > seen {
        c.inc_by(total - seen);
    }
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("metric definition");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definition");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("metric definition");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let m = Metrics {
            events: counter(
                &r,
                "credwatch_events_total",
                "Events judged, by kind, protocol and result (protocol and result are \"none\" for submissions and bounces).",
                &["kind", "protocol", "result"],
            ),
            rejected: counter(
                &r,
                "credwatch_events_rejected_total",
                "Messages that are not valid events, by reason; each is copied to the dead-letter topic.",
                &["reason"],
            ),
            log_lines: counter(
                &r,
                "credwatch_log_lines_total",
                "Dovecot and Postfix log lines read from kafka.log_topics, by outcome: used (went into an event, or is held for one) or why it gave none (see docs/maillog.md).",
                &["outcome"],
            ),
            log_lines_held: gauge(
                &r,
                "credwatch_log_joins_held",
                "Messages, sessions and waiting failures of the log topics held for the rest of their lines (at most maillog.max_joins per partition).",
            ),
            detections: counter(
                &r,
                "credwatch_detections_total",
                "Findings by detector and what became of them (lock, alert, or joined: added to an open incident).",
                &["detector", "action"],
            ),
            actions: counter(
                &r,
                "credwatch_actions_emitted_total",
                "Actions emitted to the actions topic, by action.",
                &["action"],
            ),
            webhook_deliveries: counter(
                &r,
                "credwatch_webhook_deliveries_total",
                "Webhook delivery attempts by outcome.",
                &["outcome"],
            ),
            webhook_duration: histogram(
                &r,
                "credwatch_webhook_delivery_duration_seconds",
                "Time of one webhook request.",
                LATENCY,
            ),
            webhook_lag: gauge_vec(
                &r,
                "credwatch_webhook_lag_actions",
                "Actions not yet delivered to a webhook endpoint (its index in webhook.urls): on the actions topic past its consumer's position, or read and waiting for an answer or a retry.",
                &["endpoint"],
            ),
            decision_duration: histogram(
                &r,
                "credwatch_event_decision_duration_seconds",
                "From receipt of an event to its decision.",
                LATENCY,
            ),
            accounts_tracked: gauge(
                &r,
                "credwatch_accounts_tracked",
                "Accounts with state held (the largest per-account table).",
            ),
            breaker_open: gauge(
                &r,
                "credwatch_breaker_open",
                "1 while automatic locking is suspended by the breaker.",
            ),
            partition_accounts_tracked: gauge(
                &r,
                "credwatch_partition_accounts_tracked",
                "Account keys the assigned partitions remember, to drop their state when a partition moves away (at most state.max_accounts).",
            ),
            partition_accounts_untracked: single_counter(
                &r,
                "credwatch_partition_accounts_untracked_total",
                "Accounts a partition could not remember because state.max_accounts keys were already held.",
            ),
            breaker_detector_open: gauge_vec(
                &r,
                "credwatch_breaker_detector_open",
                "1 while this detector's automatic locking is suspended by the breaker.",
                &["detector"],
            ),
            breaker_uncounted_locks: single_counter(
                &r,
                "credwatch_breaker_uncounted_locks_total",
                "Locks the breaker did not count: their account was not established (a throwaway account, or one too new to tell).",
            ),
            breaker_held_locks_sent: single_counter(
                &r,
                "credwatch_breaker_held_locks_sent_total",
                "Locks the breaker held back and sent once it closed, the account still in use from where the finding came from.",
            ),
            consumer_lag: gauge_vec(
                &r,
                "credwatch_consumer_lag_messages",
                "Messages between the consumer's position and the end of each assigned partition.",
                &["topic", "partition"],
            ),
            consumer_held_batches: single_counter(
                &r,
                "credwatch_consumer_held_batches_total",
                "Batches the consumer held back because their judging thread's queue was full (it reads the other threads' partitions meanwhile). Rising steadily: the judges cannot keep up with the input.",
            ),
            rebalances: counter(
                &r,
                "credwatch_rebalances_total",
                "Consumer group rebalances seen, by kind (assign, revoke, error).",
                &["kind"],
            ),
            partitions_assigned: gauge(
                &r,
                "credwatch_partitions_assigned",
                "Input partitions this instance consumes.",
            ),
            restore_duration: histogram(
                &r,
                "credwatch_state_restore_duration_seconds",
                "Time to rebuild the state of newly assigned partitions.",
                &[0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0],
            ),
            restored_events: {
                single_counter(
                    &r,
                    "credwatch_state_restored_events_total",
                    "Events read again to rebuild state after an assignment (no actions emitted for them).",
                )
            },
            state_bytes: single_counter(
                &r,
                "credwatch_state_checkpoint_bytes_total",
                "Bytes of durable-state checkpoints written to kafka.state_topic (acknowledged by the broker).",
            ),
            checkpoints: counter(
                &r,
                "credwatch_state_checkpoints_total",
                "Durable-state checkpoints written, by kind (base: every account of the partition; delta: the accounts changed since the last).",
                &["kind"],
            ),
            state_restores: counter(
                &r,
                "credwatch_state_restores_total",
                "Partition restores, by how the state came back (checkpoint: from kafka.state_topic and the input since; input: kafka.restore_secs of input, no durable state configured or none written yet; fallback: the durable state could not be read or was of another format, so input was re-read).",
                &["from"],
            ),
            state_restored_bytes: single_counter(
                &r,
                "credwatch_state_restored_bytes_total",
                "Bytes of durable-state checkpoints read back by restores.",
            ),
            restoring_partitions: gauge(
                &r,
                "credwatch_state_restoring_partitions",
                "Assigned partitions whose state is still being rebuilt.",
            ),
            dead_letters: counter(
                &r,
                "credwatch_dead_letters_total",
                "Rejected messages copied to the dead-letter topic, by outcome (delivered, failed).",
                &["outcome"],
            ),
            action_ack_duration: histogram(
                &r,
                "credwatch_action_ack_duration_seconds",
                "From receipt of an event to the broker's acknowledgement of the action it caused.",
                LATENCY,
            ),
            event_lag: histogram(
                &r,
                "credwatch_event_lag_seconds",
                "From an input message's Kafka timestamp to its decision: how far behind the platform's events credwatch judges.",
                LATENCY,
            ),
            commits: counter(
                &r,
                "credwatch_offset_commits_total",
                "Offset commits by outcome (ok, failed).",
                &["outcome"],
            ),
            broker_up: gauge(
                &r,
                "credwatch_kafka_up",
                "1 while the Kafka cluster is reachable, 0 after librdkafka reported all brokers down.",
            ),
            state_entries: gauge_vec(
                &r,
                "credwatch_state_entries",
                "Entries held per state table.",
                &["table", "keyed_by"],
            ),
            state_capacity: gauge_vec(
                &r,
                "credwatch_state_capacity",
                "Cap of each state table (state.max_accounts, state.max_sources).",
                &["table", "keyed_by"],
            ),
            state_evictions: counter(
                &r,
                "credwatch_state_evictions_total",
                "Entries removed per table, by cause (expired, cap).",
                &["table", "cause"],
            ),
            geoip_lookups: single_counter(
                &r,
                "credwatch_geoip_lookups_total",
                "GeoIP lookups.",
            ),
            geoip_cache_hits: single_counter(
                &r,
                "credwatch_geoip_cache_hits_total",
                "GeoIP lookups answered from the cache.",
            ),
            geoip_cache_hit_ratio: {
                let g = Gauge::new(
                    "credwatch_geoip_cache_hit_ratio",
                    "Share of GeoIP lookups answered from the cache.",
                )
                .expect("metric definition");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            geoip_reloads: counter(
                &r,
                "credwatch_geoip_reloads_total",
                "GeoIP database reloads after a file changed, by outcome (ok, failed: the old databases stay in use).",
                &["outcome"],
            ),
            ready: gauge(
                &r,
                "credwatch_ready",
                "1 while consuming with every assigned partition's state restored.",
            ),
            policy_requests: counter(
                &r,
                "credwatch_policy_requests_total",
                "Requests the policy servers answered, by server (dovecot, postfix), verdict (allow, refuse, tarpit, report, refuse_sender, would_refuse_sender) and protocol (Dovecot's service, mapped to smtp, imap, pop3, other; smtp for Postfix).",
                &["server", "verdict", "protocol"],
            ),
            policy_duration: {
                let h = prometheus::HistogramVec::new(
                    HistogramOpts::new(
                        "credwatch_policy_request_duration_seconds",
                        "Time from a policy request's last byte to its answer, by server.",
                    )
                    .buckets(vec![
                        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
                        0.05, 0.1, 0.25, 1.0,
                    ]),
                    &["server"],
                )
                .expect("metric definition");
                r.register(Box::new(h.clone())).expect("unique metric");
                h
            },
            policy_errors: counter(
                &r,
                "credwatch_policy_errors_total",
                "Policy requests that could not be answered as asked, by server and reason (bad_request, unauthorized, too_large, not_found, method, timeout, over_connection_cap, io).",
                &["server", "reason"],
            ),
            policy_events: counter(
                &r,
                "credwatch_policy_events_total",
                "Events the policy servers made from their requests, by server and outcome: sent (to the input topic), dropped (the producer's queue was full), failed (the broker did not take it), skipped (no event to make: no address, refused by policy, an internal failure) or invalid.",
                &["server", "outcome"],
            ),
            policy_connections: gauge_vec(
                &r,
                "credwatch_policy_connections",
                "Connections the policy servers have open now, by server.",
                &["server"],
            ),
            locks_enforced: gauge(
                &r,
                "credwatch_locks_enforced",
                "Accounts whose logins and messages the policy servers refuse now (the lock view).",
            ),
            lock_view_actions: counter(
                &r,
                "credwatch_lock_view_actions_total",
                "Actions read into the lock view, by what they were: lock, unlock, ignored (an alert, or older than the account's standing) or unreadable.",
                &["change"],
            ),
            lock_view_caught_up: gauge(
                &r,
                "credwatch_lock_view_caught_up",
                "1 once the lock view has read the actions topic up to where it was when credwatch started (until then a lock decided earlier may not be refused yet).",
            ),
            registry: r,
        };
        // The contract's closed label sets exist from the start, so
        // dashboards and alerts see zeros rather than no data.
        for o in ["delivered", "retried", "failed"] {
            m.webhook_deliveries.with_label_values(&[o]);
        }
        for a in ["lock", "alert"] {
            m.actions.with_label_values(&[a]);
        }
        for r in RejectReason::ALL {
            m.rejected.with_label_values(&[r.as_str()]);
        }
        m.log_lines.with_label_values(&["used"]);
        for s in crate::source::maillog::Skip::ALL {
            m.log_lines.with_label_values(&[s.as_str()]);
        }
        for o in ["delivered", "failed"] {
            m.dead_letters.with_label_values(&[o]);
        }
        for o in ["ok", "failed"] {
            m.geoip_reloads.with_label_values(&[o]);
        }
        m
    }

    /// Counts one judged event.
    pub fn event(&self, e: &Event) {
        let (kind, protocol, result) = event_labels(e);
        self.events
            .with_label_values(&[kind, protocol, result])
            .inc();
    }

    /// Counters of events for one thread, added to the registry by
    /// [`EventCounts::flush`] (one lookup per label set per batch, not per event).
    pub fn event_counts(&self) -> EventCounts {
        EventCounts {
            counts: [0; EVENT_SLOTS],
        }
    }

    /// Counts one decision of the engine.
    pub fn decision(&self, d: &Decision) {
        match d {
            // An unlock is the provider's decision, not a detection.
            Decision::Emit(a) if a.data.action == ActionKind::Unlock => {}
            Decision::Emit(a) => {
                let action = a.data.action.as_str();
                self.detections
                    .with_label_values(&[a.data.detector, action])
                    .inc();
            }
            Decision::Enrich { detector, .. } => {
                self.detections
                    .with_label_values(&[detector, "joined"])
                    .inc();
            }
        }
    }

    /// The Prometheus text format of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }

    /// Copies the engine's own counters into the gauges.
    pub fn observe_engine(&self, engine: &crate::engine::Engine) {
        self.accounts_tracked.set(engine.accounts_tracked() as i64);
        self.breaker_open.set(engine.breaker_open() as i64);
        for (d, open) in engine.breaker_sides() {
            self.breaker_detector_open
                .with_label_values(&[d])
                .set(open as i64);
        }
        let (sent, uncounted) = engine.breaker_counts();
        catch_up(&self.breaker_held_locks_sent, sent);
        catch_up(&self.breaker_uncounted_locks, uncounted);
        for t in engine.tables() {
            self.state_entries
                .with_label_values(&[t.name, t.keyed_by.as_str()])
                .set(t.len as i64);
            self.state_capacity
                .with_label_values(&[t.name, t.keyed_by.as_str()])
                .set(t.cap as i64);
            catch_up(
                &self.state_evictions.with_label_values(&[t.name, "expired"]),
                t.evicted_expired,
            );
            catch_up(
                &self.state_evictions.with_label_values(&[t.name, "cap"]),
                t.evicted_cap,
            );
        }
        let (n, hits) = engine.geo_lookups();
        catch_up(&self.geoip_lookups, n);
        catch_up(&self.geoip_cache_hits, hits);
        if n > 0 {
            self.geoip_cache_hit_ratio.set(hits as f64 / n as f64);
        }
    }
}
