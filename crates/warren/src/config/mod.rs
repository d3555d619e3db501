//! The configuration file: raw TOML (stage one), validated typed config (stage two),
//! and the environment that fills in defaults.

mod address;
pub mod algorithms;
mod destination;
mod diag;
mod diff;
mod duration;
mod env;
pub mod names;
mod raw;
pub mod ssh_config;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use address::{BindAddr, Endpoint, parse_bind, parse_egress, parse_remote_bind};
pub use algorithms::Algorithms;
pub use destination::Destination;
pub use diag::{ConfigError, Diagnostic, Problem, line_column};
pub use diff::{Plan, diff};
pub use duration::{MAX_DURATION, format_duration, parse_duration};
pub use env::Env;

/// A validated configuration: everything the daemon needs, nothing left to check.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// `[daemon]`.
    pub daemon: DaemonConfig,
    /// `[hosts.*]` by name, plus a synthesized entry per ad-hoc jump hop.
    pub hosts: BTreeMap<String, Arc<HostConfig>>,
    /// `[[forward]]` in file order.
    pub forwards: Vec<ForwardConfig>,
}

/// `[daemon]`, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Where `status` and `reload` reach the daemon.
    pub control_socket: PathBuf,
    /// The group that may use the control socket too (mode 0660); `None`: the owner only
    /// (0600).
    pub control_socket_group: Option<SocketGroup>,
    /// How long open connections may finish on stop.
    pub shutdown_grace: Duration,
    /// An OpenSSH client config to resolve host names through, when enabled.
    pub ssh_config: Option<PathBuf>,
    /// Where `GET /metrics` is served; `None`: nowhere.
    pub metrics_listen: Option<BindAddr>,
}

/// How long a jump host that follows on-demand hosts (it carries no forward and only they
/// use it) stays up after the last of them closed: long enough for one to reconnect.
pub const HOP_LINGER: Duration = Duration::from_secs(5);

/// A group given access to a socket, resolved when the file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketGroup {
    /// As written.
    pub name: String,
    /// Its id.
    pub gid: u32,
}

/// What to do with a host key that no known_hosts file lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Refuse it.
    Strict,
    /// Record it in the first known_hosts file and trust it from then on.
    AcceptNew,
}

/// Which addresses of the server's name a direct connection tries (ssh's `AddressFamily`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressFamily {
    /// IPv4 and IPv6, in the resolver's order.
    #[default]
    Any,
    /// IPv4 only (`ssh -4`).
    Inet,
    /// IPv6 only (`ssh -6`).
    Inet6,
}

impl AddressFamily {
    /// Whether `addr` is of this family.
    pub fn admits(self, addr: &std::net::SocketAddr) -> bool {
        match self {
            Self::Any => true,
            Self::Inet => addr.is_ipv4(),
            Self::Inet6 => addr.is_ipv6(),
        }
    }
}

/// How a host's SSH connection is carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A TCP connection to the host itself.
    Direct,
    /// Through a chain of jump hosts, first hop first; each names an entry of `Config::hosts`.
    Jump(Vec<String>),
    /// The stdin/stdout of `/bin/sh -c COMMAND`.
    ProxyCommand(String),
}

/// One host, `[defaults]` and built-in defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// The `[hosts.NAME]` name (or `user@host:port` for an ad-hoc jump hop).
    pub name: String,
    /// The name or address to connect to (resolved again on every attempt).
    pub hostname: String,
    /// SSH port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Private keys to offer, in order.
    pub identity_files: Vec<PathBuf>,
    /// True when `identity_files` was written in the file (a missing one is then an error,
    /// not something to skip quietly).
    pub identity_files_explicit: bool,
    /// User certificates (`-cert.pub` files) offered with the identity whose key they
    /// certify, besides each identity's own `KEY-cert.pub`.
    pub certificate_files: Vec<PathBuf>,
    /// File holding the passphrase of encrypted keys.
    pub passphrase_file: Option<PathBuf>,
    /// Offer the keys of `$SSH_AUTH_SOCK`.
    pub agent: bool,
    /// File holding a password, tried last.
    pub password_file: Option<PathBuf>,
    /// known_hosts files, first one written by `accept-new`.
    pub known_hosts: Vec<PathBuf>,
    /// Unknown-key policy.
    pub host_key_policy: HostKeyPolicy,
    /// Pinned `SHA256:` fingerprints, accepted instead of known_hosts.
    pub host_key_fingerprints: Vec<String>,
    /// How the connection is carried.
    pub route: Route,
    /// Which of the server's addresses a direct connection tries.
    pub address_family: AddressFamily,
    /// TCP connect + handshake + auth, per attempt.
    pub connect_timeout: Duration,
    /// Silence before a keepalive is sent.
    pub keepalive_interval: Duration,
    /// Unanswered keepalives before the session is dead.
    pub keepalive_count_max: u32,
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Largest reconnect delay.
    pub reconnect_max: Duration,
    /// The algorithms offered.
    pub algorithms: Algorithms,
    /// `host_key_algorithms` was set: its certificate algorithms are offered as written
    /// (else only when a known_hosts file names a certificate authority).
    pub host_key_algorithms_set: bool,
    /// `Some(idle_timeout)` for a host whose session is opened by the first connection and
    /// closed once none has been open for `idle_timeout` (`on_demand = true`, or a jump host
    /// used only by such hosts); `None`: the session is kept up all the time.
    pub on_demand: Option<Duration>,
}

