//! Fuzzes warren's SOCKS server handshake: the pure parsers over arbitrary bytes, and the
//! async driver over a `tokio::io::duplex` fed the same bytes in chunks of a fuzzed size.
//!
//! Properties: nothing panics; a parser's `len` never exceeds its input; the driver always
//! finishes (the input ends in EOF), never claims more bytes than were sent, and answers at
//! most one method selection and one reply.

#![no_main]

use std::cell::RefCell;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use warren::forward::socks::{
    Version, handshake, parse_greeting, parse_request_v4, parse_request_v5,
};

thread_local! {
    static RUNTIME: RefCell<Runtime> = RefCell::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("current-thread runtime"),
    );
}

fuzz_target!(|data: &[u8]| {
    parsers(data);
    if let Some((&chunk, stream)) = data.split_first() {
        driver(usize::from(chunk) + 1, stream);
    }
});

fn parsers(data: &[u8]) {
    if let Ok(Some(len)) = parse_greeting(data) {
        assert!(
            len <= data.len(),
            "greeting len {len} > input {}",
            data.len()
        );
        assert!(
            len >= 3,
            "a greeting offering no-auth has at least 3 bytes, got {len}"
        );
    }
    if let Ok(Some(p)) = parse_request_v5(data) {
        assert!(
            p.len <= data.len(),
            "v5 len {} > input {}",
            p.len,
            data.len()
        );
        assert_eq!(p.version, Version::V5);
    }
    if let Ok(Some(p)) = parse_request_v4(data) {
        assert!(
            p.len <= data.len(),
            "v4 len {} > input {}",
            p.len,
            data.len()
        );
        assert_eq!(p.version, Version::V4);
    }
}

/// Sends `stream` then EOF through a duplex whose buffer holds `chunk` bytes (so the server
/// sees it split), while the handshake runs on the other end and the client reads answers.
fn driver(chunk: usize, stream: &[u8]) {
    RUNTIME.with(|rt| {
        rt.borrow().block_on(async {
            let (mut client, server) = tokio::io::duplex(chunk);
            let server_side = async move {
                let mut server = server;
                let r = handshake(&mut server).await;
                drop(server);
                r
            };
            let client_side = async {
                let (mut rd, mut wr) = tokio::io::split(&mut client);
                let write = async {
                    if wr.write_all(stream).await.is_ok() {
                        let _ = wr.shutdown().await;
                    }
                };
                let mut answers = Vec::new();
                let read = rd.read_to_end(&mut answers);
                let ((), r) = tokio::join!(write, read);
                r.map(|_| answers)
            };
            let both = async { tokio::join!(server_side, client_side) };
            let (result, answers) = tokio::time::timeout(Duration::from_secs(5), both)
                .await
                .expect("the handshake must finish once the client has sent EOF");
            let answers = answers.expect("the client reads until the server is gone");
            assert!(
                answers.len() <= 12,
                "answered {} bytes: {answers:?}",
                answers.len()
            );
            if let Ok((parsed, early)) = result {
                assert!(
                    parsed.len <= stream.len(),
                    "len {} > input {}",
                    parsed.len,
                    stream.len()
                );
                // The request starts after the greeting (SOCKS5); the early bytes follow it.
                let start = match parsed.version {
                    Version::V5 => match parse_greeting(stream) {
                        Ok(Some(greeting)) => greeting + parsed.len,
                        other => panic!("a V5 request without a valid greeting: {other:?}"),
                    },
                    Version::V4 => parsed.len,
                };
                let end = start + early.len();
                assert!(
                    end <= stream.len(),
                    "request and early bytes end at {end} > input {}",
                    stream.len()
                );
                assert_eq!(
                    early,
                    stream[start..end],
                    "early bytes are the input after the request"
                );
                match parsed.version {
                    Version::V5 => assert_eq!(answers, [5, 0], "a V5 success answers [5, 0] only"),
                    Version::V4 => assert!(answers.is_empty(), "a V4 success answers nothing yet"),
                }
            }
        });
    });
}
