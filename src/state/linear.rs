//! A shard's map from a 64-bit key (already a uniform hash) to its entry,
//! grown by linear hashing: one bucket split per few inserts, never a
//! rehash of the whole map ([`LinearMap`]).
//!
//! **Why not `HashMap`.** A hash map doubles: it moves every entry into a
//! table twice the size, which is half empty afterwards. Uniform keys fill
//! every shard of a table together, so all 64 shards double within a few
//! thousand events of each other. At a million accounts the profiles'
//! shards had just doubled: the table was half empty (about 350 bytes of
//! memory per 176-byte entry), and the kernel zeroing its fresh pages, plus
//! the moves, were a sixth of the replay's time. Here the map grows by one
//! bucket at a time, so it stays about 80 % full at every size, and no
//! insert ever waits for more than one bucket's entries to move.
//!
//! **Layout.** A lookup costs one cache miss where it can, as in
//! `HashMap`. Each bucket has a word of metadata, kept in a dense array
//! beside the buckets (a million accounts' words take about 1 MB, so they
//! mostly stay in the cache): a 7-bit tag of each of its seven keys, its
//! count and whether it spilled. A lookup reads the word, and reads only
//! the slots whose tag matches; a slot holds its key beside its entry. A
//! bucket that gets more than seven keys keeps the rest in an overflow
//! list. Buckets live in segments that never move: segments of 1, 1, 2, 4
//! ... 32 buckets, so that a small map stays small, then of 64 each. A new
//! segment is filled as the next 64 splits need it, so the map holds at
//! most 63 empty buckets.
//!
//! **Addressing** (Litwin's linear hashing): with `2^level` buckets at the
//! start of a round and `next` of them split so far, a key's bucket is its
//! low `level` bits, or its low `level + 1` bits if that bucket is already
//! split. When the map holds more than [`LOAD`] of its slots, bucket `next`
//! is split: the keys with bit `level` set move to the new bucket
//! `next + 2^level`.

/// Slots in a bucket itself (a tag byte each in its metadata word).
const SLOTS: usize = 7;

/// The share of the buckets' slots that may be used before a bucket is
/// split, as a fraction of 10: 8 (80 %) leaves about one key in ten in an
/// overflow list.
const LOAD: usize = 8;

/// Buckets per segment once the map has 64 of them (the first 64 come in
/// segments of 1, 1, 2, 4, ... 32, so that a small map stays small).
const SEGMENT: usize = 256;

/// The metadata word's top byte: the count in its low bits, and this bit
/// when the bucket's overflow list holds entries.
const SPILLED: u64 = 1 << 63;

/// A key's tag: its top 7 bits (the low bits pick the bucket, and bits 51
/// to 56, the shard, are the same for every key of a map).
fn tag(key: u64) -> u64 {
    key >> 57
}

/// Entries held in the slots, from the metadata word.
fn count(meta: u64) -> usize {
    ((meta >> 56) & 7) as usize
}

struct Bucket<V> {
    /// `slots[i]` is `Some` for `i` below the count.
    slots: [Option<(u64, V)>; SLOTS],
    /// Entries beyond `SLOTS`: only a full bucket spills.
    more: Vec<(u64, V)>,
}

impl<V> Default for Bucket<V> {
    fn default() -> Self {
        Bucket {
            slots: Default::default(),
            more: Vec::new(),
        }
    }
}

/// Where a key was found in its bucket.
#[derive(Clone, Copy)]
enum Slot {
    Inline(usize),
    More(usize),
}

/// A bucket with its metadata word, borrowed to change them together.
struct BucketMut<'a, V> {
    meta: &'a mut u64,
    b: &'a mut Bucket<V>,
}

/// Where the key is in `b`, whose metadata word is `meta`. The tags are
/// compared all at once (a zero byte of `meta ^ tags` is a match; the
/// borrow may flag a byte above a match too, which the key comparison
/// rules out), so that the usual lookup, one candidate that is the key,
/// takes no branch the processor cannot predict, and lookups in a row
/// overlap their cache misses.
fn find<V>(meta: u64, b: &Bucket<V>, key: u64) -> Option<Slot> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let x = meta ^ (tag(key) * ONES);
    let lanes = (1u64 << (8 * count(meta))) - 1;
    let mut hits = x.wrapping_sub(ONES) & !x & HIGHS & lanes;
    while hits != 0 {
        let i = (hits.trailing_zeros() / 8) as usize;
        if b.slots[i].as_ref().is_some_and(|(k, _)| *k == key) {
            return Some(Slot::Inline(i));
        }
        hits &= hits - 1;
    }
    if meta & SPILLED == 0 {
        return None;
    }
    b.more.iter().position(|(k, _)| *k == key).map(Slot::More)
}

fn slot_ref<V>(b: &Bucket<V>, slot: Slot) -> &V {
    match slot {
        Slot::Inline(i) => &b.slots[i].as_ref().expect("below the count").1,
        Slot::More(i) => &b.more[i].1,
    }
}

impl<'a, V> BucketMut<'a, V> {
    fn len(&self) -> usize {
        count(*self.meta) + self.b.more.len()
    }

