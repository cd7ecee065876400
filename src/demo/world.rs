//! The sample world's places: cities with made-up networks, and the City,
//! ASN and Anonymous-IP databases written from them (with `mmdb-writer`).
//! Nothing here is real data.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Serialize;

/// A city of the sample world, with the networks placed there.
#[derive(Debug, Clone, Copy)]
pub struct City {
    pub name: &'static str,
    pub country: &'static str,
    pub lat: f64,
    pub lon: f64,
    pub accuracy_km: u16,
    /// An IPv4 /16 placed in this city.
    pub v4: [u8; 2],
    /// An IPv6 /32 placed in this city (first two groups).
    pub v6: [u16; 2],
    pub asn: u32,
    pub org: &'static str,
    /// A hosting or VPN network (Anonymous-IP database).
    pub hosting: bool,
}

#[allow(clippy::too_many_arguments)]
const fn city(
    name: &'static str,
    country: &'static str,
    lat: f64,
    lon: f64,
    accuracy_km: u16,
    v4: [u8; 2],
    v6: [u16; 2],
    asn: u32,
    org: &'static str,
) -> City {
    City {
        name,
        country,
        lat,
        lon,
        accuracy_km,
        v4,
        v6,
        asn,
        org,
        hosting: false,
    }
}

/// The sample world. Coordinates are the cities'; the networks are made up.
pub const CITIES: &[City] = &[
    city(
        "London",
        "GB",
        51.5142,
        -0.0931,
        10,
        [81, 2],
        [0x2a02, 0x0c7f],
        64601,
        "Thames Broadband",
    ),
    city(
        "Boxford",
        "GB",
        51.75,
        -1.25,
        50,
        [2, 125],
        [0x2a02, 0x0c80],
        64602,
        "Downs Telecom",
    ),
    city(
        "Manchester",
        "GB",
        53.4808,
        -2.2426,
        20,
        [5, 64],
        [0x2a02, 0x0c81],
        64603,
        "Northern Fibre",
    ),
    city(
        "Paris",
        "FR",
        48.8566,
        2.3522,
        20,
        [90, 0],
        [0x2a01, 0x0cb0],
        64604,
        "Seine Telecom",
    ),
    city(
        "Berlin",
        "DE",
        52.52,
        13.405,
        20,
        [91, 64],
        [0x2a02, 0x0810],
        64605,
        "Spree Netz",
    ),
    city(
        "Linköping",
        "SE",
        58.4167,
        15.6167,
        20,
        [89, 160],
        [0x2a02, 0x0aa0],
        64606,
        "Östgöta Nät",
    ),
    city(
        "Milton",
        "US",
        47.2513,
        -122.3149,
        22,
        [216, 160],
        [0x2600, 0x1700],
        64607,
        "Puget Cable",
    ),
    city(
        "New York",
        "US",
        40.7128,
        -74.006,
        20,
        [24, 0],
        [0x2600, 0x1000],
        64608,
        "Hudson Online",
    ),
    city(
        "Tokyo",
        "JP",
        35.6895,
        139.6917,
        20,
        [126, 0],
        [0x2001, 0x0218],
        64609,
        "Kanto Hikari",
    ),
    city(
        "Yokohama",
        "JP",
        35.4437,
        139.638,
        20,
        [126, 1],
        [0x2001, 0x0219],
        64610,
        "Bay Hikari",
    ),
    city(
        "Osaka",
        "JP",
        34.6937,
        135.5023,
        20,
        [27, 80],
        [0x2001, 0x0220],
        64611,
        "Kansai Net",
    ),
    city(
        "Changchun",
        "CN",
        43.88,
        125.3228,
        50,
        [175, 16],
        [0x240e, 0x0100],
        64612,
        "Jilin Telecom",
    ),
    city(
        "Lagos",
        "NG",
        6.5244,
        3.3792,
        50,
        [105, 112],
        [0x2c0f, 0xf000],
        64613,
        "Lagoon Mobile",
    ),
    city(
        "São Paulo",
        "BR",
        -23.5505,
        -46.6333,
        50,
        [177, 0],
        [0x2804, 0x0100],
        64614,
        "Paulista Net",
    ),
    city(
        "Sydney",
        "AU",
        -33.8688,
        151.2093,
        20,
        [1, 120],
        [0x2001, 0x8000],
        64615,
        "Harbour Broadband",
    ),
    city(
        "Moscow",
        "RU",
        55.7558,
        37.6173,
        50,
        [95, 24],
        [0x2a00, 0x1370],
        64616,
        "Moskva Telecom",
    ),
    City {
        hosting: true,
        ..city(
            "Amsterdam",
            "NL",
            52.3676,
            4.9041,
            100,
            [185, 107],
            [0x2a03, 0xb0c0],
            64617,
            "Cloudy Hosting B.V.",
        )
    },
];

/// An address in `city`; `host` picks one of its 65,536 IPv4 addresses.
pub fn ip_in(city: &City, host: u16) -> IpAddr {
    let [a, b] = city.v4;
    IpAddr::V4(Ipv4Addr::new(a, b, (host >> 8) as u8, host as u8))
}

/// An IPv6 address in `city`: `host` picks a subscriber's /64 (a /64 is
/// one subscriber's or one server's, RFC 6177), interface ::1 in it.
pub fn ip6_in(city: &City, host: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(city.v6[0], city.v6[1], 0, host, 0, 0, 0, 1))
}

