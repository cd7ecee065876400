//! The cards beyond [`super::html::HTML_CARDS`]: one JSON array per
//! incident in a `<script type="application/json">` block, which the
//! page's script turns into cards (as text, never markup) when they are
//! shown. Everything is worked out here, so the script only builds
//! elements: the words, the times, the little map's geometry.

use serde_json::{json, Value};

use super::charts::MiniMap;
use super::html::{customer_facts, n, what_was_done, when};
use super::Incident;

/// `[id, account, severity, actions, " detectors ", first seen, story,
/// senders, messages, bounces, sources, customer words, map]`; see
/// `page.js` (`build`), which reads it.
fn item(inc: &Incident, placed: &super::Placed) -> Value {
    let dets = inc.detectors();
    let actions = inc.action_keys();
    let story: Vec<Value> = inc
        .findings
        .iter()
        .map(|f| {
            let (what, why) = what_was_done(f);
            json!([&when(f.ts)[5..16], f.detector, what, why, f.reason])
        })
        .collect();
    let messages: Vec<Value> = inc
        .messages
        .iter()
        .map(|m| {
            json!([
                m.ts.map(|t| when(t)[5..16].to_string()).unwrap_or_default(),
                m.header_from,
                m.mail_from,
                n(m.rcpt_count),
                m.from.as_deref().unwrap_or("unknown")
            ])
        })
        .collect();
    let map = MiniMap::of(inc, placed).map(|m| {
        json!([
            m.view,
            m.r,
            m.paths,
            m.marks
                .iter()
                .map(|(x, y, c)| json!([x, y, c]))
                .collect::<Vec<_>>(),
            m.captions
        ])
    });
    let sources = if inc.sources.is_empty() {
        String::new()
    } else {
        let mut s = inc.sources.iter().cloned().collect::<Vec<_>>().join(", ");
        if inc.sprayer.is_some() {
            s.push_str(" (tried passwords on many accounts)");
        }
        s
    };
    json!([
        inc.id,
        inc.account,
        inc.severity(),
        actions,
        format!(" {} ", dets.join(" ")),
        &when(inc.first_ts())[..16],
        story,
        inc.senders,
        messages,
        inc.bounces.map(n),
        sources,
        customer_facts(inc),
        map
    ])
}

/// The data block of the scripted cards.
pub(super) fn cards(h: &mut String, incidents: &[&Incident], placed: &super::Placed) {
    let items: Vec<Value> = incidents.iter().map(|i| item(i, placed)).collect();
    let text = serde_json::to_string(&items).unwrap_or_else(|_| "[]".into());
    h.push_str("<script type=\"application/json\" id=\"more-cards\">");
    // No "<" at all inside the block: "</script" would end it and "<!--"
    // would change how it is read. "\u003c" is the same JSON string.
    h.push_str(&text.replace('<', "\\u003c"));
    h.push_str("</script>\n");
}
