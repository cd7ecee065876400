//! A listening socket given as `ADDR:PORT` or `unix:/path` (the Postfix
//! policy server offers both, as Postfix's `check_policy_service` does).

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// A connection, whichever socket it came on.
pub(crate) trait Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Conn for T {}

/// What `listen` says, checked (for the config checks).
pub(crate) fn valid(listen: &str) -> bool {
    match listen.strip_prefix("unix:") {
        Some(p) => p.starts_with('/') && p.len() > 1,
        None => listen.parse::<SocketAddr>().is_ok(),
    }
}

impl Listener {
    /// Binds; a UNIX socket left by an earlier run is replaced, and gets
    /// `mode` (so that Postfix's user can connect).
    pub(crate) async fn bind(listen: &str, mode: u32) -> std::io::Result<Listener> {
        match listen.strip_prefix("unix:") {
            Some(path) => {
                let path = PathBuf::from(path);
                if std::fs::symlink_metadata(&path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    std::fs::remove_file(&path)?;
                }
                let l = UnixListener::bind(&path)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
                Ok(Listener::Unix(l, path))
            }
            None => Ok(Listener::Tcp(TcpListener::bind(listen).await?)),
        }
    }

    /// Where it listens, for logs and tests.
    pub(crate) fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into()),
            Listener::Unix(_, p) => format!("unix:{}", p.display()),
        }
    }

    /// The next connection, and the peer's address (loopback for a UNIX
    /// socket, for the connection caps).
    pub(crate) async fn accept(&self) -> std::io::Result<(Box<dyn Conn>, std::net::IpAddr)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Box::new(s), peer.ip().to_canonical()))
            }
            Listener::Unix(l, _) => {
                let (s, _) = l.accept().await?;
                Ok((Box::new(s), std::net::Ipv4Addr::LOCALHOST.into()))
            }
        }
    }
}
