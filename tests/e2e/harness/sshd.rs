//! `SshServer`: a throwaway OpenSSH server per test, one `sshd -i` per connection accepted on
//! 127.0.0.1:0 (or `[::1]:0`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::keys::{KeyKind, generate_key_pair, read_public, set_mode, with_suffix};
use super::procs;
use super::sessions::{SessionCounts, Sessions};
use super::sshd_config::ServerSettings;
use super::util::{bind_loopback, bind_loopback_v6, is_root, rebind, tail, wait_until};

/// One of the server's host key pairs.
#[derive(Clone, Debug)]
pub struct HostKey {
    /// The key algorithm.
    pub kind: KeyKind,
    /// The private key file (`HostKey`).
    pub path: PathBuf,
    /// The public key file.
    pub public_path: PathBuf,
    /// The public key, `TYPE BASE64` (no comment).
    pub public: String,
}

/// Options for [`SshServer`] before it starts.
pub struct SshServerBuilder {
    password_authentication: bool,
    host_key_kinds: Vec<KeyKind>,
    extra: Vec<String>,
    ipv6: bool,
}

impl SshServerBuilder {
    /// Listens on `[::1]:0` instead of `127.0.0.1:0` (fails where there is no IPv6 loopback).
    pub fn ipv6(mut self) -> Self {
        self.ipv6 = true;
        self
    }

    /// `PasswordAuthentication yes|no` (default no).
    pub fn password_authentication(mut self, on: bool) -> Self {
        self.password_authentication = on;
        self
    }

    /// Which host keys to generate (default ed25519 and ecdsa).
    pub fn host_keys(mut self, kinds: &[KeyKind]) -> Self {
        self.host_key_kinds = kinds.to_vec();
        self
    }

    /// An extra `sshd_config` line; it overrides the harness defaults (see [`ServerSettings`]).
    pub fn config_line(mut self, line: &str) -> Self {
        self.extra.push(line.to_owned());
        self
    }

    /// Generates keys, writes and checks the config, binds 127.0.0.1:0 (or `[::1]:0`) and
    /// starts serving.
    pub async fn start(self) -> anyhow::Result<SshServer> {
        ensure_privsep_dir()?;
        let dir = tempfile::tempdir().context("create the sshd tempdir")?;
        let mut host_keys = Vec::new();
        for kind in self.host_key_kinds {
            let path = dir.path().join(format!("ssh_host_{}_key", kind.name()));
            generate_key_pair(kind, &path, None, "warren-e2e-host").await?;
            let public_path = with_suffix(&path, ".pub");
            let line = read_public(&public_path)?;
            let public = line
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            host_keys.push(HostKey {
                kind,
                path,
                public_path,
                public,
            });
        }
        let authorized_keys = dir.path().join("authorized_keys");
        std::fs::write(&authorized_keys, "").context("create authorized_keys")?;
        set_mode(&authorized_keys, 0o600)?;
        let settings = ServerSettings {
            host_keys: host_keys.iter().map(|k| k.path.clone()).collect(),
            host_certificates: Vec::new(),
            authorized_keys: authorized_keys.clone(),
            trusted_user_ca_keys: None,
            password_authentication: self.password_authentication,
            extra: self.extra,
        };
        let config = dir.path().join("sshd_config");
        settings.install(&config).await?;
        let log = dir.path().join("sshd.log");
        std::fs::write(&log, "").context("create the sshd log")?;

        let listener = if self.ipv6 {
            bind_loopback_v6().await?
        } else {
            bind_loopback().await?
        };
        let bound = listener.local_addr().context("local address")?;
        let (ip, port) = (bound.ip(), bound.port());
        let sessions = Arc::new(Sessions::new(config.clone(), log.clone()));
        let acceptor = Acceptor::start(listener, sessions.clone());
        let server = SshServer {
            dir,
            ip,
            port,
            config,
            log,
            authorized_keys,
            host_keys,
            settings: tokio::sync::Mutex::new(settings),
            sessions,
            acceptor: Mutex::new(Some(acceptor)),
        };
        std::fs::write(server.known_hosts_path(), server.known_hosts())
            .context("write known_hosts")?;
        Ok(server)
    }
}

/// A throwaway OpenSSH server. Config and authorized keys are re-read by every
/// new session, so changes apply to the next connection. Dropping it kills every process it started.
pub struct SshServer {
    pub(super) dir: TempDir,
    /// `127.0.0.1`, or `::1` when built with [`SshServerBuilder::ipv6`].
    ip: IpAddr,
    port: u16,
    pub(super) config: PathBuf,
    log: PathBuf,
    pub(super) authorized_keys: PathBuf,
    pub(super) host_keys: Vec<HostKey>,
    /// Async so that a change is checked and installed before the next one starts.
    pub(super) settings: tokio::sync::Mutex<ServerSettings>,
    sessions: Arc<Sessions>,
    acceptor: Mutex<Option<Acceptor>>,
}

impl SshServer {
    /// A builder with the defaults: no password auth, ed25519 and ecdsa host keys.
    pub fn builder() -> SshServerBuilder {
        SshServerBuilder {
            password_authentication: false,
            host_key_kinds: vec![KeyKind::Ed25519, KeyKind::Ecdsa],
            extra: Vec::new(),
            ipv6: false,
        }
    }

    /// Starts a server with the defaults.
    pub async fn start() -> anyhow::Result<Self> {
        Self::builder().start().await
    }

    /// `127.0.0.1:PORT` (or `[::1]:PORT`).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// The address it listens on: `127.0.0.1` (or `::1`).
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's tempdir (config, keys, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `sshd_config` path.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The host keys, in the order sshd offers them.
    pub fn host_keys(&self) -> &[HostKey] {
        &self.host_keys
    }

