//! Unit tests of the HTTP CONNECT parser and driver, and a hostile-input property: whatever a
//! client sends, in whatever pieces, nothing panics and the answer is one bounded response.

use std::net::SocketAddr;

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

use super::*;

fn addr(s: &str) -> Target {
    Target::Addr(s.parse::<SocketAddr>().unwrap())
}

fn name(n: &str, port: u16) -> Target {
    Target::Name(n.into(), port)
}

#[test]
fn connect_requests_of_every_authority_form() {
    let head =
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nUser-Agent: t\r\n\r\n";
    assert_eq!(
        parse(head),
        Ok(Some((name("example.com", 443), head.len())))
    );
    let mut with_early = head.to_vec();
    with_early.extend_from_slice(b"\x16\x03\x01");
    assert_eq!(
        parse(&with_early),
        Ok(Some((name("example.com", 443), head.len())))
    );
    assert_eq!(
        parse(b"CONNECT 127.0.0.1:80 HTTP/1.0\r\n\r\n"),
        Ok(Some((addr("127.0.0.1:80"), 33)))
    );
    let v6 = b"CONNECT [::1]:80 HTTP/1.1\r\n\r\n";
    assert_eq!(parse(v6), Ok(Some((addr("[::1]:80"), v6.len()))));
    let v6 = b"CONNECT [fd00::5]:5432 HTTP/1.1\r\n\r\n";
    assert_eq!(parse(v6), Ok(Some((addr("[fd00::5]:5432"), v6.len()))));
    // Every strict prefix is incomplete, never an error.
    for i in 0..head.len() {
        assert_eq!(parse(&head[..i]), Ok(None), "prefix {i}");
    }
}

#[test]
fn bad_targets_and_ports_are_refused() {
    for (target, why) in [
        ("example.com", "no :port"),
        ("example.com:", "the port is not a number"),
        ("example.com:0", "the port is outside 1-65535"),
        ("example.com:65536", "the port is outside 1-65535"),
        ("example.com:+80", "the port is not a number"),
        ("example.com:080000", "the port is not a number"),
        (":80", "not a host name"),
        ("::1:80", "an IPv6 address needs brackets"),
        ("[::1]80", "no :port after the address"),
        ("[::1:80", "no closing ] after the IPv6 address"),
        ("[example.com]:80", "not an IPv6 address in brackets"),
        ("user@host:80", "not a host name"),
        ("/index.html", "no :port"),
        ("http://example.com:80", "not a host name"),
    ] {
        let head = format!("CONNECT {target} HTTP/1.1\r\n\r\n");
        assert_eq!(
            parse(head.as_bytes()),
            Err(HttpError::BadTarget(target.into(), why)),
            "{target}"
        );
    }
    assert_eq!(authority("a.b-c_d:65535"), Ok(name("a.b-c_d", 65535)));
    assert_eq!(authority("10.0.0.1:1"), Ok(addr("10.0.0.1:1")));
}

#[test]
fn other_methods_malformed_and_oversized_heads() {
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        Err(HttpError::Method("GET".into()))
    );
    assert_eq!(
        parse(b"connect x:1 HTTP/1.1\r\n\r\n"),
        Err(HttpError::Method("connect".into()))
    );
    assert!(matches!(
        parse(b"CONNECT x:1 HTTP/2.0\r\n\r\n"),
        Err(HttpError::Malformed(_))
    ));
    assert!(matches!(
        parse(b"CONNECT x:1 HTTP/1.1\r\nBad Header\r\n\r\n"),
        Err(HttpError::Malformed(_))
    ));
    // An endless header field, and a complete head just over the limit.
    let mut endless = b"CONNECT x:1 HTTP/1.1\r\nX-Pad: ".to_vec();
    endless.resize(MAX_HEAD, b'a');
    assert_eq!(parse(&endless), Err(HttpError::TooLarge));
    assert_eq!(parse(&endless[..MAX_HEAD - 1]), Ok(None));
    let mut over = b"CONNECT x:1 HTTP/1.1\r\nX-Pad: ".to_vec();
    over.resize(MAX_HEAD, b'a');
    over.extend_from_slice(b"\r\n\r\n");
    assert_eq!(parse(&over), Err(HttpError::TooLarge));
    let many: String = (0..=MAX_FIELDS).map(|i| format!("X-{i}: v\r\n")).collect();
    let head = format!("CONNECT x:1 HTTP/1.1\r\n{many}\r\n");
    assert_eq!(parse(head.as_bytes()), Err(HttpError::TooLarge));
}

#[test]
fn answers_are_complete_responses_with_a_one_line_body() {
    assert_eq!(
        reply_bytes(Reply::Succeeded),
        b"HTTP/1.1 200 Connection established\r\n\r\n"
    );
    for (reply, code) in [
        (Reply::HostUnreachable, "504 Gateway Timeout"),
        (Reply::ConnectionRefused, "502 Bad Gateway"),
        (Reply::GeneralFailure, "502 Bad Gateway"),
        (Reply::NetworkUnreachable, "502 Bad Gateway"),
    ] {
        let text = String::from_utf8(reply_bytes(reply)).unwrap();
        assert!(text.starts_with(&format!("HTTP/1.1 {code}\r\n")), "{text}");
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{text}"
        );
        assert!(head.contains("Connection: close"));
        assert_eq!(body.lines().count(), 1, "{body:?}");
        assert!(body.ends_with('\n'));
    }
}

