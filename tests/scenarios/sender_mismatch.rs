//! sender_mismatch: sending as other customers locks; own sub-addressed and
//! differently-cased addresses, aliases (also after the map changes) and a
//! domain administrator are fine; one foreign sender only alerts.

use credwatch_testkit::*;

fn send(t: i64, account: &str, from: &str, header: Option<&str>) -> credwatch::demo::sample::Line {
    submission(t, account, ip("London", 7), from, header, 3)
}

fn of(actions: &[credwatch::action::Action]) -> Vec<&credwatch::action::Action> {
    actions
        .iter()
        .filter(|x| x.data.detector == "sender_mismatch")
        .collect()
}

#[test]
fn sending_as_other_customers_locks() {
    let w = World::new();
    let e = w.engine("");
    let a = "phished@example.jp";
    let lines = vec![
        send(
            T0,
            a,
            "ceo@bank-customer.com",
            Some("ceo@bank-customer.com"),
        ),
        send(T0 + MINUTE, a, "billing@shop.example", None),
        send(
            T0 + 2 * MINUTE,
            a,
            "info@school.example",
            Some("info@school.example"),
        ),
        send(T0 + 3 * MINUTE, a, "news@school.example", None),
    ];
    let actions = run(&e, &lines);
    let found = of(&actions);
    assert_eq!(
        found.len(),
        2,
        "an alert for the first, then the lock: {actions:?}"
    );
    assert_eq!(found[0].kind, "account.alert");
    assert_eq!(found[1].kind, "account.lock");
    assert_eq!(
        serde_json::to_value(found[1].data.severity).unwrap(),
        "critical"
    );
    let ev = &found[1].data.evidence;
    assert_eq!(ev["foreign_senders"], 3);
    assert_eq!(ev["foreign_domains"], 3);
    assert_eq!(ev["message"]["from"]["place"], "London, GB");
    let story = ev["incident_story"]
        .as_array()
        .expect("the lock tells the story");
    assert_eq!(story.len(), 2);
    assert_eq!(story[0]["detector"], "sender_mismatch");
}

#[test]
fn own_sub_addressed_and_differently_cased_addresses_are_own() {
    let w = World::new();
    let e = w.engine("");
    let a = "Alice@Example.COM";
    let lines = vec![
        send(T0, a, "alice@example.com", None),
        send(
            T0 + MINUTE,
            a,
            "ALICE+lists@EXAMPLE.com",
            Some("<Alice+news@example.com>"),
        ),
        send(T0 + 2 * MINUTE, a, "<>", Some("alice@example.com")),
        send(T0 + 3 * MINUTE, a, "", None),
    ];
    assert!(run(&e, &lines).is_empty());
}

#[test]
fn an_alias_is_own_and_a_changed_map_is_read_again() {
    let w = World::new();
    let map = w.dir.path().join("sender_logins");
    std::fs::write(
        &map,
        "# login   may send as\nbob@example.com  sales@example.com, @example.org\n",
    )
    .unwrap();
    let e = w.engine(&format!(
        "[detectors.sender_mismatch]\nalias_map = {:?}\nalias_map_reload_secs = 0\n",
        map.display().to_string()
    ));
    let a = "bob@example.com";
    let ok_lines = vec![
        send(T0, a, "sales@example.com", None),
        send(
            T0 + MINUTE,
            a,
            "anyone@example.org",
            Some("Sales@Example.com"),
        ),
    ];
    assert!(run(&e, &ok_lines).is_empty());
    // The administrator takes the alias away: the next message is foreign.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&map, "bob@example.com  @example.org\n").unwrap();
    let actions = run(&e, &[send(T0 + 2 * MINUTE, a, "sales@example.com", None)]);
    assert_eq!(of(&actions).len(), 1, "{actions:?}");
    assert_eq!(actions[0].kind, "account.alert");
}

#[test]
fn a_broken_alias_map_is_a_startup_error_naming_it() {
    let w = World::new();
    let map = w.dir.path().join("sender_logins");
    std::fs::write(&map, "bob@example.com\n").unwrap();
    let toml = w.toml(&format!(
        "[detectors.sender_mismatch]\nalias_map = {:?}\n",
        map.display().to_string()
    ));
    let err = credwatch::config::Config::from_toml_with_env(&toml, "t.toml", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("detectors.sender_mismatch.alias_map") && err.contains("sender_logins:1"),
        "{err}"
    );
}

#[test]
fn a_domain_administrator_may_send_as_the_domain() {
    let w = World::new();
    let e = w.engine("[detectors.sender_mismatch]\ndomain_admins = [\"admin@example.net\"]\n");
    let a = "admin@example.net";
    let lines = vec![
        send(T0, a, "sales@example.net", None),
        send(T0 + MINUTE, a, "support@example.net", None),
        send(T0 + 2 * MINUTE, a, "hr@example.net", None),
    ];
    assert!(run(&e, &lines).is_empty());
    // But not as another domain.
    assert_eq!(
        of(&run(
            &e,
            &[send(T0 + 3 * MINUTE, a, "x@other.example", None)]
        ))
        .len(),
        1
    );
}
