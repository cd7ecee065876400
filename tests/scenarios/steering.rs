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
