//! HTTP CONNECT on the SOCKS ports against the real sshd: `curl -p -x http://...` through a
//! dynamic (-D) ingress and through a remote-dynamic one on the server, digests compared; a
//! GET is answered 405, oversized headers 431, a client that does not finish its request in
//! time 408, each with the connection closed; an IPv6 literal destination both ways.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::ensure;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use warren::forward::dynamic::HANDSHAKE_TIMEOUT;

use crate::harness::{HttpServer, MIB, with_timeout, within};
use crate::reverse_socks::{Fixture, fetch_and_compare, reverse_socks};
use crate::socks::read_until_closed;
use crate::support::{forward_table, ingress};

const LIMIT: Duration = Duration::from_secs(90);

/// A daemon with a dynamic forward `d` on a loopback port; returns it and the port.
async fn dynamic() -> anyhow::Result<(Fixture, SocketAddr)> {
    let (listener, socks) = ingress();
    let toml = forward_table("d", "h", "dynamic", &socks.to_string(), None);
    Ok((Fixture::start(&toml, vec![listener]).await?, socks))
}

/// Sends `request` to `proxy` and returns everything answered until it closes.
async fn ask(proxy: SocketAddr, request: &[u8], limit: Duration) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(proxy).await?;
    s.write_all(request).await?;
    let answer = read_until_closed(&mut s, limit, "the proxy's answer").await?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_tunnels_through_a_dynamic_ingress() {
    with_timeout(LIMIT, async {
        let (f, proxy) = dynamic().await?;
        let http = HttpServer::start(16 * MIB).await?;
        let args = ["-p".to_string(), "-x".into(), format!("http://{proxy}")];
        // By name (resolved on the server) and by address.
        fetch_and_compare(
            &http,
            &args,
            &format!("http://localhost:{}/", http.addr().port()),
        )
        .await?;
        fetch_and_compare(&http, &args, &http.url()).await?;
        f.stop().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_tunnels_through_a_remote_dynamic_ingress_on_the_server() {
    with_timeout(LIMIT, async {
        let f = Fixture::start(&reverse_socks("r"), vec![]).await?;
        let port = f.server_port("r").await?;
        let http = HttpServer::start(16 * MIB).await?;
        let args = [
            "-p".to_string(),
            "-x".into(),
            format!("http://127.0.0.1:{port}"),
        ];
        fetch_and_compare(
            &http,
            &args,
            &format!("http://localhost:{}/", http.addr().port()),
        )
        .await?;
        f.stop().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_oversized_heads_and_slow_clients_are_answered_and_closed() {
    with_timeout(LIMIT, async {
        let (f, proxy) = dynamic().await?;
        let quick = Duration::from_secs(10);

        let answer = ask(
            proxy,
            b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
            quick,
        )
        .await?;
        ensure!(
            answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "GET: {answer:?}"
        );
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        ensure!(body.lines().count() == 1, "GET body {body:?}");

        let mut big = b"CONNECT localhost:1 HTTP/1.1\r\n".to_vec();
        while big.len() < 16 * 1024 {
            big.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        big.extend_from_slice(b"\r\n");
        let answer = ask(proxy, &big, quick).await?;
        ensure!(answer.starts_with("HTTP/1.1 431 "), "oversized: {answer:?}");

        let answer = ask(proxy, b"CONNECT localhost:0 HTTP/1.1\r\n\r\n", quick).await?;
        ensure!(answer.starts_with("HTTP/1.1 400 "), "port 0: {answer:?}");

        // A head that never ends: cut at the limit with a 408.
        let started = Instant::now();
        let answer = ask(
            proxy,
            b"CONNECT localhost:1 HTTP/1.1\r\nHost: local",
            HANDSHAKE_TIMEOUT + quick,
        )
        .await?;
        let took = started.elapsed();
        ensure!(answer.starts_with("HTTP/1.1 408 "), "slow: {answer:?}");
        ensure!(
            took >= HANDSHAKE_TIMEOUT - Duration::from_millis(100)
                && took < HANDSHAKE_TIMEOUT + Duration::from_secs(5),
            "the slow client was cut after {took:?}"
        );
        // The proxy still serves afterwards.
        let http = HttpServer::start(MIB).await?;
        let args = ["-p".to_string(), "-x".into(), format!("http://{proxy}")];
        fetch_and_compare(&http, &args, &http.url()).await?;
        f.stop().await;
        Ok(())
    })
    .await;
}

/// `CONNECT [::1]:PORT`: an IPv6 literal destination, through -D (the server connects) and
/// through remote-dynamic (this machine connects); bytes echoed after the 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_literal_destination_is_reached_both_ways() {
    with_timeout(LIMIT, async {
        let (listener, socks) = ingress();
        let toml =
            forward_table("d", "h", "dynamic", &socks.to_string(), None) + &reverse_socks("r");
        let f = Fixture::start(&toml, vec![listener]).await?;
        let reverse: SocketAddr = format!("127.0.0.1:{}", f.server_port("r").await?).parse()?;
        let echo = tokio::net::TcpListener::bind("[::1]:0").await?;
        let port = echo.local_addr()?.port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        for proxy in [socks, reverse] {
            let mut s = TcpStream::connect(proxy).await?;
            s.write_all(
                format!("CONNECT [::1]:{port} HTTP/1.1\r\nHost: [::1]:{port}\r\n\r\n").as_bytes(),
            )
            .await?;
            let ok = b"HTTP/1.1 200 Connection established\r\n\r\n";
            let mut answer = vec![0u8; ok.len()];
            within(
                Duration::from_secs(10),
                "the 200",
                s.read_exact(&mut answer),
            )
            .await??;
            ensure!(
                answer == ok,
                "{proxy}: {:?}",
                String::from_utf8_lossy(&answer)
            );
            s.write_all(b"ping over v6").await?;
            let mut back = [0u8; 12];
            within(Duration::from_secs(10), "the echo", s.read_exact(&mut back)).await??;
            ensure!(&back == b"ping over v6", "{proxy}: echoed {back:?}");
        }
        f.stop().await;
        Ok(())
    })
    .await;
}
