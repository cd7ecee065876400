//! Which sources are spraying right now, as Dovecot's reports show it: an
//! address (an IPv6 /64) with many failed logins on several accounts within
//! a short window. Dovecot is told to hold such a source's next login
//! attempts for a few seconds (a tarpit: `status` > 0), which slows a
//! sprayer down by orders of magnitude and costs a real user behind the
//! same address only a delay, never a refusal.
//!
//! Bounded: at most `MAX_SOURCES` addresses are followed; past it, the
//! quietest half is forgotten.

use std::net::IpAddr;

use dashmap::DashMap;

use crate::source::event::{account_key, address_key, truncate};
use crate::time::{Millis, SECOND};

const MAX_SOURCES: usize = 100_000;
/// Distinct accounts remembered per source (enough to reach any sane
/// threshold of `tarpit_accounts`).
const MAX_ACCOUNTS: usize = 16;

struct Source {
    window_start: Millis,
    failures: u32,
    accounts: smallvec::SmallVec<[u64; MAX_ACCOUNTS]>,
}

pub struct Tarpit {
    sources: DashMap<u64, Source>,
    window: Millis,
    failures: u32,
    accounts: usize,
}

impl Tarpit {
    pub fn new(window_secs: u64, failures: u32, accounts: usize) -> Tarpit {
        Tarpit {
            sources: DashMap::new(),
            window: window_secs as Millis * SECOND,
            failures,
            accounts: accounts.min(MAX_ACCOUNTS),
        }
    }

    fn key(ip: IpAddr) -> u64 {
        address_key(truncate(ip, 32, 64))
    }

    /// A failed login of `account` from `ip` at `now`.
    pub fn failure(&self, ip: IpAddr, account: &str, now: Millis) {
        if self.sources.len() >= MAX_SOURCES {
            let (window, min) = (self.window, self.failures / 2);
            self.sources
                .retain(|_, s| s.window_start + window > now && s.failures >= min);
        }
        let a = account_key(account);
        let mut s = self.sources.entry(Self::key(ip)).or_insert(Source {
            window_start: now,
            failures: 0,
            accounts: smallvec::SmallVec::new(),
        });
        if s.window_start + self.window <= now {
            s.window_start = now;
            s.failures = 0;
            s.accounts.clear();
        }
        s.failures = s.failures.saturating_add(1);
        if !s.accounts.contains(&a) && s.accounts.len() < MAX_ACCOUNTS {
            s.accounts.push(a);
        }
    }

    /// Whether `ip` is spraying now.
    pub fn spraying(&self, ip: IpAddr, now: Millis) -> bool {
        self.sources.get(&Self::key(ip)).is_some_and(|s| {
            s.window_start + self.window > now
                && s.failures >= self.failures
                && s.accounts.len() >= self.accounts
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sprayer_is_tarpitted_and_a_typo_is_not() {
        let t = Tarpit::new(600, 10, 5);
        let sprayer: IpAddr = "203.0.113.9".parse().unwrap();
        let user: IpAddr = "198.51.100.7".parse().unwrap();
        for i in 0..12 {
            t.failure(sprayer, &format!("u{i}@example.jp"), i * SECOND);
            // One account retrying a stale password all the while.
            t.failure(user, "me@example.jp", i * SECOND);
        }
        assert!(t.spraying(sprayer, 20 * SECOND));
        assert!(!t.spraying(user, 20 * SECOND), "many failures, one account");
        assert!(!t.spraying(sprayer, 700 * SECOND), "the window passed");
        // The same /64 is one source.
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        for i in 0..10 {
            let b: IpAddr = format!("2001:db8:1:2::{:x}", i + 2).parse().unwrap();
            t.failure(b, &format!("v{i}@example.jp"), SECOND);
        }
        assert!(t.spraying(a, 2 * SECOND));
    }
}
