//! A sample world: generated GeoIP databases and a generated day of a mail
//! platform's logins, with attacks and their benign look-alikes. Used by
//! `credwatch generate`, the README's first commands, the tests and the
//! benchmark. Nothing here is real data.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Serialize;

use crate::time::{format_rfc3339, Millis, HOUR, MINUTE, SECOND};

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

/// An IPv6 address in `city`.
pub fn ip6_in(city: &City, host: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(city.v6[0], city.v6[1], 0, 0, 0, 0, 0, host))
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

/// A small deterministic PRNG (SplitMix64): the same seed, the same day.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// An event to write (the JSON line and its time).
#[derive(Debug, Clone)]
pub struct Line {
    pub ts: Millis,
    pub json: String,
}

/// What each generated scenario expects credwatch to do.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expected {
    pub account: String,
    /// `Some(detector)` for an attack: the account must be locked (by this
    /// detector or an earlier one of the same incident). `None`: it must
    /// not be locked (an alert may be right, e.g. for a spoofed customer).
    pub detector: Option<&'static str>,
    pub scenario: &'static str,
    /// When the abuse began (the first attacker event), for attacks.
    pub abuse_start: Option<Millis>,
}

/// Parameters of a generated day.
#[derive(Debug, Clone)]
pub struct DayParams {
    pub accounts: usize,
    pub hours: u32,
    pub logins_per_account: u32,
    pub start: Millis,
    pub seed: u64,
    pub scenarios: bool,
}

impl Default for DayParams {
    fn default() -> Self {
        DayParams {
            accounts: 500,
            hours: 24,
            logins_per_account: 6,
            // 2026-11-05T00:00:00Z
            start: 1_793_836_800_000,
            seed: 7,
            scenarios: true,
        }
    }
}

/// One event as a JSON line: the common fields, then `fields` (a `None`
/// value leaves its field out).
fn event_line(
    ts: Millis,
    kind: &str,
    account: &str,
    fields: &[(&str, Option<serde_json::Value>)],
) -> Line {
    let mut m = BTreeMap::new();
    m.insert("ts", serde_json::Value::from(format_rfc3339(ts)));
    m.insert("kind", kind.into());
    m.insert("account", account.into());
    for (k, v) in fields {
        if let Some(v) = v {
            m.insert(k, v.clone());
        }
    }
    Line {
        ts,
        json: serde_json::to_string(&m).expect("serialises"),
    }
}

/// A login attempt.
pub fn auth(
    ts: Millis,
    account: &str,
    protocol: &str,
    ip: IpAddr,
    success: bool,
    pwhash: Option<&str>,
) -> Line {
    event_line(
        ts,
        "auth",
        account,
        &[
            ("protocol", Some(protocol.into())),
            ("src_ip", Some(ip.to_string().into())),
            (
                "result",
                Some(if success { "success" } else { "failure" }.into()),
            ),
            ("mechanism", Some("PLAIN".into())),
            ("pwhash", pwhash.map(Into::into)),
        ],
    )
}

/// A message submitted by an authenticated session.
pub fn submission(
    ts: Millis,
    account: &str,
    ip: IpAddr,
    mail_from: &str,
    header_from: Option<&str>,
    rcpt_count: u32,
) -> Line {
    event_line(
        ts,
        "submission",
        account,
        &[
            ("src_ip", Some(ip.to_string().into())),
            ("mail_from", Some(mail_from.into())),
            ("header_from", header_from.map(Into::into)),
            ("rcpt_count", Some(rcpt_count.into())),
        ],
    )
}

/// A bounce (DSN) delivered to `account`.
pub fn bounce(ts: Millis, account: &str) -> Line {
    event_line(ts, "bounce", account, &[])
}

