//! warren against a deliberately hostile SSH server (`hostile_server.py`, on paramiko): one
//! that ignores the channel window and floods, and one that opens channels warren never
//! asked for. Whatever the server sends, a channel holds at most its window, the session
//! stays up and its other channels keep working (vendor/README.md, patch 1).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::harness::{
    KeyKind, MIB, UserKey, WarrenProcess, current_user, push_through, tail, wait_for, wait_until,
    with_timeout, within,
};
use crate::support::{fd_count, forward_table, status_json};

const LIMIT: Duration = Duration::from_secs(60);
/// Bound for one step that should be quick.
const STEP: Duration = Duration::from_secs(20);
/// The system interpreter, which Debian's `python3-paramiko` installs for (not a pyenv one).
const PYTHON: &str = "/usr/bin/python3";
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/e2e/hostile_server.py"
);
/// warren's channel window (`WINDOW` in crates/warren/src/session/connect.rs).
const WINDOW: u64 = 8 * MIB;
/// What the flood sends, ignoring the window.
const FLOOD_MIB: u64 = 64;
/// How many channels of each unrequested type the attack opens.
const ATTACK_N: u64 = 200;
/// The channel types the attack opens (hostile_server.py `UNREQUESTED`).
const UNREQUESTED: [&str; 5] = [
    "session",
    "x11",
    "auth-agent@openssh.com",
    "direct-tcpip",
    "forwarded-tcpip",
];
/// russh's line for data beyond the window (vendor/russh/src/session.rs `receive_window`).
const DROPPED: &str = "dropped (logged once per channel)";
/// warren's warn line for the first unrequested channel of a session (session/handler.rs).
const REFUSED_WARN: &str = "server opened a channel warren did not ask for";
/// Its debug line for the further ones.
const REFUSED_DEBUG: &str = "unrequested channel refused";

/// Lines of a child's output stream, as they come.
fn capture(stream: impl AsyncRead + Unpin + Send + 'static) -> watch::Receiver<Vec<String>> {
    let (tx, rx) = watch::channel(Vec::new());
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tx.send_modify(|l| l.push(line));
        }
    });
    rx
}

/// `hostile_server.py` running on 127.0.0.1, with its host key. Killed on drop (and it exits
/// by itself when its stdin, held here, closes).
struct HostileServer {
    _child: Child,
    port: u16,
    host_key: UserKey,
    stdout: watch::Receiver<Vec<String>>,
    stderr: watch::Receiver<Vec<String>>,
}

