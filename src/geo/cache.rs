//! GeoIP's lookup cache: direct-mapped slots, each a block or an
//! address with its point, read without a lock.

use std::net::IpAddr;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use super::{Anonymity, Point};
use crate::time::Millis;

/// Sets a block's slot apart from the slot of the address equal to it.
const BLOCK_TAG: u64 = 0x9e37_79b9_7f4a_7c15;

/// What a slot of the lookup cache holds: a block or an address, its
/// point, and when (event time) it was looked up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Cached {
    pub(super) ip: IpAddr,
    pub(super) block: bool,
    pub(super) point: Point,
    pub(super) at: Millis,
}

const WORDS: usize = 6;

impl Cached {
    /// Flag bits of the last word.
    const V6: u64 = 1;
    const BLOCK: u64 = 1 << 1;
    const COORDS: u64 = 1 << 2;
    const ANON: [u64; 6] = [1 << 3, 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8];
    /// A slot ever written (a fresh slot is all zeros).
    const FULL: u64 = 1 << 9;

    fn pack(&self) -> [u64; WORDS] {
        let (bits, v6) = match self.ip {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 0),
            IpAddr::V6(a) => (u128::from(a), Self::V6),
        };
        let p = &self.point;
        let (lat, lon) = p.coords.unwrap_or_default();
        let a = &p.anonymity;
        let anon = [
            a.anonymous,
            a.vpn,
            a.hosting,
            a.public_proxy,
            a.tor,
            a.residential_proxy,
        ];
        let mut flags = Self::FULL | v6;
        flags |= if self.block { Self::BLOCK } else { 0 };
        flags |= if p.coords.is_some() { Self::COORDS } else { 0 };
        for (set, bit) in anon.iter().zip(Self::ANON) {
            flags |= if *set { bit } else { 0 };
        }
        [
            bits as u64,
            (bits >> 64) as u64,
            self.at as u64,
            u64::from(lat.to_bits()) | u64::from(lon.to_bits()) << 32,
            u64::from(p.asn)
                | u64::from(p.accuracy_km) << 32
                | u64::from(p.country[0]) << 48
                | u64::from(p.country[1]) << 56,
            flags,
        ]
    }

    fn unpack(w: [u64; WORDS]) -> Option<Cached> {
        let flags = w[5];
        if flags & Self::FULL == 0 {
            return None;
        }
        let bits = u128::from(w[0]) | u128::from(w[1]) << 64;
        let ip = if flags & Self::V6 != 0 {
            IpAddr::V6(bits.into())
        } else {
            IpAddr::V4((bits as u32).into())
        };
        let coords = (flags & Self::COORDS != 0).then(|| {
            (
                f32::from_bits(w[3] as u32),
                f32::from_bits((w[3] >> 32) as u32),
            )
        });
        let anon = Self::ANON.map(|bit| flags & bit != 0);
        Some(Cached {
            ip,
            block: flags & Self::BLOCK != 0,
            at: w[2] as Millis,
            point: Point {
                coords,
                accuracy_km: (w[4] >> 32) as u16,
                anonymity: Anonymity {
                    anonymous: anon[0],
                    vpn: anon[1],
                    hosting: anon[2],
                    public_proxy: anon[3],
                    tor: anon[4],
                    residential_proxy: anon[5],
                },
                country: [(w[4] >> 48) as u8, (w[4] >> 56) as u8],
                asn: w[4] as u32,
            },
        })
    }
}

/// One slot of the lookup cache, read without taking a lock: a sequence
/// lock made of atomics. A hit is a few plain loads, where a mutex was a
/// locked instruction that on x86 waits for every load before it, so
/// that the slot's cache miss could not overlap the event's others. A
/// writer makes the count odd while it writes; a reader that sees it odd
/// or changed takes the slot as empty (and looks the address up). Two
/// writers at once: the second leaves the slot to the first.
#[repr(align(64))]
#[derive(Default)]
pub(super) struct Slot {
    seq: AtomicU64,
    words: [AtomicU64; WORDS],
}

impl Slot {
    pub(super) fn load(&self) -> Option<Cached> {
        let before = self.seq.load(Ordering::Acquire);
        if before & 1 == 1 {
            return None;
        }
        let w = std::array::from_fn(|i| self.words[i].load(Ordering::Relaxed));
        fence(Ordering::Acquire);
        if self.seq.load(Ordering::Relaxed) != before {
            return None;
        }
        Cached::unpack(w)
    }

    pub(super) fn store(&self, c: &Cached) {
        let seq = self.seq.load(Ordering::Relaxed);
        if seq & 1 == 1
            || self
                .seq
                .compare_exchange(
                    seq,
                    seq.wrapping_add(1),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        fence(Ordering::Release);
        for (w, v) in self.words.iter().zip(c.pack()) {
            w.store(v, Ordering::Relaxed);
        }
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }
}

/// A direct-mapped cache: slot = hash(address) scaled to the size. No
/// allocation, no global clear; a colliding address simply takes the slot
/// over.
pub(super) struct Cache {
    slots: Vec<Slot>,
    /// The secret hash seed (random per process; not the tables' key,
    /// which may still be set from durable state after this is made).
    seed: u64,
    /// How long (event time) an answer is used.
    ttl: Millis,
}

impl Cache {
    pub(super) fn new(size: usize, ttl: Millis) -> Cache {
        use std::hash::BuildHasher;
        Cache {
            slots: (0..size.max(1)).map(|_| Slot::default()).collect(),
            seed: std::hash::RandomState::new().hash_one(0x0067_656f_6970_u64),
            ttl,
        }
    }

    /// The point cached for `key` (a block when `block`), if it is there
    /// and was looked up within the time-to-live of `now`.
    pub(super) fn get(&self, key: IpAddr, block: bool, now: Millis) -> Option<Point> {
        let c = self.slot(key, block).load()?;
        (c.ip == key
            && c.block == block
            && now.saturating_sub(c.at) < self.ttl
            && c.at <= now.saturating_add(self.ttl))
        .then_some(c.point)
    }

    pub(super) fn put(&self, key: IpAddr, block: bool, point: Point, now: Millis) {
        self.slot(key, block).store(&Cached {
            ip: key,
            block,
            point,
            at: now,
        });
    }

    /// Brings the slot of `block` into the processor's cache.
    pub(super) fn warm(&self, block: IpAddr) {
        std::hint::black_box(self.slot(block, true).seq.load(Ordering::Relaxed));
    }

    fn slot(&self, ip: IpAddr, block: bool) -> &Slot {
        // A multiply-fold under a secret seed: cheaper than the tables'
        // SipHash, and an outsider still cannot aim addresses at one slot
        // (which would only cost lookups). A block and an address of the
        // same value hash apart.
        let bits = match ip {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a) ^ (1 << 127),
        };
        let seed = self.seed ^ if block { BLOCK_TAG } else { 0 };
        let x = (bits as u64 ^ seed).wrapping_mul(0x9fb2_1c65_1e98_df25)
            ^ ((bits >> 64) as u64)
                .wrapping_add(seed)
                .wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        let h = x ^ (x >> 29);
        // The hash's high bits scaled to the slots (no division).
        &self.slots[((u128::from(h) * self.slots.len() as u128) >> 64) as usize]
    }
}
