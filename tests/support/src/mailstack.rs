//! The real mail servers on loopback: Debian's Dovecot (IMAP, and SASL for
//! Postfix) and Postfix (a submission service with `smtpd_sasl_type =
//! dovecot`, its own `maillog_file`, `From:` header logging, and a loopback
//! SMTP sink as relay that refuses `*@bounce.invalid`, so that bounces
//! happen), each with its own config folder and log file, started as
//! `tests/run` installs them (packages `dovecot-core`, `dovecot-imapd`,
//! `postfix`). Clients speak the real protocols; `login_trusted_networks`
//! and `smtpd_authorized_xclient_hosts` let a test give each login a
//! real-world address (IMAP `ID x-originating-ip`, SMTP `XCLIENT`).
//!
//! A missing package, a non-root user or a daemon that does not answer
//! within 15 s fails with a message that says so, never a hang.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{free_port, Kill};

/// Accounts of the stack's passwd-file, with their passwords.
pub const USERS: [(&str, &str); 6] = [
    ("alice@example.jp", "alice-pw"),
    ("bob@example.jp", "bob-pw"),
    ("carol@example.jp", "carol-pw"),
    ("dave@example.jp", "dave-pw"),
    ("erin@example.jp", "erin-pw"),
    ("frank@example.jp", "frank-pw"),
];

/// A running Dovecot and Postfix.
pub struct MailStack {
    pub dir: PathBuf,
    pub imap_port: u16,
    pub smtp_port: u16,
    _dovecot: Kill,
    postfix_conf: PathBuf,
    /// Messages the sink accepted.
    pub sink_accepted: Arc<AtomicU64>,
}

/// Fails the test with what to do when a program is missing.
fn need(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package {package} (tests/run installs it as root: apt-get install --no-install-recommends dovecot-core dovecot-imapd postfix)"
    );
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn chown(path: &Path, owner: &str) {
    let ok = Command::new("chown")
        .args(["-R", owner])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "chown {owner} {}", path.display());
}

fn wait_for_banner(port: u16, what: &str, log: &Path) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut line = String::new();
            if BufReader::new(s).read_line(&mut line).is_ok() && !line.is_empty() {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let tail = std::fs::read_to_string(log).unwrap_or_default();
    panic!("{what} did not answer on 127.0.0.1:{port} within 15 s; its log:\n{tail}");
}

/// Where the daemons ask their policy questions: credwatch's servers.
#[derive(Clone, Debug)]
pub struct PolicyHooks {
    /// Dovecot's `auth_policy_server_url` (userinfo carries the secret).
    pub dovecot_url: String,
    /// Postfix's `check_policy_service` endpoint (`inet:127.0.0.1:PORT`).
    pub postfix: String,
}

impl MailStack {
    /// Starts both daemons in a fresh folder (under `/tmp`, mode 755 as
    /// Postfix wants). Needs root, as the daemons drop to their own users.
    pub fn start() -> MailStack {
        Self::start_with(None)
    }

