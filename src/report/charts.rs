//! The report's pictures: the timeline, the world map and each card's
//! little map, as inline SVG. Every picture has its numbers beside it as
//! text (a table or a list), and its colours are the Okabe–Ito palette,
//! which stays apart under the common colour blindnesses.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::html::{esc, n, when};
use super::{map, Collector, Incident, Spot};
use crate::source::event::Kind;
use crate::time::{format_rfc3339, HOUR};

/// Rows of the map's tables at most (the cards hold the rest).
const TABLE_ROWS: usize = 100;

/// Colours of the event kinds (auth, submission, bounce, unlock).
const KIND_COLOURS: [&str; 4] = ["#0072B2", "#E69F00", "#009E73", "#CC79A7"];

/// A detector's colour (Okabe–Ito, then greys).
pub(super) fn colour(detector: &str) -> &'static str {
    match detector {
        "impossible_travel" => "#D55E00",
        "failed_login_burst" => "#0072B2",
        "password_spray" => "#CC79A7",
        "send_volume" => "#E69F00",
        "sender_mismatch" => "#009E73",
        "backscatter" => "#56B4E9",
        "unfamiliar_login" => "#F0E442",
        "slow_guessing" => "#000000",
        "credential_stuffing" => "#999999",
        _ => "#666666",
    }
}

