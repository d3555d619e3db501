//! IPv6 throughout: an sshd listening on `::1` (`hostname = "::1"`), `[::1]:PORT` local and
//! dynamic ingresses, a remote ingress on the server's `[::1]:0`, egresses on `[::1]`, SOCKS5
//! requests for IPv6 addresses (ATYP 4), and
//! `warren connect` with ssh's bracketed `-L`/`-D` specs. Where this machine has no IPv6
//! loopback they fail and say so (they never skip silently).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren::config::{BindAddr, Endpoint};
use warren::forward::ForwardState;

use crate::harness::{
    EchoServer, KeyKind, MIB, NO_IPV6, SshServer, UserKey, WarrenProcess, current_user,
    push_through, tail, wait_until, with_timeout, within,
};
use crate::support::{TestDaemon, forward_table, host_table, with_setting};

const LIMIT: Duration = Duration::from_secs(60);
/// Bound for one step that should be quick (a session coming up, a SOCKS reply).
const STEP: Duration = Duration::from_secs(20);

/// A `[::1]` listener on port 0, to hand to [`TestDaemon::start`].
fn ingress_v6() -> anyhow::Result<(std::net::TcpListener, SocketAddr)> {
    let l = std::net::TcpListener::bind("[::1]:0").context(NO_IPV6)?;
    let addr = l.local_addr()?;
    Ok((l, addr))
}

/// An sshd on `[::1]` and a key it accepts.
async fn server_v6() -> anyhow::Result<(SshServer, UserKey)> {
    let server = SshServer::builder().ipv6().start().await?;
    let key = UserKey::generate(KeyKind::Ed25519, None).await?;
    server.authorize(&key)?;
    Ok((server, key))
}

/// SOCKS5 CONNECT to `target` by address (ATYP 1 or 4) through `socks`; the stream, ready
/// for data.
async fn socks5_connect(socks: SocketAddr, target: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(socks).await?;
    s.write_all(&[5, 1, 0]).await?;
    let mut greeting = [0u8; 2];
    within(
        STEP,
        "the SOCKS5 method selection",
        s.read_exact(&mut greeting),
    )
    .await??;
    ensure!(greeting == [5, 0], "SOCKS5 greeting answered {greeting:?}");
    let mut req = vec![5, 1, 0];
    match target {
        SocketAddr::V4(a) => {
            req.push(1);
            req.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            req.push(4);
            req.extend_from_slice(&a.ip().octets());
        }
    }
    req.extend_from_slice(&target.port().to_be_bytes());
    s.write_all(&req).await?;
    let mut reply = [0u8; 10];
    within(STEP, "the SOCKS5 reply", s.read_exact(&mut reply)).await??;
    ensure!(reply[..2] == [5, 0], "SOCKS5 reply {reply:?}, want success");
    Ok(s)
}