    /// [`MailStack::start`] with Dovecot's auth policy and Postfix's
    /// policy delegation pointed at `hooks`, configured to fail open as
    /// docs/enforcement.md tells operators to.
    pub fn start_with(hooks: Option<PolicyHooks>) -> MailStack {
        need("/usr/sbin/dovecot", "dovecot-core");
        need("/usr/lib/dovecot/imap", "dovecot-imapd");
        need("/usr/sbin/postfix", "postfix");
        let uid = Command::new("id").arg("-u").output().expect("id -u");
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            "0",
            "the mail-server tests run Dovecot and Postfix, which need root (tests/run runs as root in CI)"
        );
        let dir = tempfile::Builder::new()
            .prefix("credwatch-mail-")
            .tempdir_in("/tmp")
            .expect("tempdir")
            .keep();
        let d = |p: &str| dir.join(p);
        Command::new("chmod").arg("755").arg(&dir).status().ok();
        for sub in ["run", "state", "mail", "postfix", "spool", "pfdata"] {
            std::fs::create_dir_all(d(sub)).unwrap();
        }
        Command::new("chmod")
            .arg("1777")
            .arg(d("mail"))
            .status()
            .ok();
        chown(&d("pfdata"), "postfix");
        let imap_port = free_port();
        let smtp_port = free_port();
        let (sink_port, sink_accepted) = start_sink();
        let users: String = USERS
            .iter()
            .map(|(u, p)| format!("{u}:{{PLAIN}}{p}\n"))
            .collect();
        write(&d("users"), &users);
        let dir_s = dir.display().to_string();
        write(
            &d("dovecot.conf"),
            &format!(
                r#"# credwatch tests: Dovecot on loopback with its own folders
base_dir = {dir_s}/run/dovecot
state_dir = {dir_s}/state
instance_name = credwatch-{imap_port}
listen = 127.0.0.1
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_verbose_passwords = sha1:6
auth_failure_delay = 0
log_path = {dir_s}/dovecot.log
login_trusted_networks = 127.0.0.0/8
imap_id_log = *
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir_s}/users
}}
userdb {{
  driver = static
  args = uid=5000 gid=5000 home={dir_s}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service auth {{
  unix_listener auth-postfix {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
{}"#,
                hooks.as_ref().map_or(String::new(), |h| format!(
                    "auth_policy_server_url = {}\nauth_policy_hash_nonce = credwatch-tests\nauth_policy_server_timeout_msecs = 500\nauth_policy_reject_on_fail = no\n",
                    h.dovecot_url
                ))
            ),
        );
        let dovecot = Command::new("/usr/sbin/dovecot")
            .args(["-F", "-c"])
            .arg(d("dovecot.conf"))
            .env("TZ", "UTC")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d("dovecot.stderr")).unwrap())
            .spawn()
            .expect("start dovecot");
        let dovecot = Kill(dovecot);
        wait_for_banner(imap_port, "Dovecot", &d("dovecot.stderr"));

        let pf = d("postfix");
        write(&pf.join("header_checks"), "/^From:/ INFO\n");
        write(
            &pf.join("main.cf"),
            &format!(
                r#"# credwatch tests: Postfix as a submission service on loopback
compatibility_level = 3.6
queue_directory = {dir_s}/spool
data_directory = {dir_s}/pfdata
mail_owner = postfix
setgid_group = postdrop
myhostname = mail.example.jp
mydomain = example.jp
myorigin = $mydomain
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
smtpd_banner = $myhostname ESMTP
biff = no
append_dot_mydomain = no
readme_directory = no
relayhost = [127.0.0.1]:{sink_port}
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {dir_s}/run/dovecot/auth-postfix
smtpd_sasl_security_options = noanonymous
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_peername_lookup = no
header_checks = regexp:{dir_s}/postfix/header_checks
maillog_file = {dir_s}/postfix.log
maillog_file_prefixes = {dir_s}
{}"#,
                hooks.as_ref().map_or(String::new(), |h| {
                    let p = format!("check_policy_service {{ {}, timeout=2s, default_action=DUNNO }}", h.postfix);
                    format!("smtpd_recipient_restrictions = {p}\nsmtpd_end_of_data_restrictions = {p}\n")
                })
            ),
        );
        write(
            &pf.join("master.cf"),
            &format!(
                "127.0.0.1:{smtp_port} inet n - n - - smtpd\n  -o syslog_name=postfix/submission\n{}",
                MASTER_CF
            ),
        );
        let out = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&pf)
            .arg("start")
            .env("TZ", "UTC")
            .output()
            .expect("run postfix start");
        assert!(
            out.status.success(),
            "postfix start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        wait_for_banner(smtp_port, "Postfix", &d("postfix.log"));
        MailStack {
            dir,
            imap_port,
            smtp_port,
            _dovecot: dovecot,
            postfix_conf: pf,
            sink_accepted,
        }
    }

    pub fn dovecot_log(&self) -> PathBuf {
        self.dir.join("dovecot.log")
    }

    pub fn postfix_log(&self) -> PathBuf {
        self.dir.join("postfix.log")
    }

    /// An IMAP login from `from` (claimed with `ID x-originating-ip`), with
    /// `passwords` tried in turn on one connection until one works; whether
    /// one did.
    pub fn imap_login(&self, from: IpAddr, user: &str, passwords: &[&str]) -> bool {
        let s = TcpStream::connect(("127.0.0.1", self.imap_port)).expect("connect to Dovecot");
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let mut cmd = |tag: &str, text: &str| -> String {
            write!(w, "{tag} {text}\r\n").unwrap();
            loop {
                let mut l = String::new();
                if r.read_line(&mut l).unwrap_or(0) == 0 {
                    return String::new();
                }
                if l.starts_with(&format!("{tag} ")) {
                    return l;
                }
            }
        };
        cmd(
            "a",
            &format!("ID (\"name\" \"credwatch-test\" \"x-originating-ip\" \"{from}\")"),
        );
        let mut ok = false;
        for (i, p) in passwords.iter().enumerate() {
            let reply = cmd(&format!("l{i}"), &format!("LOGIN \"{user}\" \"{p}\""));
            if reply.contains(" OK") {
                ok = true;
                break;
            }
        }
        cmd("z", "LOGOUT");
        ok
    }

    /// An SMTP session from `from` (claimed with `XCLIENT`): AUTH PLAIN as
    /// `user`, then each message (envelope sender, `From:` header,
    /// recipients). `Err` with the server's reply when AUTH fails.
    pub fn smtp_session(
        &self,
        from: IpAddr,
        user: &str,
        password: &str,
        messages: &[(&str, &str, &[&str])],
    ) -> Result<(), String> {
        let mut s = self.smtp_open(from, user, password)?;
        for (env_from, header_from, rcpts) in messages {
            let _ = s.send(env_from, header_from, rcpts);
        }
        s.quit();
        Ok(())
    }

    /// An authenticated SMTP session kept open, to send on later.
    pub fn smtp_open(&self, from: IpAddr, user: &str, password: &str) -> Result<Smtp, String> {
        use base64::Engine as _;
        let s = TcpStream::connect(("127.0.0.1", self.smtp_port)).expect("connect to Postfix");
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let mut smtp = Smtp {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        smtp.reply();
        smtp.cmd("EHLO client.example");
        let x = smtp.cmd(&format!("XCLIENT ADDR={from} NAME=[UNAVAILABLE]"));
        assert!(x.starts_with("220"), "XCLIENT refused: {x}");
        smtp.cmd("EHLO client.example");
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        let auth = smtp.cmd(&format!("AUTH PLAIN {token}"));
        if !auth.starts_with("235") {
            smtp.quit();
            return Err(auth);
        }
        Ok(smtp)
    }

    /// Waits until Postfix's queue is empty (every message delivered or
    /// bounced, and every bounce delivered), at most `timeout`.
    pub fn wait_queue_empty(&self, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            let out = Command::new("/usr/sbin/postqueue")
                .arg("-c")
                .arg(&self.postfix_conf)
                .arg("-p")
                .output();
            if let Ok(o) = out {
                let t = String::from_utf8_lossy(&o.stdout);
                if t.contains("Mail queue is empty") {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }
}

/// An open, authenticated SMTP session.
pub struct Smtp {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Smtp {
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut l = String::new();
            if self.r.read_line(&mut l).unwrap_or(0) == 0 {
                return all;
            }
            all.push_str(&l);
            if l.len() < 4 || l.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    fn cmd(&mut self, text: &str) -> String {
        write!(self.w, "{text}\r\n").unwrap();
        self.reply()
    }

    /// Sends one message; `Err` with the first reply that refused it.
    pub fn send(
        &mut self,
        env_from: &str,
        header_from: &str,
        rcpts: &[&str],
    ) -> Result<(), String> {
        let m = self.cmd(&format!("MAIL FROM:<{env_from}>"));
        if !m.starts_with("250") {
            self.cmd("RSET");
            return Err(m);
        }
        let mut refused = None;
        for to in rcpts {
            let r = self.cmd(&format!("RCPT TO:<{to}>"));
            if !r.starts_with("250") {
                refused.get_or_insert(r);
            }
        }
        let d = self.cmd("DATA");
        if !d.starts_with("354") {
            self.cmd("RSET");
            return Err(refused.unwrap_or(d));
        }
        let body = format!(
            "From: {header_from}\r\nTo: {}\r\nSubject: credwatch test\r\n\r\nHello.\r\n.",
            rcpts.first().unwrap_or(&"")
        );
        let end = self.cmd(&body);
        match (end.starts_with("250"), refused) {
            (true, None) => Ok(()),
            (true, Some(r)) => Err(r),
            (false, _) => Err(end),
        }
    }

    pub fn quit(&mut self) {
        self.cmd("QUIT");
    }
}

impl Drop for MailStack {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&self.postfix_conf)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // Dovecot is stopped by its Kill; the folder stays for a look when
        // the test failed, unless it passed.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

const MASTER_CF: &str = "pickup    unix  n - n 60   1 pickup
cleanup   unix  n - n -    0 cleanup
qmgr      unix  n - n 300  1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n -    - trivial-rewrite
bounce    unix  - - n -    0 bounce
defer     unix  - - n -    0 bounce
trace     unix  - - n -    0 bounce
verify    unix  - - n -    1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -    - proxymap
proxywrite unix - - n -    1 proxymap
smtp      unix  - - n -    - smtp
relay     unix  - - n -    - smtp
showq     unix  n - n -    - showq
error     unix  - - n -    - error
retry     unix  - - n -    - error
discard   unix  - - n -    - discard
local     unix  - n n -    - local
virtual   unix  - n n -    - virtual
lmtp      unix  - - n -    - lmtp
anvil     unix  - - n -    1 anvil
scache    unix  - - n -    1 scache
postlog   unix-dgram n - n - 1 postlogd
";

/// A loopback SMTP server as Postfix's relay: accepts every message,
/// refuses recipients at `bounce.invalid` with 550 (Postfix then bounces).
fn start_sink() -> (u16, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind the SMTP sink");
    let port = l.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicU64::new(0));
    let a = accepted.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let a = a.clone();
            std::thread::spawn(move || sink_session(c, &a));
        }
    });
    (port, accepted)
}

