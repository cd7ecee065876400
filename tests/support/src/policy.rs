//! Clients of credwatch's policy servers that speak as the mail servers do:
//! Dovecot's auth policy requests (HTTP/1.1 keep-alive, JSON bodies with
//! the attributes in Dovecot's order) and Postfix's policy delegation
//! (`name=value` lines on a persistent connection). What they send is what
//! `shared/real-logs/real-daemons/policy-*.jsonl` recorded the daemons
//! sending.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine as _;

/// One kept-alive connection to the Dovecot policy server.
pub struct Dovecot {
    r: BufReader<TcpStream>,
    w: TcpStream,
    host: String,
    /// `user:secret` for HTTP Basic, as Dovecot sends the URL's userinfo.
    basic: Option<String>,
}

/// An answer: the HTTP status and the JSON body.
pub type Answer = (u16, serde_json::Value);

impl Dovecot {
    pub fn connect(addr: &str, secret: Option<&str>) -> Dovecot {
        let s = TcpStream::connect(addr).expect("connect to the Dovecot policy server");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        Dovecot {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
            host: addr.to_string(),
            basic: secret.map(|s| format!("dovecot:{s}")),
        }
    }

    /// The body Dovecot 2.3 sends by default (attributes sorted by name).
    pub fn body(login: &str, remote: &str, protocol: &str, pwhash: &str) -> serde_json::Value {
        serde_json::json!({
            "device_id": "", "login": login, "protocol": protocol, "pwhash": pwhash,
            "remote": remote, "session_id": "s1", "tls": false,
        })
    }

    pub fn post(&mut self, command: &str, body: &[u8]) -> Answer {
        let mut head = format!(
            "POST /?command={command} HTTP/1.1\r\nHost: {}\r\nUser-Agent: dovecot/auth-policy-client\r\nConnection: Keep-Alive\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        if let Some(b) = &self.basic {
            let token = base64::engine::general_purpose::STANDARD.encode(b);
            head.push_str(&format!("Authorization: Basic {token}\r\n"));
        }
        head.push_str("\r\n");
        self.w.write_all(head.as_bytes()).unwrap();
        self.w.write_all(body).unwrap();
        self.read_answer()
    }

    fn read_answer(&mut self) -> Answer {
        let mut status = String::new();
        self.r.read_line(&mut status).expect("status line");
        let code: u16 = status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP status line: {status:?}"));
        let mut len = 0usize;
        loop {
            let mut l = String::new();
            self.r.read_line(&mut l).unwrap();
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; len];
        self.r.read_exact(&mut body).unwrap();
        (
            code,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// `allow` for `login` from `remote`: the status Dovecot would act on.
    pub fn allow(&mut self, login: &str, remote: &str, protocol: &str) -> Answer {
        let b = Self::body(login, remote, protocol, "0262");
        self.post("allow", b.to_string().as_bytes())
    }

    /// A `report` of a finished login.
    pub fn report(
        &mut self,
        login: &str,
        remote: &str,
        protocol: &str,
        pwhash: &str,
        success: bool,
    ) -> Answer {
        let mut b = Self::body(login, remote, protocol, pwhash);
        b["success"] = success.into();
        b["policy_reject"] = false.into();
        self.post("report", b.to_string().as_bytes())
    }
}

/// One persistent connection to the Postfix policy server.
pub struct Postfix {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Postfix {
    pub fn connect(addr: &str) -> Postfix {
        let s = TcpStream::connect(addr).expect("connect to the Postfix policy server");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        Postfix {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    /// The attributes Postfix 3.7 sends, for a message of `login`
    /// (empty: unauthenticated) from `client` at `state`.
    pub fn request(state: &str, login: &str, sender: &str, client: &str, rcpts: u32) -> String {
        Self::request_to(state, login, sender, "friend@remote.example", client, rcpts)
    }

    /// [`Postfix::request`] for another recipient.
    pub fn request_to(
        state: &str,
        login: &str,
        sender: &str,
        recipient: &str,
        client: &str,
        rcpts: u32,
    ) -> String {
        format!(
            "request=smtpd_access_policy\nprotocol_state={state}\nprotocol_name=ESMTP\nclient_address={client}\nclient_name=unknown\nclient_port=40432\nreverse_client_name=unknown\nserver_address=127.0.0.1\nserver_port=587\nhelo_name=client.example\nsender={sender}\nrecipient={recipient}\nrecipient_count={rcpts}\nqueue_id=5741C9B84F8\ninstance=4522.6b0f45b1.55094.0\nsize=1234\netrn_domain=\nstress=\nsasl_method={}\nsasl_username={login}\nsasl_sender=\nccert_subject=\nccert_issuer=\nccert_fingerprint=\nccert_pubkey_fingerprint=\nencryption_protocol=\nencryption_cipher=\nencryption_keysize=0\npolicy_context=\n\n",
            if login.is_empty() { "" } else { "PLAIN" }
        )
    }

    /// Sends raw bytes and reads one answer: the `action=` line, or `None`
    /// when the server closed the connection without one.
    pub fn send_raw(&mut self, raw: &[u8]) -> Option<String> {
        if self.w.write_all(raw).is_err() {
            return None;
        }
        let mut action = String::new();
        match self.r.read_line(&mut action) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let mut blank = String::new();
        self.r.read_line(&mut blank).ok()?;
        assert_eq!(blank, "\n", "an answer ends with an empty line");
        Some(action.trim_end().to_string())
    }

    pub fn ask(&mut self, state: &str, login: &str, sender: &str, client: &str) -> String {
        self.send_raw(Self::request(state, login, sender, client, 1).as_bytes())
            .expect("an answer")
    }
}
