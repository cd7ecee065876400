//! The report page: the summary and the incident cards; the charts and the
//! world map are in [`super::charts`]. Everything is text first: every
//! number a picture shows is also written out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::{charts, map, Collector, Facts, Incident};
use crate::detect::thousands;
use crate::geo::GeoIp;
use crate::source::event::Kind;
use crate::time::{format_rfc3339, human_duration, Millis};

const CSS: &str = include_str!("page.css");
const JS: &str = include_str!("page.js");

/// Cards open by default up to this many incidents; beyond, they start
/// collapsed (the page of a month stays quick to scroll).
const OPEN_UP_TO: usize = 30;

/// Cards written into the page as HTML (it reads without a script); the
/// rest are data the script turns into cards as they are shown, a third
/// of the size (a month of a large platform has tens of thousands).
pub(super) const HTML_CARDS: usize = 300;

/// HTML-escapes text for an element or a quoted attribute.
pub(super) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// `2026-11-05 09:42 UTC`.
pub(super) fn when(ms: Millis) -> String {
    let t = format_rfc3339(ms);
    format!("{} {} UTC", &t[..10], &t[11..16])
}

pub(super) fn n(v: u64) -> String {
    thousands(v)
}

/// What each detector means, in words a support desk can read to a
/// customer.
fn for_the_customer(detector: &str) -> &'static str {
    match detector {
        "impossible_travel" => "Your mailbox was signed into from two places too far apart for one person to travel between in the time between the two sign-ins. One of them was very probably not you.",
        "failed_login_burst" => "Many wrong passwords were tried on your mailbox within a few minutes: someone was trying to guess its password.",
        "password_spray" => "Your mailbox was signed into from an address that was, at the same time, trying passwords on many other mailboxes. Your password was probably guessed or leaked.",
        "send_volume" => "Your mailbox sent far more mail than it usually does. This is how a stolen mailbox is used to send spam.",
        "sender_mismatch" => "Mail was sent from your mailbox in the name of addresses that are not yours. This is how a stolen mailbox is used to send spam in other people's names.",
        "backscatter" => "Many bounces came back for mail your address did not send: someone elsewhere is sending mail in your name. Your mailbox itself may be safe.",
        "unfamiliar_login" => "Your mailbox was signed into from a network and country it has never been used from before.",
        "slow_guessing" => "Wrong passwords have been tried on your mailbox slowly, over days, to avoid being noticed.",
        "credential_stuffing" => "Your mailbox was signed into from a network that was trying leaked passwords on many mailboxes. Your password may have leaked from another website.",
        "canary" => "A trap address that only an attacker would use was involved with your mailbox.",
        _ => "credwatch found something unusual about your mailbox.",
    }
}

/// The whole page.
pub fn render(c: &Collector, facts: &Facts, geo: Option<&GeoIp>) -> String {
    let incidents = c.incidents();
    // Cards in order of their first finding; the page's script re-sorts.
    let mut order: Vec<&Incident> = incidents.iter().collect();
    order.sort_by(|a, b| a.first_ts().cmp(&b.first_ts()).then(a.id.cmp(&b.id)));
    let mut h = String::with_capacity(64 * 1024 + incidents.len() * 700);
    let title = if facts.source.is_empty() {
        "credwatch report".to_string()
    } else {
        format!("credwatch report: {}", facts.source)
    };
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\
         <title>{}</title><style>{CSS}</style></head><body>\n",
        esc(&title)
    );
    // The land once, for the world map and every card's little map.
    let _ = writeln!(
        h,
        "<svg width=\"0\" height=\"0\" style=\"position:absolute\" aria-hidden=\"true\"><defs>\
         <path id=\"land\" d=\"{}\"/>\
         <marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"8\" refY=\"5\" markerWidth=\"5\" markerHeight=\"5\" orient=\"auto-start-reverse\"><path d=\"M0 0L10 5L0 10z\" fill=\"#D55E00\"/></marker>\
         </defs></svg>",
        map::LAND.trim()
    );
    let series = c.hours.series();
    header(&mut h, &series, facts, &title);
    h.push_str("<main>\n");
    summary(&mut h, c, facts, &order, &series);
    charts::timeline(&mut h, c, &series);
    let placed = super::Placed::look_up(incidents, geo);
    charts::world(&mut h, &order, &placed);
    cards(&mut h, &order, &placed);
    h.push_str("</main>\n<script>");
    h.push_str(JS);
    h.push_str("</script>\n</body></html>\n");
    h
}