    fn find(&self, key: u64) -> Option<Slot> {
        find(*self.meta, self.b, key)
    }

    fn at(self, slot: Slot) -> &'a mut V {
        match slot {
            Slot::Inline(i) => &mut self.b.slots[i].as_mut().expect("below the count").1,
            Slot::More(i) => &mut self.b.more[i].1,
        }
    }

    fn set_count(&mut self, n: usize) {
        *self.meta = (*self.meta & !(7 << 56)) | ((n as u64) << 56);
    }

    fn set_tag(&mut self, i: usize, key: u64) {
        *self.meta = (*self.meta & !(0xff << (8 * i))) | (tag(key) << (8 * i));
    }

    /// Adds an entry whose key is not here; gives where it went.
    fn push(&mut self, key: u64, v: V) -> Slot {
        let n = count(*self.meta);
        if n < SLOTS {
            self.b.slots[n] = Some((key, v));
            self.set_tag(n, key);
            self.set_count(n + 1);
            return Slot::Inline(n);
        }
        self.b.more.push((key, v));
        *self.meta |= SPILLED;
        Slot::More(self.b.more.len() - 1)
    }

    /// Takes the entry at `slot` out.
    fn take(&mut self, slot: Slot) -> V {
        let v = match slot {
            Slot::Inline(i) => self.take_inline(i).1,
            Slot::More(i) => self.b.more.swap_remove(i).1,
        };
        self.settle();
        v
    }

    /// Takes inline entry `i` out; the last inline entry takes its place.
    fn take_inline(&mut self, i: usize) -> (u64, V) {
        let last = count(*self.meta) - 1;
        let out = self.b.slots[i].take().expect("below the count");
        if i != last {
            self.b.slots[i] = self.b.slots[last].take();
            let t = (*self.meta >> (8 * last)) & 0xff;
            *self.meta = (*self.meta & !(0xff << (8 * i))) | (t << (8 * i));
        }
        self.set_count(last);
        out
    }

    /// Moves overflow entries into free slots, and frees an empty overflow
    /// list.
    fn settle(&mut self) {
        while count(*self.meta) < SLOTS {
            let Some((k, v)) = self.b.more.pop() else {
                break;
            };
            self.push(k, v);
        }
        if self.b.more.is_empty() {
            self.b.more = Vec::new();
            *self.meta &= !SPILLED;
        }
    }

    /// Takes out the entries `go` picks and gives each to `to`. Visits
    /// each entry once.
    fn extract(&mut self, mut go: impl FnMut(u64, &mut V) -> bool, mut to: impl FnMut(u64, V)) {
        let mut i = 0;
        while i < count(*self.meta) {
            let (k, v) = self.b.slots[i].as_mut().expect("below the count");
            if go(*k, v) {
                // The last inline entry, not visited yet, takes its place.
                let (k, v) = self.take_inline(i);
                to(k, v);
            } else {
                i += 1;
            }
        }
        let mut j = 0;
        while j < self.b.more.len() {
            let (k, v) = &mut self.b.more[j];
            if go(*k, v) {
                let (k, v) = self.b.more.swap_remove(j);
                to(k, v);
            } else {
                j += 1;
            }
        }
        self.settle();
    }
}

fn entries<V>(b: &Bucket<V>) -> impl Iterator<Item = (u64, &V)> {
    let slots = b.slots.iter().flatten();
    slots.chain(&b.more).map(|(k, v)| (*k, v))
}

struct Segment<V> {
    meta: Box<[u64]>,
    buckets: Box<[Bucket<V>]>,
}

fn new_segment<V>(s: usize) -> Segment<V> {
    Segment {
        meta: vec![0; segment_len(s)].into_boxed_slice(),
        buckets: (0..segment_len(s)).map(|_| Bucket::default()).collect(),
    }
}

/// Segments before the first of [`SEGMENT`] buckets.
const PREFIX: usize = SEGMENT.trailing_zeros() as usize + 1;

/// Buckets in segment `s`.
fn segment_len(s: usize) -> usize {
    match s {
        0 => 1,
        1..PREFIX => 1 << (s - 1),
        _ => SEGMENT,
    }
}

/// The segment of bucket `i`, and its place in it.
fn locate(i: usize) -> (usize, usize) {
    match i {
        0 => (0, 0),
        1..SEGMENT => {
            let s = usize::BITS as usize - i.leading_zeros() as usize;
            (s, i - (1 << (s - 1)))
        }
        _ => (PREFIX - 1 + i / SEGMENT, i % SEGMENT),
    }
}

/// See the module documentation.
pub struct LinearMap<V> {
    len: usize,
    /// `2^level` buckets at the start of this round of splits.
    level: u32,
    /// Buckets split in this round.
    next: usize,
    segments: Vec<Segment<V>>,
}

impl<V> Default for LinearMap<V> {
    fn default() -> Self {
        LinearMap {
            len: 0,
            level: 0,
            next: 0,
            segments: Vec::new(),
        }
    }
}

