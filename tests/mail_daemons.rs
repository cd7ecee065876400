//! Against the real daemons: Debian's Dovecot and Postfix on loopback
//! (`tests/support/src/mailstack.rs`), driven by real IMAP and SMTP
//! clients through a small story: ordinary logins and a typo, a guesser
//! who finds erin's password, bob sending as three other hosted customers,
//! a message that bounces back to the address it claimed, wrong SMTP
//! passwords, a sprayer who gets into frank's mailbox. The daemons' own log files then go to `credwatch replay
//! --format maillog`; the events they make and the actions credwatch takes
//! must be those of the same story written as the contract's JSON events.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use std::collections::BTreeSet;

use credwatch::source::maillog::{prefix, MaillogConfig};
use credwatch::time::now_millis;
use credwatch_testkit::kafka::{
    self, action_set, create_topics, produce_keyed, read, Broker, Tansu, ACTIONS,
};
use credwatch_testkit::mailstack::MailStack;
use credwatch_testkit::{credwatch_exe, ip, World};

/// The story as the contract's JSON events, written as it is played.
#[derive(Default)]
struct Story {
    json: Vec<String>,
}

/// A stand-in for Dovecot's SHA1 prefix: any hash telling passwords apart
/// gives the same decisions.
fn pwhash(p: &str) -> String {
    let h = p.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    format!("{:06x}", h & 0xff_ffff)
}

impl Story {
    fn auth(
        &mut self,
        account: &str,
        protocol: &str,
        from: IpAddr,
        ok: bool,
        password: Option<&str>,
    ) {
        let mut v = serde_json::json!({
            "ts": now_millis(), "kind": "auth", "account": account, "protocol": protocol,
            "src_ip": from.to_string(), "result": if ok { "success" } else { "failure" },
        });
        if let Some(p) = password {
            v["pwhash"] = pwhash(p).into();
        }
        self.json.push(v.to_string());
    }

    fn submission(
        &mut self,
        account: &str,
        from: IpAddr,
        mail_from: &str,
        header_from: &str,
        rcpts: usize,
    ) {
        self.json.push(
            serde_json::json!({
                "ts": now_millis(), "kind": "submission", "account": account, "src_ip": from.to_string(),
                "mail_from": mail_from, "header_from": header_from, "rcpt_count": rcpts,
            })
            .to_string(),
        );
    }

    fn bounce(&mut self, account: &str) {
        self.json.push(
            serde_json::json!({"ts": now_millis(), "kind": "bounce", "account": account})
                .to_string(),
        );
    }
}

/// Plays the story against the daemons.
fn play(stack: &MailStack, story: &mut Story) {
    let home = ip("Tokyo", 11);
    let guesser = ip("Lagos", 66);
    let office = ip("Osaka", 21);

    // alice reads her mail twice, and mistypes once.
    for _ in 0..2 {
        assert!(stack.imap_login(home, "alice@example.jp", &["alice-pw"]));
        story.auth("alice@example.jp", "imap", home, true, None);
    }
    assert!(stack.imap_login(home, "alice@example.jp", &["alice-pq", "alice-pw"]));
    story.auth("alice@example.jp", "imap", home, false, Some("alice-pq"));
    story.auth("alice@example.jp", "imap", home, true, None);

    // erin's own login, then a guesser tries twelve passwords and finds it.
    let erin_home = ip("Yokohama", 5);
    assert!(stack.imap_login(erin_home, "erin@example.jp", &["erin-pw"]));
    story.auth("erin@example.jp", "imap", erin_home, true, None);
    for i in 0..12 {
        let wrong = format!("guess-{i}");
        assert!(!stack.imap_login(guesser, "erin@example.jp", &[&wrong]));
        story.auth("erin@example.jp", "imap", guesser, false, Some(&wrong));
    }
    assert!(stack.imap_login(guesser, "erin@example.jp", &["erin-pw"]));
    story.auth("erin@example.jp", "imap", guesser, true, None);

    // bob sends as himself, then as three other hosted customers; one
    // recipient does not exist, and the bounce goes to dave, whom the
    // message claimed to be from.
    let msgs: [(&str, &str, &[&str]); 4] = [
        (
            "bob@example.jp",
            "\"Bob\" <bob@example.jp>",
            &["friend@remote.example"],
        ),
        (
            "carol@example.jp",
            "\"Carol\" <carol@example.jp>",
            &["r1@remote.example", "r2@remote.example"],
        ),
        (
            "dave@example.jp",
            "\"Dave\" <dave@example.jp>",
            &["gone@bounce.invalid", "r3@remote.example"],
        ),
        (
            "frank@example.jp",
            "\"Frank\" <frank@example.jp>",
            &["r4@remote.example"],
        ),
    ];
    stack
        .smtp_session(office, "bob@example.jp", "bob-pw", &msgs)
        .expect("bob's AUTH");
    story.auth("bob@example.jp", "smtp", office, true, None);
    for (from, header, rcpts) in msgs {
        story.submission("bob@example.jp", office, from, header, rcpts.len());
    }
    assert!(
        stack.wait_queue_empty(Duration::from_secs(30)),
        "Postfix's queue did not empty"
    );
    story.bounce("dave@example.jp");

    // Wrong SMTP passwords for frank, and a user that does not exist.
    for p in ["frank-1", "frank-2"] {
        assert!(stack
            .smtp_session(guesser, "frank@example.jp", p, &[])
            .is_err());
        story.auth("frank@example.jp", "smtp", guesser, false, Some(p));
    }
    assert!(stack
        .smtp_session(guesser, "nobody@example.jp", "x", &[])
        .is_err());
    story.auth("nobody@example.jp", "smtp", guesser, false, Some("x"));

    // A sprayer tries one password on fifteen accounts (most do not
    // exist), then gets into frank's with his own.
    let sprayer = ip("Moscow", 44);
    for i in 0..15 {
        let user = format!("staff{i}@example.jp");
        assert!(!stack.imap_login(sprayer, &user, &["Winter2026!"]));
        story.auth(&user, "imap", sprayer, false, Some("Winter2026!"));
    }
    assert!(stack.imap_login(sprayer, "frank@example.jp", &["frank-pw"]));
    story.auth("frank@example.jp", "imap", sprayer, true, None);
}

