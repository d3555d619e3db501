//! Ingress listeners on this machine: TCP (SO_REUSEADDR, TCP_NODELAY on every accepted
//! socket) and Unix-domain sockets (a stale socket file from a crashed run is replaced,
//! a live one is not).

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener, UnixStream};

use crate::config::BindAddr;
use crate::handover::PassedListener;

/// A bound ingress.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix-domain socket at its path; the file is removed when the listener drops if this
    /// process made it (not one systemd passed) and has not handed it to a successor.
    Unix(UnixListener, PathBuf, bool),
}

/// A duplicate of a listening socket's descriptor, to hand to the process an upgrade starts.
#[derive(Debug)]
pub struct HandoverFd {
    /// The descriptor.
    pub fd: std::os::fd::OwnedFd,
    /// For a Unix socket: whether this process made the file (and its successor removes it).
    pub owned: bool,
    /// For a Unix socket: its path.
    pub path: Option<PathBuf>,
}

/// An accepted connection.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix-domain socket.
    Unix(UnixStream),
}

impl Listener {
    /// Adopts a listener bound already (by systemd, the process this one replaces, or a
    /// test).
    pub fn adopt(passed: PassedListener) -> io::Result<Self> {
        match passed {
            PassedListener::Tcp(l) => {
                l.set_nonblocking(true)?;
                Ok(Self::Tcp(TcpListener::from_std(l)?))
            }
            PassedListener::Unix(l, path, owned) => {
                l.set_nonblocking(true)?;
                Ok(Self::Unix(UnixListener::from_std(l)?, path, owned))
            }
        }
    }

    /// Binds `addr`; a Unix socket gets `mode` and, when given, the group `gid` (see
    /// [`bind_unix`]), on a blocking thread: probing a stale socket connects to it, which can
    /// block.
    pub async fn bind(addr: &BindAddr, mode: u32, gid: Option<u32>) -> io::Result<Self> {
        match addr {
            BindAddr::Tcp(sock) => {
                let socket = if sock.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.set_reuseaddr(true)?;
                socket.bind(*sock)?;
                Ok(Self::Tcp(socket.listen(1024)?))
            }
            BindAddr::Unix(path) => {
                let at = path.clone();
                let std = tokio::task::spawn_blocking(move || bind_unix(&at, mode, gid))
                    .await
                    .map_err(io::Error::other)??;
                std.set_nonblocking(true)?;
                Ok(Self::Unix(UnixListener::from_std(std)?, path.clone(), true))
            }
        }
    }

    /// A duplicate of the descriptor, for an upgrade.
    pub fn handover_fd(&self) -> io::Result<HandoverFd> {
        use std::os::fd::AsFd;
        Ok(match self {
            Self::Tcp(l) => HandoverFd {
                fd: l.as_fd().try_clone_to_owned()?,
                owned: false,
                path: None,
            },
            Self::Unix(l, path, owned) => HandoverFd {
                fd: l.as_fd().try_clone_to_owned()?,
                owned: *owned,
                path: Some(path.clone()),
            },
        })
    }

    /// The address as bound (the real port when the caller asked for port 0).
    pub fn local_addr(&self) -> io::Result<BindAddr> {
        match self {
            Self::Tcp(l) => Ok(BindAddr::Tcp(l.local_addr()?)),
            Self::Unix(_, path, _) => Ok(BindAddr::Unix(path.clone())),
        }
    }

    /// Accepts one connection; the peer as (address, port) for the SSH originator fields.
    pub async fn accept(&self) -> io::Result<(Stream, (String, u16))> {
        match self {
            Self::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), originator(peer)))
            }
            Self::Unix(l, _, _) => {
                let (s, _) = l.accept().await?;
                Ok((Stream::Unix(s), ("127.0.0.1".to_string(), 0)))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Self::Unix(_, path, true) = self
            && !crate::handover::handed_over()
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn originator(peer: SocketAddr) -> (String, u16) {
    (peer.ip().to_string(), peer.port())
}

/// Binds a Unix socket at `path` with exactly `mode` (and `group`, if given), blocking.
///
/// A socket's mode comes from the process umask at bind time, and the umask is shared by
/// every thread, so it cannot be changed around one bind. Instead the socket is bound in a
/// new directory of mode 0700 beside `path` (nobody else can reach it there), given its mode
/// and group, then renamed into place without replacing anything (a file that appeared at
/// `path` meanwhile makes it fail). So there is no moment in which `path` is a socket with
/// another mode. A stale socket at `path` is removed first; anything else is an error.
pub(crate) fn bind_unix(
    path: &Path,
    mode: u32,
    group: Option<u32>,
) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    remove_stale_socket(path)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let private = parent.join(format!(".w{:08x}", rand::random::<u32>()));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("s");
    let bound = (|| {
        let listener = std::os::unix::net::UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
        if let Some(gid) = group {
            nix::unistd::chown(&staged, None, Some(nix::unistd::Gid::from_raw(gid)))?;
        }
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &staged,
            nix::fcntl::AT_FDCWD,
            path,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    bound
}

/// A socket file nobody listens on is left over from a crash: remove it. Anything else at
/// the path (a live socket, a regular file, a symlink, which is never followed) is an error
/// naming what is there.
pub(crate) fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process is listening on this socket",
        )),
        Err(_) => std::fs::remove_file(path),
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => {
                let $s = Pin::new($s);
                $e
            }
            Stream::Unix($s) => {
                let $s = Pin::new($s);
                $e
            }
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_unix_socket_is_replaced_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.sock");
        // A stale socket: bound, then the listener forgotten without removing the file.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let live = Listener::bind(&BindAddr::Unix(path.clone()), 0o600, None)
            .await
            .unwrap();
        let err = Listener::bind(&BindAddr::Unix(path.clone()), 0o600, None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(live);
        assert!(!path.exists(), "the socket file goes with the listener");
        std::fs::write(&path, "not a socket").unwrap();
        let err = Listener::bind(&BindAddr::Unix(path.clone()), 0o600, None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not a socket"));
    }

    #[tokio::test]
    async fn inherited_tcp_listener_is_adopted() {
        let std_l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_l.local_addr().unwrap();
        let l = Listener::adopt(PassedListener::Tcp(std_l)).unwrap();
        assert_eq!(l.local_addr().unwrap(), BindAddr::Tcp(addr));
        let client = tokio::spawn(async move { TcpStream::connect(addr).await.unwrap() });
        let (_s, (ip, port)) = l.accept().await.unwrap();
        let c = client.await.unwrap();
        assert_eq!(
            (ip, port),
            ("127.0.0.1".to_string(), c.local_addr().unwrap().port())
        );
    }

    #[test]
    fn a_unix_socket_gets_exactly_its_mode_and_group_whatever_the_umask() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o660, 0o666, 0o640] {
            let path = dir.path().join(format!("m{mode:o}.sock"));
            let gid = nix::unistd::getegid().as_raw();
            let _l = bind_unix(&path, mode, Some(gid)).unwrap();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert!(meta.file_type().is_socket());
            assert_eq!(meta.permissions().mode() & 0o777, mode);
            assert_eq!(meta.gid(), gid);
        }
        // Nothing is left of the private directories the sockets were bound in.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".sock"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_symlink_at_the_path_is_never_followed_nor_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me").unwrap();
        let link = dir.path().join("in.sock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = bind_unix(&link, 0o600, None).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
        // A dangling symlink is refused too.
        std::fs::remove_file(&target).unwrap();
        assert!(bind_unix(&link, 0o600, None).is_err());
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
