//! The join of a stream's lines ([`Joiner`]): the lines of one message by
//! (host, queue id), the auth process's per-attempt failures with their
//! login process's disconnect (by session) or with Postfix's SASL line (by
//! address), one SMTP login per smtpd session, within bounded time and
//! memory. What it makes is [`LogEvent`]s; what it cannot use, [`Skip`]s.
//! The Dovecot side of the join is in `dovecot_side.rs` (sessions, auth
//! lines waiting for their service's line), the Postfix side in
//! `postfix_side.rs` (smtpd sessions, SASL failures, messages by queue id);
//! this file holds the state, the clock, the bounds and the end.

mod dovecot_side;
mod postfix_side;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::net::IpAddr;

use super::{dovecot, postfix, prefix, Clock, LogCounts, LogEvent, MaillogConfig, Skip};
use crate::source::event::{Fields, Protocol};
use crate::time::{Millis, SECOND};

/// How far apart Postfix's SASL warning may come before Dovecot's auth
/// line of the same attempt (the same second in two files, a shipper's
/// delay) and still be one failure.
const LATE_AUTH_LINE: Millis = 5 * SECOND;

/// An auth-process failure waiting for its service's line.
#[derive(Debug, Clone)]
struct Attempt {
    ts: Millis,
    line: u64,
    user: Box<str>,
    ip: Option<IpAddr>,
    pwhash: Option<Box<str>>,
    session: Option<Box<str>>,
    /// Refused by the policy server, not a wrong password.
    refused: bool,
}

/// A Dovecot login session seen by its auth lines.
#[derive(Debug, Default)]
struct Session {
    waiting: Vec<Attempt>,
    /// Failures already made events (at `pair_secs`).
    emitted: u32,
    refusals: u32,
    since: Millis,
}

/// One queue id's lines.
#[derive(Debug, Default)]
struct Message {
    since: Millis,
    /// The SASL login of the smtpd that queued it.
    sasl: Option<Login>,
    header_from: Option<(Box<str>, u64)>,
    /// The envelope sender was `<>` (a bounce or notification).
    null_sender: bool,
    /// Postfix's own notification for a message an authenticated session
    /// sent: that message's envelope sender.
    notifies: Option<Box<str>>,
    /// The envelope sender, once qmgr logged it.
    from: Option<Box<str>>,
    emitted: bool,
    /// Lines held for it.
    held: Vec<u64>,
}

type Key = (Box<str>, Box<str>);

/// The SASL login on a `client=` line: account, address, mechanism, the
/// line's time and reference.
#[derive(Debug, Clone)]
struct Login {
    user: Box<str>,
    ip: Option<IpAddr>,
    method: Box<str>,
    ts: Millis,
    line: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Session(Key),
    Message(Key),
    Smtpd(Key),
}

/// The join state of one stream of log lines (a replay, or one Kafka
/// partition of log lines).
pub struct Joiner {
    join: Millis,
    pair: Millis,
    max: usize,
    hosted: Vec<String>,
    sessions: HashMap<Key, Session>,
    /// Auth-process failures without a session (Postfix's SASL through
    /// Dovecot), by address, waiting for Postfix's line.
    sasl_waiting: HashMap<Option<IpAddr>, VecDeque<Attempt>>,
    sasl_order: VecDeque<(Millis, Option<IpAddr>)>,
    smtpd: HashMap<Key, Option<Box<str>>>,
    /// Dovecot's `submission-login` logins (its submission service in
    /// front of Postfix), by account and address, for `pair_secs`: the
    /// `client=` line of the message Postfix then queues is the same login,
    /// not a second one.
    submission_logins: HashMap<(Box<str>, IpAddr), Millis>,
    submission_order: VecDeque<(Millis, Box<str>, IpAddr)>,
    /// Postfix's SASL failures that found no Dovecot line to pair with, for
    /// [`LATE_AUTH_LINE`]: Dovecot's line of the same attempt, if it comes
    /// after, is then not a second failure.
    recent_sasl: VecDeque<(Millis, IpAddr, Box<str>)>,
    messages: HashMap<Key, Message>,
    deadlines: BinaryHeap<Reverse<(Millis, Slot)>>,
    /// Lines held, so that a Kafka offset is committed only past them.
    held: BTreeMap<u64, u32>,
    now: Millis,
    pub counts: LogCounts,
}

