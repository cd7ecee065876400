//! What a Postfix line says (Postfix 2.x to 3.9): SMTP AUTH failures,
//! the lines of one message joined by queue id (smtpd's `client=` with
//! the SASL login, cleanup's logged `From:` header, qmgr's envelope,
//! deliveries, bounce notifications), and smtpd's session bounds.
//! Formats: `docs/maillog.md`.

use std::net::IpAddr;

use super::Skip;
use crate::source::event::parse_ip;

/// One fact of a Postfix line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact<'a> {
    /// `connect from host[ip]`: a new smtpd session.
    Connect,
    /// `disconnect from host[ip] … auth=N[/M] …`: how many AUTH commands
    /// succeeded (`auth=1`: one of one; `auth=0/2`: none of two).
    Disconnect { auth_ok: u32 },
    /// `warning: host[ip]: SASL LOGIN authentication failed: reason[,
    /// sasl_username=user]` (the user only since 3.6.12 / 3.7.8).
    SaslFailed {
        ip: IpAddr,
        mechanism: &'a str,
        user: Option<&'a str>,
    },
    /// `QID: client=host[ip][, sasl_method=M, sasl_username=U]…`: a queue
    /// file opened for a client, with its SASL login if it had one.
    Client {
        qid: &'a str,
        ip: Option<IpAddr>,
        sasl: Option<(&'a str, &'a str)>,
    },
    /// cleanup's `QID: info: header From: … from host[ip]; from=<…> …`.
    HeaderFrom { qid: &'a str, header: &'a str },
    /// qmgr's `QID: from=<sender>, size=N, nrcpt=N (queue active)`.
    Envelope {
        qid: &'a str,
        from: &'a str,
        nrcpt: u32,
    },
    /// A delivery agent's `QID: to=<rcpt>, relay=…, status=…`.
    Delivery {
        qid: &'a str,
        to: &'a str,
        relay: &'a str,
        status: &'a str,
    },
    /// bounce's `QID: sender non-delivery notification: NEWQID`.
    Notification { qid: &'a str, new_qid: &'a str },
    /// `QID: reject: …` / `QID: discard: …`: the message will not go out.
    Refused { qid: &'a str },
    /// qmgr's `QID: removed`.
    Removed { qid: &'a str },
}

/// Postfix's daemon name from a program name (`postfix/submission/smtpd`,
/// `postfix-incoming/smtpd`, `postfix/10025/smtpd` → `smtpd`), or `None`
/// for another program.
pub fn daemon(program: &str) -> Option<&str> {
    if !program.starts_with("postfix") {
        return None;
    }
    Some(program.rsplit('/').next().unwrap_or(program))
}

/// A queue id: short hex (`5270320179`) or long (`4PbCZy4PWKz3tBr`).
fn queue_id(s: &str) -> Option<(&str, &str)> {
    let (qid, rest) = s.split_once(": ")?;
    (qid.len() >= 5
        && qid.len() <= 20
        && qid.bytes().all(|c| c.is_ascii_alphanumeric())
        && qid != "NOQUEUE")
        .then_some((qid, rest))
}

/// `host[ip]` or `host[ip]:port` at the start of `s`; the address and
/// what follows.
fn client(s: &str) -> Option<(Option<IpAddr>, &str)> {
    let open = s.find('[')?;
    if s[..open].contains(' ') {
        return None;
    }
    let close = open + s[open..].find(']')?;
    let ip = parse_ip(&s[open + 1..close]);
    let mut rest = &s[close + 1..];
    if let Some(p) = rest
        .strip_prefix(':')
        .filter(|p| p.starts_with(|c: char| c.is_ascii_digit()))
    {
        rest = p.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    Some((ip, rest))
}

/// Reads one Postfix message of `daemon`; `Err` says why it gives nothing.
pub fn parse<'a>(daemon: &str, message: &'a str) -> Result<Fact<'a>, Skip> {
    match daemon {
        "smtpd" => smtpd(message),
        "cleanup" => {
            let (qid, rest) = queue_id(message).ok_or(Skip::NotUsed)?;
            if let Some(h) = rest
                .strip_prefix("info: header From: ")
                .or_else(|| rest.strip_prefix("warning: header From: "))
            {
                // The header is the sender's text and may itself hold
                // " from x[y]; from=<": the real origin is the last one.
                let cut = h.rfind("; from=<").ok_or(Skip::NotUsed)?;
                let head = &h[..cut];
                let origin = head.rfind(" from ").ok_or(Skip::NotUsed)?;
                return Ok(Fact::HeaderFrom {
                    qid,
                    header: head[..origin].trim(),
                });
            }
            refused(qid, rest)
        }
        "qmgr" => {
            let (qid, rest) = queue_id(message).ok_or(Skip::NotUsed)?;
            if rest == "removed" {
                return Ok(Fact::Removed { qid });
            }
            let Some(f) = rest.strip_prefix("from=<") else {
                return Err(Skip::NotUsed);
            };
            let (from, tail) = f.rsplit_once(">, size=").ok_or(Skip::NotUsed)?;
            let nrcpt = tail
                .split(", ")
                .find_map(|x| x.strip_prefix("nrcpt="))
                .and_then(|n| n.split(' ').next()?.parse().ok())
                .ok_or(Skip::NotUsed)?;
            Ok(Fact::Envelope { qid, from, nrcpt })
        }
        "bounce" => {
            let (qid, rest) = queue_id(message).ok_or(Skip::NotUsed)?;
            for what in [
                "sender non-delivery notification: ",
                "postmaster non-delivery notification: ",
            ] {
                if let Some(n) = rest.strip_prefix(what) {
                    return Ok(Fact::Notification {
                        qid,
                        new_qid: n.trim(),
                    });
                }
            }
            Err(Skip::NotUsed)
        }
        "smtp" | "lmtp" | "local" | "virtual" | "pipe" | "error" | "retry" | "discard" => {
            let (qid, rest) = queue_id(message).ok_or(Skip::NotUsed)?;
            let Some(t) = rest.strip_prefix("to=<") else {
                return Err(Skip::NotUsed);
            };
            let (to, tail) = t.split_once(">, ").ok_or(Skip::NotUsed)?;
            let field = |k: &str| {
                tail.split(", ")
                    .find_map(|x| x.strip_prefix(k))
                    .map(|v| v.split(' ').next().unwrap_or(v))
            };
            let relay = field("relay=").unwrap_or("");
            let status = field("status=").ok_or(Skip::NotUsed)?;
            Ok(Fact::Delivery {
                qid,
                to,
                relay,
                status,
            })
        }
        _ => Err(Skip::NotUsed),
    }
}

