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
    let limits = ParseLimits::new(65_536, T0 + 1000 * HOUR);
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
                ip6_in(city, 100 + i as u16),
                Some("1"),
            )
        })
        .collect();
    lines.push(ok(
        at + 20 * MINUTE,
        "victim@example.net",
        ip6_in(city, 999),
    ));
    let actions = run(&e, &lines);
    assert_eq!(actions.len(), 1, "{actions:#?}");
    assert_eq!(actions[0].data.detector, "password_spray");
    assert_eq!(actions[0].data.evidence["source_ip"], "2a00:1370::/64");
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
