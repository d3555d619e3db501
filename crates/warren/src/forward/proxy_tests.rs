//! Unit tests of the first-byte dispatch, the shared deadline (paused time: a slow client of
//! either protocol is cut at [`HANDSHAKE_TIMEOUT`], an HTTP one told `408`) and refusals.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

use super::*;

async fn answered(mut client: DuplexStream) -> Vec<u8> {
    let mut answer = Vec::new();
    let _ = client.read_to_end(&mut answer).await;
    answer
}

#[tokio::test]
async fn the_first_byte_picks_the_protocol() {
    let (mut client, mut server) = duplex(4096);
    client
        .write_all(b"CONNECT [::1]:80 HTTP/1.1\r\nHost: [::1]:80\r\n\r\n")
        .await
        .unwrap();
    let r = handshake(&mut server, HANDSHAKE_TIMEOUT).await.unwrap();
    assert_eq!(r.protocol, Protocol::Http);
    assert_eq!(r.target, Target::Addr("[::1]:80".parse().unwrap()));
    assert!(r.early.is_empty());

    let (mut client, mut server) = duplex(4096);
    client
        .write_all(&[4, 1, 0, 80, 0, 0, 0, 1, 0])
        .await
        .unwrap();
    client.write_all(b"localhost\0GET").await.unwrap();
    let r = handshake(&mut server, HANDSHAKE_TIMEOUT).await.unwrap();
    assert_eq!(r.protocol, Protocol::Socks(Version::V4));
    assert_eq!(r.target, Target::Name("localhost".into(), 80));
    assert_eq!(r.early, b"GET");

    let (mut client, mut server) = duplex(4096);
    client.write_all(&[0x16, 3, 1]).await.unwrap();
    let e = handshake(&mut server, HANDSHAKE_TIMEOUT).await.unwrap_err();
    assert!(matches!(e, HandshakeError::Unknown(0x16)), "{e}");

    let (client, mut server) = duplex(4096);
    drop(client);
    let e = handshake(&mut server, HANDSHAKE_TIMEOUT).await.unwrap_err();
    assert!(
        matches!(e, HandshakeError::Socks(SocksError::Truncated)),
        "{e}"
    );
}

#[tokio::test]
async fn answers_follow_the_protocol() {
    assert_eq!(
        Protocol::Http.reply(Reply::Succeeded),
        b"HTTP/1.1 200 Connection established\r\n\r\n"
    );
    assert!(
        Protocol::Http
            .reply(Reply::HostUnreachable)
            .starts_with(b"HTTP/1.1 504 ")
    );
    assert!(
        Protocol::Http
            .reply(Reply::ConnectionRefused)
            .starts_with(b"HTTP/1.1 502 ")
    );
    assert_eq!(
        Protocol::Socks(Version::V5).reply(Reply::ConnectionRefused)[..2],
        [5, 5]
    );
    assert_eq!(
        Protocol::Socks(Version::V4).reply(Reply::ConnectionRefused)[..2],
        [0, 0x5b]
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_http_client_is_cut_at_the_limit_and_told_408() {
    let (mut client, mut server) = duplex(4096);
    let started = tokio::time::Instant::now();
    // The head arrives a few bytes at a time, one piece per second: never complete in time.
    let trickle = tokio::spawn(async move {
        let head = [&b"CONN"[..], b"ECT x:1", b" HTTP/1.1\r\n"];
        let fields = std::iter::repeat_n(&b"X-A: 1\r\n"[..], 40);
        for piece in head.into_iter().chain(fields) {
            if client.write_all(piece).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        client
    });
    let e = handshake(&mut server, HANDSHAKE_TIMEOUT).await.unwrap_err();
    assert!(matches!(e, HandshakeError::Timeout(_)), "{e}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= HANDSHAKE_TIMEOUT && elapsed < HANDSHAKE_TIMEOUT + Duration::from_secs(2),
        "cut after {elapsed:?}"
    );
    drop(server);
    let client = trickle.await.unwrap();
    let answer = String::from_utf8(answered(client).await).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_of_either_kind_is_cut_at_the_limit() {
    for first in [&b"CONNECT x:1 HTTP/1.1\r\n"[..], &[5, 1], &[]] {
        let (mut client, mut server) = duplex(4096);
        client.write_all(first).await.unwrap();
        let started = tokio::time::Instant::now();
        let e = handshake(&mut server, HANDSHAKE_TIMEOUT).await.unwrap_err();
        assert!(matches!(e, HandshakeError::Timeout(_)), "{first:?}: {e}");
        assert!(started.elapsed() >= HANDSHAKE_TIMEOUT);
        assert!(started.elapsed() < HANDSHAKE_TIMEOUT + Duration::from_secs(2));
    }
}

#[tokio::test]
async fn a_refused_client_hears_why_in_its_protocol() {
    for (first, want) in [
        (
            &b"CONNECT x:1 HTTP/1.1\r\n\r\n"[..],
            &b"HTTP/1.1 503 Service Unavailable\r\n"[..],
        ),
        (&[5, 1, 0], &[5, 0xff]),
        (&[4, 1, 0, 80, 1, 2, 3, 4, 0], &[0, 0x5b]),
    ] {
        let (mut client, mut server) = duplex(4096);
        client.write_all(first).await.unwrap();
        refuse(&mut server).await;
        drop(server);
        let answer = answered(client).await;
        assert!(answer.starts_with(want), "{first:?}: {answer:?}");
    }
}
