//! Running warren in-process against a harness sshd: configuration text for a harness
//! server, pre-bound listeners for TCP ingresses, and waiting on host and forward state.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use warren::config::{Config, Env};
use warren::daemon::Daemon;
use warren::forward::ForwardRuntime;
use warren::session::{HostState, HostStatus};

use crate::harness::{
    EchoServer, KeyKind, SshServer, Transport, UserKey, WarrenProcess, current_user,
};

/// What most tests start from: a harness sshd, an Ed25519 key it accepts, a TCP echo server.
pub struct Fixture {
    /// The server.
    pub server: SshServer,
    /// A key the server accepts.
    pub key: UserKey,
    /// A TCP echo server, the usual egress.
    pub echo: EchoServer,
}

impl Fixture {
    /// Starts the three.
    pub async fn start() -> anyhow::Result<Self> {
        let server = SshServer::start().await?;
        let key = UserKey::generate(KeyKind::Ed25519, None).await?;
        server.authorize(&key)?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        Ok(Self { server, key, echo })
    }
}

/// `warren status --json -s SOCK` as a document; `None` while no daemon answers.
pub async fn status_json(sock: &str) -> Option<serde_json::Value> {
    let out = crate::harness::run_warren(
        &["status", "--json", "-s", sock],
        &[],
        Duration::from_secs(5),
    )
    .await
    .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// The `[hosts.NAME]` table for a harness server: loopback, its port, the current user,
/// `key` as the only identity, the server's known_hosts file, no agent, short timers.
pub fn host_table(name: &str, server: &SshServer, key: &UserKey) -> String {
    host_table_with(name, server, key, &server.known_hosts_path(), "")
}

/// Like [`host_table`] with another known_hosts file and extra `key = value` lines.
pub fn host_table_with(
    name: &str,
    server: &SshServer,
    key: &UserKey,
    known_hosts: &Path,
    extra: &str,
) -> String {
    let user = current_user().unwrap_or_else(|_| "root".into());
    format!(
        "[hosts.{name}]\nhostname = \"127.0.0.1\"\nport = {port}\nuser = \"{user}\"\n\
         identity_files = [\"{key}\"]\nknown_hosts = [\"{kh}\"]\nagent = false\n\
         connect_timeout = \"10s\"\nkeepalive_interval = \"5s\"\nreconnect_min = \"100ms\"\n\
         reconnect_max = \"2s\"\n{extra}\n",
        port = server.port(),
        key = key.path().display(),
        kh = known_hosts.display(),
    )
}

/// A `[[forward]]` table.
pub fn forward_table(
    name: &str,
    host: &str,
    kind: &str,
    listen: &str,
    connect: Option<&str>,
) -> String {
    let connect = connect
        .map(|c| format!("connect = \"{c}\"\n"))
        .unwrap_or_default();
    format!(
        "[[forward]]\nname = \"{name}\"\nhost = \"{host}\"\ntype = \"{kind}\"\nlisten = \"{listen}\"\n{connect}\n"
    )
}

/// A loopback TCP listener on port 0, to hand to [`TestDaemon::start`] so that a TCP
/// ingress needs no fixed port; its address goes into the forward's `listen`.
pub fn ingress() -> (std::net::TcpListener, SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = l.local_addr().expect("local addr");
    (l, addr)
}

/// A daemon running in this test's runtime.
#[allow(dead_code)] // `config` and `path` are there for tests that need them.
pub struct TestDaemon {
    daemon: Option<Daemon>,
    /// The validated configuration it runs.
    pub config: Config,
    /// Where the configuration file was written.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestDaemon {
    /// Validates `toml` and starts it, adopting `listeners` for the TCP ingresses at their addresses.
    pub async fn start(toml: &str, listeners: Vec<std::net::TcpListener>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("warren.toml");
        std::fs::write(&path, toml)?;
        let config = Config::load_with(&path, &Env::from_process())
            .map_err(|e| anyhow!("config rejected:\n{e}\n---\n{toml}"))?;
        let inherited = warren::handover::Inherited::tcp(listeners);
        let daemon = Daemon::start_with(&config, inherited)
            .await
            .context("daemon start")?;
        Ok(Self {
            daemon: Some(daemon),
            config,
            path,
            _dir: dir,
        })
    }

    /// Writes `toml` over the configuration file and reloads it, adopting `listeners` for
    /// added TCP ingresses; the plan applied. A file that does not validate is an error and
    /// changes nothing.
    #[allow(dead_code)] // Used by the reload tests only.
    pub async fn reload(
        &mut self,
        toml: &str,
        listeners: Vec<std::net::TcpListener>,
    ) -> anyhow::Result<warren::daemon::Reloaded> {
        std::fs::write(&self.path, toml)?;
        let config = Config::load_with(&self.path, &Env::from_process())
            .map_err(|e| anyhow!("config rejected:\n{e}\n---\n{toml}"))?;
        let inherited = warren::handover::Inherited::tcp(listeners);
        let daemon = self.daemon.as_mut().expect("daemon running");
        let plan = daemon.reload_with(config.clone(), inherited).await;
        self.config = config;
        Ok(plan)
    }

    /// The running daemon.
    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon running")
    }

    /// The forward named `name`.
    pub fn forward(&self, name: &str) -> &ForwardRuntime {
        self.daemon()
            .forwards()
            .iter()
            .find(|f| f.config.name == name)
            .unwrap_or_else(|| panic!("no forward {name}"))
    }

    /// The status of host `name` now.
    pub fn host_status(&self, name: &str) -> HostStatus {
        self.daemon()
            .host(name)
            .unwrap_or_else(|| panic!("no host {name}"))
            .status()
    }

    /// Waits until host `name`'s status satisfies `pred`; returns that status.
    pub async fn wait_host(
        &self,
        name: &str,
        limit: Duration,
        pred: impl Fn(&HostStatus) -> bool,
    ) -> anyhow::Result<HostStatus> {
        let mut rx = self
            .daemon()
            .host(name)
            .ok_or_else(|| anyhow!("no host {name}"))?
            .watch_status();
        let waited = tokio::time::timeout(limit, rx.wait_for(|s| pred(s)))
            .await
            .map(|r| r.map(|s| s.clone()));
        match waited {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(_)) => Err(anyhow!("host {name} supervisor ended")),
            Err(_) => Err(anyhow!(
                "timed out after {limit:?} waiting on host {name}; status now {:?}",
                rx.borrow().clone()
            )),
        }
    }

    /// Waits until host `name` is up.
    pub async fn wait_up(&self, name: &str, limit: Duration) -> anyhow::Result<()> {
        self.wait_host(name, limit, |s| s.state == HostState::Up)
            .await
            .map(|_| ())
    }

    /// Orderly shutdown with `grace` for open connections.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(d) = self.daemon.take() {
            d.shutdown(grace).await;
        }
    }
}

