//! A throwaway network of Linux network namespaces joined by veth pairs, with an OpenSSH
//! server and an echo service inside them: hosts that really cannot see each other.
//!
//! Only addresses in 10.231.0.0/16 are used, and they exist only on the veth ends this lab
//! creates. The link from this (the root) namespace to the first hop gets a /24 of its own
//! (10.231.1-199.0/24, one per lab); the links between namespaces use 10.231.200-254.0/24,
//! which are never routed in the root namespace. Everything is torn down when the [`Lab`] is
//! dropped, also when the test fails or times out.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};

use crate::harness::{
    KeyKind, UserKey, is_root, process_tree, run_checked, tail, wait_for, wait_until, within,
};

/// sshd must be started by absolute path (it re-executes itself).
const SSHD: &str = "/usr/sbin/sshd";
/// The port the lab's sshd servers listen on (inside namespaces the lab owns).
pub const SSH_PORT: u16 = 22;
/// The port of the echo services (inside namespaces the lab owns).
pub const ECHO_PORT: u16 = 7007;
/// How long a server may take to answer after it was started.
const READY: Duration = Duration::from_secs(10);

/// Labs made by this process, for unique names.
static LABS: AtomicU32 = AtomicU32::new(0);
/// Root-facing subnets (third octet) in use by labs of this process.
static SUBNETS: Mutex<BTreeSet<u8>> = Mutex::new(BTreeSet::new());

/// One network namespace of a lab.
#[derive(Clone, Debug)]
pub struct Ns {
    /// The `ip netns` name.
    pub name: String,
}

/// Namespaces, links and processes of one test; all removed on drop.
pub struct Lab {
    /// Unique per lab: `wrn{pid:x}x{n:x}`; prefix of veth names (at most 15 characters).
    tag: String,
    /// The `ip netns` name prefix: `warren-e2e-{pid}-{n}-`.
    prefix: String,
    /// Third octet of the root-facing subnet, released on drop.
    subnet: u8,
    namespaces: Vec<String>,
    root_links: Vec<String>,
    links: u32,
    /// The servers this lab started, reaped on drop.
    children: Vec<Child>,
    dir: tempfile::TempDir,
    key: UserKey,
    authorized_keys: PathBuf,
    known_hosts: PathBuf,
}

