//! A slow key and a forking ProxyCommand do no harm: a key behind a slow bcrypt KDF is
//! decrypted off the async threads and only once, so another host's traffic and session go on
//! undisturbed; a ProxyCommand that forks leaves no process behind across reconnects.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use tokio::net::TcpStream;
use tokio::process::Command;
use warren::session::HostState;

use crate::harness::{
    EchoServer, KeyKind, MIB, SshServer, Transport, UserKey, push_through, run_checked, wait_until,
    with_timeout,
};
use crate::support::{
    TestDaemon, forward_table, host_table, host_table_with, ingress, stop_sessions, with_setting,
};

const LIMIT: Duration = Duration::from_secs(60);
/// Bound for one step that should be quick (a session coming up with a cached key).
const STEP: Duration = Duration::from_secs(15);
/// Bound for the first connect of the slow host, and its `connect_timeout` (which bounds the
/// authentication too): the KDF takes seconds, many more on a busy machine.
const KDF_STEP: Duration = Duration::from_secs(40);
/// Bound for the slow-key test: it pays the KDF twice (generation, first connect).
const KDF_LIMIT: Duration = Duration::from_secs(90);
/// bcrypt rounds of the slow key (`ssh-keygen -a`): about 3 s of KDF on the test machine.
const KDF_ROUNDS: &str = "400";
/// How often the probe sends a message through the fast host's forward.
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// A round trip over this is counted and reported: far above a loopback echo. The bound
/// asserted is a quarter of the slow connect (seconds of KDF), which a stall behind the KDF
/// would exceed and which the scheduler of a loaded machine does not.
const PROBE_MAX: Duration = Duration::from_millis(150);
/// How many times the slow host's session is killed and comes back.
const SLOW_RECONNECTS: u64 = 3;
/// How many times the ProxyCommand host is asked to reconnect.
const PROXY_RECONNECTS: u64 = 20;

/// `table` with each `(key, value)` of `settings` set (values written as TOML).
fn with_settings(table: &str, settings: &[(&str, &str)]) -> String {
    settings
        .iter()
        .fold(table.to_owned(), |t, (k, v)| with_setting(&t, k, v))
}

/// A harness sshd that trusts a fresh plain ed25519 key.
async fn server_and_key() -> anyhow::Result<(SshServer, UserKey)> {
    let server = SshServer::start().await?;
    let key = UserKey::generate(KeyKind::Ed25519, None).await?;
    server.authorize(&key)?;
    Ok((server, key))
}

/// An ed25519 key encrypted with [`KDF_ROUNDS`] bcrypt rounds, and its passphrase file
/// (both mode 0600). The harness's `UserKey` has no rounds setting.
struct SlowKey {
    dir: tempfile::TempDir,
}

impl SlowKey {
    const PASSPHRASE: &str = "slow kdf passphrase";

    async fn generate() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let key = Self { dir };
        run_checked(
            Command::new("ssh-keygen")
                .args([
                    "-q",
                    "-t",
                    "ed25519",
                    "-a",
                    KDF_ROUNDS,
                    "-C",
                    "warren-e2e-slow",
                ])
                .args(["-N", Self::PASSPHRASE])
                .arg("-f")
                .arg(key.path()),
            &format!("ssh-keygen -a {KDF_ROUNDS}"),
        )
        .await?;
        std::fs::write(key.passphrase_file(), format!("{}\n", Self::PASSPHRASE))?;
        for path in [key.path(), key.passphrase_file()] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(key)
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("id_slow")
    }

    fn passphrase_file(&self) -> PathBuf {
        self.dir.path().join("id_slow.pass")
    }

    fn public_key(&self) -> anyhow::Result<String> {
        let path = self.dir.path().join("id_slow.pub");
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("read {}", path.display()))?
            .trim()
            .to_owned())
    }

    /// The `[hosts.NAME]` table for `server` with this key and its passphrase file as the
    /// only identity (`template` is any key, for [`host_table`]'s other lines), and time for
    /// the KDF within one attempt.
    fn host_table(&self, name: &str, server: &SshServer, template: &UserKey) -> String {
        with_settings(
            &host_table(name, server, template),
            &[
                (
                    "identity_files",
                    &format!("[\"{}\"]", self.path().display()),
                ),
                (
                    "passphrase_file",
                    &format!("\"{}\"", self.passphrase_file().display()),
                ),
                ("connect_timeout", &format!("\"{}s\"", KDF_STEP.as_secs())),
            ],
        )
    }
}

