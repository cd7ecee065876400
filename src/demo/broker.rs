//! An in-process Kafka-protocol broker for `credwatch demo` and the fast
//! tests: librdkafka's mock cluster, through rdkafka's safe
//! [`MockCluster`](rdkafka::mocking::MockCluster). It speaks the real wire
//! protocol on a loopback port (consumer groups, commits, offsets by time,
//! idempotent produce), keeps everything in memory, and has no
//! CreateTopics: topics are created through its own API.

use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, DefaultProducerContext, Producer as _};
use rdkafka::ClientConfig;

/// The embedded broker cannot do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot start the embedded (mock) Kafka broker: {0}")]
    Start(#[source] KafkaError),
    #[error("cannot create topic {topic} on the embedded broker: {source}")]
    Topic { topic: String, source: KafkaError },
    #[error("cannot set embedded broker {id} up={up}: {source}")]
    Broker {
        id: i32,
        up: bool,
        source: KafkaError,
    },
}

/// The mock cluster belongs to this client (created by its
/// `test.mock.num.brokers`) and ends with it.
pub struct EmbeddedBroker {
    owner: BaseProducer,
}

impl EmbeddedBroker {
    /// Starts `brokers` mock brokers on loopback.
    pub fn start(brokers: i32) -> Result<EmbeddedBroker, BrokerError> {
        let owner: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", brokers.to_string())
            .set("log_level", "3")
            .create()
            .map_err(BrokerError::Start)?;
        let b = EmbeddedBroker { owner };
        b.cluster()?;
        // A group's first join would otherwise wait 3 s for more members;
        // rdkafka's MockCluster has no call for this setting.
        #[allow(unsafe_code)]
        // SAFETY: `native_ptr` is the live handle of `owner`, which has a
        // mock cluster (checked just above); librdkafka locks the cluster
        // internally, and the cluster lives as long as `owner`.
        unsafe {
            let cluster =
                rdkafka::bindings::rd_kafka_handle_mock_cluster(b.owner.client().native_ptr());
            rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0);
        }
        Ok(b)
    }

    fn cluster(&self) -> Result<MockCluster<'_, DefaultProducerContext>, BrokerError> {
        self.owner
            .client()
            .mock_cluster()
            .ok_or(BrokerError::Start(KafkaError::MockCluster(
                rdkafka::types::RDKafkaErrorCode::Fail,
            )))
    }

    /// The `bootstrap.servers` of the embedded broker.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster()
            .map(|c| c.bootstrap_servers())
            .unwrap_or_default()
    }

    /// Creates a topic (the mock broker has no CreateTopics request).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), BrokerError> {
        self.cluster()?
            .create_topic(name, partitions, 1)
            .map_err(|source| BrokerError::Topic {
                topic: name.to_string(),
                source,
            })
    }

    /// Takes broker `id` (1-based) down or up: its connections are closed
    /// and new ones refused while it is down (for outage tests).
    pub fn set_up(&self, id: i32, up: bool) -> Result<(), BrokerError> {
        let c = self.cluster()?;
        let r = if up {
            c.broker_up(id)
        } else {
            c.broker_down(id)
        };
        r.map_err(|source| BrokerError::Broker { id, up, source })
    }
}
