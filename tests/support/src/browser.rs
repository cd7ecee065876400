//! A real headless browser for the tests: Debian's Chromium driven through
//! ChromeDriver's WebDriver HTTP interface (a plain HTTP/1.1 client over
//! loopback, no browser-automation crate).
//!
//! The browser runs offline: every connection it would make goes to a
//! proxy the caller owns (a listener that counts), names do not resolve,
//! and the flags that make Chromium phone home at start are set. The page's
//! own requests and console messages are read from ChromeDriver's
//! `performance` and `browser` logs.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A ChromeDriver with one browser session.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One HTTP/1.1 request to ChromeDriver; the response's JSON.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    // ChromeDriver keeps the connection open: read the head, then exactly
    // the body its Content-Length gives.
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let k = s.read(&mut buf)?;
        if k == 0 {
            return Err(std::io::Error::other(format!(
                "ChromeDriver closed before answering {method} {path}"
            )));
        }
        raw.extend_from_slice(&buf[..k]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .ok_or_else(|| std::io::Error::other(format!("no Content-Length in {head}")))?;
    while raw.len() < head_end + length {
        let k = s.read(&mut buf)?;
        if k == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..k]);
    }
    let body = String::from_utf8_lossy(&raw[head_end..]);
    serde_json::from_str(&body).map_err(|e| {
        std::io::Error::other(format!(
            "ChromeDriver answered {method} {path} with no JSON ({e}): {head}"
        ))
    })
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium whose every outgoing
    /// connection goes to `proxy_port` on loopback.
    pub fn start(proxy_port: u16) -> Browser {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: install the Debian package {package} (tests/run installs it as root: apt-get install --no-install-recommends chromium chromium-driver fonts-dejavu-core)"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http(port, "GET", "/status", None)
            .ok()
            .and_then(|v| v["value"]["ready"].as_bool())
            != Some(true)
        {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready in 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().expect("a profile folder");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.path().display()),
                    "--window-size=1280,1600",
                    format!("--proxy-server=http://127.0.0.1:{proxy_port}"),
                    "--proxy-bypass-list=<-loopback>",
                    "--host-resolver-rules=MAP * ~NOTFOUND",
                ]
            },
            "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"}
        }}});
        let v = http(port, "POST", "/session", Some(&caps)).expect("a session");
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("ChromeDriver gave no session: {v}"))
            .to_string();
        Browser {
            driver,
            port,
            session,
            _profile: profile,
        }
    }

    /// A WebDriver command of this session; its `value`, or a panic with
    /// ChromeDriver's error.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        let v = http(self.port, method, &full, body.as_ref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        if v["value"].get("error").is_some() {
            panic!("{method} {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs a script in the page (`return ...` gives its value).
    pub fn run(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// The entries of a ChromeDriver log (`browser`: the console;
    /// `performance`: the DevTools events), taken since the last call.
    pub fn log(&self, kind: &str) -> Vec<Value> {
        let v = self.call("POST", "/se/log", Some(json!({ "type": kind })));
        v.as_array().cloned().unwrap_or_default()
    }

    pub fn set_window(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let v = self.call("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 PNG"))
            .expect("a PNG")
    }

    /// The page printed to PDF (as a person printing it gets it).
    pub fn print_pdf(&self) -> Vec<u8> {
        use base64::Engine as _;
        let v = self.call("POST", "/print", Some(json!({"background": true})));
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 PDF"))
            .expect("a PDF")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