fn refused<'a>(qid: &'a str, rest: &str) -> Result<Fact<'a>, Skip> {
    if rest.starts_with("reject: ") || rest.starts_with("discard: ") {
        Ok(Fact::Refused { qid })
    } else {
        Err(Skip::NotUsed)
    }
}

fn smtpd(message: &str) -> Result<Fact<'_>, Skip> {
    if message.starts_with("connect from ") {
        return Ok(Fact::Connect);
    }
    if message.starts_with("disconnect from ") {
        let auth_ok = message
            .split(' ')
            .find_map(|w| w.strip_prefix("auth="))
            .and_then(|v| v.split('/').next()?.parse().ok())
            .unwrap_or(0);
        return Ok(Fact::Disconnect { auth_ok });
    }
    if let Some(w) = message.strip_prefix("warning: ") {
        let Some((ip, rest)) = client(w) else {
            return Err(Skip::NotUsed);
        };
        let Some(sasl) = rest.strip_prefix(": SASL ") else {
            return Err(Skip::NotUsed);
        };
        let (mechanism, outcome) = sasl.split_once(' ').ok_or(Skip::NotUsed)?;
        if outcome.starts_with("authentication aborted") {
            return Err(Skip::NotCredential);
        }
        let Some(reason) = outcome.strip_prefix("authentication failed:") else {
            return Err(Skip::NotUsed);
        };
        let ip = ip.ok_or(Skip::NoAddress)?;
        // The server's reason comes first; the client's user name last.
        let (reason, user) = match reason.split_once(", sasl_username=") {
            Some((r, u)) => (r, Some(u)),
            None => (reason, None),
        };
        const SERVER_SIDE: [&str; 4] = [
            "Connection lost to authentication server",
            "Invalid authentication mechanism",
            "Invalid base64 data",
            "authentication server",
        ];
        if SERVER_SIDE.iter().any(|p| reason.contains(p)) {
            return Err(Skip::NotCredential);
        }
        return Ok(Fact::SaslFailed {
            ip,
            mechanism,
            user: user.filter(|u| !u.is_empty() && *u != "(unavailable)"),
        });
    }
    let (qid, rest) = queue_id(message).ok_or(Skip::NotUsed)?;
    if let Some(c) = rest.strip_prefix("client=") {
        let (ip, tail) = client(c).ok_or(Skip::NotUsed)?;
        let sasl = tail.strip_prefix(", sasl_method=").and_then(|t| {
            let (method, u) = t.split_once(", sasl_username=")?;
            // Later elements: sasl_sender=, orig_queue_id=, orig_client=.
            let user = [", sasl_sender=", ", orig_queue_id=", ", orig_client="]
                .iter()
                .filter_map(|k| u.find(k))
                .min()
                .map_or(u, |i| &u[..i]);
            Some((method, user))
        });
        return Ok(Fact::Client { qid, ip, sasl });
    }
    refused(qid, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sasl_failures_with_and_without_the_user() {
        assert_eq!(
            parse("smtpd", "warning: unknown[203.0.113.10]: SASL LOGIN authentication failed: (reason unavailable), sasl_username=postmaster@example.org"),
            Ok(Fact::SaslFailed { ip: ip("203.0.113.10"), mechanism: "LOGIN", user: Some("postmaster@example.org") })
        );
        assert_eq!(
            parse(
                "smtpd",
                "warning: unknown[2001:db8::5]:587: SASL login authentication failed: UGFzc3dvcmQ6"
            ),
            Ok(Fact::SaslFailed {
                ip: ip("2001:db8::5"),
                mechanism: "login",
                user: None
            })
        );
        assert_eq!(
            parse("smtpd", "warning: localhost[127.0.0.1]: SASL PLAIN authentication failed: Connection lost to authentication server, sasl_username=(unavailable)"),
            Err(Skip::NotCredential)
        );
        assert_eq!(
            parse(
                "smtpd",
                "warning: SASL authentication failure: Password verification failed"
            ),
            Err(Skip::NotUsed)
        );
    }

    #[test]
    fn the_lines_of_a_submission() {
        assert_eq!(
            parse("smtpd", "4PbCZy4PWKz3tBr: client=unknown[2a02:8109:b240:41c8:9264:99a9:1b0d:15c8], sasl_method=PLAIN, sasl_username=vmail@uhu-banane.net"),
            Ok(Fact::Client { qid: "4PbCZy4PWKz3tBr", ip: Some(ip("2a02:8109:b240:41c8:9264:99a9:1b0d:15c8")), sasl: Some(("PLAIN", "vmail@uhu-banane.net")) })
        );
        assert_eq!(
            parse("smtpd", "1CF582025C: client=xxx[2.3.4.5]"),
            Ok(Fact::Client {
                qid: "1CF582025C",
                ip: Some(ip("2.3.4.5")),
                sasl: None
            })
        );
        assert_eq!(
            parse("cleanup", "5741C9B84F8: info: header From: \"Eve from x[1.1.1.1]; from=<a>\" <bob@example.jp> from localhost[127.0.0.1]; from=<bob@example.jp> to=<f@r.example> proto=ESMTP helo=<c>"),
            Ok(Fact::HeaderFrom { qid: "5741C9B84F8", header: "\"Eve from x[1.1.1.1]; from=<a>\" <bob@example.jp>" })
        );
        assert_eq!(
            parse(
                "qmgr",
                "5741C9B84F8: from=<bob@example.jp>, size=415, nrcpt=3 (queue active)"
            ),
            Ok(Fact::Envelope {
                qid: "5741C9B84F8",
                from: "bob@example.jp",
                nrcpt: 3
            })
        );
        assert_eq!(
            parse(
                "qmgr",
                "6B15B9B84FC: from=<>, size=2498, nrcpt=1 (queue active)"
            ),
            Ok(Fact::Envelope {
                qid: "6B15B9B84FC",
                from: "",
                nrcpt: 1
            })
        );
        assert_eq!(
            parse(
                "qmgr",
                "BACE842E72: from=<noreply@domain.com>, status=expired, returned to sender"
            ),
            Err(Skip::NotUsed)
        );
        assert_eq!(
            parse("qmgr", "5741C9B84F8: removed"),
            Ok(Fact::Removed { qid: "5741C9B84F8" })
        );
    }

    #[test]
    fn deliveries_and_notifications() {
        assert_eq!(
            parse("smtp", "589A29B8412: to=<gone@bounce.invalid>, relay=127.0.0.1[127.0.0.1]:25433, delay=0.08, delays=0.01/0.01/0.05/0.01, dsn=5.1.1, status=bounced (host said: 550)"),
            Ok(Fact::Delivery { qid: "589A29B8412", to: "gone@bounce.invalid", relay: "127.0.0.1[127.0.0.1]:25433", status: "bounced" })
        );
        assert_eq!(
            parse("virtual", "199041033BE: to=<me@domain.fr>, relay=virtual, delay=0.08, delays=0.08/0/0/0, dsn=2.0.0, status=sent (delivered to maildir)"),
            Ok(Fact::Delivery { qid: "199041033BE", to: "me@domain.fr", relay: "virtual", status: "sent" })
        );
        assert_eq!(
            parse(
                "bounce",
                "589A29B8412: sender non-delivery notification: 6B15B9B84FC"
            ),
            Ok(Fact::Notification {
                qid: "589A29B8412",
                new_qid: "6B15B9B84FC"
            })
        );
        assert_eq!(daemon("postfix-smo/submission/smtpd"), Some("smtpd"));
        assert_eq!(
            parse("smtpd", "disconnect from unknown[1.2.3.4] ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=8"),
            Ok(Fact::Disconnect { auth_ok: 1 })
        );
        assert_eq!(
            parse(
                "smtpd",
                "disconnect from unknown[1.2.3.4] ehlo=1 auth=0/1 commands=1/2"
            ),
            Ok(Fact::Disconnect { auth_ok: 0 })
        );
        assert_eq!(daemon("sshd"), None);
    }
}
