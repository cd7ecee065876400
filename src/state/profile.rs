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
use crate::state::{Held, Items, KeyedBy, StateConfig, Swept, Table};
use crate::time::{Millis, DAY};

mod habits;

pub use habits::{client_key, hour_of, Client, Habits, Login, Network, Secs, Seen, Span};
use habits::{protocol_bit, secs_down, secs_up};

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
        let prefix = self.network(ip);
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

    /// Runs `f` on `account`'s profile, if it has one. The entry is locked
    /// while `f` runs: `f` must not touch the profiles again, or the thread
    /// waits on itself.
    pub fn with<R>(&self, account: u64, f: impl FnOnce(&mut Habits) -> R) -> Option<R> {
        self.table.with(account, f)
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
    /// tests' short form: the engine learns through the event's context).
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
        let prefix = self.network(ip);
        self.update(account, |h| {
            self.learn_into(h, prefix, point, ts, protocol, client)
        });
    }

    /// Learns into `h`, an account's profile, a successful login at `ts`
    /// from the network `prefix` ([`Profile::network`] of its address).
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
            h.networks.retain(|n| n.seen.last() >= horizon);
            h.clients.retain(|c| c.seen.last() >= horizon);
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
                Some(x) => x.seen.widen(up, down),
                None => {
                    if h.clients.len() >= max_clients {
                        if let Some(i) =
                            (0..h.clients.len()).min_by_key(|&i| h.clients[i].seen.last_secs())
                        {
                            h.clients.swap_remove(i);
                        }
                    }
                    h.clients.push(Client {
                        hash: c,
                        seen: Span::new(up, down),
                    });
                }
            }
        }
        if let Some(net) = h.networks.iter_mut().find(|x| x.prefix == prefix) {
            net.seen.widen(up, down);
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
            if let Some(i) = (0..h.networks.len()).min_by_key(|&i| h.networks[i].seen.last_secs()) {
                h.networks.swap_remove(i);
            }
        }
        h.networks.push(Network {
            prefix,
            asn,
            seen: Span::new(up, down),
            country,
        });
    }

    /// Forgets the networks and clients `account` first used at or after
    /// `since` (an attacker's, learned during an incident that an unlock has
    /// ended); returns how many networks.
    pub fn forget_since(&self, account: u64, since: Millis) -> usize {
        let left = self.table.with(account, |h| {
            let before = h.networks.len();
            h.networks.retain(|x| x.seen.first() < since);
            h.clients.retain(|x| x.seen.first() < since);
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