impl<V> LinearMap<V> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn buckets(&self) -> usize {
        if self.segments.is_empty() {
            0
        } else {
            (1 << self.level) + self.next
        }
    }

    fn index(&self, key: u64) -> usize {
        let low = (key as usize) & ((1 << self.level) - 1);
        if low < self.next {
            (key as usize) & ((2 << self.level) - 1)
        } else {
            low
        }
    }

    fn bucket(&self, i: usize) -> (u64, &Bucket<V>) {
        let (s, at) = locate(i);
        let seg = &self.segments[s];
        (seg.meta[at], &seg.buckets[at])
    }

    fn bucket_mut(&mut self, i: usize) -> BucketMut<'_, V> {
        let (s, at) = locate(i);
        let seg = &mut self.segments[s];
        BucketMut {
            meta: &mut seg.meta[at],
            b: &mut seg.buckets[at],
        }
    }

    /// Buckets `a` and `b` (`a < b`) at once.
    fn pair_mut(&mut self, a: usize, b: usize) -> (BucketMut<'_, V>, BucketMut<'_, V>) {
        let ((sa, at_a), (sb, at_b)) = (locate(a), locate(b));
        let (low, high) = self.segments.split_at_mut(sb);
        let high = &mut high[0];
        let (meta_low, meta_b) = high.meta.split_at_mut(at_b);
        let (buckets_low, buckets_b) = high.buckets.split_at_mut(at_b);
        let second = BucketMut {
            meta: &mut meta_b[0],
            b: &mut buckets_b[0],
        };
        let first = if sa == sb {
            BucketMut {
                meta: &mut meta_low[at_a],
                b: &mut buckets_low[at_a],
            }
        } else {
            let seg = &mut low[sa];
            BucketMut {
                meta: &mut seg.meta[at_a],
                b: &mut seg.buckets[at_a],
            }
        };
        (first, second)
    }

    pub fn get(&self, key: u64) -> Option<&V> {
        if self.len == 0 {
            return None;
        }
        let (meta, b) = self.bucket(self.index(key));
        find(meta, b, key).map(|s| slot_ref(b, s))
    }

    pub fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        if self.len == 0 {
            return None;
        }
        let b = self.bucket_mut(self.index(key));
        let s = b.find(key)?;
        Some(b.at(s))
    }

    pub fn contains_key(&self, key: u64) -> bool {
        self.get(key).is_some()
    }

    /// The entry of `key`, created with `new` if absent.
    pub fn get_or_insert_with(&mut self, key: u64, new: impl FnOnce() -> V) -> &mut V {
        if self.len > 0 {
            let i = self.index(key);
            let (meta, b) = self.bucket(i);
            if let Some(s) = find(meta, b, key) {
                return self.bucket_mut(i).at(s);
            }
        }
        let v = new();
        self.insert_new(key, v)
    }

    /// Sets the entry of `key`; gives back the one it replaced.
    pub fn insert(&mut self, key: u64, v: V) -> Option<V> {
        if let Some(e) = self.get_mut(key) {
            return Some(std::mem::replace(e, v));
        }
        self.insert_new(key, v);
        None
    }

    fn insert_new(&mut self, key: u64, v: V) -> &mut V {
        self.grow();
        self.len += 1;
        let i = self.index(key);
        let mut b = self.bucket_mut(i);
        let s = b.push(key, v);
        b.at(s)
    }

    /// Makes room for one more entry: the first bucket, or a split when
    /// the slots would be more than [`LOAD`] tenths full.
    fn grow(&mut self) {
        if self.segments.is_empty() {
            self.segments.push(new_segment(0));
            return;
        }
        if (self.len + 1) * 10 <= self.buckets() * SLOTS * LOAD {
            return;
        }
        let from = self.next;
        let to = from + (1 << self.level);
        let (s, _) = locate(to);
        if s == self.segments.len() {
            self.segments.push(new_segment(s));
        }
        // The keys with bit `level` set belong to the new bucket; each is
        // moved once (a bucket is split into one that is empty).
        let bit = 1u64 << self.level;
        let (mut old, mut new) = self.pair_mut(from, to);
        old.extract(
            |k, _| k & bit != 0,
            |k, v| {
                new.push(k, v);
            },
        );
        self.next += 1;
        if self.next == 1 << self.level {
            self.level += 1;
            self.next = 0;
        }
    }

    pub fn remove(&mut self, key: u64) -> Option<V> {
        if self.len == 0 {
            return None;
        }
        let mut b = self.bucket_mut(self.index(key));
        let s = b.find(key)?;
        let v = b.take(s);
        self.len -= 1;
        Some(v)
    }

    /// Keeps the entries `keep` accepts (it may change them). The map
    /// keeps its buckets (as `HashMap::retain` keeps its capacity).
    pub fn retain(&mut self, mut keep: impl FnMut(u64, &mut V) -> bool) {
        for i in 0..self.buckets() {
            let mut b = self.bucket_mut(i);
            let before = b.len();
            b.extract(|k, v| !keep(k, v), |_, v| drop(v));
            let after = b.len();
            self.len -= before - after;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &V)> {
        (0..self.buckets()).flat_map(|i| entries(self.bucket(i).1))
    }

    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests;
