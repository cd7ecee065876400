//! What one account's profile holds: its networks, clients, hours and
//! latest logins ([`Habits`]), in profile seconds ([`Secs`]), and what an
//! event's address shows of them ([`Seen`]). How profiles are kept and
//! learned is [`super::Profile`]'s.

use std::net::IpAddr;

use crate::geo::Point;
use crate::source::event::Protocol;
use crate::state::{Entry, Items};
use crate::time::{Millis, DAY, HOUR};

/// A profile's time: seconds since the epoch in 32 bits (until 2106).
/// 0 is "never".
pub type Secs = u32;

/// `ts` in profile seconds rounded up: a first use kept so is never
/// earlier than it was, so a login in the same second is not taken for
/// one after it.
pub(super) fn secs_up(ts: Millis) -> Secs {
    (ts.max(0) as u64)
        .div_ceil(1000)
        .min(u64::from(u32::MAX - 1)) as Secs
}

/// `ts` in profile seconds rounded down (last uses).
pub(super) fn secs_down(ts: Millis) -> Secs {
    (ts.max(0) / 1000).min(i64::from(u32::MAX - 1)) as Secs
}

/// A profile time in milliseconds; "never" (0) is `never`.
fn millis(s: Secs, never: Millis) -> Millis {
    if s == 0 {
        never
    } else {
        Millis::from(s) * 1000
    }
}

/// When a network or a client program was first and last used, in
/// profile seconds.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    first: Secs,
    last: Secs,
}

impl Span {
    /// One use, from `up` to `down` (the same moment, rounded each way).
    pub(super) fn new(up: Secs, down: Secs) -> Span {
        Span {
            first: up,
            last: down,
        }
    }
    /// Takes in another use.
    pub(super) fn widen(&mut self, up: Secs, down: Secs) {
        self.first = self.first.min(up);
        self.last = self.last.max(down);
    }
    /// Its first use remembered (rounded up to the second).
    pub fn first(&self) -> Millis {
        millis(self.first, Millis::MAX)
    }
    /// Its last use remembered (rounded down to the second).
    pub fn last(&self) -> Millis {
        millis(self.last, Millis::MIN)
    }
    /// The last use, as kept (to find the least recently used).
    pub(super) fn last_secs(&self) -> Secs {
        self.last
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Network {
    /// Keyed hash of the address's network prefix.
    pub prefix: u64,
    pub asn: u32,
    pub seen: Span,
    pub country: [u8; 2],
}

/// A client program, by a hash of its name without version numbers.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub hash: u32,
    pub seen: Span,
}

/// One remembered successful login with its place, for
/// `impossible_travel` (which owns what is kept here: it lives in the
/// profile's record so that a login reaches one table, not two).
#[derive(Debug, Clone, Copy)]
pub struct Login {
    pub ts: Millis,
    pub ip: IpAddr,
    pub lat: f32,
    pub lon: f32,
    pub accuracy_km: u16,
    /// From an anonymous or hosting network: evidence, never measured.
    pub anonymous: bool,
}

crate::codec_fields!(Login {
    ts,
    ip,
    lat,
    lon,
    accuracy_km,
    anonymous
});

/// One account's profile.
pub struct Habits {
    pub networks: Items<Network>,
    pub clients: Items<Client>,
    /// Successful logins by hour of the day (UTC), saturating; halved
    /// when one fills up, so old habits fade.
    pub hours: [u8; 24],
    /// Its first successful login remembered, and its last one.
    pub(super) since: Secs,
    pub(super) last: Secs,
    /// Its last submission.
    pub(super) last_sent: Secs,
    /// Days with a successful login (the day of `last` counted once).
    pub days: u16,
    /// Days it submitted mail on.
    pub sent_days: u16,
    /// The protocols it has logged in with (bit `1 << protocol`).
    pub protocols: u8,
    /// Its latest successful logins with their places, in time order
    /// (`impossible_travel`'s, through `Context::habits_or_new`).
    pub logins: Items<Login>,
}

// A span is written as its two fields in place: the same bytes as when
// they were the network's and the client's own.
crate::codec_fields!(Span { first, last });
crate::codec_fields!(Network {
    prefix,
    asn,
    seen,
    country
});
crate::codec_fields!(Client { hash, seen });
crate::codec_fields!(Habits {
    networks,
    clients,
    hours,
    since,
    last,
    last_sent,
    days,
    sent_days,
    protocols,
    logins
});

impl Entry for Habits {
    fn last_seen(&self) -> Millis {
        self.last().max(self.last_sent())
    }
    fn weight(&self) -> usize {
        self.networks.len() + self.clients.len()
    }
    /// The entry spans three cache lines, and its lists may be on the heap:
    /// a login reads all of them.
    fn touch(&self) -> u64 {
        let first = |ts: Option<Millis>| ts.unwrap_or(0) as u64;
        first(self.logins.first().map(|l| l.ts))
            ^ first(self.networks.first().map(|n| n.seen.first()))
            ^ self.clients.len() as u64
            ^ u64::from(self.hours[0])
            ^ self.last as u64
    }
    fn prune(&mut self, horizon: Millis) -> bool {
        // What is forgotten within a profile goes at learning time,
        // measured from the account's own last use; the sweep removes
        // profiles silent for `keep_silent_days`.
        self.last_seen() < horizon
    }
}

impl Habits {
    /// A profile with nothing learned yet: it reads as none (no networks,
    /// no first login, not established).
    pub fn empty() -> Habits {
        Habits {
            networks: Items::new(),
            clients: Items::new(),
            hours: [0; 24],
            since: 0,
            last: 0,
            last_sent: 0,
            days: 0,
            sent_days: 0,
            protocols: 0,
            logins: Items::new(),
        }
    }

