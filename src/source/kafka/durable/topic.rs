//! The state topic: created if missing and checked to be compacted, and
//! the hash key of the state tables that every instance of the group
//! shares, kept on it.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{ADMIN_TIMEOUT, READ_TIMEOUT};
use crate::kafka::{client_config, KafkaConfig, Logger, Quiet, Role};

/// Why the state topic cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateTopicError {
    #[error("cannot create kafka.state_topic {topic:?}: {source}. Create it with cleanup.policy=compact and as many partitions as the input topic, or give credwatch the right to create topics")]
    Create { topic: String, source: KafkaError },
    #[error("kafka.state_topic {topic:?} has cleanup.policy={policy}: durable state needs a compacted topic (cleanup.policy=compact), or old checkpoints would be deleted by retention while still needed. Change it with kafka-configs --alter --add-config cleanup.policy=compact")]
    NotCompacted { topic: String, policy: String },
    #[error("cannot read the metadata of kafka.state_topic {topic:?}: {source}")]
    Metadata { topic: String, source: KafkaError },
    #[error("cannot read or write the hash key on kafka.state_topic {topic:?}: {why}")]
    Key { topic: String, why: String },
    #[error("this process already keys its state with another hash key than the one on kafka.state_topic {topic:?}")]
    KeyInUse { topic: String },
}

/// The prefix of the records that hold the group's hash key.
const KEY_PREFIX: &str = "credwatch-hash-key/";

/// Establishes the hash key of the state tables that every instance of the
/// group shares (accounts are keyed by a secret-keyed hash, and a restored
/// table must be keyed as the process that wrote it): the first key record
/// on partition 0 of the state topic, written by the first instance that
/// found none. Each candidate has a key of its own, so compaction keeps them
/// all, and every instance agrees on the one with the lowest offset.
pub fn establish_key(k: &KafkaConfig) -> Result<(), StateTopicError> {
    let topic = k.state_topic.trim().to_string();
    let err = |why: String| StateTopicError::Key {
        topic: topic.clone(),
        why,
    };
    let first = |consumer: &BaseConsumer<Quiet>| -> Result<Option<[u64; 2]>, StateTopicError> {
        let (low, high) = consumer
            .fetch_watermarks(&topic, 0, ADMIN_TIMEOUT)
            .map_err(|e| err(e.to_string()))?;
        if high <= low {
            return Ok(None);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Beginning)
            .map_err(|e| err(e.to_string()))?;
        consumer.assign(&tpl).map_err(|e| err(e.to_string()))?;
        let deadline = Instant::now() + READ_TIMEOUT;
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let ours = m
                        .key()
                        .is_some_and(|key| key.starts_with(KEY_PREFIX.as_bytes()));
                    if let (true, Some(v)) = (ours, m.payload()) {
                        if v.len() == 16 {
                            let a = u64::from_le_bytes(v[..8].try_into().expect("8"));
                            let b = u64::from_le_bytes(v[8..].try_into().expect("8"));
                            return Ok(Some([a, b]));
                        }
                    }
                    if m.offset() + 1 >= high {
                        return Ok(None);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => return Ok(None),
                _ => {}
            }
        }
        Err(err(format!(
            "reading partition 0 took longer than {} s",
            READ_TIMEOUT.as_secs()
        )))
    };
    let consumer: BaseConsumer<Quiet> = client_config(k, Role::Restorer)
        .create_with_context(Quiet(Logger::new("state-key", None)))
        .map_err(|e| err(e.to_string()))?;
    let key = match first(&consumer)? {
        Some(key) => key,
        None => {
            let r = std::hash::RandomState::new();
            use std::hash::BuildHasher;
            let mine = [r.hash_one(1u8), r.hash_one(2u8)];
            let mut v = Vec::with_capacity(16);
            v.extend_from_slice(&mine[0].to_le_bytes());
            v.extend_from_slice(&mine[1].to_le_bytes());
            let producer: rdkafka::producer::BaseProducer = client_config(k, Role::Producer)
                .create()
                .map_err(|e| err(e.to_string()))?;
            let name = format!("{KEY_PREFIX}{:016x}", r.hash_one(3u8));
            producer
                .send(
                    rdkafka::producer::BaseRecord::<str, [u8]>::to(&topic)
                        .partition(0)
                        .key(name.as_str())
                        .payload(&v[..]),
                )
                .map_err(|(e, _)| err(e.to_string()))?;
            rdkafka::producer::Producer::flush(&producer, ADMIN_TIMEOUT)
                .map_err(|e| err(e.to_string()))?;
            tracing::info!(topic = %topic, "No hash key on the state topic yet: wrote one.");
            // Another instance may have written one first: the lowest wins.
            first(&consumer)?.ok_or_else(|| err("the key just written is not there".into()))?
        }
    };
    if !crate::source::event::set_state_key(key) {
        return Err(StateTopicError::KeyInUse { topic });
    }
    Ok(())
}

