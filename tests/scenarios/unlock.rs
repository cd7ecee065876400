//! Unlock (contract §7): the provider's account system lifts a lock after a
//! password reset. The incident ends, an `account.unlock` action says so,
//! and the account starts afresh: what the attacker did no longer counts
//! against the owner, and a new attack is a new incident with a new lock.

use credwatch::time::HOUR;
use credwatch_testkit::*;

fn stolen(a: &str) -> Vec<credwatch::demo::sample::Line> {
    vec![
        ok(T0, a, ip("London", 1000)),
        ok(T0 + 31 * MINUTE, a, ip("Changchun", 5)),
    ]
}

#[test]
fn an_unlock_ends_the_incident_with_an_unlock_action() {
    let w = World::new();
    let e = w.engine("");
    let a = "alice@example.jp";
    let mut lines = stolen(a);
    lines.push(unlock(
        T0 + 2 * HOUR,
        "Alice@Example.JP",
        Some("password reset by support, ticket 4711"),
    ));
    let actions = run(&e, &lines);
    assert_eq!(actions.len(), 2, "{actions:?}");
    let (lock, un) = (&actions[0], &actions[1]);
    assert_eq!(lock.kind, "account.lock");
    assert_eq!(un.kind, "account.unlock");
    assert_eq!(un.data.action, credwatch::action::ActionKind::Unlock);
    assert_eq!(un.data.account, a, "the canonical account");
    assert_eq!(
        un.data.incident, lock.data.incident,
        "it ends that incident"
    );
    assert_ne!(un.id, lock.id);
    assert!(un.data.reason.contains("ticket 4711"), "{}", un.data.reason);
    assert_eq!(un.data.evidence["ended_incident_level"], "lock");
    assert_eq!(
        un.data.evidence["ended_incident_detectors"],
        serde_json::json!(["impossible_travel"])
    );
    assert_eq!(un.data.last_event_ts, "2026-11-05T02:00:00.000Z");
    // The same unlock in a re-run has the same id (receivers dedupe on it).
    let again = run(&w.engine(""), &lines);
    assert_eq!(again[1].id, un.id);
}

#[test]
fn after_an_unlock_the_attackers_logins_no_longer_count_against_the_owner() {
    let w = World::new();
    let a = "alice@example.jp";
    let mut lines = stolen(a);
    // The owner, back home, three hours after the attacker's login: 8,600
    // km in 2.5 h is travel, unless the unlock made the account start afresh.
    let home_again = ok(T0 + 3 * HOUR, a, ip("London", 1000));
    let mut without = lines.clone();
    without.push(ok(T0 + 7 * HOUR, a, ip("Changchun", 5)));
    without.push(ok(T0 + 9 * HOUR, a, ip("London", 1000)));
    let control = run(&w.engine("[policy]\ncooldown_secs = 3600\n"), &without);
    assert!(
        control.len() >= 2,
        "control: without an unlock the owner's login after the attacker's is travel again: {control:?}"
    );
    lines.push(unlock(T0 + 2 * HOUR, a, None));
    lines.push(home_again);
    let actions = run(&w.engine(""), &lines);
    let kinds: Vec<&str> = actions.iter().map(|x| x.kind).collect();
    assert_eq!(kinds, ["account.lock", "account.unlock"], "{actions:?}");
}

#[test]
fn a_new_attack_after_an_unlock_is_a_new_incident_and_locks_again() {
    let w = World::new();
    let e = w.engine("");
    let a = "alice@example.jp";
    let mut lines = stolen(a);
    lines.push(unlock(T0 + HOUR, a, None));
    // Within the old incident's cooldown (6 h): without the unlock this
    // would only join the incident.
    lines.push(ok(T0 + 2 * HOUR, a, ip("London", 1000)));
    lines.push(ok(T0 + 2 * HOUR + 20 * MINUTE, a, ip("Changchun", 9)));
    let actions = run(&e, &lines);
    let kinds: Vec<&str> = actions.iter().map(|x| x.kind).collect();
    assert_eq!(
        kinds,
        ["account.lock", "account.unlock", "account.lock"],
        "{actions:?}"
    );
    assert_ne!(actions[0].data.incident, actions[2].data.incident);
    assert_ne!(actions[0].id, actions[2].id);
}

#[test]
fn an_unlock_of_an_account_without_an_incident_still_clears_refusals() {
    let w = World::new();
    let actions = run(
        &w.engine(""),
        &[unlock(T0, "nobody@example.jp", Some("support"))],
    );
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].kind, "account.unlock");
    assert_eq!(actions[0].data.incident, "", "no incident is named");
    assert_eq!(actions[0].data.detector, "unlock");
}

#[test]
fn unlock_events_need_only_a_time_and_an_account() {
    use credwatch::source::event::{parse_event, Kind, ParseLimits, RejectReason};
    let limits = ParseLimits::new(65_536, T0 + HOUR);
    let e = parse_event(
        br#"{"ts":"2026-11-05T00:00:00Z","kind":"unlock","account":" Bob@Example.jp "}"#,
        &limits,
    )
    .unwrap();
    assert_eq!((e.kind, &*e.account), (Kind::Unlock, "bob@example.jp"));
    assert_eq!(e.reason, None);
    let long = "x".repeat(10_000);
    let line =
        format!(r#"{{"ts":{T0},"kind":"unlock","account":"b@example.jp","reason":"{long}"}}"#);
    let e = parse_event(line.as_bytes(), &limits).unwrap();
    assert!(e.reason.unwrap().len() <= 260, "the reason is bounded");
    let r = parse_event(
        br#"{"ts":1,"kind":"unlock","account":"b@example.jp"}"#,
        &limits,
    )
    .unwrap_err();
    assert_eq!(r.reason, RejectReason::BadTimestamp);
    let r = parse_event(br#"{"ts":1762300800000,"kind":"unlock"}"#, &limits).unwrap_err();
    assert_eq!(r.reason, RejectReason::MissingField);
}
