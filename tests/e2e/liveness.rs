//! Liveness, reconnect and failure isolation against the real sshd: a killed session, a
//! black hole between warren and sshd, a frozen sshd (and a connection made during the
//! freeze), a remote port still held by the dead session, auth and host-key failures retried
//! slowly and logged once, and `reconnect_now`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren::config::Endpoint;
use warren::forward::ForwardState;
use warren::session::{FailureClass, HostState, HostStatus};

use crate::harness::{
    EchoServer, FaultMode, FaultProxy, KeyKind, MIB, SshServer, Transport, UserKey, WarrenProcess,
    push_through, wait_until, with_timeout, within,
};
use crate::support::{
    TestDaemon, forward_table, host_table, host_table_with, ingress, stop_sessions, with_setting,
};

const LIMIT: Duration = Duration::from_secs(60);
/// Bound for one step that should be quick (a session coming up, a small transfer).
const STEP: Duration = Duration::from_secs(15);
/// `keepalive_interval` of these tests.
const KEEPALIVE: Duration = Duration::from_millis(500);
/// `keepalive_count_max` of these tests.
const COUNT_MAX: u32 = 2;
/// Slack on top of the dead-session bound, for a loaded machine.
const MARGIN: Duration = Duration::from_secs(3);

/// How long a silent session may take to be declared dead: the interval for every
/// unanswered keepalive plus the one that found the last of them unanswered.
fn dead_after() -> Duration {
    KEEPALIVE * (COUNT_MAX + 1)
}

/// `table` with the short timers of these tests: keepalive 500 ms × 2, reconnect 100 ms–1 s.
fn fast_timers(table: &str) -> String {
    let t = with_setting(table, "keepalive_interval", "\"500ms\"");
    let t = with_setting(&t, "keepalive_count_max", &COUNT_MAX.to_string());
    let t = with_setting(&t, "reconnect_min", "\"100ms\"");
    with_setting(&t, "reconnect_max", "\"1s\"")
}

/// A harness sshd that trusts a fresh ed25519 key.
async fn server_and_key() -> anyhow::Result<(SshServer, UserKey)> {
    let server = SshServer::start().await?;
    let key = UserKey::generate(KeyKind::Ed25519, None).await?;
    server.authorize(&key)?;
    Ok((server, key))
}

/// The user key and the echo server of [`echoing`]: alive as long as this value.
struct Keep {
    _key: UserKey,
    _echo: EchoServer,
}

/// Where most tests here start: a harness sshd, an echo server, and a daemon with the fast
/// timers whose local forward `f` goes from the returned address to the echo server, its
/// session up.
async fn echoing() -> anyhow::Result<(SshServer, std::net::SocketAddr, TestDaemon, Keep)> {
    let (server, key) = server_and_key().await?;
    let echo = EchoServer::start(Transport::Tcp).await?;
    let (listener, addr) = ingress();
    let toml = fast_timers(&host_table("h", &server, &key))
        + &local("f", &addr.to_string(), &echo.addr().to_string());
    let d = TestDaemon::start(&toml, vec![listener]).await?;
    d.wait_up("h", STEP).await?;
    let keep = Keep {
        _key: key,
        _echo: echo,
    };
    Ok((server, addr, d, keep))
}

/// A `[[forward]]` of type local for host `h`.
fn local(name: &str, listen: &str, connect: &str) -> String {
    forward_table(name, "h", "local", listen, Some(connect))
}

/// One MiB each way through a fresh connection to `addr`, compared by digest.
async fn carries_a_mib(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    push_through(stream, MIB).await?.check_echoed()
}

/// Fails unless `stream` reads as closed (EOF or an error) within `limit`.
async fn expect_closed(stream: &mut TcpStream, limit: Duration, what: &str) -> anyhow::Result<()> {
    let mut buf = [0u8; 64];
    match within(limit, what, stream.read(&mut buf)).await? {
        Ok(0) | Err(_) => Ok(()),
        Ok(n) => bail!("{what}: got {n} more bytes: {:?}", &buf[..n]),
    }
}

