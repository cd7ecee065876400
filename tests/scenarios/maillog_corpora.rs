//! Real Dovecot and Postfix logs that nobody here wrote (other projects'
//! test suites, a real three-day production Postfix log, and the real
//! daemons run on this kind of machine; sources and licences in
//! `tests/data/real-logs/SOURCES.md`), read line by line: every labelled
//! login, failure, submission and bounce line is read as its label says
//! (`labels.tsv`, made by the corpus's own labeller), and every other line
//! gives no event and no crash.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};

use credwatch::source::event::ParseLimits;
use credwatch::source::maillog::{Joiner, LogEvent, MaillogConfig, Skip};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/real-logs");

/// One labelled line.
#[derive(Debug, Clone)]
struct Label {
    class: String,
    account: String,
    ip: String,
    extra: String,
}

fn labels() -> HashMap<(String, u64), Label> {
    let text = std::fs::read_to_string(format!("{DIR}/labels.tsv")).unwrap();
    let mut m = HashMap::new();
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split('\t').collect();
        let file = f[0].replace("mail.log.xz", "mail.log.gz");
        m.insert(
            (file, f[1].parse().unwrap()),
            Label {
                class: f[2].into(),
                account: f.get(3).unwrap_or(&"").to_string(),
                ip: f.get(4).unwrap_or(&"").to_string(),
                extra: f.get(5).unwrap_or(&"").to_string(),
            },
        );
    }
    m
}

/// What one file gave: per line, why it gave nothing (or `None`), and the
/// events with the lines they were made of.
struct Read1 {
    lines: Vec<String>,
    outcome: Vec<Option<Skip>>,
    events: Vec<LogEvent>,
}

fn read_file(name: &str) -> Read1 {
    let path = format!("{DIR}/{name}");
    let raw = std::fs::File::open(&path).unwrap();
    let reader: Box<dyn Read> = if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(raw))
    } else {
        Box::new(raw)
    };
    let cfg = MaillogConfig {
        year: 2023,
        ..MaillogConfig::default()
    };
    let clock = cfg.clock(0);
    let mut j = Joiner::new(&cfg);
    let mut events = Vec::new();
    let mut lines = Vec::new();
    let mut outcome = Vec::new();
    for (i, l) in BufReader::new(reader).split(b'\n').enumerate() {
        let l = String::from_utf8_lossy(&l.unwrap()).into_owned();
        // The grok fragments are messages without a prefix: give them one.
        let line = if name.ends_with(".tsv") {
            let mut f = l.splitn(3, '\t');
            let (prog, _, msg) = (f.next().unwrap_or(""), f.next(), f.next().unwrap_or(""));
            format!("Mar  5 12:00:01 mail postfix/{prog}[1]: {msg}")
        } else {
            l.clone()
        };
        outcome.push(j.feed(&line, i as u64 + 1, &clock, &mut events));
        lines.push(l);
    }
    j.finish(&mut events);
    Read1 {
        lines,
        outcome,
        events,
    }
}

fn corpus_files() -> Vec<String> {
    let mut files = Vec::new();
    for d in std::fs::read_dir(DIR).unwrap() {
        let d = d.unwrap();
        if !d.file_type().unwrap().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(d.path()).unwrap() {
            let f = f.unwrap().path();
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".log") || name.ends_with(".gz") || name.ends_with(".tsv") {
                files.push(format!("{}/{name}", d.file_name().to_string_lossy()));
            }
        }
    }
    files.sort();
    files
}

fn events_of(r: &Read1, line: u64) -> Vec<&LogEvent> {
    r.events
        .iter()
        .filter(|e| e.lines.contains(&line))
        .collect()
}

/// Where a label and credwatch knowingly differ, and why.
fn exception(file: &str, line: u64) -> Option<&'static str> {
    match (file, line) {
        // The labeller takes the first rhost=; the real one is the last
        // (ruser= is the client's: fail2ban's own verdict says 192.0.43.10).
        ("fail2ban/dovecot.log", 8) => Some("192.0.43.10"),
        _ => None,
    }
}

