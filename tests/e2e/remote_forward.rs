//! Remote forwards (-R) against the real sshd: the server-side listener (port 0 and a fixed
//! port), TCP and Unix-socket egresses, a refused egress, counters, and a listen address that
//! is taken on the server (that forward alone fails and is retried; the session stays up).

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren::config::Endpoint;
use warren::forward::{ForwardState, ForwardStatus};

use crate::harness::{
    EchoServer, KeyKind, MIB, SinkServer, SshServer, Transport, UserKey, push_through, wait_until,
    with_timeout, within,
};
use crate::support::{TestDaemon, forward_table, host_table, ingress};

const LIMIT: Duration = Duration::from_secs(60);
/// How long a remote forward may take to be listening on the server.
const READY: Duration = Duration::from_secs(20);

/// A harness sshd that trusts a fresh ed25519 key.
async fn server_and_key() -> anyhow::Result<(SshServer, UserKey)> {
    let server = SshServer::start().await?;
    let key = UserKey::generate(KeyKind::Ed25519, None).await?;
    server.authorize(&key)?;
    Ok((server, key))
}

/// Waits until forward `name`'s own status satisfies `pred`; the error quotes the status.
async fn wait_forward(
    d: &TestDaemon,
    name: &str,
    limit: Duration,
    what: &str,
    pred: impl Fn(&ForwardStatus) -> bool,
) -> anyhow::Result<ForwardStatus> {
    let f = d.forward(name);
    wait_until(limit, &format!("forward {name} {what}"), || {
        pred(&f.status())
    })
    .await
    .with_context(|| format!("status of {name} now: {:?}", f.status()))?;
    Ok(f.status())
}

/// Waits until remote forward `name` is ready; returns the port the server listens on.
async fn remote_port(d: &TestDaemon, name: &str) -> anyhow::Result<u16> {
    let st = wait_forward(d, name, READY, "to be ready", |s| {
        s.state == ForwardState::Ready && s.remote_listen.is_some()
    })
    .await?;
    match st.remote_listen {
        Some(Endpoint::Tcp { host, port }) => {
            ensure!(
                port != 0,
                "remote forward {name} reports port 0 as bound on {host}"
            );
            Ok(port)
        }
        other => bail!("remote forward {name} listens on {other:?}, not on a TCP port"),
    }
}

/// A port that was free a moment ago. Only for a *server-side* remote listener: the SSH
/// server must bind it itself, so the test cannot hand it a bound socket. Another process
/// could take it in between; that window is accepted for this one case.
fn recently_free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

