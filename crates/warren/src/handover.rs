//! Listening sockets warren is handed instead of binding them: by systemd's socket activation
//! (`LISTEN_FDS`, `LISTEN_FDNAMES`), or by the warren process it replaces in an upgrade
//! (`WARREN_UPGRADE` says what each one is: a forward's ingress, the control socket, the
//! metrics listener, and the stream on which to say "ready"). Read once, before the runtime
//! starts; matched to the forwards when they bind.

use std::collections::HashMap;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::config::{BindAddr, ForwardConfig};

/// The variable that describes the sockets of an upgrade (JSON: one [`Role`] per fd, in order
/// from fd 3); `LISTEN_FDS` gives their number.
pub const UPGRADE_ENV: &str = "WARREN_UPGRADE";

/// Set once this process has handed its sockets to a new one: from then on no socket file is
/// removed when its listener closes (the new process serves on it).
static HANDED_OVER: AtomicBool = AtomicBool::new(false);

/// True once this process's sockets belong to its successor.
pub fn handed_over() -> bool {
    HANDED_OVER.load(Ordering::SeqCst)
}

/// Marks this process's sockets as its successor's.
pub fn mark_handed_over() {
    HANDED_OVER.store(true, Ordering::SeqCst);
}

/// What a socket of an upgrade is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "kebab-case")]
pub enum Role {
    /// The ingress of the forward of this name.
    Forward {
        /// The forward's name.
        name: String,
        /// For a Unix socket: whether warren made the file (and removes it when done).
        owned: bool,
        /// For a Unix socket: its path (the kernel names it by the path it was bound at,
        /// which may be a temporary one; see `forward::listener::bind_unix`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<PathBuf>,
    },
    /// The control socket.
    Control,
    /// The metrics listener.
    Metrics {
        /// For a Unix socket: whether warren made the file (and removes it when done).
        owned: bool,
        /// For a Unix socket: its path.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<PathBuf>,
    },
    /// A connected stream to the old process: "ready" is written on it.
    Ready,
}

/// A listening socket handed over.
#[derive(Debug)]
pub enum PassedListener {
    /// TCP.
    Tcp(std::net::TcpListener),
    /// A Unix-domain socket, at its path; whether warren made the file (and removes it).
    Unix(UnixListener, PathBuf, bool),
}

impl PassedListener {
    /// Where it listens.
    pub fn addr(&self) -> std::io::Result<BindAddr> {
        match self {
            Self::Tcp(l) => Ok(BindAddr::Tcp(l.local_addr()?)),
            Self::Unix(_, path, _) => Ok(BindAddr::Unix(path.clone())),
        }
    }

    /// A Unix socket as the old process describes it: at `path` (not the name the kernel
    /// reports, which can be the temporary path it was bound at), and warren's to remove
    /// when `owned`.
    fn described(self, owned: bool, path: Option<PathBuf>) -> Self {
        match self {
            Self::Unix(l, bound, _) => Self::Unix(l, path.unwrap_or(bound), owned),
            tcp => tcp,
        }
    }

    /// Whether a forward that asks for `wanted` may take it: the same address, or (an
    /// upgrade keeping a kernel-picked port) port 0 on the same IP.
    fn serves(&self, wanted: &BindAddr) -> bool {
        match (self.addr(), wanted) {
            (Ok(BindAddr::Tcp(have)), BindAddr::Tcp(want)) => {
                have == *want || (want.port() == 0 && have.ip() == want.ip())
            }
            (Ok(have), want) => have == *want,
            (Err(_), _) => false,
        }
    }
}

/// A socket passed by systemd.
#[derive(Debug)]
struct Activated {
    /// Its fd number, for messages.
    fd: i32,
    /// Its `FileDescriptorName=` (systemd's default is the socket unit's name).
    name: String,
    listener: PassedListener,
    /// An error at start-up when no forward takes it (not for listeners a test hands in).
    required: bool,
}

/// The listeners handed to this process, until the forwards take them.
#[derive(Debug, Default)]
pub struct Inherited {
    activated: Vec<Activated>,
    /// Upgrade: forward ingresses by forward name.
    forwards: HashMap<String, PassedListener>,
}

/// Everything handed to this process.
#[derive(Debug, Default)]
pub struct Passed {
    /// The forwards' listeners.
    pub inherited: Inherited,
    /// Upgrade: the control socket.
    pub control: Option<UnixListener>,
    /// Upgrade: the metrics listener.
    pub metrics: Option<PassedListener>,
    /// Upgrade: where to say "ready".
    pub ready: Option<UnixStream>,
}

impl Inherited {
    /// Nothing handed over.
    pub fn new() -> Self {
        Self::default()
    }

