//! Nothing leaks over many reconnects and many short connections: connection tasks, accept
//! and supervisor tasks, active counters (in-process), and file descriptors (the binary).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::task::JoinSet;
use warren::session::HostState;

use crate::harness::{
    EchoServer, KeyKind, SshServer, Transport, UserKey, WarrenProcess, wait_for, wait_until,
    with_timeout, within,
};
use crate::support::{TestDaemon, fd_count, forward_table, host_table, ingress, with_setting};

/// Bound for one step that should be quick.
const STEP: Duration = Duration::from_secs(15);
/// Client connections in flight at once.
const CONCURRENCY: usize = 50;

/// A harness sshd that trusts a fresh ed25519 key.
async fn server_and_key() -> anyhow::Result<(SshServer, UserKey)> {
    let server = SshServer::start().await?;
    let key = UserKey::generate(KeyKind::Ed25519, None).await?;
    server.authorize(&key)?;
    Ok((server, key))
}

/// `table` with a reconnect backoff short enough for a hundred reconnects in a few seconds.
fn quick_reconnect(table: &str) -> String {
    let t = with_setting(table, "reconnect_min", "\"10ms\"");
    with_setting(&t, "reconnect_max", "\"50ms\"")
}

/// Sends `byte`, expects it echoed, and closes.
async fn one_byte_echo<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    byte: u8,
) -> anyhow::Result<()> {
    stream.write_all(&[byte]).await?;
    let mut got = [0u8; 1];
    stream.read_exact(&mut got).await?;
    ensure!(got[0] == byte, "sent {byte}, got {} back", got[0]);
    Ok(())
}

