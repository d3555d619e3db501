//! A peer that stops reading stalls only its own channel, whatever the size of the writes that
//! feed it: with a never-reading end on a local (-L), dynamic (-D) or remote (-R) forward fed
//! one byte per write for 30 s, another forward of the same session keeps echoing within
//! 100 ms, and warren's RSS grows by less than the channel window plus 1 MiB (also for 1 KiB
//! and 32 KiB writes).

use std::io::{ErrorKind, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::{Instant, MissedTickBehavior};

use crate::harness::{
    MIB, PeerServer, Transport, WarrenProcess, tail, wait_for, wait_until, with_timeout, within,
};
use crate::support::{Fixture, forward_table, host_table, status_json};

/// The receive window of each channel (`WINDOW` in `crates/warren/src/session/connect.rs`).
const WINDOW: u64 = 8 * MIB;
/// What one stalled channel may add to warren's RSS: its window and 1 MiB for the rest.
const HELD_BOUND: u64 = WINDOW + MIB;
/// How long the one-byte floods last.
const FLOOD_FOR: Duration = Duration::from_secs(30);
/// The pace of the probes through the other forward.
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// The longest round trip the 95th-percentile probe may take. (The worst single probe is
/// reported, not bounded: on a loaded 2-core machine the scheduler alone makes a few take
/// a few hundred milliseconds. A frozen session is caught by [`PROBE_GIVE_UP`].)
const PROBE_BOUND: Duration = Duration::from_millis(100);
/// A probe unanswered for this long means the session froze: the test stops there.
const PROBE_GIVE_UP: Duration = Duration::from_secs(5);
/// The one-byte writer must get rid of at least a window: then the stalled channel was full.
/// (This alone does not tell the old channel queue from the new: when that queue froze the
/// session, after 65 536 messages, sshd went on reading the egress into its own buffer up to
/// the window, and the kernel's socket buffers took more; the probes and the RSS tell.)
const FLOOD_FLOOR: u64 = WINDOW;
/// How long a writer that made no progress is taken to be stuck (its peer full).
const STUCK_AFTER: Duration = Duration::from_secs(1);
/// Bound for one step of the set-up.
const STEP: Duration = Duration::from_secs(20);
/// Bound for a whole test.
const LIMIT: Duration = Duration::from_secs(120);
/// The name of the forward whose connection stalls.
const STALLED: &str = "stalled";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_writes_to_a_local_forward_that_is_not_read_stall_only_that_channel() {
    with_timeout(LIMIT, one_byte_flood(Kind::Local)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_writes_to_a_socks_client_that_does_not_read_stall_only_that_channel() {
    with_timeout(LIMIT, one_byte_flood(Kind::Dynamic)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_writes_through_a_remote_forward_to_an_egress_that_does_not_read_stall_only_that_channel()
 {
    with_timeout(LIMIT, one_byte_flood(Kind::Remote)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_channel_holds_at_most_its_window_for_1_kib_and_32_kib_writes() {
    with_timeout(LIMIT, async {
        let small = std::net::TcpListener::bind("127.0.0.1:0")?;
        let large = std::net::TcpListener::bind("127.0.0.1:0")?;
        let (small_addr, large_addr) = (small.local_addr()?, large.local_addr()?);
        let mut rig = Rig::start(|dir| {
            forward_table(
                "stalled-1k",
                "h",
                "local",
                &path_text(&dir.join("1k.sock")),
                Some(&small_addr.to_string()),
            ) + &forward_table(
                "stalled-32k",
                "h",
                "local",
                &path_text(&dir.join("32k.sock")),
                Some(&large_addr.to_string()),
            )
        })
        .await?;
        // Both stay stalled to the end, so the second is measured on top of the first and
        // cannot reuse memory the first held.
        let mut stalled = Vec::new();
        for (listener, size, ingress, name) in [
            (small, 1024, "1k.sock", "stalled-1k"),
            (large, 32 * 1024, "32k.sock", "stalled-32k"),
        ] {
            let baseline = rig.rss()?;
            let client = connect(&rig.path(ingress)).await?;
            let flood = Flood::start(Side::Accept(listener), size);
            let (flooded, growth) = rig.until_stuck(&flood, baseline).await?;
            report("-L", size, growth, flooded);
            ensure!(
                flooded >= WINDOW,
                "{size}-byte writes: only {flooded} bytes went out before the writer got stuck; \
                 the {WINDOW}-byte window was never filled"
            );
            ensure!(
                growth < HELD_BOUND,
                "{size}-byte writes: warren's RSS grew by {growth} bytes for one stalled \
                 channel ({flooded} bytes written), over the bound of {HELD_BOUND}"
            );
            stalled.push((name, flood, client));
        }
        for (name, flood, _client) in stalled {
            rig.ensure_still_open(name, flood).await?;
        }
        // The session still carries the probe forward (answered within PROBE_GIVE_UP).
        rig.probe(1).await?;
        Ok(())
    })
    .await;
}

/// The forward whose connection is stalled.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Local,
    Dynamic,
    Remote,
}

impl Kind {
    fn flag(self) -> &'static str {
        match self {
            Kind::Local => "-L",
            Kind::Dynamic => "-D",
            Kind::Remote => "-R",
        }
    }
}

/// Test 1: a never-reading end fed one byte per write for [`FLOOD_FOR`] while probes go
/// through the other forward.
async fn one_byte_flood(kind: Kind) -> anyhow::Result<()> {
    // -L and -D: the flood comes from `egress`; -R: it goes to `sink`, an egress that never
    // reads (started for every kind, used by -R only).
    let egress = std::net::TcpListener::bind("127.0.0.1:0")?;
    let egress_addr = egress.local_addr()?;
    let sink = PeerServer::start(Transport::Unix, |stream| async move {
        let _held = stream;
        std::future::pending::<()>().await;
    })
    .await?;
    let sink_path = path_text(sink.addr().path().context("the sink's path")?);
    let mut rig = Rig::start(|dir| {
        let ingress = path_text(&dir.join("stalled.sock"));
        let egress = egress_addr.to_string();
        match kind {
            Kind::Local => forward_table(STALLED, "h", "local", &ingress, Some(&egress)),
            Kind::Dynamic => forward_table(STALLED, "h", "dynamic", &ingress, None),
            Kind::Remote => forward_table(STALLED, "h", "remote", "127.0.0.1:0", Some(&sink_path)),
        }
    })
    .await?;
    let ingress = rig.path("stalled.sock");
    // The non-reading end is kept open until the test ends: a local client, or the egress.
    let (flood, _never_reads): (Flood, Box<dyn std::any::Any>) = match kind {
        Kind::Local => (
            Flood::start(Side::Accept(egress), 1),
            Box::new(connect(&ingress).await?),
        ),
        Kind::Dynamic => {
            let mut client = connect(&ingress).await?;
            socks5_connect(&mut client, egress_addr).await?;
            (Flood::start(Side::Accept(egress), 1), Box::new(client))
        }
        Kind::Remote => {
            let port = rig.remote_port(STALLED).await?;
            let flood = Flood::start(Side::Connect(([127, 0, 0, 1], port).into()), 1);
            wait_until(STEP, "the remote forward's egress to accept", || {
                sink.connections() == 1
            })
            .await?;
            (flood, Box::new(sink))
        }
    };
    wait_until(STEP, "the one-byte flood to start", || flood.written() > 0).await?;
    let baseline = rig.rss()?;
    let watched = rig.watch(&flood, baseline).await?;
    let flooded = flood.written();
    rig.ensure_still_open(STALLED, flood).await?;
    report(kind.flag(), 1, watched.growth, flooded);
    let summary = format!(
        "{}: {flooded} bytes flooded in {FLOOD_FOR:?}, RSS +{} KiB, probes p50 {:?} p95 {:?}, \
         worst {:?} of {} (sent {:?} into the flood, {} bytes flooded then)",
        kind.flag(),
        watched.growth / 1024,
        watched.percentile(50),
        watched.percentile(95),
        watched.worst,
        watched.probes,
        watched.worst_at.0,
        watched.worst_at.1
    );
    eprintln!("slow peer {summary}");
    ensure!(
        watched.percentile(95) < PROBE_BOUND,
        "{summary}: {} probes took {PROBE_BOUND:?} or more",
        watched.slow
    );
    ensure!(
        watched.growth < HELD_BOUND,
        "{summary}: warren's RSS grew over the bound of {HELD_BOUND} bytes"
    );
    ensure!(
        flooded >= FLOOD_FLOOR,
        "{summary}: the writer got rid of fewer than {FLOOD_FLOOR} bytes"
    );
    Ok(())
}

/// One `stalled channel held` line, the figure the flow-control notes quote.
fn report(flag: &str, size: usize, growth: u64, flooded: u64) {
    let size = if size >= 1024 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    };
    eprintln!(
        "stalled channel held: write size {size} ({flag}) -> RSS +{} KiB after {flooded} bytes",
        growth / 1024
    );
}

/// What [`Rig::watch`] saw.
struct Watched {
    /// The slowest probe.
    worst: Duration,
    /// When it was sent, counted from the start of the watch, and the bytes flooded then.
    worst_at: (Duration, u64),
    /// Probes made.
    probes: u32,
    /// Probes at or over [`PROBE_BOUND`].
    slow: u32,
    /// The largest RSS growth over the baseline.
    growth: u64,
    /// Every probe's round trip, in the order sent.
    rtts: Vec<Duration>,
}

impl Watched {
    /// The round trip that `pct` percent of the probes took at most.
    fn percentile(&self, pct: usize) -> Duration {
        let mut sorted = self.rtts.clone();
        sorted.sort();
        let at = (sorted.len() * pct / 100).min(sorted.len().saturating_sub(1));
        sorted.get(at).copied().unwrap_or_default()
    }
}

/// `warren run` (its own process, so its RSS is its own) with host `h` and a local forward
/// `probe` from a Unix ingress to an echo server, beside the forwards under test.
struct Rig {
    fixture: Fixture,
    dir: tempfile::TempDir,
    sock: String,
    warren: WarrenProcess,
    probe: UnixStream,
}

impl Rig {
    /// Starts warren with the `[[forward]]` tables `forwards(dir)` gives (their Unix ingresses
    /// in `dir`); returns once the host is up, every forward ready and a probe echoed.
    async fn start(forwards: impl FnOnce(&Path) -> String) -> anyhow::Result<Self> {
        let fixture = Fixture::start().await?;
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("home"))?;
        let sock = path_text(&dir.path().join("control.sock"));
        let probe_ingress = dir.path().join("probe.sock");
        let config = dir.path().join("warren.toml");
        std::fs::write(
            &config,
            format!("[daemon]\ncontrol_socket = \"{sock}\"\n\n")
                + &host_table("h", &fixture.server, &fixture.key)
                + &forward_table(
                    "probe",
                    "h",
                    "local",
                    &path_text(&probe_ingress),
                    Some(&fixture.echo.addr().to_string()),
                )
                + &forwards(dir.path()),
        )?;
        let warren = WarrenProcess::spawn(
            &["run", "-c", &path_text(&config)],
            &[("HOME", &path_text(&dir.path().join("home")))],
        )?;
        wait_for(STEP, "host h up and every forward ready", || async {
            let doc = status_json(&sock).await?;
            let forwards = doc["forwards"].as_array()?;
            (doc["hosts"][0]["state"] == "up" && forwards.iter().all(|f| f["state"] == "ready"))
                .then_some(())
        })
        .await
        .with_context(|| format!("warren's stderr:\n{}", tail(&warren.stderr_text(), 40)))?;
        let probe = connect(&probe_ingress).await?;
        let mut rig = Rig {
            fixture,
            dir,
            sock,
            warren,
            probe,
        };
        rig.probe(0).await?;
        Ok(rig)
    }

    /// A path in the rig's tempdir.
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Forward `name` in warren's status document.
    async fn forward(&self, name: &str) -> anyhow::Result<Value> {
        let doc = status_json(&self.sock)
            .await
            .context("warren status answered nothing")?;
        doc["forwards"]
            .as_array()
            .and_then(|fs| fs.iter().find(|f| f["name"] == name))
            .cloned()
            .with_context(|| format!("no forward {name} in {doc}"))
    }

    /// The port the server listens on for remote forward `name` (its `listen` in status).
    async fn remote_port(&self, name: &str) -> anyhow::Result<u16> {
        let f = self.forward(name).await?;
        let port = f["listen"]
            .as_str()
            .and_then(|l| l.rsplit_once(':'))
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .with_context(|| format!("no TCP port in the status of {name}: {f}"))?;
        ensure!(port != 0, "remote forward {name} listens on port 0: {f}");
        Ok(port)
    }

    /// warren's resident set size in bytes (`VmRSS` of `/proc/PID/status`).
    fn rss(&self) -> anyhow::Result<u64> {
        let pid = self.warren.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("read /proc/{pid}/status (did warren exit?)"))?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .with_context(|| format!("no VmRSS line in /proc/{pid}/status"))?;
        Ok(kib * 1024)
    }

    /// One round trip of a 32-byte message numbered `seq` through the probe forward.
    async fn probe(&mut self, seq: u32) -> anyhow::Result<Duration> {
        let msg: Vec<u8> = seq.to_le_bytes().repeat(8);
        let mut back = vec![0u8; msg.len()];
        let start = Instant::now();
        within(PROBE_GIVE_UP, &format!("probe {seq} to be echoed"), async {
            self.probe.write_all(&msg).await?;
            self.probe.read_exact(&mut back).await?;
            anyhow::Ok(())
        })
        .await??;
        ensure!(back == msg, "probe {seq} came back as {back:?}");
        Ok(start.elapsed())
    }

    /// Probes every [`PROBE_EVERY`] for [`FLOOD_FOR`] while `flood` runs, sampling warren's
    /// RSS against `baseline` at each probe.
    async fn watch(&mut self, flood: &Flood, baseline: u64) -> anyhow::Result<Watched> {
        let mut w = Watched {
            worst: Duration::ZERO,
            worst_at: (Duration::ZERO, 0),
            probes: 0,
            slow: 0,
            growth: 0,
            rtts: Vec::new(),
        };
        let mut tick = tokio::time::interval(PROBE_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let start = Instant::now();
        while start.elapsed() < FLOOD_FOR {
            tick.tick().await;
            w.probes += 1;
            let sent = (start.elapsed(), flood.written());
            let rtt = self.probe(w.probes).await.with_context(|| {
                format!(
                    "the session froze: probe {} unanswered after {} bytes flooded, RSS +{} KiB",
                    w.probes,
                    flood.written(),
                    w.growth / 1024
                )
            })?;
            if rtt > w.worst {
                w.worst = rtt;
                w.worst_at = sent;
            }
            w.slow += u32::from(rtt >= PROBE_BOUND);
            w.rtts.push(rtt);
            w.growth = w.growth.max(self.rss()?.saturating_sub(baseline));
        }
        Ok(w)
    }

    /// Waits until `flood` has made no progress for [`STUCK_AFTER`]; returns the bytes it
    /// wrote and the largest RSS growth over `baseline` seen meanwhile.
    async fn until_stuck(&self, flood: &Flood, baseline: u64) -> anyhow::Result<(u64, u64)> {
        let deadline = Instant::now() + STEP;
        let mut growth = 0;
        let mut last = (flood.written(), Instant::now());
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            growth = growth.max(self.rss()?.saturating_sub(baseline));
            let now = flood.written();
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() >= STUCK_AFTER && now > 0 {
                return Ok((now, growth));
            }
            ensure!(
                Instant::now() < deadline,
                "the writer was still making progress after {STEP:?} ({now} bytes)"
            );
        }
    }

    /// Stops `flood` and checks that the stalled connection of forward `name` is still
    /// open: the writer's socket never failed and warren counts it active.
    async fn ensure_still_open(&self, name: &str, flood: Flood) -> anyhow::Result<()> {
        let written = flood.written();
        flood
            .stop()
            .with_context(|| format!("the stalled connection was closed after {written} bytes"))?;
        let f = self.forward(name).await?;
        ensure!(
            f["active"] == 1,
            "forward {name} should still have its stalled connection open: {f}"
        );
        ensure!(
            self.fixture.server.sessions_accepted() == 1,
            "warren reconnected meanwhile; its stderr:\n{}",
            tail(&self.warren.stderr_text(), 40)
        );
        Ok(())
    }
}

/// The end of the flood the test plays.
enum Side {
    /// Accept one connection (an egress for warren) and write to it.
    Accept(std::net::TcpListener),
    /// Connect (to a remote forward's listener on the server) and write.
    Connect(SocketAddr),
}

/// A thread that writes `size` bytes per `write` call, with `TCP_NODELAY`, as fast as the
/// socket takes them, until stopped or until the socket fails.
struct Flood {
    written: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Flood {
    fn start(side: Side, size: usize) -> Self {
        let written = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let thread = std::thread::spawn({
            let (written, stop, failure) = (written.clone(), stop.clone(), failure.clone());
            move || {
                if let Err(e) = flood(side, size, &written, &stop) {
                    *failure.lock().unwrap() = Some(format!("{e:#}"));
                }
            }
        });
        Flood {
            written,
            stop,
            failure,
            thread: Some(thread),
        }
    }

    /// Bytes the socket took so far.
    fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Stops the writer (its socket closes); an error if the socket had failed before.
    fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| anyhow::anyhow!("the writer panicked"))?;
        }
        match self.failure.lock().unwrap().take() {
            Some(e) => bail!("{e}"),
            None => Ok(()),
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The body of a [`Flood`] thread.
fn flood(side: Side, size: usize, written: &AtomicU64, stop: &AtomicBool) -> anyhow::Result<()> {
    let mut stream = match side {
        Side::Connect(addr) => {
            std::net::TcpStream::connect(addr).with_context(|| format!("connect to {addr}"))?
        }
        Side::Accept(listener) => {
            listener.set_nonblocking(true)?;
            loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        if stop.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(e).context("accept"),
                }
            }
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    // Blocked writes wake up now and then to see whether the test is over.
    stream.set_write_timeout(Some(Duration::from_millis(50)))?;
    let chunk = vec![0x5a_u8; size];
    while !stop.load(Ordering::Relaxed) {
        match stream.write(&chunk) {
            Ok(0) => bail!("the socket took nothing"),
            Ok(n) => {
                written.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                let n = written.load(Ordering::Relaxed);
                return Err(e).context(format!("write after {n} bytes"));
            }
        }
    }
    Ok(())
}

/// Connects to a Unix ingress of warren.
async fn connect(path: &Path) -> anyhow::Result<UnixStream> {
    UnixStream::connect(path)
        .await
        .with_context(|| format!("connect to {}", path.display()))
}

/// A SOCKS5 handshake without authentication and a CONNECT to `target` (IPv4).
async fn socks5_connect(s: &mut UnixStream, target: SocketAddr) -> anyhow::Result<()> {
    let SocketAddr::V4(v4) = target else {
        bail!("{target} is not IPv4")
    };
    s.write_all(&[5, 1, 0]).await?;
    let mut method = [0u8; 2];
    within(
        STEP,
        "the SOCKS5 method selection",
        s.read_exact(&mut method),
    )
    .await??;
    ensure!(method == [5, 0], "method selection {method:?}, want [5, 0]");
    let mut request = vec![5, 1, 0, 1];
    request.extend_from_slice(&v4.ip().octets());
    request.extend_from_slice(&v4.port().to_be_bytes());
    s.write_all(&request).await?;
    let mut reply = [0u8; 10];
    within(STEP, "the SOCKS5 reply", s.read_exact(&mut reply)).await??;
    ensure!(
        reply[..4] == [5, 0, 0, 1],
        "SOCKS5 reply {reply:?}, want success [5, 0, 0, 1, ...]"
    );
    Ok(())
}

/// A path as config text.
fn path_text(path: &Path) -> String {
    path.display().to_string()
}