impl HostileServer {
    async fn start() -> anyhow::Result<Self> {
        let probe = Command::new(PYTHON)
            .args(["-c", "import paramiko"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if !probe.is_ok_and(|s| s.success()) {
            bail!(
                "the hostile-server tests need paramiko for {PYTHON}: install it with \
                 `apt-get install -y python3-paramiko` (scripts/test.sh does so as root)"
            );
        }
        let host_key = UserKey::generate(KeyKind::Ed25519, None).await?;
        let mut child = Command::new(PYTHON)
            .arg(SCRIPT)
            .arg(host_key.path())
            .args([FLOOD_MIB.to_string(), ATTACK_N.to_string()])
            .arg(LIMIT.as_secs().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {PYTHON} {SCRIPT}"))?;
        let stdout = capture(child.stdout.take().context("stdout pipe")?);
        let stderr = capture(child.stderr.take().context("stderr pipe")?);
        let mut server = HostileServer {
            _child: child,
            port: 0,
            host_key,
            stdout,
            stderr,
        };
        let first = server.wait_line(STEP, |_| true).await?;
        server.port = first
            .trim()
            .parse()
            .with_context(|| format!("hostile_server.py printed {first:?}, not a port"))?;
        Ok(server)
    }

    /// Waits for a stdout line matching `pred`.
    async fn wait_line(
        &self,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let find = |l: &Vec<String>| l.iter().find(|s| pred(s)).cloned();
        let mut rx = self.stdout.clone();
        match within(
            limit,
            "a line from hostile_server.py",
            rx.wait_for(|l| find(l).is_some()),
        )
        .await
        {
            Ok(Ok(lines)) => Ok(find(&lines).unwrap_or_default()),
            _ => bail!(
                "no matching line from hostile_server.py within {limit:?}; stdout:\n{}\nstderr:\n{}",
                self.stdout.borrow().join("\n"),
                tail(&self.stderr.borrow().join("\n"), 40)
            ),
        }
    }

    /// Whether stdout has a line starting with `prefix` yet.
    fn has_line(&self, prefix: &str) -> bool {
        self.stdout.borrow().iter().any(|l| l.starts_with(prefix))
    }

    /// Its stderr: paramiko's warnings and errors, the attack's expected failures left out.
    fn stderr_text(&self) -> String {
        self.stderr.borrow().join("\n")
    }
}

/// warren run as its own process against a [`HostileServer`], with three local forwards on
/// Unix sockets: "flood" (to port 1), "echo" (2) and "attack" (3).
struct Warren {
    process: WarrenProcess,
    dir: tempfile::TempDir,
    _key: UserKey,
}

impl Warren {
    /// Writes the config, starts `warren run` with `args` added, and waits until the session
    /// is up and the forwards ready.
    async fn start(server: &HostileServer, args: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("home"))?;
        let key = UserKey::generate(KeyKind::Ed25519, None).await?;
        // Known by its port: `[127.0.0.1]:PORT ssh-ed25519 BASE64`.
        let public = server.host_key.public_key();
        let known_hosts = dir.path().join("known_hosts");
        let mut fields = public.split_whitespace();
        let (kind, blob) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        std::fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{} {kind} {blob}\n", server.port),
        )?;
        let user = current_user().unwrap_or_else(|_| "root".into());
        let mut toml = format!(
            "[daemon]\ncontrol_socket = \"{sock}\"\n\n\
             [hosts.h]\nhostname = \"127.0.0.1\"\nport = {port}\nuser = \"{user}\"\n\
             identity_files = [\"{key}\"]\nknown_hosts = [\"{kh}\"]\nagent = false\n\
             connect_timeout = \"10s\"\nkeepalive_interval = \"5s\"\nreconnect_min = \"100ms\"\n\
             reconnect_max = \"2s\"\n\n",
            sock = dir.path().join("control.sock").display(),
            port = server.port,
            key = key.path().display(),
            kh = known_hosts.display(),
        );
        for (name, port) in [("flood", 1), ("echo", 2), ("attack", 3)] {
            let listen = dir.path().join(format!("{name}.sock"));
            toml += &forward_table(
                name,
                "h",
                "local",
                &listen.display().to_string(),
                Some(&format!("127.0.0.1:{port}")),
            );
        }
        let config = dir.path().join("warren.toml");
        std::fs::write(&config, toml)?;
        let home = dir.path().join("home").display().to_string();
        let config = config.display().to_string();
        let mut all = vec!["run", "-c", config.as_str()];
        all.extend_from_slice(args);
        let process = WarrenProcess::spawn(&all, &[("HOME", &home)])?;
        let warren = Warren {
            process,
            dir,
            _key: key,
        };
        let sock = warren.control_socket();
        wait_for(
            STEP,
            "the session to be up and the forwards ready",
            || async {
                let doc = status_json(&sock).await?;
                let ready = doc["hosts"][0]["state"] == "up"
                    && doc["forwards"]
                        .as_array()
                        .is_some_and(|f| f.len() == 3 && f.iter().all(|f| f["state"] == "ready"));
                ready.then_some(())
            },
        )
        .await
        .with_context(|| {
            format!(
                "warren stderr:\n{}\nserver stderr:\n{}",
                tail(&warren.process.stderr_text(), 40),
                tail(&server.stderr_text(), 40)
            )
        })?;
        Ok(warren)
    }

    fn control_socket(&self) -> String {
        self.dir.path().join("control.sock").display().to_string()
    }

    fn ingress(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.sock"))
    }

    fn pid(&self) -> i32 {
        self.process.pid()
    }

    /// Host `h` in `warren status`: it must be up; returns its document (with `reconnects`
    /// and `since`, which tell whether it is still the same session).
    async fn session(&self) -> anyhow::Result<Value> {
        let doc = status_json(&self.control_socket())
            .await
            .context("warren status answered nothing")?;
        let host = doc["hosts"][0].clone();
        ensure!(host["state"] == "up", "the session is not up: {host}");
        Ok(host)
    }

    /// 1 MiB of random bytes through "echo" and back, checked by digest.
    async fn echo(&self) -> anyhow::Result<()> {
        let stream = UnixStream::connect(self.ingress("echo")).await?;
        within(STEP, "1 MiB echoed", push_through(stream, MIB))
            .await?
            .context("echo through the session")?
            .check_echoed()
    }

    /// How many stderr lines contain `needle`.
    fn count(&self, needle: &str) -> usize {
        self.process
            .stderr_lines()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

/// A `kB` field (`VmRSS`) of `/proc/PID/status`, in bytes.
fn proc_status_bytes(pid: i32, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(kb * 1024)
}

/// The resident set now.
fn rss(pid: i32) -> anyhow::Result<u64> {
    proc_status_bytes(pid, "VmRSS")
}

/// Samples a process's resident set every 2 ms, keeping the largest value (`VmHWM` is
/// only brought up to date now and then, so it can miss a peak).
struct RssSampler {
    max: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RssSampler {
    fn start(pid: i32) -> Self {
        let max = Arc::new(AtomicU64::new(rss(pid).unwrap_or(0)));
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn({
            let max = max.clone();
            async move {
                loop {
                    let done = tokio::time::timeout(Duration::from_millis(2), stopped.changed())
                        .await
                        .is_ok();
                    max.fetch_max(rss(pid)?, Ordering::SeqCst);
                    if done {
                        return Ok(());
                    }
                }
            }
        });
        RssSampler { max, stop, task }
    }

    /// The largest resident set seen so far.
    fn max(&self) -> u64 {
        self.max.load(Ordering::SeqCst)
    }

    /// Stops sampling (after one last sample); the largest resident set seen.
    async fn stop(self) -> anyhow::Result<u64> {
        let _ = self.stop.send(true);
        self.task.await.context("the RSS sampler")??;
        Ok(self.max.load(Ordering::SeqCst))
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / MIB as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_ignoring_the_window_fills_one_window_and_no_more() {
    with_timeout(LIMIT, async {
        let server = HostileServer::start().await?;
        let warren = Warren::start(&server, &[]).await?;
        let pid = warren.pid();
        let before = warren.session().await?;
        // The echo path's buffers exist before the baseline.
        warren.echo().await?;
        let baseline = rss(pid)?;
        let sampler = RssSampler::start(pid);

        // A client connects to the flood and never reads: the server sends 64 MiB at once.
        let _flood = UnixStream::connect(warren.ingress("flood")).await?;
        // Half-way, 24 MiB past the window, the flooded channel holds its window at most...
        server
            .wait_line(STEP, |l| l.starts_with("flood-half"))
            .await?;
        let flood_only = sampler.max().saturating_sub(baseline);
        ensure!(
            flood_only < WINDOW + MIB,
            "warren's RSS grew by {} (from {}) while the server pushed {} MiB ignoring the \
             window; a channel must hold at most its window ({}) and a little",
            mib(flood_only),
            mib(baseline),
            FLOOD_MIB / 2,
            mib(WINDOW)
        );
        // ...because the rest is dropped (and said so).
        warren
            .process
            .wait_for_stderr(STEP, |l| l.contains(DROPPED))
            .await?;
        // The same session still carries other channels while the server goes on.
        warren.echo().await.context("echo during the flood")?;
        let echoed_during = !server.has_line("flood-sent");
        let sent = server
            .wait_line(STEP, |l| l.starts_with("flood-sent"))
            .await?;
        assert_eq!(sent, format!("flood-sent {}", FLOOD_MIB * MIB));
        // The server wrote everything; this echo's data follows the flood's on the connection,
        // so once it is back warren has read all of it.
        warren.echo().await.context("echo after the flood")?;
        let with_echoes = sampler.stop().await?.saturating_sub(baseline);
        eprintln!(
            "hostile flood: RSS {} before; +{} at most while the server pushed its first {} MiB \
             (window {}), +{} at most over all {FLOOD_MIB} MiB and two 1 MiB echoes; echo done \
             while the server was still sending: {echoed_during}",
            mib(baseline),
            mib(flood_only),
            FLOOD_MIB / 2,
            mib(WINDOW),
            mib(with_echoes),
        );
        // With the echoes, up to their 1 MiB more may be in passing (what warren still has to
        // send to a server busy flooding, and what it has not yet written back).
        ensure!(
            with_echoes < WINDOW + 2 * MIB,
            "warren's RSS grew by {} (from {}) under a {FLOOD_MIB} MiB flood and 1 MiB echoes",
            mib(with_echoes),
            mib(baseline)
        );
        let after = warren.session().await?;
        assert_eq!(
            (&after["reconnects"], &after["since"]),
            (&before["reconnects"], &before["since"]),
            "the same session throughout"
        );
        let doc = status_json(&warren.control_socket())
            .await
            .context("status")?;
        let flood = doc["forwards"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["name"] == "flood"))
            .context("flood in status")?;
        assert_eq!(
            flood["active"], 1,
            "the flooded connection is still open: {flood}"
        );
        // Logged once for the channel, not once per dropped packet (hundreds of them).
        let dropped: Vec<String> = warren
            .process
            .stderr_lines()
            .into_iter()
            .filter(|l| l.contains(DROPPED))
            .collect();
        ensure!(
            dropped.len() == 1,
            "the drop must be logged exactly once for the channel: {dropped:#?}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_the_server_opens_unasked_are_refused_and_the_session_stays() {
    with_timeout(LIMIT, async {
        let server = HostileServer::start().await?;
        // warren at debug: the refusals after the first are logged there.
        let warren = Warren::start(&server, &["--log-level", "info,warren=debug"]).await?;
        let pid = warren.pid();
        let before = warren.session().await?;
        warren.echo().await?;
        let (baseline_rss, baseline_fds) = (rss(pid)?, fd_count(pid)?);

        // The attack: 200 opens of each type, each refused or (a bug) accepted; the server
        // writes what it got back on the channel that started it.
        let mut attack = UnixStream::connect(warren.ingress("attack")).await?;
        let mut text = String::new();
        within(
            STEP,
            "the attack's summary",
            attack.read_to_string(&mut text),
        )
        .await?
        .context("read the attack's summary")?;
        let summary: Value = serde_json::from_str(text.trim()).with_context(|| {
            format!(
                "not a JSON summary: {text:?}; server stderr:\n{}",
                server.stderr_text()
            )
        })?;
        eprintln!("hostile attack: {summary}");
        for kind in UNREQUESTED {
            // 1 is SSH_OPEN_ADMINISTRATIVELY_PROHIBITED; "opened" would be an accepted channel.
            assert_eq!(
                summary[kind],
                serde_json::json!({ "1": ATTACK_N }),
                "every {kind} open must be refused as administratively prohibited: {summary}"
            );
        }
        drop(attack);

        // The same session is up and carries data.
        let after = warren.session().await?;
        assert_eq!(
            (&after["reconnects"], &after["since"]),
            (&before["reconnects"], &before["since"]),
            "the same session throughout"
        );
        warren.echo().await.context("echo after the attack")?;

        // The first refusal at warn, the others (forwarded-tcpip for a listener never
        // requested included) at debug.
        let n = ATTACK_N as usize;
        let refused = 5 * n;
        wait_until(STEP, "every refusal logged", || {
            warren.count(REFUSED_WARN) + warren.count(REFUSED_DEBUG) >= refused
        })
        .await
        .with_context(|| tail(&warren.process.stderr_text(), 20))?;
        let warns: Vec<String> = warren
            .process
            .stderr_lines()
            .into_iter()
            .filter(|l| l.contains(REFUSED_WARN))
            .collect();
        ensure!(
            warns.len() == 1 && warns[0].contains(" WARN ") && warns[0].contains("session"),
            "one warning, for the first channel (a session): {warns:#?}"
        );
        assert_eq!(warren.count(REFUSED_DEBUG), refused - 1);

        // Nothing of the 1 000 channels is left behind.
        wait_until(STEP, "the attack's connection to be closed", || {
            fd_count(pid).is_ok_and(|fds| fds <= baseline_fds)
        })
        .await
        .with_context(|| {
            format!(
                "warren had {baseline_fds} fds before the attack, {:?} now",
                fd_count(pid)
            )
        })?;
        let growth = rss(pid)?.saturating_sub(baseline_rss);
        eprintln!(
            "hostile attack: RSS {} before, +{} after {} refused opens",
            mib(baseline_rss),
            mib(growth),
            5 * n
        );
        ensure!(
            growth < MIB,
            "warren's RSS grew by {} over {} refused channel opens",
            mib(growth),
            5 * n
        );
        Ok(())
    })
    .await;
}
