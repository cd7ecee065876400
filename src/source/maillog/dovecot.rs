//! What a Dovecot line says (Dovecot 2.3 and 2.4, and the 1.x forms the
//! corpora still hold): the login processes' `Login:` and failed
//! disconnects, the auth process's per-attempt failures (`auth_verbose`),
//! and policy refusals. Formats: `docs/maillog.md`.
//!
//! Names and free text are client-controlled: a user name may hold
//! `>, rip=…` and a disconnect reason `(auth failed, …)`. The structured
//! tail is therefore read so that the server's own elements win (see
//! [`tail`]), and an auth identifier only counts when what follows it is
//! exactly a known message.

use std::net::IpAddr;

use super::Skip;
use crate::source::event::{parse_ip, Protocol};

/// One fact of a Dovecot line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact<'a> {
    /// A login process logged a successful login.
    Login {
        protocol: Protocol,
        user: &'a str,
        mechanism: Option<&'a str>,
        rip: Option<IpAddr>,
        session: Option<&'a str>,
    },
    /// A login process closed a connection after `attempts` failed logins.
    LoginFailed {
        protocol: Protocol,
        user: Option<&'a str>,
        attempts: u32,
        mechanism: Option<&'a str>,
        rip: Option<IpAddr>,
        session: Option<&'a str>,
    },
    /// The auth process refused one password (`auth_verbose`).
    PassdbFailure {
        user: &'a str,
        ip: Option<IpAddr>,
        session: Option<&'a str>,
        /// `auth_verbose_passwords = sha1:N`: the first N hex digits of the
        /// wrong password's SHA1 (at most 16 kept).
        pwhash: Option<&'a str>,
    },
    /// The auth policy server refused a login.
    PolicyRefusal {
        user: &'a str,
        ip: Option<IpAddr>,
        session: Option<&'a str>,
    },
}

/// The Dovecot process of a message (`imap-login`, `auth`) and the rest,
/// with level words (`Info: `) taken off both.
fn process(message: &str) -> (&str, &str) {
    let m = strip_level(message);
    // Some syslog setups log "dovecot: dovecot: auth: …".
    let m = strip_level(m.strip_prefix("dovecot: ").unwrap_or(m));
    // 2.4: "auth(user,ip,sasl:login)<session>: Info: sql: Password mismatch"
    // (2.2's "auth(default): " names the auth service instead).
    if m.starts_with("auth(") && !m.starts_with("auth(default)") {
        for level in [": Info: ", ": Warning: ", ": Error: ", ": Debug: "] {
            if let Some(i) = m.find(level) {
                return (&m[..i], &m[i + level.len()..]);
            }
        }
    }
    match m.split_once(": ") {
        Some((p, rest)) => (p, strip_level(rest)),
        None => ("", m),
    }
}

fn strip_level(m: &str) -> &str {
    for level in [
        "Info: ",
        "Warning: ",
        "Warn: ",
        "Error: ",
        "Fatal: ",
        "Panic: ",
        "Debug: ",
    ] {
        if let Some(rest) = m.strip_prefix(level) {
            return rest;
        }
    }
    m
}

/// Whether a program name is Dovecot's (`dovecot`, `dovecot[12]` without
/// its pid, `dovecot-auth` of old, or none at all: Dovecot's own file).
pub fn is_dovecot(program: &str) -> bool {
    program.is_empty()
        || program == "dovecot"
        || program.starts_with("dovecot/")
        || program == "dovecot-auth"
        || program == "auth"
}

/// Reads one Dovecot message; `Err` says why it gives nothing.
pub fn parse<'a>(program: &str, message: &'a str) -> Result<Fact<'a>, Skip> {
    let (proc, body) = if program == "dovecot-auth" || program == "auth" {
        ("auth", strip_level(message))
    } else {
        process(message)
    };
    if let Some(service) = proc.strip_suffix("-login") {
        return login(service, body);
    }
    if let Some(id) = proc
        .strip_prefix("auth(")
        .filter(|_| proc != "auth(default)")
    {
        // 2.4: the identifier is the process; the body is "driver: message".
        let id = id.rsplit_once(')').map_or(id, |(i, _)| i);
        let msg = body.split_once(": ").map_or(body, |(_, m)| m);
        return passdb(id, msg).ok_or(Skip::NotUsed);
    }
    if proc == "auth" || proc.starts_with("auth-worker") || proc.starts_with("auth(") {
        return auth_process(body);
    }
    Err(Skip::NotUsed)
}