/// Makes sure the state topic exists and is compacted; returns its
/// partition count. A broker that cannot describe topic configs is
/// trusted, with a warning.
pub fn ensure_topic(k: &KafkaConfig) -> Result<usize, StateTopicError> {
    let topic = k.state_topic.trim().to_string();
    let probe: BaseConsumer<Quiet> = client_config(k, Role::Restorer)
        .create_with_context(Quiet(Logger::new("state", None)))
        .map_err(|source| StateTopicError::Metadata {
            topic: topic.clone(),
            source,
        })?;
    let partitions = |name: &str| -> Result<usize, StateTopicError> {
        let md = probe
            .fetch_metadata(Some(name), ADMIN_TIMEOUT)
            .map_err(|source| StateTopicError::Metadata {
                topic: name.to_string(),
                source,
            })?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none())
            .map_or(0, |t| t.partitions().len()))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the admin client");
    let admin: AdminClient<DefaultClientContext> = client_config(k, Role::Restorer)
        .create()
        .map_err(|source| StateTopicError::Metadata {
            topic: topic.clone(),
            source,
        })?;
    let opts = AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT));
    let mut n = partitions(&topic)?;
    if n == 0 {
        let want = k
            .input_topics
            .iter()
            .map(|t| partitions(t))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .max()
            .unwrap_or(1)
            .max(1);
        let new = NewTopic::new(&topic, want as i32, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact");
        let created = rt.block_on(admin.create_topics([&new], &opts));
        match created.map(|mut r| r.pop()) {
            Ok(Some(Ok(_))) | Ok(None) => {}
            Ok(Some(Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)))) => {}
            Ok(Some(Err((_, code)))) => {
                return Err(StateTopicError::Create {
                    topic,
                    source: KafkaError::AdminOp(code),
                })
            }
            Err(source) => return Err(StateTopicError::Create { topic, source }),
        }
        tracing::info!(topic = %topic, partitions = want, "Created the durable state topic (cleanup.policy=compact).");
        for _ in 0..50 {
            n = partitions(&topic)?;
            if n > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let described = rt.block_on(admin.describe_configs([&ResourceSpecifier::Topic(&topic)], &opts));
    let policy = described
        .ok()
        .and_then(|mut v| v.pop())
        .and_then(|r| r.ok())
        .and_then(|r| {
            r.entries
                .iter()
                .find(|e| e.name == "cleanup.policy")
                .and_then(|e| e.value.clone())
        });
    match policy {
        Some(p) if !p.split(',').any(|x| x.trim() == "compact") => {
            return Err(StateTopicError::NotCompacted { topic, policy: p })
        }
        Some(_) => {}
        None => {
            tracing::warn!(topic = %topic, "The broker did not say the state topic's cleanup.policy; make sure it is compact, or retention will delete checkpoints still needed.")
        }
    }
    Ok(n.max(1))
}
