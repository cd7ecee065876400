//! State stays within its caps under a flood of junk accounts, and a real
//! account under attack at the same time is still caught.

use credwatch_testkit::*;

#[test]
fn a_flood_of_random_usernames_stays_under_the_cap_and_the_real_attack_is_caught() {
    let w = World::new();
    let cap = 2_000;
    let e = w.engine(&format!(
        "[state]\nmax_accounts = {cap}\nmax_sources = {cap}\n"
    ));
    let victim = "bob@example.net";
    let mut lines = Vec::new();
    // 30,000 distinct junk usernames, one failure each, from rotating addresses.
    for i in 0..30_000i64 {
        let t = T0 + i * 20; // 50 per second
        lines.push(fail(
            t,
            &format!("junk{i}@example.net"),
            ip("Moscow", (i % 60_000) as u16),
            Some("1"),
        ));
        // Meanwhile a real guessing attack on one account, then the right guess.
        if i % 1_000 == 0 && i < 12_000 {
            lines.push(fail(t, victim, ip("Lagos", 1), Some(&format!("{i:x}"))));
        }
    }
    lines.push(ok(T0 + 12_000 * 20 + 1, victim, ip("Lagos", 1)));
    let actions = run(&e, &lines);
    let tables = e.tables();
    for t in &tables {
        assert!(t.len <= t.cap, "{t:?}");
    }
    let burst = tables.iter().find(|t| t.name == "burst_failures").unwrap();
    assert!(
        burst.evicted_cap > 10_000,
        "eviction counters move: {burst:?}"
    );
    let locks: Vec<_> = actions
        .iter()
        .filter(|a| a.kind == "account.lock")
        .collect();
    assert_eq!(locks.len(), 1, "{actions:?}");
    assert_eq!(locks[0].data.account, victim);
    assert_eq!(locks[0].data.detector, "failed_login_burst");
}

#[test]
fn old_state_is_swept_by_event_time() {
    let w = World::new();
    let e = w.engine("[state]\nsweep_interval_secs = 60\n");
    let mut lines = Vec::new();
    for i in 0..3_000i64 {
        lines.push(fail(
            T0 + i * SECOND,
            &format!("u{i}@example.net"),
            ip("Paris", i as u16),
            Some("1"),
        ));
    }
    // Two days later, enough traffic to trigger sweeps.
    for i in 0..3_000i64 {
        lines.push(ok(
            T0 + 48 * 60 * MINUTE + i * SECOND,
            &format!("v{i}@example.net"),
            ip("Paris", 7),
        ));
    }
    run(&e, &lines);
    let burst = e
        .tables()
        .into_iter()
        .find(|t| t.name == "burst_failures")
        .unwrap();
    assert_eq!(
        burst.len, 0,
        "failures from two days ago are gone: {burst:?}"
    );
    assert!(burst.evicted_expired >= 3_000);
}

#[test]
fn one_event_stamped_a_day_ahead_does_not_make_the_sweep_forget() {
    let w = World::new();
    let e = w.engine("");
    let victim = "bob@example.net";
    let mut lines = Vec::new();
    // Ordinary traffic first, so that sweeps are already scheduled.
    for i in 0..2_000i64 {
        lines.push(ok(
            T0 - 2 * MINUTE + i * 10,
            &format!("e{i}@example.net"),
            ip("Paris", (i % 1000) as u16),
        ));
    }
    for i in 0..6i64 {
        lines.push(fail(
            T0 + i * SECOND,
            victim,
            ip("Lagos", 1),
            Some(&format!("{i:x}")),
        ));
    }
    // A clock gone wrong somewhere: one event 23 h ahead.
    lines.push(ok(
        T0 + 23 * 60 * MINUTE,
        "skewed@example.net",
        ip("Paris", 1),
    ));
    // Ordinary traffic, enough for sweeps to run.
    for i in 0..5_000i64 {
        lines.push(ok(
            T0 + 10 * SECOND + i * 10,
            &format!("u{i}@example.net"),
            ip("Paris", (i % 1000) as u16),
        ));
    }
    for i in 6..12i64 {
        lines.push(fail(
            T0 + 70 * SECOND + i * SECOND,
            victim,
            ip("Lagos", 1),
            Some(&format!("{i:x}")),
        ));
    }
    lines.push(ok(T0 + 2 * MINUTE, victim, ip("Lagos", 1)));
    let actions = run(&e, &lines);
    let lock = actions
        .iter()
        .find(|a| a.data.account == victim && a.kind == "account.lock");
    assert!(
        lock.is_some(),
        "the burst survived the skewed event: {actions:?}"
    );
    assert_eq!(lock.unwrap().data.evidence["failures"], 12);
}