impl Joiner {
    pub fn new(cfg: &MaillogConfig) -> Joiner {
        Joiner {
            join: cfg.join_secs as Millis * SECOND,
            pair: cfg.pair_secs as Millis * SECOND,
            max: cfg.max_joins.max(1),
            hosted: cfg
                .hosted_domains
                .iter()
                .map(|d| d.trim().trim_end_matches('.').to_lowercase())
                .collect(),
            sessions: HashMap::new(),
            sasl_waiting: HashMap::new(),
            sasl_order: VecDeque::new(),
            smtpd: HashMap::new(),
            submission_logins: HashMap::new(),
            submission_order: VecDeque::new(),
            recent_sasl: VecDeque::new(),
            messages: HashMap::new(),
            deadlines: BinaryHeap::new(),
            held: BTreeMap::new(),
            now: Millis::MIN,
            counts: LogCounts::default(),
        }
    }

    /// The oldest line reference still held for an event to come.
    pub fn oldest_held(&self) -> Option<u64> {
        self.held.keys().next().copied()
    }

    /// The latest log time seen.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Moves the log clock on to `ts` (a quiet stream, by the wall clock):
    /// what waited past its time is made an event or dropped.
    pub fn advance_to(&mut self, ts: Millis, out: &mut Vec<LogEvent>) {
        if ts > self.now {
            self.now = ts;
            self.expire(out);
        }
    }

    /// Messages, sessions and waiting failures held now.
    pub fn holding(&self) -> usize {
        self.sessions.len() + self.messages.len() + self.smtpd.len() + self.sasl_order.len()
    }

    fn hold(&mut self, line: u64) {
        *self.held.entry(line).or_default() += 1;
    }

