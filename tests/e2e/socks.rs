//! Dynamic forwards (-D, SOCKS4/4a/5) against the real sshd: hand-written client bytes for
//! every request form, curl as a real client, refused targets, hostile handshakes, a silent
//! client cut at the handshake timeout, and 50 concurrent clients afterwards.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;
use warren::forward::dynamic::HANDSHAKE_TIMEOUT;

use crate::harness::{
    EchoServer, HttpServer, KeyKind, MIB, SshServer, Transport, UserKey, hex, push_through,
    wait_until, with_timeout, within,
};
use crate::support::{TestDaemon, forward_table, host_table, ingress};

const LIMIT: Duration = Duration::from_secs(60);
/// How long a SOCKS reply may take.
const REPLY: Duration = Duration::from_secs(10);

/// A harness sshd, and warren running one dynamic forward `socks` on a pre-bound ingress.
struct Fixture {
    server: SshServer,
    _key: UserKey,
    daemon: TestDaemon,
    socks: SocketAddr,
}

impl Fixture {
    async fn start() -> anyhow::Result<Self> {
        let server = SshServer::start().await?;
        let key = UserKey::generate(KeyKind::Ed25519, None).await?;
        server.authorize(&key)?;
        let (listener, socks) = ingress();
        let toml = host_table("h", &server, &key)
            + &forward_table("socks", "h", "dynamic", &socks.to_string(), None);
        let daemon = TestDaemon::start(&toml, vec![listener]).await?;
        daemon.wait_up("h", Duration::from_secs(15)).await?;
        Ok(Self {
            server,
            _key: key,
            daemon,
            socks,
        })
    }

    async fn connect(&self) -> anyhow::Result<TcpStream> {
        TcpStream::connect(self.socks)
            .await
            .with_context(|| format!("connect to the SOCKS ingress {}", self.socks))
    }

    async fn stop(self) {
        self.daemon.stop(Duration::from_secs(1)).await;
    }
}

/// A SOCKS5 CONNECT request for a name.
pub(crate) fn v5_name(name: &str, port: u16) -> Vec<u8> {
    let mut r = vec![5, 1, 0, 3, u8::try_from(name.len()).expect("short name")];
    r.extend_from_slice(name.as_bytes());
    r.extend_from_slice(&port.to_be_bytes());
    r
}

/// A SOCKS5 request with command `cmd` for an IPv4 address.
pub(crate) fn v5_ipv4(cmd: u8, addr: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(a) = addr else {
        panic!("{addr} is not IPv4")
    };
    let mut r = vec![5, cmd, 0, 1];
    r.extend_from_slice(&a.ip().octets());
    r.extend_from_slice(&a.port().to_be_bytes());
    r
}

/// A SOCKS4 request with command `cmd` for an IPv4 address, user id `user`.
pub(crate) fn v4_ip(cmd: u8, addr: SocketAddr, user: &[u8]) -> Vec<u8> {
    let SocketAddr::V4(a) = addr else {
        panic!("{addr} is not IPv4")
    };
    let mut r = vec![4, cmd];
    r.extend_from_slice(&a.port().to_be_bytes());
    r.extend_from_slice(&a.ip().octets());
    r.extend_from_slice(user);
    r.push(0);
    r
}

/// A SOCKS4a CONNECT request for a name.
pub(crate) fn v4a_name(name: &str, port: u16, user: &[u8]) -> Vec<u8> {
    let mut r = vec![4, 1];
    r.extend_from_slice(&port.to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 1]);
    r.extend_from_slice(user);
    r.push(0);
    r.extend_from_slice(name.as_bytes());
    r.push(0);
    r
}

/// Reads exactly `n` bytes within [`REPLY`].
pub(crate) async fn read_n(s: &mut TcpStream, n: usize, what: &str) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    within(REPLY, what, s.read_exact(&mut buf))
        .await?
        .with_context(|| format!("read {what}"))?;
    Ok(buf)
}

/// SOCKS5: greeting (no auth), then `request`; returns the 10-byte reply (IPv4 bound address).
pub(crate) async fn socks5(s: &mut TcpStream, request: &[u8]) -> anyhow::Result<Vec<u8>> {
    s.write_all(&[5, 1, 0]).await?;
    let method = read_n(s, 2, "the SOCKS5 method selection").await?;
    ensure!(method == [5, 0], "method selection {method:?}, want [5, 0]");
    s.write_all(request).await?;
    read_n(s, 10, "the SOCKS5 reply").await
}

