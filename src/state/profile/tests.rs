//! The account profile's unit tests.
use super::*;
use crate::source::event::account_key;
use crate::state::Entry;
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
    p.learn(a, home, Some(&point(b"JP", 64500)), t, None, None);
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
    p.learn(a, home, None, t - HOUR, None, None);
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
        p.learn(a, ip.parse().unwrap(), None, t + i as Millis, None, None);
    }
    assert_eq!(p.seen(a, "192.0.2.1".parse().unwrap(), None).network, None);
    assert!(p
        .seen(a, "203.0.113.1".parse().unwrap(), None)
        .network
        .is_some());
}

#[test]
fn a_mail_program_is_one_whatever_its_version() {
    assert_eq!(
        client_key("Thunderbird 115.3.1"),
        client_key("thunderbird 128.0")
    );
    assert_eq!(
        client_key("iPhone Mail (20G75)"),
        client_key("iPhone Mail (21A329)")
    );
    assert_ne!(client_key("Thunderbird 115"), client_key("K-9 Mail 6.7"));
    assert_eq!(client_key("  1.0 "), None);
    assert_eq!(client_key(""), None);
}

#[test]
fn what_is_forgotten_is_measured_by_the_accounts_own_use() {
    let p = Profile::new(&ProfileConfig::default(), &StateConfig::default());
    let a = account_key("a@example.net");
    let t = 1_800_000_000_000;
    let home: IpAddr = "198.51.100.7".parse().unwrap();
    let once: IpAddr = "203.0.113.9".parse().unwrap();
    p.learn(a, once, None, t, Some(Protocol::Imap), Some("Old Client 1"));
    for d in 0..40 {
        p.learn(
            a,
            home,
            None,
            t + d * DAY,
            Some(Protocol::Imap),
            Some("Thunderbird 115"),
        );
    }
    // 39 days of use later, the network and program used once are gone.
    assert_eq!(p.seen(a, once, None).network, None);
    let clients = p.with(a, |h| h.clients.len()).unwrap();
    assert_eq!(clients, 1);
    // Then a silence of 60 days: nothing is forgotten by silence alone,
    // so the first login after it is compared with the habits before.
    let back = t + 99 * DAY;
    assert!(p.seen(a, home, None).familiar_before(back, None));
    let h = p
        .with(a, |h| {
            (
                h.days,
                h.last(),
                h.used(Protocol::Imap),
                h.used(Protocol::Smtp),
            )
        })
        .unwrap();
    assert_eq!(h, (40, t + 39 * DAY, true, false));
    // And a profile is swept only after `keep_silent_days` of silence.
    let mut probe = Habits::empty();
    probe.last = secs_down(t);
    assert!(!probe.prune(t + 1 - 90 * DAY));
    assert!(probe.prune(t + 1));
}

#[test]
fn hours_fade_when_one_fills_up() {
    let p = Profile::new(&ProfileConfig::default(), &StateConfig::default());
    let a = account_key("a@example.net");
    let home: IpAddr = "198.51.100.7".parse().unwrap();
    let t = 1_800_000_000_000 - 1_800_000_000_000 % DAY + 9 * HOUR;
    p.learn(a, home, None, t - 12 * HOUR, None, None);
    for d in 0..300 {
        p.learn(a, home, None, t + d * DAY, None, None);
    }
    let (nine, nine_pm, near) = p
        .with(a, |h| (h.hours[9], h.hours[21], h.near_hour(10)))
        .unwrap();
    assert!(nine > 100 && nine < 255, "{nine}");
    assert_eq!(nine_pm, 0, "the one login at 21:00 faded with the halving");
    assert_eq!(near, u32::from(nine));
}

#[test]
fn a_profile_entry_stays_within_its_budget() {
    // The state budget (512 bytes an account, BENCHMARKS.md) is counted
    // with this entry: one network, one client and one travel login
    // inline. A field added here shows in every account's state.
    assert!(
        std::mem::size_of::<Habits>() <= 152,
        "{}",
        std::mem::size_of::<Habits>()
    );
    assert!(std::mem::size_of::<super::Login>() <= 40);
}

/// A network's and a client's first and last use are written as they
/// were before they shared a `Span`: each field in turn, so snapshots
/// written by either version read back in the other.
#[test]
fn spans_are_written_as_the_two_times_in_place() {
    use crate::state::codec::Codec;
    let net = Network {
        prefix: 0x0102_0304_0506_0708,
        asn: 64_500,
        seen: Span::new(1_000, 2_000),
        country: *b"JP",
    };
    let mut got = Vec::new();
    net.put(&mut got);
    let mut want = Vec::new();
    net.prefix.put(&mut want);
    net.asn.put(&mut want);
    1_000u32.put(&mut want);
    2_000u32.put(&mut want);
    net.country.put(&mut want);
    assert_eq!(got, want);

    let client = Client {
        hash: 77,
        seen: Span::new(3, 4),
    };
    let mut got = Vec::new();
    client.put(&mut got);
    let mut want = Vec::new();
    77u32.put(&mut want);
    3u32.put(&mut want);
    4u32.put(&mut want);
    assert_eq!(got, want);
    let back = Client::get(&mut crate::state::codec::Reader::new(&got)).unwrap();
    assert_eq!((back.seen.first(), back.seen.last()), (3_000, 4_000));
}