    fn release(&mut self, line: u64) {
        if let Some(n) = self.held.get_mut(&line) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(&line);
            }
        }
    }

    /// Reads one line (without its newline); its events go to `out`.
    /// `None`: the line was used (or is held for an event to come);
    /// otherwise why it gave nothing.
    pub fn feed(
        &mut self,
        line: &str,
        at: u64,
        clock: &Clock,
        out: &mut Vec<LogEvent>,
    ) -> Option<Skip> {
        self.counts.lines += 1;
        let r = match prefix::split(line, clock) {
            None => Err(Skip::NoTimestamp),
            Some(p) => {
                if p.ts > self.now {
                    self.now = p.ts;
                    self.expire(out);
                }
                self.read(&p, at, out)
            }
        };
        match r {
            Ok(()) => {
                self.counts.used += 1;
                None
            }
            Err(s) => {
                self.counts.skip(s);
                Some(s)
            }
        }
    }

    /// Counts a line that could not even be read (too long).
    pub fn skipped(&mut self, why: Skip) {
        self.counts.lines += 1;
        self.counts.skip(why);
    }

    fn read(
        &mut self,
        p: &prefix::Prefixed<'_>,
        at: u64,
        out: &mut Vec<LogEvent>,
    ) -> Result<(), Skip> {
        if dovecot::is_dovecot(p.program) {
            let fact = dovecot::parse(p.program, p.message)?;
            return self.dovecot(p, fact, at, out);
        }
        if let Some(d) = postfix::daemon(p.program) {
            let fact = postfix::parse(d, p.message)?;
            return self.postfix(p, fact, at, out);
        }
        Err(Skip::OtherProgram)
    }

    /// What waited past its time becomes an event on its own, or is
    /// dropped and counted.
    fn expire(&mut self, out: &mut Vec<LogEvent>) {
        while self
            .recent_sasl
            .front()
            .is_some_and(|(ts, _, _)| *ts + LATE_AUTH_LINE < self.now)
        {
            self.recent_sasl.pop_front();
        }
        while let Some((ts, _, _)) = self.submission_order.front() {
            if *ts + self.pair >= self.now {
                break;
            }
            let (ts, u, ip) = self.submission_order.pop_front().expect("peeked");
            let key = (u, ip);
            if self.submission_logins.get(&key) == Some(&ts) {
                self.submission_logins.remove(&key);
            }
        }
        while let Some((ts, ip)) = self.sasl_order.front().copied() {
            if ts + self.pair > self.now {
                break;
            }
            self.sasl_order.pop_front();
            self.expire_sasl(ts, ip, out);
        }
        while let Some(Reverse((deadline, _))) = self.deadlines.peek() {
            if *deadline > self.now {
                break;
            }
            let Reverse((deadline, slot)) = self.deadlines.pop().expect("peeked");
            self.expire_slot(deadline, slot, false, out);
        }
    }

    fn expire_slot(&mut self, deadline: Millis, slot: Slot, forced: bool, out: &mut Vec<LogEvent>) {
        match slot {
            Slot::Session(k) => {
                let Some(sess) = self.sessions.get_mut(&k) else {
                    return;
                };
                let newest = sess
                    .waiting
                    .iter()
                    .map(|a| a.ts)
                    .max()
                    .unwrap_or(sess.since);
                if !forced && newest + self.pair > deadline {
                    return;
                }
                // The failures go out now; the session is remembered so its
                // disconnect does not count them again.
                let waiting = std::mem::take(&mut sess.waiting);
                sess.emitted += waiting.iter().filter(|a| !a.refused).count() as u32;
                let since = sess.since;
                self.flush_session(
                    Session {
                        waiting,
                        ..Session::default()
                    },
                    None,
                    out,
                );
                if forced || since + self.join <= self.now {
                    self.sessions.remove(&k);
                } else {
                    self.deadlines
                        .push(Reverse((since + self.join, Slot::Session(k))));
                }
            }
            Slot::Message(k) => {
                let Some(m) = self.messages.get(&k) else {
                    return;
                };
                if !forced && m.since + self.join > deadline {
                    return;
                }
                let m = self.messages.remove(&k).expect("present");
                if m.sasl.is_some() && !m.emitted {
                    self.counts.skip(if forced {
                        Skip::TooManyJoins
                    } else {
                        Skip::Incomplete
                    });
                }
                for l in m.held {
                    self.release(l);
                }
            }
            Slot::Smtpd(k) => {
                self.smtpd.remove(&k);
            }
        }
    }

    /// At the cap: the oldest held thing goes.
    fn drop_oldest(&mut self, out: &mut Vec<LogEvent>) {
        if let Some((ts, u, ip)) = self.submission_order.pop_front() {
            let key = (u, ip);
            if self.submission_logins.get(&key) == Some(&ts) {
                self.submission_logins.remove(&key);
            }
            return;
        }
        if let Some((ts, ip)) = self.sasl_order.pop_front() {
            self.expire_sasl(ts, ip, out);
            return;
        }
        while let Some(Reverse((deadline, slot))) = self.deadlines.pop() {
            let present = match &slot {
                Slot::Session(k) => self.sessions.contains_key(k),
                Slot::Message(k) => self.messages.contains_key(k),
                Slot::Smtpd(k) => self.smtpd.contains_key(k),
            };
            if present {
                if matches!(slot, Slot::Session(_)) {
                    self.counts.skip(Skip::TooManyJoins);
                }
                self.expire_slot(deadline, slot, true, out);
                return;
            }
        }
    }

    /// The end of the input: what waits becomes an event on its own; what
    /// cannot is counted as incomplete.
    pub fn finish(&mut self, out: &mut Vec<LogEvent>) {
        while let Some((ts, ip)) = self.sasl_order.pop_front() {
            self.expire_sasl(ts, ip, out);
        }
        let mut slots: Vec<Slot> = self
            .sessions
            .keys()
            .map(|k| Slot::Session(k.clone()))
            .chain(self.messages.keys().map(|k| Slot::Message(k.clone())))
            .collect();
        slots.sort();
        for s in slots {
            match s {
                Slot::Session(k) => {
                    if let Some(sess) = self.sessions.remove(&k) {
                        self.flush_session(sess, None, out);
                    }
                }
                Slot::Message(k) => {
                    if let Some(m) = self.messages.remove(&k) {
                        if m.sasl.is_some() && !m.emitted {
                            self.counts.skip(Skip::Incomplete);
                        }
                        for l in m.held {
                            self.release(l);
                        }
                    }
                }
                Slot::Smtpd(_) => {}
            }
        }
        self.smtpd.clear();
        self.submission_logins.clear();
        self.submission_order.clear();
        self.recent_sasl.clear();
        self.deadlines.clear();
    }
}

/// A delivery by a transport on this machine (`relay=local`, `virtual`,
/// `dovecot`, `private/dovecot-lmtp`, an LMTP socket): the mailbox is
/// hosted here.
fn local_transport(relay: &str) -> bool {
    !relay.contains('[') && !relay.is_empty() && relay != "none"
}

#[allow(clippy::too_many_arguments)]
fn auth(
    ts: Millis,
    user: &str,
    protocol: Protocol,
    ip: Option<IpAddr>,
    result: &'static str,
    mechanism: Option<&str>,
    session: Option<&str>,
    pwhash: Option<&str>,
) -> Fields {
    Fields {
        ts,
        kind: "auth",
        account: user.into(),
        protocol: Some(protocol.as_str()),
        src_ip: ip.map(|i| i.to_string()),
        result: Some(result),
        mechanism: mechanism.map(Into::into),
        pwhash: pwhash.map(Into::into),
        session: session.map(Into::into),
        ..Fields::default()
    }
}

#[cfg(test)]
mod tests;
