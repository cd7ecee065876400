//! Attacks on credwatch itself (issue 13): an outsider who has read the
//! README tries to get an innocent customer locked, to silence credwatch,
//! or to hide. Each test replays the attack and checks that it fails, and
//! that the real attack it imitates is still caught.

use credwatch_testkit::*;

use credwatch::demo::sample::Line;
use credwatch::time::HOUR;

const DAY: i64 = 24 * HOUR;

fn locks<'a>(
    actions: &'a [credwatch::action::Action],
    account: &str,
) -> Vec<&'a credwatch::action::Action> {
    for_account(actions, account)
        .into_iter()
        .filter(|a| a.kind == "account.lock")
        .collect()
}

/// Ten wrong passwords (four distinct) from far away on `account`.
fn guesses(at: i64, account: &str, from: std::net::IpAddr) -> Vec<Line> {
    (0..10)
        .map(|i| {
            fail(
                at + i * 20 * SECOND,
                account,
                from,
                Some(&format!("{:x}", 0xbad0 + i % 4)),
            )
        })
        .collect()
}

/// The owner's phone: a login a day for a week from home.
fn owner_history(account: &str, home: std::net::IpAddr) -> Vec<Line> {
    (0..7).map(|d| ok(T0 + d * DAY, account, home)).collect()
}

#[test]
fn framing_an_owner_with_wrong_passwords_does_not_lock_their_own_login() {
    let w = World::new();
    let e = w.engine("");
    let owner = "hanako@example.jp";
    let home = ip("Tokyo", 5);
    let mut lines = owner_history(owner, home);
    let attack = T0 + 7 * DAY + 9 * HOUR;
    lines.extend(guesses(attack, owner, ip("Lagos", 9)));
    // The owner's phone logs in from its usual address, then from another
    // address of its usual carrier.
    lines.push(ok(attack + 5 * MINUTE, owner, home));
    lines.push(ok(attack + 6 * MINUTE, owner, ip("Tokyo", 900)));
    let actions = run(&e, &lines);
    assert!(locks(&actions, owner).is_empty(), "{actions:#?}");
    let alerts = for_account(&actions, owner);
    assert!(
        alerts
            .iter()
            .any(|a| a.data.detector == "failed_login_burst"),
        "the guessing is still reported: {actions:#?}"
    );

    // The guess that works, from the guesser's network, still locks (the
    // owner's login did not use the failures up).
    lines.push(ok(attack + 7 * MINUTE, owner, ip("Lagos", 10)));
    let e = w.engine("");
    let actions = run(&e, &lines);
    assert_eq!(locks(&actions, owner).len(), 1, "{actions:#?}");
}

#[test]
fn a_guessed_password_used_from_a_new_network_still_locks() {
    // The success comes from neither a failing source nor its network, but
    // from somewhere the account has never used: tied to the guessing.
    let w = World::new();
    let e = w.engine("");
    let owner = "taro@example.jp";
    let mut lines = owner_history(owner, ip("Tokyo", 5));
    let attack = T0 + 7 * DAY + 9 * HOUR;
    lines.extend(guesses(attack, owner, ip("Lagos", 9)));
    lines.push(ok(attack + 5 * MINUTE, owner, ip("Amsterdam", 77)));
    let actions = run(&e, &lines);
    let l = locks(&actions, owner);
    assert_eq!(l.len(), 1, "{actions:#?}");
    assert_eq!(l[0].data.evidence["success"]["familiar_network"], false);
}

/// `engine` with `lanes` lanes; each line goes to the lane given with it,
/// in the order given (one thread running ahead of another).
fn run_in_lanes(
    e: &credwatch::engine::Engine,
    lines: &[(usize, Line)],
) -> Vec<credwatch::action::Action> {
    use credwatch::policy::Decision;
    use credwatch::source::event::{parse_event, ParseLimits};
    let limits = ParseLimits::new(65_536, T0 + 1000 * HOUR).with_form(e.account_form().clone());
    let mut out = Vec::new();
    for (lane, l) in lines {
        let ev = parse_event(l.json.as_bytes(), &limits).unwrap();
        e.process_in_lane(*lane, &ev, None, &mut out);
    }
    out.into_iter()
        .filter_map(|d| match d {
            Decision::Emit(a) => Some(*a),
            Decision::Enrich { .. } => None,
        })
        .collect()
}

