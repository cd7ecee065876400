//! failed_login_burst: guessing then success locks; guessing alone alerts;
//! a stale password on a phone and a shared NAT with typos do nothing.

use credwatch_testkit::*;

fn guesses(a: &str, n: i64, from: &str) -> Vec<credwatch::demo::sample::Line> {
    (0..n)
        .map(|i| {
            fail(
                T0 + i * 20 * SECOND,
                a,
                ip(from, 9 + (i % 3) as u16),
                Some(&format!("{:x}", 0xdead00 + i)),
            )
        })
        .collect()
}

#[test]
fn distinct_passwords_then_success_locks() {
    let w = World::new();
    let e = w.engine("");
    let a = "bob@example.net";
    let mut lines = guesses(a, 12, "Lagos");
    lines.push(ok(T0 + 5 * MINUTE, a, ip("Lagos", 9)));
    let actions = run(&e, &lines);
    let mine = for_account(&actions, a);
    assert_eq!(mine.len(), 2, "{actions:?}");
    assert_eq!(
        mine[0].kind, "account.alert",
        "the burst alone alerts first"
    );
    let lock = mine[1];
    assert_eq!(lock.kind, "account.lock");
    assert_eq!(lock.data.detector, "failed_login_burst");
    assert_eq!(
        serde_json::to_value(lock.data.severity).unwrap(),
        "critical"
    );
    assert_eq!(lock.data.evidence["failures"], 12);
    assert_eq!(lock.data.evidence["distinct_passwords"], 12);
    assert_eq!(lock.data.evidence["distinct_sources"], 3);
    assert_eq!(lock.data.evidence["success"]["from_a_failing_source"], true);
    assert_eq!(
        lock.data.incident, mine[0].data.incident,
        "alert and lock are one incident"
    );
}

#[test]
fn a_burst_without_success_only_alerts_once() {
    let w = World::new();
    let e = w.engine("");
    let a = "target@example.net";
    let actions = run(&e, &guesses(a, 25, "Moscow"));
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0].kind, "account.alert");
}

#[test]
fn a_phone_retrying_a_stale_password_is_not_an_attack() {
    let w = World::new();
    let e = w.engine("");
    let a = "stale@example.net";
    let mut lines: Vec<_> = (0..40)
        .map(|i| {
            fail(
                T0 + i * 15 * SECOND,
                a,
                ip("Manchester", 77),
                Some("5ea1e5ea"),
            )
        })
        .collect();
    lines.push(ok(T0 + 5 * MINUTE, a, ip("Manchester", 78)));
    lines = sorted(lines);
    assert!(run(&e, &lines).is_empty());
}

#[test]
fn a_shared_nat_with_a_few_typos_is_not_an_attack() {
    let w = World::new();
    let e = w.engine("");
    let nat = ip("Paris", 10);
    let mut lines = Vec::new();
    for u in 0..8 {
        let a = format!("office{u}@example.fr");
        for k in 0..3 {
            lines.push(fail(
                T0 + (u * 4 + k) * MINUTE,
                &a,
                nat,
                Some(&format!("{:x}", 0xf00 + u * 3 + k)),
            ));
        }
        lines.push(ok(T0 + (u * 4 + 3) * MINUTE, &a, nat));
    }
    assert!(run(&e, &sorted(lines)).is_empty());
}

#[test]
fn without_password_hashes_a_burst_then_success_alerts_unless_configured() {
    let w = World::new();
    let a = "nohash@example.net";
    let mut lines: Vec<_> = (0..12)
        .map(|i| fail(T0 + i * 10 * SECOND, a, ip("Lagos", 1), None))
        .collect();
    lines.push(ok(T0 + 3 * MINUTE, a, ip("Lagos", 1)));
    let actions = run(&w.engine(""), &lines);
    assert!(!actions.is_empty());
    assert!(
        actions.iter().all(|x| x.kind == "account.alert"),
        "{actions:?}"
    );
    let actions = run(
        &w.engine("[detectors.failed_login_burst]\nlock_without_pwhash = true\n"),
        &lines,
    );
    assert_eq!(actions.last().unwrap().kind, "account.lock");
}

#[test]
fn failures_spread_beyond_the_window_are_not_a_burst() {
    let w = World::new();
    let e = w.engine("");
    let a = "slow@example.net";
    // 12 distinct wrong passwords, one every 5 minutes: never 10 in 10 min.
    let lines: Vec<_> = (0..12)
        .map(|i| {
            fail(
                T0 + i * 5 * MINUTE,
                a,
                ip("Berlin", 1),
                Some(&format!("{i:x}")),
            )
        })
        .collect();
    assert!(run(&e, &lines).is_empty());
}
