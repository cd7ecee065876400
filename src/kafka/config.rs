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
        /// How far back (Kafka message time) the state of a newly assigned
        /// partition is rebuilt from the partition itself, in seconds. A day
        /// covers every detector's window except the two-week sending
        /// baseline of `send_volume`. Retention must keep at least this.
        pub restore_secs: u64 = 86_400,
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
        if self.input_topics.is_empty() || self.input_topics.iter().any(|t| t.trim().is_empty()) {
            c.fail(
                "input_topics",
                "must name at least one topic, and no empty names",
            );
        }
        c.not_blank("actions_topic", &self.actions_topic);
        c.not_blank("dead_letter_topic", &self.dead_letter_topic);
        c.not_blank("group_id", &self.group_id);
    }
}
