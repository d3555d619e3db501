//! Property tests of the SOCKS parsers and handshake: a request written by the small encoder
//! below parses back to its target, whole or fed in pieces of any size, with the bytes sent
//! after it kept for the connection; arbitrary and mutated input never panics, and a parser
//! that accepts reads nothing past the `len` it reports.

use std::io;
use std::net::SocketAddrV6;
use std::pin::Pin;
use std::task::{Context, Poll};

use proptest::prelude::*;
use tokio::io::ReadBuf;

use super::*;

/// A client request: what it asks for and how it says it.
#[derive(Debug, Clone)]
enum Request {
    V5 { methods: Vec<u8>, target: Target },
    V4 { user: Vec<u8>, target: Target },
}

impl Request {
    /// The greeting (SOCKS5 only) and the request, as a client sends them.
    fn encode(&self) -> (Vec<u8>, Vec<u8>) {
        match self {
            Self::V5 { methods, target } => {
                let mut greeting = vec![5, u8::try_from(methods.len()).unwrap_or(u8::MAX)];
                greeting.extend_from_slice(methods);
                let mut r = vec![5, 1, 0];
                let port = match target {
                    Target::Addr(SocketAddr::V4(a)) => {
                        r.push(1);
                        r.extend_from_slice(&a.ip().octets());
                        a.port()
                    }
                    Target::Addr(SocketAddr::V6(a)) => {
                        r.push(4);
                        r.extend_from_slice(&a.ip().octets());
                        a.port()
                    }
                    Target::Name(name, port) => {
                        r.push(3);
                        r.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
                        r.extend_from_slice(name.as_bytes());
                        *port
                    }
                };
                r.extend_from_slice(&port.to_be_bytes());
                (greeting, r)
            }
            Self::V4 { user, target } => {
                let (ip, port, name) = match target {
                    Target::Addr(SocketAddr::V4(a)) => (a.ip().octets(), a.port(), None),
                    Target::Name(name, port) => ([0, 0, 0, 1], *port, Some(name)),
                    Target::Addr(SocketAddr::V6(_)) => unreachable!("SOCKS4 has no IPv6"),
                };
                let mut r = vec![4, 1];
                r.extend_from_slice(&port.to_be_bytes());
                r.extend_from_slice(&ip);
                r.extend_from_slice(user);
                r.push(0);
                if let Some(name) = name {
                    r.extend_from_slice(name.as_bytes());
                    r.push(0);
                }
                (Vec::new(), r)
            }
        }
    }

    fn version(&self) -> Version {
        match self {
            Self::V5 { .. } => Version::V5,
            Self::V4 { .. } => Version::V4,
        }
    }

    fn target(&self) -> &Target {
        match self {
            Self::V5 { target, .. } | Self::V4 { target, .. } => target,
        }
    }
}

/// A name a client may send: 1 to 255 bytes, no ASCII control character or space.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9.-]{1,30}",
        "[^\\x00-\\x20\\x7f]{1,40}",
        "[a-z0-9.-]{200,255}",
    ]
}

fn v4_target() -> impl Strategy<Value = Target> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            // 0.0.0.x with x > 0 is the SOCKS4a marker, not an address.
            .prop_filter("4a marker", |(o, _)| !(o[..3] == [0, 0, 0] && o[3] != 0))
            .prop_map(|(o, p)| Target::Addr(SocketAddr::new(Ipv4Addr::from(o).into(), p))),
        (name(), any::<u16>()).prop_map(|(n, p)| Target::Name(n, p)),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    let v6 = (any::<[u8; 16]>(), any::<u16>()).prop_map(|(o, p)| {
        Target::Addr(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(o),
            p,
            0,
            0,
        )))
    });
    let v5_target = prop_oneof![v4_target(), v6];
    let methods = (
        prop::collection::vec(1u8..=255, 0..8),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut m, at)| {
            m.insert(at.index(m.len() + 1), 0);
            m
        });
    prop_oneof![
        (methods, v5_target).prop_map(|(methods, target)| Request::V5 { methods, target }),
        (prop::collection::vec(1u8..=255, 0..20), v4_target())
            .prop_map(|(user, target)| Request::V4 { user, target }),
    ]
}

