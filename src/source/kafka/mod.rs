//! The Kafka source: the consumer group member that reads the input
//! topics ([`consumer`]), the partitions it owns ([`Part`]), the batches it
//! hands to the workers ([`batch`]), and the restore of a newly assigned
//! partition's state from its recent past ([`restore`]).
//!
//! At least once: an offset is committed only when every message before
//! it is judged and every record it caused (actions, dead letters) is
//! acknowledged by the broker ([`crate::kafka::Tracker`]).

pub mod batch;
mod by_time;
pub mod consumer;
pub mod durable;
mod input;
mod partition;
mod queue;
pub mod restore;

use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Instant;

pub use batch::{Batch, Batcher, Feed};
pub use consumer::{describe, ConsumerCtx};
pub use input::Input;
pub(crate) use partition::KeyBudget;
pub use partition::Part;

/// What the consumer thread hands a worker.
pub enum Work {
    Batch(Batch),
    /// Drop these partitions' accounts; answer when done.
    Revoke(Vec<Arc<Part>>, SyncSender<()>),
    /// The restore of this partition is complete (everything before this
    /// in the queue was its restore).
    Restored(Arc<Part>, Instant),
    /// Answer when everything before this is judged.
    Drain(SyncSender<()>),
    Stop,
}