/// Two lanes (service workers), both idle through an outage. Work is
/// dispatched to lane 1 (`lane_wake`) while lane 0 races hours ahead in
/// event time: lane 1's state must survive the sweeps lane 0 triggers, so
/// its queued event still finds the login it needs.
#[test]
fn a_woken_lane_holds_the_sweep_back_for_its_queued_events() {
    use credwatch::source::event::{parse_event, ParseLimits};
    let world = World::new();
    let mut engine = world.engine("");
    engine.set_lanes(2);
    let limits = ParseLimits::new(65_536, T0 + 1000 * HOUR_MS);
    let ev =
        |l: &credwatch::demo::sample::Line| parse_event(l.json.as_bytes(), &limits).expect("event");
    let mut out = Vec::new();
    let london = ip("London", 7);
    engine.process_in_lane(0, &ev(&ok(T0, "other@example.jp", london)), None, &mut out);
    engine.process_in_lane(1, &ev(&ok(T0, "victim@example.jp", london)), None, &mut out);
    engine.lane_idle(0);
    engine.lane_idle(1);
    // Lane 1's next event is queued; lane 0 judges two days of events.
    engine.lane_wake(1);
    for i in 0..6000i64 {
        let acct = format!("busy{}@example.jp", i % 500);
        engine.process_in_lane(
            0,
            &ev(&ok(T0 + i * 30 * SECOND, &acct, london)),
            None,
            &mut out,
        );
    }
    out.clear();
    engine.process_in_lane(
        1,
        &ev(&ok(
            T0 + 31 * MINUTE,
            "victim@example.jp",
            ip("Changchun", 9),
        )),
        None,
        &mut out,
    );
    assert!(
        out.iter().any(|d| matches!(d, credwatch::policy::Decision::Emit(a) if a.data.account == "victim@example.jp")),
        "the victim's London login survived lane 0's sweeps"
    );
}

const HOUR_MS: i64 = 3_600_000;

/// The spraying detector's recent successes (kept for the allowed
/// disorder only) are swept on event time, not when the accounts' tables,
/// an eighth of whose entries in events must pass between their sweeps,
/// are. With 60,000 accounts those sweeps come every 7,500 events or more:
/// the successes of that many events' time piled up in memory.
#[test]
fn recent_successes_hold_the_allowed_disorder_however_many_accounts_there_are() {
    let w = World::new();
    let e = w.engine("[state]\nsweep_interval_secs = 60\nmax_disorder_secs = 60\n");
    // 20 logins a second, each a new account from its own address.
    let per_second = 20;
    let lines: Vec<_> = (0..60_000i64)
        .map(|i| {
            ok(
                T0 + i * SECOND / per_second,
                &format!("u{i}@example.net"),
                ip("Paris", (i % 60_000) as u16),
            )
        })
        .collect();
    let recent = |e: &credwatch::engine::Engine| {
        e.tables()
            .into_iter()
            .find(|t| t.name == "spray_recent_successes")
            .expect("the spraying detector's table")
            .len
    };
    let mut most = 0;
    for chunk in lines.chunks(500) {
        run(&e, chunk);
        most = most.max(recent(&e));
    }
    // The disorder, one sweep interval and one look's worth of events (256).
    let bound = (60 + 60) * per_second as usize + 256;
    assert!(
        most <= bound + 500,
        "recent successes peaked at {most}, over {bound} (+ one chunk of 500)"
    );
    assert!(
        most > 60 * per_second as usize,
        "the disorder's successes are kept: {most}"
    );
}