fn protocol(service: &str) -> Protocol {
    match service {
        "imap" => Protocol::Imap,
        "pop3" => Protocol::Pop3,
        "submission" => Protocol::Smtp,
        _ => Protocol::Other,
    }
}

/// The structured tail of a login-process line: `user=<…>, method=…,
/// rip=…, lip=…, mpid=…, TLS, session=<…>` (elements with empty values
/// left out; the administrator may reorder them).
#[derive(Debug, Default, PartialEq, Eq)]
struct Tail<'a> {
    user: Option<&'a str>,
    method: Option<&'a str>,
    rip: Option<IpAddr>,
    session: Option<&'a str>,
}

/// Reads the elements after the user name. Each known key at most once,
/// with a well-formed value; other elements (`TLS`, a cipher description)
/// pass.
fn elements(s: &str) -> Option<Tail<'_>> {
    let mut t = Tail::default();
    // On the stack: a login line has about eight elements.
    let mut seen: smallvec::SmallVec<[&str; 12]> = smallvec::SmallVec::new();
    if s.is_empty() {
        return Some(t);
    }
    for el in s.split(", ") {
        let Some((k, v)) = el.split_once('=') else {
            continue;
        };
        if k.is_empty() || !k.bytes().all(|c| c.is_ascii_lowercase() || c == b'_') {
            continue;
        }
        if seen.contains(&k) || k == "user" {
            return None;
        }
        seen.push(k);
        match k {
            "rip" => t.rip = Some(parse_ip(v)?),
            "mpid" => {
                v.parse::<u32>().ok()?;
            }
            "method" => {
                if v.is_empty()
                    || !v
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
                {
                    return None;
                }
                t.method = Some(v);
            }
            "session" => {
                t.session = Some(v.strip_prefix('<')?.strip_suffix('>')?);
            }
            _ => {}
        }
    }
    Some(t)
}

/// `s` starts at the tail (`user=<…>, …` or `method=…, …`). The user name
/// ends at the first `>` after which the rest reads as well-formed, unique
/// elements: a name that holds `>, rip=1.2.3.4` cannot replace the real
/// `rip=`, which comes later on the line.
fn tail(s: &str) -> Option<Tail<'_>> {
    let Some(u) = s.strip_prefix("user=<") else {
        return elements(s);
    };
    let mut from = 0;
    while let Some(i) = u[from..].find('>') {
        let end = from + i;
        let rest = &u[end + 1..];
        let ok = if rest.is_empty() {
            Some(Tail::default())
        } else {
            rest.strip_prefix(", ").and_then(elements)
        };
        if let Some(mut t) = ok {
            t.user = Some(&u[..end]);
            return Some(t);
        }
        from = end + 1;
    }
    None
}

fn login<'a>(service: &str, body: &'a str) -> Result<Fact<'a>, Skip> {
    let protocol = protocol(service);
    if let Some(rest) = body.strip_prefix("Login: ") {
        let t = tail(rest).ok_or(Skip::NotUsed)?;
        let user = t.user.filter(|u| !u.is_empty()).ok_or(Skip::NoUser)?;
        return Ok(Fact::Login {
            protocol,
            user,
            mechanism: t.method,
            rip: t.rip,
            session: t.session,
        });
    }
    // The tail begins at the first "user=<" (or, with no user, at the
    // first "): method=" / "): rip="); what precedes it is the reason.
    let closing = ["Disconnected", "Aborted login", "Login aborted"]
        .iter()
        .any(|p| body.starts_with(p));
    let start = body
        .find("user=<")
        .or_else(|| body.find("): ").map(|i| i + 3))
        .ok_or(if closing {
            Skip::NoAuthAttempt
        } else {
            Skip::NotUsed
        })?;
    let (reason, rest) = body.split_at(start);
    if !reason.ends_with(": ") {
        return Err(Skip::NotUsed);
    }
    let attempts = failed_attempts(reason, closing)?;
    let t = tail(rest).ok_or(Skip::NotUsed)?;
    Ok(Fact::LoginFailed {
        protocol,
        user: t.user.filter(|u| !u.is_empty()),
        attempts,
        mechanism: t.method,
        rip: t.rip,
        session: t.session,
    })
}

