//! Bounded, time-evicted concurrent tables: where detectors keep what they
//! remember about accounts and source addresses.
//!
//! Every table has two bounds:
//!
//! * **time**: an entry whose newest event is older than the table's
//!   time-to-live (plus the allowed disorder) behind the event-time
//!   watermark is removed by the periodic sweep, and each entry drops its
//!   own old items whenever it is touched;
//! * **size**: when a new key would take the table past its cap, the ~10 %
//!   of entries with the lowest *score* are evicted in one pass. The score is
//!   the entry's last activity plus a quarter of the table's time-to-live
//!   for each item of history beyond the first (at most three), and the
//!   cut-off is the 10th percentile of scores in a sample of up to 1024
//!   entries. A flood of junk keys with one event each therefore pushes out
//!   other one-event entries, oldest first, while an account that is being
//!   attacked right now (many recent failures) stays.
//!
//! Keys are 64-bit keyed hashes (see [`crate::source::event::account_key`]),
//! so a table never stores the account name itself.

pub mod codec;
mod items;
mod presence;
pub mod profile;
mod recent;
pub mod snapshot;
mod sweep;
mod table;

pub use items::{insert_sorted, prune_sorted, HourCount, Items};
pub use recent::{remember, RecentLog, Timed};
pub use table::{Held, KeyHasher, Table};

use crate::section::Checks;
use crate::time::Millis;

crate::section! {
    /// `[state]`: bounds on what is remembered.
    pub struct StateConfig {
        /// Cap on accounts tracked by each per-account table (plan on
        /// about 400 bytes per capped account or source when full; see
        /// docs/architecture.md for sizing).
        pub max_accounts: usize = 2_000_000,
        /// Cap on source addresses tracked.
        pub max_sources: usize = 1_000_000,
        /// Cap on entries (logins, failures) kept per account or source.
        pub max_entries_per_key: usize = 32,
        /// Events may arrive this many seconds out of order per account.
        pub max_disorder_secs: u64 = 300,
        /// How often (event time) expired entries are swept, in seconds.
        pub sweep_interval_secs: u64 = 60,
    }
}

impl StateConfig {
    pub fn check(&self, c: &mut Checks) {
        c.positive("max_accounts", self.max_accounts as u64);
        c.positive("max_sources", self.max_sources as u64);
        c.positive("max_entries_per_key", self.max_entries_per_key as u64);
        c.positive("sweep_interval_secs", self.sweep_interval_secs);
    }
}

/// What a table (and the detector that owns it) is keyed by. A partition
/// that moves away takes its accounts' entries with it; a stage that reads
/// logins partitioned by address runs only source-keyed detectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyedBy {
    /// The normalised account.
    #[default]
    Account,
    /// The client's address.
    Source,
}

impl KeyedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyedBy::Account => "account",
            KeyedBy::Source => "source",
        }
    }
}

/// What a table needs of its values.
pub trait Entry: Send + Sync {
    /// Event time of the newest thing this entry remembers.
    fn last_seen(&self) -> Millis;
    /// Forgets everything older than `horizon`; returns true if nothing is left.
    fn prune(&mut self, horizon: Millis) -> bool;
    /// How much history the entry holds (its item count); see the eviction
    /// policy in the module documentation.
    fn weight(&self) -> usize {
        1
    }
    /// Reads what judging first reads of this entry, to bring it into the
    /// processor's cache ([`Table::warm`]); the answer means nothing.
    fn touch(&self) -> u64 {
        self.last_seen() as u64
    }
}

/// Shards of every table. A thread that judges whole shards (see
/// [`shard_of`]) never writes a lock another thread writes. Sixteen, not
/// more: every lock word is on a cache line of its own, and with 64 the
/// tables' lock lines alone (some 100 KB) no longer stayed in a core's
/// cache, so taking a lock was itself a miss (BENCHMARKS.md, issue 18,
/// tenth look; 8 and 32 were slower too).
pub const SHARDS: usize = 16;

/// The shard a key lands in (the tables' keys are already hashes): the
/// bits just below the top 7 (53 to 56 with 16 shards), apart from those
/// top bits and the low bits the shard's own hash map uses. The parallel
/// replay gives each thread whole shards.
pub fn shard_of(key: u64) -> usize {
    ((key << 7) >> (64 - SHARDS.trailing_zeros())) as usize
}

/// Counts a table reports (exported as gauges and counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    pub name: &'static str,
    pub keyed_by: KeyedBy,
    pub len: usize,
    pub cap: usize,
    pub evicted_expired: u64,
    pub evicted_cap: u64,
    /// How long an entry is kept after its last event.
    pub ttl: Millis,
}

/// What the engine needs of any table, whatever its values: to sweep it
/// and to report on it. Detectors hand their tables over as `&dyn Swept`
/// ([`crate::detect::Detector::state`]) instead of each sweeping their own.
pub trait Swept: Send + Sync {
    /// Removes what is older than `watermark - ttl - slack`, in steps:
    /// begins (false: nothing is old enough, no steps needed), sweeps some
    /// of the [`SHARDS`] shards at a time, ends.
    fn sweep_begin(&self, watermark: Millis, slack: Millis) -> bool;
    fn sweep_shards(&self, shards: std::ops::Range<usize>);
    fn sweep_end(&self);
    /// Sized by the last minutes' events rather than by accounts: swept
    /// on its own, whole, every `state.sweep_interval_secs` of event time
    /// once a quarter of its [`Swept::items`] have passed in events (the
    /// accounts' tables wait for an eighth of their entries, which at a
    /// million accounts is an hour of events).
    fn short_lived(&self) -> bool {
        false
    }
    /// What a sweep visits: the entries, or a short-lived table's items.
    fn items(&self) -> usize {
        self.stats().len
    }
    fn stats(&self) -> TableStats;
    /// Removes the entries whose key `drop` picks (the accounts of a Kafka
    /// partition that moved to another instance); returns how many.
    fn forget(&self, drop: &dyn Fn(u64) -> bool) -> usize;
    /// Removes one key's entry (an account unlocked, which starts afresh);
    /// true if there was one.
    fn remove(&self, key: u64) -> bool;
    /// Appends `key`'s entry in its binary form ([`codec`]); false if there
    /// is none (durable state, [`snapshot`]).
    fn save(&self, key: u64, out: &mut Vec<u8>) -> bool;
    /// Installs `key`'s entry read back from its binary form, replacing any.
    fn load(&self, key: u64, r: &mut codec::Reader<'_>) -> Result<(), codec::CodecError>;
}