/// SOCKS4/4a: `request`; returns the 8-byte reply.
pub(crate) async fn socks4(s: &mut TcpStream, request: &[u8]) -> anyhow::Result<Vec<u8>> {
    s.write_all(request).await?;
    read_n(s, 8, "the SOCKS4 reply").await
}

pub(crate) fn ensure_v5_ok(reply: &[u8]) -> anyhow::Result<()> {
    ensure!(
        reply[..2] == [5, 0] && reply[2] == 0 && reply[3] == 1,
        "SOCKS5 reply {reply:?}, want success [5, 0, 0, 1, ...]"
    );
    Ok(())
}

pub(crate) fn ensure_v4_ok(reply: &[u8]) -> anyhow::Result<()> {
    ensure!(
        reply[0] == 0 && reply[1] == 0x5a,
        "SOCKS4 reply {reply:?}, want [0, 0x5a, ...]"
    );
    Ok(())
}

/// Reads whatever remains until the peer closes (EOF or reset), within `limit`.
pub(crate) async fn read_until_closed(
    s: &mut TcpStream,
    limit: Duration,
    what: &str,
) -> anyhow::Result<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    within(limit, what, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await?;
    Ok(got)
}

fn socks_counters(f: &Fixture) -> &warren::forward::Counters {
    &f.daemon.forward("socks").counters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_connect_by_name_echoes() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let mut s = f.connect().await?;
        let reply = socks5(&mut s, &v5_name("localhost", echo.addr().port())).await?;
        ensure_v5_ok(&reply)?;
        push_through(s, 4 * MIB).await?.check_echoed()?;
        let c = socks_counters(&f);
        assert_eq!(c.bytes_in.load(Ordering::Relaxed), 4 * MIB);
        assert_eq!(c.bytes_out.load(Ordering::Relaxed), 4 * MIB);
        f.stop().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_connect_by_ipv4_literal_echoes() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let mut s = f.connect().await?;
        let reply = socks5(&mut s, &v5_ipv4(1, echo.addr().tcp()?)).await?;
        ensure_v5_ok(&reply)?;
        push_through(s, 4 * MIB).await?.check_echoed()?;
        f.stop().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_pipelined_handshake_with_early_data_echoes() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let mut s = f.connect().await?;
        // Greeting, request and the first payload bytes in one write, before any reply.
        let early = b"early bytes sent before the reply";
        let mut first = vec![5, 1, 0];
        first.extend_from_slice(&v5_name("localhost", echo.addr().port()));
        first.extend_from_slice(early);
        s.write_all(&first).await?;
        let replies = read_n(&mut s, 12, "the method selection and the reply").await?;
        ensure!(
            replies[..2] == [5, 0],
            "method selection {:?}",
            &replies[..2]
        );
        ensure_v5_ok(&replies[2..])?;
        let back = read_n(&mut s, early.len(), "the early bytes echoed").await?;
        ensure!(back == early, "early bytes came back as {back:?}");
        push_through(s, 2 * MIB).await?.check_echoed()?;
        f.stop().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks4a_connect_by_name_echoes() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let mut s = f.connect().await?;
        let reply = socks4(&mut s, &v4a_name("localhost", echo.addr().port(), b"alice")).await?;
        ensure_v4_ok(&reply)?;
        push_through(s, 4 * MIB).await?.check_echoed()?;
        f.stop().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks4_connect_by_ip_echoes() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let mut s = f.connect().await?;
        let reply = socks4(&mut s, &v4_ip(1, echo.addr().tcp()?, b"")).await?;
        ensure_v4_ok(&reply)?;
        push_through(s, 4 * MIB).await?.check_echoed()?;
        f.stop().await;
        Ok(())
    })
    .await;
}