/// A compressed day of a mail platform: ordinary customers logging in from
/// home, plus (with `scenarios`) the attacks credwatch exists for and their
/// benign look-alikes. Returns the lines in time order and what each
/// scenario expects.
pub fn generate_day(p: &DayParams) -> (Vec<Line>, Vec<Expected>) {
    let mut rng = Rng::new(p.seed);
    let span = p.hours as Millis * HOUR;
    let mut lines = Vec::with_capacity(p.accounts * p.logins_per_account as usize + 256);
    let homes: Vec<&City> = CITIES
        .iter()
        .filter(|c| !c.hosting && c.name != "Changchun" && c.name != "Lagos" && c.name != "Moscow")
        .collect();
    let protocols = ["imap", "imap", "imap", "smtp", "pop3", "webmail"];
    for a in 0..p.accounts {
        let account = format!("user{a}@example.net");
        let home = homes[(rng.below(homes.len() as u64)) as usize];
        let host = rng.below(60_000) as u16 + 2;
        let pw = format!("{:08x}", rng.next_u64() as u32);
        for _ in 0..p.logins_per_account {
            let ts = p.start + rng.below(span as u64) as Millis;
            let ip = if rng.below(10) == 0 {
                ip6_in(home, host)
            } else {
                ip_in(home, host)
            };
            let proto = protocols[rng.below(protocols.len() as u64) as usize];
            // One login in fifty mistypes the password first.
            if rng.below(50) == 0 {
                lines.push(auth(
                    ts - 20 * SECOND,
                    &account,
                    proto,
                    ip,
                    false,
                    Some("0badbeef"),
                ));
            }
            lines.push(auth(ts, &account, proto, ip, true, Some(&pw)));
            // A login on the submission port usually sends a message.
            if proto == "smtp" {
                let rcpts = 1 + rng.below(5) as u32;
                lines.push(submission(
                    ts + SECOND,
                    &account,
                    ip,
                    &account,
                    Some(&account),
                    rcpts,
                ));
            }
        }
    }
    let mut expected = Vec::new();
    if p.scenarios {
        scenarios(p, &mut lines, &mut expected);
    }
    lines.sort_by_key(|l| l.ts);
    (lines, expected)
}