fn load(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_each_way_through_a_remote_forward_on_port_0() {
    with_timeout(LIMIT, async {
        let (server, key) = server_and_key().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let toml = host_table("h", &server, &key)
            + &forward_table(
                "rev",
                "h",
                "remote",
                "127.0.0.1:0",
                Some(&echo.addr().to_string()),
            );
        let d = TestDaemon::start(&toml, vec![]).await?;
        let port = remote_port(&d, "rev").await?;
        // The listener belongs to sshd: the client reaches warren's egress through it.
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connect to the allocated port {port}"))?;
        let t = push_through(stream, 64 * MIB).await?;
        t.check_echoed()?;
        assert_eq!(echo.connections(), 1, "one egress connection");
        let c = &d.forward("rev").counters;
        assert_eq!(load(&c.bytes_in), 64 * MIB, "bytes from the remote client");
        assert_eq!(
            load(&c.bytes_out),
            64 * MIB,
            "bytes back to the remote client"
        );
        assert_eq!(load(&c.total), 1);
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_each_way_through_a_remote_forward_on_a_fixed_port() {
    with_timeout(LIMIT, async {
        let (server, key) = server_and_key().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let fixed = recently_free_port();
        let toml = host_table("h", &server, &key)
            + &forward_table(
                "rev",
                "h",
                "remote",
                &format!("127.0.0.1:{fixed}"),
                Some(&echo.addr().to_string()),
            );
        let d = TestDaemon::start(&toml, vec![]).await?;
        let port = remote_port(&d, "rev").await?;
        assert_eq!(port, fixed, "status shows the configured port");
        let stream = TcpStream::connect(("127.0.0.1", fixed)).await?;
        let t = push_through(stream, 64 * MIB).await?;
        t.check_echoed()?;
        let c = &d.forward("rev").counters;
        assert_eq!(load(&c.bytes_in), 64 * MIB);
        assert_eq!(load(&c.bytes_out), 64 * MIB);
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_forward_to_a_unix_socket_egress() {
    with_timeout(LIMIT, async {
        let (server, key) = server_and_key().await?;
        let echo = EchoServer::start(Transport::Unix).await?;
        let path = echo.addr().path().context("unix echo path")?.to_owned();
        let toml = host_table("h", &server, &key)
            + &forward_table(
                "rev-unix",
                "h",
                "remote",
                "127.0.0.1:0",
                Some(&path.display().to_string()),
            );
        let d = TestDaemon::start(&toml, vec![]).await?;
        let port = remote_port(&d, "rev-unix").await?;
        // Two connections in parallel, to see that each gets its own egress connection.
        let a = push_through(TcpStream::connect(("127.0.0.1", port)).await?, 16 * MIB);
        let b = push_through(TcpStream::connect(("127.0.0.1", port)).await?, 16 * MIB);
        let (a, b) = tokio::try_join!(a, b)?;
        a.check_echoed()?;
        b.check_echoed()?;
        assert_eq!(echo.connections(), 2, "one Unix egress connection each");
        let c = &d.forward("rev-unix").counters;
        assert_eq!(load(&c.bytes_in), 32 * MIB);
        assert_eq!(load(&c.bytes_out), 32 * MIB);
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_egress_promptly_closes_the_remote_client() {
    with_timeout(LIMIT, async {
        let (server, key) = server_and_key().await?;
        // An egress port with nothing listening: bound, then released.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?
        };
        let echo = EchoServer::start(Transport::Tcp).await?;
        let toml = host_table("h", &server, &key)
            + &forward_table(
                "dead",
                "h",
                "remote",
                "127.0.0.1:0",
                Some(&dead.to_string()),
            )
            + &forward_table(
                "live",
                "h",
                "remote",
                "127.0.0.1:0",
                Some(&echo.addr().to_string()),
            );
        let d = TestDaemon::start(&toml, vec![]).await?;
        let dead_port = remote_port(&d, "dead").await?;
        let live_port = remote_port(&d, "live").await?;
        for i in 0..5 {
            let mut s = TcpStream::connect(("127.0.0.1", dead_port)).await?;
            // Whatever the client sends first must not keep it waiting either.
            let _ = s.write_all(b"hello?").await;
            let mut buf = [0u8; 64];
            let read = within(
                Duration::from_secs(3),
                &format!("connection {i} to a refused egress to be closed"),
                s.read(&mut buf),
            )
            .await?;
            match read {
                Ok(0) | Err(_) => {}
                Ok(n) => bail!(
                    "connection {i}: got {n} bytes from a refused egress: {:?}",
                    &buf[..n]
                ),
            }
        }
        let c = &d.forward("dead").counters;
        assert_eq!(load(&c.total), 5, "each refused connection was seen");
        wait_until(
            Duration::from_secs(5),
            "no refused connection to stay active",
            || load(&c.active) == 0,
        )
        .await?;
        assert_eq!(load(&c.bytes_in) + load(&c.bytes_out), 0);
        // The session and the other forward are unaffected.
        assert_eq!(d.forward("dead").status().state, ForwardState::Ready);
        assert_eq!(server.sessions_accepted(), 1, "no reconnect");
        let t = push_through(TcpStream::connect(("127.0.0.1", live_port)).await?, 4 * MIB).await?;
        t.check_echoed()?;
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_forward_counters() {
    with_timeout(LIMIT, async {
        let (server, key) = server_and_key().await?;
        // A sink answers a 32-byte digest for whatever it read: the two directions differ.
        let sink = SinkServer::start(Transport::Tcp).await?;
        let toml = host_table("h", &server, &key)
            + &forward_table(
                "rev",
                "h",
                "remote",
                "127.0.0.1:0",
                Some(&sink.addr().to_string()),
            );
        let d = TestDaemon::start(&toml, vec![]).await?;
        let port = remote_port(&d, "rev").await?;
        let c = d.forward("rev").counters.clone();
        assert_eq!((load(&c.total), load(&c.active)), (0, 0));

        // One connection held open shows as active.
        let mut held = TcpStream::connect(("127.0.0.1", port)).await?;
        held.write_all(&[7u8; 1000]).await?;
        wait_until(
            Duration::from_secs(5),
            "the held connection to count",
            || load(&c.active) == 1 && load(&c.bytes_in) == 1000,
        )
        .await
        .with_context(|| format!("counters now {c:?}"))?;

        // Three more, each sending a different amount and reading the sink's digest.
        let sizes = [MIB, 3 * MIB, 5 * MIB + 17];
        for &n in &sizes {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
            let (mut r, mut w) = s.split();
            let send = async {
                crate::harness::write_random(&mut w, n, rand::random()).await?;
                w.shutdown().await
            };
            let mut got = Vec::new();
            let (sent, read) = tokio::join!(send, r.read_to_end(&mut got));
            sent?;
            read?;
            ensure!(
                got.len() == 32,
                "the sink answers 32 bytes, got {}",
                got.len()
            );
            let (len, _) = sink.next_result(Duration::from_secs(10)).await?;
            ensure!(len == n, "the sink read {len} of {n} bytes");
        }
        held.shutdown().await?;
        let mut rest = Vec::new();
        held.read_to_end(&mut rest).await?;
        assert_eq!(rest.len(), 32);

        let sent: u64 = sizes.iter().sum::<u64>() + 1000;
        wait_until(Duration::from_secs(5), "every connection to finish", || {
            load(&c.active) == 0
        })
        .await
        .with_context(|| format!("counters now {c:?}"))?;
        assert_eq!(load(&c.total), 4, "connections");
        assert_eq!(
            load(&c.bytes_in),
            sent,
            "bytes from remote clients to the egress"
        );
        assert_eq!(load(&c.bytes_out), 4 * 32, "bytes from the egress back");
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taken_remote_port_fails_that_forward_alone_and_it_recovers_when_released() {
    with_timeout(LIMIT, async {
        let (server, key) = server_and_key().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        // Another process on the server holds the remote listen address (the test, here).
        let held = std::net::TcpListener::bind("127.0.0.1:0")?;
        let taken = held.local_addr()?.port();
        let (listener, local_addr) = ingress();
        let toml = host_table("h", &server, &key)
            + &forward_table(
                "rev",
                "h",
                "remote",
                &format!("127.0.0.1:{taken}"),
                Some(&echo.addr().to_string()),
            )
            + &forward_table(
                "loc",
                "h",
                "local",
                &local_addr.to_string(),
                Some(&echo.addr().to_string()),
            );
        let d = TestDaemon::start(&toml, vec![listener]).await?;
        d.wait_up("h", Duration::from_secs(15)).await?;
        let failed = wait_forward(&d, "rev", Duration::from_secs(15), "to fail", |s| {
            s.state == ForwardState::Failed
        })
        .await?;
        let err = failed
            .last_error
            .context("a failed forward has a last_error")?;
        ensure!(!err.is_empty(), "empty last_error");

        // The local forward of the same host keeps working meanwhile.
        let t = push_through(TcpStream::connect(local_addr).await?, 8 * MIB).await?;
        t.check_echoed()?;
        assert_eq!(d.forward("rev").status().state, ForwardState::Failed);
        assert_eq!(
            echo.connections(),
            1,
            "nothing reached the echo through the held port"
        );

        // Released: the forward alone is retried on the same session and becomes ready.
        drop(held);
        let port = remote_port(&d, "rev").await?;
        assert_eq!(port, taken);
        assert_eq!(d.forward("rev").status().last_error, None, "error cleared");
        let t = push_through(TcpStream::connect(("127.0.0.1", taken)).await?, 8 * MIB).await?;
        t.check_echoed()?;
        assert_eq!(
            server.sessions_accepted(),
            1,
            "the session was never reconnected"
        );
        assert_eq!(d.host_status("h").reconnects, 0);
        // And the local forward still works after the recovery.
        let t = push_through(TcpStream::connect(local_addr).await?, MIB).await?;
        t.check_echoed()?;
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_unix_socket_ingress_uses_streamlocal_and_is_cancelled_on_stop() {
    with_timeout(LIMIT, async {
        let (server, key) = server_and_key().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let dir = tempfile::tempdir()?;
        let remote_sock = dir.path().join("remote.sock");
        let toml = host_table("h", &server, &key)
            + &forward_table(
                "rev-sock",
                "h",
                "remote",
                &remote_sock.display().to_string(),
                Some(&echo.addr().to_string()),
            );
        let d = TestDaemon::start(&toml, vec![]).await?;
        wait_until(Duration::from_secs(20), "the server-side socket", || {
            d.forward("rev-sock").status().state == ForwardState::Ready && remote_sock.exists()
        })
        .await?;
        let t = push_through(
            tokio::net::UnixStream::connect(&remote_sock).await?,
            8 * MIB,
        )
        .await?;
        t.check_echoed()?;
        // On stop the listener is cancelled: the server no longer accepts on the socket.
        d.stop(Duration::from_millis(200)).await;
        wait_until(
            Duration::from_secs(10),
            "the server to drop the socket",
            || std::os::unix::net::UnixStream::connect(&remote_sock).is_err(),
        )
        .await?;
        Ok(())
    })
    .await;
}