    /// The host key of one algorithm.
    pub fn host_key(&self, kind: KeyKind) -> Option<&HostKey> {
        self.host_keys.iter().find(|k| k.kind == kind)
    }

    /// `[HOST]:PORT KEY` known_hosts lines (one per host key) for `host`, e.g. `127.0.0.1` or an alias.
    pub fn known_hosts_line(&self, host: &str) -> String {
        self.known_hosts_for_pattern(&self.host_pattern(host))
    }

    /// known_hosts lines for an arbitrary host `pattern` (e.g. `[127.0.0.1]:PROXY_PORT`).
    pub fn known_hosts_for_pattern(&self, pattern: &str) -> String {
        let lines: Vec<String> = self
            .host_keys
            .iter()
            .map(|k| format!("{pattern} {}\n", k.public))
            .collect();
        lines.concat()
    }

    /// The known_hosts lines for the address it listens on (`127.0.0.1` or `::1`).
    pub fn known_hosts(&self) -> String {
        self.known_hosts_line(&self.ip.to_string())
    }

    /// A known_hosts file holding [`SshServer::known_hosts`].
    pub fn known_hosts_path(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// How OpenSSH writes `host` with this port in known_hosts (`[host]:port`).
    pub fn host_pattern(&self, host: &str) -> String {
        if self.port == 22 {
            host.to_owned()
        } else {
            format!("[{host}]:{}", self.port)
        }
    }

    /// Connections accepted and `sshd -i` processes alive.
    pub fn session_counts(&self) -> SessionCounts {
        self.sessions.counts()
    }

    /// Connections accepted since start.
    pub fn sessions_accepted(&self) -> usize {
        self.sessions.counts().accepted
    }

    /// `sshd -i` processes alive now.
    pub fn sessions_alive(&self) -> usize {
        self.sessions.counts().alive
    }

    /// Pids of the live `sshd -i` processes (one per session).
    pub fn session_pids(&self) -> Vec<i32> {
        self.sessions.pids()
    }

    /// Every process of every live session: the `sshd -i` processes and their descendants.
    pub fn session_process_pids(&self) -> Vec<i32> {
        self.sessions
            .pids()
            .into_iter()
            .flat_map(procs::tree)
            .collect()
    }

    /// Waits (on change notifications) until `pred` holds for the session counts.
    pub async fn wait_sessions(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(SessionCounts) -> bool,
    ) -> anyhow::Result<SessionCounts> {
        self.sessions.wait(limit, what, pred).await
    }

    /// SIGKILLs every live session (the client sees its connection reset); returns
    /// once the server has seen them exit. Returns how many were killed.
    pub async fn kill_sessions(&self) -> anyhow::Result<usize> {
        self.sessions.kill_all().await
    }

    /// SIGSTOPs every live session with all its processes, and parks new
    /// connections without answering, until [`SshServer::thaw_sessions`].
    pub fn freeze_sessions(&self) -> anyhow::Result<usize> {
        self.sessions.freeze()
    }

    /// Resumes frozen sessions and serves the connections parked meanwhile.
    pub fn thaw_sessions(&self) -> anyhow::Result<()> {
        self.sessions.thaw()
    }

    /// Stops listening: new connections are refused at once. Live sessions stay.
    pub fn stop_accepting(&self) {
        if let Some(acceptor) = lock(&self.acceptor).take() {
            acceptor.stop();
        }
    }

    /// Listens on the same port again (fails if someone else took it meanwhile).
    pub fn resume_accepting(&self) -> anyhow::Result<()> {
        let mut acceptor = lock(&self.acceptor);
        if acceptor.is_none() {
            let listener = rebind(self.addr())?;
            *acceptor = Some(Acceptor::start(listener, self.sessions.clone()));
        }
        Ok(())
    }

    /// The sshd log so far (all sessions, `LogLevel DEBUG1`).
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Whether the log contains `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        self.log().contains(needle)
    }

    /// Polls the log until it contains `needle`; the error quotes the log's tail.
    pub async fn wait_for_log(&self, needle: &str, limit: Duration) -> anyhow::Result<()> {
        let what = format!("sshd to log {needle:?}");
        wait_until(limit, &what, || self.log_contains(needle))
            .await
            .with_context(|| format!("sshd log tail:\n{}", tail(&self.log(), 30)))
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        if let Some(acceptor) = lock(&self.acceptor).take() {
            acceptor.stop();
        }
        self.sessions.shut_down();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The listening socket and the task accepting on it.
struct Acceptor {
    listener: Arc<TcpListener>,
    task: JoinHandle<()>,
}

impl Acceptor {
    fn start(listener: TcpListener, sessions: Arc<Sessions>) -> Self {
        let listener = Arc::new(listener);
        let task = tokio::spawn(accept_loop(listener.clone(), sessions));
        Acceptor { listener, task }
    }

    /// Stops listening at once. Closing the fd would not be enough: a child
    /// that another test forks at that moment holds a copy until it execs,
    /// and the socket would keep accepting meanwhile. `shutdown` acts on the
    /// socket itself and turns it back into a non-listening one.
    fn stop(self) {
        let _ = socket2::SockRef::from(&*self.listener).shutdown(std::net::Shutdown::Read);
        self.task.abort();
    }
}

async fn accept_loop(listener: Arc<TcpListener>, sessions: Arc<Sessions>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(sessions.clone().serve(stream));
            }
            // Out of descriptors, or stopped: back off briefly instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// sshd running as root chroots its unprivileged child into `/run/sshd`.
fn ensure_privsep_dir() -> anyhow::Result<()> {
    if is_root() {
        std::fs::create_dir_all("/run/sshd").context("create /run/sshd")?;
    }
    Ok(())
}
