//! A sample day of a mail platform: logins, submissions and bounces of
//! ordinary customers, with the attacks credwatch exists for and their
//! benign look-alikes, over the sample world ([`super::world`]). Used by
//! `credwatch generate` and `demo`, the tests and the benchmarks. Nothing
//! here is real data.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::IpAddr;

pub use super::world::{
    city_named, config_toml, ip6_in, ip6_in_64, ip_in, write_geoip, write_geoip_all_in, City,
    CityRecord, GeoFiles, CITIES,
};
use crate::detect;
use crate::time::{format_rfc3339, Millis, HOUR, MINUTE, SECOND};

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
    /// Of every ten logins, how many come over IPv6 (the rest IPv4).
    pub ipv6_in_ten: u32,
    /// Messages submitted after each login on the submission port.
    pub submissions_per_smtp_login: u32,
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
            ipv6_in_ten: 1,
            submissions_per_smtp_login: 1,
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
            let ip = if rng.below(10) < u64::from(p.ipv6_in_ten) {
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
                for k in 0..p.submissions_per_smtp_login {
                    let rcpts = 1 + rng.below(5) as u32;
                    lines.push(submission(
                        ts + (1 + k as Millis) * SECOND,
                        &account,
                        ip,
                        &account,
                        Some(&account),
                        rcpts,
                    ));
                }
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
        Some(detect::impossible_travel::NAME),
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
        Some(detect::failed_login_burst::NAME),
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
            Some(detect::password_spray::NAME),
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
            detector: Some(detect::impossible_travel::NAME),
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
        detector: Some(detect::send_volume::NAME),
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