#[test]
fn every_labelled_line_is_read_as_labelled() {
    let labels = labels();
    let limits = ParseLimits::new(65_536, i64::MAX / 4);
    let mut checked: BTreeMap<String, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    for file in corpus_files() {
        if file.starts_with("real-daemons/") {
            continue; // not labelled: see the real-daemon test
        }
        let r = read_file(&file);
        // Every event the lines made is a valid contract event.
        for e in &r.events {
            if let Err(x) = e.fields.to_event(&limits) {
                problems.push(format!(
                    "{file}: lines {:?}: invalid event {:?}: {x}",
                    e.lines, e.fields
                ));
            }
        }
        for (i, text) in r.lines.iter().enumerate() {
            let n = i as u64 + 1;
            let label = labels.get(&(file.clone(), n));
            let class = label.map_or("other", |l| l.class.as_str());
            let evs = events_of(&r, n);
            let why = r.outcome[i];
            let ok_account = |e: &LogEvent, l: &Label| {
                l.account.is_empty() || e.fields.account.eq_ignore_ascii_case(&l.account)
            };
            let ip = |l: &Label| exception(&file, n).unwrap_or(&l.ip).to_string();
            let ok_ip = |e: &LogEvent, l: &Label| {
                let want = ip(l).trim_start_matches("::ffff:").to_string();
                want.is_empty() || want == "unknown" || e.fields.src_ip.as_deref() == Some(&*want)
            };
            let fail = |what: String| format!("{file}:{n} [{class}] {what}\n    {text}");
            *checked.entry(class.to_string()).or_default() += 1;
            match class {
                "dovecot_login_ok" => {
                    let l = label.unwrap();
                    let good = evs.len() == 1
                        && evs[0].fields.result == Some("success")
                        && ok_account(evs[0], l)
                        && ok_ip(evs[0], l);
                    if !good {
                        problems.push(fail(format!("want one success, got {evs:?} ({why:?})")));
                    }
                }
                "dovecot_login_fail" | "postfix_sasl_fail" | "dovecot_auth_backend_fail" => {
                    let l = label.unwrap();
                    if l.account.is_empty() {
                        // No user on the line: nothing to judge, said so.
                        if !evs.is_empty() || why != Some(Skip::NoUser) {
                            problems.push(fail(format!("want no_user, got {evs:?} ({why:?})")));
                        }
                        continue;
                    }
                    let good = !evs.is_empty()
                        && evs.iter().all(|e| {
                            e.fields.result == Some("failure") && ok_account(e, l) && ok_ip(e, l)
                        });
                    if !good {
                        problems.push(fail(format!(
                            "want failures of {} from {}, got {evs:?} ({why:?})",
                            l.account,
                            ip(l)
                        )));
                    }
                    if class == "postfix_sasl_fail"
                        && evs.iter().any(|e| e.fields.protocol != Some("smtp"))
                    {
                        problems.push(fail("a Postfix failure is SMTP".into()));
                    }
                }
                "postfix_submission" => {
                    let l = label.unwrap();
                    let login = evs
                        .iter()
                        .filter(|e| e.fields.kind == "auth" && e.fields.result == Some("success"))
                        .count();
                    let sub: Vec<_> = evs
                        .iter()
                        .filter(|e| e.fields.kind == "submission")
                        .collect();
                    // One login per smtpd session; the submission when the
                    // chain is in the file (all but kumina's lone line).
                    let chain = !file.starts_with("kumina");
                    let good = evs.iter().all(|e| ok_account(e, l) && ok_ip(e, l))
                        && login <= 1
                        && (!chain || sub.len() == 1);
                    if !good || evs.is_empty() {
                        problems.push(fail(format!(
                            "want a login and a submission of {}, got {evs:?} ({why:?})",
                            l.account
                        )));
                    }
                    if let Some(s) = sub.first() {
                        let qid = l
                            .extra
                            .split(';')
                            .find_map(|x| x.strip_prefix("qid="))
                            .unwrap_or("");
                        if s.fields.queue_id.as_deref() != Some(qid)
                            || s.fields.rcpt_count.is_none()
                            || s.fields.mail_from.is_none()
                        {
                            problems.push(fail(format!("submission without its envelope: {s:?}")));
                        }
                    }
                }
                "dovecot_login_refused" => {
                    if !evs.is_empty() || why != Some(Skip::NotCredential) {
                        problems.push(fail(format!("want not_credential, got {evs:?} ({why:?})")));
                    }
                }
                "dovecot_login_noauth" => {
                    if !evs.is_empty() || why != Some(Skip::NoAuthAttempt) {
                        problems.push(fail(format!("want no_auth_attempt, got {evs:?} ({why:?})")));
                    }
                }
                "postfix_sasl_error" => {
                    if !evs.is_empty() || why != Some(Skip::NotCredential) {
                        problems.push(fail(format!("want not_credential, got {evs:?} ({why:?})")));
                    }
                }
                // None of the corpora's bounces went to a hosted mailbox
                // (they bounced inbound mail back out): no bounce event.
                "postfix_delivery_bounced" | "postfix_bounce_notice" => {
                    if evs.iter().any(|e| e.fields.kind == "bounce") {
                        problems.push(fail(format!(
                            "an outbound bounce is not a bounce event: {evs:?}"
                        )));
                    }
                }
                "postfix_client_unauth" => {
                    if !evs.is_empty() || why != Some(Skip::Unauthenticated) {
                        problems.push(fail(format!("want unauthenticated, got {evs:?} ({why:?})")));
                    }
                }
                // The envelope and header lines of authenticated messages
                // go into their submission; the others give nothing.
                // A message from <> delivered to a mailbox here (through
                // Dovecot's LDA) is a bounce event of that mailbox.
                "postfix_qmgr_from" | "postfix_header_log" | "postfix_delivery_other" => {
                    let bounce_ok = |e: &LogEvent| {
                        e.fields.kind == "bounce"
                            && r.lines[*e.lines.last().unwrap() as usize - 1]
                                .contains("relay=dovecot, ")
                            && label.is_none_or(|l| {
                                class != "postfix_delivery_other" || e.fields.account == l.account
                            })
                    };
                    if evs
                        .iter()
                        .any(|e| e.fields.kind != "submission" && !bounce_ok(e))
                    {
                        problems.push(fail(format!(
                            "only a submission or a local bounce: {evs:?}"
                        )));
                    }
                }
                _ => {
                    if !evs.is_empty() {
                        problems.push(fail(format!(
                            "an unlabelled line made events: {evs:?} ({why:?})"
                        )));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} lines misread:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // The corpora hold every class this test is about.
    for c in [
        "dovecot_login_ok",
        "dovecot_login_fail",
        "dovecot_auth_backend_fail",
        "postfix_sasl_fail",
        "postfix_submission",
        "postfix_delivery_bounced",
        "postfix_sasl_error",
    ] {
        assert!(
            checked.get(c).copied().unwrap_or(0) > 0,
            "no {c} line checked: {checked:?}"
        );
    }
}

#[test]
fn the_production_log_gives_its_sixteen_submissions_each_once() {
    let r = read_file("pixelpark-postfix-logsums/mail.log.gz");
    assert_eq!(r.lines.len(), 69_861);
    let subs: Vec<_> = r
        .events
        .iter()
        .filter(|e| e.fields.kind == "submission")
        .collect();
    assert_eq!(subs.len(), 16, "{subs:#?}");
    assert!(subs
        .iter()
        .all(|e| e.fields.account == "vmail@uhu-banane.net"));
    // Two of them over IPv6.
    assert_eq!(
        subs.iter()
            .filter(|e| e.fields.src_ip.as_deref().is_some_and(|i| i.contains(':')))
            .count(),
        2
    );
    // amavis's re-injections are not submissions. Messages from <> that
    // Dovecot's LDA delivered are bounces of that mailbox: 11 of the log's
    // from=<> queue ids have a `relay=dovecot` delivery (counted by grep).
    let bounces: Vec<_> = r
        .events
        .iter()
        .filter(|e| e.fields.kind == "bounce")
        .collect();
    assert_eq!(bounces.len(), 11, "{bounces:#?}");
    assert!(bounces
        .iter()
        .all(|e| e.fields.account == "user01.test@uhu-banane.net"));
    let reinjected = r
        .outcome
        .iter()
        .filter(|o| **o == Some(Skip::Unauthenticated))
        .count();
    assert!(reinjected > 300, "{reinjected}");
}

#[test]
fn the_real_daemons_log_reads_as_what_was_done() {
    // What the recorded session did (real-daemons/README.md): alice logs in
    // over IMAP and fails once, bob sends as himself and as dave (one
    // recipient bounces, and Postfix's notification goes to dave), bob's
    // wrong SMTP password, carol and dave refused by the policy server.
    let cfg = MaillogConfig {
        year: 2026,
        ..MaillogConfig::default()
    };
    let clock = cfg.clock(0);
    let mut j = Joiner::new(&cfg);
    let mut events = Vec::new();
    let mut n = 0;
    // Both files, merged by time as replay does.
    let mut all: Vec<(i64, String)> = Vec::new();
    for f in ["dovecot.log", "postfix.log"] {
        for l in std::fs::read_to_string(format!("{DIR}/real-daemons/{f}"))
            .unwrap()
            .lines()
        {
            let ts = credwatch::source::maillog::prefix::split(l, &clock).map_or(0, |p| p.ts);
            all.push((ts, l.to_string()));
        }
    }
    all.sort_by_key(|(ts, _)| *ts);
    for (_, l) in &all {
        n += 1;
        j.feed(l, n, &clock, &mut events);
    }
    j.finish(&mut events);
    let count = |kind: &str, acct: &str, result: Option<&str>| {
        credwatch_testkit::count_log_events(&events, kind, acct, result)
    };
    assert!(count("auth", "alice@example.jp", Some("success")) >= 3);
    assert_eq!(count("auth", "alice@example.jp", Some("failure")), 1);
    // bob's wrong SMTP password: Dovecot's auth line and Postfix's warning
    // are one failure, not two.
    assert_eq!(
        count("auth", "bob@example.jp", Some("failure")),
        1,
        "{events:#?}"
    );
    assert_eq!(count("submission", "bob@example.jp", None), 5);
    let as_dave = events
        .iter()
        .find(|e| {
            e.fields.kind == "submission"
                && e.fields.mail_from.as_deref() == Some("dave@example.jp")
        })
        .expect("bob's message as dave");
    assert_eq!(as_dave.fields.rcpt_count, Some(3));
    assert_eq!(
        as_dave.fields.header_from.as_deref(),
        Some("\"Dave\" <dave@example.jp>")
    );
    assert_eq!(count("bounce", "dave@example.jp", None), 1);
    // The policy server's refusals are no failures.
    assert_eq!(
        count("auth", "carol@example.jp", Some("failure")),
        0,
        "{events:#?}"
    );
    assert_eq!(
        count("auth", "dave@example.jp", Some("failure")),
        0,
        "{events:#?}"
    );
    assert!(
        j.counts
            .skipped
            .get(&Skip::PolicyRefusal)
            .copied()
            .unwrap_or(0)
            >= 4
    );
}