/// `table` (a [`host_table`] or [`host_table_with`] text) with its `key = ...` line replaced
/// by `key = value` (`value` written as TOML), or that line added when the table has none.
/// TOML refuses a key twice, so this is how a test changes one of the defaults set above.
pub fn with_setting(table: &str, key: &str, value: &str) -> String {
    let prefix = format!("{key} = ");
    let line = format!("{key} = {value}");
    let mut found = false;
    let mut out: Vec<String> = table
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                found = true;
                line.clone()
            } else {
                l.to_owned()
            }
        })
        .collect();
    if !found {
        out.push(line);
    }
    out.join("\n") + "\n\n"
}

/// The processes of a server's sessions as [`stop_sessions`] stopped them.
pub struct StoppedSessions {
    /// The `sshd -i` process of each stopped session.
    roots: Vec<i32>,
    /// Every stopped process: the roots and their descendants.
    pids: Vec<i32>,
}

/// SIGSTOPs every process of `server`'s live sessions: to the client each session looks like
/// a host that froze (no reply, no reset, its listeners still bound). Unlike
/// [`SshServer::freeze_sessions`], later connections are still served by fresh `sshd -i`
/// processes, so a client can reconnect while the old session holds on to its resources.
pub async fn stop_sessions(server: &SshServer) -> anyhow::Result<StoppedSessions> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let roots = server.session_pids();
    anyhow::ensure!(!roots.is_empty(), "no live session to stop");
    let mut pids: Vec<i32> = Vec::new();
    // Stop what is there, then look again: a process forked meanwhile is stopped too.
    loop {
        let current: Vec<i32> = roots
            .iter()
            .flat_map(|&r| crate::harness::process_tree(r))
            .collect();
        let fresh: Vec<i32> = current.into_iter().filter(|p| !pids.contains(p)).collect();
        if fresh.is_empty() {
            break;
        }
        for &pid in &fresh {
            // A process that is already gone is fine.
            let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
        }
        pids.extend(fresh);
    }
    crate::harness::wait_until(
        Duration::from_secs(5),
        "the session processes to stop",
        || pids.iter().all(|&p| stopped_or_gone(p)),
    )
    .await?;
    Ok(StoppedSessions { roots, pids })
}

