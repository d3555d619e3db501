//! `warren connect`: ssh-style options run through the daemon's own code, via the binary.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::harness::{MIB, WarrenProcess, current_user, push_through, wait_until, with_timeout};
use crate::support::Fixture;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_carries_l_and_d_like_ssh_n() {
    with_timeout(Duration::from_secs(60), async {
        let Fixture { server, key, echo } = Fixture::start().await?;
        let dir = tempfile::tempdir()?;
        let local = dir.path().join("l.sock");
        let socks = dir.path().join("d.sock");
        let echo_addr = echo.addr().tcp()?;
        let l_spec = format!("{}:127.0.0.1:{}", local.display(), echo_addr.port());
        let kh = format!("UserKnownHostsFile={}", server.known_hosts_path().display());
        let port = server.port().to_string();
        let user = current_user()?;
        let key_path = key.path().display().to_string();
        let socks_path = socks.display().to_string();
        let mut warren = WarrenProcess::spawn(
            &[
                "connect",
                "-L",
                &l_spec,
                "-D",
                &socks_path,
                "-i",
                &key_path,
                "-p",
                &port,
                "-l",
                &user,
                "-o",
                &kh,
                "-o",
                "agent=false",
                "127.0.0.1",
            ],
            &[("HOME", dir.path().to_str().unwrap_or("/nonexistent"))],
        )?;
        warren
            .wait_for_stderr(Duration::from_secs(20), |l| l.contains("session up"))
            .await?;
        wait_until(Duration::from_secs(5), "the ingress sockets", || {
            local.exists() && socks.exists()
        })
        .await?;

        // -L: bytes echoed through the Unix ingress.
        let t = push_through(UnixStream::connect(&local).await?, 8 * MIB).await?;
        t.check_echoed()?;

        // -D: a SOCKS5 CONNECT by name through the Unix ingress.
        let mut s = UnixStream::connect(&socks).await?;
        s.write_all(&[5, 1, 0]).await?;
        let mut greeting = [0u8; 2];
        s.read_exact(&mut greeting).await?;
        assert_eq!(greeting, [5, 0]);
        let mut req = vec![5, 1, 0, 3, 9];
        req.extend_from_slice(b"localhost");
        req.extend_from_slice(&echo_addr.port().to_be_bytes());
        s.write_all(&req).await?;
        let mut reply = [0u8; 10];
        s.read_exact(&mut reply).await?;
        assert_eq!(reply[1], 0, "SOCKS5 success");
        s.write_all(b"ping").await?;
        let mut pong = [0u8; 4];
        s.read_exact(&mut pong).await?;
        assert_eq!(&pong, b"ping");

        assert_eq!(
            server.session_counts().accepted,
            1,
            "-L and -D share one session"
        );
        warren.sigterm()?;
        assert_eq!(warren.wait_exit(Duration::from_secs(20)).await?, 0);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_disabled_host_key_checking_and_bad_specs() {
    with_timeout(Duration::from_secs(30), async {
        for args in [
            &[
                "connect",
                "-D",
                "1080",
                "-o",
                "StrictHostKeyChecking=no",
                "h.example",
            ][..],
            &["connect", "-L", "1:2", "h.example"],
            &["connect", "h.example"],
        ] {
            let mut w = WarrenProcess::spawn(args, &[])?;
            assert_eq!(w.wait_exit(Duration::from_secs(10)).await?, 64, "{args:?}");
        }
        // A plain TCP -L ingress is refused if its port is taken: exit 1 naming it.
        let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
        let spec = format!("{}:127.0.0.1:9", taken.local_addr()?.port());
        let mut w = WarrenProcess::spawn(&["connect", "-L", &spec, "127.0.0.1"], &[])?;
        assert_eq!(w.wait_exit(Duration::from_secs(10)).await?, 1);
        assert!(
            w.stderr_text().contains("cannot listen on"),
            "{}",
            w.stderr_text()
        );
        drop(TcpStream::connect(taken.local_addr()?).await);
        Ok(())
    })
    .await;
}