#[test]
fn the_everyday_users_of_a_shared_address_are_not_locked_by_a_spray_through_it() {
    let w = World::new();
    let e = w.engine("");
    let office = ip("Berlin", 40);
    let staff: Vec<String> = (0..30).map(|i| format!("staff{i}@example.de")).collect();
    let mut lines = Vec::new();
    for d in 0..3 {
        for (i, who) in staff.iter().enumerate() {
            lines.push(ok(T0 + d * DAY + 8 * HOUR + i as i64 * SECOND, who, office));
        }
    }
    // Day 4: 15 accounts fail from the office address within half an hour
    // (a sprayer behind the same NAT), then the staff arrive.
    let day4 = T0 + 3 * DAY + 7 * HOUR;
    for i in 0..15 {
        lines.push(fail(
            day4 + i * 2 * MINUTE,
            &format!("guess{i}@example.de"),
            office,
            Some("5eed"),
        ));
    }
    for (i, who) in staff.iter().enumerate() {
        lines.push(ok(day4 + 40 * MINUTE + i as i64 * SECOND, who, office));
    }
    // And one account that has never used the office address gets in
    // through it: that is the sprayer's success.
    lines.push(ok(day4 + 45 * MINUTE, "victim@example.de", office));
    let actions = run(&e, &sorted(lines));
    let locked: Vec<&str> = actions
        .iter()
        .filter(|a| a.kind == "account.lock")
        .map(|a| a.data.account.as_str())
        .collect();
    assert_eq!(locked, ["victim@example.de"], "{actions:#?}");
}

#[test]
fn failures_from_the_future_do_not_make_a_spray() {
    // An office with an ordinary typo rate: 12 accounts fail in one hour,
    // 12 others three hours later. Lane 1 runs ahead and judges the later
    // hour first; lane 0 then judges the earlier one, with a colleague's
    // login among it. No window holds 15 accounts.
    let w = World::new();
    let mut e = w.engine("");
    e.set_lanes(2);
    let office = ip("Paris", 12);
    let at = T0 + 9 * HOUR;
    let mut lines = Vec::new();
    for i in 0..12 {
        lines.push((
            1,
            fail(
                at + 3 * HOUR + i * MINUTE,
                &format!("late{i}@example.fr"),
                office,
                Some("1"),
            ),
        ));
    }
    for i in 0..12 {
        lines.push((
            0,
            fail(
                at + i * MINUTE,
                &format!("early{i}@example.fr"),
                office,
                Some("1"),
            ),
        ));
    }
    lines.push((0, ok(at + 20 * MINUTE, "colleague@example.fr", office)));
    let actions = run_in_lanes(&e, &lines);
    assert!(actions.is_empty(), "{actions:#?}");
}

#[test]
fn a_spray_is_recognised_whatever_order_the_threads_judge_it_in() {
    // The same spray and success, judged in two orders: the success on a
    // thread that ran ahead of the failures, and after them.
    let w = World::new();
    let spray = ip("Moscow", 70);
    let at = T0 + 9 * HOUR;
    let failures: Vec<Line> = (0..15)
        .map(|i| {
            fail(
                at + i * MINUTE,
                &format!("u{i}@example.net"),
                spray,
                Some("1"),
            )
        })
        .collect();
    let success = ok(at + 2 * MINUTE, "victim@example.net", spray);
    let mut ahead = vec![(1, success.clone())];
    ahead.extend(failures.iter().cloned().map(|l| (0, l)));
    let mut behind: Vec<(usize, Line)> = failures.iter().cloned().map(|l| (0, l)).collect();
    behind.push((1, success));
    let mut ids = Vec::new();
    for order in [ahead, behind] {
        let mut e = w.engine("");
        e.set_lanes(2);
        let actions = run_in_lanes(&e, &order);
        assert_eq!(actions.len(), 1, "{actions:#?}");
        assert_eq!(actions[0].data.account, "victim@example.net");
        ids.push(actions[0].id.clone());
    }
    assert_eq!(ids[0], ids[1], "the same action, with the same id");
}