/// Runs `credwatch replay` and returns (actions, events made, summary).
fn replay(
    world: &World,
    args: &[&str],
    stdin: Option<&str>,
) -> (Vec<serde_json::Value>, Vec<serde_json::Value>, String) {
    let cfg = world.dir.path().join("mail.toml");
    std::fs::write(
        &cfg,
        world.toml("[maillog]\nhosted_domains = [\"example.jp\"]"),
    )
    .unwrap();
    let events = world.dir.path().join("events.jsonl");
    let _ = std::fs::remove_file(&events);
    let mut cmd = Command::new(credwatch_exe());
    cmd.arg("replay")
        .arg("--config")
        .arg(&cfg)
        .arg("--threads")
        .arg("1");
    cmd.args(args);
    if args.contains(&"maillog") {
        cmd.arg("--events-out").arg(&events);
    }
    let out = if let Some(input) = stdin {
        let p = world.dir.path().join("story.jsonl");
        std::fs::write(&p, input).unwrap();
        cmd.arg(&p).output().unwrap()
    } else {
        cmd.output().unwrap()
    };
    let summary = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "replay failed: {summary}");
    let parse = |t: &str| -> Vec<serde_json::Value> {
        t.lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let made = std::fs::read_to_string(&events)
        .map(|t| parse(&t))
        .unwrap_or_default();
    (parse(&String::from_utf8_lossy(&out.stdout)), made, summary)
}

/// What an action decides: account, detector, action, severity.
fn decisions(actions: &[serde_json::Value]) -> Vec<(String, String, String, String)> {
    let mut v: Vec<_> = actions
        .iter()
        .map(|a| {
            let d = &a["data"];
            let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
            (s("account"), s("detector"), s("action"), s("severity"))
        })
        .collect();
    v.sort();
    v
}

/// An event without its time, session and mechanism (which the JSON story
/// does not know), to compare as a multiset.
fn shape(e: &serde_json::Value) -> String {
    let mut e = e.clone();
    let o = e.as_object_mut().unwrap();
    for k in [
        "ts",
        "session",
        "mechanism",
        "queue_id",
        "pwhash",
        "protocol",
    ] {
        if k == "protocol" && o.get("kind").and_then(|k| k.as_str()) != Some("auth") {
            o.remove(k);
        } else if k != "protocol" {
            let had = o.remove(k).is_some();
            if k == "pwhash" {
                o.insert("has_pwhash".into(), had.into());
            }
        }
    }
    e.to_string()
}