/// Events per hour (stacked by kind) and findings per detector per hour,
/// with the numbers in a table.
pub(super) fn timeline(h: &mut String, c: &Collector, series: &super::Series) {
    let (first, counts) = (series.first, &series.counts[..]);
    h.push_str("<section id=\"timeline\"><h2>Timeline</h2>");
    if counts.is_empty() {
        h.push_str("<p>No events.</p></section>\n");
        return;
    }
    let hours = counts.len();
    // Findings per detector per hour.
    let mut findings: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for inc in c.incidents() {
        for f in &inc.findings {
            if f.action.as_deref() == Some("unlock") {
                continue;
            }
            let i = f.ts.div_euclid(HOUR) - first;
            if (0..hours as i64).contains(&i) {
                findings
                    .entry(&f.detector)
                    .or_insert_with(|| vec![0; hours])[i as usize] += 1;
            }
        }
    }
    // The pictures draw hours, or days when the run is longer than the
    // plot has room for (1,100 units: an hour's bar is at most 40, so an
    // hour's run is one bar, not a wall).
    let bin = if hours <= 1100 {
        1
    } else {
        24 * hours.div_ceil(24 * 1100)
    };
    // Bins of days start at midnight.
    let shift = if bin == 1 {
        0
    } else {
        first.rem_euclid(24) as usize
    };
    let slots = (hours + shift).div_ceil(bin);
    let mut drawn = vec![[0u64; 4]; slots];
    for (i, c) in counts.iter().enumerate() {
        for (t, v) in drawn[(i + shift) / bin].iter_mut().zip(c) {
            *t += v;
        }
    }
    let unit = match bin {
        1 => "hour".to_string(),
        24 => "day".to_string(),
        b => format!("{} days", b / 24),
    };
    let slot_start = |i: usize| (first - shift as i64 + (i * bin) as i64) * HOUR;
    let bar = (1100.0 / slots as f64).clamp(1.0, 40.0);
    let (left, top, plot_h) = (60.0, 10.0, 140.0);
    let width = left + 1100.0_f64.max(bar * slots as f64) + 10.0;
    let max = drawn
        .iter()
        .map(|c| c.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let total: u64 = counts.iter().flatten().sum();
    let _ = write!(
        h,
        "<figure><svg class=\"chart\" viewBox=\"0 0 {width:.0} {:.0}\" role=\"img\" aria-label=\"Events per {unit}, {} {unit}s, at most {} in one\">",
        top + plot_h + 34.0,
        slots,
        n(max)
    );
    let _ = write!(
        h,
        "<line class=\"grid\" x1=\"{left}\" y1=\"{top}\" x2=\"{:.0}\" y2=\"{top}\"/><text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{}</text>\
         <text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">0</text>",
        width - 10.0,
        left - 4.0,
        top + 4.0,
        n(max),
        left - 4.0,
        top + plot_h
    );
    for (i, c) in drawn.iter().enumerate() {
        let x = left + bar * i as f64;
        let mut y = top + plot_h;
        let sum: u64 = c.iter().sum();
        if sum == 0 {
            continue;
        }
        let _ = write!(
            h,
            "<g><title>{} ({unit}): {} event(s): {} auth, {} submission, {} bounce</title>",
            when(slot_start(i)),
            n(sum),
            n(c[0]),
            n(c[1]),
            n(c[2])
        );
        for (k, v) in c.iter().enumerate() {
            if *v == 0 {
                continue;
            }
            let bh = plot_h * *v as f64 / max as f64;
            y -= bh;
            let _ = write!(
                h,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{}\"/>",
                (bar - 0.6).max(0.6),
                KIND_COLOURS[k]
            );
        }
        h.push_str("</g>");
    }
    // Ticks at least 60 units apart, on whole hours or whole days.
    let every = {
        let k = (60.0 / bar).ceil() as usize;
        if bin == 1 && k > 6 {
            k.div_ceil(24) * 24
        } else {
            k.max(1)
        }
    };
    let long = hours > 24 * 365;
    for i in 0..slots {
        let hour = first - shift as i64 + (i * bin) as i64;
        let on_grid = if bin == 1 && every >= 24 {
            hour.rem_euclid(24) == 0 && (hour.div_euclid(24) as usize).is_multiple_of(every / 24)
        } else {
            (hour.div_euclid(bin as i64) as usize).is_multiple_of(every)
        };
        if !on_grid {
            continue;
        }
        let x = left + bar * i as f64;
        let t = format_rfc3339(hour * HOUR);
        let label = if hour.rem_euclid(24) != 0 {
            t[11..16].to_string()
        } else if long {
            t[..10].to_string()
        } else {
            t[5..10].to_string()
        };
        let _ = write!(
            h,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{:.0}\" x2=\"{x:.1}\" y2=\"{:.0}\"/><text x=\"{x:.1}\" y=\"{:.0}\" text-anchor=\"middle\">{label}</text>",
            top + plot_h,
            top + plot_h + 5.0,
            top + plot_h + 18.0
        );
    }
    let _ = write!(
        h,
        "</svg><figcaption>Events per {unit} (UTC), stacked by kind: "
    );
    for (k, kind) in Kind::ALL.iter().enumerate().take(3) {
        let _ = write!(
            h,
            "<span class=\"key\" style=\"background:{}\"></span>{} {} ",
            KIND_COLOURS[k],
            kind.as_str(),
            n(c.hours.total(*kind))
        );
    }
    let _ = write!(h, "({} in all).</figcaption></figure>", n(total));

    // Findings: one row per detector, a mark per hour with findings.
    if !findings.is_empty() {
        let row = 22.0;
        let fh = row * findings.len() as f64 + 24.0;
        let left = 150.0;
        let fwidth = left + 1100.0_f64.max(bar * slots as f64) + 10.0;
        let _ = write!(
            h,
            "<figure><svg class=\"chart\" viewBox=\"0 0 {fwidth:.0} {fh:.0}\" role=\"img\" aria-label=\"Findings per detector per {unit}\">"
        );
        for (r, (det, hourly)) in findings.iter().enumerate() {
            let y = 14.0 + row * r as f64;
            let mut per = vec![0u64; slots];
            for (i, v) in hourly.iter().enumerate() {
                per[(i + shift) / bin] += v;
            }
            let fmax = per.iter().copied().max().unwrap_or(1).max(1);
            let _ = write!(
                h,
                "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{}</text><line class=\"grid\" x1=\"{left}\" y1=\"{y:.0}\" x2=\"{:.0}\" y2=\"{y:.0}\"/>",
                left - 6.0,
                y + 4.0,
                esc(det),
                fwidth - 10.0
            );
            for (i, v) in per.iter().enumerate() {
                if *v == 0 {
                    continue;
                }
                let r = 3.0 + 5.0 * (*v as f64 / fmax as f64).sqrt();
                let _ = write!(
                    h,
                    "<circle cx=\"{:.1}\" cy=\"{y:.0}\" r=\"{r:.1}\" fill=\"{}\" stroke=\"#000\" stroke-width=\".6\"><title>{} ({unit}): {} finding(s) of {}</title></circle>",
                    left + bar * (i as f64 + 0.5),
                    colour(det),
                    when(slot_start(i)),
                    v,
                    esc(det)
                );
            }
        }
        let _ = write!(h, "</svg><figcaption>Findings per detector per {unit}: a bigger mark is more findings in that {unit} (the numbers, hour by hour, are in the table below).</figcaption></figure>");
    }

    // The numbers behind both pictures.
    let dets: Vec<&str> = findings.keys().copied().collect();
    h.push_str("<details><summary>The numbers behind the timeline (hours with events)</summary><table><thead><tr><th>Hour (UTC)</th><th class=\"n\">auth</th><th class=\"n\">submission</th><th class=\"n\">bounce</th>");
    for d in &dets {
        let _ = write!(h, "<th class=\"n\">{}</th>", esc(d));
    }
    h.push_str("</tr></thead><tbody>");
    for (i, c) in counts.iter().enumerate() {
        if c.iter().all(|v| *v == 0) {
            continue;
        }
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>",
            when((first + i as i64) * HOUR),
            n(c[0]),
            n(c[1]),
            n(c[2])
        );
        for d in &dets {
            let _ = write!(h, "<td class=\"n\">{}</td>", findings[d][i]);
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table></details></section>\n");
}

/// A great circle on the world map, with an arrow at its end and a title
/// (a card's map draws its own from [`MiniMap`], its places written beside it).
fn journey_path(h: &mut String, s: &Spot, t: &Spot, title: &str) {
    let _ = write!(
        h,
        "<path class=\"journey\" d=\"{}\"><title>{}</title></path>",
        map::great_circle_path((s.lat, s.lon), (t.lat, t.lon), 48),
        esc(title)
    );
}

/// The class of a place's mark: a login, where a message was sent from,
/// where failed logins came from, a sprayer.
fn mark_class(s: &Spot) -> &'static str {
    match s.what {
        "sent from" => "sentfrom",
        "failed logins from" => "failedfrom",
        "sprayed from" => "sprayerdot",
        _ => "login",
    }
}

/// A place's mark on the world map, with a title.
fn spot_mark(h: &mut String, s: &Spot, r: f64, title: &str) {
    let (x, y) = map::project(s.lat, s.lon);
    let _ = write!(
        h,
        "<circle class=\"{}\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"{r}\"><title>{}</title></circle>",
        mark_class(s),
        esc(title)
    );
}

/// A source's latitude, longitude and place in words.
type Where = (f64, f64, String);

/// Every login place of the incidents, their impossible journeys and the
/// sources that sprayed, on one map, with the same in a table.
pub(super) fn world(h: &mut String, order: &[&Incident], placed: &super::Placed) {
    h.push_str("<section id=\"map\"><h2>Where</h2>");
    // Sprayers: address -> accounts it got into, placed by the GeoIP file.
    let mut sprayers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for inc in order {
        if let Some(s) = &inc.sprayer {
            sprayers.entry(s).or_default().push(&inc.account);
        }
    }
    let sprayed: Vec<(&str, Option<&Where>)> =
        sprayers.keys().map(|ip| (*ip, placed.get(ip))).collect();
    h.push_str("<figure><svg class=\"world\" id=\"world\" viewBox=\"0 0 720 360\" role=\"img\" aria-label=\"World map of the places in incidents\"><use href=\"#land\" class=\"land\"/>");
    // One line per pair of places and one mark per place, however many
    // incidents share them (a month has thousands).
    let mut pairs: BTreeMap<(&str, &str), (&Spot, &Spot, u64)> = BTreeMap::new();
    let mut places: BTreeMap<(&str, &str), (&Spot, u64)> = BTreeMap::new();
    for inc in order {
        for j in &inc.journeys {
            pairs
                .entry((j.from.label.as_str(), j.to.label.as_str()))
                .or_insert((&j.from, &j.to, 0))
                .2 += 1;
        }
        for s in &inc.spots {
            places.entry((s.label.as_str(), s.what)).or_insert((s, 0)).1 += 1;
        }
    }
    // Where failed logins came from (the sprayers have their own mark).
    let failed: Vec<Spot> = order
        .iter()
        .flat_map(|inc| placed.spots(inc))
        .filter(|s| s.what == "failed logins from")
        .collect();
    for s in &failed {
        places.entry((s.label.as_str(), s.what)).or_insert((s, 0)).1 += 1;
    }
    for ((from, to), (s, t, k)) in &pairs {
        let title = format!("impossible journey {from} to {to}: {k} incident(s)");
        journey_path(h, s, t, &title);
    }
    for ((label, what), (s, k)) in &places {
        let r = (3.0 + (*k as f64).sqrt().min(6.0) * 0.8).min(8.0);
        let title = format!("{what}: {label}, {k} time(s) in incidents");
        spot_mark(h, s, (r * 10.0).round() / 10.0, &title);
    }
    for (ip, p) in &sprayed {
        if let Some((lat, lon, label)) = p {
            let (x, y) = map::project(*lat, *lon);
            let _ = write!(
                h,
                "<path class=\"sprayer\" d=\"M{x:.1} {:.1}l5 9h-10z\"><title>sprayed: {} {}</title></path>",
                y - 6.0,
                esc(label),
                esc(ip)
            );
        }
    }
    h.push_str("</svg><figcaption><span class=\"key\" style=\"background:#0072B2;border-radius:6px\"></span>login \
         <span class=\"key\" style=\"background:#E69F00;border-radius:6px\"></span>message sent from \
         <span class=\"key\" style=\"background:#fff;border:2px solid #000;border-radius:6px\"></span>failed logins from \
         <span class=\"key\" style=\"background:#CC79A7\"></span>source that sprayed passwords \
         <span class=\"key\" style=\"background:#D55E00;height:3px\"></span>impossible journey (great circle, arrow at the later login). \
         The world's land is Natural Earth's (public domain).</figcaption></figure>");

    // The same as text: the fastest journeys first, at most TABLE_ROWS.
    let mut all: Vec<(&Incident, &super::Journey)> = order
        .iter()
        .flat_map(|inc| inc.journeys.iter().map(move |j| (*inc, j)))
        .collect();
    all.sort_by(|a, b| b.1.kmh.total_cmp(&a.1.kmh));
    let mut journeys = 0;
    let _ = write!(
        h,
        "<h3>Impossible journeys ({}{})</h3>",
        n(all.len() as u64),
        if all.len() > TABLE_ROWS {
            format!("; the {TABLE_ROWS} fastest here, the rest on their cards")
        } else {
            String::new()
        }
    );
    for (inc, j) in all.iter().take(TABLE_ROWS) {
        if journeys == 0 {
            h.push_str("<table><thead><tr><th>Account</th><th>From</th><th>To</th><th class=\"n\">km</th><th class=\"n\">minutes</th><th class=\"n\">km/h</th></tr></thead><tbody>");
        }
        journeys += 1;
        let _ = write!(
            h,
            "<tr><td><a href=\"#{}\">{}</a></td><td>{} ({})</td><td>{} ({})</td><td class=\"n\">{}</td><td class=\"n\">{:.0}</td><td class=\"n\">{}</td></tr>",
            esc(&inc.id),
            esc(&inc.account),
            esc(&j.from.label),
            esc(&j.from.ip),
            esc(&j.to.label),
            esc(&j.to.ip),
            n(j.km.round() as u64),
            j.minutes,
            n(j.kmh.round() as u64)
        );
    }
    if journeys == 0 {
        h.push_str("<p>None.</p>");
    } else {
        h.push_str("</tbody></table>");
    }
    h.push_str("<h3>Sources that sprayed passwords</h3>");
    if sprayed.is_empty() {
        h.push_str("<p>None.</p>");
    } else {
        h.push_str("<table><thead><tr><th>Source</th><th>Place</th><th>Accounts logged into from it</th></tr></thead><tbody>");
        for (ip, p) in sprayed.iter().take(TABLE_ROWS) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(ip),
                p.as_ref()
                    .map(|p| esc(&p.2))
                    .unwrap_or_else(|| "not in the GeoIP database".into()),
                esc(&sprayers[ip].join(", "))
            );
        }
        h.push_str("</tbody></table>");
        if sprayed.len() > TABLE_ROWS {
            let _ = write!(
                h,
                "<p>And {} more sources; their accounts' cards name them.</p>",
                n((sprayed.len() - TABLE_ROWS) as u64)
            );
        }
    }
    h.push_str("</section>\n");
}