/// Another interface (`iface`) in the same /64 as `ip6_in(city, host)`.
pub fn ip6_in_64(city: &City, host: u16, iface: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        city.v6[0], city.v6[1], 0, host, 0, 0, 0, iface,
    ))
}

pub fn city_named(name: &str) -> &'static City {
    CITIES
        .iter()
        .find(|c| c.name == name)
        .expect("a sample city")
}

#[derive(Serialize)]
struct Names {
    en: String,
}

#[derive(Serialize)]
struct CityName {
    names: Names,
}

#[derive(Serialize)]
struct Country {
    iso_code: String,
}

#[derive(Serialize)]
struct Location {
    latitude: f64,
    longitude: f64,
    accuracy_radius: u16,
}

/// A City-database record with the fields credwatch reads.
#[derive(Serialize)]
pub struct CityRecord {
    city: CityName,
    country: Country,
    location: Location,
}

impl CityRecord {
    pub fn new(city: &str, country: &str, lat: f64, lon: f64, accuracy_km: u16) -> CityRecord {
        CityRecord {
            city: CityName {
                names: Names {
                    en: city.to_string(),
                },
            },
            country: Country {
                iso_code: country.to_string(),
            },
            location: Location {
                latitude: lat,
                longitude: lon,
                accuracy_radius: accuracy_km,
            },
        }
    }
}

#[derive(Serialize)]
struct AsnRecord {
    autonomous_system_number: u32,
    autonomous_system_organization: String,
}

#[derive(Serialize)]
struct AnonRecord {
    is_anonymous: bool,
    is_hosting_provider: bool,
}

/// Paths of the three generated databases.
#[derive(Debug, Clone)]
pub struct GeoFiles {
    pub city: PathBuf,
    pub asn: PathBuf,
    pub anonymous: PathBuf,
}

fn nets(c: &City) -> [IpNet; 2] {
    let [a, b] = c.v4;
    [
        IpNet::new(IpAddr::V4(Ipv4Addr::new(a, b, 0, 0)), 16).expect("valid prefix"),
        IpNet::new(
            IpAddr::V6(Ipv6Addr::new(c.v6[0], c.v6[1], 0, 0, 0, 0, 0, 0)),
            32,
        )
        .expect("valid prefix"),
    ]
}

fn mmdb_err(e: mmdb_writer::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// Writes City, ASN and Anonymous-IP databases of the sample world into `dir`.
pub fn write_geoip(dir: &Path) -> io::Result<GeoFiles> {
    write_geoip_placing(dir, None)
}

/// The sample world's databases with every network placed in the city
/// named `place`: what a bad GeoIP update looks like (everyone moved to
/// another continent at once). For testing the lock-storm breaker.
pub fn write_geoip_all_in(dir: &Path, place: &str) -> io::Result<GeoFiles> {
    write_geoip_placing(dir, Some(city_named(place)))
}

fn write_geoip_placing(dir: &Path, place: Option<&City>) -> io::Result<GeoFiles> {
    std::fs::create_dir_all(dir)?;
    // MaxMind's readers (and `verify`) expect a description.
    let writer = |kind: &str| {
        mmdb_writer::Writer::builder(format!("credwatch-Sample-{kind}"))
            .description(&[(
                "en",
                "credwatch sample world: made-up networks, real city coordinates",
            )])
            .build()
    };
    let mut city_w = writer("City");
    let mut asn_w = writer("ASN");
    let mut anon_w = writer("Anonymous-IP");
    for c in CITIES {
        for net in nets(c) {
            let at = place.unwrap_or(c);
            let rec = CityRecord::new(at.name, at.country, at.lat, at.lon, at.accuracy_km);
            city_w.insert(net, &rec).map_err(mmdb_err)?;
            let asn = AsnRecord {
                autonomous_system_number: c.asn,
                autonomous_system_organization: c.org.to_string(),
            };
            asn_w.insert(net, &asn).map_err(mmdb_err)?;
            if c.hosting {
                anon_w
                    .insert(
                        net,
                        &AnonRecord {
                            is_anonymous: true,
                            is_hosting_provider: true,
                        },
                    )
                    .map_err(mmdb_err)?;
            }
        }
    }
    let files = GeoFiles {
        city: dir.join("sample-City.mmdb"),
        asn: dir.join("sample-ASN.mmdb"),
        anonymous: dir.join("sample-Anonymous-IP.mmdb"),
    };
    std::fs::write(&files.city, city_w.to_bytes().map_err(mmdb_err)?)?;
    std::fs::write(&files.asn, asn_w.to_bytes().map_err(mmdb_err)?)?;
    std::fs::write(&files.anonymous, anon_w.to_bytes().map_err(mmdb_err)?)?;
    Ok(files)
}

/// A config for the sample world (TOML text).
pub fn config_toml(geo: &GeoFiles) -> String {
    format!(
        "# credwatch config for the generated sample world.\n\
         [geoip]\ncity_db = {:?}\nasn_db = {:?}\nanonymous_db = {:?}\n\n\
         [policy]\n# the platform's webmail front end logs in on users' behalf\n\
         trusted_networks = [\"{}/32\"]\nprotected_accounts = [\"postmaster@example.net\"]\n",
        geo.city.display().to_string(),
        geo.asn.display().to_string(),
        geo.anonymous.display().to_string(),
        ip_in(city_named("London"), 1),
    )
}
