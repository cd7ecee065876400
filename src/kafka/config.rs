//! `[kafka]`: the connection, the input and the topics credwatch writes.

use std::collections::BTreeMap;

use crate::section::Checks;

crate::section! {
    /// `[kafka]`: where events come from and actions go (used by
    /// `credwatch run`).
    pub struct KafkaConfig {
        /// Bootstrap brokers, comma-separated.
        pub brokers: String = "127.0.0.1:9092".into(),
        /// Consumer group.
        pub group_id: String = "credwatch".into(),
        /// Topics with login, submission and bounce events.
        pub input_topics: Vec<String> = vec!["mail.auth".into()],
        /// Where actions go.
        pub actions_topic: String = "credwatch.actions".into(),
        /// Where rejected events go, with the reason.
        pub dead_letter_topic: String = "credwatch.dlq".into(),
        /// Without durable state (`state_topic`), or when it cannot be read:
        /// how far back the state of a newly assigned partition is rebuilt
        /// from the partition itself, in seconds of Kafka message time
        /// before the group's last committed message (not the wall clock:
        /// a group that was down for a week still restores). A day covers
        /// every detector's window except the two-week sending baseline of
        /// `send_volume`. Retention must keep at least this.
        pub restore_secs: u64 = 86_400,
        /// Durable state: a compacted topic where each input partition's
        /// state (every account's tables, profiles and incidents) is
        /// checkpointed, so a restart or a rebalance restores weeks of
        /// history from it and re-reads only the input since the last
        /// checkpoint (docs/durable-state.md). Created with
        /// `cleanup.policy=compact` if missing; refused if it exists without
        /// compaction. Empty: no durable state (restore from
        /// `restore_secs` of input).
        pub state_topic: String = String::new(),
        /// How often each partition's changed accounts are checkpointed to
        /// `state_topic`, in seconds of wall time (also on a revoke and at
        /// shutdown). After a crash, at most this much input (plus the
        /// commit interval) is judged again.
        pub checkpoint_interval_secs: u64 = 30,
        /// Threads that judge events; partitions are spread over them.
        pub workers: usize = 2,
        /// How often processed offsets are committed, in milliseconds.
        pub commit_interval_ms: u64 = 1000,
        /// How long a revoke or a shutdown waits for in-flight events and
        /// their actions before committing what is done, in seconds.
        pub drain_timeout_secs: u64 = 20,
        /// Where source-keyed detectors (`password_spray`) are judged when
        /// several instances share the input. Empty: each instance judges
        /// them on its own partitions' accounts. A topic name (create it
        /// with as many partitions as the input): every login with an
        /// address is also written there keyed by the address, and a second
        /// stage in every instance (consumer group `<group_id>.sources`)
        /// judges the source-keyed detectors from it, seeing all of an
        /// address's attempts whichever instance owns the accounts.
        pub sources_topic: String = String::new(),
        /// Topics of raw Dovecot and Postfix log lines, one line per message
        /// (what rsyslog's omkafka, Vector or Fluent Bit ship; any key, all
        /// lines of one host on one partition is best). Empty: none. A stage
        /// of their own (consumer group `<group_id>.logs`) reads them as
        /// `replay --format maillog` does (`[maillog]`), and writes each
        /// event to the first of `input_topics` as the contract's JSON,
        /// keyed by account: one account's events are judged in order by
        /// the instance that owns it, whichever partition its lines came on.
        pub log_topics: Vec<String> = Vec::new(),
        /// Any other librdkafka property, passed through to the consumer and
        /// the producer (TLS, SASL, ...).
        /// `CREDWATCH_KAFKA_PROPERTIES_SASL_PASSWORD` sets `sasl.password`.
        pub properties: BTreeMap<String, String> = BTreeMap::new(),
    }
}

impl KafkaConfig {
    pub fn check(&self, c: &mut Checks) {
        c.positive("workers", self.workers as u64);
        c.positive("commit_interval_ms", self.commit_interval_ms);
        c.positive("drain_timeout_secs", self.drain_timeout_secs);
        c.positive("checkpoint_interval_secs", self.checkpoint_interval_secs);
        for (key, other) in [
            ("input_topics", self.input_topics.join(",")),
            ("actions_topic", self.actions_topic.clone()),
            ("dead_letter_topic", self.dead_letter_topic.clone()),
        ] {
            if !self.state_topic.trim().is_empty()
                && other.split(',').any(|t| t == self.state_topic.trim())
            {
                c.fail(
                    "state_topic",
                    format!("is also {key}: the state topic holds credwatch's checkpoints only"),
                );
            }
        }
        if self.input_topics.is_empty() || self.input_topics.iter().any(|t| t.trim().is_empty()) {
            c.fail(
                "input_topics",
                "must name at least one topic, and no empty names",
            );
        }
        c.not_blank("actions_topic", &self.actions_topic);
        if self.log_topics.iter().any(|t| t.trim().is_empty()) {
            c.fail("log_topics", "has an empty topic name");
        }
        if let Some(t) = self
            .log_topics
            .iter()
            .find(|t| self.input_topics.contains(t))
        {
            c.fail(
                "log_topics",
                format!("{t:?} is also in input_topics: log lines are not JSON events (the log stage writes their events to input_topics)"),
            );
        }
        c.not_blank("dead_letter_topic", &self.dead_letter_topic);
        c.not_blank("group_id", &self.group_id);
        for key in self.properties.keys() {
            if let Some(why) = reserved(key) {
                c.fail(&format!("properties.{key}"), why);
            }
        }
    }
}

/// librdkafka properties that credwatch sets itself because its promises
/// rest on them (every event judged, every action delivered, at least
/// once): a `[kafka.properties]` entry may not change them. Returns why.
pub fn reserved(key: &str) -> Option<&'static str> {
    Some(match key.trim().to_ascii_lowercase().as_str() {
        "enable.auto.commit" | "auto.commit.enable" => {
            "cannot be set: credwatch commits an offset only after the event's actions are on the broker (at least once); auto-commit would skip events after a crash. Remove it"
        }
        "enable.auto.offset.store" => {
            "cannot be set: credwatch stores offsets itself once an event is fully handled (at least once). Remove it"
        }
        "isolation.level" => {
            "cannot be set: credwatch reads committed records only, as its own producer writes them. Remove it"
        }
        "acks" | "request.required.acks" => {
            "cannot be set: actions are written with acks=all so that a lock is never lost with a broker. Remove it"
        }
        "enable.idempotence" => {
            "cannot be set: the producer is idempotent so that retries neither duplicate nor reorder actions. Remove it"
        }
        "message.timeout.ms" | "delivery.timeout.ms" => {
            "cannot be set: an action is retried until the broker takes it (0 = no timeout); a timeout would drop locks. Remove it"
        }
        "enable.partition.eof" => {
            "cannot be set: the state restore relies on it. Remove it"
        }
        "group.id" => "cannot be set here: use kafka.group_id",
        "bootstrap.servers" | "metadata.broker.list" => "cannot be set here: use kafka.brokers",
        "auto.offset.reset" => {
            "cannot be set: a new consumer group starts at the earliest offset so that no event is skipped. Remove it"
        }
        _ => return None,
    })
}