#[test]
fn fifteen_addresses_of_one_ipv6_64_spray_as_one_source() {
    let w = World::new();
    let e = w.engine("");
    let city = city_named("Moscow");
    let at = T0 + 9 * HOUR;
    let mut lines: Vec<Line> = (0..15)
        .map(|i| {
            fail(
                at + i * MINUTE,
                &format!("u{i}@example.net"),
                ip6_in_64(city, 77, 100 + i as u16),
                Some("1"),
            )
        })
        .collect();
    lines.push(ok(
        at + 20 * MINUTE,
        "victim@example.net",
        ip6_in_64(city, 77, 999),
    ));
    let actions = run(&e, &lines);
    assert_eq!(actions.len(), 1, "{actions:#?}");
    assert_eq!(actions[0].data.detector, "password_spray");
    assert_eq!(actions[0].data.evidence["source_ip"], "2a00:1370:0:4d::/64");
    // Fifteen subscribers of the same carrier, each on a /64 of their own,
    // are fifteen sources.
    let e = w.engine("");
    let mut lines: Vec<Line> = (0..15)
        .map(|i| {
            fail(
                at + i * MINUTE,
                &format!("u{i}@example.net"),
                ip6_in(city, 100 + i as u16),
                Some("1"),
            )
        })
        .collect();
    lines.push(ok(
        at + 20 * MINUTE,
        "victim@example.net",
        ip6_in(city, 100),
    ));
    assert!(run(&e, &lines).is_empty());
}

#[test]
fn an_office_nat_with_ordinary_typos_locks_nobody_in_any_parallel_run() {
    use credwatch::cli::parallel::replay_parallel;
    use credwatch::cli::replay::{replay, ReplayOptions};
    use credwatch::demo::sample::write_lines;
    use credwatch::source::event::ParseLimits;
    use std::io::Cursor;

    // 200 employees behind one address, two days; every hour up to 12 of
    // them mistype their password once or twice, among many logins. Other
    // traffic elsewhere keeps the threads busy unevenly.
    let nat = ip("Linköping", 3);
    let mut lines = Vec::new();
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for h in 0..48 {
        let hour = T0 + h * HOUR;
        for i in 0..200 {
            let who = format!("emp{i}@example.se");
            lines.push(ok(hour + next(3_600_000) as i64, &who, nat));
        }
        let typos = next(13);
        for _ in 0..typos {
            let who = format!("emp{}@example.se", next(200));
            let t = hour + next(3_500_000) as i64;
            lines.push(fail(t, &who, nat, Some("7e57")));
            lines.push(ok(t + 20 * SECOND, &who, nat));
        }
        for i in 0..400 {
            let who = format!("home{i}@example.net");
            lines.push(ok(
                hour + next(3_600_000) as i64,
                &who,
                ip("Milton", i as u16),
            ));
        }
    }
    let lines = sorted(lines);
    let mut data = Vec::new();
    write_lines(&lines, &mut data).unwrap();
    let opts = || ReplayOptions {
        limits: ParseLimits::new(65_536, T0 + 1000 * HOUR),
        rejects: None,
        progress_total: None,
        events_out: None,
        threads: 1,
        report: None,
    };
    let w = World::new();
    let locks = |out: &[u8]| -> Vec<String> {
        let mut v: Vec<String> = String::from_utf8_lossy(out)
            .lines()
            .filter(|l| l.contains("\"account.lock\""))
            .map(|l| l.to_string())
            .collect();
        v.sort();
        v
    };
    let e = w.engine("");
    let mut seq = Vec::new();
    replay(&e, Cursor::new(&data), &mut seq, opts()).unwrap();
    assert!(locks(&seq).is_empty(), "{:?}", locks(&seq));
    for run in 0..8 {
        let mut e = w.engine("");
        e.set_lanes(2);
        let mut par = Vec::new();
        replay_parallel(&e, Cursor::new(&data), &mut par, opts(), 2).unwrap();
        assert!(locks(&par).is_empty(), "run {run}: {:?}", locks(&par));
    }
}