fn count(v: &[serde_json::Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in v {
        *m.entry(shape(e)).or_default() += 1;
    }
    m
}

#[test]
fn the_daemons_logs_give_the_storys_events_and_actions() {
    let world = World::new();
    let stack = MailStack::start();
    let mut story = Story::default();
    play(&stack, &mut story);
    // Dovecot writes a failed login at the disconnect, Postfix the bounce
    // a moment later: give both a second to flush.
    std::thread::sleep(Duration::from_secs(2));

    let dovecot = stack.dovecot_log();
    let postfix = stack.postfix_log();
    let (from_logs, made, summary) = replay(
        &world,
        &[
            "--format",
            "maillog",
            // Postfix's file first: the order of files must not matter.
            postfix.to_str().unwrap(),
            dovecot.to_str().unwrap(),
        ],
        None,
    );
    let (from_json, _, _) = replay(&world, &[], Some(&story.json.join("\n")));

    // The same events, one for one (time aside).
    let want: Vec<serde_json::Value> = story
        .json
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        count(&made),
        count(&want),
        "the log lines did not give the story's events\nlog summary:\n{summary}\ndovecot.log:\n{}\npostfix.log:\n{}",
        credwatch_testkit::mailstack::read_log(&dovecot),
        credwatch_testkit::mailstack::read_log(&postfix)
    );
    // Dovecot's sha1:6 hash of each wrong password: the guesser's twelve
    // are twelve different values.
    let guesses: std::collections::BTreeSet<&str> = made
        .iter()
        .filter(|e| e["account"] == "erin@example.jp" && e["result"] == "failure")
        .filter_map(|e| e["pwhash"].as_str())
        .collect();
    assert_eq!(guesses.len(), 12, "{made:#?}");

    // The same decisions: erin locked (guessed), bob locked (sent as
    // others), frank locked (got into from a spraying address), alice
    // left alone.
    assert_eq!(
        decisions(&from_logs),
        decisions(&from_json),
        "{from_logs:#?}\n{summary}"
    );
    let d = decisions(&from_logs);
    // erin: the guessing alerts, and the guesser's login from Lagos
    // seconds after hers in Yokohama locks (the travel finding comes first).
    assert!(
        d.iter().any(|(a, det, act, _)| a == "erin@example.jp"
            && det == "failed_login_burst"
            && act == "alert"),
        "{d:?}"
    );
    assert!(
        d.iter()
            .any(|(a, _, act, _)| a == "erin@example.jp" && act == "lock"),
        "{d:?}"
    );
    assert!(
        d.iter().any(|(a, det, act, _)| a == "bob@example.jp"
            && det == "sender_mismatch"
            && act == "lock"),
        "{d:?}"
    );
    assert!(
        d.iter().any(|(a, det, act, _)| a == "frank@example.jp"
            && det == "password_spray"
            && act == "lock"),
        "{d:?}"
    );
    assert!(!d.iter().any(|(a, ..)| a == "alice@example.jp"), "{d:?}");

    // The same lines through `run`: shipped to a log topic one line per
    // message, keyed by host (as rsyslog's omkafka does), in the order the
    // daemons wrote them; the service must take replay's actions.
    let mut lines: Vec<(i64, String)> = Vec::new();
    let cfg = MaillogConfig::default();
    let clock = cfg.clock(now_millis());
    for f in [&dovecot, &postfix] {
        for l in credwatch_testkit::mailstack::read_log(f).lines() {
            let ts = prefix::split(l, &clock).map_or(0, |p| p.ts);
            lines.push((ts, l.to_string()));
        }
    }
    lines.sort_by_key(|(ts, _)| *ts);
    let broker = Tansu::start();
    create_topics(&broker, 2);
    broker.create_topic("mail.logs", 2);
    let records: Vec<(&str, &str)> = lines
        .iter()
        .map(|(_, l)| ("mail.example.jp", l.as_str()))
        .collect();
    produce_keyed(&broker.brokers(), "mail.logs", &records);
    let mut settings = kafka::settings(
        &world,
        &broker.brokers(),
        "mail",
        "log_topics = [\"mail.logs\"]",
    );
    settings.config.maillog.hosted_domains = vec!["example.jp".into()];
    let service = kafka::start(settings);
    let got = read(
        &broker.brokers(),
        ACTIONS,
        from_logs.len(),
        Duration::from_secs(120),
        Duration::from_secs(3),
    );
    let want: BTreeSet<(String, String, String, String)> = from_logs
        .iter()
        .map(|a| {
            let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            (
                s(&a["id"]),
                s(&a["data"]["account"]),
                s(&a["data"]["detector"]),
                s(&a["data"]["action"]),
            )
        })
        .collect();
    assert_eq!(action_set(&got), want, "run on the log topic");
    service.shutdown().expect("clean shutdown");
}
