//! password_spray: accounts that logged in from a spraying address are
//! locked, before or after it was recognised; accounts that only saw
//! failures are not.

use credwatch_testkit::*;

#[test]
fn successes_from_a_spraying_source_are_locked() {
    let w = World::new();
    let e = w.engine("");
    let spray = ip("Moscow", 66);
    let mut lines = Vec::new();
    // One early success (before the source is recognised), one late one.
    lines.push(fail(T0, "user0@example.net", spray, Some("5041c0de")));
    lines.push(auth(
        T0 + 30 * SECOND,
        "early@example.net",
        "imap",
        spray,
        true,
        Some("5041c0de"),
    ));
    for u in 1..20 {
        lines.push(fail(
            T0 + MINUTE + u * 30 * SECOND,
            &format!("user{u}@example.net"),
            spray,
            Some("5041c0de"),
        ));
    }
    lines.push(auth(
        T0 + 40 * MINUTE,
        "late@example.net",
        "imap",
        spray,
        true,
        Some("5041c0de"),
    ));
    let actions = run(&e, &lines);
    let locked: Vec<&str> = actions.iter().map(|a| a.data.account.as_str()).collect();
    assert_eq!(
        locked,
        vec!["early@example.net", "late@example.net"],
        "{actions:?}"
    );
    for a in &actions {
        assert_eq!(a.kind, "account.lock");
        assert_eq!(a.data.detector, "password_spray");
        assert_eq!(a.data.evidence["source_ip"], spray.to_string());
        assert!(
            a.data.evidence["accounts_failed_from_source"]
                .as_u64()
                .unwrap()
                >= 15
        );
    }
}

#[test]
fn below_the_threshold_nothing_happens() {
    let w = World::new();
    let e = w.engine("");
    let src = ip("Moscow", 67);
    let mut lines: Vec<_> = (0..14)
        .map(|u| {
            fail(
                T0 + u * MINUTE,
                &format!("u{u}@example.net"),
                src,
                Some("1"),
            )
        })
        .collect();
    lines.push(ok(T0 + 20 * MINUTE, "someone@example.net", src));
    assert!(run(&e, &lines).is_empty());
}

#[test]
fn a_spray_spread_over_more_than_the_window_is_not_recognised() {
    let w = World::new();
    let e = w.engine("");
    let src = ip("Moscow", 68);
    let mut lines: Vec<_> = (0..20)
        .map(|u| {
            fail(
                T0 + u * 10 * MINUTE,
                &format!("u{u}@example.net"),
                src,
                Some("1"),
            )
        })
        .collect();
    lines.push(ok(T0 + 200 * MINUTE, "someone@example.net", src));
    assert!(run(&e, &lines).is_empty());
}

#[test]
fn a_trusted_front_end_is_never_a_sprayer() {
    let w = World::new();
    let fe = ip("London", 1);
    let e = w.engine(&format!("[policy]\ntrusted_networks = [\"{fe}\"]\n"));
    let mut lines: Vec<_> = (0..30)
        .map(|u| fail(T0 + u * SECOND, &format!("u{u}@example.net"), fe, Some("1")))
        .collect();
    lines.push(ok(T0 + MINUTE, "someone@example.net", fe));
    assert!(run(&e, &lines).is_empty());
}