/// How long each worker thread of this test's runtime has been busy (running tasks, or stuck
/// in one) since the runtime started. A worker of two that is stuck is hardly seen from
/// outside (the other steals its queued tasks), but its busy time grows.
fn worker_busy() -> Vec<Duration> {
    let metrics = tokio::runtime::Handle::current().metrics();
    (0..metrics.num_workers())
        .map(|w| metrics.worker_total_busy_duration(w))
        .collect()
}

/// What the probe saw on its one connection.
#[derive(Debug)]
struct ProbeReport {
    rounds: u64,
    max_rtt: Duration,
    /// When the slowest round trip started, from the probe's start.
    max_at: Duration,
    /// Round trips over [`PROBE_MAX`].
    over: u64,
}

/// A connection through a forward to an echo server that, on a thread of its own (so that
/// its own scheduling is not what it measures), sends a numbered message every
/// [`PROBE_EVERY`] and checks the echo, until told to stop. Any error (a lost connection, a
/// wrong byte) ends it.
struct Probe {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    thread: tokio::task::JoinHandle<anyhow::Result<ProbeReport>>,
}

impl Probe {
    fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (s, r) = (stop.clone(), rounds.clone());
        let thread = tokio::task::spawn_blocking(move || probe_loop(addr, &s, &r));
        Self {
            stop,
            rounds,
            thread,
        }
    }

    /// Waits until `n` round trips are done (the connection is through).
    async fn wait_rounds(&mut self, n: u64) -> anyhow::Result<()> {
        wait_until(STEP, "the probe's first round trips", || {
            self.rounds.load(Ordering::SeqCst) >= n || self.thread.is_finished()
        })
        .await?;
        if self.thread.is_finished() {
            let ended = (&mut self.thread).await.context("the probe thread")?;
            anyhow::bail!("the probe ended early: {ended:?}");
        }
        Ok(())
    }

    /// Stops the probe and returns what it saw.
    async fn finish(self) -> anyhow::Result<ProbeReport> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.await.context("the probe thread")?
    }
}

