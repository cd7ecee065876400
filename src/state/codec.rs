//! The binary form of what the tables hold, for the durable state
//! ([`crate::state::snapshot`]): compact (integers as LEB128 varints,
//! signed ones zigzagged), explicit (every entry type writes its fields in
//! a fixed order, by hand) and strict (a short or malformed input is an
//! error, never a panic or a half-read entry).
//!
//! A change to any entry's layout must bump
//! [`crate::state::snapshot::FORMAT`]: an older snapshot is then refused
//! with a clear log line and the partition is rebuilt from its input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use smallvec::SmallVec;

/// Why bytes could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("the snapshot ends in the middle of {0}")]
    Short(&'static str),
    #[error("the snapshot has an invalid {0}")]
    Invalid(&'static str),
}

/// A cursor over bytes being read back.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError::Short(what));
        }
        let (h, t) = self.buf.split_at(n);
        self.buf = t;
        Ok(h)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        Ok(self.bytes(1, what)?[0])
    }

    pub fn varint(&mut self, what: &'static str) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::Invalid(what))
    }

    pub fn fixed64(&mut self, what: &'static str) -> Result<u64, CodecError> {
        let b = self.bytes(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// A length that must fit in what is left (a corrupt length cannot
    /// make the reader allocate gigabytes).
    pub fn len(&mut self, what: &'static str) -> Result<usize, CodecError> {
        let n = self.varint(what)?;
        if n > self.buf.len() as u64 {
            return Err(CodecError::Short(what));
        }
        Ok(n as usize)
    }
}

pub fn put_varint(w: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        w.push((v as u8) | 0x80);
        v >>= 7;
    }
    w.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A value with a binary form.
pub trait Codec: Sized {
    fn put(&self, w: &mut Vec<u8>);
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError>;
}

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl Codec for $t {
            fn put(&self, w: &mut Vec<u8>) {
                put_varint(w, u64::from(*self));
            }
            fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
                <$t>::try_from(r.varint(stringify!($t))?).map_err(|_| CodecError::Invalid(stringify!($t)))
            }
        }
    )*};
}
unsigned!(u16, u32, u64);

impl Codec for u8 {
    fn put(&self, w: &mut Vec<u8>) {
        w.push(*self);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        r.u8("byte")
    }
}

impl Codec for usize {
    fn put(&self, w: &mut Vec<u8>) {
        put_varint(w, *self as u64);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        usize::try_from(r.varint("count")?).map_err(|_| CodecError::Invalid("count"))
    }
}

impl Codec for i64 {
    fn put(&self, w: &mut Vec<u8>) {
        put_varint(w, zigzag(*self));
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(unzigzag(r.varint("time")?))
    }
}

impl Codec for f32 {
    fn put(&self, w: &mut Vec<u8>) {
        w.extend_from_slice(&self.to_le_bytes());
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(f32::from_le_bytes(
            r.bytes(4, "number")?.try_into().expect("4 bytes"),
        ))
    }
}

impl Codec for bool {
    fn put(&self, w: &mut Vec<u8>) {
        w.push(u8::from(*self));
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        match r.u8("flag")? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(CodecError::Invalid("flag")),
        }
    }
}

impl<const N: usize> Codec for [u8; N] {
    fn put(&self, w: &mut Vec<u8>) {
        w.extend_from_slice(self);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(r.bytes(N, "bytes")?.try_into().expect("N bytes"))
    }
}

impl Codec for IpAddr {
    fn put(&self, w: &mut Vec<u8>) {
        match self {
            IpAddr::V4(a) => {
                w.push(4);
                w.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                w.push(6);
                w.extend_from_slice(&a.octets());
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        match r.u8("address")? {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::get(r)?))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::get(r)?))),
            _ => Err(CodecError::Invalid("address")),
        }
    }
}

/// Text: its length, then its UTF-8 bytes.
fn put_str(w: &mut Vec<u8>, s: &str) {
    put_varint(w, s.len() as u64);
    w.extend_from_slice(s.as_bytes());
}

impl Codec for String {
    fn put(&self, w: &mut Vec<u8>) {
        put_str(w, self);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.len("text")?;
        let b = r.bytes(n, "text")?;
        String::from_utf8(b.to_vec()).map_err(|_| CodecError::Invalid("text"))
    }
}

impl Codec for Box<str> {
    fn put(&self, w: &mut Vec<u8>) {
        put_str(w, self);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(String::get(r)?.into_boxed_str())
    }
}

/// An account name: the same bytes as any text (snapshots do not change).
impl Codec for smol_str::SmolStr {
    fn put(&self, w: &mut Vec<u8>) {
        put_str(w, self);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(String::get(r)?.into())
    }
}