fn sink_session(c: TcpStream, accepted: &AtomicU64) {
    c.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut w = c;
    let _ = w.write_all(b"220 sink.example ESMTP\r\n");
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let up = line.to_ascii_uppercase();
        let answer: &[u8] = if up.starts_with("EHLO") || up.starts_with("HELO") {
            b"250-sink.example\r\n250 8BITMIME\r\n"
        } else if up.starts_with("RCPT") && up.contains("@BOUNCE.INVALID") {
            b"550 5.1.1 User unknown (sink)\r\n"
        } else if up.starts_with("DATA") {
            let _ = w.write_all(b"354 go ahead\r\n");
            let mut body = Vec::new();
            loop {
                let mut l = Vec::new();
                if r.read_until(b'\n', &mut l).unwrap_or(0) == 0 {
                    return;
                }
                if l == b".\r\n" || l == b".\n" {
                    break;
                }
                body.extend_from_slice(&l);
            }
            let n = accepted.fetch_add(1, Ordering::Relaxed) + 1;
            let _ = write!(w, "250 2.0.0 Ok: queued as SINK{n:06}\r\n");
            continue;
        } else if up.starts_with("QUIT") {
            let _ = w.write_all(b"221 bye\r\n");
            return;
        } else {
            b"250 2.0.0 Ok\r\n"
        };
        let _ = w.write_all(answer);
    }
}

/// Reads a whole file (a daemon's log), empty if missing.
pub fn read_log(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}
