//! What each account normally looks like, kept for weeks: the networks and
//! countries it logs in from, the clients and protocols it uses, the hours
//! of the day it is used at, when it was last used, and whether it sends.
//!
//! A detector asks what the account had used *before* an event: a success
//! after a burst of guessing is tied to the guessing only if it comes from
//! somewhere the owner does not (`failed_login_burst`); an address the owner
//! has used for days is not a sprayer's address to that owner
//! (`password_spray`); a login new on several axes at once is
//! `unfamiliar_login`. The engine learns every successful login and every
//! submission from an untrusted address after the detectors have judged it,
//! so an event never vouches for itself.
//!
//! Each network is remembered with when it was *first* and last seen; first
//! is the earliest of the logins judged, whatever their order, so what a
//! detector concludes does not depend on which thread judged what first.
//!
//! **Bounds.** An account keeps at most `max_networks` networks (24 bytes
//! each) and `max_clients` clients (12 bytes each), the least recently used
//! going first, and what it has not used for `history_days` *of its own
//! use* (an account that falls silent keeps what it used before, which is
//! what its first login after the silence is compared with). The whole
//! profile of an account silent for `keep_silent_days` goes. Fixed part:
//! 24 hour counters, the protocols, first and last use, active days: 104
//! bytes with room for one network inline. Times are kept in seconds of 32
//! bits ([`Secs`]): weeks of them for millions of accounts.

use std::net::IpAddr;

use crate::geo::Point;
use crate::section::Checks;
use crate::source::event::{network_key, Protocol};
use crate::state::{Entry, Held, Items, KeyedBy, StateConfig, Swept, Table};
use crate::time::{Millis, DAY, HOUR};

crate::section! {
    /// `[profile]`: what is remembered of each account's own use (its
    /// networks, countries, clients, protocols and hours), for weeks.
    pub struct ProfileConfig {
        /// How long a network or client stays familiar after the account
        /// last used it, in days of the account's own use (30: Entra ID
        /// Protection's and Okta's behaviour profiles look back about a
        /// month).
        pub history_days: u64 = 30,
        /// How long the profile of an account that stopped logging in is
        /// kept, in days: its first login after a silence this long is
        /// still compared with what it used before.
        pub keep_silent_days: u64 = 90,
        /// Networks remembered per account; the least recently used is
        /// forgotten first.
        pub max_networks: usize = 8,
        /// Client programs (IMAP ID, user agent) remembered per account.
        pub max_clients: usize = 4,
        /// IPv4 addresses sharing this prefix are one network (an ISP's
        /// customer block, an office).
        pub network_prefix_v4: u8 = 24,
        /// IPv6 addresses sharing this prefix are one network (a site).
        pub network_prefix_v6: u8 = 48,
    }
}

impl ProfileConfig {
    pub fn check(&self, c: &mut Checks) {
        c.at_least("history_days", self.history_days, 1);
        c.at_least("keep_silent_days", self.keep_silent_days, 1);
        c.at_least("max_networks", self.max_networks as u64, 1);
        c.at_least("max_clients", self.max_clients as u64, 1);
        if !(1..=32).contains(&self.network_prefix_v4) {
            c.fail("network_prefix_v4", "must be a prefix length from 1 to 32");
        }
        if !(1..=128).contains(&self.network_prefix_v6) {
            c.fail("network_prefix_v6", "must be a prefix length from 1 to 128");
        }
    }
}

/// A profile's time: seconds since the epoch in 32 bits (until 2106).
/// 0 is "never".
pub type Secs = u32;

/// `ts` in profile seconds rounded up: a first use kept so is never
/// earlier than it was, so a login in the same second is not taken for
/// one after it.
fn secs_up(ts: Millis) -> Secs {
    (ts.max(0) as u64)
        .div_ceil(1000)
        .min(u64::from(u32::MAX - 1)) as Secs
}

/// `ts` in profile seconds rounded down (last uses).
fn secs_down(ts: Millis) -> Secs {
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

#[derive(Debug, Clone, Copy)]
pub struct Network {
    /// Keyed hash of the address's network prefix.
    pub prefix: u64,
    pub asn: u32,
    first: Secs,
    last: Secs,
    pub country: [u8; 2],
}

impl Network {
    /// Its first use remembered (rounded up to the second).
    pub fn first(&self) -> Millis {
        millis(self.first, Millis::MAX)
    }
    /// Its last use remembered (rounded down to the second).
    pub fn last(&self) -> Millis {
        millis(self.last, Millis::MIN)
    }
}

/// A client program, by a hash of its name without version numbers.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub hash: u32,
    first: Secs,
    last: Secs,
}