#[test]
fn a_display_name_is_not_a_foreign_sender() {
    let w = World::new();
    let e = w.engine("");
    let me = "yamada@example.jp";
    let from = ip("Tokyo", 8);
    let mut lines = vec![ok(T0, me, from)];
    for (i, header) in [
        "\"Yamada Taro\" <yamada@example.jp>",
        "Yamada <yamada@example.jp>",
        "=?UTF-8?B?5bGx55Sw?= <Yamada@Example.JP>",
        "yamada@example.jp (Yamada Taro)",
        "\"Yamada, Taro\" <yamada+list@example.jp>",
    ]
    .iter()
    .enumerate()
    {
        lines.push(submission(
            T0 + (i as i64 + 1) * MINUTE,
            me,
            from,
            me,
            Some(header),
            3,
        ));
    }
    let actions = run(&e, &lines);
    assert!(actions.is_empty(), "{actions:#?}");

    // Addresses of other customers behind display names are still foreign.
    let mut lines = vec![ok(T0, me, from)];
    for (i, header) in [
        "\"yamada@example.jp\" <ceo@bank.example>",
        "Yamada <sales@shop.example>",
        "a@example.jp, Support <help@isp.example>",
    ]
    .iter()
    .enumerate()
    {
        lines.push(submission(
            T0 + (i as i64 + 1) * MINUTE,
            me,
            from,
            me,
            Some(header),
            3,
        ));
    }
    let e = w.engine("");
    let actions = run(&e, &lines);
    assert_eq!(locks(&actions, me).len(), 1, "{actions:#?}");
}

#[test]
fn an_attack_split_across_spellings_of_one_account_is_one_attack() {
    let w = World::new();
    let e = w.engine("[events]\ndefault_domain = \"example.jp\"\n");
    let spellings = [
        "Frank@Example.JP",
        "frank@example.jp.",
        "ｆｒａｎｋ＠ｅｘａｍｐｌｅ．ｊｐ",
        "fr\u{200b}ank@example.jp",
        "frank+x@example.jp",
        "frank",
        "FRANK",
        "\u{feff}frank@EXAMPLE.jp",
        "frank@example.jp",
        "Frank+y@example.jp.",
    ];
    let from = ip("Lagos", 30);
    let mut lines: Vec<Line> = spellings
        .iter()
        .enumerate()
        .map(|(i, who)| {
            fail(
                T0 + i as i64 * 20 * SECOND,
                who,
                from,
                Some(&format!("{:x}", 0xf00 + i)),
            )
        })
        .collect();
    lines.push(ok(T0 + 5 * MINUTE, "FRANK@example.jp", from));
    let actions = run(&e, &lines);
    let l = locks(&actions, "frank@example.jp");
    assert_eq!(l.len(), 1, "{actions:#?}");
    assert_eq!(l[0].data.detector, "failed_login_burst");
    assert!(
        actions.iter().all(|a| a.data.account == "frank@example.jp"),
        "{actions:#?}"
    );
}

#[test]
fn a_protected_account_is_protected_whatever_its_spelling() {
    let w = World::new();
    let e = w.engine(
        "[events]\ndefault_domain = \"example.net\"\n[policy]\nprotected_accounts = [\"Postmaster@Example.NET\"]\n",
    );
    let from = ip("Lagos", 31);
    let mut lines = guesses(T0, "POSTMASTER", from);
    lines.push(ok(T0 + 5 * MINUTE, "postmaster", from));
    let actions = run(&e, &lines);
    assert!(!actions.is_empty());
    assert!(
        locks(&actions, "postmaster@example.net").is_empty(),
        "{actions:#?}"
    );
    assert!(
        actions
            .iter()
            .any(|a| a.data.downgraded_by == Some(credwatch::action::Downgrade::Protected)),
        "{actions:#?}"
    );
}