fn probe_loop(
    addr: SocketAddr,
    stop: &AtomicBool,
    rounds: &AtomicU64,
) -> anyhow::Result<ProbeReport> {
    let mut stream =
        std::net::TcpStream::connect(addr).with_context(|| format!("probe: connect to {addr}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(STEP))?;
    let started = Instant::now();
    let mut report = ProbeReport {
        rounds: 0,
        max_rtt: Duration::ZERO,
        max_at: Duration::ZERO,
        over: 0,
    };
    let mut back = [0u8; 16];
    while !stop.load(Ordering::SeqCst) {
        let n = report.rounds;
        let msg = format!("probe {n:09}\n");
        let sent = Instant::now();
        stream
            .write_all(msg.as_bytes())
            .with_context(|| format!("probe: write round {n}"))?;
        stream
            .read_exact(&mut back)
            .with_context(|| format!("probe: read round {n}"))?;
        let rtt = sent.elapsed();
        ensure!(
            back == msg.as_bytes(),
            "probe round {n}: sent {msg:?}, got back {:?}",
            String::from_utf8_lossy(&back)
        );
        if rtt > report.max_rtt {
            report.max_rtt = rtt;
            report.max_at = sent - started;
        }
        report.over += u64::from(rtt > PROBE_MAX);
        report.rounds += 1;
        rounds.store(report.rounds, Ordering::SeqCst);
        // Pacing, not waiting for readiness.
        std::thread::sleep(PROBE_EVERY);
    }
    Ok(report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_key_decryption_does_not_stall_another_host() {
    with_timeout(KDF_LIMIT, async {
        // The key generation pays the KDF too: done while the servers start.
        let (slow_key, fast, slow_server, echo) = tokio::try_join!(
            SlowKey::generate(),
            server_and_key(),
            SshServer::start(),
            EchoServer::start(Transport::Tcp),
        )?;
        let (fast_server, fast_key) = fast;
        slow_server.authorize_line(&slow_key.public_key()?)?;
        let echo_addr = echo.addr().to_string();

        // "fast" alone first, with keepalives that give up after 1.5 s of silence; its
        // forward carries the probe for the whole test.
        let (fast_listener, fast_addr) = ingress();
        let fast_toml = with_settings(
            &host_table("fast", &fast_server, &fast_key),
            &[("keepalive_interval", "\"500ms\""), ("keepalive_count_max", "2")],
        ) + &forward_table("f", "fast", "local", &fast_addr.to_string(), Some(&echo_addr));
        let mut d = TestDaemon::start(&fast_toml, vec![fast_listener]).await?;
        d.wait_up("fast", STEP).await?;
        let mut probe = Probe::start(fast_addr);
        probe.wait_rounds(5).await?;

        // "slow" joins: its first connect decrypts the key.
        let (slow_listener, slow_addr) = ingress();
        let toml = fast_toml.clone()
            + &slow_key.host_table("slow", &slow_server, &fast_key)
            + &forward_table("s", "slow", "local", &slow_addr.to_string(), Some(&echo_addr));
        let busy_before = worker_busy();
        let added = Instant::now();
        d.reload(&toml, vec![slow_listener]).await?;
        d.wait_up("slow", KDF_STEP).await?;
        let first = added.elapsed();

        // Its session is lost three times; each reconnect reads the same key file. The
        // killed sessions' children are reaped here at once (as later kills do anyway), not
        // by an init that may be slow to: the times measured are warren's.
        nix::sys::prctl::set_child_subreaper(true)?;
        let mut reconnects = Vec::new();
        for i in 1..=SLOW_RECONNECTS {
            let lost = Instant::now();
            assert_eq!(slow_server.kill_sessions().await?, 1, "one slow session");
            let st = d
                .wait_host("slow", STEP, |s| s.state == HostState::Up && s.reconnects >= i)
                .await?;
            reconnects.push(lost.elapsed());
            assert_eq!(st.reconnects, i, "one session lost each time: {st:?}");
        }
        push_through(TcpStream::connect(slow_addr).await?, MIB)
            .await?
            .check_echoed()?;

        let report = probe.finish().await.with_context(|| {
            format!(
                "the probe through fast failed (slow first connect {first:?}, reconnects \
                 {reconnects:?}); fast now: {:?}",
                d.host_status("fast")
            )
        })?;
        let busy: Vec<Duration> = worker_busy()
            .iter()
            .zip(&busy_before)
            .map(|(after, before)| after.saturating_sub(*before))
            .collect();
        eprintln!(
            "probe: {} round trips, max {:?} at {:?}, {} over {PROBE_MAX:?}; slow first connect \
             {first:?}, reconnects {reconnects:?}; runtime workers busy {busy:?} meanwhile",
            report.rounds, report.max_rtt, report.max_at, report.over
        );
        ensure!(
            report.max_rtt <= first / 4,
            "the fast host's traffic stalled: {report:?} (slow first connect {first:?}, \
             reconnects {reconnects:?})"
        );
        // The KDF ran on no worker thread: none was busy for a good part of it.
        ensure!(
            busy.iter().all(|b| *b * 2 < first),
            "a runtime worker was busy {busy:?} while the slow host connected (first connect \
             {first:?}): the KDF ran on an async thread"
        );
        // Every 20 ms for the whole test: a probe that stopped early proves nothing.
        ensure!(report.rounds >= 50, "too few probes: {report:?}");
        // Up four times: the first session and one after each loss, nothing more.
        let slow_status = d.host_status("slow");
        assert_eq!(slow_status.reconnects, SLOW_RECONNECTS, "{slow_status:?}");
        assert_eq!(slow_status.state, HostState::Up);
        assert_eq!(
            slow_server.sessions_accepted(),
            4,
            "four slow sessions (first connect {first:?})"
        );

        // The fast host never lost its session, nor the probe its connection.
        let fast_status = d.host_status("fast");
        assert_eq!(fast_status.reconnects, 0, "{fast_status:?}");
        assert_eq!(fast_status.state, HostState::Up);
        assert_eq!(fast_server.sessions_accepted(), 1, "one fast session");
        let total = d.forward("f").counters.total.load(Ordering::SeqCst);
        assert_eq!(total, 1, "the probe's one connection through f");

        // The KDF is paid once: the premise (it is slow), then the reconnects (they are not).
        ensure!(
            first >= Duration::from_secs(1),
            "the first slow connect took {first:?}: the KDF is too fast for this test to mean anything"
        );
        for (i, r) in reconnects.iter().enumerate() {
            ensure!(
                *r * 4 < first,
                "slow reconnect {} took {r:?}, first connect {first:?}: the KDF was paid again",
                i + 1
            );
        }
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

/// A live (not zombie) process, from `/proc`.
#[derive(Clone, Debug)]
struct Proc {
    pid: i32,
    ppid: i32,
    pgid: i32,
    argv: Vec<String>,
}

impl Proc {
    fn read(pid: i32) -> Option<Self> {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The fields after the command name (in parentheses): state, ppid, pgrp.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace();
        let state = fields.next()?;
        if matches!(state, "Z" | "X") {
            return None;
        }
        Some(Self {
            pid,
            ppid: fields.next()?.parse().ok()?,
            pgid: fields.next()?.parse().ok()?,
            argv: cmdline
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
        })
    }

    fn name(&self) -> &str {
        self.argv.first().map_or("", String::as_str)
    }
}

/// The processes of every ProxyCommand `sh -c 'nc 127.0.0.1 PORT | cat'` warren ran in this
/// test: the groups they led (warren starts each in a process group of its own), found by
/// `nc 127.0.0.1 PORT` in a command line (the port is this test's own) and remembered, so
/// that a process left behind by a command whose shell is gone is still counted.
struct ProxyGroups {
    marker: String,
    groups: BTreeSet<i32>,
}

impl ProxyGroups {
    fn new(port: u16) -> Self {
        Self {
            marker: format!("nc 127.0.0.1 {port}"),
            groups: BTreeSet::new(),
        }
    }

    /// Whether `argv` names this test's server, not one on a port that starts the same.
    fn names_port(&self, argv: &[String]) -> bool {
        let line = argv.join(" ");
        line.match_indices(&self.marker).any(|(i, m)| {
            !line[i + m.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
    }

    /// Looks for new commands, then returns the live processes of every group seen so far.
    fn scan(&mut self) -> Vec<Proc> {
        let all: Vec<Proc> = std::fs::read_dir("/proc")
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .filter_map(Proc::read)
                    .collect()
            })
            .unwrap_or_default();
        for p in &all {
            if self.names_port(&p.argv) {
                self.groups.insert(p.pgid);
            }
        }
        all.into_iter()
            .filter(|p| self.groups.contains(&p.pgid))
            .collect()
    }

    /// Waits until exactly one command's processes are alive: the shell warren started (a
    /// child of this process, leading its group) and its nc and cat; returns them.
    async fn wait_one(&mut self, when: &str) -> anyhow::Result<Vec<Proc>> {
        let me = i32::try_from(std::process::id())?;
        let what = format!("exactly one ProxyCommand (sh, nc, cat) {when}");
        let mut last = Vec::new();
        wait_until(STEP, &what, || {
            last = self.scan();
            // The leader first.
            last.sort_by_key(|p| (p.pid != p.pgid, p.pid));
            let [sh, rest @ ..] = &last[..] else {
                return false;
            };
            let mut names: Vec<&str> = rest.iter().map(Proc::name).collect();
            names.sort_unstable();
            sh.name() == "sh"
                && sh.ppid == me
                && sh.pgid == sh.pid
                && names == ["cat", "nc"]
                && rest.iter().all(|p| p.ppid == sh.pid && p.pgid == sh.pid)
        })
        .await
        .with_context(|| format!("ProxyCommand processes: {last:#?}"))?;
        Ok(last)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_command_leaves_no_process_behind_across_reconnects() {
    with_timeout(LIMIT, async {
        let (server, key) = server_and_key().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let (listener, addr) = ingress();
        // A command that forks: the shell waits for a pipeline. (`nc %h %p & wait` would not
        // do: a background job's stdin is /dev/null, so nothing would reach the server.)
        let proxy = "proxy_command = \"sh -c 'nc %h %p | cat'\"\n";
        let toml = host_table_with("p", &server, &key, &server.known_hosts_path(), proxy)
            + &forward_table(
                "f",
                "p",
                "local",
                &addr.to_string(),
                Some(&echo.addr().to_string()),
            );
        let d = TestDaemon::start(&toml, vec![listener]).await?;
        d.wait_up("p", STEP).await?;
        push_through(TcpStream::connect(addr).await?, MIB)
            .await?
            .check_echoed()?;
        let mut groups = ProxyGroups::new(server.port());
        let first = groups.wait_one("with the first session").await?;

        // Each reconnect replaces the session and so the command: the old one's processes go.
        // The old session's sshd is stopped first, as a server that went silent: it never
        // hangs up, so the old nc and cat would wait for it forever (when sshd does close the
        // connection, they exit by themselves); only warren killing the command's whole
        // group ends them.
        let host = d.daemon().host("p").context("host p")?.clone();
        let mut current = first[0].pgid;
        for i in 1..=PROXY_RECONNECTS {
            let silent = stop_sessions(&server).await?;
            host.reconnect_now();
            d.wait_host("p", STEP, |s| s.state == HostState::Up && s.reconnects >= i)
                .await?;
            let now = groups.wait_one(&format!("after reconnect {i}")).await?;
            ensure!(
                now[0].pgid != current,
                "reconnect {i} kept the old command: {now:#?}"
            );
            current = now[0].pgid;
            silent.kill(&server).await?;
        }
        assert_eq!(d.host_status("p").reconnects, PROXY_RECONNECTS);
        let last = groups.wait_one("after the last reconnect").await?;
        push_through(TcpStream::connect(addr).await?, MIB)
            .await?
            .check_echoed()?;
        // Nothing kept an old session open on the server side either.
        server
            .wait_sessions(STEP, "one sshd session left", |c| c.alive == 1)
            .await?;
        assert_eq!(server.sessions_accepted(), PROXY_RECONNECTS as usize + 1);
        ensure!(
            groups.groups.len() == PROXY_RECONNECTS as usize + 1,
            "one command per session: groups {:?}",
            groups.groups
        );

        d.stop(Duration::from_secs(1)).await;
        let mut left = Vec::new();
        wait_until(STEP, "no ProxyCommand process once warren stopped", || {
            left = groups.scan();
            left.is_empty()
        })
        .await
        .with_context(|| format!("left: {left:#?}"))?;
        eprintln!(
            "proxy command: {} processes with the first session, {} after {PROXY_RECONNECTS} \
             reconnects ({} commands in all), 0 after stop; last: {last:?}",
            first.len(),
            last.len(),
            groups.groups.len()
        );
        Ok(())
    })
    .await;
}