impl Lab {
    /// An empty lab: a client key, its authorized_keys and an empty known_hosts. Fails (never
    /// skips) when namespaces cannot be made here.
    pub async fn new() -> anyhow::Result<Lab> {
        ensure!(
            is_root(),
            "the netns tests need root (they create network namespaces and veth pairs with \
             `ip netns add` / `ip link add`); run them as root, e.g. in the CI container"
        );
        let pid = std::process::id();
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        remove_stale_namespaces().await;
        std::fs::create_dir_all("/run/sshd").context("create /run/sshd for sshd")?;
        let subnet = claim_subnet().await?;
        let dir = tempfile::tempdir().context("create the lab tempdir")?;
        let key = UserKey::generate(KeyKind::Ed25519, None).await?;
        let authorized_keys = dir.path().join("authorized_keys");
        std::fs::write(&authorized_keys, format!("{}\n", key.public_key()))
            .context("write authorized_keys")?;
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, "").context("create known_hosts")?;
        Ok(Lab {
            tag: format!("wrn{pid:x}x{:x}", n & 0xff),
            prefix: format!("warren-e2e-{pid}-{n}-"),
            subnet,
            namespaces: Vec::new(),
            root_links: Vec::new(),
            links: 0,
            children: Vec::new(),
            dir,
            key,
            authorized_keys,
            known_hosts,
        })
    }

    /// The lab's tempdir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new namespace with its loopback up and IP forwarding off.
    pub async fn namespace(&mut self, role: &str) -> anyhow::Result<Ns> {
        let name = format!("{}{role}", self.prefix);
        run_checked(
            Command::new("ip").args(["netns", "add", &name]),
            &format!(
                "ip netns add {name} (the netns tests need network namespaces; is this a \
                 container without CAP_SYS_ADMIN?)"
            ),
        )
        .await?;
        self.namespaces.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"]).await?;
        // Off by default; set anyway: the isolation must not depend on a host default.
        run_checked(
            Command::new("ip").args([
                "netns",
                "exec",
                &name,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=0",
            ]),
            "disable forwarding in the namespace",
        )
        .await?;
        Ok(Ns { name })
    }

    /// A veth pair from this (the root) namespace to `ns`: `10.231.S.1` here, `10.231.S.2`
    /// there. Returns (root-side device, address in `ns`).
    pub async fn link_root(&mut self, ns: &Ns) -> anyhow::Result<(String, Ipv4Addr)> {
        let (here, there) = self.veth_names();
        let s = self.subnet;
        ip(&["link", "add", &here, "type", "veth", "peer", "name", &there]).await?;
        self.root_links.push(here.clone());
        ip(&["link", "set", &there, "netns", &ns.name]).await?;
        ip(&["addr", "add", &format!("10.231.{s}.1/24"), "dev", &here]).await?;
        ip(&["link", "set", &here, "up"]).await?;
        configure(ns, &there, Ipv4Addr::new(10, 231, s, 2)).await?;
        Ok((here, Ipv4Addr::new(10, 231, s, 2)))
    }

    /// A veth pair between `a` and `b` in subnet `10.231.S.0/24` (S in 200..=254, private to
    /// the lab's namespaces): `.1` in `a`, `.2` in `b`. Returns both addresses.
    pub async fn link(&mut self, a: &Ns, b: &Ns, s: u8) -> anyhow::Result<(Ipv4Addr, Ipv4Addr)> {
        ensure!(s >= 200, "inner links use 10.231.200-254.0/24");
        let (ea, eb) = self.veth_names();
        ip(&["link", "add", &ea, "type", "veth", "peer", "name", &eb]).await?;
        // Moving the first end out makes the namespace own the pair: deleting it removes both.
        if let Err(e) = ip(&["link", "set", &ea, "netns", &a.name]).await {
            let _ = ip(&["link", "del", &ea]).await;
            return Err(e);
        }
        ip(&["link", "set", &eb, "netns", &b.name]).await?;
        let (ipa, ipb) = (Ipv4Addr::new(10, 231, s, 1), Ipv4Addr::new(10, 231, s, 2));
        configure(a, &ea, ipa).await?;
        configure(b, &eb, ipb).await?;
        Ok((ipa, ipb))
    }

    fn veth_names(&mut self) -> (String, String) {
        self.links += 1;
        let k = self.links;
        (format!("{}{k}a", self.tag), format!("{}{k}b", self.tag))
    }

    /// Starts `sshd -D` on 0.0.0.0:22 inside `ns` (a host key of its own, the lab key
    /// authorized for root, `LogLevel VERBOSE` into its own log), adds `ip KEY` to the
    /// lab's known_hosts and returns once a client in `probe_from` (this namespace when
    /// `None`) gets its banner from `ip:22`.
    pub async fn sshd(
        &mut self,
        ns: &Ns,
        ip: Ipv4Addr,
        probe_from: Option<&Ns>,
    ) -> anyhow::Result<Sshd> {
        let base = self.dir.path().join(&ns.name);
        std::fs::create_dir_all(&base).context("create the sshd dir")?;
        let host_key = base.join("ssh_host_ed25519_key");
        run_checked(
            Command::new("ssh-keygen")
                .args([
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "warren-e2e-host",
                    "-f",
                ])
                .arg(&host_key),
            "ssh-keygen (host key)",
        )
        .await?;
        let public = std::fs::read_to_string(base.join("ssh_host_ed25519_key.pub"))
            .context("read the host key")?;
        let public: Vec<&str> = public.split_whitespace().take(2).collect();
        let config = base.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "# Written by the warren e2e netns lab.\n\
                 ListenAddress 0.0.0.0:{SSH_PORT}\nAddressFamily inet\n\
                 HostKey {}\nAuthorizedKeysFile {}\n{SSHD_FIXED}",
                host_key.display(),
                self.authorized_keys.display()
            ),
        )
        .context("write sshd_config")?;
        run_checked(
            Command::new(SSHD).arg("-t").arg("-f").arg(&config),
            "sshd -t (check the lab sshd_config)",
        )
        .await?;
        let log = base.join("sshd.log");
        std::fs::write(&log, "").context("create the sshd log")?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, SSHD, "-D", "-f"])
            .arg(&config)
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start sshd in the namespace")?;
        let pid = child.id().context("sshd pid")? as i32;
        let mut kh = std::fs::read_to_string(&self.known_hosts).unwrap_or_default();
        kh.push_str(&format!("{ip} {}\n", public.join(" ")));
        std::fs::write(&self.known_hosts, kh).context("write known_hosts")?;
        let server = Sshd {
            ns: ns.clone(),
            pid,
            log,
        };
        self.children.push(child);
        let from = probe_from.cloned();
        let what = format!("sshd in {} to send its banner on {ip}:{SSH_PORT}", ns.name);
        wait_for(READY, &what, || banner(from.as_ref(), ip, SSH_PORT))
            .await
            .with_context(|| format!("sshd log:\n{}", tail(&server.log(), 20)))?;
        Ok(server)
    }

    /// Starts an echo service on `ip:ECHO_PORT` inside `ns` (each connection gets its bytes
    /// back and a half-close after the client's) and returns once it listens.
    pub async fn echo(&mut self, ns: &Ns, ip: Ipv4Addr) -> anyhow::Result<Echo> {
        let err = self.dir.path().join(format!("{}-echo.err", ns.name));
        let err_file = std::fs::File::create(&err).context("create the echo log")?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "/usr/bin/python3", "-u", "-c"])
            .arg(ECHO_PY)
            .arg(ip.to_string())
            .arg(ECHO_PORT.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err_file))
            .kill_on_drop(true)
            .spawn()
            .context("start the echo service (python3) in the namespace")?;
        let stdout = child.stdout.take().context("echo stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = within(READY, "the echo service to listen", lines.next_line()).await?;
        if line.ok().flatten().as_deref() != Some("ready") {
            bail!(
                "the echo service in {} did not start: {}",
                ns.name,
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        self.children.push(child);
        Ok(Echo {
            addr: SocketAddr::from((ip, ECHO_PORT)),
        })
    }

    /// Settings for a lab host in a `[hosts.*]` or `[defaults]` table: the lab key, the
    /// lab known_hosts, no agent, short timers.
    pub fn client_settings(&self) -> String {
        format!(
            "identity_files = [\"{}\"]\nknown_hosts = [\"{}\"]\nagent = false\n\
             connect_timeout = \"10s\"\nkeepalive_interval = \"5s\"\n\
             reconnect_min = \"100ms\"\nreconnect_max = \"2s\"\n",
            self.key.path().display(),
            self.known_hosts.display()
        )
    }

    /// A `[hosts.NAME]` table for the lab server at `ip` (port 22, user root) plus `extra`.
    pub fn host_table(&self, name: &str, ip: Ipv4Addr, extra: &str) -> String {
        format!(
            "[hosts.{name}]\nhostname = \"{ip}\"\nport = {SSH_PORT}\nuser = \"root\"\n{}{extra}\n",
            self.client_settings()
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        // Everything still running inside the lab (servers, sessions, probes, proxies) is
        // this test's; a namespace with processes left would outlive `ip netns del`.
        let mut killed = Vec::new();
        for ns in &self.namespaces {
            for pid in netns_pids(ns) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                killed.push(pid);
            }
        }
        let ours: Vec<i32> = self
            .children
            .iter()
            .filter_map(|c| c.id())
            .map(|p| p as i32)
            .collect();
        // Reaped here rather than left to tokio: the test process may exit first, and a
        // container's init may never reap what it inherits.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        for child in &mut self.children {
            let _ = child.start_kill();
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        killed.retain(|p| !ours.contains(p));
        reap(&killed);
        for link in &self.root_links {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", link])
                .stderr(Stdio::null())
                .status();
        }
        for ns in &self.namespaces {
            let ok = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("netns lab: could not delete namespace {ns}");
            }
        }
        SUBNETS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.subnet);
    }
}