impl<T: Codec> Codec for Option<T> {
    fn put(&self, w: &mut Vec<u8>) {
        match self {
            None => w.push(0),
            Some(v) => {
                w.push(1);
                v.put(w);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        match r.u8("option")? {
            0 => Ok(None),
            1 => Ok(Some(T::get(r)?)),
            _ => Err(CodecError::Invalid("option")),
        }
    }
}

/// A list: its length, then each item.
fn put_list<T: Codec>(w: &mut Vec<u8>, items: &[T]) {
    put_varint(w, items.len() as u64);
    for x in items {
        x.put(w);
    }
}

impl<T: Codec> Codec for Vec<T> {
    fn put(&self, w: &mut Vec<u8>) {
        put_list(w, self)
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.len("list")?;
        (0..n).map(|_| T::get(r)).collect()
    }
}

impl<T: Codec, const N: usize> Codec for SmallVec<[T; N]>
where
    [T; N]: smallvec::Array<Item = T>,
{
    fn put(&self, w: &mut Vec<u8>) {
        put_list(w, self)
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let n = r.len("list")?;
        let mut v = SmallVec::with_capacity(n);
        for _ in 0..n {
            v.push(T::get(r)?);
        }
        Ok(v)
    }
}

impl<A: Codec, B: Codec> Codec for (A, B) {
    fn put(&self, w: &mut Vec<u8>) {
        self.0.put(w);
        self.1.put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok((A::get(r)?, B::get(r)?))
    }
}

impl<A: Codec, B: Codec, C: Codec> Codec for (A, B, C) {
    fn put(&self, w: &mut Vec<u8>) {
        self.0.put(w);
        self.1.put(w);
        self.2.put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok((A::get(r)?, B::get(r)?, C::get(r)?))
    }
}

/// A struct's fields in order: `codec_fields!(Type { a, b, c })` writes
/// and reads them one after the other.
#[macro_export]
macro_rules! codec_fields {
    ($t:ident { $($f:ident),* $(,)? }) => {
        impl $crate::state::codec::Codec for $t {
            fn put(&self, w: &mut Vec<u8>) {
                $( $crate::state::codec::Codec::put(&self.$f, w); )*
            }
            fn get(r: &mut $crate::state::codec::Reader<'_>) -> Result<Self, $crate::state::codec::CodecError> {
                Ok($t { $( $f: $crate::state::codec::Codec::get(r)?, )* })
            }
        }
    };
}

/// A detector's name read back as the `&'static str` the registry has.
pub fn detector_name(r: &mut Reader<'_>) -> Result<&'static str, CodecError> {
    let s = String::get(r)?;
    crate::detect::registry()
        .into_iter()
        .map(|d| d.name)
        .find(|n| *n == s)
        .ok_or(CodecError::Invalid("detector name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round<T: Codec + PartialEq + std::fmt::Debug>(v: T) {
        let mut w = Vec::new();
        v.put(&mut w);
        let mut r = Reader::new(&w);
        assert_eq!(T::get(&mut r).unwrap(), v);
        assert!(r.is_empty());
        // Every strict prefix is an error, never a panic.
        for n in 0..w.len() {
            assert!(T::get(&mut Reader::new(&w[..n])).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn values_come_back_as_they_went() {
        round(0u64);
        round(u64::MAX);
        round(i64::MIN);
        round(-1_700_000_000_000i64);
        round(1_700_000_000_000i64);
        round(12_345u32);
        round(1.5f32);
        round(true);
        round(*b"GB");
        round("2001:db8::1".parse::<IpAddr>().unwrap());
        round("192.0.2.7".parse::<IpAddr>().unwrap());
        round(Some(String::from("alice@example.com")));
        round(None::<u32>);
        round(vec![(1i64, 2u64, 3u64), (4, 5, 6)]);
        // Account names, inline and shared, in the bytes of any text.
        for name in [
            "a@example.jp",
            "a-very-long-login-name@subdomain.example.jp",
        ] {
            round(smol_str::SmolStr::new(name));
            let (mut a, mut b) = (Vec::new(), Vec::new());
            smol_str::SmolStr::new(name).put(&mut a);
            Box::<str>::from(name).put(&mut b);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn a_corrupt_length_is_an_error_not_an_allocation() {
        let mut w = Vec::new();
        put_varint(&mut w, u64::MAX >> 1);
        assert!(Vec::<u64>::get(&mut Reader::new(&w)).is_err());
        assert!(String::get(&mut Reader::new(&w)).is_err());
        // An endless varint.
        assert!(u64::get(&mut Reader::new(&[0xff; 11])).is_err());
        assert!(bool::get(&mut Reader::new(&[2])).is_err());
    }
}
