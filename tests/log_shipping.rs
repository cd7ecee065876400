//! The README's rsyslog `omkafka` snippet, run as it is written: Debian's
//! rsyslogd (installed by `tests/run`) takes the real daemons' recorded
//! lines from its syslog socket, as Dovecot and Postfix hand them over, and
//! ships them to tansu with the README's template and key; credwatch's
//! reader must read every shipped line as it reads the daemons' own files,
//! and all of one host's lines must share one partition.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use credwatch::source::maillog::{prefix, Joiner, MaillogConfig};
use credwatch::time::now_millis;
use credwatch_testkit::kafka::{wait_until, Broker, Tansu};
use credwatch_testkit::Kill;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/real-logs/real-daemons"
);

/// The README's rsyslog code block (the one that loads omkafka).
fn readme_snippet() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    readme
        .split("```")
        .find(|b| b.contains("module(load=\"omkafka\")"))
        .expect("the README has an rsyslog omkafka snippet")
        .trim_start_matches(|c: char| c.is_alphanumeric())
        .to_string()
}

/// Every recorded line as (program[pid], message), in time order: what
/// the daemons hand to syslog.
fn recorded() -> Vec<(String, String)> {
    let cfg = MaillogConfig {
        year: 2026,
        ..MaillogConfig::default()
    };
    let clock = cfg.clock(0);
    let mut all = Vec::new();
    for f in ["dovecot.log", "postfix.log"] {
        for l in std::fs::read_to_string(format!("{DATA}/{f}"))
            .unwrap()
            .lines()
        {
            let p = prefix::split(l, &clock).expect("a recorded line");
            let tag = if p.program.is_empty() {
                "dovecot".to_string()
            } else if p.pid.is_empty() {
                p.program.to_string()
            } else {
                format!("{}[{}]", p.program, p.pid)
            };
            all.push((p.ts, tag, p.message.to_string()));
        }
    }
    all.sort_by_key(|(ts, _, _)| *ts);
    all.into_iter().map(|(_, t, m)| (t, m)).collect()
}

#[test]
fn the_readmes_rsyslog_snippet_ships_lines_credwatch_reads() {
    assert!(
        Path::new("/usr/sbin/rsyslogd").exists()
            && Path::new("/usr/lib/x86_64-linux-gnu/rsyslog/omkafka.so").exists(),
        "rsyslogd with omkafka is missing: install the Debian packages rsyslog and rsyslog-kafka (tests/run does, as root)"
    );
    let broker = Tansu::start();
    broker.create_topic("mail.logs", 4);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("log.sock");
    let snippet = readme_snippet().replace("kafka:9092", &broker.brokers());
    let conf = format!(
        "global(workDirectory=\"{d}\")\nmodule(load=\"imuxsock\" SysSock.Use=\"off\")\ninput(type=\"imuxsock\" Socket=\"{s}\" CreatePath=\"on\")\n{snippet}\n",
        d = dir.path().display(),
        s = sock.display()
    );
    std::fs::write(dir.path().join("rsyslog.conf"), &conf).unwrap();
    let check = Command::new("/usr/sbin/rsyslogd")
        .args(["-N1", "-f"])
        .arg(dir.path().join("rsyslog.conf"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "rsyslogd refuses the README's snippet:\n{}{}\n{conf}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let _rsyslog = Kill(
        Command::new("/usr/sbin/rsyslogd")
            .args(["-n", "-i"])
            .arg(dir.path().join("rsyslog.pid"))
            .arg("-f")
            .arg(dir.path().join("rsyslog.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("rsyslog.err")).unwrap())
            .spawn()
            .expect("start rsyslogd"),
    );
    assert!(
        wait_until(Duration::from_secs(15), || sock.exists()),
        "rsyslogd made no socket"
    );

    // What the daemons hand to syslog, through logger(1), with a line of
    // another program that the snippet's filter keeps out.
    let lines = recorded();
    let logger = |tag: &str, msg: &str| {
        let ok = Command::new("logger")
            .arg("-u")
            .arg(&sock)
            .args(["-t", tag, "--", msg])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "logger {tag} {msg}");
    };
    logger(
        "sshd[99]",
        "Accepted publickey for root from 192.0.2.1 port 22",
    );
    for (tag, msg) in &lines {
        logger(tag, msg);
    }
    let shipped = read_all(&broker.brokers(), lines.len());
    let err = std::fs::read_to_string(dir.path().join("rsyslog.err")).unwrap_or_default();
    let parts: std::collections::BTreeSet<i32> = shipped.iter().map(|(p, _, _)| *p).collect();
    assert_eq!(
        parts.len(),
        1,
        "one host's lines on one partition: {parts:?}\n{err}"
    );
    assert_eq!(
        shipped.len(),
        lines.len(),
        "every Dovecot and Postfix line shipped, sshd's not\n{err}"
    );
    let got: Vec<(String, String)> = shipped.into_iter().map(|(_, k, v)| (k, v)).collect();
    // Keyed by the host the line names (its second field), not by a
    // literal: one host's lines stay together, hosts spread.
    assert!(
        got.iter()
            .all(|(k, v)| v.split(' ').nth(1) == Some(k.as_str())),
        "keyed by the host: {:?}",
        &got[..2]
    );

    // credwatch reads them as it reads the daemons' own files.
    let cfg = MaillogConfig::default();
    let clock = cfg.clock(now_millis());
    let mut j = Joiner::new(&cfg);
    let mut events = Vec::new();
    for (n, (_, line)) in got.iter().enumerate() {
        let why = j.feed(line, n as u64, &clock, &mut events);
        assert_ne!(
            why,
            Some(credwatch::source::maillog::Skip::NoTimestamp),
            "{line}"
        );
        assert_ne!(
            why,
            Some(credwatch::source::maillog::Skip::OtherProgram),
            "{line}"
        );
    }
    j.finish(&mut events);
    let count = |kind: &str, acct: &str, result: Option<&str>| {
        credwatch_testkit::count_log_events(&events, kind, acct, result)
    };
    assert_eq!(
        count("submission", "bob@example.jp", None),
        5,
        "{events:#?}"
    );
    assert_eq!(count("auth", "bob@example.jp", Some("failure")), 1);
    assert_eq!(count("auth", "alice@example.jp", Some("failure")), 1);
    assert!(count("auth", "alice@example.jp", Some("success")) >= 3);
}

/// Every record of `mail.logs` as (partition, key, value): until `want`
/// came (at most 30 s), then 2 s more for any extra.
fn read_all(brokers: &str, want: usize) -> Vec<(i32, String, String)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "credwatch-shipping-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition_offset("mail.logs", p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let start = std::time::Instant::now();
    let mut settle: Option<std::time::Instant> = None;
    while start.elapsed() < Duration::from_secs(30)
        && settle.is_none_or(|t| t.elapsed() < Duration::from_secs(2))
    {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            out.push((
                m.partition(),
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            ));
        }
        if out.len() >= want && settle.is_none() {
            settle = Some(std::time::Instant::now());
        }
    }
    out
}
