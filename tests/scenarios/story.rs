//! The seed's story end to end, in one events file: phished accounts abused
//! over SMTP AUTH from abroad, sending as other customers whose domains then
//! drown in bounces, malware on a customer's PC, while ordinary customers
//! (and a newsletter) go on as usual. Every abused account is locked, no
//! spoofed customer is; the test prints how many events it took.

use credwatch_testkit::*;

use credwatch::demo::sample::{generate_day, DayParams};
use credwatch::time::parse_rfc3339;

#[test]
fn every_abused_account_is_locked_and_no_spoofed_customer_is() {
    let w = World::new();
    let trusted = format!(
        "[policy]\ntrusted_networks = [\"{}/32\"]\n",
        ip("London", 1)
    );
    let e = w.engine(&trusted);
    let (lines, expected) = generate_day(&DayParams {
        accounts: 2_000,
        ..DayParams::default()
    });
    let actions = run(&e, &lines);
    let lock_of = |account: &str| {
        actions
            .iter()
            .find(|a| a.data.account == account && a.kind == "account.lock")
    };
    for x in &expected {
        match (x.detector, lock_of(&x.account)) {
            (Some(_), None) => panic!("{} ({}) was not locked", x.account, x.scenario),
            (None, Some(a)) => panic!(
                "{} ({}) was locked: {}",
                x.account, x.scenario, a.data.reason
            ),
            (Some(_), Some(lock)) => {
                if let Some(start) = x.abuse_start {
                    let at = parse_rfc3339(&lock.timestamp).unwrap();
                    let between = lines.iter().filter(|l| l.ts >= start && l.ts <= at).count();
                    println!(
                        "{:<24} locked by {:<18} {:>4} events ({} s) after the abuse began: {}",
                        x.account,
                        lock.data.detector,
                        between,
                        (at - start) / 1000,
                        x.scenario
                    );
                }
            }
            (None, None) => {}
        }
    }
    // The spoofed customers are told, not locked.
    let victims: Vec<_> = expected
        .iter()
        .filter(|x| x.scenario.starts_with("customer whose address"))
        .collect();
    assert!(victims.len() >= 3);
    for v in victims {
        let alert = actions
            .iter()
            .find(|a| a.data.account == v.account && a.data.detector == "backscatter");
        assert!(alert.is_some(), "{} gets a backscatter alert", v.account);
    }
    // Lagos is too far from Tokyo for 3 hours: travel locks at the login.
    let lock = lock_of("phished1@example.jp").unwrap();
    assert_eq!(lock.data.detector, "impossible_travel");
    assert!(lock.data.reason.contains("Lagos"), "{}", lock.data.reason);
    // Changchun is not (2,100 km in 3 hours): what it sent gives it away,
    // and the lock tells the story in order, with where it was sent from.
    let lock = lock_of("phished0@example.jp").unwrap();
    assert_eq!(lock.data.detector, "sender_mismatch");
    assert_eq!(
        lock.data.evidence["message"]["from"]["place"],
        "Changchun, CN"
    );
    let story = lock.data.evidence["incident_story"].as_array().unwrap();
    assert!(story.len() >= 2, "{story:?}");
    assert!(story
        .windows(2)
        .all(|w| w[0]["ts"].as_str() <= w[1]["ts"].as_str()));
    // Later findings joined that incident instead of locking again.
    let locks = actions
        .iter()
        .filter(|a| a.data.account == "phished0@example.jp" && a.kind == "account.lock")
        .count();
    assert_eq!(locks, 1);
}
