//! `credwatch replay` and `credwatch check-config` as a user runs them.

use credwatch_testkit::*;

use std::process::Command;

fn credwatch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_credwatch"));
    c.env_remove("RUST_LOG");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("CREDWATCH_")) {
        c.env_remove(k);
    }
    c
}

fn attack_lines() -> Vec<String> {
    let a = "alice@example.jp";
    let mut v = vec![
        ok(T0, a, ip("London", 1)).json,
        ok(T0 + 31 * MINUTE, a, ip("Changchun", 5)).json,
    ];
    for i in 0..12 {
        v.push(
            fail(
                T0 + HOUR_MS + i * SECOND,
                "bob@example.net",
                ip("Lagos", 1),
                Some(&format!("{i:x}")),
            )
            .json,
        );
    }
    v.push(ok(T0 + HOUR_MS + MINUTE, "bob@example.net", ip("Lagos", 1)).json);
    v
}

const HOUR_MS: i64 = 3_600_000;

/// One bad line per reject reason.
fn bad_lines() -> Vec<(&'static str, String)> {
    vec![
        ("malformed_json", "{\"ts\":".to_string()),
        ("malformed_json", "[1,2,3]".to_string()),
        ("too_large", format!("{{\"pad\":\"{}\"}}", "x".repeat(70_000))),
        ("missing_field", r#"{"account":"x","protocol":"imap","src_ip":"10.0.0.1","result":"failure"}"#.to_string()),
        ("bad_type", r#"{"ts":1793836800000,"account":7,"protocol":"imap","src_ip":"10.0.0.1","result":"failure"}"#.to_string()),
        ("bad_value", r#"{"ts":1793836800000,"kind":"logon","account":"x","protocol":"imap","src_ip":"10.0.0.1","result":"failure"}"#.to_string()),
        ("duplicate_field", r#"{"ts":1793836800000,"account":"x","account":"y","protocol":"imap","src_ip":"10.0.0.1","result":"failure"}"#.to_string()),
        ("bad_account", r#"{"ts":1793836800000,"account":"a\u0000b","protocol":"imap","src_ip":"10.0.0.1","result":"failure"}"#.to_string()),
        ("bad_ip", r#"{"ts":1793836800000,"account":"x","protocol":"imap","src_ip":"10.0.0.256","result":"failure"}"#.to_string()),
        ("bad_timestamp", r#"{"ts":"2026-13-01T00:00:00Z","account":"x","protocol":"imap","src_ip":"10.0.0.1","result":"failure"}"#.to_string()),
    ]
}

#[test]
fn mixed_good_and_bad_lines_give_exactly_the_good_lines_actions() {
    let w = World::new();
    let cfg = w.dir.path().join("c.toml");
    std::fs::write(&cfg, w.toml("")).unwrap();
    let good = attack_lines();
    let good_file = w.dir.path().join("good.jsonl");
    std::fs::write(&good_file, good.join("\n") + "\n").unwrap();

    let mut mixed = Vec::new();
    let bad = bad_lines();
    for (i, g) in good.iter().enumerate() {
        if let Some((_, b)) = bad.get(i) {
            mixed.push(b.clone());
        }
        mixed.push(g.clone());
    }
    let mut mixed_bytes = mixed.join("\n").into_bytes();
    mixed_bytes.extend_from_slice(b"\n{\"account\":\"\xff\xfe\"}\n\n");
    let mixed_file = w.dir.path().join("mixed.jsonl");
    std::fs::write(&mixed_file, &mixed_bytes).unwrap();
    let rejects = w.dir.path().join("rejects.jsonl");

    let clean = credwatch()
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg(&good_file)
        .output()
        .unwrap();
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    let dirty = credwatch()
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg("--rejects")
        .arg(&rejects)
        .arg(&mixed_file)
        .output()
        .unwrap();
    assert!(
        dirty.status.success(),
        "{}",
        String::from_utf8_lossy(&dirty.stderr)
    );
    let out = String::from_utf8(dirty.stdout).unwrap();
    assert_eq!(
        out,
        String::from_utf8(clean.stdout).unwrap(),
        "same actions, same ids"
    );
    let kinds: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds, ["account.lock", "account.alert", "account.lock"]);

    let summary = String::from_utf8(dirty.stderr).unwrap();
    assert!(summary.contains("rejected:  11"), "{summary}");
    for (reason, _) in &bad {
        assert!(summary.contains(reason), "{reason} in {summary}");
    }
    assert!(summary.contains("invalid_utf8 1"), "{summary}");

    let rej = std::fs::read_to_string(&rejects).unwrap();
    let rows: Vec<serde_json::Value> = rej
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 11);
    for (row, (reason, _)) in rows.iter().zip(&bad) {
        assert_eq!(row["reason"], *reason, "{row}");
    }
    assert!(rows.iter().all(|r| r["line"].as_u64().unwrap() >= 1));
    assert!(
        rows[2].get("raw").is_none(),
        "an oversized line is not copied"
    );
    assert_eq!(rows[0]["raw"], "{\"ts\":");
}

#[test]
fn stdin_works_and_the_summary_counts() {
    let w = World::new();
    let cfg = w.dir.path().join("c.toml");
    std::fs::write(&cfg, w.toml("")).unwrap();
    let mut child = credwatch()
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all((attack_lines().join("\n") + "\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("auth 15"), "{stderr}");
    assert!(stderr.contains("impossible_travel"), "{stderr}");
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 3);
}

#[test]
fn a_missing_geoip_file_is_a_clear_startup_error() {
    let w = World::new();
    let cfg = w.dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[geoip]\ncity_db = \"/nonexistent/GeoLite2-City.mmdb\"\n",
    )
    .unwrap();
    let out = credwatch()
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg("/dev/null")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("/nonexistent/GeoLite2-City.mmdb") && err.contains("geoip.city_db"),
        "{err}"
    );
}

/// `check-config` on a config whose City database is `city_db`: it must
/// fail with exit code 2; returns what it said.
fn check_config_fails(w: &World, city_db: &std::path::Path) -> String {
    let cfg = w.dir.path().join("c.toml");
    let toml = format!("[geoip]\ncity_db = {:?}\n", city_db.display().to_string());
    std::fs::write(&cfg, toml).unwrap();
    let out = credwatch().arg("check-config").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn a_corrupt_or_wrong_geoip_file_is_named() {
    let w = World::new();
    // The ASN database where the City database belongs.
    let err = check_config_fails(&w, &w.geo.asn);
    assert!(
        err.contains("geoip.city_db") && err.contains("ASN"),
        "{err}"
    );
    // A truncated database.
    let bytes = std::fs::read(&w.geo.city).unwrap();
    let cut = w.dir.path().join("cut.mmdb");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let err = check_config_fails(&w, &cut);
    assert!(
        err.contains("cut.mmdb") && err.contains("not a valid MaxMind DB"),
        "{err}"
    );
}

#[test]
fn check_config_prints_the_effective_config_and_names_bad_keys() {
    let w = World::new();
    let cfg = w.dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        w.toml("[webhook]\nsecret = \"whsec_dGhpcyBpcyBzZWNyZXQ=\"\n"),
    )
    .unwrap();
    let out = credwatch()
        .arg("check-config")
        .arg(&cfg)
        .env("CREDWATCH_DETECTORS_PASSWORD_SPRAY_MIN_ACCOUNTS", "25")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let parsed: toml::Table = toml::from_str(&printed).unwrap();
    assert_eq!(
        parsed["detectors"]["password_spray"]["min_accounts"].as_integer(),
        Some(25)
    );
    assert_eq!(
        parsed["detectors"]["impossible_travel"]["max_speed_kmh"].as_float(),
        Some(1000.0)
    );
    assert!(
        !printed.contains("dGhpcyBpcyBzZWNyZXQ"),
        "the secret is never printed"
    );

    std::fs::write(
        &cfg,
        w.toml("[detectors.password_spray]\nmin_acounts = 3\n"),
    )
    .unwrap();
    let out = credwatch().arg("check-config").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("min_acounts"), "{err}");
}

/// `--format maillog`: several files (a .gz among them, out of order) are
/// merged in time; judging beside the reading (`--threads 2`) gives
/// exactly what one thread does; the summary counts why lines gave
/// nothing; a missing file is a clear error naming it.
#[test]
fn maillog_replay_merges_files_and_threads_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[geoip]\ncity_db = \"\"\n[detectors.impossible_travel]\nenabled = false\n[maillog]\nhosted_domains = [\"example.jp\"]\n",
    )
    .unwrap();
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/real-logs");
    let files = [
        format!("{data}/real-daemons/postfix.log"),
        format!("{data}/pixelpark-postfix-logsums/mail.log.gz"),
        format!("{data}/real-daemons/dovecot.log"),
        format!("{data}/fail2ban/dovecot.log"),
    ];
    let run = |threads: &str| {
        let out = credwatch()
            .args([
                "replay",
                "--format",
                "maillog",
                "--year",
                "2026",
                "--threads",
                threads,
                "--config",
            ])
            .arg(&cfg)
            .args(&files)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (one, summary) = run("1");
    let (two, _) = run("2");
    assert_eq!(one, two);
    assert!(
        !one.is_empty(),
        "the production log's relay account sends as others: {summary}"
    );
    assert!(
        summary.contains("log lines:") && summary.contains("not_used"),
        "{summary}"
    );
    assert!(
        summary.contains("submission 21"),
        "16 + 5 submissions: {summary}"
    );
    // A missing file is named.
    let out = credwatch()
        .args(["replay", "--format", "maillog", "--config"])
        .arg(&cfg)
        .arg(dir.path().join("nope.log"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("nope.log"), "{err}");
}

/// The incident ids of a report page's cards.
fn report_cards(page: &str) -> std::collections::BTreeSet<String> {
    page.match_indices("<article class=\"card")
        .filter_map(|(i, _)| {
            let rest = &page[i..];
            let id = rest.split("id=\"").nth(1)?.split('"').next()?;
            Some(id.to_string())
        })
        .collect()
}

/// `--report`: the page has a card for every incident of the actions,
/// whatever the threads and the input format; a report that cannot be
/// written is said before the replay, naming the path.
#[test]
fn the_report_has_every_incident_of_the_replay() {
    let w = World::new();
    let cfg = w.dir.path().join("c.toml");
    std::fs::write(&cfg, w.toml("")).unwrap();
    let events = w.dir.path().join("events.jsonl");
    std::fs::write(&events, attack_lines().join("\n") + "\n").unwrap();
    let run = |threads: &str, format: &str, input: &std::path::Path| {
        let report = w.dir.path().join(format!("r-{threads}-{format}.html"));
        let out = credwatch()
            .args([
                "replay",
                "--threads",
                threads,
                "--format",
                format,
                "--config",
            ])
            .arg(&cfg)
            .arg("--report")
            .arg(&report)
            .arg(input)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("report:    {}", report.display())),
            "{stderr}"
        );
        let incidents: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["data"]["incident"].as_str().unwrap().to_string()
            })
            .collect();
        (incidents, std::fs::read_to_string(&report).unwrap())
    };
    let (one, page1) = run("1", "json", &events);
    assert_eq!(one.len(), 2, "alice's travel and bob's burst");
    assert_eq!(report_cards(&page1), one);
    assert!(page1.contains("alice@example.jp") && page1.contains("class=\"journey\""));
    // Bob's failed logins came from Lagos: placed by the GeoIP file, on his
    // card's map and on the world map.
    assert!(
        page1.contains("failed logins from Lagos"),
        "bob's sources are placed"
    );
    assert!(
        page1.contains("<title>failed logins from: Lagos"),
        "and on the world map"
    );
    assert!(
        page1.contains("Events judged</dt><dd>15</dd>"),
        "every event counted once: {}",
        &page1[page1.find("Events judged").unwrap_or(0)..][..60]
    );
    let (two, page2) = run("2", "json", &events);
    assert_eq!(two, one);
    assert_eq!(report_cards(&page2), one);
    assert!(
        page2.contains("Events judged</dt><dd>15</dd>"),
        "every event counted once with threads"
    );

    // The same day as log lines: the report follows the maillog replay.
    let logs = w.dir.path().join("mail.log");
    let limits = credwatch::source::event::ParseLimits::new(65_536, i64::MAX / 4);
    let mut rendered = String::new();
    for (n, l) in attack_lines().iter().enumerate() {
        let e = credwatch::source::event::parse_event(l.as_bytes(), &limits).unwrap();
        credwatch::source::maillog::render::lines(&e, n as u64, &mut rendered);
    }
    std::fs::write(&logs, rendered).unwrap();
    let (from_logs, page3) = run("2", "maillog", &logs);
    assert!(!from_logs.is_empty(), "the log lines give the same attacks");
    assert_eq!(report_cards(&page3), from_logs);

    // A report that cannot be written: said at once, naming it.
    let out = credwatch()
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg("--report")
        .arg(w.dir.path().join("no/such/folder/r.html"))
        .arg(&events)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("cannot create the report file")
            && err.contains("no/such/folder/r.html"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing was replayed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
