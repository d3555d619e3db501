//! Host-key trust end to end: accept-new learns one key per host even when sessions race to
//! learn it (in one daemon, and in two processes sharing a known_hosts file), and a key
//! refused on a jump hop or a ProxyCommand host stops everything behind it.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Barrier;
use tokio::task::{JoinHandle, JoinSet};

use crate::harness::{
    BoxStream, EchoServer, KeyKind, PeerAddr, SshServer, Transport, UserKey, WarrenProcess,
    bind_loopback, fingerprint, process_tree, push_through, wait_for, wait_until, with_timeout,
    within,
};
use crate::hostkeys::{ed25519_server, host_key};
use crate::support::{
    Files, TestDaemon, forward_table, host_table_with, ingress, status_json, with_setting,
};
use warren::session::HostState;

const LIMIT: Duration = Duration::from_secs(60);
/// Bound for one step that should be quick (a session coming up, an attempt failing).
const STEP: Duration = Duration::from_secs(15);
/// Races run in one daemon; each with fresh files.
const DAEMON_ROUNDS: usize = 10;
/// Races run between two `warren run` processes; each with fresh files.
const PROCESS_ROUNDS: usize = 5;
/// Bytes pushed through a forward that must work.
const ECHOED: u64 = 64 * 1024;

/// A server with only an ed25519 host key, accepting `key`: two of them present keys of the
/// same type, so that the second is a *changed* key, not one of another type.
async fn ed25519_server_for(key: &UserKey) -> anyhow::Result<SshServer> {
    let server = ed25519_server().await?;
    server.authorize(key)?;
    Ok(server)
}

/// A [`host_table_with`] for `server` (connection settings, `key`, known_hosts `kh`, `extra`)
/// with `policy`, a short connect_timeout, and a reconnect_max beyond the test: a refused key
/// (retried only after reconnect_max) stays refused, and its error stays in the status.
fn trust_table(
    name: &str,
    server: &SshServer,
    key: &UserKey,
    kh: &Path,
    policy: &str,
    extra: &str,
) -> String {
    let table = host_table_with(name, server, key, kh, extra);
    let table = with_setting(&table, "host_key_policy", &format!("\"{policy}\""));
    let table = with_setting(&table, "connect_timeout", "\"2s\"");
    with_setting(&table, "reconnect_max", "\"60s\"")
}

/// The status document of a daemon in this process, as `warren status --json` prints it.
fn document(d: &TestDaemon) -> Value {
    let doc = warren::control::status::document(d.daemon().hosts(), d.daemon().forwards());
    serde_json::to_value(doc).unwrap_or_default()
}

/// Host `name` in a status document.
fn host_doc(doc: &Value, name: &str) -> anyhow::Result<Value> {
    doc["hosts"]
        .as_array()
        .and_then(|hosts| hosts.iter().find(|h| h["name"] == name))
        .cloned()
        .with_context(|| format!("no host {name} in the status: {doc}"))
}

/// Host `name`'s document once it is up or has an error.
fn decided(doc: &Value, name: &str) -> Option<Value> {
    let host = host_doc(doc, name).ok()?;
    (host["state"] == "up" || !host["last_error"].is_null()).then_some(host)
}

/// Waits until host `name` of a `warren run` process is up or has an error; its document.
async fn wait_decided(warren: &Files, name: &str) -> anyhow::Result<Value> {
    let sock = warren.control_socket().display().to_string();
    wait_for(STEP, &format!("host {name} to be up or fail"), || async {
        decided(&status_json(&sock).await?, name)
    })
    .await
}

/// Waits until host `name` of an in-process daemon is up or has an error; its document.
async fn wait_decided_in(d: &TestDaemon, name: &str) -> anyhow::Result<Value> {
    d.wait_host(name, STEP, |s| {
        s.state == HostState::Up || s.last_error.is_some()
    })
    .await?;
    host_doc(&document(d), name)
}

/// Whether an sshd authenticated anybody.
fn authenticated(server: &SshServer) -> bool {
    server.log_contains("Accepted publickey")
}

/// A client of a refused host's forward, connected, its bytes written.
struct Waiting(BoxStream);

impl Waiting {
    async fn connect(ingress: &PeerAddr) -> anyhow::Result<Self> {
        let mut stream = ingress.connect().await?;
        // Warren may already have closed the connection: that is fine too.
        let _ = stream.write_all(b"must not pass").await;
        Ok(Self(stream))
    }

