//! GeoIP's tests: distances, start-up errors, and the block cache.

use super::cache::{Cached, Slot};
use super::*;

#[test]
fn known_distances() {
    let london = (51.5074, -0.1278);
    let tokyo = (35.6762, 139.6503);
    let d = distance_km(london, tokyo);
    assert!((9500.0..9620.0).contains(&d), "{d}");
    assert_eq!(distance_km(london, london), 0.0);
}

#[test]
fn missing_file_names_file_and_setting() {
    let cfg = GeoIpConfig {
        city_db: "/nonexistent/GeoLite2-City.mmdb".into(),
        ..GeoIpConfig::default()
    };
    let e = GeoIp::open(&cfg).err().unwrap().to_string();
    assert!(
        e.contains("/nonexistent/GeoLite2-City.mmdb") && e.contains("geoip.city_db"),
        "{e}"
    );
}

#[test]
fn garbage_file_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.mmdb");
    std::fs::write(&p, b"not a database at all").unwrap();
    let cfg = GeoIpConfig {
        city_db: String::new(),
        asn_db: p.display().to_string(),
        ..GeoIpConfig::default()
    };
    let e = GeoIp::open(&cfg).err().unwrap().to_string();
    assert!(
        e.contains("geoip.asn_db") && e.contains("not a valid MaxMind DB"),
        "{e}"
    );
}

/// A City database with a /16 in one place and a /24 split into two
/// /25s in two others.
#[cfg(feature = "demo")]
fn split_world() -> (tempfile::TempDir, GeoIp) {
    use crate::demo::sample::CityRecord;
    let mut w = mmdb_writer::Writer::builder("Test-City")
        .description(&[("en", "test")])
        .build();
    for (net, city, lat) in [
        ("10.1.0.0/16", "Wide", 10.0),
        ("10.2.3.0/25", "Low", 20.0),
        ("10.2.3.128/25", "High", 30.0),
    ] {
        let rec = CityRecord::new(city, "ZZ", lat, 0.0, 5);
        w.insert(net.parse::<ipnet::IpNet>().unwrap(), &rec)
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("Test-City.mmdb");
    std::fs::write(&p, w.to_bytes().unwrap()).unwrap();
    let cfg = GeoIpConfig {
        city_db: p.display().to_string(),
        ..GeoIpConfig::default()
    };
    (dir, GeoIp::open(&cfg).unwrap())
}

#[cfg(feature = "demo")]
#[test]
fn a_block_is_cached_only_when_the_database_holds_it_whole() {
    let (_dir, geo) = split_world();
    let lat = |p: Point| p.coords.unwrap().0;
    // The /16 covers the /24: one lookup answers its neighbours.
    assert!(!geo.point(ip("10.1.7.1"), 0).1);
    let (p, hit) = geo.point(ip("10.1.7.200"), 1);
    assert!(hit, "a neighbour in a whole block is a cache hit");
    assert_eq!(lat(p), 10.0);
    // Two /25s in one /24: each address is looked up and answered
    // with its own half, never its neighbour's.
    for round in 0..2 {
        let (lo, _) = geo.point(ip("10.2.3.1"), 2);
        let (hi, hi_hit) = geo.point(ip("10.2.3.200"), 2);
        assert_eq!((lat(lo), lat(hi)), (20.0, 30.0));
        assert_eq!(hi, geo.point_uncached(ip("10.2.3.200")).0);
        assert_eq!(hi_hit, round == 1, "the address itself is cached");
    }
    assert!(
        !geo.point(ip("10.2.3.2"), 3).1,
        "another address of a split block is looked up"
    );
    // The cache keeps to its time-to-live.
    assert!(!geo.point(ip("10.1.7.9"), 3_600_000).1);
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cached(ip_text: &str, seed: u32) -> Cached {
    Cached {
        ip: ip(ip_text),
        block: seed.is_multiple_of(2),
        point: Point {
            coords: (!seed.is_multiple_of(3)).then(|| (seed as f32 * -0.5, 179.25 - seed as f32)),
            accuracy_km: (seed * 7) as u16,
            anonymity: Anonymity {
                anonymous: seed & 1 != 0,
                vpn: seed & 2 != 0,
                hosting: seed & 4 != 0,
                public_proxy: seed & 8 != 0,
                tor: seed & 16 != 0,
                residential_proxy: seed & 32 != 0,
            },
            country: if seed.is_multiple_of(5) {
                [0, 0]
            } else {
                *b"JP"
            },
            asn: seed.wrapping_mul(2_654_435_761),
        },
        at: i64::from(seed) * 1_000_003 - 7,
    }
}

#[test]
fn a_cache_slot_gives_back_what_it_was_given() {
    let slot = Slot::default();
    assert_eq!(slot.load(), None, "a fresh slot is empty");
    for (n, text) in [
        "0.0.0.0",
        "203.0.113.9",
        "::",
        "2001:db8::1",
        "::ffff:1.2.3.4",
    ]
    .iter()
    .enumerate()
    {
        for seed in 0..64 {
            let c = cached(text, seed + n as u32 * 64);
            slot.store(&c);
            assert_eq!(slot.load(), Some(c), "{text}, seed {seed}");
        }
    }
    // An IPv4 address and the IPv6 address of the same bits stay apart.
    slot.store(&cached("0.0.0.1", 1));
    assert_eq!(slot.load().map(|c| c.ip), Some(ip("0.0.0.1")));
    slot.store(&cached("::1", 1));
    assert_eq!(slot.load().map(|c| c.ip), Some(ip("::1")));
}

/// Readers racing writers on one slot see a value some writer stored, or
/// nothing: never half of one and half of another.
#[test]
fn a_cache_slot_is_never_read_half_written() {
    let slot = Slot::default();
    let values: Vec<Cached> = (0..8)
        .map(|i| cached(&format!("2001:db8::{i}"), 1000 + i))
        .chain((0..8).map(|i| cached(&format!("198.51.100.{i}"), 2000 + i)))
        .collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (seen, empty) = std::thread::scope(|s| {
        for w in 0..2 {
            let (slot, values, stop) = (&slot, &values, &stop);
            s.spawn(move || {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    slot.store(&values[i % values.len()]);
                    i += 3;
                }
            });
        }
        let mut seen = 0;
        let mut empty = 0;
        let mut torn = None;
        // A writer descheduled in mid-write leaves the slot empty to
        // readers until it runs again: read for a while, not a count.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while seen < 100_000 && std::time::Instant::now() < until {
            match slot.load() {
                Some(c) if !values.contains(&c) => {
                    torn = Some(c);
                    break;
                }
                Some(_) => seen += 1,
                None => empty += 1,
            }
        }
        // The writers stop before any assertion, or a failure would hang.
        stop.store(true, Ordering::Relaxed);
        assert_eq!(torn, None, "a torn read");
        (seen, empty)
    });
    assert!(
        seen > 0,
        "the reader saw nothing but writes under way ({empty})"
    );
}