impl StoppedSessions {
    /// SIGKILLs the stopped processes and waits until `server` has seen their sessions end;
    /// what they held (sockets, listeners) is released. Other sessions are left alone.
    pub async fn kill(self, server: &SshServer) -> anyhow::Result<()> {
        use nix::errno::Errno;
        use nix::sys::signal::{Signal, kill};
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        use nix::unistd::Pid;
        // Orphaned descendants are re-parented to this process, which reaps them below.
        let _ = nix::sys::prctl::set_child_subreaper(true);
        for &pid in &self.pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        crate::harness::wait_until(
            Duration::from_secs(10),
            "the server to see the killed sessions end",
            || {
                let live = server.session_pids();
                self.roots.iter().all(|r| !live.contains(r))
            },
        )
        .await?;
        // The roots are reaped by the harness that spawned them; the rest here.
        let mut left: Vec<i32> = self
            .pids
            .iter()
            .copied()
            .filter(|p| !self.roots.contains(p))
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !left.is_empty() && std::time::Instant::now() < deadline {
            left.retain(|&pid| {
                match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => true,
                    Ok(_) => false,
                    // Not (yet) our child: still dying, or someone else reaped it.
                    Err(Errno::ECHILD) => Path::new(&format!("/proc/{pid}")).exists(),
                    Err(_) => false,
                }
            });
            if !left.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(())
    }
}

/// Whether `pid` is stopped, a zombie, or gone.
fn stopped_or_gone(pid: i32) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // The state letter follows the command name, which is in parentheses.
    text.rfind(')')
        .and_then(|i| text[i + 1..].split_whitespace().next())
        .is_some_and(|s| matches!(s, "T" | "t" | "Z" | "X"))
}

/// A tempdir for a `warren run` process: its config file (with its own control socket) and a
/// home directory, so that no real user file is read.
pub struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    /// A new tempdir with an empty `home/`.
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("home"))?;
        Ok(Files { dir })
    }

    /// `name` inside the tempdir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The control socket the config names.
    pub fn control_socket(&self) -> PathBuf {
        self.path("control.sock")
    }

    /// Writes `warren.toml`: a `[daemon]` table with this dir's control socket and `daemon`
    /// lines, then `rest`.
    pub fn config(&self, daemon: &str, rest: &str) -> anyhow::Result<PathBuf> {
        let text = format!(
            "[daemon]\ncontrol_socket = \"{}\"\n{daemon}\n\n{rest}",
            self.control_socket().display()
        );
        let path = self.path("warren.toml");
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// The environment for warren: HOME in the tempdir.
    pub fn home(&self) -> String {
        self.path("home").display().to_string()
    }

    /// Starts `warren run -c CONFIG`.
    pub fn spawn(&self, config: &Path) -> anyhow::Result<WarrenProcess> {
        WarrenProcess::spawn(
            &["run", "-c", &config.display().to_string()],
            &[("HOME", &self.home())],
        )
    }
}

/// The number of open file descriptors of process `pid` (entries of `/proc/PID/fd`).
pub fn fd_count(pid: i32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("list /proc/{pid}/fd"))?
        .count())
}