fn scenarios(p: &DayParams, lines: &mut Vec<Line>, expected: &mut Vec<Expected>) {
    let t0 = p.start + 2 * HOUR;
    let london = city_named("London");
    let mut exp = |account: &str, detector: Option<&'static str>, scenario: &'static str| {
        expected.push(Expected {
            account: account.into(),
            detector,
            scenario,
            abuse_start: None,
        });
    };

    // Phished: reads mail in London, then SMTP AUTH from Changchun 31 min later.
    let a = "alice@example.jp";
    lines.push(auth(
        t0,
        a,
        "imap",
        ip_in(london, 69 * 256 + 142),
        true,
        Some("a11ce001"),
    ));
    lines.push(auth(
        t0 + 31 * MINUTE,
        a,
        "smtp",
        ip_in(city_named("Changchun"), 199 * 256 + 1),
        true,
        Some("a11ce001"),
    ));
    exp(
        a,
        Some("impossible_travel"),
        "phished password used from abroad",
    );

    // Benign: a flight Tokyo → London, 13 h.
    let a = "traveller@example.jp";
    lines.push(auth(
        t0,
        a,
        "imap",
        ip6_in(city_named("Tokyo"), 7),
        true,
        Some("7aa7e100"),
    ));
    lines.push(auth(
        t0 + 13 * HOUR,
        a,
        "imap",
        ip_in(london, 4000),
        true,
        Some("7aa7e100"),
    ));
    exp(a, None, "long-haul flight Tokyo to London");

    // Benign: a commuter between London and Boxford, every hour.
    let a = "commuter@example.co.uk";
    for h in 0..10 {
        let c = if h % 2 == 0 {
            london
        } else {
            city_named("Boxford")
        };
        lines.push(auth(
            t0 + h * HOUR,
            a,
            "imap",
            ip_in(c, 300 + h as u16),
            true,
            Some("c0c0c0c0"),
        ));
    }
    exp(a, None, "commuter between nearby towns");

    // Benign: a phone retrying one stale saved password every minute, then
    // the laptop with the right one.
    let a = "stale@example.net";
    let home = city_named("Manchester");
    for i in 0..30 {
        lines.push(auth(
            t0 + i * MINUTE,
            a,
            "imap",
            ip_in(home, 77),
            false,
            Some("5ea1e5ea"),
        ));
    }
    lines.push(auth(
        t0 + 15 * MINUTE,
        a,
        "smtp",
        ip_in(home, 78),
        true,
        Some("900dbeef"),
    ));
    exp(a, None, "phone retrying a stale password");

    // Benign: an office NAT where several people mistype once or twice.
    let nat = ip_in(city_named("Paris"), 10);
    for u in 0..6 {
        let a = format!("office{u}@example.fr");
        for k in 0..2 {
            let ts = t0 + (u * 3 + k) * MINUTE;
            lines.push(auth(
                ts,
                &a,
                "imap",
                nat,
                false,
                Some(&format!("{:x}", 0xf00 + u * 2 + k)),
            ));
        }
        lines.push(auth(
            t0 + (u * 3 + 2) * MINUTE,
            &a,
            "imap",
            nat,
            true,
            Some("0ff1ce00"),
        ));
        if u == 0 {
            exp(&a, None, "shared office NAT with a few typos");
        }
    }

    // Attack: password guessing from Lagos, then the right guess.
    let a = "bob@example.net";
    let lagos = city_named("Lagos");
    for i in 0..12 {
        lines.push(auth(
            t0 + 3 * HOUR + i * 20 * SECOND,
            a,
            "imap",
            ip_in(lagos, 9 + (i % 3) as u16),
            false,
            Some(&format!("{:x}", 0xdead00 + i)),
        ));
    }
    lines.push(auth(
        t0 + 3 * HOUR + 5 * MINUTE,
        a,
        "imap",
        ip_in(lagos, 9),
        true,
        Some("b0b0b0b0"),
    ));
    exp(
        a,
        Some("failed_login_burst"),
        "password guessed after a burst",
    );

    // Attack: one address sprays two common passwords over 20 accounts;
    // two of them use one of those passwords.
    let spray = ip_in(city_named("Moscow"), 66);
    for u in 0..20 {
        let a = format!("user{u}@example.net");
        lines.push(auth(
            t0 + 5 * HOUR + u * 30 * SECOND,
            &a,
            "imap",
            spray,
            false,
            Some("5041c0de"),
        ));
    }
    for (u, m) in [(20i64, 4i64), (21, 12)] {
        let a = format!("sprayed{u}@example.net");
        lines.push(auth(
            t0 + 5 * HOUR + m * MINUTE,
            &a,
            "imap",
            spray,
            true,
            Some("5041c0de"),
        ));
        exp(
            &a,
            Some("password_spray"),
            "logged in from a spraying address",
        );
    }
    exp(
        "user0@example.net",
        None,
        "only failures from a spraying address",
    );

    // Benign: the webmail front end (a trusted network) logs in for everyone.
    let webmail = ip_in(london, 1);
    for u in 0..30 {
        lines.push(auth(
            t0 + 6 * HOUR + u * SECOND,
            &format!("webuser{u}@example.net"),
            "webmail",
            webmail,
            u % 2 == 0,
            Some("11111111"),
        ));
    }
    exp(
        "webuser1@example.net",
        None,
        "webmail front end in a trusted network",
    );
    mail_scenarios(p, lines, expected);
}