/// One `[[forward]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardConfig {
    /// Unique name (`<host>:<type>:<listen>` unless set).
    pub name: String,
    /// The `[hosts.*]` whose session carries it.
    pub host: String,
    /// Kind and addresses.
    pub spec: ForwardSpec,
    /// Connections open at once; one more is refused (`None`: no limit).
    pub max_connections: Option<u32>,
    /// The mode of a Unix-socket ingress on this machine (0600 unless set).
    pub socket_mode: u32,
    /// How often the egress is probed (local and remote forwards); `None`: never.
    pub probe_interval: Option<Duration>,
}

/// The four forward kinds and their addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardSpec {
    /// `-L`: listen here, connect from the server.
    Local {
        /// Ingress on this machine.
        listen: BindAddr,
        /// Egress as seen from the server.
        connect: Endpoint,
    },
    /// `-R`: listen on the server, connect from here.
    Remote {
        /// Ingress on the server (port 0: the server picks).
        listen: Endpoint,
        /// Egress as seen from this machine.
        connect: Endpoint,
    },
    /// `-D`: a SOCKS (and HTTP CONNECT) proxy here whose connections leave from the server.
    Dynamic {
        /// Ingress on this machine.
        listen: BindAddr,
    },
    /// `-R [BIND:]PORT`: a SOCKS (and HTTP CONNECT) proxy on the server whose connections
    /// leave from this machine.
    RemoteDynamic {
        /// Ingress on the server (port 0: the server picks).
        listen: Endpoint,
    },
}

impl ForwardSpec {
    /// `local`, `remote`, `dynamic` or `remote-dynamic`, as the file writes it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Local { .. } => "local",
            Self::Remote { .. } => "remote",
            Self::Dynamic { .. } => "dynamic",
            Self::RemoteDynamic { .. } => "remote-dynamic",
        }
    }

    /// The ingress on the SSH server, for the kinds that listen there (`remote` and
    /// `remote-dynamic`).
    pub fn remote_listen(&self) -> Option<&Endpoint> {
        match self {
            Self::Remote { listen, .. } | Self::RemoteDynamic { listen } => Some(listen),
            Self::Local { .. } | Self::Dynamic { .. } => None,
        }
    }

    /// The ingress, as text.
    pub fn listen_text(&self) -> String {
        match self {
            Self::Local { listen, .. } | Self::Dynamic { listen } => listen.to_string(),
            Self::Remote { listen, .. } | Self::RemoteDynamic { listen } => listen.to_string(),
        }
    }

    /// The egress, as text (`-` for a dynamic forward of either side).
    pub fn connect_text(&self) -> String {
        match self {
            Self::Local { connect, .. } | Self::Remote { connect, .. } => connect.to_string(),
            Self::Dynamic { .. } | Self::RemoteDynamic { .. } => "-".into(),
        }
    }

    /// Whether each connection names its own destination (SOCKS or HTTP CONNECT).
    pub fn is_dynamic(&self) -> bool {
        matches!(self, Self::Dynamic { .. } | Self::RemoteDynamic { .. })
    }
}

impl Config {
    /// Reads and validates `path` in the environment of this process.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, &Env::from_process())
    }

    /// Reads and validates `path` with an explicit environment (for tests).
    pub fn load_with(path: &Path, env: &Env) -> Result<Self, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&src, path, env)
    }

    /// Validates `src` as if read from `path`.
    pub fn parse(src: &str, path: &Path, env: &Env) -> Result<Self, ConfigError> {
        let mut diags = Vec::new();
        let raw = raw::parse(src, &mut diags);
        let config = raw.and_then(|raw| validate::validate(raw, path, env, &mut diags));
        match config {
            Some(config) if diags.is_empty() => Ok(config),
            _ => Err(ConfigError::invalid(path, src, diags)),
        }
    }

    /// The hosts that carry at least one forward, or that another such host jumps through.
    pub fn active_hosts(&self) -> Vec<Arc<HostConfig>> {
        let mut wanted: Vec<String> = Vec::new();
        for f in &self.forwards {
            let mut stack = vec![f.host.clone()];
            while let Some(name) = stack.pop() {
                if wanted.contains(&name) {
                    continue;
                }
                if let Some(host) = self.hosts.get(&name) {
                    if let Route::Jump(hops) = &host.route {
                        stack.extend(hops.iter().cloned());
                    }
                    wanted.push(name);
                }
            }
        }
        self.hosts
            .values()
            .filter(|h| wanted.contains(&h.name))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) mod proptest_model;
#[cfg(test)]
mod proptests;