/// `n` established accounts (a login yesterday and today from home).
fn established(n: usize, home: &str, day: i64) -> Vec<Line> {
    let mut lines = Vec::new();
    for d in [day - 1, day] {
        for u in 0..n {
            lines.push(ok(
                T0 + d * DAY + u as i64 * SECOND,
                &format!("u{u}@example.net"),
                ip(home, u as u16),
            ));
        }
    }
    lines
}

#[test]
fn throwaway_accounts_cannot_trip_the_breaker_to_silence_a_real_lock() {
    let w = World::new();
    let e = w.engine("");
    let mut lines = established(200, "London", 1);
    let victim = "u7@example.net";
    let at = T0 + DAY + HOUR;
    let attacker = ip("Lagos", 66);
    // 15 failures on made-up names, then 30 throwaway accounts log in
    // successfully from the same address: 30 password_spray locks.
    for i in 0..15 {
        lines.push(fail(
            at + i * SECOND,
            &format!("nobody{i}@example.net"),
            attacker,
            Some("1"),
        ));
    }
    for i in 0..30 {
        lines.push(ok(
            at + MINUTE + i * SECOND,
            &format!("throwaway{i}@example.net"),
            attacker,
        ));
    }
    // The real victim's mailbox is used from far away.
    lines.push(ok(at + 10 * MINUTE, victim, ip("Sydney", 5)));
    let actions = run(&e, &sorted(lines));
    let l = locks(&actions, victim);
    assert_eq!(l.len(), 1, "{:#?}", for_account(&actions, victim));
    assert_eq!(l[0].data.detector, "impossible_travel");
    assert!(!e.breaker_open(), "throwaway accounts are not counted");
    assert_eq!(
        e.breaker_counts().1,
        30,
        "the 30 throwaway locks went uncounted"
    );
}

#[test]
fn a_lock_held_by_the_breaker_is_sent_when_it_closes_with_its_own_id() {
    let w = World::new();
    let e = w.engine("[policy.breaker]\nmin_locks = 5\nmax_lock_ratio = 0.01\n");
    let mut lines = established(100, "London", 1);
    let storm = T0 + DAY + 10 * MINUTE;
    // A bad GeoIP update: 30 established accounts "travel" at once. The
    // victim u29's first, an ordinary alert of the same incident first.
    for u in 0..30 {
        lines.push(ok(
            storm + u * SECOND,
            &format!("u{u}@example.net"),
            ip("Sydney", u as u16),
        ));
    }
    // Three hours later the storm is over (ordinary logins at home), and
    // u29 is still being used from the network the finding came from.
    for u in 30..100 {
        lines.push(ok(
            storm + 3 * HOUR + u * SECOND,
            &format!("u{u}@example.net"),
            ip("London", u as u16),
        ));
    }
    lines.push(ok(
        storm + 3 * HOUR + 5 * MINUTE,
        "u29@example.net",
        ip("Sydney", 200),
    ));
    let actions = run(&e, &sorted(lines));
    let mine = for_account(&actions, "u29@example.net");
    assert_eq!(mine.len(), 2, "{mine:#?}");
    assert_eq!(mine[0].kind, "account.alert");
    assert_eq!(
        mine[0].data.downgraded_by,
        Some(credwatch::action::Downgrade::Breaker)
    );
    assert_eq!(mine[1].kind, "account.lock", "{mine:#?}");
    assert_ne!(mine[0].id, mine[1].id);
    assert_eq!(mine[0].data.incident, mine[1].data.incident);
    // Those no longer used from there stay alerts.
    assert!(locks(&actions, "u28@example.net").is_empty());
}

#[test]
fn a_downgraded_lock_has_its_own_id_not_the_earlier_alerts() {
    // An alert of an incident, then a lock of the same detector and
    // incident that dry run turns into an alert: two ids.
    let w = World::new();
    let e = w.engine("[detectors.failed_login_burst]\ndry_run = true\n");
    let who = "kenji@example.jp";
    let mut lines = guesses(T0, who, ip("Lagos", 9));
    lines.push(ok(T0 + 5 * MINUTE, who, ip("Lagos", 9)));
    let actions = run(&e, &lines);
    let mine = for_account(&actions, who);
    assert_eq!(mine.len(), 2, "{mine:#?}");
    assert_ne!(mine[0].id, mine[1].id);
}

