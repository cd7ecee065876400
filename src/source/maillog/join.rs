//! The join of a stream's lines ([`Joiner`]): the lines of one message by
//! (host, queue id), the auth process's per-attempt failures with their
//! login process's disconnect (by session) or with Postfix's SASL line (by
//! address), one SMTP login per smtpd session, within bounded time and
//! memory. What it makes is [`LogEvent`]s; what it cannot use, [`Skip`]s.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::net::IpAddr;

use super::{
    dovecot, postfix, prefix, Clock, LogCounts, LogEvent, MaillogConfig, Skip,
    MAX_ATTEMPTS_PER_LINE,
};
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

    fn dovecot(
        &mut self,
        p: &prefix::Prefixed<'_>,
        fact: dovecot::Fact<'_>,
        at: u64,
        out: &mut Vec<LogEvent>,
    ) -> Result<(), Skip> {
        use dovecot::Fact as F;
        match fact {
            F::Login {
                protocol,
                user,
                mechanism,
                rip,
                session,
            } => {
                let ip = rip.ok_or(Skip::NoAddress)?;
                if let Some(s) = session {
                    if let Some(sess) = self.sessions.remove(&(p.host.into(), s.into())) {
                        self.flush_session(sess, Some(protocol), out);
                    }
                }
                if protocol == Protocol::Smtp {
                    if self.holding() >= self.max {
                        self.drop_oldest(out);
                    }
                    let u: Box<str> = user.to_lowercase().into();
                    self.submission_logins.insert((u.clone(), ip), p.ts);
                    self.submission_order.push_back((p.ts, u, ip));
                }
                out.push(LogEvent {
                    fields: auth(
                        p.ts,
                        user,
                        protocol,
                        Some(ip),
                        "success",
                        mechanism,
                        session,
                        None,
                    ),
                    lines: vec![at],
                });
                Ok(())
            }
            F::LoginFailed {
                protocol,
                user,
                attempts,
                mechanism,
                rip,
                session,
            } => {
                let mut counted = 0;
                let mut refusals = 0;
                let mut lines = vec![at];
                if let Some(s) = session {
                    if let Some(sess) = self.sessions.remove(&(p.host.into(), s.into())) {
                        counted = sess.emitted
                            + sess.waiting.iter().filter(|a| !a.refused).count() as u32;
                        refusals = sess.refusals;
                        lines.extend(sess.waiting.iter().map(|a| a.line));
                        self.flush_session(sess, Some(protocol), out);
                    }
                }
                // A line cannot make more than MAX_ATTEMPTS_PER_LINE events (a
                // login process allows a handful per connection; a forged
                // line must not make millions).
                let more = attempts
                    .min(MAX_ATTEMPTS_PER_LINE)
                    .saturating_sub(counted + refusals);
                if more == 0 {
                    return if refusals > 0 {
                        Err(Skip::PolicyRefusal)
                    } else {
                        Ok(())
                    };
                }
                let user = user.ok_or(Skip::NoUser)?;
                let ip = rip.ok_or(Skip::NoAddress)?;
                for _ in 0..more {
                    out.push(LogEvent {
                        fields: auth(
                            p.ts,
                            user,
                            protocol,
                            Some(ip),
                            "failure",
                            mechanism,
                            session,
                            None,
                        ),
                        lines: lines.clone(),
                    });
                }
                Ok(())
            }
            F::PassdbFailure {
                user,
                ip,
                session,
                pwhash,
            } => {
                let a = Attempt {
                    ts: p.ts,
                    line: at,
                    user: user.into(),
                    ip,
                    pwhash: pwhash.map(Into::into),
                    session: session.map(Into::into),
                    refused: false,
                };
                self.wait(p.host, a, out);
                Ok(())
            }
            F::PolicyRefusal { user, ip, session } => {
                let a = Attempt {
                    ts: p.ts,
                    line: at,
                    user: user.into(),
                    ip,
                    pwhash: None,
                    session: session.map(Into::into),
                    refused: true,
                };
                self.wait(p.host, a, out);
                Err(Skip::PolicyRefusal)
            }
        }
    }

    /// An auth-process line waits for the line of its service: by session
    /// (a login process), or by address (Postfix's SASL).
    fn wait(&mut self, host: &str, a: Attempt, out: &mut Vec<LogEvent>) {
        if a.session.is_none() {
            // Postfix's warning for this attempt came first: it is counted.
            let user = a.user.to_lowercase();
            let early = self.recent_sasl.iter().position(|(ts, ip, u)| {
                Some(*ip) == a.ip
                    && **u == *user
                    && *ts + LATE_AUTH_LINE >= a.ts
                    && *ts <= a.ts + LATE_AUTH_LINE
            });
            if let Some(i) = early {
                self.recent_sasl.remove(i);
                return;
            }
        }
        if self.holding() >= self.max {
            self.drop_oldest(out);
        }
        if !a.refused {
            self.hold(a.line);
        }
        match a.session.clone() {
            Some(s) => {
                let key: Key = (host.into(), s);
                let now = a.ts;
                let sess = self.sessions.entry(key.clone()).or_insert_with(|| Session {
                    since: now,
                    ..Session::default()
                });
                if sess.waiting.is_empty() && sess.emitted == 0 && sess.refusals == 0 {
                    sess.since = now;
                }
                if a.refused {
                    sess.refusals += 1;
                } else {
                    sess.waiting.push(a);
                }
                self.deadlines
                    .push(Reverse((now + self.pair, Slot::Session(key))));
            }
            None => {
                self.sasl_order.push_back((a.ts, a.ip));
                self.sasl_waiting.entry(a.ip).or_default().push_back(a);
            }
        }
    }

    /// A session's waiting failures become events (the service known from
    /// its login process's line, or not).
    fn flush_session(
        &mut self,
        sess: Session,
        protocol: Option<Protocol>,
        out: &mut Vec<LogEvent>,
    ) {
        for a in sess.waiting {
            self.release(a.line);
            if a.refused {
                continue;
            }
            let Some(ip) = a.ip else {
                self.counts.skip(Skip::NoAddress);
                continue;
            };
            out.push(LogEvent {
                fields: auth(
                    a.ts,
                    &a.user,
                    protocol.unwrap_or(Protocol::Other),
                    Some(ip),
                    "failure",
                    None,
                    a.session.as_deref(),
                    a.pwhash.as_deref(),
                ),
                lines: vec![a.line],
            });
        }
    }

    fn postfix(
        &mut self,
        p: &prefix::Prefixed<'_>,
        fact: postfix::Fact<'_>,
        at: u64,
        out: &mut Vec<LogEvent>,
    ) -> Result<(), Skip> {
        use postfix::Fact as F;
        let host: Box<str> = p.host.into();
        let smtpd_key = || -> Key { (p.host.into(), format!("{}[{}]", p.program, p.pid).into()) };
        match fact {
            F::Connect => {
                let k = smtpd_key();
                self.smtpd.remove(&k);
                Err(Skip::NotUsed)
            }
            F::Disconnect { auth_ok } => {
                let seen = self.smtpd.remove(&smtpd_key()).flatten().is_some();
                // A login that queued nothing: Postfix logs no user for it.
                if auth_ok > 0 && !seen {
                    Err(Skip::NoUser)
                } else {
                    Err(Skip::NotUsed)
                }
            }
            F::SaslFailed {
                ip,
                mechanism,
                user,
            } => {
                // Dovecot's auth line for the same attempt, if it came.
                let paired = self.take_sasl_attempt(ip, user);
                let (user, pwhash, mut lines) = match &paired {
                    Some(a) if a.refused => return Err(Skip::PolicyRefusal),
                    Some(a) => (Some(&*a.user), a.pwhash.as_deref(), vec![a.line]),
                    None => (user, None, vec![]),
                };
                let user = user.ok_or(Skip::NoUser)?;
                if paired.is_none() {
                    // Dovecot's line may still come (the same second, given
                    // after Postfix's file, or shipped later): it is then
                    // this attempt, not another.
                    self.recent_sasl
                        .push_back((p.ts, ip, user.to_lowercase().into()));
                    if self.recent_sasl.len() > self.max {
                        self.recent_sasl.pop_front();
                    }
                }
                lines.push(at);
                out.push(LogEvent {
                    fields: auth(
                        p.ts,
                        user,
                        Protocol::Smtp,
                        Some(ip),
                        "failure",
                        Some(mechanism),
                        None,
                        pwhash,
                    ),
                    lines,
                });
                if let Some(a) = paired {
                    self.release(a.line);
                }
                Ok(())
            }
            F::Client { qid, ip, sasl } => {
                let Some((method, user)) = sasl else {
                    return Err(Skip::Unauthenticated);
                };
                let ip = ip.ok_or(Skip::NoAddress)?;
                // One login per smtpd session, however many messages; and
                // none when Dovecot's submission service logged it already.
                let k = smtpd_key();
                let via_dovecot = self
                    .submission_logins
                    .get(&(user.to_lowercase().into(), ip))
                    .is_some_and(|t| *t + self.pair >= p.ts);
                if via_dovecot {
                    self.smtpd.insert(k.clone(), Some(user.into()));
                } else if self.smtpd.get(&k).and_then(|u| u.as_deref()) != Some(user) {
                    if self.holding() >= self.max {
                        self.drop_oldest(out);
                    }
                    self.smtpd.insert(k.clone(), Some(user.into()));
                    self.deadlines
                        .push(Reverse((p.ts + self.join, Slot::Smtpd(k))));
                    out.push(LogEvent {
                        fields: auth(
                            p.ts,
                            user,
                            Protocol::Smtp,
                            Some(ip),
                            "success",
                            Some(method),
                            None,
                            None,
                        ),
                        lines: vec![at],
                    });
                }
                let key: Key = (host, qid.into());
                self.new_message(&key, p.ts, out);
                self.hold(at);
                let m = self.messages.get_mut(&key).expect("just inserted");
                m.sasl = Some(Login {
                    user: user.into(),
                    ip: Some(ip),
                    method: method.into(),
                    ts: p.ts,
                    line: at,
                });
                m.held.push(at);
                Ok(())
            }
            F::HeaderFrom { qid, header } => {
                let key: Key = (host, qid.into());
                match self.messages.get_mut(&key) {
                    Some(m) if m.sasl.is_some() && !m.emitted => {
                        m.header_from = Some((header.into(), at));
                        m.held.push(at);
                        self.hold(at);
                        Ok(())
                    }
                    _ => Err(Skip::Unauthenticated),
                }
            }
            F::Envelope { qid, from, nrcpt } => {
                let key: Key = (host, qid.into());
                if from.is_empty() {
                    self.new_message(&key, p.ts, out);
                    let m = self.messages.get_mut(&key).expect("just inserted");
                    m.null_sender = true;
                    m.held.push(at);
                    self.hold(at);
                    return Ok(());
                }
                let Some(m) = self.messages.get_mut(&key) else {
                    return Err(Skip::Unauthenticated);
                };
                let Some(Login {
                    user,
                    ip,
                    method,
                    ts,
                    line: client_line,
                }) = m.sasl.clone()
                else {
                    return Err(Skip::Unauthenticated);
                };
                if m.emitted {
                    return Err(Skip::NotUsed);
                }
                m.emitted = true;
                m.from = Some(from.into());
                let mut lines = vec![client_line];
                let header = m.header_from.take().map(|(h, l)| {
                    lines.push(l);
                    h
                });
                lines.push(at);
                let held = std::mem::take(&mut m.held);
                let mut f = Fields {
                    ts,
                    kind: "submission",
                    account: user.into(),
                    src_ip: ip.map(|i| i.to_string()),
                    mechanism: Some(method.into()),
                    mail_from: Some(from.into()),
                    rcpt_count: Some(nrcpt.into()),
                    queue_id: Some(qid.into()),
                    ..Fields::default()
                };
                f.header_from = header.map(Into::into);
                out.push(LogEvent { fields: f, lines });
                for l in held {
                    self.release(l);
                }
                Ok(())
            }
            F::Notification { qid, new_qid } => {
                let from = self
                    .messages
                    .get(&(host.clone(), qid.into()))
                    .filter(|m| m.sasl.is_some())
                    .and_then(|m| m.from.clone());
                let Some(from) = from else {
                    return Err(Skip::Unauthenticated);
                };
                let key: Key = (host, new_qid.into());
                self.new_message(&key, p.ts, out);
                self.messages.get_mut(&key).expect("just inserted").notifies = Some(from);
                Ok(())
            }
            F::Delivery {
                qid,
                to,
                relay,
                status,
            } => {
                let key: Key = (host, qid.into());
                let Some(m) = self.messages.get(&key) else {
                    return Err(Skip::NotUsed);
                };
                if !m.null_sender || status != "sent" {
                    return Err(Skip::NotUsed);
                }
                let hosted = if self.hosted.is_empty() {
                    local_transport(relay)
                        || m.notifies
                            .as_deref()
                            .is_some_and(|f| f.eq_ignore_ascii_case(to))
                } else {
                    let domain = to.rsplit_once('@').map_or("", |(_, d)| d);
                    self.hosted.iter().any(|h| h.eq_ignore_ascii_case(domain))
                };
                if !hosted {
                    return Err(Skip::NotHosted);
                }
                let mut lines = m.held.clone();
                lines.push(at);
                out.push(LogEvent {
                    fields: Fields {
                        ts: p.ts,
                        kind: "bounce",
                        account: to.into(),
                        queue_id: Some(qid.into()),
                        ..Fields::default()
                    },
                    lines,
                });
                Ok(())
            }
            F::Refused { qid } | F::Removed { qid } => {
                match self.messages.remove(&(host, qid.into())) {
                    Some(m) => {
                        if m.sasl.is_some() && !m.emitted {
                            self.counts.skip(Skip::Incomplete);
                        }
                        for l in m.held {
                            self.release(l);
                        }
                        Ok(())
                    }
                    None => Err(Skip::NotUsed),
                }
            }
        }
    }

    fn new_message(&mut self, key: &Key, ts: Millis, out: &mut Vec<LogEvent>) {
        if self.messages.contains_key(key) {
            return;
        }
        if self.holding() >= self.max {
            self.drop_oldest(out);
        }
        self.messages.insert(
            key.clone(),
            Message {
                since: ts,
                ..Message::default()
            },
        );
        self.deadlines
            .push(Reverse((ts + self.join, Slot::Message(key.clone()))));
    }

    /// The first auth-process failure at `ip` still waiting (and of `user`,
    /// when Postfix's line names one).
    fn take_sasl_attempt(&mut self, ip: IpAddr, user: Option<&str>) -> Option<Attempt> {
        let q = self.sasl_waiting.get_mut(&Some(ip))?;
        let i = q.iter().position(|a| {
            user.is_none_or(|u| u.eq_ignore_ascii_case(&a.user)) && a.ts + self.pair >= self.now
        })?;
        let a = q.remove(i)?;
        if q.is_empty() {
            self.sasl_waiting.remove(&Some(ip));
        }
        Some(a)
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

    fn expire_sasl(&mut self, ts: Millis, ip: Option<IpAddr>, out: &mut Vec<LogEvent>) {
        let Some(q) = self.sasl_waiting.get_mut(&ip) else {
            return;
        };
        // The oldest waiting at this address is the one this entry is for
        // (unless a Postfix line took it already).
        let Some(a) = q.front().filter(|a| a.ts <= ts).cloned() else {
            return;
        };
        q.pop_front();
        if q.is_empty() {
            self.sasl_waiting.remove(&ip);
        }
        if a.refused {
            return;
        }
        self.release(a.line);
        // An auth client without a login session is an MTA's SASL.
        match a.ip {
            Some(ip) => out.push(LogEvent {
                fields: auth(
                    a.ts,
                    &a.user,
                    Protocol::Smtp,
                    Some(ip),
                    "failure",
                    None,
                    None,
                    a.pwhash.as_deref(),
                ),
                lines: vec![a.line],
            }),
            None => self.counts.skip(Skip::NoAddress),
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
mod tests {
    use super::*;

    fn joiner(max: usize) -> Joiner {
        Joiner::new(&MaillogConfig {
            max_joins: max,
            hosted_domains: vec!["example.jp".into()],
            ..MaillogConfig::default()
        })
    }

    fn clock() -> Clock {
        MaillogConfig::default().clock(crate::time::parse_rfc3339("2026-12-02T00:00:00Z").unwrap())
    }

    fn feed_all(j: &mut Joiner, lines: &[&str]) -> Vec<LogEvent> {
        let clock = clock();
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            j.feed(l, i as u64 + 1, &clock, &mut out);
        }
        out
    }

    const CLIENT: &str = "Dec 01 10:00:00 mail postfix/submission/smtpd[7]: 5741C9B84F8: client=unknown[203.0.113.9], sasl_method=PLAIN, sasl_username=bob@example.jp";
    const HEADER: &str = "Dec 01 10:00:00 mail postfix/cleanup[8]: 5741C9B84F8: info: header From: <carol@example.jp> from unknown[203.0.113.9]; from=<carol@example.jp> to=<x@remote.example> proto=ESMTP helo=<c>";
    const QMGR: &str = "Dec 01 10:00:01 mail postfix/qmgr[9]: 5741C9B84F8: from=<carol@example.jp>, size=415, nrcpt=7 (queue active)";

    #[test]
    fn a_submission_holds_its_lines_until_its_envelope_comes() {
        let mut j = joiner(100);
        let out = feed_all(&mut j, &[CLIENT, HEADER]);
        // The login is known at once; the message waits for qmgr.
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].fields.result, Some("success"));
        assert_eq!(j.oldest_held(), Some(1));
        let clock = clock();
        let mut out = Vec::new();
        j.feed(QMGR, 3, &clock, &mut out);
        assert_eq!(out.len(), 1);
        let f = &out[0].fields;
        assert_eq!(
            (f.kind, &*f.account, f.rcpt_count),
            ("submission", "bob@example.jp", Some(7))
        );
        assert_eq!(f.header_from.as_deref(), Some("<carol@example.jp>"));
        assert_eq!(out[0].lines, vec![1, 2, 3]);
        assert_eq!(j.oldest_held(), None, "nothing held once the event is made");
    }

    #[test]
    fn lines_that_never_complete_are_dropped_and_counted_within_the_bounds() {
        // A flood of queue ids whose envelope never comes: at most
        // max_joins are held, the rest are dropped and counted.
        let mut j = joiner(50);
        let lines: Vec<String> = (0..1000)
            .map(|i| format!("Dec 01 10:00:00 mail postfix/smtpd[{i}]: A{i:09X}: client=unknown[203.0.113.9], sasl_method=PLAIN, sasl_username=u{i}@example.jp"))
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        feed_all(&mut j, &refs);
        assert!(j.holding() <= 50, "{}", j.holding());
        assert!(
            j.counts.skipped[&Skip::TooManyJoins] >= 900,
            "{:?}",
            j.counts.skipped
        );
        // An hour of log time later, the rest are incomplete, and no line
        // is held any more.
        let mut out = Vec::new();
        j.advance_to(j.now() + 3600 * 1000 + 1, &mut out);
        assert_eq!(j.oldest_held(), None);
        assert!(
            j.counts
                .skipped
                .get(&Skip::Incomplete)
                .copied()
                .unwrap_or(0)
                > 0
        );
    }

    #[test]
    fn dovecots_auth_line_and_postfixs_warning_are_one_failure_with_the_hash() {
        let mut j = joiner(100);
        let out = feed_all(&mut j, &[
            "Dec 01 10:00:00 auth: Info: passwd-file(bob@example.jp,203.0.113.9): Password mismatch (SHA1 of given password: 3546d6)",
            "Dec 01 10:00:02 mail postfix/submission/smtpd[7]: warning: unknown[203.0.113.9]: SASL PLAIN authentication failed: (reason unavailable), sasl_username=bob@example.jp",
        ]);
        assert_eq!(out.len(), 1, "{out:?}");
        let f = &out[0].fields;
        assert_eq!(
            (f.result, f.protocol, f.pwhash.as_deref()),
            (Some("failure"), Some("smtp"), Some("3546d6"))
        );
        assert_eq!(j.oldest_held(), None);
        // Alone, each is a failure too (Postfix's without a hash; Dovecot's
        // once pair_secs pass).
        let mut j = joiner(100);
        let mut out = feed_all(&mut j, &["Dec 01 10:00:00 auth: Info: passwd-file(bob@example.jp,203.0.113.9): Password mismatch (SHA1 of given password: 3546d6)"]);
        assert!(out.is_empty());
        j.advance_to(j.now() + 61_000, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].fields.pwhash.as_deref(), Some("3546d6"));
        // Postfix's warning first (the same second, its file given first):
        // still one failure.
        let mut j = joiner(100);
        let mut out = feed_all(&mut j, &[
            "Dec 01 10:00:00 mail postfix/submission/smtpd[7]: warning: unknown[203.0.113.9]: SASL PLAIN authentication failed: (reason unavailable), sasl_username=bob@example.jp",
            "Dec 01 10:00:00 auth: Info: passwd-file(bob@example.jp,203.0.113.9): Password mismatch (SHA1 of given password: 3546d6)",
        ]);
        j.advance_to(j.now() + 61_000, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(j.oldest_held(), None);
    }

    #[test]
    fn a_disconnect_does_not_count_again_what_the_auth_lines_counted() {
        let mut j = joiner(100);
        let out = feed_all(&mut j, &[
            "Dec 01 10:00:00 auth: Info: passwd-file(erin@example.jp,198.51.100.7,<S1>): Password mismatch (SHA1 of given password: 000001)",
            "Dec 01 10:00:01 auth: Info: passwd-file(erin@example.jp,198.51.100.7,<S1>): Password mismatch (SHA1 of given password: 000002)",
            "Dec 01 10:00:03 imap-login: Info: Disconnected: Aborted login by logging out (auth failed, 3 attempts in 3 secs): user=<erin@example.jp>, method=PLAIN, rip=198.51.100.7, lip=10.0.0.1, session=<S1>",
        ]);
        // Three attempts: two with their hash, one more from the disconnect.
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(out.iter().all(|e| e.fields.protocol == Some("imap")));
        assert_eq!(out.iter().filter(|e| e.fields.pwhash.is_some()).count(), 2);
        // Late disconnect: the auth lines went out at pair_secs; the
        // disconnect adds only what they did not count.
        let mut j = joiner(100);
        let mut out = feed_all(&mut j, &["Dec 01 10:00:00 auth: Info: passwd-file(erin@example.jp,198.51.100.7,<S2>): Password mismatch"]);
        j.advance_to(j.now() + 61_000, &mut out);
        assert_eq!(out.len(), 1);
        let clock = clock();
        j.feed("Dec 01 10:03:00 imap-login: Info: Disconnected: Inactivity (auth failed, 1 attempts in 180 secs): user=<erin@example.jp>, method=PLAIN, rip=198.51.100.7, lip=10.0.0.1, session=<S2>", 2, &clock, &mut out);
        assert_eq!(out.len(), 1, "counted once: {out:?}");
    }

    #[test]
    fn a_login_that_queued_nothing_is_counted_as_without_a_user() {
        let mut j = joiner(100);
        let out = feed_all(&mut j, &[
            "Dec 01 10:00:00 mail postfix/submission/smtpd[7]: connect from unknown[203.0.113.9]",
            "Dec 01 10:00:05 mail postfix/submission/smtpd[7]: disconnect from unknown[203.0.113.9] ehlo=1 auth=1 quit=1 commands=3",
            "Dec 01 10:01:00 mail postfix/submission/smtpd[7]: connect from unknown[203.0.113.9]",
            CLIENT,
            "Dec 01 10:01:05 mail postfix/submission/smtpd[7]: disconnect from unknown[203.0.113.9] ehlo=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=6",
        ]);
        assert_eq!(out.len(), 1, "the client= line's login: {out:?}");
        assert_eq!(j.counts.skipped[&Skip::NoUser], 1, "{:?}", j.counts);
    }

    #[test]
    fn a_policy_refusal_is_no_failure() {
        let mut j = joiner(100);
        let out = feed_all(&mut j, &[
            "Dec 01 10:00:00 auth: Info: policy(carol@example.jp,127.0.0.1): Authentication failure due to policy server refusal: locked",
            "Dec 01 10:00:02 mail postfix/submission/smtpd[7]: warning: localhost[127.0.0.1]: SASL PLAIN authentication failed: locked, sasl_username=carol@example.jp",
            "Dec 01 10:00:04 auth: Info: policy(carol@example.jp,127.0.0.1,<S3>): Authentication failure due to policy server refusal: locked",
            "Dec 01 10:00:06 imap-login: Info: Disconnected: Aborted login by logging out (auth failed, 1 attempts in 2 secs): user=<carol@example.jp>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, secured, session=<S3>",
        ]);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(j.counts.skipped[&Skip::PolicyRefusal], 4);
    }

    #[test]
    fn a_header_cannot_fake_the_envelope_or_another_message() {
        // The From: header names another queue id and origin; the message's
        // own envelope still decides.
        let mut j = joiner(100);
        let out = feed_all(&mut j, &[
            CLIENT,
            "Dec 01 10:00:00 mail postfix/cleanup[8]: 5741C9B84F8: info: header From: x from y[1.1.1.1]; from=<a@b> 9999999999: from=<z@z>, size=1, nrcpt=900 from unknown[203.0.113.9]; from=<bob@example.jp> to=<x@remote.example> proto=ESMTP helo=<c>",
            "Dec 01 10:00:01 mail postfix/qmgr[9]: 5741C9B84F8: from=<bob@example.jp>, size=415, nrcpt=1 (queue active)",
        ]);
        let sub = out.iter().find(|e| e.fields.kind == "submission").unwrap();
        assert_eq!(sub.fields.rcpt_count, Some(1));
        assert_eq!(sub.fields.mail_from.as_deref(), Some("bob@example.jp"));
    }

    #[test]
    fn bounces_count_only_for_hosted_mailboxes() {
        let mut j = joiner(100);
        let out = feed_all(&mut j, &[
            "Dec 01 10:00:00 mail postfix/smtpd[1]: AAAAA11111: client=mx.remote.example[198.51.100.25]",
            "Dec 01 10:00:00 mail postfix/qmgr[9]: AAAAA11111: from=<>, size=4096, nrcpt=1 (queue active)",
            "Dec 01 10:00:01 mail postfix/smtp[3]: AAAAA11111: to=<dave@example.jp>, relay=mx[10.0.0.5]:25, delay=0.1, delays=0/0/0/0, dsn=2.0.0, status=sent (250 ok)",
            "Dec 01 10:00:02 mail postfix/smtpd[1]: BBBBB22222: client=mx.remote.example[198.51.100.25]",
            "Dec 01 10:00:02 mail postfix/qmgr[9]: BBBBB22222: from=<>, size=4096, nrcpt=1 (queue active)",
            "Dec 01 10:00:03 mail postfix/smtp[3]: BBBBB22222: to=<someone@elsewhere.example>, relay=mx[10.0.0.6]:25, delay=0.1, delays=0/0/0/0, dsn=2.0.0, status=sent (250 ok)",
        ]);
        let bounces: Vec<_> = out.iter().filter(|e| e.fields.kind == "bounce").collect();
        assert_eq!(bounces.len(), 1);
        assert_eq!(bounces[0].fields.account, "dave@example.jp");
        assert_eq!(j.counts.skipped[&Skip::NotHosted], 1);
    }
}