/// `Some(retry_at)` of a `Failed` state.
fn failed_retry_at(s: &HostStatus) -> Option<SystemTime> {
    match s.state {
        HostState::Failed { retry_at } => Some(retry_at),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_session_closes_its_connections_and_reconnects() {
    with_timeout(LIMIT, async {
        let (server, addr, d, _keep) = echoing().await?;
        let before = d.host_status("h");
        assert_eq!(before.reconnects, 0);

        // A connection that is open (and proven to work) when the session dies.
        let mut held = TcpStream::connect(addr).await?;
        held.write_all(b"ping").await?;
        let mut got = [0u8; 4];
        within(
            STEP,
            "the held connection's echo",
            held.read_exact(&mut got),
        )
        .await??;
        assert_eq!(&got, b"ping");

        assert_eq!(server.kill_sessions().await?, 1, "one session to kill");
        let killed = Instant::now();
        // Closed with its session, not left half-open.
        expect_closed(
            &mut held,
            Duration::from_secs(3),
            "the held connection to close after its session was killed",
        )
        .await?;
        let closed_after = killed.elapsed();

        let after = d
            .wait_host("h", STEP, |s| s.state == HostState::Up && s.reconnects >= 1)
            .await?;
        assert_eq!(after.reconnects, 1, "one session lost: {after:?}");
        ensure!(
            after.since > before.since,
            "the host left Up and came back, so `since` moved: {before:?} -> {after:?}"
        );
        assert_eq!(after.last_error, None, "an up host shows no error");
        assert_eq!(server.sessions_accepted(), 2, "one new session");

        // New connections work on the new session.
        carries_a_mib(addr).await?;
        let c = d.forward("f").counters.clone();
        wait_until(STEP, "no connection to stay active", || {
            c.active.load(std::sync::atomic::Ordering::SeqCst) == 0
        })
        .await?;
        assert_eq!(d.host_status("h").reconnects, 1);
        eprintln!("held connection closed {closed_after:?} after the kill");
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_hole_between_warren_and_sshd_is_detected_and_recovers() {
    with_timeout(LIMIT, async {
        let (server, key) = server_and_key().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let proxy = FaultProxy::start(server.addr()).await?;
        // warren talks to the proxy and checks the server's own host keys under its address.
        let dir = tempfile::tempdir()?;
        let kh = dir.path().join("known_hosts");
        std::fs::write(
            &kh,
            server.known_hosts_for_pattern(&format!("[127.0.0.1]:{}", proxy.port())),
        )?;
        let table = fast_timers(&host_table_with("h", &server, &key, &kh, ""));
        let table = with_setting(&table, "port", &proxy.port().to_string());
        let (listener, addr) = ingress();
        let toml = table + &local("f", &addr.to_string(), &echo.addr().to_string());
        let d = TestDaemon::start(&toml, vec![listener]).await?;
        d.wait_up("h", STEP).await?;
        carries_a_mib(addr).await?;
        assert_eq!(proxy.accepted(), 1);

        // Nothing gets through any more, and nothing is closed either.
        proxy.set_mode(FaultMode::BlackHole);
        let holed = Instant::now();
        let bound = dead_after() + MARGIN;
        let down = d
            .wait_host("h", bound, |s| s.state != HostState::Up)
            .await
            .context("the dead session must be noticed by keepalive")?;
        let detected = holed.elapsed();
        assert_eq!(down.reconnects, 1, "{down:?}");
        let err = down
            .last_error
            .clone()
            .context("a lost session has an error")?;
        assert_eq!(err.class, FailureClass::Network, "{err:?}");
        // The next attempt is held by the black hole too: still not up.
        assert_ne!(d.host_status("h").state, HostState::Up);

        proxy.set_mode(FaultMode::Pass);
        let up = d.wait_host("h", STEP, |s| s.state == HostState::Up).await?;
        assert_eq!(up.reconnects, 1, "{up:?}");
        carries_a_mib(addr).await?;
        eprintln!("black hole detected after {detected:?} (bound {bound:?})");
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_sshd_is_detected_and_recovers_when_thawed() {
    with_timeout(LIMIT, async {
        let (server, addr, d, _keep) = echoing().await?;
        carries_a_mib(addr).await?;

        // The server stops answering (and parks new connections) without closing anything.
        assert_eq!(server.freeze_sessions()?, 1);
        let frozen = Instant::now();
        let bound = dead_after() + MARGIN;
        let down = d
            .wait_host("h", bound, |s| s.state != HostState::Up)
            .await
            .context("the frozen server must be noticed by keepalive")?;
        let detected = frozen.elapsed();
        assert_eq!(down.reconnects, 1, "{down:?}");

        // Thawed: the parked attempt is served, and the old sshd finds its connection closed
        // by warren (not left open on warren's side) and exits.
        server.thaw_sessions()?;
        let up = d.wait_host("h", STEP, |s| s.state == HostState::Up).await?;
        assert_eq!(up.reconnects, 1, "{up:?}");
        carries_a_mib(addr).await?;
        server
            .wait_sessions(STEP, "the old session to end", |c| c.alive == 1)
            .await?;
        eprintln!("frozen server detected after {detected:?} (bound {bound:?})");
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

/// A connection accepted while the session is frozen has its channel open pending on the
/// dead session; its bytes wait unread in its socket, so the open moves to the next session
/// and the connection works, instead of being closed when the freeze is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_made_during_a_freeze_is_carried_by_the_next_session() {
    with_timeout(LIMIT, async {
        let (server, addr, d, _keep) = echoing().await?;

        assert_eq!(server.freeze_sessions()?, 1);
        let stream = TcpStream::connect(addr).await?;
        let transfer = tokio::spawn(push_through(stream, MIB));
        let counters = d.forward("f").counters.clone();
        wait_until(STEP, "the connection to be accepted", || {
            counters.active.load(Ordering::SeqCst) == 1
        })
        .await?;
        d.wait_host("h", dead_after() + MARGIN, |s| s.state != HostState::Up)
            .await
            .context("the frozen server must be noticed by keepalive")?;
        ensure!(
            counters.active.load(Ordering::SeqCst) == 1,
            "the connection waiting for its channel was closed with the dead session"
        );
        assert_eq!(server.kill_sessions().await?, 1);
        server.thaw_sessions()?;
        d.wait_host("h", STEP, |s| s.state == HostState::Up).await?;
        within(STEP, "the waiting connection's transfer", transfer)
            .await?
            .context("the transfer task")??
            .check_echoed()?;
        ensure!(counters.total.load(Ordering::SeqCst) == 1, "one connection");
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_sshd_killed_while_down_recovers() {
    with_timeout(LIMIT, async {
        let (server, addr, d, _keep) = echoing().await?;

        assert_eq!(server.freeze_sessions()?, 1);
        d.wait_host("h", dead_after() + MARGIN, |s| s.state != HostState::Up)
            .await
            .context("the frozen server must be noticed by keepalive")?;
        // The frozen session is killed, then the server serves again.
        assert_eq!(server.kill_sessions().await?, 1);
        server.thaw_sessions()?;
        d.wait_host("h", STEP, |s| s.state == HostState::Up).await?;
        carries_a_mib(addr).await?;
        assert_eq!(d.host_status("h").reconnects, 1);
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

/// A port that was free a moment ago, for a *server-side* remote listener (the SSH server
/// must bind it itself). Another process could take it in between; accepted for this case.
fn recently_free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_port_held_by_the_frozen_old_session_fails_that_forward_alone_until_released() {
    with_timeout(LIMIT, async {
        let (server, key) = server_and_key().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let fixed = recently_free_port();
        let (listener, local_addr) = ingress();
        let toml = fast_timers(&host_table("h", &server, &key))
            + &forward_table(
                "rev",
                "h",
                "remote",
                &format!("127.0.0.1:{fixed}"),
                Some(&echo.addr().to_string()),
            )
            + &local("loc", &local_addr.to_string(), &echo.addr().to_string());
        let d = TestDaemon::start(&toml, vec![listener]).await?;
        let rev = d.forward("rev");
        wait_until(STEP, "the remote forward to be ready", || {
            rev.status().state == ForwardState::Ready
        })
        .await
        .with_context(|| format!("rev now {:?}", rev.status()))?;
        carries_a_mib(([127, 0, 0, 1], fixed).into()).await?;

        // The old session freezes with its listener on `fixed` still bound; new connections
        // get a fresh sshd.
        let stopped = stop_sessions(&server).await?;
        // (It may be up again before this looks: the lost session is counted in any case.)
        d.wait_host("h", dead_after() + MARGIN, |s| s.reconnects >= 1)
            .await
            .context("the frozen session must be noticed by keepalive")?;
        d.wait_host("h", STEP, |s| s.state == HostState::Up)
            .await
            .context("warren reconnects on a fresh sshd")?;
        assert_eq!(server.sessions_accepted(), 2);

        // The new session cannot listen on `fixed`: that forward alone fails, with an error.
        wait_until(STEP, "the remote forward to fail", || {
            rev.status().state == ForwardState::Failed
        })
        .await
        .with_context(|| format!("rev now {:?}", rev.status()))?;
        let failed = rev.status();
        let err = failed
            .last_error
            .context("a failed forward has a last_error")?;
        ensure!(
            err.contains(&fixed.to_string()),
            "the error names the listen address: {err:?}"
        );
        // The host is up, and its local forward works meanwhile.
        assert_eq!(d.host_status("h").state, HostState::Up);
        carries_a_mib(local_addr).await?;

        // The old session dies for real and releases the port: the forward is retried on
        // the same new session and becomes ready.
        stopped.kill(&server).await?;
        wait_until(STEP, "the remote forward to be ready again", || {
            rev.status().state == ForwardState::Ready
        })
        .await
        .with_context(|| format!("rev now {:?}", rev.status()))?;
        let st = rev.status();
        assert_eq!(st.last_error, None, "error cleared: {st:?}");
        assert_eq!(
            st.remote_listen,
            Some(Endpoint::Tcp {
                host: "127.0.0.1".into(),
                port: fixed
            })
        );
        carries_a_mib(([127, 0, 0, 1], fixed).into()).await?;
        assert_eq!(
            server.sessions_accepted(),
            2,
            "no reconnect for the forward"
        );
        let host = d.host_status("h");
        assert_eq!((host.state, host.reconnects), (HostState::Up, 1));
        carries_a_mib(local_addr).await?;
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

/// Runs host `h` from `table` (which cannot get in) with reconnect 100 ms–1 s: checks the
/// state is `Failed` with `class`, and that attempts come about once per `reconnect_max`.
async fn needs_human_failure_retries_at_reconnect_max(
    server: &SshServer,
    table: &str,
    class: FailureClass,
) -> anyhow::Result<()> {
    let (listener, addr) = ingress();
    let toml = fast_timers(table) + &local("f", &addr.to_string(), "127.0.0.1:9");
    let d = TestDaemon::start(&toml, vec![listener]).await?;
    let first = d
        .wait_host("h", STEP, |s| failed_retry_at(s).is_some())
        .await?;
    let seen = SystemTime::now();
    let err = first
        .last_error
        .clone()
        .context("a failed host has an error")?;
    assert_eq!(err.class, class, "{err:?}");
    let retry_at = failed_retry_at(&first).context("failed")?;
    ensure!(
        retry_at <= seen + Duration::from_millis(1100),
        "the next attempt is at most reconnect_max (1s) away: {first:?}"
    );
    let accepted_then = server.sessions_accepted();

    // Not at reconnect_min (100 ms, which would be ~20 attempts here), but at ~1 s.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let attempts = server.sessions_accepted() - accepted_then;
    ensure!(
        (2..=6).contains(&attempts),
        "{attempts} attempts in 3.5 s; expected about one per second"
    );
    let st = d
        .wait_host("h", STEP, |s| failed_retry_at(s).is_some())
        .await?;
    let err = st.last_error.context("still an error")?;
    assert_eq!(err.class, class, "{err:?}");
    assert_eq!(st.reconnects, 0, "no session was ever up");
    d.stop(Duration::from_secs(1)).await;
    eprintln!("{class}: {attempts} attempts in 3.5 s");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_key_is_failed_auth_and_retried_at_reconnect_max() {
    with_timeout(LIMIT, async {
        let server = SshServer::start().await?;
        // Never authorized.
        let key = UserKey::generate(KeyKind::Ed25519, None).await?;
        let table = host_table("h", &server, &key);
        needs_human_failure_retries_at_reconnect_max(&server, &table, FailureClass::Auth).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_host_key_is_failed_host_key_and_retried_at_reconnect_max() {
    with_timeout(LIMIT, async {
        let (server, key) = server_and_key().await?;
        let dir = tempfile::tempdir()?;
        let kh = dir.path().join("known_hosts");
        // Another key for this server's name: a changed host key.
        let other = UserKey::generate(KeyKind::Ed25519, None).await?;
        let other_key: Vec<&str> = other.public_key().split_whitespace().take(2).collect();
        std::fs::write(
            &kh,
            format!(
                "{} {}\n",
                server.host_pattern("127.0.0.1"),
                other_key.join(" ")
            ),
        )?;
        let table = host_table_with("h", &server, &key, &kh, "");
        needs_human_failure_retries_at_reconnect_max(&server, &table, FailureClass::HostKey).await
    })
    .await;
}

/// Lines of `stderr` at WARN or ERROR level about a failed attempt of host `host`.
fn connect_failed_lines(stderr: &[String], host: &str) -> Vec<String> {
    let host_field = format!("host={host}");
    stderr
        .iter()
        .filter(|l| {
            l.contains("connect failed")
                && l.contains(&host_field)
                && (l.contains("WARN") || l.contains("ERROR"))
        })
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warren_binary_logs_a_repeated_auth_or_host_key_failure_once() {
    with_timeout(LIMIT, async {
        // Host "nokey": a key the server does not trust. Host "badkey": a wrong known_hosts.
        let auth_server = SshServer::start().await?;
        let untrusted = UserKey::generate(KeyKind::Ed25519, None).await?;
        let (key_server, key) = server_and_key().await?;
        let dir = tempfile::tempdir()?;
        let kh = dir.path().join("known_hosts");
        let other = UserKey::generate(KeyKind::Ed25519, None).await?;
        let other_key: Vec<&str> = other.public_key().split_whitespace().take(2).collect();
        std::fs::write(
            &kh,
            format!(
                "{} {}\n",
                key_server.host_pattern("127.0.0.1"),
                other_key.join(" ")
            ),
        )?;
        let toml = format!(
            "[daemon]\ncontrol_socket = \"{}\"\n\n",
            dir.path().join("control.sock").display()
        ) + &fast_timers(&host_table("nokey", &auth_server, &untrusted))
            + &fast_timers(&host_table_with("badkey", &key_server, &key, &kh, ""))
            + &forward_table(
                "a",
                "nokey",
                "local",
                &dir.path().join("a.sock").display().to_string(),
                Some("127.0.0.1:9"),
            )
            + &forward_table(
                "b",
                "badkey",
                "local",
                &dir.path().join("b.sock").display().to_string(),
                Some("127.0.0.1:9"),
            );
        let config = dir.path().join("warren.toml");
        std::fs::write(&config, &toml)?;
        let home = dir.path().join("home");
        std::fs::create_dir(&home)?;
        let mut warren = WarrenProcess::spawn(
            &["run", "-c", &config.display().to_string()],
            &[("HOME", &home.display().to_string())],
        )?;

        // Several attempts each (one a second). Once the fifth has started, the first four
        // have ended and been logged, or not.
        for (server, name) in [(&auth_server, "nokey"), (&key_server, "badkey")] {
            server
                .wait_sessions(STEP, &format!("5 attempts of {name}"), |c| c.accepted >= 5)
                .await
                .with_context(|| format!("warren stderr:\n{}", warren.stderr_text()))?;
        }
        let lines = warren.stderr_lines();
        for (name, class) in [("nokey", "auth"), ("badkey", "host-key")] {
            let logged = connect_failed_lines(&lines, name);
            ensure!(
                logged.len() == 1,
                "host {name}: expected one WARN/ERROR line for repeated failures, got {}:\n{}",
                logged.len(),
                lines.join("\n")
            );
            ensure!(
                logged[0].contains(class),
                "host {name}: the line names the class {class}: {}",
                logged[0]
            );
        }
        ensure!(warren.is_running(), "warren keeps running");
        warren.sigterm()?;
        let code = warren.wait_exit(STEP).await?;
        assert_eq!(code, 0, "stderr:\n{}", warren.stderr_text());
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_now_skips_the_backoff_wait() {
    with_timeout(LIMIT, async {
        let (server, key) = server_and_key().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        // Refused at first: the host goes into a long backoff (10–20 s).
        server.stop_accepting();
        let (listener, addr) = ingress();
        let table = with_setting(&host_table("h", &server, &key), "reconnect_min", "\"20s\"");
        let table = with_setting(&table, "reconnect_max", "\"30s\"");
        let toml = table + &local("f", &addr.to_string(), &echo.addr().to_string());
        let d = TestDaemon::start(&toml, vec![listener]).await?;
        let st = d
            .wait_host("h", STEP, |s| matches!(s.state, HostState::Backoff { .. }))
            .await?;
        let HostState::Backoff { retry_at } = st.state else {
            unreachable!()
        };
        let err = st.last_error.context("a refused attempt has an error")?;
        assert_eq!(err.class, FailureClass::Network, "{err:?}");
        ensure!(
            retry_at > SystemTime::now() + Duration::from_secs(8),
            "the backoff is long: retry at {retry_at:?}"
        );

        server.resume_accepting()?;
        assert_eq!(server.sessions_accepted(), 0);
        let asked = Instant::now();
        d.daemon().host("h").context("host h")?.reconnect_now();
        d.wait_up("h", Duration::from_secs(5))
            .await
            .context("reconnect_now must not wait for the backoff")?;
        ensure!(SystemTime::now() < retry_at, "up before the backoff ended");
        let took = asked.elapsed();
        carries_a_mib(addr).await?;
        assert_eq!(server.sessions_accepted(), 1);
        assert_eq!(d.host_status("h").reconnects, 0);
        eprintln!("up {took:?} after reconnect_now");
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_now_replaces_a_live_session_at_once() {
    with_timeout(LIMIT, async {
        let (server, key) = server_and_key().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let (listener, addr) = ingress();
        // A long backoff, which an asked-for reconnect must not wait for.
        let table = with_setting(&host_table("h", &server, &key), "reconnect_min", "\"20s\"");
        let table = with_setting(&table, "reconnect_max", "\"30s\"");
        let toml = table + &local("f", &addr.to_string(), &echo.addr().to_string());
        let d = TestDaemon::start(&toml, vec![listener]).await?;
        d.wait_up("h", STEP).await?;
        carries_a_mib(addr).await?;

        let asked = Instant::now();
        d.daemon().host("h").context("host h")?.reconnect_now();
        let st = d
            .wait_host("h", Duration::from_secs(5), |s| {
                s.state == HostState::Up && s.reconnects == 1
            })
            .await
            .context("the replaced session must come back at once, not after the backoff")?;
        assert_eq!(st.last_error, None);
        assert_eq!(server.sessions_accepted(), 2, "a new session");
        // The old session was disconnected, not left open on the server.
        server
            .wait_sessions(STEP, "the replaced session to end", |c| c.alive == 1)
            .await?;
        carries_a_mib(addr).await?;
        eprintln!("replaced {:?} after reconnect_now", asked.elapsed());
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_session_is_replaced_at_once_but_a_flapping_one_backs_off() {
    with_timeout(LIMIT, async {
        let (server, key) = server_and_key().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let (listener, addr) = ingress();
        // A backoff far longer than the test: only the immediate retry can bring h back.
        let table = with_setting(&host_table("h", &server, &key), "reconnect_min", "\"20s\"");
        let table = with_setting(&table, "reconnect_max", "\"30s\"");
        let toml = table + &local("f", &addr.to_string(), &echo.addr().to_string());
        let d = TestDaemon::start(&toml, vec![listener]).await?;
        d.wait_up("h", STEP).await?;

        // Lost once: a new session at once, no backoff wait.
        let lost = Instant::now();
        server.kill_sessions().await?;
        d.wait_host("h", STEP, |s| s.reconnects == 1 && s.state == HostState::Up)
            .await
            .context("the first reconnect after a lost session must not wait 10-20 s")?;
        eprintln!("up again {:?} after the session was killed", lost.elapsed());
        carries_a_mib(addr).await?;
        assert_eq!(server.sessions_accepted(), 2);

        // Lost again within a minute: that is a flapping host, and it backs off.
        server.kill_sessions().await?;
        let st = d
            .wait_host("h", STEP, |s| {
                s.reconnects == 2 && matches!(s.state, HostState::Backoff { .. })
            })
            .await?;
        let HostState::Backoff { retry_at } = st.state else {
            unreachable!()
        };
        ensure!(
            retry_at > SystemTime::now() + Duration::from_secs(8),
            "the second loss waits the backoff: retry at {retry_at:?}"
        );
        assert_eq!(
            server.sessions_accepted(),
            2,
            "no attempt during the backoff"
        );
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}
