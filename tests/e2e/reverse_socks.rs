//! Reverse SOCKS (`type = "remote-dynamic"`, ssh -R PORT) against the real sshd: the proxy
//! listens on the server's port (port 0, the bound port read from status), curl on that port
//! fetches from a web server on this machine by SOCKS5 and SOCKS4a (names resolved here),
//! digests compared; a refused destination gets the SOCKS failure reply; and OpenSSH's
//! `regress/dynamic-forward.sh` scenario for both -D and -R.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{bail, ensure};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren::config::Endpoint;
use warren::forward::ForwardState;

use crate::harness::{
    EchoServer, HttpServer, KeyKind, MIB, SshServer, Transport, UserKey, WarrenProcess,
    current_user, hex, wait_until, with_timeout,
};
use crate::socks::{curl, read_until_closed, socks4, socks5, v4_ip, v5_ipv4, v5_name};
use crate::support::{TestDaemon, forward_table, host_table, ingress};

const LIMIT: Duration = Duration::from_secs(90);
/// How long a listener on the server may take to be confirmed.
const READY: Duration = Duration::from_secs(20);

/// A harness sshd, and warren running `forwards` (TOML) for host `h`.
pub(crate) struct Fixture {
    _server: SshServer,
    _key: UserKey,
    pub(crate) daemon: TestDaemon,
}

impl Fixture {
    pub(crate) async fn start(
        forwards: &str,
        listeners: Vec<std::net::TcpListener>,
    ) -> anyhow::Result<Self> {
        let server = SshServer::start().await?;
        let key = UserKey::generate(KeyKind::Ed25519, None).await?;
        server.authorize(&key)?;
        let toml = host_table("h", &server, &key) + forwards;
        let daemon = TestDaemon::start(&toml, listeners).await?;
        daemon.wait_up("h", Duration::from_secs(15)).await?;
        Ok(Self {
            _server: server,
            _key: key,
            daemon,
        })
    }

    /// The port the server listens on for forward `name` (asked for as port 0), as status
    /// shows it once the server confirmed the listener.
    pub(crate) async fn server_port(&self, name: &str) -> anyhow::Result<u16> {
        let f = self.daemon.forward(name);
        wait_until(
            READY,
            &format!("forward {name} listening on the server"),
            || f.status().state == ForwardState::Ready,
        )
        .await?;
        match f.status().remote_listen {
            Some(Endpoint::Tcp { port, .. }) if port != 0 => Ok(port),
            other => bail!("forward {name} listens on {other:?}"),
        }
    }

    pub(crate) async fn stop(self) {
        self.daemon.stop(Duration::from_secs(1)).await;
    }
}

/// A remote-dynamic forward `name` on the server's loopback, port 0.
pub(crate) fn reverse_socks(name: &str) -> String {
    forward_table(name, "h", "remote-dynamic", "127.0.0.1:0", None)
}

