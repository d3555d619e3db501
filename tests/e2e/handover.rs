//! Sockets handed to warren instead of bound by it. Socket activation: a socket passed the
//! way systemd passes it is adopted by the forward of its name, else by the forward that
//! listens at its address, and one that no forward takes stops start-up. Upgrade in place
//! (`warren upgrade`, SIGUSR2): the binary at the path warren was started from takes over
//! every socket without refusing a single connection while the old process finishes its open
//! ones and exits 0; a new binary that fails leaves the old one serving.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use command_fds::{CommandFdExt, FdMapping};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::harness::{
    Digest, MIB, WARREN, WarrenProcess, adopt_orphans, hex, launcher_command, push_through,
    run_warren, tail, wait_for, wait_until, with_timeout, within,
};
use crate::support::{Files, Fixture, forward_table, host_table, status_json};

const LIMIT: Duration = Duration::from_secs(120);
/// Bound for one step that should be quick.
const STEP: Duration = Duration::from_secs(20);
/// Debian's `systemd` package (scripts/test.sh installs it).
const SOCKET_ACTIVATE: &str = "/usr/bin/systemd-socket-activate";
/// The upgrade tests' `shutdown_grace`: long enough for an open connection to finish on the
/// old process after the new one took over.
const GRACE: Duration = Duration::from_secs(5);

/// Waits until every host is up and every forward ready; the status document then.
async fn wait_ready(warren: &WarrenProcess, sock: &Path) -> anyhow::Result<Value> {
    let sock = sock.display().to_string();
    wait_for(STEP, "hosts up and forwards ready", || {
        let sock = sock.clone();
        async move {
            let doc = status_json(&sock).await?;
            let up = doc["hosts"].as_array()?.iter().all(|h| h["state"] == "up");
            let ready = doc["forwards"]
                .as_array()?
                .iter()
                .all(|f| f["state"] == "ready");
            (up && ready).then_some(doc)
        }
    })
    .await
    .with_context(|| format!("warren stderr:\n{}", tail(&warren.stderr_text(), 40)))
}

/// Forward `name` of a status document.
fn forward_doc(doc: &Value, name: &str) -> anyhow::Result<Value> {
    doc["forwards"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["name"] == name).cloned())
        .with_context(|| format!("no forward {name} in {doc}"))
}

/// Forward `name` as the daemon at `sock` reports it now.
async fn forward_now(sock: &Path, name: &str) -> anyhow::Result<Value> {
    let doc = status_json(&sock.display().to_string())
        .await
        .with_context(|| format!("no daemon answers on {}", sock.display()))?;
    forward_doc(&doc, name)
}