impl Client {
    /// Its first use remembered (rounded up to the second).
    pub fn first(&self) -> Millis {
        millis(self.first, Millis::MAX)
    }
    /// Its last use remembered (rounded down to the second).
    pub fn last(&self) -> Millis {
        millis(self.last, Millis::MIN)
    }
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
    since: Secs,
    last: Secs,
    /// Its last submission.
    last_sent: Secs,
    /// Days with a successful login (the day of `last` counted once).
    pub days: u16,
    /// Days it submitted mail on.
    pub sent_days: u16,
    /// The protocols it has logged in with (bit `1 << protocol`).
    pub protocols: u8,
    /// Its latest successful logins with their places, in time order
    /// (`impossible_travel`'s; see [`Profile::update_logins`]).
    pub logins: Items<Login>,
}

crate::codec_fields!(Network {
    prefix,
    asn,
    first,
    last,
    country
});
crate::codec_fields!(Client { hash, first, last });
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
            ^ first(self.networks.first().map(|n| n.first()))
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
    /// `point`) shows (see [`Profile::seen`]).
    pub fn seen(&self, prefix: u64, point: Option<&Point>) -> Seen {
        let asn = point.and_then(Point::asn);
        let country = point.and_then(Point::country);
        let mut s = Seen::default();
        let min = |slot: &mut Option<Millis>, t: Millis| {
            *slot = Some(slot.map_or(t, |x: Millis| x.min(t)));
        };
        for net in &self.networks {
            let first = net.first();
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
        self.networks.iter().map(Network::first).min()
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

fn protocol_bit(p: Protocol) -> u8 {
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

pub struct Profile {
    cfg: ProfileConfig,
    history: Millis,
    table: Table<Habits>,
}

impl Profile {
    pub fn new(cfg: &ProfileConfig, state: &StateConfig) -> Profile {
        Profile {
            cfg: cfg.clone(),
            history: cfg.history_days as Millis * DAY,
            table: Table::new(
                "account_profile",
                KeyedBy::Account,
                state.max_accounts,
                cfg.keep_silent_days as Millis * DAY,
            ),
        }
    }

    /// Brings the profiles of `accounts` into the cache (see
    /// [`Table::warm`]); answers how many accounts have one.
    pub fn warm(&self, accounts: &mut [u64]) -> usize {
        self.table.warm(accounts)
    }

    /// The network an address belongs to, as the profile keys it.
    pub fn network(&self, ip: IpAddr) -> u64 {
        network_key(ip, self.cfg.network_prefix_v4, self.cfg.network_prefix_v6)
    }

    /// What `account` had used that `ip` (at `point`) shows.
    pub fn seen(&self, account: u64, ip: IpAddr, point: Option<&Point>) -> Seen {
        self.seen_in(account, self.network(ip), point)
    }

    /// [`Profile::seen`] with the address's network already keyed
    /// ([`Profile::network`]).
    pub fn seen_in(&self, account: u64, prefix: u64, point: Option<&Point>) -> Seen {
        self.table
            .with(account, |h| h.seen(prefix, point))
            .unwrap_or_default()
    }

    /// Locks the shard of `account`'s profile for the accesses of one
    /// event (see [`Table::hold`] and [`crate::detect::Context`]).
    pub fn hold(&self, account: u64) -> Held<'_, Habits> {
        self.table.hold(account)
    }

    /// Runs `f` on `account`'s profile, giving it an empty one first if it
    /// has none (an empty profile reads as none).
    pub fn update<R>(&self, account: u64, f: impl FnOnce(&mut Habits) -> R) -> R {
        self.table.update(account, Habits::empty, f)
    }

    /// Runs `f` on `account`'s profile, if it has one.
    pub fn with<R>(&self, account: u64, f: impl FnOnce(&mut Habits) -> R) -> Option<R> {
        self.table.with(account, f)
    }

    /// Reads `account`'s profile (`None`: it has none). The entry is locked
    /// while `f` runs: `f` must not touch the profiles again (no
    /// `Context::seen`, no `seen`), or the thread waits on itself.
    pub fn with_habits<R>(&self, account: u64, f: impl FnOnce(&Habits) -> R) -> Option<R> {
        self.table.with(account, |h| f(h))
    }

    /// Forgets `account`'s remembered logins (an unlock: the attacker's
    /// logins must not make the owner's next one look like travel).
    pub fn forget_logins(&self, account: u64) {
        self.table.with(account, |h| h.logins = Items::new());
    }

    /// When `account` first logged in successfully (among what is remembered).
    pub fn first_seen(&self, account: u64) -> Option<Millis> {
        self.table.with(account, |h| h.first_seen()).flatten()
    }

    /// Learns a successful login of `account` from `ip` at `ts` (the
    /// tests' short form of [`Profile::learn_in`]).
    #[cfg(test)]
    pub fn learn(
        &self,
        account: u64,
        ip: IpAddr,
        point: Option<&Point>,
        ts: Millis,
        protocol: Option<Protocol>,
        client: Option<&str>,
    ) {
        self.learn_in(account, self.network(ip), point, ts, protocol, client)
    }

    /// Learns a successful login of `account` at `ts` from the network
    /// `prefix` ([`Profile::network`] of its address).
    pub fn learn_in(
        &self,
        account: u64,
        prefix: u64,
        point: Option<&Point>,
        ts: Millis,
        protocol: Option<Protocol>,
        client: Option<&str>,
    ) {
        self.update(account, |h| {
            self.learn_into(h, prefix, point, ts, protocol, client)
        });
    }

    /// Learns into `h` a successful login at `ts` from the network `prefix`
    /// (see [`Profile::learn_in`]).
    pub fn learn_into(
        &self,
        h: &mut Habits,
        prefix: u64,
        point: Option<&Point>,
        ts: Millis,
        protocol: Option<Protocol>,
        client: Option<&str>,
    ) {
        let asn = point.map_or(0, |p| p.asn);
        let country = point.map_or([0, 0], |p| p.country);
        let client = client.and_then(client_key);
        let (max, max_clients, history) =
            (self.cfg.max_networks, self.cfg.max_clients, self.history);
        let (up, down) = (secs_up(ts), secs_down(ts));
        if ts > h.last() {
            // Forget what the account has not used for `history` of
            // its own use.
            let horizon = ts - history;
            h.networks.retain(|n| n.last() >= horizon);
            h.clients.retain(|c| c.last() >= horizon);
            if h.last == 0 || ts.div_euclid(DAY) != h.last().div_euclid(DAY) {
                h.days = h.days.saturating_add(1);
            }
            h.last = h.last.max(down);
        }
        h.since = if h.since == 0 { up } else { h.since.min(up) };
        if let Some(p) = protocol {
            h.protocols |= protocol_bit(p);
        }
        let hour = hour_of(ts);
        if h.hours[hour] == u8::MAX {
            h.hours.iter_mut().for_each(|x| *x /= 2);
        }
        h.hours[hour] += 1;
        if let Some(c) = client {
            match h.clients.iter_mut().find(|x| x.hash == c) {
                Some(x) => {
                    x.first = x.first.min(up);
                    x.last = x.last.max(down);
                }
                None => {
                    if h.clients.len() >= max_clients {
                        if let Some(i) = (0..h.clients.len()).min_by_key(|&i| h.clients[i].last) {
                            h.clients.swap_remove(i);
                        }
                    }
                    h.clients.push(Client {
                        hash: c,
                        first: up,
                        last: down,
                    });
                }
            }
        }
        if let Some(net) = h.networks.iter_mut().find(|x| x.prefix == prefix) {
            net.first = net.first.min(up);
            net.last = net.last.max(down);
            if net.asn == 0 {
                net.asn = asn;
            }
            if net.country == [0, 0] {
                net.country = country;
            }
            return;
        }
        if h.networks.len() >= max {
            // The least recently used network goes.
            if let Some(i) = (0..h.networks.len()).min_by_key(|&i| h.networks[i].last) {
                h.networks.swap_remove(i);
            }
        }
        h.networks.push(Network {
            prefix,
            asn,
            first: up,
            last: down,
            country,
        });
    }

    /// Learns a message `account` submitted at `ts` (its profile only: an
    /// account that never logged in successfully has none to add it to).
    pub fn learn_sent(&self, account: u64, ts: Millis) {
        self.table.with(account, |h| h.learn_sent(ts));
    }

    /// Forgets the networks and clients `account` first used at or after
    /// `since` (an attacker's, learned during an incident that an unlock has
    /// ended); returns how many networks.
    pub fn forget_since(&self, account: u64, since: Millis) -> usize {
        let left = self.table.with(account, |h| {
            let before = h.networks.len();
            h.networks.retain(|x| x.first() < since);
            h.clients.retain(|x| x.first() < since);
            (before - h.networks.len(), h.networks.is_empty())
        });
        match left {
            Some((gone, true)) => {
                self.table.remove(account);
                gone
            }
            Some((gone, false)) => gone,
            None => 0,
        }
    }

    pub fn state(&self) -> &dyn Swept {
        &self.table
    }
}

#[cfg(test)]
mod tests;