#[test]
fn one_event_from_the_future_does_not_blind_the_breaker() {
    let w = World::new();
    let e = w.engine("[policy.breaker]\nmin_locks = 5\nmax_lock_ratio = 0.01\n");
    let mut lines = established(100, "London", 1);
    let storm = T0 + DAY + 10 * MINUTE;
    // Accepted: up to 24 h ahead.
    lines.push(ok(
        storm + 20 * HOUR,
        "clock@example.net",
        ip("London", 999),
    ));
    let mut tail = Vec::new();
    for u in 0..30 {
        tail.push(ok(
            storm + MINUTE + u * SECOND,
            &format!("u{u}@example.net"),
            ip("Sydney", u as u16),
        ));
    }
    let mut all = sorted(lines);
    // The future event arrives first, then the storm.
    let future = all.iter().position(|l| l.json.contains("clock@")).unwrap();
    let f = all.remove(future);
    all.push(f);
    all.extend(tail);
    let actions = run(&e, &all);
    let n = actions.iter().filter(|a| a.kind == "account.lock").count();
    assert!(n <= 5, "{n} locks went out with the breaker blinded");
    assert!(e.breaker_open());
}

#[test]
fn junk_usernames_do_not_dilute_the_breaker() {
    let w = World::new();
    let e = w.engine("[policy.breaker]\nmin_locks = 5\nmax_lock_ratio = 0.01\n");
    let mut lines = established(100, "London", 1);
    let storm = T0 + DAY + 30 * MINUTE;
    for i in 0..6000 {
        let from = ip("Moscow", (i % 4000) as u16);
        lines.push(fail(
            storm - 20 * MINUTE + i * 100,
            &format!("junk{i}@example.net"),
            from,
            None,
        ));
    }
    for u in 0..30 {
        lines.push(ok(
            storm + u * SECOND,
            &format!("u{u}@example.net"),
            ip("Sydney", u as u16),
        ));
    }
    let actions = run(&e, &sorted(lines));
    let n = actions.iter().filter(|a| a.kind == "account.lock").count();
    assert!(n <= 5, "{n} locks went out with the breaker diluted");
}

#[test]
fn forged_bounces_do_not_hold_an_incident_open_against_a_new_compromise() {
    let w = World::new();
    let e = w.engine("");
    let who = "sachiko@example.jp";
    let mut lines = Vec::new();
    for d in 0..3 {
        lines.push(ok(T0 + d * DAY, who, ip("Tokyo", 3)));
    }
    // First compromise: locked.
    let first = T0 + 2 * DAY + HOUR;
    lines.push(ok(first, who, ip("Tokyo", 3)));
    lines.push(ok(first + 10 * MINUTE, who, ip("Lagos", 4)));
    // 50 forged bounces every 5 hours.
    for k in 0..5 {
        for b in 0..50 {
            lines.push(bounce(first + HOUR + k * 5 * HOUR + b * SECOND, who));
        }
    }
    // 22 hours later, a new compromise.
    let second = first + 22 * HOUR;
    lines.push(ok(second, who, ip("Tokyo", 3)));
    lines.push(ok(second + 10 * MINUTE, who, ip("Sydney", 4)));
    let actions = run(&e, &sorted(lines));
    let l = locks(&actions, who);
    assert_eq!(l.len(), 2, "{:#?}", for_account(&actions, who));
    assert_ne!(l[0].data.incident, l[1].data.incident);
}