/// The seed's story: phished accounts abused over SMTP AUTH from abroad,
/// sending as other customers of the platform, whose domains then drown in
/// bounces; beside them a newsletter, and malware on a customer's own PC.
fn mail_scenarios(p: &DayParams, lines: &mut Vec<Line>, expected: &mut Vec<Expected>) {
    let t0 = p.start + 9 * HOUR;
    let spoofed = [
        "ceo@harbour-bank.example",
        "billing@corner-shop.example",
        "info@village-school.example",
        "sales@garden-centre.example",
        "office@law-firm.example",
        "orders@bakery.example",
    ];
    let abroad = ["Changchun", "Lagos", "São Paulo"];
    for (k, place) in abroad.iter().enumerate() {
        let a = format!("phished{k}@example.jp");
        let home = city_named("Tokyo");
        let k = k as i64;
        // The customer reads mail at home in the morning...
        lines.push(auth(
            t0 - 3 * HOUR + k * MINUTE,
            &a,
            "imap",
            ip_in(home, 500 + k as u16),
            true,
            Some("5a5a5a5a"),
        ));
        lines.push(submission(
            t0 - 3 * HOUR + k * MINUTE + SECOND,
            &a,
            ip_in(home, 500 + k as u16),
            &a,
            Some(&a),
            2,
        ));
        // ...hours later the phisher logs in over SMTP AUTH from abroad and
        // sends as other customers; the bounces go to those customers.
        let start = t0 + k * 20 * MINUTE;
        let src = ip_in(city_named(place), 40 + k as u16);
        lines.push(auth(start, &a, "smtp", src, true, Some("5a5a5a5a")));
        for m in 0..60i64 {
            let ts = start + 10 * SECOND + m * 20 * SECOND;
            let forged = spoofed[((m + k) % spoofed.len() as i64) as usize];
            lines.push(submission(ts, &a, src, forged, Some(forged), 50));
            for b in 0..3 {
                lines.push(bounce(ts + (40 + b * 7) * SECOND, forged));
            }
        }
        expected.push(Expected {
            account: a,
            detector: Some("impossible_travel"),
            scenario: "phished, abused over SMTP AUTH from abroad, sending as other customers",
            abuse_start: Some(start),
        });
    }
    for victim in spoofed {
        // The real owners of the forged addresses go on as usual.
        let home = city_named("Manchester");
        lines.push(auth(
            t0 - HOUR,
            victim,
            "smtp",
            ip_in(home, 900),
            true,
            Some("77777777"),
        ));
        lines.push(submission(
            t0 - HOUR + SECOND,
            victim,
            ip_in(home, 900),
            victim,
            Some(victim),
            3,
        ));
        expected.push(Expected {
            account: victim.into(),
            detector: None,
            scenario: "customer whose address spammers forge (bounces come back to it)",
            abuse_start: None,
        });
    }

    // Benign: a club sends its newsletter to 600 members every morning.
    let club = "club@example.org";
    let paris = city_named("Paris");
    for day in -7i64..=0 {
        let d = p.start + day * 24 * HOUR + 8 * HOUR;
        lines.push(auth(
            d - MINUTE,
            club,
            "smtp",
            ip_in(paris, 3),
            true,
            Some("c1c1c1c1"),
        ));
        for i in 0..12 {
            lines.push(submission(
                d + i * MINUTE,
                club,
                ip_in(paris, 3),
                club,
                Some(club),
                50,
            ));
        }
    }
    expected.push(Expected {
        account: club.into(),
        detector: None,
        scenario: "the newsletter it sends every morning",
        abuse_start: None,
    });

    // Attack: malware on a customer's own PC sends from the usual address
    // and the usual place; the recipients' servers bounce much of it.
    let pc = "dentist@example.de";
    let berlin = city_named("Berlin");
    for day in -7i64..=0 {
        for h in 9..17 {
            let ts = p.start + day * 24 * HOUR + h * HOUR;
            if day == 0 && h >= 13 {
                break;
            }
            lines.push(auth(
                ts,
                pc,
                "smtp",
                ip_in(berlin, 77),
                true,
                Some("d3d3d3d3"),
            ));
            lines.push(submission(
                ts + SECOND,
                pc,
                ip_in(berlin, 77),
                pc,
                Some(pc),
                4,
            ));
        }
    }
    let start = p.start + 13 * HOUR;
    for m in 0..90i64 {
        let ts = start + m * 30 * SECOND;
        lines.push(submission(ts, pc, ip_in(berlin, 77), pc, Some(pc), 20));
        lines.push(bounce(ts + 20 * SECOND, pc));
    }
    expected.push(Expected {
        account: pc.into(),
        detector: Some("send_volume"),
        scenario: "malware on the customer's own PC",
        abuse_start: Some(start),
    });
}

/// Writes the lines as JSON lines.
pub fn write_lines(lines: &[Line], mut out: impl Write) -> io::Result<()> {
    for l in lines {
        out.write_all(l.json.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
