//! Policy: one action per account and incident, upgrades from alert to
//! lock, deterministic ids, and the lock-storm breaker.

use credwatch_testkit::*;

use credwatch::policy::Decision;
use credwatch::time::HOUR;

fn trip(a: &str, t: credwatch::time::Millis) -> Vec<credwatch::demo::sample::Line> {
    vec![
        ok(t, a, ip("London", 1000)),
        ok(t + 31 * MINUTE, a, ip("Changchun", 5)),
    ]
}

#[test]
fn later_findings_join_the_incident_instead_of_locking_again() {
    let w = World::new();
    let e = w.engine("");
    let a = "alice@example.jp";
    let mut lines = trip(a, T0);
    lines.push(ok(T0 + 40 * MINUTE, a, ip("London", 1000)));
    lines.push(ok(T0 + 50 * MINUTE, a, ip("Changchun", 5)));
    let decisions = run_decisions(&e, &lines);
    let emitted = decisions
        .iter()
        .filter(|d| matches!(d, Decision::Emit(_)))
        .count();
    let enriched = decisions
        .iter()
        .filter(|d| matches!(d, Decision::Enrich { .. }))
        .count();
    assert_eq!((emitted, enriched), (1, 2), "{decisions:?}");
}

#[test]
fn a_new_incident_after_the_cooldown_gets_a_new_action() {
    let w = World::new();
    let e = w.engine("[policy]\ncooldown_secs = 3600\n");
    let a = "alice@example.jp";
    let mut lines = trip(a, T0);
    lines.extend(trip(a, T0 + 10 * 60 * MINUTE));
    let actions = run(&e, &lines);
    assert_eq!(actions.len(), 2);
    assert_ne!(actions[0].id, actions[1].id);
    assert_ne!(actions[0].data.incident, actions[1].data.incident);
}

#[test]
fn ids_are_the_same_in_a_rerun() {
    let w = World::new();
    let lines = trip("alice@example.jp", T0);
    let first = run(&w.engine(""), &lines);
    let second = run(&w.engine(""), &lines);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].id, second[0].id);
    assert_eq!(
        first[0].to_json(),
        second[0].to_json(),
        "replay output is reproducible"
    );
}

#[test]
fn a_lock_storm_opens_the_breaker_and_locks_become_alerts() {
    let w = World::new();
    // A GeoIP update that moves everyone: 100 established accounts (they
    // logged in yesterday too), 30 of them suddenly "travel". 1 % of 100 is
    // one lock, so min_locks = 5 is what binds: the 5th lock in the window
    // opens the breaker and is not sent.
    let e = w.engine("[policy.breaker]\nmin_locks = 5\nmax_lock_ratio = 0.01\n");
    let mut lines = Vec::new();
    for day in 0..2 {
        for u in 0..100 {
            lines.push(ok(
                T0 + day * 24 * HOUR + u * SECOND,
                &format!("u{u}@example.net"),
                ip("London", u as u16),
            ));
        }
    }
    for u in 0..30 {
        lines.push(ok(
            T0 + 24 * HOUR + 10 * MINUTE + u * SECOND,
            &format!("u{u}@example.net"),
            ip("Sydney", u as u16),
        ));
    }
    let actions = run(&e, &lines);
    assert_eq!(actions.len(), 30);
    let locks = actions.iter().filter(|a| a.kind == "account.lock").count();
    assert_eq!(locks, 4, "locks stop when the breaker opens");
    let by_breaker = actions
        .iter()
        .filter(|a| serde_json::to_value(a).unwrap()["data"]["downgraded_by"] == "breaker")
        .count();
    assert_eq!(by_breaker, 26);
    assert!(e.breaker_open());
    assert_eq!(e.breaker_opened_total(), 1);
}