/// The server on `::1`, a local forward from a `[::1]` ingress to an `[::1]` egress, a
/// dynamic forward on `[::1]:0` asked for an IPv6 address, and a remote forward from the
/// server's `[::1]:0` back to an `[::1]` egress here: bytes and digests both ways, and sshd
/// saw IPv6 on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_server_ingresses_and_egress_carry_bytes() {
    with_timeout(LIMIT, async {
        let (server, key) = server_v6().await?;
        let echo = EchoServer::start_ipv6().await?;
        let echo_addr = echo.addr().tcp()?;
        ensure!(echo_addr.is_ipv6(), "{echo_addr}");
        let (listener, local) = ingress_v6()?;
        let table = with_setting(&host_table("h", &server, &key), "hostname", "\"::1\"");
        let toml = table
            + &forward_table(
                "f",
                "h",
                "local",
                &local.to_string(),
                Some(&echo_addr.to_string()),
            )
            + &forward_table("socks", "h", "dynamic", "[::1]:0", None)
            + &forward_table(
                "rev",
                "h",
                "remote",
                "[::1]:0",
                Some(&echo_addr.to_string()),
            );
        let d = TestDaemon::start(&toml, vec![listener]).await?;
        d.wait_up("h", STEP)
            .await
            .with_context(|| format!("sshd log tail:\n{}", tail(&server.log(), 30)))?;
        // The session itself runs over IPv6.
        server
            .wait_for_log("Connection from ::1 port", STEP)
            .await?;

        // -L: [::1] ingress to an [::1] egress named as "[::1]:PORT".
        let stream = TcpStream::connect(local).await?;
        push_through(stream, 16 * MIB).await?.check_echoed()?;
        server
            .wait_for_log(&format!("target ::1 port {}", echo_addr.port()), STEP)
            .await?;
        ensure!(
            d.forward("f").bound == Some(BindAddr::Tcp(local)),
            "{:?}",
            d.forward("f").bound
        );

        // -D on [::1]:0: the kernel's port, and SOCKS5 with an IPv6 address (ATYP 4).
        let Some(BindAddr::Tcp(socks)) = d.forward("socks").bound.clone() else {
            anyhow::bail!("the dynamic forward is not bound: {:?}", d.forward("socks"));
        };
        ensure!(
            socks.ip() == std::net::Ipv6Addr::LOCALHOST && socks.port() != 0,
            "dynamic ingress bound at {socks}"
        );
        let stream = socks5_connect(socks, echo_addr).await?;
        push_through(stream, 4 * MIB).await?.check_echoed()?;

        // -R on the server's [::1]:0, back to the [::1] egress here.
        let rev = d.forward("rev");
        wait_until(STEP, "the remote forward to be ready", || {
            let s = rev.status();
            s.state == ForwardState::Ready && s.remote_listen.is_some()
        })
        .await
        .with_context(|| format!("status of rev: {:?}", rev.status()))?;
        let remote = match rev.status().remote_listen {
            Some(Endpoint::Tcp { host, port }) if host == "::1" && port != 0 => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))
            }
            other => anyhow::bail!("the remote ingress is {other:?}, want [::1]:PORT"),
        };
        // The server is this machine: its [::1] listener is reachable from here.
        push_through(TcpStream::connect(remote).await?, 4 * MIB)
            .await?
            .check_echoed()?;
        ensure!(
            echo.connections() == 3,
            "{} echo connections",
            echo.connections()
        );
        ensure!(server.sessions_accepted() == 1, "one session for all");
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}

/// `warren connect` with ssh's bracketed specs: `-L '[::1]:0:[::1]:PORT'`, `-D '[::1]:0'`,
/// destination `::1`; what it announces is `[::1]` with the kernel's ports, and they carry
/// bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_takes_bracketed_ipv6_specs() {
    with_timeout(LIMIT, async {
        let (server, key) = server_v6().await?;
        let echo = EchoServer::start_ipv6().await?;
        let echo_addr = echo.addr().tcp()?;
        let dir = tempfile::tempdir()?;
        let l_spec = format!("[::1]:0:[::1]:{}", echo_addr.port());
        let kh = format!("UserKnownHostsFile={}", server.known_hosts_path().display());
        let port = server.port().to_string();
        let user = current_user()?;
        let key_path = key.path().display().to_string();
        let warren = WarrenProcess::spawn(
            &[
                "connect",
                "-L",
                &l_spec,
                "-D",
                "[::1]:0",
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
                "::1",
            ],
            &[("HOME", dir.path().to_str().unwrap_or("/nonexistent"))],
        )?;
        let lines = warren
            .wait_for_stdout_lines(2, STEP)
            .await
            .with_context(|| format!("warren stderr:\n{}", tail(&warren.stderr_text(), 30)))?;
        // `FLAG LISTEN[ -> CONNECT]`, as tests/e2e/scripts.rs reads it.
        let listen_of = |flag: &str| -> anyhow::Result<SocketAddr> {
            let line = lines
                .iter()
                .find(|l| l.starts_with(&format!("{flag} ")))
                .with_context(|| format!("no {flag} line in {lines:?}"))?;
            let head = line.split(" -> ").next().unwrap_or(line);
            let addr: SocketAddr = head[flag.len() + 1..]
                .parse()
                .with_context(|| format!("no socket address in {line:?}"))?;
            ensure!(
                addr.ip() == std::net::Ipv6Addr::LOCALHOST && addr.port() != 0,
                "{line:?}"
            );
            Ok(addr)
        };
        let local = listen_of("-L")?;
        let l_line = lines.iter().find(|l| l.starts_with("-L ")).cloned();
        ensure!(
            l_line
                .as_deref()
                .is_some_and(|l| l.ends_with(&format!("-> [::1]:{}", echo_addr.port()))),
            "the -L line names the IPv6 egress in brackets: {l_line:?}"
        );
        let socks = listen_of("-D")?;
        push_through(TcpStream::connect(local).await?, 4 * MIB)
            .await?
            .check_echoed()?;
        let stream = socks5_connect(socks, echo_addr).await?;
        push_through(stream, MIB).await?.check_echoed()?;
        ensure!(server.sessions_accepted() == 1);
        Ok(())
    })
    .await;
}
