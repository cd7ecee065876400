//! Four weeks of a platform whose accounts credwatch has come to know, with
//! the quiet compromises that travel, bursts and volume cannot see, each
//! beside its benign look-alikes (issue: "know each account").
//!
//! 2,000 ordinary accounts log in every day from home (a few also from a
//! mobile carrier in their own country, or at an odd hour), with one or
//! two mail programs, over IMAP and some over SMTP to send. On top of them:
//!
//! | attack | look-alikes |
//! |---|---|
//! | a phished account: SMTP AUTH from a hosting network abroad two days after the owner's last login, 60-90 recipients an hour as itself | a traveller abroad with their own phone, sending a few messages; a commercial VPN used every day |
//! | the same, on an account that never used SMTP | |
//! | mailbox theft: IMAP only, a new country and a new client, for hours | a new phone at home; a move between cities of one country |
//! | a dormant account's first login in 3 weeks, from a country it never used | a dormant account back from home |
//!
//! The history is generated (a fixed seed) and replayed through the engine
//! once; every test reads the same actions.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use credwatch::action::Action;
use credwatch::demo::sample::Line;
use credwatch_testkit::*;

const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const DAYS: i64 = 28;
const ORDINARY: usize = 2000;
/// Attacks and look-alikes happen from this day on (the profiles have
/// learned for three weeks).
const ATTACK_DAY: i64 = 21;

const CLIENTS: [&str; 4] = [
    "Thunderbird 115.3.1",
    "iPhone Mail (20G75)",
    "Microsoft Outlook 16.0.17126",
    "K-9 Mail 6.710",
];

/// Home cities and a mobile carrier in the same country.
const HOMES: [(&str, &str); 5] = [
    ("London", "Boxford"),
    ("Manchester", "London"),
    ("Tokyo", "Osaka"),
    ("Yokohama", "Tokyo"),
    ("Berlin", "Berlin"),
];

