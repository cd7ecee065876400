//! impossible_travel: the phished password used from abroad is caught; the
//! flight, the commuter, the VPN, the office network and the unknown address
//! are not.

use credwatch_testkit::*;

#[test]
fn phished_password_used_from_abroad_is_locked() {
    let w = World::new();
    let e = w.engine("");
    let a = "alice@example.jp";
    let actions = run(
        &e,
        &[
            ok(T0, a, ip("London", 1000)),
            ok(T0 + 31 * MINUTE, "Alice@Example.JP ", ip("Changchun", 5)),
        ],
    );
    assert_eq!(actions.len(), 1, "{actions:?}");
    let act = &actions[0];
    assert_eq!(act.kind, "account.lock");
    assert_eq!(act.data.account, a);
    assert_eq!(act.data.detector, "impossible_travel");
    assert!(!act.data.dry_run);
    assert!(
        act.data.reason.contains("Changchun, CN") && act.data.reason.contains("London, GB"),
        "{}",
        act.data.reason
    );
    assert!(act.data.reason.contains("31 min"), "{}", act.data.reason);
    let ev = &act.data.evidence;
    assert_eq!(ev["previous_login"]["place"], "London, GB");
    assert_eq!(ev["login"]["country"], "CN");
    assert_eq!(ev["login"]["asn"], 64612);
    let speed = ev["speed_kmh"].as_f64().unwrap();
    assert!(speed > 10_000.0, "{speed}");
    assert_eq!(ev["max_speed_kmh"], 1000.0);
    assert_eq!(act.data.first_event_ts, "2026-11-05T00:00:00.000Z");
    assert_eq!(act.data.last_event_ts, "2026-11-05T00:31:00.000Z");
}

#[test]
fn long_haul_flight_tokyo_to_london_is_not_travel() {
    let w = World::new();
    let e = w.engine("");
    let a = "traveller@example.jp";
    let actions = run(
        &e,
        &[
            ok(T0, a, ip6_in(city_named("Tokyo"), 7)),
            ok(T0 + 13 * 60 * MINUTE, a, ip("London", 4000)),
        ],
    );
    assert!(actions.is_empty(), "{actions:?}");
    // The same two places 2 h apart are impossible: the test can fail.
    let b = "fast@example.jp";
    let actions = run(
        &e,
        &[
            ok(T0, b, ip6_in(city_named("Tokyo"), 7)),
            ok(T0 + 120 * MINUTE, b, ip("London", 4000)),
        ],
    );
    assert_eq!(actions.len(), 1);
}

#[test]
fn commuter_between_nearby_towns_is_not_travel() {
    let w = World::new();
    let e = w.engine("");
    let a = "commuter@example.co.uk";
    let lines: Vec<_> = (0..12)
        .map(|i| {
            ok(
                T0 + i * 20 * MINUTE,
                a,
                ip(if i % 2 == 0 { "London" } else { "Boxford" }, 300),
            )
        })
        .collect();
    assert!(run(&e, &lines).is_empty());
    // London - Manchester (260 km) in 5 min is below the minimum distance too.
    let b = "north@example.co.uk";
    assert!(run(
        &e,
        &[
            ok(T0, b, ip("London", 9)),
            ok(T0 + 5 * MINUTE, b, ip("Manchester", 9))
        ]
    )
    .is_empty());
}

#[test]
fn trusted_networks_never_count() {
    let w = World::new();
    let office = ip("London", 1);
    let e = w.engine(&format!("[policy]\ntrusted_networks = [\"{office}/32\"]\n"));
    let a = "viawebmail@example.net";
    // Logged in from Tokyo, then through the London webmail front end.
    let actions = run(
        &e,
        &[ok(T0, a, ip("Tokyo", 3)), ok(T0 + 10 * MINUTE, a, office)],
    );
    assert!(actions.is_empty(), "{actions:?}");
}

#[test]
fn hosting_network_is_evidence_not_travel() {
    let w = World::new();
    let e = w.engine("");
    let a = "vpnuser@example.net";
    let vpn = ip("Amsterdam", 44);
    // London, then a hosting/VPN address (its place is the provider's): no finding.
    assert!(run(
        &e,
        &[ok(T0, a, ip("London", 5)), ok(T0 + 5 * MINUTE, a, vpn)]
    )
    .is_empty());
    // Then Changchun: travel from London, with the VPN login as evidence.
    let actions = run(&e, &[ok(T0 + 20 * MINUTE, a, ip("Changchun", 5))]);
    assert_eq!(actions.len(), 1, "{actions:?}");
    let anon = &actions[0].data.evidence["anonymous_logins"];
    assert_eq!(anon[0]["ip"], vpn.to_string());
    assert_eq!(anon[0]["anonymous"][0], "hosting");
}

#[test]
fn an_address_not_in_the_database_is_an_unknown_place() {
    let w = World::new();
    let e = w.engine("");
    let a = "unknown@example.net";
    let nowhere: std::net::IpAddr = "203.0.113.9".parse().unwrap();
    let actions = run(
        &e,
        &[
            ok(T0, a, ip("London", 5)),
            ok(T0 + MINUTE, a, nowhere),
            ok(T0 + 2 * MINUTE, a, ip("London", 5)),
        ],
    );
    assert!(actions.is_empty(), "{actions:?}");
}

#[test]
fn out_of_order_arrival_is_still_caught() {
    let w = World::new();
    let e = w.engine("");
    let a = "late@example.net";
    // The Changchun login arrives first, the earlier London one two minutes late.
    let actions = run(
        &e,
        &[
            ok(T0 + 3 * MINUTE, a, ip("Changchun", 5)),
            ok(T0, a, ip("London", 5)),
        ],
    );
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(
        actions[0].data.evidence["previous_login"]["place"],
        "London, GB"
    );
    assert_eq!(actions[0].data.evidence["login"]["place"], "Changchun, CN");
}

#[test]
fn dry_run_and_protected_accounts_alert_instead() {
    let w = World::new();
    let lines = |a: &str| {
        vec![
            ok(T0, a, ip("London", 1000)),
            ok(T0 + 31 * MINUTE, a, ip("Changchun", 5)),
        ]
    };
    let e = w.engine("[detectors.impossible_travel]\ndry_run = true\n");
    let actions = run(&e, &lines("dry@example.net"));
    assert_eq!(actions[0].kind, "account.alert");
    assert!(actions[0].data.dry_run);
    let e = w.engine("[policy]\nprotected_accounts = [\"CEO@Example.net\"]\n");
    let actions = run(&e, &lines("ceo@example.net"));
    assert_eq!(actions[0].kind, "account.alert");
    assert_eq!(
        serde_json::to_value(&actions[0]).unwrap()["data"]["downgraded_by"],
        "protected"
    );
    let actions = run(&e, &lines("staff@example.net"));
    assert_eq!(actions[0].kind, "account.lock");
}

#[test]
fn a_disabled_detector_finds_nothing() {
    let w = World::new();
    let e = w.engine("[detectors.impossible_travel]\nenabled = false\n");
    let a = "alice@example.jp";
    assert!(run(
        &e,
        &[
            ok(T0, a, ip("London", 1)),
            ok(T0 + 31 * MINUTE, a, ip("Changchun", 5))
        ]
    )
    .is_empty());
}
