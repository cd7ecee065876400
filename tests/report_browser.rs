//! `credwatch replay --report` opened in a real browser: Debian's Chromium,
//! headless, offline, through ChromeDriver. The report of the sample day
//! (the demo's day, `credwatch generate`'s defaults) must load without a
//! console error and without one request leaving the page, show every
//! incident with its account and detectors, draw the impossible journeys,
//! filter with its script, and print. It leaves `target/report.png` (the
//! whole page) and `target/report.pdf` (as printed) for a person to look at.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use credwatch_testkit::browser::Browser;
use credwatch_testkit::{credwatch_exe, repo_root};
use serde_json::Value;

/// A proxy that answers nothing and counts who knocked: the browser's only
/// way out.
fn trap() -> (u16, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("a trap port");
    let port = l.local_addr().expect("its address").port();
    let knocks = Arc::new(AtomicU64::new(0));
    let k = knocks.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            k.fetch_add(1, Ordering::SeqCst);
            let mut s = s;
            let mut buf = [0u8; 512];
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let n = s.read(&mut buf).unwrap_or(0);
            eprintln!(
                "trap: the browser tried to leave: {:?}",
                String::from_utf8_lossy(&buf[..n]).lines().next()
            );
        }
    });
    (port, knocks)
}

/// The sample day, replayed with a report: (report path, actions).
fn sample_day_report(dir: &std::path::Path) -> (std::path::PathBuf, Vec<Value>) {
    let exe = credwatch_exe();
    let out = Command::new(&exe)
        .args(["generate", "--out"])
        .arg(dir)
        .output()
        .expect("run credwatch generate");
    assert!(
        out.status.success(),
        "generate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = dir.join("report.html");
    let out = Command::new(&exe)
        .args(["replay", "--threads", "1", "--config"])
        .arg(dir.join("credwatch.toml"))
        .arg("--report")
        .arg(&report)
        .arg(dir.join("events.jsonl"))
        .output()
        .expect("run credwatch replay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "replay failed: {stderr}");
    assert!(
        stderr.contains("report:"),
        "replay did not say where the report is: {stderr}"
    );
    let actions: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("an action"))
        .collect();
    (report, actions)
}

fn wait_ready(b: &Browser) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = b.run("return document.documentElement.getAttribute('data-ready')");
        if let Some(n) = v.as_str().and_then(|s| s.parse().ok()) {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "the page's script never finished"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_sample_days_report_reads_in_a_real_browser_offline() {
    let dir = tempfile::tempdir().expect("a folder");
    let (report, actions) = sample_day_report(dir.path());
    // What the page must show, from the actions themselves.
    let mut incidents: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for a in &actions {
        let d = &a["data"];
        let e = incidents
            .entry(d["incident"].as_str().expect("incident").to_string())
            .or_insert_with(|| {
                (
                    d["account"].as_str().expect("account").to_string(),
                    BTreeSet::new(),
                )
            });
        e.1.insert(d["detector"].as_str().expect("detector").to_string());
    }
    let travel: BTreeSet<&str> = actions
        .iter()
        .filter(|a| a["data"]["detector"] == "impossible_travel")
        .filter_map(|a| a["data"]["incident"].as_str())
        .collect();
    assert!(
        incidents.len() >= 10,
        "the sample day has its attacks: {}",
        incidents.len()
    );
    assert!(!travel.is_empty(), "the sample day has impossible travel");

    let (proxy, knocks) = trap();
    let b = Browser::start(proxy);
    let url = format!("file://{}", report.display());
    // What the browser's own new-tab page loaded (chrome://) is not the
    // report's: the logs start empty at the report.
    b.goto("about:blank");
    b.log("performance");
    b.log("browser");
    b.goto(&url);
    let cards = wait_ready(&b);
    assert_eq!(cards, incidents.len() as u64, "one card per incident");

    // No request left the page: the only one is the file itself.
    let mut urls = Vec::new();
    for e in b.log("performance") {
        let m: Value =
            serde_json::from_str(e["message"].as_str().unwrap_or("{}")).unwrap_or_default();
        if m["message"]["method"] == "Network.requestWillBeSent" {
            urls.push(
                m["message"]["params"]["request"]["url"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            );
        }
    }
    assert!(
        urls.contains(&url),
        "the performance log saw the page itself: {urls:?}"
    );
    let away: Vec<&String> = urls
        .iter()
        .filter(|u| !u.starts_with("file://") && !u.starts_with("data:"))
        .collect();
    assert!(away.is_empty(), "requests left the page: {away:?}");

    // No console message at all: no error, no warning (a blocked fetch
    // or a script error would be one).
    let console = b.log("browser");
    assert!(console.is_empty(), "the console said: {console:?}");

    // Every incident is on the page with its account and detectors.
    let on_page = b.run(
        "return Array.from(document.querySelectorAll('#cards article.card')).map(c => \
         ({id: c.id, account: c.querySelector('.acct').textContent, text: c.textContent}))",
    );
    let on_page: BTreeMap<String, (String, String)> = on_page
        .as_array()
        .expect("cards")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap_or("").to_string(),
                (
                    c["account"].as_str().unwrap_or("").to_string(),
                    c["text"].as_str().unwrap_or("").to_string(),
                ),
            )
        })
        .collect();
    for (id, (account, detectors)) in &incidents {
        let (shown, text) = on_page
            .get(id)
            .unwrap_or_else(|| panic!("incident {id} of {account} is not on the page"));
        assert_eq!(shown, account, "incident {id}");
        for d in detectors {
            assert!(
                text.contains(d.as_str()),
                "incident {id} of {account} does not name {d}"
            );
        }
    }

    // A burst's sources are placed on its card's map.
    for (id, (account, detectors)) in &incidents {
        if detectors.contains("failed_login_burst") {
            let marks = b.run(&format!(
                "return document.getElementById('{id}').querySelectorAll('svg.mini circle.failedfrom').length"
            ));
            assert!(
                marks.as_u64().unwrap_or(0) >= 1,
                "{account}'s failed logins are not on its map"
            );
        }
    }

    // The map draws each impossible journey as a line of real length, and
    // the travel cards draw theirs on their little maps.
    let lines = b.run(
        "return Array.from(document.querySelectorAll('#world path.journey')).map(p => \
         ({len: p.getTotalLength(), w: p.getBoundingClientRect().width}))",
    );
    let lines = lines.as_array().expect("journeys");
    assert!(
        lines.len() >= travel.len(),
        "{} journeys for {} travel incidents",
        lines.len(),
        travel.len()
    );
    for l in lines {
        assert!(
            l["len"].as_f64().unwrap_or(0.0) > 20.0 && l["w"].as_f64().unwrap_or(0.0) > 5.0,
            "a journey drawn too small: {l}"
        );
    }
    for id in &travel {
        let n = b.run(&format!(
            "return document.getElementById('{id}').querySelectorAll('svg.mini path.journey').length"
        ));
        assert!(
            n.as_u64().unwrap_or(0) >= 1,
            "card {id} has no journey on its map"
        );
    }

    // The script filters: impossible travel only, then all again.
    let visible = |b: &Browser| {
        b.run("return document.querySelectorAll('#cards article.card:not([hidden])').length")
            .as_u64()
            .unwrap_or(0)
    };
    b.run(
        "const s = document.querySelector('#filters select[name=detector]'); \
         s.value = 'impossible_travel'; s.dispatchEvent(new Event('input', {bubbles: true}));",
    );
    let travel_cards = incidents
        .values()
        .filter(|(_, d)| d.contains("impossible_travel"))
        .count();
    assert_eq!(visible(&b) as usize, travel_cards);
    b.run(
        "const s = document.querySelector('#filters select[name=detector]'); \
         s.value = ''; s.dispatchEvent(new Event('input', {bubbles: true}));",
    );
    assert_eq!(visible(&b), cards);

    // The console check above can fail: a message is seen when there is one.
    b.run("console.error('credwatch report test probe')");
    let probe = b.log("browser");
    assert!(
        probe.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("test probe"))),
        "the browser log does not carry console messages: {probe:?}"
    );

    // Pictures for a person: the whole page, and the page as printed.
    let height = b
        .run("return document.documentElement.scrollHeight")
        .as_u64()
        .unwrap_or(1600);
    b.set_window(1280, height.clamp(800, 12_000) as u32);
    let png = b.screenshot();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 50_000,
        "a screenshot of {} bytes",
        png.len()
    );
    let target = repo_root().join("target");
    std::fs::write(target.join("report.png"), &png).expect("write target/report.png");
    let pdf = b.print_pdf();
    assert!(
        pdf.starts_with(b"%PDF") && pdf.len() > 20_000,
        "a PDF of {} bytes",
        pdf.len()
    );
    std::fs::write(target.join("report.pdf"), &pdf).expect("write target/report.pdf");

    assert_eq!(
        knocks.load(Ordering::SeqCst),
        0,
        "the browser tried to reach the network"
    );
}