/// A small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One account's habits.
struct Person {
    name: String,
    home: (&'static str, u16),
    mobile: (&'static str, u16),
    clients: Vec<&'static str>,
    smtp: bool,
    /// The hour (UTC) its day starts at.
    morning: i64,
}

impl Person {
    fn new(name: String, r: &mut Rng) -> Person {
        let (home, mobile) = HOMES[r.below(HOMES.len() as u64) as usize];
        let c = r.below(CLIENTS.len() as u64) as usize;
        let mut clients = vec![CLIENTS[c]];
        if r.below(3) == 0 {
            clients.push(CLIENTS[(c + 1) % CLIENTS.len()]);
        }
        Person {
            name,
            home: (home, 1 + r.below(60_000) as u16),
            mobile: (mobile, 1 + r.below(60_000) as u16),
            clients,
            smtp: r.below(3) == 0,
            morning: 6 + r.below(4) as i64,
        }
    }

    fn login(&self, t: i64, at: (&str, u16), protocol: &str, client: Option<&str>) -> Line {
        auth_with(
            t,
            &self.name,
            protocol,
            ip(at.0, at.1),
            true,
            Some("c0ffee00"),
            client,
        )
    }

    /// A message it sends as itself from `at` to `rcpts` recipients.
    fn sends(&self, t: i64, at: (&str, u16), rcpts: u32) -> Line {
        submission(
            t,
            &self.name,
            ip(at.0, at.1),
            &self.name,
            Some(&self.name),
            rcpts,
        )
    }

    /// Its ordinary use on `day`: a few IMAP logins through the day, now
    /// and then from the mobile carrier; sending over SMTP for some.
    fn day(&self, day: i64, r: &mut Rng, out: &mut Vec<Line>) {
        let base = T0 + day * DAY + self.morning * HOUR;
        for i in 0..2 + r.below(3) as i64 {
            let t = base + i * 4 * HOUR + r.below(90) as i64 * MINUTE;
            let at = if r.below(12) == 0 {
                self.mobile
            } else {
                self.home
            };
            let client = self.clients[r.below(self.clients.len() as u64) as usize];
            out.push(self.login(t, at, "imap", Some(client)));
            if self.smtp && r.below(2) == 0 {
                out.push(self.login(t + MINUTE, at, "smtp", None));
                out.push(self.sends(t + 2 * MINUTE, at, 1 + r.below(3) as u32));
            }
        }
    }
}

struct Played {
    actions: Vec<Action>,
}

fn played() -> &'static Played {
    static PLAYED: OnceLock<Played> = OnceLock::new();
    PLAYED.get_or_init(|| {
        let world = World::new();
        let engine = world.engine("");
        let lines = sorted(history());
        let actions = run(&engine, &lines);
        std::mem::forget(world); // the engine's databases stay readable
        Played { actions }
    })
}

fn history() -> Vec<Line> {
    let mut r = Rng(0x5eed_cafe_f00d);
    let mut lines = Vec::new();
    let people: Vec<Person> = (0..ORDINARY)
        .map(|i| Person::new(format!("user{i}@example.net"), &mut r))
        .collect();
    for d in 0..DAYS {
        for p in &people {
            p.day(d, &mut r, &mut lines);
        }
    }
    let at = |d: i64, h: i64| T0 + d * DAY + h * HOUR;

    // A phished account that sends (its owner uses SMTP): quiet for two
    // days, then SMTP AUTH from a hosting network abroad and 60-90
    // recipients an hour, as itself, for half a day.
    let p = special(
        &mut r,
        &mut lines,
        "phished@example.net",
        true,
        0..ATTACK_DAY - 2,
    );
    for h in 0..12 {
        let t = at(ATTACK_DAY, 10) + h * HOUR;
        lines.push(p.login(t, ("Amsterdam", 4242), "smtp", None));
        for m in 0..3 {
            lines.push(p.sends(
                t + (m * 20 + 1) * MINUTE,
                ("Amsterdam", 4242),
                20 + (h as u32 % 3) * 5,
            ));
        }
    }
    // The same, on an account that only ever read its mail over IMAP.
    let p = special(
        &mut r,
        &mut lines,
        "phished-reader@example.net",
        false,
        0..ATTACK_DAY - 2,
    );
    lines.push(p.login(at(ATTACK_DAY, 11), ("Amsterdam", 4243), "smtp", None));
    lines.push(p.sends(at(ATTACK_DAY, 11) + MINUTE, ("Amsterdam", 4243), 5));

    // Mailbox theft: IMAP from Lagos with another program, every quarter
    // hour for three hours, two days after the owner's last login (no
    // travel to judge); nothing sent.
    let p = special(
        &mut r,
        &mut lines,
        "robbed@example.net",
        false,
        0..ATTACK_DAY - 1,
    );
    for q in 0..13 {
        lines.push(p.login(
            at(ATTACK_DAY, 13) + q * 15 * MINUTE,
            ("Lagos", 99),
            "imap",
            Some("MailGrabber 2.1"),
        ));
    }

    // A dormant account: used for nine days, silent for three weeks less
    // a bit, then a login from Moscow.
    let p = special(&mut r, &mut lines, "dormant@example.net", false, 0..9);
    lines.push(p.login(
        at(ATTACK_DAY + 5, 9),
        ("Moscow", 5),
        "imap",
        Some(CLIENTS[0]),
    ));

    // Low-and-slow guessing: a failure every one to two minutes from
    // rotating addresses around the world, each with another password,
    // for four hours; then a success from yet another address.
    let p = special(
        &mut r,
        &mut lines,
        "guessed@example.net",
        false,
        0..ATTACK_DAY + 1,
    );
    let proxies = [
        "Lagos",
        "São Paulo",
        "Moscow",
        "Changchun",
        "Sydney",
        "Milton",
        "New York",
        "Linköping",
    ];
    let mut t = at(ATTACK_DAY, 1);
    for i in 0..160u16 {
        let city = proxies[i as usize % proxies.len()];
        lines.push(auth_with(
            t,
            &p.name,
            "imap",
            ip(city, 1000 + i),
            false,
            Some(&format!("{:x}", 0xbad000 + u32::from(i))),
            None,
        ));
        t += 70 * SECOND + r.below(60) as i64 * SECOND;
    }
    lines.push(auth_with(
        t + MINUTE,
        &p.name,
        "imap",
        ip("São Paulo", 4000),
        true,
        Some("c0ffee00"),
        None,
    ));

    // Credential stuffing from residential proxies: 300 addresses, each
    // in its own /24 across nine countries, each trying one to three
    // accounts once in an hour with a leaked password (four in five
    // ordinary accounts of the platform, the rest names that do not exist). Four accounts on the list fall to a
    // proxy that had tried others; a fifth to a proxy that tried it alone.
    let stuffed: Vec<Person> = (0..5)
        .map(|k| {
            special(
                &mut r,
                &mut lines,
                &format!("stuffed{k}@example.net"),
                false,
                0..ATTACK_DAY - 1,
            )
        })
        .collect();
    let countries = [
        "Lagos",
        "São Paulo",
        "Moscow",
        "Changchun",
        "Sydney",
        "Milton",
        "New York",
        "Linköping",
        "Paris",
    ];
    let wave = at(ATTACK_DAY + 1, 14);
    for i in 0..300u16 {
        let city = countries[i as usize % countries.len()];
        let proxy = ip(city, (((i * 7) % 250 + 1) << 8) | (i % 200 + 1));
        let t = wave + (i as i64 * 12) * SECOND;
        // Late in the hour, when the wave has built up, four accounts of the
        // list fall to a proxy that tried one or two accounts of the
        // platform before them.
        let falls = [200, 211, 222, 233, 250].iter().position(|&x| x == i);
        let tries = 1 + r.below(3) as i64;
        for k in 0..tries {
            let victim = if falls.is_some() || r.below(5) != 0 {
                format!("user{}@example.net", r.below(ORDINARY as u64))
            } else {
                format!("ghost{}@example.net", r.below(100_000))
            };
            lines.push(auth_with(
                t + k * SECOND,
                &victim,
                "imap",
                proxy,
                false,
                Some(&format!("{:x}", r.next() & 0xffff_ffff)),
                None,
            ));
        }
        if let Some(k) = falls {
            let proxy = if k == 4 { ip("Moscow", 0xfe01) } else { proxy };
            lines.push(auth_with(
                t + 5 * SECOND,
                &stuffed[k].name,
                "imap",
                proxy,
                true,
                Some("1eaced00"),
                None,
            ));
        }
    }

    // Look-alikes.
    // A traveller arriving in Paris during the wave, with their own phone.
    let p = special(
        &mut r,
        &mut lines,
        "wave-traveller@example.net",
        false,
        0..ATTACK_DAY + 1,
    );
    lines.push(p.login(
        wave + 20 * MINUTE,
        ("Paris", (251 << 8) | 9),
        "imap",
        Some(CLIENTS[0]),
    ));
    // A phone retrying a stale password all day from the mobile network,
    // while the owner reads mail from home.
    let p = special(
        &mut r,
        &mut lines,
        "stale-phone@example.net",
        false,
        0..DAYS,
    );
    for i in 0..150 {
        lines.push(auth_with(
            at(ATTACK_DAY, 6) + i * 5 * MINUTE,
            &p.name,
            "imap",
            ip("Boxford", 77),
            false,
            Some("5ca1ab1e"),
            Some("iPhone Mail (20G75)"),
        ));
    }
    // A traveller in Paris with their usual phone, at their usual hours,
    // sending a few messages.
    let p = special(
        &mut r,
        &mut lines,
        "traveller@example.net",
        true,
        0..ATTACK_DAY,
    );
    for d in ATTACK_DAY..DAYS {
        for i in 0..3 {
            let t = at(d, 8) + i * 4 * HOUR;
            lines.push(p.login(t, ("Paris", 300 + d as u16), "imap", Some(CLIENTS[0])));
            lines.push(p.login(t + MINUTE, ("Paris", 300 + d as u16), "smtp", None));
            lines.push(p.sends(t + 2 * MINUTE, ("Paris", 300 + d as u16), 2));
        }
    }
    // A traveller who also logs in at night.
    let p = special(
        &mut r,
        &mut lines,
        "night-traveller@example.net",
        false,
        0..ATTACK_DAY,
    );
    lines.push(p.login(at(ATTACK_DAY, 2), ("Berlin", 77), "imap", Some(CLIENTS[0])));
    // A new phone at home, and a move to Manchester.
    let p = special(&mut r, &mut lines, "new-phone@example.net", false, 0..DAYS);
    lines.push(p.login(
        at(ATTACK_DAY, 12),
        ("London", 77),
        "imap",
        Some("iPhone Mail (21A329)"),
    ));
    lines.push(p.login(
        at(ATTACK_DAY + 1, 12),
        ("Boxford", 9000),
        "imap",
        Some("iPhone Mail (21A329)"),
    ));
    let p = special(&mut r, &mut lines, "mover@example.net", true, 0..ATTACK_DAY);
    for d in ATTACK_DAY..DAYS {
        lines.push(p.login(at(d, 9), ("Manchester", 4000), "imap", Some(CLIENTS[0])));
    }
    // A commercial VPN (a hosting network) used every day, from rotating
    // addresses of the same provider.
    let mut p = special(&mut r, &mut lines, "vpn@example.net", true, 0..0);
    p.home = ("Amsterdam", 100);
    for d in 0..DAYS {
        p.home = ("Amsterdam", 100 + (d as u16 % 5) * 256);
        p.day(d, &mut r, &mut lines);
    }
    // A dormant account back from home.
    let p = special(&mut r, &mut lines, "dormant-home@example.net", false, 0..9);
    lines.push(p.login(
        at(ATTACK_DAY + 5, 9),
        ("London", 77),
        "imap",
        Some(CLIENTS[0]),
    ));
    lines
}

/// A look-alike or a victim: at home in London with one mail program,
/// its ordinary use on `days`.
fn special(
    r: &mut Rng,
    lines: &mut Vec<Line>,
    name: &str,
    smtp: bool,
    days: std::ops::Range<i64>,
) -> Person {
    let mut p = Person::new(name.to_string(), r);
    p.home = ("London", 77);
    p.mobile = ("Boxford", 77);
    p.clients = vec![CLIENTS[0]];
    p.smtp = smtp;
    p.morning = 8;
    for d in days {
        p.day(d, r, lines);
    }
    p
}

fn of<'a>(account: &str) -> Vec<&'a Action> {
    played()
        .actions
        .iter()
        .filter(|a| &*a.data.account == account)
        .collect()
}

fn kinds(actions: &[&Action]) -> Vec<(String, String)> {
    actions
        .iter()
        .map(|a| {
            (
                a.data.detector.to_string(),
                a.data.action.as_str().to_string(),
            )
        })
        .collect()
}

fn locked_by(account: &str, detector: &str) -> &'static Action {
    let found = of(account);
    found
        .iter()
        .copied()
        .find(|a| a.data.detector == detector && a.data.action.as_str() == "lock")
        .unwrap_or_else(|| {
            panic!(
                "{account} was not locked by {detector}: {:?}",
                kinds(&found)
            )
        })
}