/// `total` short connections (connect, one byte echoed, close), `CONCURRENCY` at a time,
/// each made by `connect`.
async fn short_connections<S, F, Fut>(total: usize, connect: F) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = std::io::Result<S>> + Send,
{
    let mut workers = JoinSet::new();
    for w in 0..CONCURRENCY {
        let connect = connect.clone();
        workers.spawn(async move {
            let mut i = w;
            while i < total {
                let stream = connect()
                    .await
                    .with_context(|| format!("connection {i}: connect"))?;
                within(
                    STEP,
                    &format!("connection {i}'s echo"),
                    one_byte_echo(stream, (i % 251) as u8),
                )
                .await?
                .with_context(|| format!("connection {i}"))?;
                i += CONCURRENCY;
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.context("a client worker panicked")??;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_reconnects_leave_no_task_behind() {
    const CYCLES: u64 = 100;
    with_timeout(Duration::from_secs(90), async {
        let (server, key) = server_and_key().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let (listener, addr) = ingress();
        let toml = quick_reconnect(&host_table("h", &server, &key))
            + &forward_table(
                "f",
                "h",
                "local",
                &addr.to_string(),
                Some(&echo.addr().to_string()),
            );
        let d = TestDaemon::start(&toml, vec![listener]).await?;
        d.wait_up("h", STEP).await?;
        let baseline = d.daemon().task_counts();
        assert_eq!(baseline.1, 0, "no connection yet");

        let started = Instant::now();
        for cycle in 1..=CYCLES {
            // A connection open when the session dies: its task must end with the session.
            let mut held = TcpStream::connect(addr).await?;
            within(STEP, "the held connection's echo", async {
                held.write_all(b"x").await?;
                let mut b = [0u8; 1];
                held.read_exact(&mut b).await?;
                anyhow::Ok(())
            })
            .await?
            .with_context(|| format!("cycle {cycle}: the held connection"))?;
            server.kill_sessions().await?;
            let mut rest = Vec::new();
            match within(
                STEP,
                "the held connection to close",
                held.read_to_end(&mut rest),
            )
            .await?
            {
                Ok(_) if rest.is_empty() => {}
                Err(_) => {}
                Ok(_) => bail!("cycle {cycle}: bytes after the session died: {rest:?}"),
            }
            d.wait_host("h", STEP, |s| {
                s.state == HostState::Up && s.reconnects == cycle
            })
            .await
            .with_context(|| format!("cycle {cycle}"))?;
        }
        let took = started.elapsed();

        let c = d.forward("f").counters.clone();
        wait_until(STEP, "every connection task to end", || {
            d.daemon().task_counts().1 == 0 && c.active.load(Ordering::SeqCst) == 0
        })
        .await
        .with_context(|| format!("tasks now {:?}", d.daemon().task_counts()))?;
        assert_eq!(
            d.daemon().task_counts(),
            baseline,
            "tasks after {CYCLES} reconnects"
        );
        assert_eq!(c.total.load(Ordering::SeqCst), CYCLES);
        assert_eq!(d.host_status("h").reconnects, CYCLES);
        let sessions = server.session_counts();
        assert_eq!(sessions.accepted as u64, CYCLES + 1, "{sessions:?}");
        assert_eq!(sessions.alive, 1, "{sessions:?}");
        eprintln!("{CYCLES} reconnect cycles took {took:?}");
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_short_connections_leave_no_task_behind() {
    const CONNECTIONS: usize = 10_000;
    with_timeout(Duration::from_secs(120), async {
        let (server, key) = server_and_key().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let (listener, addr) = ingress();
        let toml = host_table("h", &server, &key)
            + &forward_table(
                "f",
                "h",
                "local",
                &addr.to_string(),
                Some(&echo.addr().to_string()),
            );
        let d = TestDaemon::start(&toml, vec![listener]).await?;
        d.wait_up("h", STEP).await?;
        let baseline = d.daemon().task_counts();

        let started = Instant::now();
        short_connections(CONNECTIONS, move || TcpStream::connect(addr)).await?;
        let took = started.elapsed();

        let c = d.forward("f").counters.clone();
        wait_until(STEP, "every connection task to end", || {
            d.daemon().task_counts().1 == 0 && c.active.load(Ordering::SeqCst) == 0
        })
        .await
        .with_context(|| format!("tasks now {:?}, {c:?}", d.daemon().task_counts()))?;
        assert_eq!(d.daemon().task_counts(), baseline);
        assert_eq!(c.total.load(Ordering::SeqCst), CONNECTIONS as u64);
        assert_eq!(c.bytes_in.load(Ordering::SeqCst), CONNECTIONS as u64);
        assert_eq!(c.bytes_out.load(Ordering::SeqCst), CONNECTIONS as u64);
        assert_eq!(echo.connections(), CONNECTIONS);
        let host = d.host_status("h");
        assert_eq!((host.state, host.reconnects), (HostState::Up, 0));
        assert_eq!(server.sessions_accepted(), 1, "all on one session");
        eprintln!("{CONNECTIONS} short connections took {took:?}");
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

/// One byte echoed through the Unix ingress at `path`, retried until it works (the session
/// may be coming up, or be a dead one warren has not noticed yet) or `limit` passes.
async fn echo_through(path: &Path, limit: Duration, what: &str) -> anyhow::Result<()> {
    wait_for(limit, what, || async {
        let stream = UnixStream::connect(path).await.ok()?;
        within(Duration::from_secs(5), "an echo", one_byte_echo(stream, 42))
            .await
            .ok()?
            .ok()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warren_binary_keeps_its_file_descriptors() {
    const CYCLES: usize = 30;
    const CONNECTIONS: usize = 2_000;
    /// Descriptors that may come and go on their own (e.g. a resolver or a log file).
    const SLACK: usize = 5;
    with_timeout(Duration::from_secs(120), async {
        let (server, key) = server_and_key().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let dir = tempfile::tempdir()?;
        let ingress_path: PathBuf = dir.path().join("in.sock");
        let toml = format!(
            "[daemon]\ncontrol_socket = \"{}\"\n\n",
            dir.path().join("control.sock").display()
        ) + &quick_reconnect(&host_table("h", &server, &key))
            + &forward_table(
                "f",
                "h",
                "local",
                &ingress_path.display().to_string(),
                Some(&echo.addr().to_string()),
            );
        let config = dir.path().join("warren.toml");
        std::fs::write(&config, &toml)?;
        let home = dir.path().join("home");
        std::fs::create_dir(&home)?;
        let warren = WarrenProcess::spawn(
            &["run", "-c", &config.display().to_string()],
            &[("HOME", &home.display().to_string())],
        )?;
        let pid = warren.pid();
        wait_until(STEP, "warren to bind its Unix ingress", || {
            ingress_path.exists()
        })
        .await
        .with_context(|| format!("warren stderr:\n{}", warren.stderr_text()))?;
        echo_through(&ingress_path, STEP, "the first session")
            .await
            .with_context(|| format!("warren stderr:\n{}", warren.stderr_text()))?;
        let before = fd_count(pid)?;

        for cycle in 1..=CYCLES {
            server.kill_sessions().await?;
            server
                .wait_sessions(STEP, "warren to reconnect", |c| {
                    c.accepted > cycle && c.alive == 1
                })
                .await
                .with_context(|| format!("cycle {cycle}; stderr:\n{}", warren.stderr_text()))?;
            echo_through(&ingress_path, STEP, "an echo on the new session")
                .await
                .with_context(|| format!("cycle {cycle}"))?;
        }
        let path = ingress_path.clone();
        short_connections(CONNECTIONS, move || UnixStream::connect(path.clone())).await?;

        let limit = before + SLACK;
        let settled = wait_until(STEP, "warren's descriptors to settle", || {
            fd_count(pid).is_ok_and(|n| n <= limit)
        })
        .await;
        let after = fd_count(pid)?;
        settled.with_context(|| {
            format!("{before} descriptors before, {after} after {CYCLES} reconnects and {CONNECTIONS} connections")
        })?;
        eprintln!("warren's descriptors: {before} before, {after} after");
        Ok(())
    })
    .await;
}
