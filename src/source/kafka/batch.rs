//! Batching: messages of one partition are copied into one buffer and
//! handed to the partition's worker when big enough, old enough, or asked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Part;
use crate::source::event::ProfileHint;

/// Messages of one partition for its worker, in one buffer.
pub struct Batch {
    pub(crate) part: Arc<Part>,
    pub(crate) restore: bool,
    data: Vec<u8>,
    pub(crate) msgs: Vec<Msg>,
}

pub(crate) struct Msg {
    pub(crate) offset: i64,
    /// The message's Kafka timestamp (milliseconds), if it has one.
    pub(crate) created: Option<i64>,
    pub(crate) key: (u32, u32),
    /// `None`: a message without a value (a tombstone).
    pub(crate) payload: Option<(u32, u32)>,
    /// The account stage's profile hint (a header on the sources topic).
    pub(crate) hint: Option<ProfileHint>,
    pub(crate) received: Instant,
}

/// One message as read from Kafka, before it is copied into a batch.
pub(crate) struct Incoming<'a> {
    pub(crate) offset: i64,
    pub(crate) created: Option<i64>,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) payload: Option<&'a [u8]>,
    pub(crate) hint: Option<ProfileHint>,
}

impl<'a> Incoming<'a> {
    /// `hints`: whether this input reads the account stage's profile
    /// hints. Only then are the headers parsed: librdkafka parses a
    /// message's header block on first access, a fifth of the consumer
    /// thread's time where no header is ever used.
    pub(crate) fn of<M: rdkafka::Message>(m: &'a M, hints: bool) -> Incoming<'a> {
        Incoming {
            offset: m.offset(),
            created: m.timestamp().to_millis(),
            key: m.key(),
            payload: m.payload(),
            hint: if hints { hint_of(m) } else { None },
        }
    }
}

/// The profile hint header of a message, if it has one.
pub(crate) fn hint_of<M: rdkafka::Message>(m: &M) -> Option<ProfileHint> {
    use rdkafka::message::Headers;
    let h = m.headers()?;
    h.iter()
        .find(|x| x.key == ProfileHint::HEADER)
        .and_then(|x| ProfileHint::from_header(x.value?))
}

impl Batch {
    fn new(part: Arc<Part>, restore: bool) -> Batch {
        Batch {
            part,
            restore,
            data: Vec::with_capacity(64 * 1024),
            msgs: Vec::with_capacity(256),
        }
    }

    fn push(&mut self, m: Incoming<'_>, received: Instant) {
        let Incoming {
            offset,
            created,
            key,
            payload,
            hint,
        } = m;
        let mut put = |b: &[u8]| {
            let start = self.data.len() as u32;
            self.data.extend_from_slice(b);
            (start, self.data.len() as u32)
        };
        let key = put(key.unwrap_or_default());
        let payload = payload.map(put);
        self.msgs.push(Msg {
            offset,
            created,
            key,
            payload,
            hint,
            received,
        });
    }

    pub(crate) fn slice(&self, r: (u32, u32)) -> &[u8] {
        &self.data[r.0 as usize..r.1 as usize]
    }
}

/// Collects messages into per-partition batches and sends them to the
/// workers when big enough or when asked.
pub struct Batcher {
    open: Vec<Batch>,
    last: usize,
    since: Instant,
    restore: bool,
}

const BATCH_MESSAGES: usize = 512;
const BATCH_BYTES: usize = 256 * 1024;
const BATCH_AGE: Duration = Duration::from_millis(5);

impl Batcher {
    pub(crate) fn new(restore: bool) -> Batcher {
        Batcher {
            open: Vec::new(),
            last: 0,
            since: Instant::now(),
            restore,
        }
    }

    /// Adds a message received at `now` (the caller reads the clock once
    /// per message for this and [`Batcher::due`]).
    pub(crate) fn push(
        &mut self,
        send: &dyn Fn(Batch),
        part: &Arc<Part>,
        m: Incoming<'_>,
        now: Instant,
    ) {
        let i = match self.open.get(self.last) {
            Some(b) if Arc::ptr_eq(&b.part, part) => self.last,
            _ => match self.open.iter().position(|b| Arc::ptr_eq(&b.part, part)) {
                Some(i) => i,
                None => {
                    if self.open.is_empty() {
                        self.since = now;
                    }
                    self.open.push(Batch::new(part.clone(), self.restore));
                    self.open.len() - 1
                }
            },
        };
        self.last = i;
        let b = &mut self.open[i];
        b.push(m, now);
        if b.msgs.len() >= BATCH_MESSAGES || b.data.len() >= BATCH_BYTES {
            send(self.open.swap_remove(i));
        }
    }

    /// Whether the open batches are old enough at `now` to be sent.
    pub(crate) fn due(&self, now: Instant) -> bool {
        !self.open.is_empty() && now.saturating_duration_since(self.since) >= BATCH_AGE
    }

    /// Sends every open batch (or only those of `only`).
    pub(crate) fn flush(&mut self, send: &dyn Fn(Batch), only: Option<&dyn Fn(&Part) -> bool>) {
        let mut i = 0;
        while i < self.open.len() {
            if only.is_none_or(|f| f(&self.open[i].part)) {
                let b = self.open.swap_remove(i);
                if !b.msgs.is_empty() {
                    send(b);
                }
            } else {
                i += 1;
            }
        }
        self.last = 0;
        self.since = Instant::now();
    }
}