    /// TCP listeners bound already by the caller (a test), taken by the forwards that listen
    /// at their addresses; the ones nobody takes are closed.
    pub fn tcp(listeners: impl IntoIterator<Item = std::net::TcpListener>) -> Self {
        Self {
            activated: listeners
                .into_iter()
                .map(|l| Activated {
                    fd: -1,
                    name: String::new(),
                    listener: PassedListener::Tcp(l),
                    required: false,
                })
                .collect(),
            forwards: HashMap::new(),
        }
    }

    /// The listener for forward `f`, which listens at `addr`: the upgrade's listener of that
    /// name (at a compatible address), else the passed socket named after the forward, else
    /// the one at `addr`.
    pub fn take(&mut self, f: &ForwardConfig, addr: &BindAddr) -> Option<PassedListener> {
        // An upgrade's listener for a forward whose address changed meanwhile is closed.
        if let Some(l) = self.forwards.remove(&f.name)
            && l.serves(addr)
        {
            return Some(l);
        }
        let at = self
            .activated
            .iter()
            .position(|a| a.name == f.name)
            .or_else(|| {
                self.activated
                    .iter()
                    .position(|a| a.listener.addr().is_ok_and(|have| have == *addr))
            })?;
        Some(self.activated.remove(at).listener)
    }

    /// The first socket systemd passed that no forward took, described for the error.
    pub fn unmatched(&self) -> Option<String> {
        self.activated.iter().find(|a| a.required).map(|a| {
            let addr = a
                .listener
                .addr()
                .map_or_else(|e| format!("(address unknown: {e})"), |a| a.to_string());
            format!(
                "the socket passed as fd {} (name {:?}, listening on {addr}) matches no \
                 forward's name or listen address",
                a.fd, a.name
            )
        })
    }
}

impl Passed {
    /// Takes the sockets of the environment (`LISTEN_FDS` from systemd or from an upgrading
    /// warren) and removes the variables, so that no child process sees them. Call it before
    /// any thread starts.
    pub fn from_env() -> Result<Self, String> {
        let roles: Option<Vec<Role>> = match std::env::var(UPGRADE_ENV) {
            Ok(json) => Some(
                serde_json::from_str(&json)
                    .map_err(|e| format!("{UPGRADE_ENV} is not what warren writes: {e}"))?,
            ),
            Err(_) => None,
        };
        let names = std::env::var("LISTEN_FDNAMES").ok();
        // Reads and removes LISTEN_FDS and LISTEN_PID.
        let mut fds = listenfd::ListenFd::from_env();
        let names: Vec<String> = match names {
            Some(n) => n.split(':').map(str::to_string).collect(),
            None => vec!["unknown".into(); fds.len()],
        };
        let mut passed = Self::default();
        for idx in 0..fds.len() {
            let fd = i32::try_from(idx).map_or(-1, |i| i + 3);
            let role = roles.as_ref().and_then(|r| r.get(idx)).cloned();
            if role == Some(Role::Ready) {
                passed.ready = fds
                    .take_custom::<UnixStream>(idx, libc_af_unix(), libc_sock_stream(), "stream")
                    .map_err(|e| format!("fd {fd}: {e}"))?;
                continue;
            }
            let listener = take_listener(&mut fds, idx).map_err(|e| format!("fd {fd}: {e}"))?;
            match role {
                Some(Role::Forward { name, owned, path }) => {
                    passed
                        .inherited
                        .forwards
                        .insert(name, listener.described(owned, path));
                }
                Some(Role::Control) => match listener {
                    PassedListener::Unix(l, _, _) => passed.control = Some(l),
                    PassedListener::Tcp(_) => {
                        return Err(format!("fd {fd}: the control socket is not a Unix socket"));
                    }
                },
                Some(Role::Metrics { owned, path }) => {
                    passed.metrics = Some(listener.described(owned, path));
                }
                Some(Role::Ready) => {}
                None if roles.is_some() => {
                    return Err(format!("fd {fd}: {UPGRADE_ENV} does not say what it is"));
                }
                None => passed.inherited.activated.push(Activated {
                    fd,
                    name: names.get(idx).cloned().unwrap_or_default(),
                    listener,
                    required: true,
                }),
            }
        }
        Ok(passed)
    }
}

