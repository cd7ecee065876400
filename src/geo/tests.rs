//! GeoIP's tests: distances, start-up errors, and the block cache.

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
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
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