    /// Nothing came back and the connection ends (warren gave up on the host, or stopped).
    async fn expect_closed_empty(mut self) -> anyhow::Result<()> {
        let mut got = Vec::new();
        let read = within(
            STEP,
            "warren to close the connection",
            self.0.read_to_end(&mut got),
        )
        .await?;
        // A reset instead of an orderly close is fine; a byte is not.
        ensure!(
            got.is_empty(),
            "{} bytes came back through a refused host ({read:?}): {:?}",
            got.len(),
            String::from_utf8_lossy(&got)
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The race: one address, two host keys.

/// SSH_MSG_KEXDH_REPLY / SSH_MSG_KEX_ECDH_REPLY (the hybrid KEMs use it too): the server's
/// packet carrying its host key, which the client verifies when it arrives.
const KEX_REPLY: u8 = 31;

/// One TCP address serving two host keys: connection *n* is relayed to server *n mod 2*. The
/// first two connections are held just before the server's key reaches the client and then
/// released together, so that both clients verify an unknown key at the same moment.
struct RaceRelay {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl RaceRelay {
    async fn start(targets: [SocketAddr; 2]) -> anyhow::Result<Self> {
        let listener = bind_loopback().await?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(relay_loop(listener, targets, accepted.clone()));
        Ok(Self {
            addr,
            accepted,
            task,
        })
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections relayed so far.
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for RaceRelay {
    fn drop(&mut self) {
        // The connection tasks live in the loop's JoinSet and go with it.
        self.task.abort();
    }
}

async fn relay_loop(listener: TcpListener, targets: [SocketAddr; 2], accepted: Arc<AtomicUsize>) {
    let barrier = Arc::new(Barrier::new(2));
    let mut tasks = JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let n = accepted.fetch_add(1, Ordering::SeqCst);
        let held = (n < 2).then(|| barrier.clone());
        tasks.spawn(relay_one(client, targets[n % 2], held));
        while tasks.try_join_next().is_some() {}
    }
}

/// Relays one connection both ways; with `held`, the server's key exchange reply waits there.
async fn relay_one(
    client: TcpStream,
    target: SocketAddr,
    held: Option<Arc<Barrier>>,
) -> anyhow::Result<()> {
    let server = TcpStream::connect(target).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
        let _ = server_tx.shutdown().await;
    };
    let down = async {
        if let Some(barrier) = held {
            let _ = hold_key_reply(&mut server_rx, &mut client_tx, &barrier).await;
        }
        let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
        let _ = client_tx.shutdown().await;
    };
    tokio::join!(up, down);
    Ok(())
}

/// Passes the server's version line and its packets on until the [`KEX_REPLY`] packet, waits
/// at `barrier` (at most a few seconds, should the other connection never get there), then
/// passes that packet and whatever followed it. Before NEWKEYS packets are plain
/// `uint32 length, byte padding, byte type, ...` without a MAC.
async fn hold_key_reply(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    barrier: &Barrier,
) -> anyhow::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let mut parsed = 0;
    let mut sent = 0;
    let mut version_seen = false;
    loop {
        let mut reply_at = None;
        loop {
            let rest = &buf[parsed..];
            if !version_seen {
                let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                    break;
                };
                version_seen = rest.starts_with(b"SSH-");
                parsed += end + 1;
            } else {
                let Some(head) = rest.get(..6) else { break };
                let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
                if rest.len() < 4 + len {
                    break;
                }
                if head[5] == KEX_REPLY {
                    reply_at = Some(parsed);
                    break;
                }
                parsed += 4 + len;
            }
        }
        let upto = reply_at.unwrap_or(parsed);
        to.write_all(&buf[sent..upto]).await?;
        sent = upto;
        if reply_at.is_some() {
            let _ = tokio::time::timeout(Duration::from_secs(5), barrier.wait()).await;
            to.write_all(&buf[sent..]).await?;
            return Ok(());
        }
        if from.read_buf(&mut buf).await? == 0 {
            bail!("the server closed before its key exchange reply");
        }
    }
}

/// Lines of the read-only global known_hosts file, all about other hosts.
const GLOBAL_LINES: usize = 2000;

/// Two ed25519-only servers (two host keys) that accept one user key, an echo egress, and
/// a global known_hosts file (listed after the learned one) about many other hosts, like an
/// `/etc/ssh/ssh_known_hosts`: reading it takes a while, which is when the race is lost.
struct TwoKeys {
    servers: [SshServer; 2],
    key: UserKey,
    echo: EchoServer,
    global: PathBuf,
    _dir: tempfile::TempDir,
}

impl TwoKeys {
    async fn start() -> anyhow::Result<Self> {
        let key = UserKey::generate(KeyKind::Ed25519, None).await?;
        let servers = [
            ed25519_server_for(&key).await?,
            ed25519_server_for(&key).await?,
        ];
        ensure!(host_key(&servers[0]) != host_key(&servers[1]));
        let dir = tempfile::tempdir()?;
        let global = dir.path().join("ssh_known_hosts");
        let others: String = (0..GLOBAL_LINES)
            .map(|i| format!("host-{i}.example.org {}\n", key.public_key()))
            .collect();
        std::fs::write(&global, others)?;
        Ok(Self {
            servers,
            key,
            echo: EchoServer::start(Transport::Tcp).await?,
            global,
            _dir: dir,
        })
    }

    /// A fresh relay in front of both servers and a fresh known_hosts file to learn into,
    /// shared by both hosts. Rounds cycle through: the file missing, with the global file
    /// after it; missing, alone; empty, with the global file; empty, alone.
    async fn round(&self, round: usize) -> anyhow::Result<Round> {
        let dir = tempfile::tempdir()?;
        let kh = dir.path().join("known_hosts");
        if round % 4 >= 2 {
            std::fs::write(&kh, "")?;
        }
        let mut files = vec![kh.clone()];
        if round.is_multiple_of(2) {
            files.push(self.global.clone());
        }
        let relay = RaceRelay::start([self.servers[0].addr(), self.servers[1].addr()]).await?;
        Ok(Round {
            relay,
            kh,
            files,
            _dir: dir,
        })
    }

    /// `[hosts.NAME]`: the relay's address, accept-new, the round's known_hosts files.
    fn host_table(&self, name: &str, round: &Round) -> String {
        let table = trust_table(
            name,
            &self.servers[0],
            &self.key,
            &round.kh,
            "accept-new",
            "",
        );
        let files: Vec<String> = round
            .files
            .iter()
            .map(|f| format!("\"{}\"", f.display()))
            .collect();
        let table = with_setting(&table, "known_hosts", &format!("[{}]", files.join(", ")));
        with_setting(&table, "port", &round.relay.port().to_string())
    }

    /// Everything the promise says about a round, from the two hosts' documents: exactly one
    /// known_hosts line, holding one of the two keys; its host up, the other refused as
    /// changed (class host-key, naming the file and line and the other key), one connection
    /// each. Returns the index of the up host.
    fn check_one_learned(&self, round: &Round, hosts: [&Value; 2]) -> anyhow::Result<usize> {
        let text = std::fs::read_to_string(&round.kh).context("accept-new wrote nothing")?;
        let lines: Vec<&str> = text.lines().collect();
        ensure!(
            lines.len() == 1,
            "expected one learned line, got {}:\n{text}\nhosts: {hosts:#?}",
            lines.len()
        );
        let name = format!("[127.0.0.1]:{}", round.relay.port());
        let (pattern, key) = lines[0]
            .split_once(' ')
            .context("a known_hosts line has a key")?;
        ensure!(pattern == name, "learned under {pattern:?}, not {name:?}");
        let learned = self
            .servers
            .iter()
            .position(|s| host_key(s) == key.trim())
            .with_context(|| format!("learned a key neither server has: {key}"))?;
        let refused_key = host_key(&self.servers[1 - learned]);

        let up: Vec<usize> = (0..2).filter(|&i| hosts[i]["state"] == "up").collect();
        ensure!(up.len() == 1, "expected exactly one host up: {hosts:#?}");
        let refused = hosts[1 - up[0]];
        ensure!(refused["state"] == "failed", "{refused}");
        let error = &refused["last_error"];
        ensure!(error["class"] == "host-key", "{refused}");
        let message = error["message"].as_str().unwrap_or_default();
        let place = format!("{}:1", round.kh.display());
        ensure!(
            message.contains("changed"),
            "not refused as changed: {message}"
        );
        ensure!(message.contains(&place), "does not name {place}: {message}");
        ensure!(
            message.contains(&fingerprint(refused_key)?),
            "does not name the refused key: {message}"
        );
        ensure!(
            round.relay.accepted() == 2,
            "one connection per host, {} relayed",
            round.relay.accepted()
        );
        Ok(up[0])
    }

    /// The up host's forward echoes; the refused host's carries nothing to the egress and
    /// back, until `stop` ends it.
    async fn check_bytes(
        &self,
        up: &PeerAddr,
        refused: &PeerAddr,
        stop: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let before = self.echo.connections();
        let waiting = Waiting::connect(refused).await?;
        push_through(up.connect().await?, ECHOED)
            .await?
            .check_echoed()?;
        stop.await;
        waiting.expect_closed_empty().await?;
        ensure!(
            self.echo.connections() == before + 1,
            "the egress got {} connections, only the up host's was expected",
            self.echo.connections() - before
        );
        Ok(())
    }
}

/// One race: its relay, the known_hosts file to learn into and the files the hosts read.
struct Round {
    relay: RaceRelay,
    kh: PathBuf,
    files: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

/// The servers have authenticated `rounds` clients in all: one per round, the up host's.
fn one_login_per_round(k: &TwoKeys, rounds: usize) -> anyhow::Result<()> {
    let logins: usize = k
        .servers
        .iter()
        .map(|s| s.log().matches("Accepted publickey").count())
        .sum();
    ensure!(
        logins == rounds,
        "{logins} logins in {rounds} rounds: a refused host authenticated"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_new_learns_one_key_when_two_hosts_of_one_daemon_race() {
    with_timeout(LIMIT, async {
        let k = TwoKeys::start().await?;
        for n in 0..DAEMON_ROUNDS {
            let round = k.round(n).await?;
            let (la, aa) = ingress();
            let (lb, ab) = ingress();
            let echo = k.echo.addr().to_string();
            let toml = k.host_table("a", &round)
                + &k.host_table("b", &round)
                + &forward_table("fa", "a", "local", &aa.to_string(), Some(&echo))
                + &forward_table("fb", "b", "local", &ab.to_string(), Some(&echo));
            let d = TestDaemon::start(&toml, vec![la, lb]).await?;
            let a = wait_decided_in(&d, "a").await?;
            let b = wait_decided_in(&d, "b").await?;
            let up = k
                .check_one_learned(&round, [&a, &b])
                .with_context(|| format!("round {n}"))?;
            let ingresses = [PeerAddr::Tcp(aa), PeerAddr::Tcp(ab)];
            k.check_bytes(
                &ingresses[up],
                &ingresses[1 - up],
                d.stop(Duration::from_millis(100)),
            )
            .await
            .with_context(|| format!("round {n}"))?;
            one_login_per_round(&k, n + 1)?;
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_new_learns_one_key_when_two_processes_race() {
    with_timeout(LIMIT, async {
        let k = TwoKeys::start().await?;
        for n in 0..PROCESS_ROUNDS {
            let round = k.round(n).await?;
            let names = ["a", "b"];
            let files = [Files::new()?, Files::new()?];
            let mut warrens: Vec<WarrenProcess> = Vec::new();
            for (name, files) in names.iter().zip(&files) {
                let listen = files.path("f.sock").display().to_string();
                let rest = k.host_table(name, &round)
                    + &forward_table(
                        "f",
                        name,
                        "local",
                        &listen,
                        Some(&k.echo.addr().to_string()),
                    );
                warrens.push(files.spawn(&files.config("", &rest)?)?);
            }
            let a = wait_decided(&files[0], "a").await?;
            let b = wait_decided(&files[1], "b").await?;
            let up = k
                .check_one_learned(&round, [&a, &b])
                .with_context(|| format!("round {n}"))?;
            let learners = warrens
                .iter()
                .filter(|w| w.stderr_text().contains("new host key recorded"))
                .count();
            ensure!(
                learners == 1,
                "round {n}: {learners} processes learned a key"
            );
            let ingresses = files.each_ref().map(|f| PeerAddr::Unix(f.path("f.sock")));
            k.check_bytes(&ingresses[up], &ingresses[1 - up], async {
                drop(warrens);
            })
            .await
            .with_context(|| format!("round {n}"))?;
            one_login_per_round(&k, n + 1)?;
        }
        Ok(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Refused in front: a jump hop, a ProxyCommand host.

/// How the host in front is refused.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    /// Its key is in no known_hosts file (strict).
    Unknown,
    /// known_hosts holds another key for it.
    Changed,
}

impl Refusal {
    /// known_hosts text about `server` (`before` first): nothing, or another key for its
    /// name on the line after `before`.
    async fn known_hosts(self, server: &SshServer, before: &str) -> anyhow::Result<String> {
        Ok(match self {
            Refusal::Unknown => before.to_owned(),
            Refusal::Changed => {
                let other = UserKey::generate(KeyKind::Ed25519, None).await?;
                format!(
                    "{before}{} {}\n",
                    server.host_pattern("127.0.0.1"),
                    other.public_key()
                )
            }
        })
    }

    /// The refused host's document says so: failed, class host-key, why (for a changed key
    /// the file and line: the last line of `kh`), naming the presented key.
    fn check(self, host: &Value, kh: &Path, presented: &str) -> anyhow::Result<()> {
        ensure!(host["state"] == "failed", "{host}");
        let error = &host["last_error"];
        ensure!(error["class"] == "host-key", "{host}");
        let message = error["message"].as_str().unwrap_or_default();
        match self {
            Refusal::Unknown => {
                ensure!(message.contains("not in any known_hosts file"), "{message}")
            }
            Refusal::Changed => {
                let line = std::fs::read_to_string(kh)?.lines().count();
                let place = format!("{}:{line}", kh.display());
                ensure!(message.contains("changed"), "{message}");
                ensure!(message.contains(&place), "does not name {place}: {message}");
            }
        }
        ensure!(
            message.contains(&fingerprint(presented)?),
            "does not name the presented key: {message}"
        );
        Ok(())
    }
}

/// `inner` behind `bastion`, whose key is refused: inner's sshd never sees a connection,
/// inner's forward carries no byte, the status says bastion failed on its host key and
/// inner is not up, naming the hop.
async fn refused_jump_hop(refusal: Refusal) -> anyhow::Result<()> {
    let key = UserKey::generate(KeyKind::Ed25519, None).await?;
    let bastion = ed25519_server_for(&key).await?;
    let inner = SshServer::start().await?;
    inner.authorize(&key)?;
    let echo = EchoServer::start(Transport::Tcp).await?;
    let dir = tempfile::tempdir()?;
    // Inner's keys are known: only the hop is refused.
    let kh = dir.path().join("known_hosts");
    std::fs::write(
        &kh,
        refusal.known_hosts(&bastion, &inner.known_hosts()).await?,
    )?;
    let (listener, addr) = ingress();
    // Inner's attempt outlasts its wait for a bastion session (bastion's connect_timeout, 2 s),
    // so it ends with that wait's error, which names the hop. With equal timeouts the attempt's
    // own timeout may fire first and say only "no session within connect_timeout".
    let inner_table = trust_table("inner", &inner, &key, &kh, "strict", "jump = [\"bastion\"]");
    let toml = trust_table("bastion", &bastion, &key, &kh, "strict", "")
        + &with_setting(&inner_table, "connect_timeout", "\"4s\"")
        + &forward_table(
            "f",
            "inner",
            "local",
            &addr.to_string(),
            Some(&echo.addr().to_string()),
        );
    let d = TestDaemon::start(&toml, vec![listener]).await?;

    let hop = wait_decided_in(&d, "bastion").await?;
    refusal.check(&hop, &kh, host_key(&bastion))?;
    let waiting = Waiting::connect(&PeerAddr::Tcp(addr)).await?;
    let behind = wait_decided_in(&d, "inner").await?;
    ensure!(behind["state"] != "up", "{behind}");
    ensure!(behind["via"] == serde_json::json!(["bastion"]), "{behind}");
    let message = behind["last_error"]["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("jump host bastion"),
        "inner's error does not name the hop: {behind}"
    );
    // Inner's forward gives up (connect_timeout) without a byte.
    waiting.expect_closed_empty().await?;

    ensure!(
        inner.session_counts().accepted == 0,
        "inner's sshd got a connection: {:?}",
        inner.session_counts()
    );
    ensure!(echo.connections() == 0, "the egress got a connection");
    ensure!(
        !authenticated(&bastion),
        "bastion authenticated a client whose host key check failed"
    );
    ensure!(
        d.host_status("inner").state != HostState::Up,
        "inner came up"
    );
    d.stop(Duration::from_millis(100)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_on_a_jump_hop_stops_the_host_behind_it() {
    with_timeout(LIMIT, refused_jump_hop(Refusal::Unknown)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_key_on_a_jump_hop_stops_the_host_behind_it() {
    with_timeout(LIMIT, refused_jump_hop(Refusal::Changed)).await;
}

/// The ProxyCommand of a refused host.
#[derive(Clone, Copy, Debug)]
enum Proxy {
    /// `nc %h %p`.
    Nc,
    /// `LINGER & nc %h %p`: a helper script (which would sleep for an hour) started in the
    /// background, in the command's process group; killing the command alone leaves it.
    Forking,
}

impl Proxy {
    /// The command, and what every process of it has in its command line.
    fn command(self, files: &Files, server: &SshServer) -> anyhow::Result<(String, String)> {
        let nc = format!("nc 127.0.0.1 {}", server.port());
        Ok(match self {
            Proxy::Nc => ("nc %h %p".to_owned(), nc),
            Proxy::Forking => {
                let linger = files.path("linger");
                std::fs::write(&linger, "#!/bin/sh\nsleep 3600\n")?;
                std::fs::set_permissions(&linger, std::fs::Permissions::from_mode(0o755))?;
                let linger = linger.display().to_string();
                (format!("{linger} & nc %h %p"), linger)
            }
        })
    }
}

/// Every process (but this one) whose command line contains `marker`, wherever it was
/// re-parented: a process of a proxy command that escaped warren's tree is found too.
fn processes_mentioning(marker: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            line.contains(marker).then_some((pid, line))
        })
        .collect()
}

/// A `warren run` host reached by a ProxyCommand whose key is refused: the status says
/// host-key, the forward carries no byte, and no process of the command stays (none under
/// warren, none anywhere else, none holding a session on the server).
async fn refused_proxy_command_host(refusal: Refusal, proxy: Proxy) -> anyhow::Result<()> {
    let key = UserKey::generate(KeyKind::Ed25519, None).await?;
    let server = ed25519_server_for(&key).await?;
    let echo = EchoServer::start(Transport::Tcp).await?;
    let files = Files::new()?;
    let kh = files.path("known_hosts");
    // Knows another host only, or another key for this one.
    let other = UserKey::generate(KeyKind::Ed25519, None).await?;
    let before = format!("[127.0.0.1]:1 {}\n", other.public_key());
    std::fs::write(&kh, refusal.known_hosts(&server, &before).await?)?;
    let (command, marker) = proxy.command(&files, &server)?;
    let ingress = files.path("f.sock");
    let rest = trust_table(
        "p",
        &server,
        &key,
        &kh,
        "strict",
        &format!("proxy_command = \"{command}\""),
    ) + &forward_table(
        "f",
        "p",
        "local",
        &ingress.display().to_string(),
        Some(&echo.addr().to_string()),
    );
    let warren = files.spawn(&files.config("", &rest)?)?;
    let pid = warren.pid();

    let host = wait_decided(&files, "p").await?;
    refusal.check(&host, &kh, host_key(&server))?;
    ensure!(
        host["via"] == serde_json::json!([format!("proxy_command: {command}")]),
        "{host}"
    );
    // The command did run: nc reached the server.
    ensure!(
        server.sessions_accepted() >= 1,
        "the proxy command never reached the server"
    );
    let descendants = || process_tree(pid).into_iter().filter(|&p| p != pid).count();
    let left_behind = || descendants() == 0 && processes_mentioning(&marker).is_empty();
    wait_until(
        STEP,
        "the proxy command's processes to be gone",
        left_behind,
    )
    .await
    .with_context(|| {
        format!(
            "under warren: {:?}; elsewhere: {:?}",
            process_tree(pid),
            processes_mentioning(&marker)
        )
    })?;
    server
        .wait_sessions(STEP, "the server to see the command's end", |c| {
            c.alive == 0
        })
        .await?;

    let waiting = Waiting::connect(&PeerAddr::Unix(ingress)).await?;
    waiting.expect_closed_empty().await?;
    ensure!(echo.connections() == 0, "the egress got a connection");
    ensure!(
        !authenticated(&server),
        "sshd authenticated a client whose host key check failed"
    );
    // Still nothing, and no new attempt meanwhile (reconnect_max is beyond the test).
    ensure!(
        left_behind(),
        "processes came back: under warren {:?}; elsewhere {:?}",
        process_tree(pid),
        processes_mentioning(&marker)
    );
    let sock = files.control_socket().display().to_string();
    let host = host_doc(&status_json(&sock).await.context("status")?, "p")?;
    ensure!(host["state"] == "failed", "{host}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_on_a_proxy_command_host_leaves_nothing_behind() {
    with_timeout(
        LIMIT,
        refused_proxy_command_host(Refusal::Unknown, Proxy::Nc),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_key_on_a_proxy_command_host_leaves_nothing_behind() {
    with_timeout(
        LIMIT,
        refused_proxy_command_host(Refusal::Changed, Proxy::Nc),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_key_ends_every_process_of_a_forking_proxy_command() {
    with_timeout(
        LIMIT,
        refused_proxy_command_host(Refusal::Changed, Proxy::Forking),
    )
    .await;
}