/// Runs the driver over `input` (then EOF); returns its result and everything it answered.
async fn drive(input: &[u8]) -> (Result<(Target, Vec<u8>), HttpError>, Vec<u8>) {
    let (client, mut server) = duplex(64 * 1024);
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let input = input.to_vec();
    let writer = tokio::spawn(async move {
        let _ = client_write.write_all(&input).await;
        let _ = client_write.shutdown().await;
    });
    let reader = tokio::spawn(async move {
        let mut answer = Vec::new();
        let _ = client_read.read_to_end(&mut answer).await;
        answer
    });
    let result = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut first = vec![0u8; 1];
        server.read_exact(&mut first).await.unwrap();
        handshake(&mut server, first).await
    })
    .await
    .expect("handshake finishes");
    drop(server);
    writer.abort();
    let answer = reader.await.unwrap();
    (result, answer)
}

#[tokio::test]
async fn driver_answers_what_it_refuses() {
    let (r, answer) = drive(b"CONNECT [::1]:8080 HTTP/1.1\r\n\r\nearly").await;
    assert_eq!(r, Ok((addr("[::1]:8080"), b"early".to_vec())));
    assert!(answer.is_empty(), "the caller answers a good request");

    let (r, answer) = drive(b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n").await;
    assert_eq!(r, Err(HttpError::Method("GET".into())));
    let answer = String::from_utf8(answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{answer}"
    );
    assert!(answer.contains("Allow: CONNECT\r\n"));

    let mut big = b"CONNECT x:1 HTTP/1.1\r\n".to_vec();
    for i in 0..400 {
        big.extend_from_slice(format!("X-Pad-{i}: aaaaaaaaaa\r\n").as_bytes());
    }
    let (r, answer) = drive(&big).await;
    assert_eq!(r, Err(HttpError::TooLarge));
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");

    let (r, answer) = drive(b"CONNECT x:0 HTTP/1.1\r\n\r\n").await;
    assert!(matches!(r, Err(HttpError::BadTarget(..))));
    assert!(answer.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));

    let (r, answer) = drive(b"CONNECT x:1 HTTP/1.1\r\nHost").await;
    assert_eq!(r, Err(HttpError::Truncated));
    assert!(answer.is_empty());
}

/// A client that sends `data` cut at `cuts`, then EOF, and keeps what it is sent.
struct Pieces {
    data: Vec<u8>,
    cuts: Vec<usize>,
    read: usize,
    answers: Vec<u8>,
}

impl tokio::io::AsyncRead for Pieces {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let read = self.read;
        let end = self.data.len();
        let stop = self
            .cuts
            .iter()
            .copied()
            .find(|&c| c > read)
            .unwrap_or(end)
            .min(end);
        let n = (stop - read).min(buf.remaining());
        buf.put_slice(&self.data[read..read + n]);
        self.read += n;
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Pieces {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        b: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.answers.extend_from_slice(b);
        std::task::Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Runs the whole proxy handshake (first-byte dispatch included) over `data` cut at `cuts`.
fn drive_pieces(data: Vec<u8>, mut cuts: Vec<usize>) -> (bool, Vec<u8>) {
    cuts.sort_unstable();
    let mut s = Pieces {
        data,
        cuts,
        read: 0,
        answers: Vec::new(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let ok = rt
        .block_on(super::super::proxy::handshake(
            &mut s,
            std::time::Duration::from_secs(10),
        ))
        .is_ok();
    (ok, s.answers)
}

/// A valid CONNECT head with a few bytes changed, inserted or removed.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let head = prop_oneof![
        Just(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_vec()),
        Just(b"CONNECT [::1]:80 HTTP/1.1\r\n\r\n".to_vec()),
        Just(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
    ];
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6);
    (head, edits).prop_map(|(mut bytes, edits)| {
        for (at, b, op) in edits {
            let i = at.index(bytes.len() + 1);
            match op {
                0 => bytes.insert(i, b),
                1 if i < bytes.len() => bytes[i] = b,
                _ if i < bytes.len() => drop(bytes.remove(i)),
                _ => bytes.push(b),
            }
        }
        bytes
    })
}

/// Checks what the handshake answered: nothing, or exactly one complete response.
fn check_answer(answers: &[u8]) -> Result<(), TestCaseError> {
    if answers.is_empty() || answers.first().is_some_and(|b| *b < 0x10) {
        // SOCKS (a mutation may turn the first byte into 4 or 5) answers in bytes.
        prop_assert!(answers.len() <= 12, "{:?}", answers);
        return Ok(());
    }
    let text = String::from_utf8_lossy(answers);
    prop_assert!(text.starts_with("HTTP/1.1 4"), "{}", text);
    prop_assert!(text.matches("HTTP/1.1").count() == 1, "{}", text);
    prop_assert!(answers.len() < 512);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn arbitrary_bytes_never_panic(
        data in prop::collection::vec(any::<u8>(), 0..256),
        cuts in prop::collection::vec(0usize..256, 0..4),
    ) {
        let _ = parse(&data);
        let mut http = b"CONNECT ".to_vec();
        http.extend_from_slice(&data);
        let _ = parse(&http);
        let (_, answers) = drive_pieces(http, cuts);
        check_answer(&answers)?;
    }

    #[test]
    fn mutated_requests_never_panic(
        data in mutated(),
        cuts in prop::collection::vec(0usize..64, 0..4),
    ) {
        let parsed = parse(&data);
        if let Ok(Some((_, len))) = parsed {
            prop_assert!(len <= data.len());
            prop_assert_eq!(parse(&data[..len]), parsed.clone());
        }
        let (ok, answers) = drive_pieces(data, cuts);
        if ok {
            prop_assert!(answers.is_empty());
        } else {
            check_answer(&answers)?;
        }
    }

    #[test]
    fn authorities_never_panic(s in "\\PC{0,40}") {
        if let Ok(Target::Name(n, p)) = authority(&s) {
            prop_assert!(!n.is_empty() && p != 0);
        }
    }
}
