//! The Dovecot side of the join: a login process's lines, and the auth
//! process's per-attempt failures waiting for the line that says which
//! service they were (the login process's disconnect by session, or
//! Postfix's SASL warning by address).

use std::net::IpAddr;

use super::{auth, Attempt, Joiner, Key, Session, Slot, LATE_AUTH_LINE};
use crate::source::event::Protocol;
use crate::source::maillog::{dovecot, prefix, LogEvent, Skip, MAX_ATTEMPTS_PER_LINE};
use crate::time::Millis;
use std::cmp::Reverse;

impl Joiner {
    pub(super) fn dovecot(
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
    pub(super) fn wait(&mut self, host: &str, a: Attempt, out: &mut Vec<LogEvent>) {
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
    pub(super) fn flush_session(
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

    /// The first auth-process failure at `ip` still waiting (and of `user`,
    /// when Postfix's line names one).
    pub(super) fn take_sasl_attempt(&mut self, ip: IpAddr, user: Option<&str>) -> Option<Attempt> {
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

    pub(super) fn expire_sasl(&mut self, ts: Millis, ip: Option<IpAddr>, out: &mut Vec<LogEvent>) {
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
}
