//! `credwatch demo --format maillog`: the generated day as the log lines
//! Dovecot and Postfix write for it ([`crate::source::maillog::render`]).

use std::io::Write;

use super::Played;
use crate::demo::sample::Line;
use crate::time::Millis;

/// The day as Dovecot's and Postfix's log lines
/// ([`crate::source::maillog::render`]): each event with its lines, and
/// how many events the log stage will make of them (a submission is also
/// an SMTP login, as Postfix logs it), for the demo to wait for. Prints a
/// few lines of the first day, so an operator sees the format they have.
pub(super) fn as_log_lines(
    lines: &[Line],
    show: bool,
    out: &mut dyn Write,
) -> anyhow::Result<(Vec<Played>, u64)> {
    use crate::source::maillog::{render, Joiner, MaillogConfig};
    let limits = crate::source::event::ParseLimits::new(65_536, Millis::MAX / 4);
    let cfg = MaillogConfig::default();
    let clock = cfg.clock(Millis::MAX / 4);
    let mut joiner = Joiner::new(&cfg);
    let mut made = Vec::new();
    let mut result = Vec::with_capacity(lines.len());
    for (n, l) in lines.iter().enumerate() {
        let e = crate::source::event::parse_event(l.json.as_bytes(), &limits)?;
        let mut text = String::new();
        render::lines(&e, n as u64, &mut text);
        for t in text.lines() {
            joiner.feed(t, n as u64, &clock, &mut made);
        }
        result.push((l.clone(), Some(text)));
    }
    joiner.finish(&mut made);
    if show {
        writeln!(
            out,
            "The day as Dovecot and Postfix log it (a few of its lines):"
        )?;
        for (_, t) in result.iter().step_by(997).take(6) {
            if let Some(first) = t.as_deref().and_then(|t| t.lines().next()) {
                writeln!(out, "  {first}")?;
            }
        }
        writeln!(out)?;
    }
    Ok((result, made.len() as u64))
}
