//! The demo's epilogue: credwatch at the door. After the day, the demo asks
//! its policy servers what Dovecot and Postfix would ask when the phished
//! account's next login and next message come (refused), then sends the
//! provider's unlock and asks again (let through).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use super::sample::Expected;
use crate::enforce::Servers;
use crate::time::{Millis, MINUTE};

/// Where the attacker's next login comes from (documentation range).
const ATTACKER: &str = "203.0.113.50";

/// Dovecot's `allow`, as Dovecot 2.3 sends it: the `status` and `msg`.
fn dovecot_allow(addr: &std::net::SocketAddr, login: &str) -> anyhow::Result<(i64, String)> {
    let body = serde_json::json!({
        "device_id": "", "login": login, "protocol": "imap", "pwhash": "0262",
        "remote": ATTACKER, "session_id": "demo", "tls": true,
    })
    .to_string();
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "POST /?command=allow HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let json = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(json)?;
    Ok((
        v["status"].as_i64().unwrap_or(0),
        v["msg"].as_str().unwrap_or("").to_string(),
    ))
}

/// Postfix's END-OF-MESSAGE request of an authenticated message: the action.
fn postfix_eom(addr: &str, login: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nprotocol_name=ESMTP\nclient_address={ATTACKER}\nsender={login}\nrecipient_count=40\nqueue_id=4F2A19C0D3\nsasl_method=PLAIN\nsasl_username={login}\n\n"
    )?;
    let mut action = String::new();
    BufReader::new(s).read_line(&mut action)?;
    Ok(action.trim_end().to_string())
}

/// Runs the epilogue; false if the lock was not refused, or the unlock did
/// not let the account through again.
pub(super) fn show(
    policy: &Servers,
    expected: &[Expected],
    producer: &ThreadedProducer<DefaultProducerContext>,
    input: &str,
    after: Millis,
    // Prints the timeline's new actions; gives how many it has seen.
    mut timeline: impl FnMut(&mut dyn Write) -> anyhow::Result<usize>,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    let (Some(dovecot), Some(postfix)) = (&policy.dovecot, &policy.postfix) else {
        return Ok(true);
    };
    let Some(victim) = expected
        .iter()
        .find(|e| e.detector.is_some() && e.scenario.starts_with("phished"))
    else {
        return Ok(true);
    };
    let account = victim.account.as_str();
    writeln!(
        out,
        "\nAt the door: credwatch answers Dovecot's auth policy (http://{dovecot}/) and Postfix's policy delegation ({postfix}).\n\
         The phisher comes back to {account}:"
    )?;
    // The lock view has the lock by now (the timeline printed it); give it
    // a moment all the same.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut login = dovecot_allow(dovecot, account)?;
    while login.0 >= 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        login = dovecot_allow(dovecot, account)?;
    }
    let message = postfix_eom(postfix, account)?;
    let refused = login.0 < 0 && message.starts_with("action=REJECT");
    writeln!(
        out,
        "  {:<34} {} ({{\"status\":{}, \"msg\":{:?}}})\n  {:<34} {} ({message})",
        format!("IMAP login from {ATTACKER}:"),
        if login.0 < 0 {
            "REFUSED"
        } else {
            "let through"
        },
        login.0,
        login.1,
        "next message on an open session:",
        if message.starts_with("action=REJECT") {
            "REFUSED"
        } else {
            "let through"
        },
    )?;
    let seen = timeline(out)?;
    // Support resets the password; the account system sends the unlock.
    let unlock = serde_json::json!({
        "ts": after + MINUTE, "kind": "unlock", "account": account,
        "reason": "password reset by support",
    })
    .to_string();
    producer
        .send(BaseRecord::to(input).key(account).payload(&unlock))
        .map_err(|(e, _)| e)?;
    producer.flush(Duration::from_secs(10))?;
    writeln!(
        out,
        "  support resets the password; the account system sends {unlock}"
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut again = dovecot_allow(dovecot, account)?;
    while again.0 < 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        again = dovecot_allow(dovecot, account)?;
    }
    // The unlock action, as the actions topic has it.
    while timeline(out)? <= seen && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let message = postfix_eom(postfix, account)?;
    let back = again.0 == 0 && message == "action=DUNNO";
    writeln!(
        out,
        "  {:<34} {} ({{\"status\":{}}}), next message: {message}",
        "the owner's next login:",
        if again.0 == 0 {
            "let through"
        } else {
            "STILL REFUSED"
        },
        again.0
    )?;
    Ok(refused && back)
}
