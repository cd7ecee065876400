//! What each account normally looks like: the networks and countries it has
//! logged in from successfully, kept for weeks.
//!
//! A detector asks what the account had used *before* an attack began
//! ([`Seen`]): a success after a burst of guessing is tied to the guessing
//! only if it comes from somewhere the owner does not (`failed_login_burst`),
//! and an address the owner has used for days is not a sprayer's address to
//! that owner (`password_spray`). The engine learns every successful login
//! from an untrusted address after the detectors have judged it, so a login
//! never vouches for itself.
//!
//! Each network is remembered with when it was *first* and last seen; first
//! is the earliest of the logins judged, whatever their order, so what a
//! detector concludes does not depend on which thread judged what first.
//! An account keeps at most `max_networks` networks (the least recently used
//! goes): 32 bytes each.

use std::net::IpAddr;

use crate::geo::Point;
use crate::section::Checks;
use crate::source::event::network_key;
use crate::state::{Entry, Items, KeyedBy, StateConfig, Swept, Table};
use crate::time::{Millis, DAY};

crate::section! {
    /// `[profile]`: what is remembered of each account's own successful
    /// logins (its networks and countries), for weeks.
    pub struct ProfileConfig {
        /// How long a network stays familiar after the account's last
        /// successful login from it, in days.
        pub history_days: u64 = 30,
        /// Networks remembered per account; the least recently used is
        /// forgotten first.
        pub max_networks: usize = 8,
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
        c.at_least("max_networks", self.max_networks as u64, 1);
        if !(1..=32).contains(&self.network_prefix_v4) {
            c.fail("network_prefix_v4", "must be a prefix length from 1 to 32");
        }
        if !(1..=128).contains(&self.network_prefix_v6) {
            c.fail("network_prefix_v6", "must be a prefix length from 1 to 128");
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Network {
    /// Keyed hash of the address's network prefix.
    prefix: u64,
    asn: u32,
    country: [u8; 2],
    first: Millis,
    last: Millis,
}

pub struct Networks(Items<Network>);

crate::codec_fields!(Network {
    prefix,
    asn,
    country,
    first,
    last
});

impl crate::state::codec::Codec for Networks {
    fn put(&self, w: &mut Vec<u8>) {
        self.0.put(w)
    }
    fn get(
        r: &mut crate::state::codec::Reader<'_>,
    ) -> Result<Self, crate::state::codec::CodecError> {
        Ok(Networks(Items::get(r)?))
    }
}

impl Entry for Networks {
    fn last_seen(&self) -> Millis {
        self.0.iter().map(|n| n.last).max().unwrap_or(Millis::MIN)
    }
    fn weight(&self) -> usize {
        self.0.len()
    }
    fn prune(&mut self, horizon: Millis) -> bool {
        self.0.retain(|n| n.last >= horizon);
        self.0.is_empty()
    }
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
    table: Table<Networks>,
}

impl Profile {
    pub fn new(cfg: &ProfileConfig, state: &StateConfig) -> Profile {
        Profile {
            cfg: cfg.clone(),
            table: Table::new(
                "profile_networks",
                KeyedBy::Account,
                state.max_accounts,
                cfg.history_days as Millis * DAY,
            ),
        }
    }

    /// The network an address belongs to, as the profile keys it.
    pub fn network(&self, ip: IpAddr) -> u64 {
        network_key(ip, self.cfg.network_prefix_v4, self.cfg.network_prefix_v6)
    }

    /// What `account` had used that `ip` (at `point`) shows.
    pub fn seen(&self, account: u64, ip: IpAddr, point: Option<&Point>) -> Seen {
        let prefix = self.network(ip);
        let asn = point.and_then(Point::asn);
        let country = point.and_then(Point::country);
        self.table
            .with(account, |n| {
                let mut s = Seen::default();
                let min = |slot: &mut Option<Millis>, t: Millis| {
                    *slot = Some(slot.map_or(t, |x: Millis| x.min(t)));
                };
                for net in &n.0 {
                    min(&mut s.any, net.first);
                    if net.prefix == prefix {
                        min(&mut s.network, net.first);
                    }
                    if asn.is_some_and(|a| a == net.asn) {
                        min(&mut s.asn, net.first);
                    }
                    if country.is_some_and(|c| c == net.country) {
                        min(&mut s.country, net.first);
                    }
                }
                s
            })
            .unwrap_or_default()
    }

    /// When `account` first logged in successfully (among what is remembered).
    pub fn first_seen(&self, account: u64) -> Option<Millis> {
        self.table
            .with(account, |n| n.0.iter().map(|x| x.first).min())
            .flatten()
    }

    /// Learns a successful login of `account` from `ip` at `ts`.
    pub fn learn(&self, account: u64, ip: IpAddr, point: Option<&Point>, ts: Millis) {
        let prefix = self.network(ip);
        let asn = point.map_or(0, |p| p.asn);
        let country = point.map_or([0, 0], |p| p.country);
        let max = self.cfg.max_networks;
        self.table.update(
            account,
            || Networks(Items::new()),
            |n| {
                if let Some(net) = n.0.iter_mut().find(|x| x.prefix == prefix) {
                    net.first = net.first.min(ts);
                    net.last = net.last.max(ts);
                    if net.asn == 0 {
                        net.asn = asn;
                    }
                    if net.country == [0, 0] {
                        net.country = country;
                    }
                    return;
                }
                if n.0.len() >= max {
                    // The least recently used network goes.
                    if let Some(i) = (0..n.0.len()).min_by_key(|&i| n.0[i].last) {
                        n.0.swap_remove(i);
                    }
                }
                n.0.push(Network {
                    prefix,
                    asn,
                    country,
                    first: ts,
                    last: ts,
                });
            },
        );
    }

    /// Forgets the networks `account` first used at or after `since` (an
    /// attacker's, learned during an incident that an unlock has ended);
    /// returns how many.
    pub fn forget_since(&self, account: u64, since: Millis) -> usize {
        let left = self.table.with(account, |n| {
            let before = n.0.len();
            n.0.retain(|x| x.first < since);
            (before - n.0.len(), n.0.is_empty())
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
mod tests {
    use super::*;
    use crate::source::event::account_key;
    use crate::time::HOUR;

    fn point(cc: &[u8; 2], asn: u32) -> Point {
        Point {
            country: *cc,
            asn,
            ..Point::default()
        }
    }

    #[test]
    fn a_network_is_familiar_only_after_it_was_first_used() {
        let p = Profile::new(&ProfileConfig::default(), &StateConfig::default());
        let a = account_key("a@example.net");
        let home: IpAddr = "198.51.100.7".parse().unwrap();
        let home_next: IpAddr = "198.51.100.200".parse().unwrap();
        let far: IpAddr = "203.0.113.9".parse().unwrap();
        let t = 1_800_000_000_000;
        p.learn(a, home, Some(&point(b"JP", 64500)), t);
        let s = p.seen(a, home_next, Some(&point(b"JP", 64500)));
        assert_eq!(s.network, Some(t), "one /24 is one network");
        assert!(s.familiar_before(t + HOUR, Some(&point(b"JP", 64500))));
        assert!(
            !s.familiar_before(t, Some(&point(b"JP", 64500))),
            "not before it was used"
        );
        // Another prefix of the same carrier in the same country is familiar.
        let s = p.seen(a, far, Some(&point(b"JP", 64500)));
        assert!(s.familiar_before(t + HOUR, Some(&point(b"JP", 64500))));
        // Another network abroad is not.
        let s = p.seen(a, far, Some(&point(b"NG", 64999)));
        assert!(!s.familiar_before(t + HOUR, Some(&point(b"NG", 64999))));
        // Learned out of order, the first use is still the earliest.
        p.learn(a, home, None, t - HOUR);
        assert_eq!(p.seen(a, home, None).network, Some(t - HOUR));
    }

    #[test]
    fn at_most_max_networks_the_least_recent_goes() {
        let cfg = ProfileConfig {
            max_networks: 2,
            ..ProfileConfig::default()
        };
        let p = Profile::new(&cfg, &StateConfig::default());
        let a = account_key("a@example.net");
        let t = 1_800_000_000_000;
        for (i, ip) in ["192.0.2.1", "198.51.100.1", "203.0.113.1"]
            .iter()
            .enumerate()
        {
            p.learn(a, ip.parse().unwrap(), None, t + i as Millis);
        }
        assert_eq!(p.seen(a, "192.0.2.1".parse().unwrap(), None).network, None);
        assert!(p
            .seen(a, "203.0.113.1".parse().unwrap(), None)
            .network
            .is_some());
    }
}
