//! The Postfix side of the join: smtpd sessions (one SMTP login each),
//! SASL failures (paired with Dovecot's auth line of the same attempt),
//! and the lines of one message by (host, queue id): the `client=` line,
//! cleanup's `From:` header, qmgr's envelope, deliveries and bounce
//! notifications.

use super::{auth, local_transport, Joiner, Key, Login, Message, Slot};
use crate::source::event::{Fields, Protocol};
use crate::source::maillog::{postfix, prefix, LogEvent, Skip};
use crate::time::Millis;
use std::cmp::Reverse;

impl Joiner {
    pub(super) fn postfix(
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

    pub(super) fn new_message(&mut self, key: &Key, ts: Millis, out: &mut Vec<LogEvent>) {
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
}