/// The listening socket at `idx`: TCP or Unix, refused when it is not listening.
fn take_listener(fds: &mut listenfd::ListenFd, idx: usize) -> Result<PassedListener, String> {
    let listener = match fds.take_tcp_listener(idx) {
        Ok(Some(l)) => PassedListener::Tcp(l),
        Ok(None) => return Err("taken twice".into()),
        Err(_) => match fds.take_unix_listener(idx) {
            Ok(Some(l)) => {
                let path = l
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(PathBuf::from))
                    .ok_or("a Unix socket without a path (abstract or unnamed)")?;
                // Not ours to remove (systemd's, or marked owned by the upgrade's role).
                PassedListener::Unix(l, path, false)
            }
            Ok(None) => return Err("taken twice".into()),
            Err(e) => return Err(format!("not a TCP or Unix stream socket: {e}")),
        },
    };
    let listening = match &listener {
        PassedListener::Tcp(l) => {
            nix::sys::socket::getsockopt(l, nix::sys::socket::sockopt::AcceptConn)
        }
        PassedListener::Unix(l, _, _) => {
            nix::sys::socket::getsockopt(l, nix::sys::socket::sockopt::AcceptConn)
        }
    };
    match listening {
        Ok(true) => Ok(listener),
        Ok(false) => Err("the socket is not listening (use ListenStream=, Accept=no)".into()),
        Err(e) => Err(format!("cannot tell whether the socket listens: {e}")),
    }
}

fn libc_af_unix() -> i32 {
    nix::sys::socket::AddressFamily::Unix as i32
}

fn libc_sock_stream() -> i32 {
    nix::sys::socket::SockType::Stream as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Env};

    fn forwards(listens: &[(&str, &str)]) -> Config {
        let mut text = String::from("[hosts.h]\n");
        for (name, listen) in listens {
            text.push_str(&format!(
                "[[forward]]\nname = \"{name}\"\nhost = \"h\"\ntype = \"local\"\n\
                 listen = \"{listen}\"\nconnect = \"80\"\n"
            ));
        }
        let env = Env {
            home: Some("/home/u".into()),
            user: "u".into(),
            is_root: false,
            runtime_directory: None,
            xdg_runtime_dir: None,
            xdg_config_home: None,
        };
        Config::parse(&text, std::path::Path::new("/etc/w.toml"), &env).unwrap()
    }

    fn tcp() -> (std::net::TcpListener, std::net::SocketAddr) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    fn activated(name: &str, l: std::net::TcpListener) -> Activated {
        Activated {
            fd: 3,
            name: name.into(),
            listener: PassedListener::Tcp(l),
            required: true,
        }
    }

    fn listen_of(f: &ForwardConfig) -> BindAddr {
        match &f.spec {
            crate::config::ForwardSpec::Local { listen, .. } => listen.clone(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_passed_socket_goes_by_name_first_then_by_address_and_a_leftover_is_named() {
        let (by_name, _) = tcp();
        let (by_addr, addr) = tcp();
        let (stray, stray_addr) = tcp();
        let config = forwards(&[("db", "127.0.0.1:1"), ("web", &addr.to_string())]);
        let mut inherited = Inherited {
            activated: vec![
                activated("db", by_name),
                activated("unknown", by_addr),
                activated("x", stray),
            ],
            forwards: HashMap::new(),
        };
        let (db, web) = (&config.forwards[0], &config.forwards[1]);
        assert!(inherited.take(db, &listen_of(db)).is_some());
        let got = inherited.take(web, &listen_of(web)).unwrap();
        assert_eq!(got.addr().unwrap(), BindAddr::Tcp(addr));
        let left = inherited.unmatched().unwrap();
        assert!(
            left.contains("\"x\"") && left.contains(&stray_addr.to_string()),
            "{left}"
        );
    }

    #[test]
    fn an_upgrade_keeps_a_kernel_picked_port_but_not_a_changed_address() {
        let (l, addr) = tcp();
        let (l2, _) = tcp();
        let config = forwards(&[("a", "127.0.0.1:0"), ("b", "127.0.0.1:2")]);
        let mut inherited = Inherited::default();
        inherited
            .forwards
            .insert("a".into(), PassedListener::Tcp(l));
        inherited
            .forwards
            .insert("b".into(), PassedListener::Tcp(l2));
        let (a, b) = (&config.forwards[0], &config.forwards[1]);
        let got = inherited.take(a, &listen_of(a)).unwrap();
        assert_eq!(got.addr().unwrap(), BindAddr::Tcp(addr));
        assert!(inherited.take(b, &listen_of(b)).is_none());
        // Listeners of an upgrade are never "unmatched": a removed forward's just closes.
        assert!(inherited.unmatched().is_none());
    }

    #[test]
    fn roles_round_trip_as_the_old_process_writes_them() {
        let roles = vec![
            Role::Forward {
                name: "db:local:127.0.0.1:0".into(),
                owned: false,
                path: None,
            },
            Role::Forward {
                name: "sock".into(),
                owned: true,
                path: Some("/run/warren/db.sock".into()),
            },
            Role::Control,
            Role::Metrics {
                owned: false,
                path: None,
            },
            Role::Ready,
        ];
        let json = serde_json::to_string(&roles).unwrap();
        assert_eq!(serde_json::from_str::<Vec<Role>>(&json).unwrap(), roles);
    }
}
