//! An in-process Kafka-protocol broker for `credwatch demo` and the fast
//! tests: librdkafka's mock cluster. It speaks the real wire protocol on a
//! loopback port (consumer groups, commits, offsets by time, idempotent
//! produce), keeps everything in memory, and has no CreateTopics: topics
//! are created through its own API.

use std::ffi::{CStr, CString};

use rdkafka::bindings as sys;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;

pub struct EmbeddedBroker {
    cluster: *mut sys::rd_kafka_mock_cluster_t,
    // The client that owns the cluster; dropped after it.
    _owner: BaseProducer,
}

// The mock cluster is driven by its own thread; the handle is only used to
// create topics and read the address, which librdkafka locks internally.
unsafe impl Send for EmbeddedBroker {}
unsafe impl Sync for EmbeddedBroker {}

impl EmbeddedBroker {
    /// Starts `brokers` mock brokers on loopback.
    pub fn start(brokers: i32) -> anyhow::Result<EmbeddedBroker> {
        let owner: BaseProducer = ClientConfig::new()
            .set("log_level", "3")
            .create()
            .map_err(|e| anyhow::anyhow!("cannot create the embedded broker's client: {e}"))?;
        // SAFETY: the client pointer is valid while `owner` lives, and the
        // cluster is destroyed before it (Drop below).
        let cluster =
            unsafe { sys::rd_kafka_mock_cluster_new(owner.client().native_ptr(), brokers) };
        if cluster.is_null() {
            anyhow::bail!("librdkafka could not start the embedded (mock) broker");
        }
        // A group's first join would otherwise wait 3 s for more members.
        unsafe { sys::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0) };
        Ok(EmbeddedBroker {
            cluster,
            _owner: owner,
        })
    }

    /// The `bootstrap.servers` of the embedded broker.
    pub fn bootstrap_servers(&self) -> String {
        // SAFETY: the cluster lives as long as self; the string is copied.
        unsafe { CStr::from_ptr(sys::rd_kafka_mock_cluster_bootstraps(self.cluster)) }
            .to_string_lossy()
            .into_owned()
    }

    /// Creates a topic (the mock broker has no CreateTopics request).
    pub fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        let c = CString::new(name)?;
        // SAFETY: valid cluster and NUL-terminated name.
        let err =
            unsafe { sys::rd_kafka_mock_topic_create(self.cluster, c.as_ptr(), partitions, 1) };
        if err != sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            anyhow::bail!("cannot create topic {name} on the embedded broker: {err:?}");
        }
        Ok(())
    }
}

impl EmbeddedBroker {
    /// Takes broker `id` (1-based) down or up: its connections are closed
    /// and new ones refused while it is down (for outage tests).
    pub fn set_up(&self, id: i32, up: bool) -> anyhow::Result<()> {
        // SAFETY: valid cluster; the id is checked by librdkafka.
        let err = unsafe {
            if up {
                sys::rd_kafka_mock_broker_set_up(self.cluster, id)
            } else {
                sys::rd_kafka_mock_broker_set_down(self.cluster, id)
            }
        };
        if err != sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            anyhow::bail!("cannot set embedded broker {id} up={up}: {err:?}");
        }
        Ok(())
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        // SAFETY: created in `start`, destroyed once, before its owner.
        unsafe { sys::rd_kafka_mock_cluster_destroy(self.cluster) };
        let _ = self._owner.flush(std::time::Duration::from_millis(10));
    }
}