/// Starts `warren run -c CONFIG` the way systemd starts a socket-activated service: `listener`
/// at fd 3, `LISTEN_FDS=1`, `LISTEN_PID` the process's own pid (a shell sets it, then execs
/// warren in the same process), and `LISTEN_FDNAMES` when `name` is given.
fn spawn_activated(
    files: &Files,
    config: &Path,
    listener: OwnedFd,
    name: Option<&str>,
) -> anyhow::Result<WarrenProcess> {
    let names = name
        .map(|n| format!("LISTEN_FDNAMES={n} "))
        .unwrap_or_default();
    let script = format!("LISTEN_PID=$$ LISTEN_FDS=1 {names}exec \"$0\" run -c \"$1\"");
    let config = config.display().to_string();
    let mut cmd = launcher_command(
        "/bin/sh",
        &["-c", &script, WARREN, &config],
        &[("HOME", &files.home())],
    );
    cmd.fd_mappings(vec![FdMapping {
        parent_fd: listener,
        child_fd: 3,
    }])?;
    WarrenProcess::spawn_command(cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_socket_activate_hands_a_unix_socket_to_the_forward_of_its_name() {
    with_timeout(LIMIT, async {
        ensure!(
            Path::new(SOCKET_ACTIVATE).exists(),
            "{SOCKET_ACTIVATE} is missing (Debian package systemd; scripts/test.sh installs it)"
        );
        let Fixture { server, key, echo } = Fixture::start().await?;
        let files = Files::new()?;
        let passed = files.path("in.sock");
        let unused = files.path("unused.sock");
        // The forward's own `listen` is another path: only the name can match.
        let rest = host_table("h", &server, &key)
            + &forward_table(
                "by-name",
                "h",
                "local",
                &unused.display().to_string(),
                Some(&echo.addr().to_string()),
            );
        let config = files.config("shutdown_grace = \"2s\"", &rest)?;
        let (passed_arg, config_arg) = (passed.display().to_string(), config.display().to_string());
        // It passes on only PATH, HOME, USER and TERM, and what -E names.
        let cmd = launcher_command(
            SOCKET_ACTIVATE,
            &[
                "-l",
                &passed_arg,
                "--fdname=by-name",
                "-E",
                "NO_COLOR=1",
                WARREN,
                "run",
                "-c",
                &config_arg,
            ],
            &[("HOME", &files.home())],
        );
        let mut warren = WarrenProcess::spawn_command(cmd)?;
        warren
            .wait_for_stderr(STEP, |l| l.contains("Listening on"))
            .await?;
        ensure!(
            server.session_counts().accepted == 0,
            "warren runs before the first connection"
        );

        // The first connection execs warren, which accepts it on the socket it was handed.
        let t = push_through(UnixStream::connect(&passed).await?, 4 * MIB)
            .await
            .with_context(|| format!("stderr:\n{}", tail(&warren.stderr_text(), 40)))?;
        t.check_echoed()?;
        let adopted = warren
            .wait_for_stderr(STEP, |l| l.contains("adopted a passed listener"))
            .await?;
        ensure!(
            adopted.contains("forward=by-name") && adopted.contains(&passed_arg),
            "the adoption names the forward and the socket: {adopted}"
        );
        ensure!(
            !unused.exists(),
            "warren bound its own ingress besides the one it was handed"
        );
        let doc = wait_ready(&warren, &files.control_socket()).await?;
        let f = forward_doc(&doc, "by-name")?;
        assert_eq!(f["listen"], passed_arg.as_str(), "{f}");
        assert_eq!(f["total"], 1, "{f}");
        // The same process: systemd-socket-activate execs warren, with LISTEN_PID its own pid.
        ensure!(
            warren
                .stderr_text()
                .contains(&format!("pid={}", warren.pid())),
            "warren's ready line names another pid:\n{}",
            warren.stderr_text()
        );
        // A second connection is served too.
        push_through(UnixStream::connect(&passed).await?, MIB)
            .await?
            .check_echoed()?;

        warren.sigterm()?;
        assert_eq!(warren.wait_exit(STEP).await?, 0, "{}", warren.stderr_text());
        // The socket file is systemd's, not warren's to remove.
        ensure!(
            passed.exists(),
            "warren removed the socket file it was handed"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_tcp_socket_goes_to_the_forward_at_its_address_and_others_bind_their_own() {
    with_timeout(LIMIT, async {
        let Fixture { server, key, echo } = Fixture::start().await?;
        let files = Files::new()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let e = echo.addr().to_string();
        // `own` asks for port 0 on the same IP: the passed socket is not its (an exact
        // address only; port 0 matches only a listener of an upgrade, by name).
        let rest = host_table("h", &server, &key)
            + &forward_table("own", "h", "local", "127.0.0.1:0", Some(&e))
            + &forward_table("by-address", "h", "local", &addr.to_string(), Some(&e));
        let config = files.config("shutdown_grace = \"2s\"", &rest)?;
        let mut warren = spawn_activated(&files, &config, listener.into(), None)?;
        let doc = wait_ready(&warren, &files.control_socket()).await?;

        let f = forward_doc(&doc, "by-address")?;
        assert_eq!(f["listen"], addr.to_string().as_str(), "{f}");
        let adopted = warren
            .wait_for_stderr(STEP, |l| l.contains("adopted a passed listener"))
            .await?;
        ensure!(
            adopted.contains("forward=by-address") && adopted.contains(&addr.to_string()),
            "{adopted}"
        );
        let adoptions = warren
            .stderr_lines()
            .iter()
            .filter(|l| l.contains("adopted a passed listener"))
            .count();
        assert_eq!(adoptions, 1, "one socket, one adoption");
        push_through(TcpStream::connect(addr).await?, 4 * MIB)
            .await?
            .check_echoed()?;

        // The other forward bound a port of its own.
        let own: SocketAddr = forward_doc(&doc, "own")?["listen"]
            .as_str()
            .context("own's listen")?
            .parse()?;
        ensure!(
            own.ip() == addr.ip() && own.port() != 0 && own.port() != addr.port(),
            "own listens on {own}, the passed socket is {addr}"
        );
        push_through(TcpStream::connect(own).await?, 4 * MIB)
            .await?
            .check_echoed()?;
        assert_eq!(
            forward_now(&files.control_socket(), "by-address").await?["total"],
            1
        );
        assert_eq!(
            forward_now(&files.control_socket(), "own").await?["total"],
            1
        );

        warren.sigterm()?;
        assert_eq!(warren.wait_exit(STEP).await?, 0, "{}", warren.stderr_text());
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_socket_no_forward_takes_stops_start_up_naming_it() {
    with_timeout(LIMIT, async {
        let Fixture { server, key, echo } = Fixture::start().await?;
        let files = Files::new()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let ingress = files.path("f.sock");
        let rest = host_table("h", &server, &key)
            + &forward_table(
                "f",
                "h",
                "local",
                &ingress.display().to_string(),
                Some(&echo.addr().to_string()),
            );
        let config = files.config("", &rest)?;
        let mut warren = spawn_activated(&files, &config, listener.into(), Some("stray"))?;
        let code = warren.wait_exit(STEP).await?;
        let stderr = warren.stderr_text();
        assert_eq!(code, 1, "an unmatched socket exits 1; stderr:\n{stderr}");
        let expected = format!(
            "the socket passed as fd 3 (name \"stray\", listening on {addr}) matches no \
             forward's name or listen address"
        );
        ensure!(
            stderr.contains(&expected),
            "stderr must name the fd, the name and the address ({expected}):\n{stderr}"
        );
        // Nothing was started, nor left behind.
        assert_eq!(
            server.session_counts().accepted,
            0,
            "no session starts when start-up fails"
        );
        ensure!(!ingress.exists(), "the forward's ingress was left behind");
        ensure!(
            !files.control_socket().exists(),
            "the control socket was left behind"
        );
        ensure!(
            TcpStream::connect(&addr).await.is_err(),
            "the passed socket still accepts after warren exited"
        );
        Ok(())
    })
    .await;
}

/// `pid=N` in `line`.
fn pid_in(line: &str) -> anyhow::Result<i32> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .with_context(|| format!("no pid= in {line:?}"))?
        .parse()
        .with_context(|| format!("pid in {line:?}"))
}

/// The pid `warren upgrade` printed: `upgraded: new process PID; the old one drains and exits`.
fn upgraded_pid(stdout: &str) -> anyhow::Result<i32> {
    stdout
        .trim()
        .strip_prefix("upgraded: new process ")
        .and_then(|rest| rest.split(';').next())
        .with_context(|| format!("unexpected `warren upgrade` output: {stdout:?}"))?
        .parse()
        .with_context(|| format!("pid in {stdout:?}"))
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: i32) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    text.rfind(')')
        .and_then(|i| text[i + 1..].split_whitespace().next())
        .is_some_and(|s| !matches!(s, "Z" | "X"))
}

/// `warren run -c CONFIG` whose upgrades start processes that outlive it: dropping this
/// SIGKILLs every process its log says an upgrade started (still running `CONFIG`), so that
/// none is left behind by a test that fails.
struct Upgradable {
    warren: WarrenProcess,
    config: PathBuf,
}

impl Upgradable {
    fn start(files: &Files, config: &Path) -> anyhow::Result<Self> {
        // The new processes become this process's children when the old one exits: then
        // their exit codes can be read, and they do not stay zombies.
        adopt_orphans();
        Ok(Self {
            warren: files.spawn(config)?,
            config: config.to_path_buf(),
        })
    }

    /// Stops `pid`, a process an upgrade started: SIGTERM, then its exit code once it exited
    /// (`None` when it was not this test's to wait for).
    async fn stop_successor(&self, pid: i32) -> anyhow::Result<Option<i32>> {
        kill(Pid::from_raw(pid), Signal::SIGTERM).context("SIGTERM the new process")?;
        wait_for(STEP, "the new process to exit", || async move {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => Some(Some(code)),
                Ok(WaitStatus::Signaled(_, sig, _)) => Some(Some(128 + sig as i32)),
                Ok(_) => None,
                Err(Errno::ECHILD) => (!alive(pid)).then_some(None),
                Err(_) => Some(None),
            }
        })
        .await
        .with_context(|| format!("stderr:\n{}", tail(&self.warren.stderr_text(), 40)))
    }
}

impl Drop for Upgradable {
    fn drop(&mut self) {
        let config = self.config.display().to_string();
        for line in self.warren.stderr_lines() {
            if !line.contains("upgrade: new process started") {
                continue;
            }
            let Ok(pid) = pid_in(&line) else { continue };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if alive(pid) && String::from_utf8_lossy(&cmdline).contains(&config) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                // Reaped when it is this process's child (ECHILD otherwise, at once).
                let _ = waitpid(Pid::from_raw(pid), None);
            }
        }
    }
}

/// What [`Prober`] saw.
#[derive(Debug, Default)]
struct Probes {
    ok: AtomicU64,
    refused: AtomicU64,
    failures: Mutex<Vec<String>>,
}

/// From its own thread, connects to an echo forward every 2 ms, sends 16 bytes, reads them
/// back and closes; counts the round trips that worked and keeps what went wrong.
struct Prober {
    stop: Arc<AtomicBool>,
    probes: Arc<Probes>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(Probes::default());
        let thread = std::thread::spawn({
            let (stop, probes) = (stop.clone(), probes.clone());
            move || {
                let started = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    match probe(addr) {
                        Ok(()) => {
                            probes.ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                                probes.refused.fetch_add(1, Ordering::SeqCst);
                            }
                            probes
                                .failures
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(format!("after {:?}: {e}", started.elapsed()));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        Self {
            stop,
            probes,
            thread: Some(thread),
        }
    }

    fn ok(&self) -> u64 {
        self.probes.ok.load(Ordering::SeqCst)
    }

    /// Waits until `n` more round trips worked than now.
    async fn wait_more(&self, n: u64, what: &str) -> anyhow::Result<()> {
        let target = self.ok() + n;
        wait_until(STEP, what, || self.ok() >= target || self.failed()).await?;
        Ok(())
    }

    fn failed(&self) -> bool {
        !self
            .probes
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Stops the thread; the round trips that worked, the refused ones and every failure.
    fn finish(mut self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let failures = std::mem::take(
            &mut *self
                .probes
                .failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        (
            self.ok(),
            self.probes.refused.load(Ordering::SeqCst),
            failures,
        )
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One round trip of 16 random bytes on a new connection.
fn probe(addr: SocketAddr) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.set_nodelay(true)?;
    let sent: [u8; 16] = rand::random();
    s.write_all(&sent)?;
    let mut back = [0u8; 16];
    s.read_exact(&mut back)?;
    if back != sent {
        return Err(std::io::Error::other("the echo came back different"));
    }
    Ok(())
}

/// A connection that echoes a stream for as long as it is fed: its writer sends chunks of
/// seeded random bytes (about 6 MB/s) until told to stop, then closes its side; its reader
/// hashes what comes back until EOF.
struct LongStream {
    stop: watch::Sender<bool>,
    echoed: watch::Receiver<u64>,
    writer: JoinHandle<std::io::Result<(u64, Digest)>>,
    reader: JoinHandle<std::io::Result<(u64, Digest)>>,
}

impl LongStream {
    async fn start(addr: SocketAddr) -> anyhow::Result<Self> {
        let (mut r, mut w) = TcpStream::connect(addr).await?.into_split();
        let (stop, mut stopped) = watch::channel(false);
        let writer = tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(rand::random());
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 32 * 1024];
            let mut sent = 0u64;
            while !*stopped.borrow_and_update() {
                rng.fill_bytes(&mut buf);
                hasher.update(&buf);
                w.write_all(&buf).await?;
                sent += buf.len() as u64;
                tokio::select! {
                    _ = stopped.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
            w.shutdown().await?;
            Ok((sent, hasher.finalize().into()))
        });
        let (progress, echoed) = watch::channel(0u64);
        let reader = tokio::spawn(async move { read_counting(&mut r, &progress).await });
        Ok(Self {
            stop,
            echoed,
            writer,
            reader,
        })
    }

    fn echoed(&self) -> u64 {
        *self.echoed.borrow()
    }

    /// Waits until `n` bytes in all came back.
    async fn wait_echoed(&mut self, n: u64, what: &str) -> anyhow::Result<()> {
        within(STEP, what, self.echoed.wait_for(|&got| got >= n))
            .await?
            .map_err(|_| anyhow!("the long connection ended before {n} bytes came back"))?;
        Ok(())
    }

    /// Stops feeding it; fails unless every byte sent came back, unchanged.
    async fn finish(self) -> anyhow::Result<u64> {
        let _ = self.stop.send(true);
        let (sent, sent_digest) = within(STEP, "the writer to finish", self.writer).await???;
        let (got, got_digest) = within(STEP, "the echo to end", self.reader).await???;
        ensure!(
            sent == got && sent_digest == got_digest,
            "the long connection sent {sent} bytes ({}), got back {got} ({})",
            hex(&sent_digest),
            hex(&got_digest)
        );
        Ok(sent)
    }
}

/// Reads to EOF, publishing the count so far; the count and the SHA-256 of it all.
async fn read_counting<R: AsyncRead + Unpin>(
    r: &mut R,
    progress: &watch::Sender<u64>,
) -> std::io::Result<(u64, Digest)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((total, hasher.finalize().into()));
        }
        hasher.update(&buf[..n]);
        total += n as u64;
        progress.send_replace(total);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_refuses_no_connection_and_lets_open_ones_finish_on_the_old_process() {
    with_timeout(LIMIT, async {
        let Fixture { server, key, echo } = Fixture::start().await?;
        let files = Files::new()?;
        let ctl = files.control_socket();
        let ctl_arg = ctl.display().to_string();
        let rest = host_table("h", &server, &key)
            + &forward_table(
                "f",
                "h",
                "local",
                "127.0.0.1:0",
                Some(&echo.addr().to_string()),
            );
        let config = files.config(&format!("shutdown_grace = \"{}s\"", GRACE.as_secs()), &rest)?;
        let mut old = Upgradable::start(&files, &config)?;
        let old_pid = old.warren.pid();
        let doc = wait_ready(&old.warren, &ctl).await?;
        let addr: SocketAddr = forward_doc(&doc, "f")?["listen"]
            .as_str()
            .context("listen")?
            .parse()?;

        // Short connections from before the upgrade until after the old process is gone,
        // and one long connection open across the hand-over.
        let prober = Prober::start(addr);
        prober
            .wait_more(20, "probes through the old process")
            .await?;
        let mut long = LongStream::start(addr).await?;
        long.wait_echoed(MIB, "the long connection's first MiB")
            .await?;
        let before = forward_now(&ctl, "f").await?;
        ensure!(
            before["bytes_in"].as_u64().unwrap_or(0) >= MIB,
            "the old process counts the long connection: {before}"
        );

        let from = old.warren.stderr_len();
        let out = run_warren(&["upgrade", "-s", &ctl_arg], &[], Duration::from_secs(60)).await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "stdout: {stdout}\nstderr: {}\nwarren:\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail(&old.warren.stderr_text(), 40)
        );
        let upgraded = Instant::now();
        let new_pid = upgraded_pid(&stdout)?;
        ensure!(new_pid != old_pid && alive(new_pid), "new pid {new_pid}");
        old.warren
            .wait_for_stderr_after(from, STEP, |l| {
                l.contains("handed over to the new process; draining")
            })
            .await?;
        // The new process adopted the ingress (same port, though the file says port 0).
        let adopted = old
            .warren
            .wait_for_stderr_after(from, STEP, |l| l.contains("adopted a passed listener"))
            .await?;
        ensure!(adopted.contains(&addr.to_string()), "{adopted}");

        // The long connection goes on, on the old process: 2 MiB more, then all of it back.
        let at_upgrade = long.echoed();
        long.wait_echoed(
            at_upgrade + 2 * MIB,
            "the long connection after the upgrade",
        )
        .await?;
        ensure!(
            old.warren.is_running(),
            "the old process exited with a connection open, within its grace"
        );
        let long_bytes = long.finish().await?;
        ensure!(long_bytes >= 3 * MIB, "only {long_bytes} bytes");

        // Nothing left open on it: the old process exits 0, within its grace.
        let code = old.warren.wait_exit_only(GRACE + STEP).await?;
        assert_eq!(code, 0, "{}", tail(&old.warren.stderr_text(), 40));
        let took = upgraded.elapsed();
        ensure!(
            took < GRACE + Duration::from_secs(3),
            "the old process took {took:?} to exit after the upgrade"
        );
        ensure!(
            !alive(old_pid) && alive(new_pid),
            "old {old_pid}, new {new_pid}"
        );

        // Probes served by the new process alone, then the count: not one refused or failed.
        prober
            .wait_more(20, "probes through the new process")
            .await?;
        let (ok, refused, failures) = prober.finish();
        ensure!(
            refused == 0 && failures.is_empty(),
            "{ok} round trips worked, {refused} connections were refused, {} failed: {:?}\n\
             warren:\n{}",
            failures.len(),
            &failures[..failures.len().min(10)],
            tail(&old.warren.stderr_text(), 40)
        );

        // The new process answers on the same control socket, with its own counters, and
        // carries bytes on the same port.
        ensure!(ctl.exists(), "the control socket file was removed");
        let after = forward_now(&ctl, "f").await?;
        assert_eq!(after["listen"], addr.to_string().as_str(), "{after}");
        ensure!(
            after["bytes_in"].as_u64().unwrap_or(u64::MAX) < MIB,
            "the new process counts the long connection of the old: {after}"
        );
        push_through(TcpStream::connect(addr).await?, 4 * MIB)
            .await?
            .check_echoed()?;

        assert_eq!(old.stop_successor(new_pid).await?, Some(0));
        ensure!(
            !ctl.exists(),
            "the new process did not remove the control socket when it stopped"
        );
        eprintln!("upgrade: {ok} probes, the old process exited {took:?} after the upgrade");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_upgrades_and_the_new_process_can_upgrade_again() {
    with_timeout(LIMIT, async {
        let Fixture { server, key, echo } = Fixture::start().await?;
        let files = Files::new()?;
        let ctl = files.control_socket();
        let ingress = files.path("in.sock");
        let rest = host_table("h", &server, &key)
            + &forward_table(
                "f",
                "h",
                "local",
                &ingress.display().to_string(),
                Some(&echo.addr().to_string()),
            );
        let config = files.config(&format!("shutdown_grace = \"{}s\"", GRACE.as_secs()), &rest)?;
        let mut old = Upgradable::start(&files, &config)?;
        let old_pid = old.warren.pid();
        wait_ready(&old.warren, &ctl).await?;
        push_through(UnixStream::connect(&ingress).await?, MIB)
            .await?
            .check_echoed()?;

        let from = old.warren.stderr_len();
        old.warren.signal(Signal::SIGUSR2)?;
        let ready = old
            .warren
            .wait_for_stderr_after(from, STEP, |l| {
                l.contains("upgrade: the new process is ready")
            })
            .await?;
        let second = pid_in(&ready)?;
        ensure!(second != old_pid && alive(second), "new pid {second}");
        assert_eq!(
            old.warren.wait_exit_only(STEP).await?,
            0,
            "{}",
            tail(&old.warren.stderr_text(), 40)
        );
        // The old process left the Unix ingress and the control socket to the new one.
        ensure!(
            ingress.exists() && ctl.exists(),
            "a socket file went with the old process"
        );
        let f = forward_now(&ctl, "f").await?;
        assert_eq!(f["total"], 0, "the new process's own counters: {f}");
        push_through(UnixStream::connect(&ingress).await?, 4 * MIB)
            .await?
            .check_echoed()?;

        // The new process upgrades in turn, with nothing open to drain.
        let out = run_warren(
            &["upgrade", "-s", &ctl.display().to_string()],
            &[],
            Duration::from_secs(60),
        )
        .await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "stdout: {stdout}\nstderr: {}\nwarren:\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail(&old.warren.stderr_text(), 40)
        );
        let third = upgraded_pid(&stdout)?;
        ensure!(third != second && alive(third), "third pid {third}");
        wait_until(STEP, "the second process to exit", || !alive(second)).await?;
        ensure!(ingress.exists() && ctl.exists(), "a socket file went");
        push_through(UnixStream::connect(&ingress).await?, 4 * MIB)
            .await?
            .check_echoed()?;
        assert_eq!(forward_now(&ctl, "f").await?["total"], 1);

        // The last process, stopped, removes the files it was handed as warren's own.
        assert_eq!(old.stop_successor(third).await?, Some(0));
        ensure!(
            !ingress.exists() && !ctl.exists(),
            "the last process left its socket files behind"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_binary_that_fails_leaves_the_old_process_serving() {
    with_timeout(LIMIT, async {
        let Fixture { server, key, echo } = Fixture::start().await?;
        let files = Files::new()?;
        let ctl = files.control_socket();
        let ctl_arg = ctl.display().to_string();
        let ingress = files.path("in.sock");
        let rest = host_table("h", &server, &key)
            + &forward_table(
                "f",
                "h",
                "local",
                &ingress.display().to_string(),
                Some(&echo.addr().to_string()),
            );
        let config = files.config(&format!("shutdown_grace = \"{}s\"", GRACE.as_secs()), &rest)?;
        // warren runs from a copy that an "installer" replaces.
        std::fs::create_dir(files.path("bin"))?;
        let binary = files.path("bin/warren");
        std::fs::copy(WARREN, &binary)?;
        let install = |content: &[u8]| -> anyhow::Result<()> {
            let staged = files.path("bin/.warren.new");
            std::fs::write(&staged, content)?;
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))?;
            std::fs::rename(&staged, &binary)?;
            Ok(())
        };
        adopt_orphans();
        let cmd = launcher_command(
            &binary,
            &["run", "-c", &config.display().to_string()],
            &[("HOME", &files.home())],
        );
        let mut old = Upgradable {
            warren: WarrenProcess::spawn_command(cmd)?,
            config: config.clone(),
        };
        let pid = old.warren.pid();
        wait_ready(&old.warren, &ctl).await?;

        install(b"#!/bin/sh\necho 'broken warren: not today' >&2\nexit 3\n")?;
        let out = run_warren(&["upgrade", "-s", &ctl_arg], &[], Duration::from_secs(60)).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
        ensure!(
            stderr.contains("exited") && stderr.contains('3'),
            "the reason names the exit and its code: {stderr}"
        );
        // The binary at the start path ran (not the one this process was loaded from).
        old.warren
            .wait_for_stderr(STEP, |l| l.contains("broken warren: not today"))
            .await?;

        // The same process still serves: status, bytes, its socket files.
        ensure!(old.warren.is_running(), "the old process exited");
        assert_eq!(old.warren.pid(), pid);
        ensure!(
            !old.warren
                .stderr_text()
                .contains("handed over to the new process"),
            "the old process handed over to a process that failed"
        );
        ensure!(ingress.exists() && ctl.exists(), "a socket file went");
        push_through(UnixStream::connect(&ingress).await?, 4 * MIB)
            .await?
            .check_echoed()?;
        let f = forward_now(&ctl, "f").await?;
        assert_eq!(f["total"], 1, "the old process's counters: {f}");

        // With a good binary in place, the same process upgrades.
        install(&std::fs::read(WARREN)?)?;
        let out = run_warren(&["upgrade", "-s", &ctl_arg], &[], Duration::from_secs(60)).await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "stdout: {stdout}\nstderr: {}\nold: {}",
            String::from_utf8_lossy(&out.stderr),
            old.warren.stderr_text()
        );
        let new_pid = upgraded_pid(&stdout)?;
        assert_eq!(old.warren.wait_exit_only(STEP).await?, 0);
        push_through(UnixStream::connect(&ingress).await?, MIB)
            .await?
            .check_echoed()?;
        assert_eq!(old.stop_successor(new_pid).await?, Some(0));
        Ok(())
    })
    .await;
}