/// An sshd listening inside a lab namespace.
pub struct Sshd {
    /// Its namespace.
    pub ns: Ns,
    /// The listening `sshd -D` process; each connection is a child of it.
    pid: i32,
    log: PathBuf,
}

impl Sshd {
    /// The log of all its connections so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Sessions that passed authentication so far.
    pub fn accepted(&self) -> usize {
        self.log().matches("Accepted publickey for root").count()
    }

    /// The per-connection processes now (the listener's descendants).
    pub fn session_pids(&self) -> Vec<i32> {
        process_tree(self.pid).into_iter().skip(1).collect()
    }

    /// SIGKILLs every per-connection process (the client sees its connection die) and waits
    /// until they are gone. The listener stays. Returns how many were killed.
    pub async fn kill_sessions(&self) -> anyhow::Result<usize> {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let pids = self.session_pids();
        ensure!(
            !pids.is_empty(),
            "no session on the sshd in {}",
            self.ns.name
        );
        for &pid in &pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // The listener reaps its children; a grandchild re-parented elsewhere exits anyway.
        wait_until(
            Duration::from_secs(5),
            "the killed sshd sessions to be gone",
            || pids.iter().all(|&p| gone_or_zombie(p)),
        )
        .await?;
        Ok(pids.len())
    }
}