/// A card's little map, worked out once for the HTML card and the
/// script's card alike.
pub(super) struct MiniMap {
    /// The view box: x, y, width, height (whole units).
    pub view: [i64; 4],
    /// Radius of a place's mark.
    pub r: f64,
    /// Each journey's path data (whole units, as the map is small).
    pub paths: Vec<String>,
    /// Each place's mark: x, y, class.
    pub marks: Vec<(f64, f64, &'static str)>,
    /// Each place in words.
    pub captions: Vec<String>,
}

impl MiniMap {
    pub(super) fn of(inc: &Incident, placed: &super::Placed) -> Option<MiniMap> {
        let sources = placed.spots(inc);
        let spots: Vec<&Spot> = inc.spots.iter().chain(&sources).collect();
        if spots.is_empty() {
            return None;
        }
        let mut pts: Vec<(f64, f64)> = spots.iter().map(|s| map::project(s.lat, s.lon)).collect();
        for j in &inc.journeys {
            pts.extend(
                map::great_circle((j.from.lat, j.from.lon), (j.to.lat, j.to.lon), 16)
                    .into_iter()
                    .map(|(lat, lon)| map::project(lat, lon)),
            );
        }
        let (x, y, w, h) = map::view_box(&pts, 60.0);
        Some(MiniMap {
            view: [x.floor(), y.floor(), w.ceil(), h.ceil()].map(|v| v as i64),
            r: ((w / 120.0).clamp(0.6, 4.0) * 10.0).round() / 10.0,
            paths: inc
                .journeys
                .iter()
                .map(|j| map::great_circle_path((j.from.lat, j.from.lon), (j.to.lat, j.to.lon), 12))
                .collect(),
            marks: spots
                .iter()
                .map(|s| {
                    let (x, y) = map::project(s.lat, s.lon);
                    (
                        (x * 10.0).round() / 10.0,
                        (y * 10.0).round() / 10.0,
                        mark_class(s),
                    )
                })
                .collect(),
            captions: spots
                .iter()
                .map(|s| {
                    format!(
                        "{} {} ({}){}",
                        s.what,
                        s.label,
                        s.ip,
                        s.ts.map(|t| format!(", {}", when(t))).unwrap_or_default()
                    )
                })
                .collect(),
        })
    }
}

/// A card's little map: its places and journeys, zoomed to them, and the
/// places in words beside it.
pub(super) fn mini_map(h: &mut String, inc: &Incident, placed: &super::Placed) {
    let Some(m) = MiniMap::of(inc, placed) else {
        return;
    };
    let [x, y, w, hgt] = m.view;
    let _ = write!(
        h,
        "<figure><svg class=\"mini\" viewBox=\"{x} {y} {w} {hgt}\" role=\"img\" aria-label=\"Map of the places listed below it\"><use href=\"#land\" class=\"land\"/>"
    );
    for d in &m.paths {
        let _ = write!(h, "<path class=\"journey\" d=\"{d}\"/>");
    }
    for (cx, cy, class) in &m.marks {
        let _ = write!(
            h,
            "<circle class=\"{class}\" cx=\"{cx}\" cy=\"{cy}\" r=\"{}\"/>",
            m.r
        );
    }
    h.push_str("</svg><figcaption><ul>");
    for c in &m.captions {
        let _ = write!(h, "<li>{}</li>", esc(c));
    }
    h.push_str("</ul></figcaption></figure>");
}