/// A report of hundreds of incidents: the cards beyond the first ones
/// written into the page are built by its script from its data, page by
/// page, and find, filter and link like the written ones.
#[test]
fn the_cards_of_a_big_report_are_built_as_they_are_shown() {
    let dir = tempfile::tempdir().expect("a folder");
    let (_, actions) = sample_day_report(dir.path());
    let collector = credwatch_testkit::report::many_incidents(&actions, 700);
    let total = collector.incidents().len();
    assert!(total >= 700);
    let facts = credwatch::report::Facts {
        source: "many".into(),
        detectors: credwatch::report::detector_facts(collector.incidents()),
        ..Default::default()
    };
    let path = dir.path().join("many.html");
    let mut f = std::fs::File::create(&path).expect("a file");
    collector.write(&facts, None, &mut f).expect("the page");
    drop(f);
    let page = std::fs::read_to_string(&path).expect("the page");
    assert!(
        page.contains("id=\"more-cards\""),
        "the big report has scripted cards"
    );

    let (proxy, knocks) = trap();
    let b = Browser::start(proxy);
    b.goto("about:blank");
    b.log("performance");
    b.log("browser");
    b.goto(&format!("file://{}", path.display()));
    assert_eq!(wait_ready(&b), total as u64, "every incident is counted");

    // The last page: built from the data.
    let pages = total.div_ceil(50);
    for _ in 1..pages {
        b.run("document.querySelector('.pager .next').click()");
    }
    let last = b.run(
        "return Array.from(document.querySelectorAll('#cards article.card')).map(c => \
         ({id: c.id, account: c.querySelector('.acct').textContent, dets: Array.from(c.querySelectorAll('summary code')).map(x => x.textContent), \
           journeys: Array.from(c.querySelectorAll('svg.mini path.journey')).map(p => p.getTotalLength()), story: c.querySelectorAll('ol.story li').length}))",
    );
    let last = last.as_array().expect("cards");
    assert_eq!(
        last.len(),
        total - (pages - 1) * 50,
        "the last page's cards"
    );
    let by_id: BTreeMap<&str, &credwatch::report::Incident> = collector
        .incidents()
        .iter()
        .map(|i| (i.id.as_str(), i))
        .collect();
    for c in last {
        let id = c["id"].as_str().expect("an id");
        let inc = by_id
            .get(id)
            .unwrap_or_else(|| panic!("card {id} is no incident"));
        assert_eq!(c["account"].as_str(), Some(inc.account.as_str()));
        let dets: Vec<&str> = c["dets"]
            .as_array()
            .expect("dets")
            .iter()
            .filter_map(|d| d.as_str())
            .collect();
        assert_eq!(dets, inc.detectors(), "card {id}");
        assert_eq!(
            c["story"].as_u64(),
            Some(inc.findings.len() as u64),
            "card {id}"
        );
        let drawn = c["journeys"].as_array().expect("journeys");
        assert_eq!(drawn.len(), inc.journeys.len(), "card {id}");
        assert!(
            drawn.iter().all(|l| l.as_f64().unwrap_or(0.0) > 10.0),
            "card {id}: {drawn:?}"
        );
    }

    // Found by account, and by a link to it.
    let wanted = &collector.incidents()[total - 3];
    b.run(&format!(
        "const q = document.querySelector('#filters input[name=q]'); q.value = '{}'; \
         q.dispatchEvent(new Event('input', {{bubbles: true}}));",
        wanted.account
    ));
    let found =
        b.run("return Array.from(document.querySelectorAll('#cards article.card')).map(c => c.id)");
    assert_eq!(found, serde_json::json!([wanted.id]));
    b.run(
        "const q = document.querySelector('#filters input[name=q]'); q.value = ''; \
         q.dispatchEvent(new Event('input', {bubbles: true}));",
    );
    b.run(&format!("location.hash = '#{}'", wanted.id));
    std::thread::sleep(Duration::from_millis(200));
    let open = b.run(&format!(
        "const c = document.getElementById('{}'); return c && c.querySelector('details').open",
        wanted.id
    ));
    assert_eq!(
        open,
        serde_json::json!(true),
        "a link opens a scripted card"
    );

    let console = b.log("browser");
    assert!(console.is_empty(), "the console said: {console:?}");
    assert_eq!(
        knocks.load(Ordering::SeqCst),
        0,
        "the browser tried to reach the network"
    );
}