/// An echo service inside a lab namespace.
pub struct Echo {
    /// Where it listens (only reachable from its namespace and its neighbours).
    pub addr: SocketAddr,
}

/// What a TCP connection attempt got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Connected: something listens there and the path carries traffic.
    Connected,
    /// Refused: the address answered (with a reset), so the path carries traffic.
    Refused,
    /// No answer within the limit, or no route: the address cannot be reached from here.
    Nothing(String),
}

/// A TCP connection from this namespace to `addr`, forced out through `device` (a lab veth, so
/// that nothing leaves the machine whatever the routing table says), within `limit`.
pub async fn connect_via(device: &str, addr: SocketAddr, limit: Duration) -> anyhow::Result<Reach> {
    let socket = TcpSocket::new_v4().context("create a TCP socket")?;
    socket
        .bind_device(Some(device.as_bytes()))
        .with_context(|| format!("bind a socket to {device}"))?;
    Ok(
        match tokio::time::timeout(limit, socket.connect(addr)).await {
            Ok(Ok(_)) => Reach::Connected,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Reach::Refused,
            Ok(Err(e)) => Reach::Nothing(e.to_string()),
            Err(_) => Reach::Nothing(format!("no answer within {limit:?}")),
        },
    )
}

/// Whether a TCP connection from inside `ns` reaches `ip:port` within a second (`nc -z`).
pub async fn reachable_from(ns: &Ns, ip: Ipv4Addr, port: u16) -> anyhow::Result<bool> {
    let status = Command::new("ip")
        .args(["netns", "exec", &ns.name, "nc", "-z", "-w", "1"])
        .arg(ip.to_string())
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    let status = within(Duration::from_secs(5), "nc -z", status)
        .await?
        .context("run nc -z")?;
    Ok(status.success())
}

/// How `ip route get ADDR` answers in this namespace (an error text when there is no route).
pub async fn route_get(addr: Ipv4Addr) -> String {
    match Command::new("ip")
        .args(["route", "get"])
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .output()
        .await
    {
        Ok(out) => format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => format!("ip route get failed: {e}"),
    }
}