fn header(h: &mut String, series: &super::Series, facts: &Facts, title: &str) {
    let (first, counts) = (series.first, &series.counts);
    let period = if counts.is_empty() {
        "no events".to_string()
    } else {
        let start = first * crate::time::HOUR;
        let end = (first + counts.len() as i64) * crate::time::HOUR;
        format!(
            "{} to {} ({})",
            when(start),
            when(end),
            human_duration(end - start)
        )
    };
    let _ = writeln!(
        h,
        "<header><h1>{}</h1><p>Events from <b>{}</b>. Written {}{}. All times are UTC.</p>\
         <nav class=\"noprint\"><a href=\"#summary\">Summary</a><a href=\"#timeline\">Timeline</a>\
         <a href=\"#map\">Map</a><a href=\"#incidents\">Incidents</a></nav></header>",
        esc(title),
        esc(&period),
        when(facts.written_at),
        facts
            .elapsed_secs
            .map(|s| format!("; the run took {s:.1} s"))
            .unwrap_or_default()
    );
}

fn summary(
    h: &mut String,
    c: &Collector,
    facts: &Facts,
    order: &[&Incident],
    series: &super::Series,
) {
    let events: u64 = Kind::ALL.iter().map(|k| c.hours.total(*k)).sum();
    let locked = order.iter().filter(|i| i.locked()).count() as u64;
    let alert_only: Vec<&&Incident> = order.iter().filter(|i| !i.locked()).collect();
    h.push_str("<section id=\"summary\"><h2>Summary</h2>\n<dl class=\"figures\">");
    let mut fig = |label: &str, value: String| {
        let _ = write!(h, "<div><dt>{label}</dt><dd>{value}</dd></div>");
    };
    fig("Events judged", n(events));
    if facts.lines > 0 {
        fig("Lines read", n(facts.lines));
    }
    let rejected: u64 = facts.rejects.iter().map(|r| r.1).sum();
    fig("Lines rejected", n(rejected));
    if let Some(a) = facts.accounts_seen {
        fig("Accounts seen", n(a));
    }
    fig("Incidents", n(order.len() as u64));
    fig("Accounts locked", n(locked));
    fig("Alerts, never locked", n(alert_only.len() as u64));
    h.push_str("</dl>\n");

    // Events by kind.
    h.push_str("<h3>Events by kind</h3><table><thead><tr><th>Kind</th><th class=\"n\">Events</th></tr></thead><tbody>");
    for k in Kind::ALL {
        let t = c.hours.total(k);
        if t > 0 || k != Kind::Unlock {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
                k.as_str(),
                n(t)
            );
        }
    }
    h.push_str("</tbody></table>");
    if !facts.rejects.is_empty() {
        h.push_str("<p>Rejected lines by reason: ");
        let parts: Vec<String> = facts
            .rejects
            .iter()
            .map(|(r, v)| format!("<code>{}</code> {}", esc(r), n(*v)))
            .collect();
        h.push_str(&parts.join(", "));
        h.push_str(".</p>");
    }
    if c.unreadable > 0 {
        let _ = write!(
            h,
            "<p>{} action(s) could not be read and are not on this page.</p>",
            n(c.unreadable)
        );
    }
    if series.outside > 0 {
        let _ = write!(
            h,
            "<p>{} event(s) lay outside the busiest 400 days of the run and are left out of the timeline (they are counted above).</p>",
            n(series.outside)
        );
    }

    // Per detector, with what dry run changed.
    let mut would_lock: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut held: BTreeMap<&str, u64> = BTreeMap::new();
    for inc in order {
        for f in &inc.findings {
            match f.downgraded_by.as_deref() {
                Some("dry_run") => {
                    would_lock
                        .entry(f.detector.as_str())
                        .or_default()
                        .insert(inc.account.as_str());
                }
                Some(other) => *held.entry(other).or_default() += 1,
                None => {}
            }
        }
    }
    h.push_str(
        "<h3>Detectors</h3><table><thead><tr><th>Detector</th><th>Mode</th>\
         <th class=\"n\">Findings</th><th class=\"n\">Locks</th><th class=\"n\">Alerts</th>\
         <th class=\"n\">Joined an open incident</th><th class=\"n\">Would have locked without dry run</th>\
         </tr></thead><tbody>",
    );
    for d in &facts.detectors {
        let _ = write!(
            h,
            "<tr><td><span class=\"key\" style=\"background:{}\"></span><code>{}</code></td><td>{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            charts::colour(&d.name),
            esc(&d.name),
            if d.dry_run { "dry run" } else { "locks" },
            n(d.findings),
            n(d.locks),
            n(d.alerts),
            n(d.joined),
            n(would_lock.get(d.name.as_str()).map_or(0, |s| s.len() as u64)),
        );
    }
    h.push_str("</tbody></table>\n<h3>What dry run would have changed</h3>");
    if would_lock.is_empty() {
        let dry: Vec<&str> = facts
            .detectors
            .iter()
            .filter(|d| d.dry_run)
            .map(|d| d.name.as_str())
            .collect();
        if dry.is_empty() {
            h.push_str("<p>No detector ran in dry run: every lock above was sent.</p>");
        } else {
            let _ = write!(
                h,
                "<p>{} ran in dry run and would not have locked any account.</p>",
                dry.iter()
                    .map(|d| format!("<code>{}</code>", esc(d)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    } else {
        h.push_str("<p>Without dry run, these accounts would have been locked:</p><ul>");
        for (det, accounts) in &would_lock {
            let _ = write!(
                h,
                "<li><code>{}</code>: {} account(s): {}</li>",
                esc(det),
                accounts.len(),
                list_accounts(order, accounts.iter().copied(), 50)
            );
        }
        h.push_str("</ul>");
    }
    if !held.is_empty() {
        let parts: Vec<String> = held
            .iter()
            .map(|(why, k)| {
                let why = match *why {
                    "protected" => "the account is protected (policy.protected_accounts)",
                    "breaker" => "the lock-storm breaker was open",
                    other => other,
                };
                format!("{} because {why}", n(*k))
            })
            .collect();
        let _ = write!(
            h,
            "<p>Locks sent as alerts: {}.</p>",
            esc(&parts.join("; "))
        );
    }

    h.push_str("<h3>False-positive candidates</h3>");
    if alert_only.is_empty() {
        h.push_str("<p>None: every incident ended in a lock.</p>");
    } else {
        let _ = write!(
            h,
            "<p>{} account(s) were alerted on and never locked. Most alerts are right (a customer whose address others forge is alerted, not locked); these are the ones to read first when deciding what to trust.</p><p>{}</p>",
            n(alert_only.len() as u64),
            list_accounts(order, alert_only.iter().map(|i| i.account.as_str()), 200)
        );
    }

    h.push_str("<h3>Lock-storm breaker</h3><p>");
    match (facts.breaker_opened, facts.breaker_open) {
        (Some(0), _) => h.push_str("The breaker never opened: no detector locked so many accounts at once that its locks were suspended."),
        (Some(k), open) => {
            let _ = write!(
                h,
                "The breaker opened {} time(s): a detector locked so many accounts at once that its automatic locks were suspended and sent as alerts.{}",
                n(k),
                if open == Some(true) { " It was still open at the end of the run." } else { " It was closed at the end of the run." }
            );
        }
        (None, Some(open)) => h.push_str(if open {
            "At the end of the run the breaker was open: automatic locks of at least one detector were suspended."
        } else {
            "At the end of the run the breaker was closed."
        }),
        (None, None) => h.push_str("Not known for this run."),
    }
    h.push_str("</p></section>\n");
}

/// Links to the cards of some accounts, at most `max` of them.
fn list_accounts<'a>(
    order: &[&Incident],
    accounts: impl Iterator<Item = &'a str>,
    max: usize,
) -> String {
    let all: Vec<&str> = accounts.collect();
    let mut out: Vec<String> = all
        .iter()
        .take(max)
        .map(|a| match order.iter().find(|i| i.account == *a) {
            Some(i) => format!("<a href=\"#{}\">{}</a>", esc(&i.id), esc(a)),
            None => esc(a),
        })
        .collect();
    if all.len() > max {
        out.push(format!(
            "and {} more (filter the incidents below)",
            n((all.len() - max) as u64)
        ));
    }
    out.join(", ")
}

fn cards(h: &mut String, order: &[&Incident], placed: &super::Placed) {
    let _ = write!(
        h,
        "<section id=\"incidents\"><h2>Incidents ({})</h2>\
         <p>One card per incident: an account's findings from its first until it was unlocked. Locked incidents have a dark orange edge and the word LOCKED, alerts a blue edge.</p>",
        n(order.len() as u64)
    );
    // Filters and pager: shown by the script (they do nothing without it).
    let mut dets: BTreeSet<&str> = BTreeSet::new();
    for i in order {
        dets.extend(i.detectors());
    }
    glossary(h, &dets);
    h.push_str("<form id=\"filters\" hidden><label>Detector<select name=\"detector\"><option value=\"\">all</option>");
    for d in &dets {
        let _ = write!(h, "<option value=\"{0}\">{0}</option>", esc(d));
    }
    h.push_str(
        "</select></label><label>Severity<select name=\"severity\"><option value=\"\">all</option>\
         <option>critical</option><option>high</option><option>medium</option><option>low</option></select></label>\
         <label>Action<select name=\"action\"><option value=\"\">all</option><option value=\"lock\">locked</option>\
         <option value=\"alert-only\">alerts, never locked</option><option value=\"dry-run\">would have locked (dry run)</option>\
         <option value=\"unlock\">unlocked</option></select></label>\
         <label>Sort<select name=\"sort\"><option value=\"time\">oldest first</option><option value=\"newest\">newest first</option>\
         <option value=\"severity\">severity</option><option value=\"account\">account</option></select></label>\
         <label>Account<input name=\"q\" type=\"search\" placeholder=\"part of an address\"></label></form>\n",
    );
    let pager = "<div class=\"pager\" hidden><button type=\"button\" class=\"prev\">\u{2190} Previous</button><span class=\"status\" role=\"status\"></span><button type=\"button\" class=\"next\">Next \u{2192}</button></div>\n";
    h.push_str(pager);
    h.push_str("<div id=\"cards\" class=\"cards\">\n");
    let open = order.len() <= OPEN_UP_TO;
    let (written, scripted) = order.split_at(order.len().min(HTML_CARDS));
    for inc in written {
        card(h, inc, open, placed);
    }
    h.push_str("</div>\n");
    if !scripted.is_empty() {
        let _ = write!(
            h,
            "<p class=\"noprint\">The first {} cards are written into this page; the script builds the other {} as the pages, filters and sorting show them (their data is below, in the page). Without JavaScript, the summary, timeline and map above count every incident.</p>",
            n(written.len() as u64),
            n(scripted.len() as u64)
        );
        super::more::cards(h, scripted, placed);
    }
    h.push_str(pager);
    h.push_str("</section>\n");
}

fn card(h: &mut String, inc: &Incident, open: bool, placed: &super::Placed) {
    // Kept small: a month of a large platform has thousands of cards. The
    // script reads the filters' keys from data-d (detectors), data-s
    // (severity) and data-a (what was done); times are UTC (the header says
    // so) and the cards come in time order.
    let dets = inc.detectors();
    let actions = inc.action_keys();
    let sev = inc.severity();
    let _ = write!(
        h,
        "<article class=\"card{}\" id=\"{}\" data-d=\" {} \" data-s=\"{sev}\" data-a=\"{}\"><details{}><summary>",
        if inc.locked() { " locked" } else { "" },
        esc(&inc.id),
        esc(&dets.join(" ")),
        actions,
        if open { " open" } else { "" },
    );
    h.push_str(if inc.locked() {
        "<b class=\"badge lock\">Locked</b>"
    } else {
        "<b class=\"badge alert\">Alert</b>"
    });
    if inc.dry_run_lock() {
        h.push_str("<b class=\"badge dry\">Dry run: would lock</b>");
    }
    if inc.unlocked() {
        h.push_str("<b class=\"badge unlock\">Unlocked</b>");
    }
    let _ = write!(
        h,
        "<b class=\"acct\">{}</b><i class=\"sev {sev}\">{sev}</i>",
        esc(&inc.account)
    );
    for d in &dets {
        let _ = write!(h, "<code>{}</code>", esc(d));
    }
    let _ = write!(
        h,
        "<time>{}</time></summary><div class=\"body\"><div><h4>What happened</h4><ol class=\"story\">",
        &when(inc.first_ts())[..16]
    );
    for f in &inc.findings {
        let (what, why) = what_was_done(f);
        let _ = write!(
            h,
            "<li><time>{}</time> <code>{}</code> <b>{what}</b>{why}: {}</li>",
            &when(f.ts)[5..16],
            esc(&f.detector),
            esc(&f.reason)
        );
    }
    h.push_str("</ol>");
    if !inc.messages.is_empty() || !inc.senders.is_empty() {
        h.push_str("<h4>Messages sent</h4>");
        if !inc.senders.is_empty() {
            let _ = write!(
                h,
                "<p>Sent as {} address(es) it does not own: {}.</p>",
                inc.senders.len(),
                esc(&inc.senders.iter().cloned().collect::<Vec<_>>().join(", "))
            );
        }
        if !inc.messages.is_empty() {
            h.push_str("<table><tr><th>When</th><th>From (header)</th><th>Envelope sender</th><th class=\"n\">Recipients</th><th>Sent from</th></tr>");
            for m in &inc.messages {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                    m.ts.map(|t| when(t)[5..16].to_string()).unwrap_or_default(),
                    esc(&m.header_from),
                    esc(&m.mail_from),
                    n(m.rcpt_count),
                    esc(m.from.as_deref().unwrap_or("unknown"))
                );
            }
            h.push_str("</table>");
        }
    }
    if let Some(b) = inc.bounces {
        let _ = write!(
            h,
            "<h4>Bounces</h4><p>Up to {} bounce(s) came back in an hour.</p>",
            n(b)
        );
    }
    if !inc.sources.is_empty() {
        let _ = write!(
            h,
            "<h4>Sources</h4><p>{}{}</p>",
            esc(&inc.sources.iter().cloned().collect::<Vec<_>>().join(", ")),
            if inc.sprayer.is_some() {
                " (tried passwords on many accounts)"
            } else {
                ""
            }
        );
    }
    // For the customer: this incident's own facts; what each detector
    // means is said once, in the section's glossary, linked from here.
    // For the customer: what each finding means, then this incident's own
    // facts (the scripted cards link to the meanings instead: they are
    // said once, in the section's glossary).
    h.push_str("<h4>For the customer</h4><div class=\"customer\">");
    for d in &dets {
        let _ = write!(h, "<p>{}</p>", for_the_customer(d));
    }
    let facts = customer_facts(inc);
    if !facts.is_empty() {
        let _ = write!(h, "<p>{}</p>", esc(facts.trim_end()));
    }
    h.push_str("</div></div>");
    charts::mini_map(h, inc, placed);
    h.push_str("</div></details></article>\n");
}

/// What a finding did, in a word, and why a lock was an alert.
pub(super) fn what_was_done(f: &super::Finding) -> (&'static str, &'static str) {
    match (f.action.as_deref(), f.downgraded_by.as_deref()) {
        (Some("lock"), _) => ("locked", ""),
        (Some("unlock"), _) => ("unlocked", ""),
        (Some("alert"), Some("dry_run")) => ("alert", " (dry run: a lock)"),
        (Some("alert"), Some("breaker")) => ("alert", " (a lock held by the breaker)"),
        (Some("alert"), Some("protected")) => ("alert", " (a lock: protected account)"),
        (Some("alert"), _) => ("alert", ""),
        _ => ("found", ""),
    }
}

/// This incident's own facts, in words for the customer.
pub(super) fn customer_facts(inc: &Incident) -> String {
    let mut o = String::new();
    for j in &inc.journeys {
        let _ = write!(
            o,
            "The sign-in from {} at {} came {:.0} minutes after one from {}, {} km away ({} km/h). ",
            j.to.label,
            j.to.ts.map(when).unwrap_or_default(),
            j.minutes,
            j.from.label,
            n(j.km.round() as u64),
            n(j.kmh.round() as u64)
        );
    }
    o
}

/// What each detector means, for the customer: said once, linked from
/// every card.
fn glossary(h: &mut String, dets: &BTreeSet<&str>) {
    if dets.is_empty() {
        return;
    }
    h.push_str("<h3>What each finding means, in words for the customer</h3><dl class=\"means\">");
    for d in dets {
        let _ = write!(
            h,
            "<dt id=\"means-{0}\"><code>{0}</code></dt><dd>{1}</dd>",
            esc(d),
            for_the_customer(d)
        );
    }
    h.push_str("</dl>");
}