#[test]
fn sixty_kilobyte_senders_make_a_small_action_and_hide_nothing() {
    let w = World::new();
    let e = w.engine("");
    let me = "victim@example.jp";
    let from = ip("Lagos", 40);
    let mut lines = vec![ok(T0, me, from)];
    for i in 0..19 {
        // A display name of 60 KB, then a foreign address at the end.
        let header = format!("\"{}\" <boss{i}@bank{i}.example>", "A".repeat(60_000));
        lines.push(submission(
            T0 + (i + 1) * MINUTE,
            me,
            from,
            me,
            Some(&header),
            5,
        ));
    }
    let actions = run(&e, &lines);
    let l = locks(&actions, me);
    assert_eq!(
        l.len(),
        1,
        "the foreign addresses behind the long names count"
    );
    for a in &actions {
        let n = a.to_json().len();
        assert!(n < 64 * 1024, "an action of {n} bytes");
    }
}

#[test]
fn kubernetes_service_link_variables_are_not_settings() {
    // Exactly what the kubelet injects into every pod of the namespace for
    // the shipped Service (deploy/base/service.yaml): `credwatch`, port
    // `http-metrics` 9898/TCP.
    let svc = std::fs::read_to_string(repo_root().join("deploy/base/service.yaml")).unwrap();
    assert!(
        svc.contains("name: credwatch")
            && svc.contains("port: 9898")
            && svc.contains("name: http-metrics")
    );
    let ip = "10.96.12.34";
    let env: Vec<(String, String)> = [
        ("CREDWATCH_SERVICE_HOST", ip),
        ("CREDWATCH_SERVICE_PORT", "9898"),
        ("CREDWATCH_SERVICE_PORT_HTTP_METRICS", "9898"),
        ("CREDWATCH_PORT", "tcp://10.96.12.34:9898"),
        ("CREDWATCH_PORT_9898_TCP", "tcp://10.96.12.34:9898"),
        ("CREDWATCH_PORT_9898_TCP_PROTO", "tcp"),
        ("CREDWATCH_PORT_9898_TCP_PORT", "9898"),
        ("CREDWATCH_PORT_9898_TCP_ADDR", ip),
        ("CREDWATCH_KAFKA_BROKERS", "kafka:9092"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let s = credwatch::config::Config::from_toml_with_env("", "credwatch.toml", &env)
        .expect("service links are not settings");
    assert_eq!(
        s.config.kafka.brokers, "kafka:9092",
        "real settings still apply"
    );
    // A typo is still refused.
    let typo = vec![("CREDWATCH_KAFKA_BROKRES".to_string(), "x".to_string())];
    assert!(credwatch::config::Config::from_toml_with_env("", "c.toml", &typo).is_err());
    // And the Deployment does not ask for them.
    let dep = std::fs::read_to_string(repo_root().join("deploy/base/deployment.yaml")).unwrap();
    assert!(dep.contains("enableServiceLinks: false"));
}

#[test]
fn kafka_properties_that_break_at_least_once_are_refused_by_name() {
    for key in [
        "enable.auto.commit",
        "enable.auto.offset.store",
        "isolation.level",
        "acks",
        "request.required.acks",
        "enable.idempotence",
        "message.timeout.ms",
    ] {
        let toml = format!("[kafka.properties]\n\"{key}\" = \"x\"\n");
        let e = credwatch::config::Config::from_toml_with_env(&toml, "c.toml", &[])
            .expect_err(key)
            .to_string();
        assert!(e.contains(&format!("kafka.properties.{key}")), "{e}");
        assert!(e.contains("Remove it"), "{e}");
    }
    // Through the environment too.
    let env = vec![(
        "CREDWATCH_KAFKA_PROPERTIES_ENABLE_AUTO_COMMIT".to_string(),
        "true".to_string(),
    )];
    assert!(credwatch::config::Config::from_toml_with_env("", "c.toml", &env).is_err());
    // TLS and SASL settings still pass.
    let ok = "[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n";
    assert!(credwatch::config::Config::from_toml_with_env(ok, "c.toml", &[]).is_ok());
}

/// Runs `credwatch` with `args` and `env`; returns stdout and stderr.
fn credwatch(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(credwatch_exe())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run credwatch");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn no_secret_appears_in_any_output() {
    let w = World::new();
    let dir = w.dir.path();
    // Canaries in every place a secret lives.
    let secret = "whsec_Q0FOQVJZc2VjcmV0MTIzNDU2Nzg=";
    let canaries = [
        "Q0FOQVJZ",
        "CANARYpw",
        "CANARYtok",
        "CANARYoauth",
        "CANARYsasl",
        "31415926",
    ];
    let good = w.toml(&format!(
        "[webhook]\nsecret = \"{secret}\"\nurls = [\"https://hook:CANARYpw@127.0.0.1:9/x?token=CANARYtok\"]\n\
         [kafka]\nbrokers = \"127.0.0.1:9\"\n\
         [kafka.properties]\n\"sasl.oauthbearer.config\" = \"clientSecret=CANARYoauth\"\n\"sasl.password\" = \"CANARYsasl\"\n"
    ));
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let good_path = write("good.toml", &good);
    let mut outputs = vec![credwatch(&["check-config", &good_path], &[])];
    // A syntax error on the line with the secret.
    let broken = good.replacen("\"]\n", "\"\n", 1);
    outputs.push(credwatch(
        &["check-config", &write("broken.toml", &broken)],
        &[],
    ));
    // A numeric password (a type error that would echo the value).
    let numeric = w.toml("[kafka.properties]\n\"sasl.password\" = 31415926\n");
    outputs.push(credwatch(
        &["check-config", &write("numeric.toml", &numeric)],
        &[],
    ));
    // A secret given through the environment, with a wrong type elsewhere.
    outputs.push(credwatch(
        &["check-config", &good_path],
        &[
            ("CREDWATCH_KAFKA_PROPERTIES_SASL_PASSWORD", "CANARYsasl"),
            ("CREDWATCH_WEBHOOK_TIMEOUT_SECS", "CANARYpw"),
        ],
    ));
    // The service, briefly, against a broker that is not there.
    let mut child = std::process::Command::new(credwatch_exe())
        .args(["run", "--config", &good_path])
        .env("CREDWATCH_HTTP_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    outputs.push(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ));
    assert!(outputs[0].contains("<redacted>"), "{}", outputs[0]);
    assert!(outputs[1].contains("line"), "{}", outputs[1]);
    assert!(outputs[2].contains("sasl.password"), "{}", outputs[2]);
    for (i, o) in outputs.iter().enumerate() {
        for c in canaries {
            assert!(!o.contains(c), "output {i} shows the canary {c}:\n{o}");
        }
    }
}

#[test]
fn slow_clients_cannot_take_the_http_endpoint() {
    use credwatch::http::{Endpoint, HttpConfig};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = HttpConfig {
            listen: "127.0.0.1:0".into(),
            header_timeout_secs: 1,
            ..HttpConfig::default()
        };
        let metrics = std::sync::Arc::new(credwatch::metrics::Metrics::new());
        let ep = Endpoint::bind(&cfg, metrics).await.unwrap();
        let port = ep.addr.port();
        // Hundreds of half-sent requests from one address (another
        // loopback address than the probe's).
        let mut slow = Vec::new();
        for _ in 0..300 {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            if let Ok(mut c) = s
                .connect(format!("127.0.0.1:{port}").parse().unwrap())
                .await
            {
                let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
                slow.push(c);
            }
        }
        // The probe still gets its answer, at once.
        let probe = async {
            let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut buf = Vec::new();
            c.read_to_end(&mut buf).await.unwrap();
            String::from_utf8_lossy(&buf).to_string()
        };
        let answer = tokio::time::timeout(std::time::Duration::from_secs(5), probe)
            .await
            .expect("/healthz answered while slow clients wait");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // And every slow connection is closed by the server: those over the
        // cap at once, the others after the header timeout.
        let closed = async {
            let mut n = 0;
            for mut c in slow {
                let mut b = [0u8; 256];
                match c.read(&mut b).await {
                    Ok(_) | Err(_) => n += 1,
                }
            }
            n
        };
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), closed)
            .await
            .expect("the server closes slow connections");
        assert_eq!(n, 300);
    });
}
