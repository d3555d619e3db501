//! Local forwards (-L) against the real sshd: bytes, concurrency, sharing, half-close, Unix sockets.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::task::JoinSet;

use crate::harness::{
    EchoServer, KeyKind, MIB, PeerServer, SinkServer, SshServer, Transport, UserKey, hex,
    push_through, random_digest, read_digest, wait_until, with_timeout, within, write_random,
};
use crate::support::{Fixture, TestDaemon, forward_table, host_table, ingress};

const LIMIT: Duration = Duration::from_secs(120);
/// Bound for one step that should be quick (a session coming up, a small transfer).
const STEP: Duration = Duration::from_secs(15);
const KIB: u64 = 1024;

/// A `[[forward]]` of type local for host `h`.
fn local(name: &str, listen: &str, connect: &str) -> String {
    forward_table(name, "h", "local", listen, Some(connect))
}

/// A server with one authorized ed25519 key.
async fn server_and_key() -> anyhow::Result<(SshServer, UserKey)> {
    let server = SshServer::start().await?;
    let key = UserKey::generate(KeyKind::Ed25519, None).await?;
    server.authorize(&key)?;
    Ok((server, key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_each_way_through_a_local_forward() {
    with_timeout(LIMIT, async {
        let Fixture { server, key, echo } = Fixture::start().await?;
        let (listener, addr) = ingress();
        let toml = host_table("h", &server, &key)
            + &local("pg", &addr.to_string(), &echo.addr().to_string());
        let d = TestDaemon::start(&toml, vec![listener]).await?;
        let stream = TcpStream::connect(addr).await?;
        let t = push_through(stream, 64 * MIB).await?;
        t.check_echoed()?;
        let c = &d.forward("pg").counters;
        assert_eq!(c.bytes_in.load(Ordering::Relaxed), 64 * MIB);
        assert_eq!(c.bytes_out.load(Ordering::Relaxed), 64 * MIB);
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_connections_each_echo_256_kib() {
    const CONNECTIONS: u64 = 100;
    const EACH: u64 = 256 * KIB;
    with_timeout(LIMIT, async {
        let (server, key) = server_and_key().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let (listener, addr) = ingress();
        let toml = host_table("h", &server, &key)
            + &local("many", &addr.to_string(), &echo.addr().to_string());
        let d = TestDaemon::start(&toml, vec![listener]).await?;
        d.wait_up("h", STEP).await?;

        let mut tasks = JoinSet::new();
        for i in 0..CONNECTIONS {
            tasks.spawn(async move {
                let stream = TcpStream::connect(addr)
                    .await
                    .with_context(|| format!("connection {i}: connect"))?;
                let t = push_through(stream, EACH)
                    .await
                    .with_context(|| format!("connection {i}"))?;
                t.check_echoed()
                    .with_context(|| format!("connection {i}"))?;
                anyhow::Ok(())
            });
        }
        let mut done = 0;
        while let Some(joined) = tasks.join_next().await {
            joined.context("a connection task panicked")??;
            done += 1;
        }
        assert_eq!(done, CONNECTIONS);
        assert_eq!(
            echo.connections(),
            CONNECTIONS as usize,
            "each connection reaches the egress once"
        );

        let c = d.forward("many").counters.clone();
        wait_until(STEP, "every connection is finished", || {
            c.active.load(Ordering::SeqCst) == 0
        })
        .await?;
        assert_eq!(c.total.load(Ordering::SeqCst), CONNECTIONS);
        assert_eq!(c.bytes_in.load(Ordering::SeqCst), CONNECTIONS * EACH);
        assert_eq!(c.bytes_out.load(Ordering::SeqCst), CONNECTIONS * EACH);
        // All of it over one SSH session.
        assert_eq!(server.session_counts().accepted, 1);
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_forwards_of_one_host_share_one_session() {
    with_timeout(LIMIT, async {
        let (server, key) = server_and_key().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let sink = SinkServer::start(Transport::Tcp).await?;
        let (l1, a1) = ingress();
        let (l2, a2) = ingress();
        let toml = host_table("h", &server, &key)
            + &local("to-echo", &a1.to_string(), &echo.addr().to_string())
            + &local("to-sink", &a2.to_string(), &sink.addr().to_string());
        let d = TestDaemon::start(&toml, vec![l1, l2]).await?;
        d.wait_up("h", STEP).await?;

        // Both forwards in use at the same time.
        let echoed = async {
            let s = TcpStream::connect(a1).await?;
            push_through(s, 2 * MIB).await
        };
        let sunk = async {
            let mut s = TcpStream::connect(a2).await?;
            let sent = write_random(&mut s, 2 * MIB, 42).await?;
            s.shutdown().await?;
            let mut reply = Vec::new();
            s.read_to_end(&mut reply).await?;
            anyhow::Ok((sent, reply))
        };
        let (t, (sent, reply)) = tokio::try_join!(echoed, sunk)?;
        t.check_echoed()?;
        assert_eq!(
            reply,
            sent.to_vec(),
            "the sink answers with the digest of what it got"
        );
        let (len, digest) = sink.next_result(STEP).await?;
        assert_eq!((len, digest), (2 * MIB, sent));

        let counts = server.session_counts();
        assert_eq!(
            counts.accepted, 1,
            "two forwards of one host must share one SSH session: {counts:?}"
        );
        assert_eq!(counts.alive, 1, "{counts:?}");
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_keeps_the_reply_flowing() {
    const REQUEST: u64 = 3 * MIB;
    // Larger than an SSH channel window, so it needs window adjusts after the client's EOF.
    const REPLY: u64 = 5 * MIB;
    const REPLY_SEED: u64 = 7;
    with_timeout(LIMIT, async {
        let (server, key) = server_and_key().await?;
        // Reads to EOF, then answers: the digest of the request, then REPLY random bytes.
        let peer = PeerServer::start(Transport::Tcp, |mut stream| async move {
            let Ok((_, digest)) = read_digest(&mut stream).await else {
                return;
            };
            if stream.write_all(&digest).await.is_err() {
                return;
            }
            if write_random(&mut stream, REPLY, REPLY_SEED).await.is_ok() {
                let _ = stream.shutdown().await;
            }
        })
        .await?;
        let (listener, addr) = ingress();
        let toml = host_table("h", &server, &key)
            + &local("half", &addr.to_string(), &peer.addr().to_string());
        let d = TestDaemon::start(&toml, vec![listener]).await?;
        d.wait_up("h", STEP).await?;

        let stream = TcpStream::connect(addr).await?;
        let (mut reader, mut writer) = stream.into_split();
        let sent = write_random(&mut writer, REQUEST, 99).await?;
        // Half-close: only our write side ends; the read side stays open.
        writer.shutdown().await?;
        let mut head = [0u8; 32];
        within(STEP, "the digest reply", reader.read_exact(&mut head)).await??;
        ensure!(
            head == sent,
            "the far end got other bytes: it hashed {}, we sent {}",
            hex(&head),
            hex(&sent)
        );
        let (len, digest) =
            within(STEP, "the rest of the reply", read_digest(&mut reader)).await??;
        assert_eq!(len, REPLY, "every byte sent after our EOF arrives");
        assert_eq!(digest, random_digest(REPLY, REPLY_SEED));
        drop(writer);

        let c = d.forward("half").counters.clone();
        wait_until(STEP, "the connection is finished", || {
            c.active.load(Ordering::SeqCst) == 0
        })
        .await?;
        assert_eq!(c.bytes_in.load(Ordering::SeqCst), REQUEST);
        assert_eq!(c.bytes_out.load(Ordering::SeqCst), 32 + REPLY);
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_ingress_and_egress() {
    with_timeout(LIMIT, async {
        let (server, key) = server_and_key().await?;
        let tcp_echo = EchoServer::start(Transport::Tcp).await?;
        let unix_echo = EchoServer::start(Transport::Unix).await?;
        let unix_egress = unix_echo
            .addr()
            .path()
            .context("a Unix echo server has a path")?
            .to_path_buf();
        let dir = tempfile::tempdir()?;
        let unix_in_tcp_out = dir.path().join("in-tcp.sock");
        let unix_in_unix_out = dir.path().join("in-unix.sock");
        let (listener, tcp_in) = ingress();
        let toml = host_table("h", &server, &key)
            + &local(
                "unix-in",
                &unix_in_tcp_out.display().to_string(),
                &tcp_echo.addr().to_string(),
            )
            + &local(
                "unix-out",
                &tcp_in.to_string(),
                &unix_egress.display().to_string(),
            )
            + &local(
                "unix-both",
                &unix_in_unix_out.display().to_string(),
                &unix_egress.display().to_string(),
            );
        let d = TestDaemon::start(&toml, vec![listener]).await?;
        // The ingresses are bound when start returns.
        ensure!(unix_in_tcp_out.exists() && unix_in_unix_out.exists());
        d.wait_up("h", STEP).await?;

        let s = UnixStream::connect(&unix_in_tcp_out).await?;
        push_through(s, 4 * MIB)
            .await?
            .check_echoed()
            .context("Unix ingress, TCP egress")?;
        assert_eq!(tcp_echo.connections(), 1);

        let s = TcpStream::connect(tcp_in).await?;
        push_through(s, 4 * MIB)
            .await?
            .check_echoed()
            .context("TCP ingress, Unix egress")?;
        assert_eq!(unix_echo.connections(), 1);

        let s = UnixStream::connect(&unix_in_unix_out).await?;
        push_through(s, 4 * MIB)
            .await?
            .check_echoed()
            .context("Unix ingress, Unix egress")?;
        assert_eq!(unix_echo.connections(), 2);

        for name in ["unix-in", "unix-out", "unix-both"] {
            let c = &d.forward(name).counters;
            assert_eq!(c.bytes_in.load(Ordering::SeqCst), 4 * MIB, "{name}");
            assert_eq!(c.bytes_out.load(Ordering::SeqCst), 4 * MIB, "{name}");
        }
        d.stop(Duration::from_secs(1)).await;
        ensure!(
            !unix_in_tcp_out.exists() && !unix_in_unix_out.exists(),
            "the socket files are removed on stop"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_during_outage_is_served_when_the_session_comes_up() {
    with_timeout(LIMIT, async {
        let (server, key) = server_and_key().await?;
        server.stop_accepting();
        let echo = EchoServer::start(Transport::Tcp).await?;
        let (listener, addr) = ingress();
        // host_table: connect_timeout 10s, reconnect_max 2s.
        let toml = host_table("h", &server, &key)
            + &local("wait", &addr.to_string(), &echo.addr().to_string());
        let d = TestDaemon::start(&toml, vec![listener]).await?;
        let down = d.wait_host("h", STEP, |s| s.last_error.is_some()).await?;
        ensure!(
            !matches!(down.state, warren::session::HostState::Up),
            "{down:?}"
        );
        assert_eq!(
            down.last_error.as_ref().map(|e| e.class),
            Some(warren::session::FailureClass::Network),
            "{down:?}"
        );

        let stream = TcpStream::connect(addr).await?;
        let c = d.forward("wait").counters.clone();
        wait_until(STEP, "warren accepted the connection", || {
            c.total.load(Ordering::SeqCst) == 1
        })
        .await?;
        ensure!(
            d.host_status("h").state != warren::session::HostState::Up,
            "the session must still be down when the connection arrives"
        );
        assert_eq!(server.session_counts().accepted, 0);

        let resumed = Instant::now();
        server.resume_accepting()?;
        let t = push_through(stream, MIB).await?;
        t.check_echoed()?;
        // It waited for the session, well within connect_timeout (10s).
        ensure!(
            resumed.elapsed() < Duration::from_secs(10),
            "took {:?}",
            resumed.elapsed()
        );
        assert_eq!(echo.connections(), 1);
        assert_eq!(d.host_status("h").state, warren::session::HostState::Up);
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_after_a_transfer() {
    const LEN: u64 = 3 * MIB + 123;
    with_timeout(LIMIT, async {
        let (server, key) = server_and_key().await?;
        let sink = SinkServer::start(Transport::Tcp).await?;
        let (listener, addr) = ingress();
        let toml = host_table("h", &server, &key)
            + &local("count", &addr.to_string(), &sink.addr().to_string());
        let d = TestDaemon::start(&toml, vec![listener]).await?;
        d.wait_up("h", STEP).await?;
        let c = d.forward("count").counters.clone();
        let load = |field: &std::sync::atomic::AtomicU64| field.load(Ordering::SeqCst);
        assert_eq!(
            (
                load(&c.active),
                load(&c.total),
                load(&c.bytes_in),
                load(&c.bytes_out)
            ),
            (0, 0, 0, 0)
        );

        let mut stream = TcpStream::connect(addr).await?;
        let sent = write_random(&mut stream, LEN, 5).await?;
        wait_until(STEP, "warren has read everything we sent", || {
            load(&c.bytes_in) == LEN
        })
        .await?;
        // Open and counted while it is open.
        assert_eq!(load(&c.active), 1);
        assert_eq!(load(&c.total), 1);
        assert_eq!(load(&c.bytes_out), 0, "the sink answers only after EOF");

        stream.shutdown().await?;
        let mut reply = Vec::new();
        within(STEP, "the sink's reply", stream.read_to_end(&mut reply)).await??;
        assert_eq!(reply, sent.to_vec());
        assert_eq!(reply, random_digest(LEN, 5).to_vec());
        drop(stream);
        wait_until(STEP, "the connection is no longer active", || {
            load(&c.active) == 0
        })
        .await?;
        assert_eq!(
            (
                load(&c.active),
                load(&c.total),
                load(&c.bytes_in),
                load(&c.bytes_out)
            ),
            (0, 1, LEN, 32)
        );
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}