#[test]
fn a_phished_account_sending_from_a_hosting_network_abroad_is_locked() {
    let a = locked_by("phished@example.net", "unfamiliar_login");
    let ev = &a.data.evidence;
    let new: BTreeSet<&str> = ev["new"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        ["country", "network", "anonymous_network"]
            .iter()
            .all(|x| new.contains(x)),
        "{ev}"
    );
    assert!(ev["recipients_from_there"].as_u64().unwrap() >= 20, "{ev}");
    assert!(a.data.reason.contains("Amsterdam"), "{}", a.data.reason);
    // The alert before it says what the account normally uses.
    let alert = of("phished@example.net")
        .into_iter()
        .find(|x| x.data.detector == "unfamiliar_login" && x.data.action.as_str() == "alert")
        .expect("an alert at the login");
    assert!(
        alert.data.reason.contains("normally logs in from GB"),
        "{}",
        alert.data.reason
    );
    assert_eq!(alert.data.evidence["usual"]["countries"][0], "GB");
}

#[test]
fn a_reader_account_logging_in_over_smtp_from_abroad_is_locked_at_once() {
    let a = locked_by("phished-reader@example.net", "unfamiliar_login");
    assert!(a.data.reason.contains("SMTP"), "{}", a.data.reason);
}

#[test]
fn mailbox_theft_over_imap_for_hours_is_locked() {
    let a = locked_by("robbed@example.net", "unfamiliar_login");
    let ev = &a.data.evidence;
    assert!(
        ev["imap_from_there_minutes"].as_u64().unwrap() >= 120,
        "{ev}"
    );
    let new: Vec<&str> = ev["new"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(new.contains(&"client") && new.contains(&"country"), "{ev}");
}

#[test]
fn a_dormant_account_waking_up_abroad_alerts() {
    let found = of("dormant@example.net");
    let a = found
        .iter()
        .find(|a| a.data.detector == "unfamiliar_login")
        .unwrap_or_else(|| panic!("{:?}", kinds(&found)));
    let new: Vec<&str> = a.data.evidence["new"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(new.contains(&"dormant"), "{}", a.data.evidence);
    assert!(a.data.evidence["silent_days"].as_u64().unwrap() >= 14);
}

#[test]
fn a_patient_guesser_who_gets_in_is_locked() {
    let a = locked_by("guessed@example.net", "slow_guessing");
    let ev = &a.data.evidence;
    assert!(ev["failures"].as_u64().unwrap() >= 30, "{ev}");
    assert_eq!(ev["success"]["tied_to_the_guessing"], true, "{ev}");
}

#[test]
fn the_accounts_that_fell_to_credential_stuffing_are_locked_or_alerted() {
    for k in 0..4 {
        let a = locked_by(&format!("stuffed{k}@example.net"), "credential_stuffing");
        assert!(
            a.data.evidence["asn_cold_failures"].as_u64().unwrap() >= 20,
            "{}",
            a.data.evidence
        );
    }
    // Its proxy tried nothing else: an alert, with the wave as evidence.
    let found = of("stuffed4@example.net");
    let a = found
        .iter()
        .find(|a| a.data.detector == "credential_stuffing")
        .unwrap_or_else(|| panic!("{:?}", kinds(&found)));
    assert_eq!(a.data.action.as_str(), "alert", "{:?}", kinds(&found));
    // The list's failures alone lock nobody.
    let ordinary_locks = played()
        .actions
        .iter()
        .filter(|a| a.data.account.starts_with("user") || a.data.account.starts_with("ghost"))
        .count();
    assert_eq!(ordinary_locks, 0);
}

#[test]
fn the_look_alikes_stay_quiet() {
    for a in [
        "wave-traveller@example.net",
        "stale-phone@example.net",
        "traveller@example.net",
        "night-traveller@example.net",
        "new-phone@example.net",
        "mover@example.net",
        "vpn@example.net",
        "dormant-home@example.net",
    ] {
        let found = of(a);
        assert!(found.is_empty(), "{a}: {:?}", kinds(&found));
    }
}

#[test]
fn false_alerts_stay_under_a_tenth_of_a_percent_of_ordinary_accounts() {
    let alerted: BTreeSet<&str> = played()
        .actions
        .iter()
        .map(|a| &*a.data.account)
        .filter(|a| a.starts_with("user"))
        .collect();
    let locked: Vec<&Action> = played()
        .actions
        .iter()
        .filter(|a| a.data.account.starts_with("user") && a.data.action.as_str() == "lock")
        .collect();
    assert!(
        locked.is_empty(),
        "ordinary accounts locked: {:?}",
        kinds(&locked)
    );
    assert!(
        alerted.len() * 1000 <= ORDINARY,
        "{} of {ORDINARY} ordinary accounts had an action: {alerted:?}",
        alerted.len()
    );
}