/// Fetches `url` with curl through `proxy_args` and checks the body against `http`'s.
pub(crate) async fn fetch_and_compare(
    http: &HttpServer,
    proxy_args: &[String],
    url: &str,
) -> anyhow::Result<()> {
    let body = curl(proxy_args, url).await?;
    let digest: [u8; 32] = Sha256::digest(&body).into();
    ensure!(
        body.len() as u64 == http.body_len() && digest == http.body_digest(),
        "curl {proxy_args:?} {url} got {} bytes ({}), want {} ({})",
        body.len(),
        hex(&digest),
        http.body_len(),
        hex(&http.body_digest())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_fetches_through_the_proxy_on_the_server_by_socks5_and_socks4a() {
    with_timeout(LIMIT, async {
        let f = Fixture::start(&reverse_socks("rsocks"), vec![]).await?;
        let port = f.server_port("rsocks").await?;
        let http = HttpServer::start(8 * MIB).await?;
        // A name: resolved on this machine, where the connection leaves from.
        let url = format!("http://localhost:{}/", http.addr().port());
        let proxy = format!("127.0.0.1:{port}");
        fetch_and_compare(&http, &["--socks5-hostname".into(), proxy.clone()], &url).await?;
        fetch_and_compare(&http, &["--socks4a".into(), proxy.clone()], &url).await?;
        ensure!(
            http.requests() == ["GET / HTTP/1.1", "GET / HTTP/1.1"],
            "requests {:?}",
            http.requests()
        );
        let c = &f.daemon.forward("rsocks").counters;
        let out = c.bytes_out.load(Ordering::Relaxed);
        ensure!(out > 16 * MIB, "bytes_out {out} counts both bodies");
        f.stop().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_destination_gets_the_socks_failure_reply() {
    with_timeout(LIMIT, async {
        let f = Fixture::start(&reverse_socks("rsocks"), vec![]).await?;
        let port = f.server_port("rsocks").await?;
        // A port nothing listens on: bound, then closed.
        let (closed, addr) = ingress();
        drop(closed);
        let proxy = format!("127.0.0.1:{port}");

        let mut s = TcpStream::connect(&proxy).await?;
        let reply = socks5(&mut s, &v5_ipv4(1, addr)).await?;
        ensure!(
            reply[..2] == [5, 5],
            "SOCKS5 reply {reply:?}, want connection refused (5)"
        );
        let mut s = TcpStream::connect(&proxy).await?;
        let reply = socks5(&mut s, &v5_name("localhost", addr.port())).await?;
        ensure!(
            reply[..2] == [5, 5],
            "SOCKS5 reply {reply:?}, want connection refused (5)"
        );
        let mut s = TcpStream::connect(&proxy).await?;
        let reply = socks4(&mut s, &v4_ip(1, addr, b"")).await?;
        ensure!(
            reply[..2] == [0, 0x5b],
            "SOCKS4 reply {reply:?}, want rejected (0x5b)"
        );
        // curl reports a SOCKS5 failure reply as exit code 97.
        let e = curl(
            &["--socks5-hostname".into(), proxy.clone()],
            &format!("http://localhost:{}/", addr.port()),
        )
        .await
        .expect_err("a refused destination fails");
        ensure!(format!("{e:#}").contains("97"), "curl: {e:#}");
        // And the HTTP face of the same port says 502.
        let mut s = TcpStream::connect(&proxy).await?;
        s.write_all(format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", addr.port()).as_bytes())
            .await?;
        let answer = read_until_closed(&mut s, Duration::from_secs(10), "the 502").await?;
        let answer = String::from_utf8_lossy(&answer);
        ensure!(answer.starts_with("HTTP/1.1 502 "), "answer {answer:?}");
        f.stop().await;
        Ok(())
    })
    .await;
}

/// OpenSSH's `regress/dynamic-forward.sh`, ported: for -D and for -R (no destination), for
/// each SOCKS version (4, 4A, 5 with local and remote name resolution) and each of
/// `127.0.0.1` and `localhost`, fetch a file through the proxy and compare its bytes. The
/// upstream script copies a file over an ssh session proxied by `nc -X 4|5`; here curl is the
/// SOCKS client and a web server the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_regress_dynamic_forward() {
    with_timeout(Duration::from_secs(150), async {
        let (listener, socks) = ingress();
        let forwards =
            forward_table("d", "h", "dynamic", &socks.to_string(), None) + &reverse_socks("r");
        let f = Fixture::start(&forwards, vec![listener]).await?;
        let reverse = format!("127.0.0.1:{}", f.server_port("r").await?);
        let http = HttpServer::start(MIB).await?;
        for (side, proxy) in [("-D", socks.to_string()), ("-R", reverse)] {
            for version in ["--socks4", "--socks4a", "--socks5", "--socks5-hostname"] {
                for host in ["127.0.0.1", "localhost"] {
                    let url = format!("http://{host}:{}/", http.addr().port());
                    let args = [version.to_string(), proxy.clone()];
                    fetch_and_compare(&http, &args, &url)
                        .await
                        .map_err(|e| e.context(format!("{side} {version} {host}")))?;
                }
            }
        }
        ensure!(
            http.requests().len() == 16,
            "requests {:?}",
            http.requests()
        );
        f.stop().await;
        Ok(())
    })
    .await;
}

/// The binary, as a user runs it: `warren connect --json -R 0 -D 0` announces where each
/// proxy listens (the server's port for -R), and curl fetches through both, by SOCKS and by
/// HTTP CONNECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warren_connect_r_with_only_a_port_is_a_proxy_on_the_server() {
    with_timeout(LIMIT, async {
        let server = SshServer::start().await?;
        let key = UserKey::generate(KeyKind::Ed25519, None).await?;
        server.authorize(&key)?;
        let dir = tempfile::tempdir()?;
        let kh = format!("UserKnownHostsFile={}", server.known_hosts_path().display());
        let (port, user) = (server.port().to_string(), current_user()?);
        let key_path = key.path().display().to_string();
        let warren = WarrenProcess::spawn(
            &[
                "connect",
                "--json",
                "-R",
                "0",
                "-D",
                "0",
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
        let lines = warren
            .wait_for_stdout_lines(2, Duration::from_secs(30))
            .await?;
        let mut listens = std::collections::HashMap::new();
        for line in &lines {
            let v: serde_json::Value = serde_json::from_str(line)?;
            ensure!(v["connect"].is_null(), "{line}");
            let kind = v["type"].as_str().unwrap_or_default().to_string();
            listens.insert(kind, v["listen"].as_str().unwrap_or_default().to_string());
        }
        let (Some(r), Some(d)) = (listens.get("remote-dynamic"), listens.get("dynamic")) else {
            bail!("announced {lines:?}");
        };
        ensure!(
            !r.ends_with(":0") && !d.ends_with(":0"),
            "announced {lines:?}"
        );
        let http = HttpServer::start(4 * MIB).await?;
        let url = format!("http://localhost:{}/", http.addr().port());
        for proxy in [r, d] {
            fetch_and_compare(&http, &["--socks5-hostname".into(), proxy.clone()], &url).await?;
            let args = ["-p".to_string(), "-x".into(), format!("http://{proxy}")];
            fetch_and_compare(&http, &args, &url).await?;
        }
        warren.sigterm()?;
        let mut warren = warren;
        ensure!(warren.wait_exit(Duration::from_secs(20)).await? == 0);
        Ok(())
    })
    .await;
}

/// One connection beyond `max_connections` is answered in its protocol (SOCKS5: no acceptable
/// method; HTTP: 503) and counted, while the open one keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_proxy_on_the_server_answers_the_next_client_with_a_failure() {
    with_timeout(LIMIT, async {
        let toml = reverse_socks("r") + "max_connections = 1\n";
        let f = Fixture::start(&toml, vec![]).await?;
        let proxy = format!("127.0.0.1:{}", f.server_port("r").await?);
        let echo = EchoServer::start(Transport::Tcp).await?;
        let mut held = TcpStream::connect(&proxy).await?;
        let reply = socks5(&mut held, &v5_name("localhost", echo.addr().port())).await?;
        ensure!(reply[..2] == [5, 0], "first client: {reply:?}");

        let mut s = TcpStream::connect(&proxy).await?;
        s.write_all(&[5, 1, 0]).await?;
        let answer = read_until_closed(&mut s, Duration::from_secs(10), "the refusal").await?;
        ensure!(answer == [5, 0xff], "SOCKS5 beyond the limit: {answer:?}");
        let mut s = TcpStream::connect(&proxy).await?;
        s.write_all(b"CONNECT localhost:1 HTTP/1.1\r\n\r\n").await?;
        let answer = read_until_closed(&mut s, Duration::from_secs(10), "the 503").await?;
        let answer = String::from_utf8_lossy(&answer);
        ensure!(
            answer.starts_with("HTTP/1.1 503 "),
            "HTTP beyond the limit: {answer:?}"
        );
        let refused = f
            .daemon
            .forward("r")
            .counters
            .refused
            .load(Ordering::Relaxed);
        ensure!(refused == 2, "refused {refused}");

        held.write_all(b"still here").await?;
        let mut back = [0u8; 10];
        tokio::time::timeout(Duration::from_secs(10), held.read_exact(&mut back)).await??;
        ensure!(&back == b"still here");
        f.stop().await;
        Ok(())
    })
    .await;
}