    /// What it had used that an address of the network `prefix` (at
    /// `point`) shows (see [`super::Profile::seen`]).
    pub fn seen(&self, prefix: u64, point: Option<&Point>) -> Seen {
        let asn = point.and_then(Point::asn);
        let country = point.and_then(Point::country);
        let mut s = Seen::default();
        let min = |slot: &mut Option<Millis>, t: Millis| {
            *slot = Some(slot.map_or(t, |x: Millis| x.min(t)));
        };
        for net in &self.networks {
            let first = net.seen.first();
            min(&mut s.any, first);
            if net.prefix == prefix {
                min(&mut s.network, first);
            }
            if asn.is_some_and(|a| a == net.asn) {
                min(&mut s.asn, first);
            }
            if country.is_some_and(|c| c == net.country) {
                min(&mut s.country, first);
            }
        }
        s
    }

    /// Its first successful login among the networks remembered.
    pub fn first_seen(&self) -> Option<Millis> {
        self.networks.iter().map(|n| n.seen.first()).min()
    }

    /// Learns a message it submitted at `ts`.
    pub fn learn_sent(&mut self, ts: Millis) {
        if self.last_sent == 0 || ts.div_euclid(DAY) > self.last_sent().div_euclid(DAY) {
            self.sent_days = self.sent_days.saturating_add(1);
        }
        self.last_sent = self.last_sent.max(secs_down(ts));
    }

    /// Its first successful login remembered (`Millis::MAX`: none).
    pub fn since(&self) -> Millis {
        millis(self.since, Millis::MAX)
    }

    /// Its last successful login (`Millis::MIN`: none).
    pub fn last(&self) -> Millis {
        millis(self.last, Millis::MIN)
    }

    /// Its last submission (`Millis::MIN`: none).
    pub fn last_sent(&self) -> Millis {
        millis(self.last_sent, Millis::MIN)
    }

    /// Whether the profile is old enough to be trusted at `ts`: its first
    /// login `learning_days` before, with logins on `min_days` days.
    pub fn established(&self, ts: Millis, learning_days: u64, min_days: u64) -> bool {
        self.since() <= ts - learning_days as Millis * DAY && u64::from(self.days) >= min_days
    }

    /// Successful logins counted over the hours (saturating).
    pub fn logins(&self) -> u32 {
        self.hours.iter().map(|&h| u32::from(h)).sum()
    }

    /// True when it has logged in with `p`.
    pub fn used(&self, p: Protocol) -> bool {
        self.protocols & protocol_bit(p) != 0
    }

    /// Logins at `hour` and the hours either side of it.
    pub fn near_hour(&self, hour: usize) -> u32 {
        [23, 0, 1]
            .iter()
            .map(|d| u32::from(self.hours[(hour + d) % 24]))
            .sum()
    }
}

pub(super) fn protocol_bit(p: Protocol) -> u8 {
    1 << (p as u8)
}

/// The hour of the day (UTC) of `ts`.
pub fn hour_of(ts: Millis) -> usize {
    ts.rem_euclid(DAY).div_euclid(HOUR) as usize
}

/// A client program's name without its version (`Thunderbird 115.3.1`
/// and `Thunderbird 128.0` are one client), hashed; `None` for an empty
/// name.
pub fn client_key(client: &str) -> Option<u32> {
    let name: String = client
        .chars()
        .take(64)
        .take_while(|c| !c.is_ascii_digit())
        .filter(|c| c.is_alphabetic() || *c == ' ')
        .flat_map(char::to_lowercase)
        .collect();
    let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
    if name.is_empty() {
        return None;
    }
    // FNV-1a: stable across processes and releases (profiles are durable).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    // Folded to 32 bits: an account keeps a handful of clients.
    Some((h ^ (h >> 32)) as u32)
}

/// Since when the account has used what an event shows: each is the first
/// successful login that matched, `None` when there was none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// The same network prefix.
    pub network: Option<Millis>,
    /// The same autonomous system (when the ASN database knows it).
    pub asn: Option<Millis>,
    /// The same country (when the city database knows it).
    pub country: Option<Millis>,
    /// Any successful login at all.
    pub any: Option<Millis>,
}

impl Seen {
    /// True when, before `t`, the account had logged in from this network
    /// (same prefix, or same autonomous system) and from this country (when
    /// known). An account with no history before `t` knows nothing.
    pub fn familiar_before(&self, t: Millis, point: Option<&Point>) -> bool {
        let before = |x: Option<Millis>| x.is_some_and(|x| x < t);
        let network = before(self.network) || before(self.asn);
        let country = point.and_then(Point::country).is_none() || before(self.country);
        network && country
    }
}