/// How many failed logins a disconnect reason reports, or why it reports
/// none. The reason's free text comes first and may be client-made, so
/// only the last parenthesised group before the tail counts (2.4 adds a
/// one-word group after it, `(auth_failed)`).
fn failed_attempts(reason: &str, closing: bool) -> Result<u32, Skip> {
    let mut r = reason.strip_suffix(": ").unwrap_or(reason);
    let mut group = last_group(r);
    if let Some(g) = group {
        if g.bytes().all(|c| c.is_ascii_lowercase() || c == b'_') {
            r = r[..r.len() - g.len() - 2].trim_end();
            group = last_group(r);
        }
    }
    let Some(g) = group else {
        // A disconnect with no reason group had no login attempt to report.
        return Err(if closing {
            Skip::NoAuthAttempt
        } else {
            Skip::NotUsed
        });
    };
    if let Some(n) = g.strip_prefix("auth failed, ") {
        let n: String = n.chars().take_while(char::is_ascii_digit).collect();
        return n.parse().map_err(|_| Skip::NotUsed);
    }
    // Dovecot 1.x: "Aborted login (2 authentication attempts): …".
    if let Some(n) = g.strip_suffix(" authentication attempts") {
        return n.parse().map_err(|_| Skip::NotUsed);
    }
    // A proxy whose backend refused the password: one failed login.
    if g.starts_with("proxy dest auth failed") {
        return Ok(1);
    }
    const NO_ATTEMPT: [&str; 5] = [
        "no auth attempts",
        "disconnected before auth was ready",
        "client didn't finish SASL auth",
        "during TLS handshake",
        "TLS handshaking",
    ];
    if NO_ATTEMPT.iter().any(|p| g.contains(p)) {
        return Err(Skip::NoAuthAttempt);
    }
    const NO_CREDENTIAL: [&str; 7] = [
        "tried to use disallowed",
        "tried to use disabled",
        "auth process communication failure",
        "auth service reported temporary failure",
        "authorization failed",
        "user disabled",
        "password expired",
    ];
    if NO_CREDENTIAL.iter().any(|p| g.contains(p)) {
        return Err(Skip::NotCredential);
    }
    Err(Skip::NotUsed)
}

/// The text of the parenthesised group `s` ends with.
fn last_group(s: &str) -> Option<&str> {
    let inner = s.strip_suffix(')')?;
    let open = inner.rfind('(')?;
    Some(&inner[open + 1..])
}

/// An auth-process body: `conn …: auth-worker<1>: sql(user,ip): unknown
/// user`, `passwd-file(user,ip,<session>): Password mismatch (SHA1 of
/// given password: 3546d6)`, `policy(user,ip): Authentication failure due
/// to policy server refusal`.
fn auth_process(body: &str) -> Result<Fact<'_>, Skip> {
    if let Some(pam) = body.strip_prefix("pam_unix(dovecot:auth): authentication failure;") {
        return pam_unix(pam);
    }
    let mut from = 0;
    while let Some(i) = body[from..].find('(') {
        let open = from + i;
        from = open + 1;
        let driver_start = body[..open].rfind([' ', ':', '>']).map_or(0, |j| j + 1);
        let driver = &body[driver_start..open];
        if !PASSDB_DRIVERS.contains(&driver) {
            continue;
        }
        // The identifier ends at a ")" followed by ": " and a known
        // message; the first such end wins (the password, which comes
        // after, cannot make one).
        let mut end_from = open + 1;
        while let Some(j) = body[end_from..].find("): ") {
            let close = end_from + j;
            end_from = close + 1;
            let id = &body[open + 1..close];
            let msg = &body[close + 3..];
            if driver == "policy" {
                if let Some(f) = policy(id, msg) {
                    return f;
                }
            } else if let Some(f) = passdb(id, msg) {
                return Ok(f);
            }
        }
    }
    Err(Skip::NotUsed)
}