/// The SSH banner from `ip:port`, connecting from `from` (this namespace when `None`).
async fn banner(from: Option<&Ns>, ip: Ipv4Addr, port: u16) -> Option<String> {
    let line = match from {
        None => {
            let stream = within(
                Duration::from_secs(1),
                "connect",
                TcpStream::connect((ip, port)),
            )
            .await
            .ok()?
            .ok()?;
            let mut lines = BufReader::new(stream).lines();
            within(Duration::from_secs(2), "banner", lines.next_line())
                .await
                .ok()?
                .ok()??
        }
        Some(ns) => {
            let mut child = Command::new("ip")
                .args(["netns", "exec", &ns.name, "nc", "-w", "2"])
                .arg(ip.to_string())
                .arg(port.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .ok()?;
            let stdout = child.stdout.take()?;
            let mut lines = BufReader::new(stdout).lines();
            let line = within(Duration::from_secs(2), "banner", lines.next_line()).await;
            let _ = child.start_kill();
            let _ = within(Duration::from_secs(2), "nc to exit", child.wait()).await;
            line.ok()?.ok()??
        }
    };
    line.starts_with("SSH-2.0-").then_some(line)
}

/// `ip ARGS`, failing with its stderr.
async fn ip(args: &[&str]) -> anyhow::Result<()> {
    run_checked(
        Command::new("ip").args(args),
        &format!("ip {}", args.join(" ")),
    )
    .await
    .map(|_| ())
}

/// Gives `dev` in `ns` the address `addr/24` and brings it up.
async fn configure(ns: &Ns, dev: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
    ip(&[
        "-n",
        &ns.name,
        "addr",
        "add",
        &format!("{addr}/24"),
        "dev",
        dev,
    ])
    .await?;
    ip(&["-n", &ns.name, "link", "set", dev, "up"]).await
}

/// A third octet in 1..=199 that neither another lab of this process nor anything else in
/// this namespace uses for 10.231.X.0/24.
async fn claim_subnet() -> anyhow::Result<u8> {
    let addrs = run_checked(
        Command::new("ip").args(["-4", "-o", "addr", "show"]),
        "ip -4 -o addr show",
    )
    .await?;
    let start = (std::process::id() % 199) as u8;
    let mut used = SUBNETS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for i in 0..199u8 {
        let s = 1 + (start + i) % 199;
        if !used.contains(&s) && !addrs.contains(&format!(" 10.231.{s}.")) {
            used.insert(s);
            return Ok(s);
        }
    }
    bail!("no free 10.231.X.0/24 for the lab's root link")
}

/// Deletes namespaces that a killed run of these tests left behind (their pid is gone).
async fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output().await else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix("warren-e2e-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            for p in netns_pids(name) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .status()
                .await;
        }
    }
}

/// Pids of the processes in namespace `ns`.
fn netns_pids(ns: &str) -> Vec<i32> {
    std::process::Command::new("ip")
        .args(["netns", "pids", ns])
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Reaps `pids` that were re-parented to this process (a subreaper), bounded.
fn reap(pids: &[i32]) {
    use nix::errno::Errno;
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    use nix::unistd::Pid;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut left = pids.to_vec();
    while !left.is_empty() && std::time::Instant::now() < deadline {
        left.retain(
            |&pid| match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => true,
                Ok(_) => false,
                // Not ours (yet): still dying, or someone else reaps it.
                Err(Errno::ECHILD) => !gone_or_zombie(pid),
                Err(_) => false,
            },
        );
        if !left.is_empty() {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Whether `pid` has exited.
fn gone_or_zombie(pid: i32) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    text.rfind(')')
        .and_then(|i| text[i + 1..].split_whitespace().next())
        .is_some_and(|s| matches!(s, "Z" | "X"))
}

/// The `sshd_config` lines every lab server shares.
const SSHD_FIXED: &str = "\
PasswordAuthentication no
PubkeyAuthentication yes
KbdInteractiveAuthentication no
PermitEmptyPasswords no
PermitRootLogin yes
StrictModes no
UsePAM no
PidFile none
UseDNS no
PrintMotd no
PrintLastLog no
LogLevel VERBOSE
LoginGraceTime 30
MaxStartups 100
AllowTcpForwarding yes
GatewayPorts no
X11Forwarding no
AllowAgentForwarding no
PermitTunnel no
";

/// The echo service: `python3 -c ECHO_PY ADDR PORT`; prints `ready` once it listens.
const ECHO_PY: &str = r#"
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(128)
print("ready", flush=True)
def serve(c):
    try:
        while True:
            b = c.recv(262144)
            if not b:
                break
            c.sendall(b)
        c.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;