/// A client that sends `data` in the given pieces, then EOF, and keeps what it is sent.
struct Pieces {
    data: Vec<u8>,
    /// Where each read stops (sorted offsets into `data`).
    cuts: Vec<usize>,
    read: usize,
    answers: Vec<u8>,
}

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
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
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Pieces {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.answers.extend_from_slice(b);
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

type Outcome = Result<(Parsed, Vec<u8>), SocksError>;

/// Runs the handshake over `data` cut at `cuts`; returns its result, the client's stream
/// after it (answers, unread bytes).
fn drive(data: Vec<u8>, mut cuts: Vec<usize>) -> (Outcome, Vec<u8>, Vec<u8>) {
    cuts.sort_unstable();
    let mut s = Pieces {
        data,
        cuts,
        read: 0,
        answers: Vec::new(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let result = rt.block_on(handshake(&mut s));
    let unread = s.data[s.read..].to_vec();
    (result, s.answers, unread)
}

fn check_parsers(data: &[u8]) {
    // An accepted request is exactly its first `len` bytes: parsing only those gives the same.
    if let Ok(Some(len)) = parse_greeting(data) {
        assert!(len <= data.len());
        assert_eq!(parse_greeting(&data[..len]), Ok(Some(len)));
    }
    for parse in [parse_request_v5, parse_request_v4] {
        if let Ok(Some(p)) = parse(data) {
            assert!(p.len <= data.len(), "{p:?} from {data:?}");
            assert_eq!(parse(&data[..p.len]), Ok(Some(p.clone())), "{data:?}");
        }
    }
}

/// A valid request with a few bytes changed, inserted or removed.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4);
    (request(), edits).prop_map(|(r, edits)| {
        let (mut bytes, request) = r.encode();
        bytes.extend(request);
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn encoded_requests_parse_back(
        r in request(),
        junk in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let (greeting, request) = r.encode();
        let parse = match r.version() {
            Version::V5 => parse_request_v5,
            Version::V4 => parse_request_v4,
        };
        let want = Parsed { version: r.version(), target: r.target().clone(), len: request.len() };
        let mut with_junk = request.clone();
        with_junk.extend_from_slice(&junk);
        prop_assert_eq!(parse(&with_junk), Ok(Some(want.clone())));
        // Every strict prefix is incomplete, never an error.
        for i in 0..request.len() {
            prop_assert_eq!(parse(&request[..i]), Ok(None), "prefix {}", i);
        }
        if r.version() == Version::V5 {
            let mut g = greeting.clone();
            g.extend_from_slice(&request);
            prop_assert_eq!(parse_greeting(&g), Ok(Some(greeting.len())));
            for i in 0..greeting.len() {
                prop_assert_eq!(parse_greeting(&greeting[..i]), Ok(None), "prefix {}", i);
            }
        }
    }

    #[test]
    fn requests_fed_in_pieces_parse_the_same(
        r in request(),
        early in prop::collection::vec(any::<u8>(), 0..64),
        cuts in prop::collection::vec(0usize..600, 0..12),
    ) {
        let (mut data, request) = r.encode();
        let before = data.len();
        data.extend_from_slice(&request);
        data.extend_from_slice(&early);
        let (result, answers, unread) = drive(data, cuts);
        let (parsed, rest) = result.map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(&parsed.target, r.target());
        prop_assert_eq!(parsed.version, r.version());
        prop_assert_eq!(parsed.len, request.len());
        // The bytes after the request are kept: what was read, then what is still unread.
        let mut after = rest.clone();
        after.extend_from_slice(&unread);
        prop_assert_eq!(after, early);
        let want: &[u8] = if before > 0 { &[5, 0] } else { &[] };
        prop_assert_eq!(answers, want);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        data in prop::collection::vec(any::<u8>(), 0..64),
        cuts in prop::collection::vec(0usize..64, 0..4),
    ) {
        check_parsers(&data);
        let (result, answers, _) = drive(data.clone(), cuts);
        prop_assert!(answers.len() <= 12, "{:?}", answers);
        if let Ok((p, _)) = result {
            prop_assert!(p.len <= data.len());
        }
    }

    #[test]
    fn mutated_requests_never_panic(
        data in mutated(),
        cuts in prop::collection::vec(0usize..600, 0..4),
    ) {
        check_parsers(&data);
        for start in [0, 1.min(data.len()), 2.min(data.len()), 3.min(data.len())] {
            check_parsers(&data[start..]);
        }
        let (_, answers, _) = drive(data, cuts);
        prop_assert!(answers.len() <= 12, "{:?}", answers);
    }
}