/// PAM's own line: `… ruser=X rhost=IP [ user=U]`. `ruser=` is the
/// client's (it may hold `rhost=1.2.3.4`): the last `rhost=` is PAM's.
fn pam_unix(s: &str) -> Result<Fact<'_>, Skip> {
    let i = s.rfind(" rhost=").ok_or(Skip::NotUsed)?;
    let rest = &s[i + 7..];
    let (host, after) = rest.split_once(' ').unwrap_or((rest, ""));
    let ip = parse_ip(host);
    let user = after
        .trim_start()
        .strip_prefix("user=")
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or(Skip::NoUser)?;
    Ok(Fact::PassdbFailure {
        user,
        ip,
        session: None,
        pwhash: None,
    })
}

const PASSDB_DRIVERS: [&str; 15] = [
    "passwd-file",
    "passwd",
    "shadow",
    "pam",
    "sql",
    "ldap",
    "checkpassword",
    "bsdauth",
    "static",
    "lua",
    "oauth2",
    "imap",
    "dict",
    "vpopmail",
    "policy",
];

/// `user[,ip][,master][,<session>]`, the user possibly holding commas:
/// the address is the last field that reads as one.
fn identifier(id: &str) -> Option<(&str, Option<IpAddr>, Option<&str>)> {
    let mut rest = id.strip_suffix(',').unwrap_or(id);
    let mut session = None;
    if let Some((head, last)) = rest.rsplit_once(',') {
        if let Some(s) = last.strip_prefix('<').and_then(|l| l.strip_suffix('>')) {
            session = Some(s);
            rest = head;
        }
    }
    // 2.4 appends "sasl:<mech>"; both versions may append "master".
    for extra in ["master"] {
        if let Some(head) = rest.strip_suffix(extra).and_then(|h| h.strip_suffix(',')) {
            rest = head;
        }
    }
    if let Some((head, last)) = rest.rsplit_once(',') {
        if last.starts_with("sasl:") || last.starts_with("service:") {
            rest = head;
        }
    }
    let (user, ip) = match rest.rsplit_once(',') {
        Some((u, ip)) => match parse_ip(ip) {
            Some(ip) => (u, Some(ip)),
            None => (rest, None),
        },
        None => (rest, None),
    };
    (!user.is_empty() && user != "?").then_some((user, ip, session))
}

/// A passdb message, exactly: what follows the identifier must be one of
/// Dovecot's own failure messages to the end of the line.
fn passdb<'a>(id: &'a str, msg: &'a str) -> Option<Fact<'a>> {
    let (user, ip, session) = identifier(id)?;
    let rest = if let Some(r) = msg.strip_prefix("Password mismatch") {
        r.strip_prefix(" (for LDAP bind)").unwrap_or(r)
    } else if let Some(r) = msg.strip_prefix("unknown user") {
        r
    } else if msg.starts_with("pam_authenticate() failed: ") || msg == "invalid credentials" {
        ""
    } else {
        return None;
    };
    let pwhash = match rest {
        "" => None,
        r if r.starts_with(" (given password: ") && r.ends_with(')') => None,
        r => {
            let h = r
                .strip_prefix(" (SHA1 of given password: ")?
                .strip_suffix(')')?;
            if h.is_empty() || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            Some(&h[..h.len().min(16)])
        }
    };
    Some(Fact::PassdbFailure {
        user,
        ip,
        session,
        pwhash,
    })
}

fn policy<'a>(id: &'a str, msg: &'a str) -> Option<Result<Fact<'a>, Skip>> {
    if msg.starts_with("Authentication failure due to policy server refusal") {
        let (user, ip, session) = identifier(id)?;
        return Some(Ok(Fact::PolicyRefusal { user, ip, session }));
    }
    if msg.starts_with("Policy check action is") || msg.starts_with("Policy server") {
        return Some(Err(Skip::NotUsed));
    }
    None
}

#[cfg(test)]
mod tests;
