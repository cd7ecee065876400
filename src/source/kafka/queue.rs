//! One partition's messages on a librdkafka queue of their own, taken in
//! batches.
//!
//! rust-rdkafka's `PartitionQueue::poll` hands over one message per call,
//! and each call reads the clock and allocates a handle for the message's
//! event; in the kafka bench the clock alone was 30 % of the consumer
//! thread. `rd_kafka_consume_batch_queue` takes up to a turn's messages at
//! once and keeps librdkafka's bookkeeping (the application's position,
//! which a pause resumes from; stale messages dropped after a pause or a
//! restart of the partition's fetching; control records skipped).
//!
//! The queue is split from the consumer's: once split, librdkafka keeps
//! the partition's messages here through its own restarts of the
//! partition's fetching (a queue the application forwarded is not forwarded
//! again), until the queue is split anew or the consumer is gone.
//!
//! The crate denies `unsafe`; this module is allowed it for librdkafka's C
//! calls, each with what makes it sound (rust-rdkafka exposes no batch
//! read). `tests/service_kafka.rs` reads through it against tansu and the
//! embedded broker.

#![allow(unsafe_code)]

use std::ffi::{c_void, CStr, CString};
use std::ptr::{self, NonNull};
use std::sync::Arc;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::batch::Incoming;
use crate::source::event::ProfileHint;

/// What librdkafka calls when the queue goes from empty to not empty.
type Wake = Box<dyn Fn() + Send + Sync>;

/// A partition's own queue. Not `Send`: the consumer thread owns it.
pub(crate) struct PartQueue<C: ConsumerContext + 'static> {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    /// The messages of the last [`PartQueue::fill`], owned until the next.
    taken: Vec<*mut rdsys::rd_kafka_message_t>,
    /// Kept alive while librdkafka may call it (boxed twice: librdkafka
    /// holds a thin pointer).
    wake: Option<Box<Wake>>,
    /// The queue is the consumer's: the consumer must outlive it.
    _consumer: Arc<BaseConsumer<C>>,
}

impl<C: ConsumerContext + 'static> PartQueue<C> {
    /// Splits `topic`'s `partition` from the consumer's queue. `None` if
    /// librdkafka does not know the partition.
    pub(crate) fn split(
        consumer: &Arc<BaseConsumer<C>>,
        topic: &str,
        partition: i32,
    ) -> Option<PartQueue<C>> {
        let name = CString::new(topic).ok()?;
        // SAFETY: the client handle is valid while `consumer` lives, and
        // the returned queue is ours to destroy (in `Drop`).
        let raw = unsafe {
            rdsys::rd_kafka_queue_get_partition(
                consumer.client().native_ptr(),
                name.as_ptr(),
                partition,
            )
        };
        let queue = NonNull::new(raw)?;
        // SAFETY: a valid queue; forwarding to null keeps its messages here.
        unsafe { rdsys::rd_kafka_queue_forward(queue.as_ptr(), ptr::null_mut()) };
        Some(PartQueue {
            queue,
            taken: Vec::new(),
            wake: None,
            _consumer: consumer.clone(),
        })
    }

    /// Calls `wake` (from a librdkafka thread) whenever a message arrives
    /// on the queue while it is empty.
    pub(crate) fn on_arrival(&mut self, wake: impl Fn() + Send + Sync + 'static) {
        unsafe extern "C" fn call(_: *mut rdsys::rd_kafka_t, opaque: *mut c_void) {
            // SAFETY: `opaque` is the `Box<Wake>` kept in `self.wake` until
            // the callback is disabled (in `Drop`, before it is freed).
            let wake = unsafe { &*(opaque as *const Wake) };
            wake();
        }
        let boxed: Box<Wake> = Box::new(Box::new(wake));
        let opaque = &*boxed as *const Wake as *mut c_void;
        // SAFETY: a valid queue; `opaque` stays valid while enabled (a
        // replaced closure is dropped only after the new one is set).
        unsafe { rdsys::rd_kafka_queue_cb_event_enable(self.queue.as_ptr(), Some(call), opaque) };
        self.wake = Some(boxed);
    }

    /// Takes up to `max` messages (and errors) now, without waiting; the
    /// previous ones are released. How many were taken.
    pub(crate) fn fill(&mut self, max: usize) -> Result<usize, KafkaError> {
        self.release();
        self.taken.reserve(max);
        // SAFETY: a valid queue; `taken` has room for `max` pointers, and
        // librdkafka writes at most `max` and says how many.
        let n = unsafe {
            rdsys::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                0,
                self.taken.as_mut_ptr(),
                max,
            )
        };
        if n < 0 {
            // SAFETY: reads librdkafka's thread-local last error.
            let code: RDKafkaErrorCode = unsafe { rdsys::rd_kafka_last_error() }.into();
            return Err(KafkaError::MessageConsumption(code));
        }
        let n = (n as usize).min(max);
        // SAFETY: librdkafka initialised the first `n` pointers.
        unsafe { self.taken.set_len(n) };
        Ok(n)
    }

    /// The messages of the last [`PartQueue::fill`], in order: each a
    /// message (its profile hint read when `hints`) or a consumer error.
    pub(crate) fn messages(
        &self,
        hints: bool,
    ) -> impl Iterator<Item = Result<Incoming<'_>, KafkaError>> + '_ {
        self.taken.iter().map(move |&m| {
            // SAFETY: a message librdkafka handed over, valid until
            // `release`, which takes `&mut self`.
            let m = unsafe { &*m };
            if m.err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Err(KafkaError::MessageConsumption(m.err.into()));
            }
            Ok(Incoming {
                offset: m.offset,
                created: created(m),
                key: bytes(m.key, m.key_len),
                payload: bytes(m.payload, m.len),
                hint: if hints { hint(m) } else { None },
            })
        })
    }

    fn release(&mut self) {
        for m in self.taken.drain(..) {
            // SAFETY: each was handed over by librdkafka and is released once.
            unsafe { rdsys::rd_kafka_message_destroy(m) };
        }
    }
}

