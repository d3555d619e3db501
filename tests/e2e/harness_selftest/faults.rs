//! Self-tests of the fault proxy, the byte-checking peers and the warren process runner.

use anyhow::Context;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{
    EchoServer, FaultMode, FaultProxy, HttpServer, MIB, OpenSshClient, SinkServer, SourceServer,
    Transport, WarrenProcess, exit_code, hex, push_through, read_digest, with_timeout, within,
    write_random,
};

use super::{QUIET, STEP, TEST_LIMIT, server_and_key, spawn_forward};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_fault_proxy_black_holes_resets_and_rejects() {
    with_timeout(TEST_LIMIT, async {
        let echo = EchoServer::start(Transport::Tcp).await?;
        let proxy = FaultProxy::start(echo.addr().tcp()?).await?;
        let mut conn = TcpStream::connect(proxy.addr()).await?;
        let mut buf = [0u8; 4];
        conn.write_all(b"pass").await?;
        within(STEP, "echo via proxy", conn.read_exact(&mut buf)).await??;
        assert_eq!(&buf, b"pass");

        proxy.set_mode(FaultMode::BlackHole);
        conn.write_all(b"hole").await?;
        let early = tokio::time::timeout(QUIET, conn.read_exact(&mut buf)).await;
        assert!(early.is_err(), "bytes crossed a black hole");
        proxy.set_mode(FaultMode::Pass);
        within(STEP, "held bytes", conn.read_exact(&mut buf)).await??;
        assert_eq!(&buf, b"hole");

        proxy.reset_all().await?;
        let after = within(STEP, "the reset", conn.read(&mut buf)).await?;
        let kind = after.as_ref().err().map(std::io::Error::kind);
        assert_eq!(
            kind,
            Some(std::io::ErrorKind::ConnectionReset),
            "got {after:?}"
        );
        assert_eq!(proxy.open_connections(), 0);

        proxy.set_mode(FaultMode::Reject);
        // The RST may even beat connect() reporting success.
        let got = match TcpStream::connect(proxy.addr()).await {
            Ok(mut rejected) => within(STEP, "the reject", rejected.read(&mut buf)).await?,
            Err(err) => Err(err),
        };
        let kind = got.as_ref().err().map(std::io::Error::kind);
        assert_eq!(
            kind,
            Some(std::io::ErrorKind::ConnectionReset),
            "got {got:?}"
        );
        assert_eq!(proxy.accepted(), 2);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_fault_proxy_in_front_of_sshd() {
    with_timeout(TEST_LIMIT, async {
        let (server, key) = server_and_key().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let proxy = FaultProxy::start(server.addr()).await?;
        let client = OpenSshClient::new(&server)?
            .identity(key.path())
            .via_port(proxy.port());
        let mut fwd = spawn_forward(client.stdio_forward(&echo.addr().to_string()))?;
        fwd.round_trip(b"through the proxy").await?;

        proxy.set_mode(FaultMode::BlackHole);
        fwd.stdin.write_all(b"stuck").await?;
        fwd.stdin.flush().await?;
        let mut back = [0u8; 5];
        let early = tokio::time::timeout(QUIET, fwd.stdout.read_exact(&mut back)).await;
        assert!(early.is_err(), "bytes crossed the black-holed proxy");
        assert_eq!(
            server.sessions_alive(),
            1,
            "the session must stay up while black-holed"
        );

        proxy.reset_all().await?;
        let status = within(STEP, "ssh to see the reset", fwd.child.wait()).await??;
        assert_eq!(exit_code(status), 255);
        server
            .wait_sessions(STEP, "sshd sees the reset", |c| c.alive == 0)
            .await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_peers_move_checked_bytes() {
    with_timeout(TEST_LIMIT, async {
        let echo = EchoServer::start(Transport::Unix).await?;
        push_through(echo.addr().connect().await?, 4 * MIB)
            .await?
            .check_echoed()?;

        let sink = SinkServer::start(Transport::Tcp).await?;
        let mut stream = sink.addr().connect().await?;
        let sent = write_random(&mut stream, 3 * MIB, 7).await?;
        stream.shutdown().await?;
        let mut returned = [0u8; 32];
        within(STEP, "the sink's digest", stream.read_exact(&mut returned)).await??;
        assert_eq!(hex(&returned), hex(&sent));
        assert_eq!(
            stream.read(&mut [0u8; 1]).await?,
            0,
            "the sink did not close"
        );
        assert_eq!(sink.next_result(STEP).await?, (3 * MIB, sent));

        let source = SourceServer::start(Transport::Unix, 5 * MIB).await?;
        let mut stream = source.addr().connect().await?;
        let got = read_digest(&mut stream).await?;
        assert_eq!(got, (5 * MIB, source.expected_digest()));

        let http = HttpServer::start(2 * MIB).await?;
        let mut stream = http.addr().connect().await?;
        stream
            .write_all(b"GET /blob HTTP/1.1\r\nHost: test\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("no head")?;
        let head = String::from_utf8_lossy(&response[..split]);
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        let body = &response[split + 4..];
        assert_eq!(body.len() as u64, http.body_len());
        let digest: [u8; 32] = sha2::Sha256::digest(body).into();
        assert_eq!(hex(&digest), hex(&http.body_digest()));
        assert_eq!(http.requests(), vec!["GET /blob HTTP/1.1".to_owned()]);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_warren_process_reports_bad_command_line() {
    with_timeout(TEST_LIMIT, async {
        let mut warren = WarrenProcess::spawn(&["--no-such-flag"], &[])?;
        let code = warren.wait_exit(STEP).await?;
        assert_eq!(code, 64, "stderr: {}", warren.stderr_text());
        // Finding the line is the assertion: it fails on timeout or at EOF.
        warren
            .wait_for_stderr(STEP, |l| l.contains("no-such-flag"))
            .await?;
        Ok(())
    })
    .await
}