/// Runs curl through the SOCKS ingress with `proxy_args` and returns the body it printed.
pub(crate) async fn curl(proxy_args: &[String], url: &str) -> anyhow::Result<Vec<u8>> {
    let mut cmd = tokio::process::Command::new("curl");
    // No proxy variables or curlrc from the environment.
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args([
            "-q",
            "--silent",
            "--show-error",
            "--fail",
            "--max-time",
            "60",
        ])
        .args(proxy_args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = within(Duration::from_secs(70), "curl", cmd.output())
        .await?
        .context("run curl")?;
    if !out.status.success() {
        bail!(
            "curl {proxy_args:?} {url} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

async fn curl_downloads_through_socks(proxy: impl Fn(SocketAddr) -> Vec<String>) {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        let http = HttpServer::start(16 * MIB).await?;
        // A name, resolved on the SSH server's side.
        let url = format!("http://localhost:{}/", http.addr().port());
        let body = curl(&proxy(f.socks), &url).await?;
        let digest: [u8; 32] = Sha256::digest(&body).into();
        ensure!(
            body.len() as u64 == http.body_len() && digest == http.body_digest(),
            "curl got {} bytes ({}), want {} ({})",
            body.len(),
            hex(&digest),
            http.body_len(),
            hex(&http.body_digest())
        );
        ensure!(
            http.requests() == ["GET / HTTP/1.1"],
            "requests {:?}",
            http.requests()
        );
        let c = socks_counters(&f);
        ensure!(
            c.bytes_out.load(Ordering::Relaxed) > 16 * MIB,
            "bytes_out {} counts the body and headers",
            c.bytes_out.load(Ordering::Relaxed)
        );
        f.stop().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_socks5_hostname_downloads_sixteen_mib() {
    curl_downloads_through_socks(|a| vec!["--socks5-hostname".into(), a.to_string()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_socks5h_proxy_url_downloads_sixteen_mib() {
    curl_downloads_through_socks(|a| vec!["-x".into(), format!("socks5h://{a}")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_socks4a_downloads_sixteen_mib() {
    curl_downloads_through_socks(|a| vec!["--socks4a".into(), a.to_string()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_target_port_gets_connection_refused() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        // A target port with nothing listening: bound, then released.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?
        };
        let mut s = f.connect().await?;
        let reply = socks5(&mut s, &v5_ipv4(1, closed)).await?;
        ensure!(
            reply[..2] == [5, 5],
            "SOCKS5 reply {reply:?}, want [5, 5, ...] (refused)"
        );
        let rest = read_until_closed(&mut s, Duration::from_secs(3), "SOCKS5 close").await?;
        ensure!(rest.is_empty(), "bytes after a refusal: {rest:?}");

        let mut s = f.connect().await?;
        let reply = socks5(&mut s, &v5_name("localhost", closed.port())).await?;
        ensure!(
            reply[..2] == [5, 5],
            "SOCKS5 by name: reply {reply:?}, want [5, 5, ...]"
        );

        let mut s = f.connect().await?;
        let reply = socks4(&mut s, &v4_ip(1, closed, b"bob")).await?;
        ensure!(
            reply[..2] == [0, 0x5b],
            "SOCKS4 reply {reply:?}, want [0, 0x5b, ...]"
        );
        let rest = read_until_closed(&mut s, Duration::from_secs(3), "SOCKS4 close").await?;
        ensure!(rest.is_empty(), "bytes after a refusal: {rest:?}");

        let mut s = f.connect().await?;
        let reply = socks4(&mut s, &v4a_name("localhost", closed.port(), b"")).await?;
        ensure!(
            reply[..2] == [0, 0x5b],
            "SOCKS4a reply {reply:?}, want [0, 0x5b, ...]"
        );

        assert_eq!(
            f.server.sessions_accepted(),
            1,
            "refusals do not cost the session"
        );
        f.stop().await;
        Ok(())
    })
    .await;
}

/// One hostile handshake: what the client sends, whether it then closes its write side,
/// and exactly what warren must answer before it closes the connection.
struct Hostile {
    name: &'static str,
    send: Vec<u8>,
    eof: bool,
    answer: Vec<u8>,
}

fn hostile_cases() -> Vec<Hostile> {
    let echo_like: SocketAddr = "127.0.0.1:80".parse().expect("addr");
    let greet = |rest: &[u8]| {
        let mut v = vec![5, 1, 0];
        v.extend_from_slice(rest);
        v
    };
    let v5_fail = |code: u8| {
        let mut v = vec![5, 0];
        v.extend_from_slice(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0]);
        v
    };
    vec![
        Hostile {
            name: "version byte alone, then EOF",
            send: vec![5],
            eof: true,
            answer: vec![],
        },
        Hostile {
            name: "greeting promising 2 methods with 1, then EOF",
            send: vec![5, 2, 0],
            eof: true,
            answer: vec![],
        },
        Hostile {
            name: "greeting with no methods",
            send: vec![5, 0],
            eof: false,
            answer: vec![],
        },
        Hostile {
            name: "greeting without the no-auth method",
            send: vec![5, 2, 1, 2],
            eof: false,
            answer: vec![5, 0xff],
        },
        Hostile {
            name: "domain length 255 with 2 bytes, then EOF",
            send: greet(&[5, 1, 0, 3, 255, b'a', b'b']),
            eof: true,
            answer: vec![5, 0],
        },
        Hostile {
            name: "request cut inside the IPv4 address, then EOF",
            send: greet(&[5, 1, 0, 1, 127, 0]),
            eof: true,
            answer: vec![5, 0],
        },
        Hostile {
            // An HTTP client: only CONNECT is served (tests/e2e/http_connect.rs).
            name: "HTTP GET",
            send: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            eof: false,
            answer: warren::forward::http_connect::status(
                405,
                "only CONNECT is served on this proxy port",
            ),
        },
        Hostile {
            name: "unknown version byte 0x16 (TLS)",
            send: vec![0x16, 3, 1, 0, 5],
            eof: false,
            answer: vec![],
        },
        Hostile {
            name: "unknown version byte 0",
            send: vec![0, 1, 0],
            eof: false,
            answer: vec![],
        },
        Hostile {
            name: "SOCKS5 BIND",
            send: greet(&v5_ipv4(2, echo_like)),
            eof: false,
            answer: v5_fail(7),
        },
        Hostile {
            name: "SOCKS5 UDP ASSOCIATE",
            send: greet(&v5_ipv4(3, echo_like)),
            eof: false,
            answer: v5_fail(7),
        },
        Hostile {
            name: "SOCKS5 BIND by name",
            send: greet(&{
                let mut r = v5_name("localhost", 80);
                r[1] = 2;
                r
            }),
            eof: false,
            answer: v5_fail(7),
        },
        Hostile {
            name: "SOCKS5 unknown address type",
            send: greet(&[5, 1, 0, 9, 1, 2, 3, 4, 0, 80]),
            eof: false,
            answer: v5_fail(8),
        },
        Hostile {
            name: "SOCKS5 empty domain name",
            send: greet(&[5, 1, 0, 3, 0, 0, 80]),
            eof: false,
            answer: v5_fail(1),
        },
        Hostile {
            name: "SOCKS5 request with version 4",
            send: greet(&[4, 1, 0, 1, 127, 0, 0, 1, 0, 80]),
            eof: false,
            answer: v5_fail(1),
        },
        Hostile {
            name: "SOCKS4 BIND",
            send: v4_ip(2, echo_like, b""),
            eof: false,
            answer: vec![0, 0x5b, 0, 0, 0, 0, 0, 0],
        },
        Hostile {
            name: "SOCKS4 cut before the user id ends, then EOF",
            send: vec![4, 1, 0, 80, 127, 0, 0, 1, b'u', b's'],
            eof: true,
            answer: vec![],
        },
        Hostile {
            name: "SOCKS4 user id of 300 bytes",
            send: {
                let mut v = vec![4, 1, 0, 80, 127, 0, 0, 1];
                v.extend_from_slice(&[b'u'; 300]);
                v
            },
            eof: false,
            answer: vec![0, 0x5b, 0, 0, 0, 0, 0, 0],
        },
        Hostile {
            name: "SOCKS4a with an empty name",
            send: vec![4, 1, 0, 80, 0, 0, 0, 1, 0, 0],
            eof: false,
            answer: vec![0, 0x5b, 0, 0, 0, 0, 0, 0],
        },
        Hostile {
            name: "SOCKS4a name with a control character",
            send: {
                let mut v = vec![4, 1, 0, 80, 0, 0, 0, 1, 0];
                v.extend_from_slice(b"local\nhost\0");
                v
            },
            eof: false,
            answer: vec![0, 0x5b, 0, 0, 0, 0, 0, 0],
        },
    ]
}

/// Plays every hostile case concurrently: each must get exactly its answer and be closed
/// promptly (well before the handshake timeout).
async fn play_hostile(socks: SocketAddr) -> anyhow::Result<()> {
    let mut tasks = JoinSet::new();
    for case in hostile_cases() {
        tasks.spawn(async move {
            let result = async {
                let mut s = TcpStream::connect(socks).await?;
                s.write_all(&case.send).await?;
                if case.eof {
                    s.shutdown().await?;
                }
                let got =
                    read_until_closed(&mut s, Duration::from_secs(3), "warren to close").await?;
                ensure!(
                    got == case.answer,
                    "answered {got:?}, want {:?}",
                    case.answer
                );
                anyhow::Ok(())
            }
            .await;
            result.with_context(|| format!("hostile case {:?}", case.name))
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_handshakes_get_the_right_answer_and_are_closed() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        play_hostile(f.socks).await?;
        let c = socks_counters(&f);
        wait_until(
            Duration::from_secs(5),
            "no hostile client to stay active",
            || c.active.load(Ordering::Relaxed) == 0,
        )
        .await?;
        assert_eq!(
            c.bytes_in.load(Ordering::Relaxed),
            0,
            "nothing was forwarded"
        );
        assert_eq!(f.server.sessions_accepted(), 1);
        f.stop().await;
        Ok(())
    })
    .await;
}

/// Connects, sends `prefix`, then goes silent; returns how long warren took to close it.
async fn silent_client(socks: SocketAddr, prefix: &'static [u8]) -> anyhow::Result<Duration> {
    let mut s = TcpStream::connect(socks).await?;
    let start = Instant::now();
    s.write_all(prefix).await?;
    let limit = HANDSHAKE_TIMEOUT + Duration::from_secs(5);
    let what = format!("warren to close a client silent after {prefix:?}");
    let got = read_until_closed(&mut s, limit, &what).await?;
    let elapsed = start.elapsed();
    // A complete greeting is answered before the silence.
    let want: &[u8] = if prefix == [5, 1, 0] { &[5, 0] } else { &[] };
    ensure!(got == want, "silent client after {prefix:?} got {got:?}");
    Ok(elapsed)
}

/// SOCKS5 CONNECT to `target` and `len` bytes echoed.
async fn good_client(socks: SocketAddr, target: SocketAddr, len: u64) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(socks).await?;
    let reply = socks5(&mut s, &v5_name("localhost", target.port())).await?;
    ensure_v5_ok(&reply)?;
    push_through(s, len).await?.check_echoed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_hostile_clients_then_fifty_concurrent_clients_are_served() {
    with_timeout(LIMIT, async {
        let f = Fixture::start().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let target = echo.addr().tcp()?;
        let socks = f.socks;
        // Silent clients: nothing at all, half a greeting, a greeting but no request.
        let silent: Vec<_> = [&[][..], &[5, 1][..], &[5, 1, 0][..], &[4, 1, 0][..]]
            .into_iter()
            .map(|p| tokio::spawn(silent_client(socks, p)))
            .collect();
        // Meanwhile hostile clients are answered and closed, and a good one is served.
        play_hostile(socks).await?;
        good_client(socks, target, MIB).await?;
        for (i, t) in silent.into_iter().enumerate() {
            let elapsed = t.await??;
            ensure!(
                elapsed >= HANDSHAKE_TIMEOUT - Duration::from_secs(1),
                "silent client {i} closed after {elapsed:?}, before the {HANDSHAKE_TIMEOUT:?} handshake timeout"
            );
            ensure!(
                elapsed <= HANDSHAKE_TIMEOUT + Duration::from_secs(5),
                "silent client {i} closed only after {elapsed:?}"
            );
        }
        // After all of that: 50 concurrent good clients.
        let mut tasks = JoinSet::new();
        for i in 0..50 {
            tasks.spawn(async move {
                good_client(socks, target, 128 * 1024)
                    .await
                    .with_context(|| format!("good client {i}"))
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        let c = socks_counters(&f);
        wait_until(Duration::from_secs(5), "every SOCKS client to finish", || {
            c.active.load(Ordering::Relaxed) == 0
        })
        .await?;
        let forwarded = MIB + 50 * 128 * 1024;
        assert_eq!(c.bytes_in.load(Ordering::Relaxed), forwarded);
        assert_eq!(c.bytes_out.load(Ordering::Relaxed), forwarded);
        assert_eq!(echo.connections(), 51);
        assert_eq!(f.server.sessions_accepted(), 1, "one session throughout");
        f.stop().await;
        Ok(())
    })
    .await;
}