impl<C: ConsumerContext + 'static> Drop for PartQueue<C> {
    fn drop(&mut self) {
        self.release();
        // SAFETY: a valid queue, destroyed once; the callback is disabled
        // before its closure is freed.
        unsafe {
            rdsys::rd_kafka_queue_cb_event_enable(self.queue.as_ptr(), None, ptr::null_mut());
            rdsys::rd_kafka_queue_destroy(self.queue.as_ptr());
        }
        self.wake = None;
    }
}

/// `len` bytes at `p`, or `None` for a null pointer (no key, or a
/// tombstone), as rust-rdkafka gives them.
fn bytes<'a>(p: *mut c_void, len: usize) -> Option<&'a [u8]> {
    if p.is_null() {
        None
    } else {
        // SAFETY: librdkafka's message owns `len` bytes at `p` while the
        // message lives (the caller ties the lifetime to it).
        Some(unsafe { std::slice::from_raw_parts(p as *const u8, len) })
    }
}

/// The message's Kafka timestamp in milliseconds, as rust-rdkafka's
/// `Timestamp::to_millis` gives it.
fn created(m: &rdsys::rd_kafka_message_t) -> Option<i64> {
    let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
    // SAFETY: a valid message; `kind` is written.
    let ts = unsafe { rdsys::rd_kafka_message_timestamp(m, &mut kind) };
    if ts == -1 || kind == rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE {
        None
    } else {
        Some(ts)
    }
}

/// [`ProfileHint::HEADER`] for librdkafka.
const HINT: &CStr = c"credwatch-profile";

/// The first profile hint header of the message, as
/// [`super::batch::hint_of`] finds it.
fn hint(m: &rdsys::rd_kafka_message_t) -> Option<ProfileHint> {
    let mut headers = ptr::null_mut();
    // SAFETY: a valid message; `headers` is written on success and owned
    // by the message.
    let err = unsafe { rdsys::rd_kafka_message_headers(m, &mut headers) };
    if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
        return None;
    }
    let mut value: *const c_void = ptr::null();
    let mut size = 0usize;
    // SAFETY: valid headers and name; index 0 is the first header of that
    // name; `value` and `size` are written on success.
    let err =
        unsafe { rdsys::rd_kafka_header_get(headers, 0, HINT.as_ptr(), &mut value, &mut size) };
    if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || value.is_null() {
        return None;
    }
    // SAFETY: `size` bytes at `value`, owned by the message.
    ProfileHint::from_header(unsafe { std::slice::from_raw_parts(value as *const u8, size) })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hint_header_name_is_the_events_one() {
        assert_eq!(super::HINT.to_str(), Ok(super::ProfileHint::HEADER));
    }
}
