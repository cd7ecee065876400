//! backscatter: a customer whose address someone else forges gets an alert,
//! never a lock.

use credwatch_testkit::*;

#[test]
fn a_spoofed_customer_is_a_victim_alert_never_a_lock() {
    let w = World::new();
    let e = w.engine("");
    let victim = "shop@example.co.uk";
    let mut lines = vec![submission(
        T0,
        victim,
        ip("Manchester", 2),
        victim,
        Some(victim),
        2,
    )];
    for i in 0..200 {
        lines.push(bounce(T0 + 5 * MINUTE + i * 10 * SECOND, victim));
    }
    let actions = run(&e, &lines);
    assert_eq!(actions.len(), 1, "{actions:?}");
    let a = &actions[0];
    assert_eq!(a.kind, "account.alert");
    assert_eq!(a.data.detector, "backscatter");
    assert_eq!(a.data.evidence["bounces_last_hour"], 50);
    assert_eq!(a.data.evidence["recipients_sent_last_hour"], 2);
}

#[test]
fn a_few_bounces_are_ordinary() {
    let w = World::new();
    let e = w.engine("");
    let a = "typo@example.co.uk";
    let lines: Vec<_> = (0..20).map(|i| bounce(T0 + i * MINUTE, a)).collect();
    assert!(run(&e, &lines).is_empty());
}
