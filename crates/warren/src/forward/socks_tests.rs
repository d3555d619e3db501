//! Unit tests of the SOCKS parsers and the handshake driver.

use super::*;
use tokio::io::duplex;

fn v5_connect_name(name: &str, port: u16) -> Vec<u8> {
    let mut r = vec![5, 1, 0, 3, name.len() as u8];
    r.extend_from_slice(name.as_bytes());
    r.extend_from_slice(&port.to_be_bytes());
    r
}

#[test]
fn greeting() {
    assert_eq!(parse_greeting(&[5]), Ok(None));
    assert_eq!(parse_greeting(&[5, 2, 2]), Ok(None));
    assert_eq!(parse_greeting(&[5, 2, 2, 0]), Ok(Some(4)));
    assert_eq!(
        parse_greeting(&[5, 1, 2]),
        Err(SocksError::NoAcceptableAuth)
    );
    assert!(matches!(
        parse_greeting(&[5, 0]),
        Err(SocksError::Malformed(_))
    ));
}

#[test]
fn v5_requests_of_every_address_type() {
    let ip4 = [5, 1, 0, 1, 10, 0, 0, 5, 0x15, 0x38];
    let p = parse_request_v5(&ip4).unwrap().unwrap();
    assert_eq!(p.target, Target::Addr("10.0.0.5:5432".parse().unwrap()));
    assert_eq!((p.len, p.version), (10, Version::V5));
    let mut ip6 = vec![5, 1, 0, 4];
    ip6.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
    ip6.extend_from_slice(&[0, 80]);
    let p = parse_request_v5(&ip6).unwrap().unwrap();
    assert_eq!(p.target, Target::Addr("[fd00::1]:80".parse().unwrap()));
    let name = v5_connect_name("db.internal", 5432);
    let p = parse_request_v5(&name).unwrap().unwrap();
    assert_eq!(p.target, Target::Name("db.internal".into(), 5432));
    assert_eq!(p.target.host_port(), ("db.internal".to_string(), 5432));
    // Every prefix is incomplete, never an error.
    for i in 0..name.len() {
        assert_eq!(parse_request_v5(&name[..i]), Ok(None), "prefix {i}");
    }
}

#[test]
fn v5_refusals() {
    assert_eq!(
        parse_request_v5(&[5, 2, 0, 1, 1, 2, 3, 4, 0, 80]),
        Err(SocksError::UnsupportedCommand(2))
    );
    assert_eq!(
        parse_request_v5(&[5, 3, 0, 1, 1, 2, 3, 4, 0, 80]),
        Err(SocksError::UnsupportedCommand(3))
    );
    assert_eq!(
        parse_request_v5(&[5, 1, 0, 9]),
        Err(SocksError::BadAddressType(9))
    );
    assert!(matches!(
        parse_request_v5(&[4, 1, 0, 1]),
        Err(SocksError::Malformed(_))
    ));
    assert!(matches!(
        parse_request_v5(&[5, 1, 0, 3, 0]),
        Err(SocksError::Malformed(_))
    ));
    assert!(matches!(
        parse_request_v5(&[5, 1, 0, 3, 2, b'a', 0, 0, 80]),
        Err(SocksError::Malformed(_))
    ));
}

#[test]
fn v4_and_v4a() {
    let v4 = [4, 1, 0, 80, 127, 0, 0, 1, b'u', 0];
    let p = parse_request_v4(&v4).unwrap().unwrap();
    assert_eq!(p.target, Target::Addr("127.0.0.1:80".parse().unwrap()));
    assert_eq!((p.len, p.version), (10, Version::V4));
    let mut v4a = vec![4, 1, 0x1f, 0x90, 0, 0, 0, 1, 0];
    v4a.extend_from_slice(b"example.org\0");
    let p = parse_request_v4(&v4a).unwrap().unwrap();
    assert_eq!(p.target, Target::Name("example.org".into(), 8080));
    assert_eq!(p.len, v4a.len());
    for i in 0..v4a.len() {
        assert_eq!(parse_request_v4(&v4a[..i]), Ok(None), "prefix {i}");
    }
    assert_eq!(
        parse_request_v4(&[4, 2, 0, 80, 1, 2, 3, 4, 0]),
        Err(SocksError::UnsupportedCommand(2))
    );
    let long_user = [&[4u8, 1, 0, 80, 1, 2, 3, 4][..], &[b'x'; 300]].concat();
    assert!(matches!(
        parse_request_v4(&long_user),
        Err(SocksError::Malformed(_))
    ));
}

#[test]
fn reply_codes() {
    assert_eq!(
        reply_bytes(Version::V5, Reply::Succeeded),
        [5, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(reply_bytes(Version::V5, Reply::ConnectionRefused)[1], 5);
    assert_eq!(reply_bytes(Version::V5, Reply::HostUnreachable)[1], 4);
    assert_eq!(reply_bytes(Version::V5, Reply::CommandNotSupported)[1], 7);
    assert_eq!(reply_bytes(Version::V4, Reply::Succeeded)[1], 0x5a);
    assert_eq!(reply_bytes(Version::V4, Reply::ConnectionRefused)[1], 0x5b);
}

async fn drive(input: &[u8]) -> (Result<(Parsed, Vec<u8>), SocksError>, Vec<u8>) {
    let (client, mut server) = duplex(256);
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let input = input.to_vec();
    // The writer may be cut off when the server gives up early; that is part of the test.
    let writer = tokio::spawn(async move {
        let _ = client_write.write_all(&input).await;
        let _ = client_write.shutdown().await;
    });
    let reader = tokio::spawn(async move {
        let mut answer = Vec::new();
        let _ = client_read.read_to_end(&mut answer).await;
        answer
    });
    let result = tokio::time::timeout(std::time::Duration::from_secs(5), handshake(&mut server))
        .await
        .expect("handshake finishes");
    drop(server);
    writer.abort();
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
        .await
        .expect("reader finishes")
        .unwrap();
    (result, answer)
}

#[tokio::test]
async fn handshake_v5_keeps_early_data() {
    let mut input = vec![5, 1, 0];
    input.extend(v5_connect_name("h", 1));
    input.extend_from_slice(b"GET /");
    let (r, answer) = drive(&input).await;
    let (p, rest) = r.unwrap();
    assert_eq!(p.target, Target::Name("h".into(), 1));
    assert_eq!(rest, b"GET /");
    assert_eq!(answer, [5, 0]);
}

#[tokio::test]
async fn handshake_answers_each_refusal() {
    let (r, answer) = drive(&[5, 1, 2]).await;
    assert_eq!(r.unwrap_err(), SocksError::NoAcceptableAuth);
    assert_eq!(answer, [5, 0xff]);
    let (r, answer) = drive(&[5, 1, 0, 5, 2, 0, 1, 1, 2, 3, 4, 0, 80]).await;
    assert_eq!(r.unwrap_err(), SocksError::UnsupportedCommand(2));
    assert_eq!(answer[..2], [5, 0]);
    assert_eq!(answer[2..4], [5, 7]);
    let (r, answer) = drive(&[4, 2, 0, 80, 1, 2, 3, 4, 0]).await;
    assert_eq!(r.unwrap_err(), SocksError::UnsupportedCommand(2));
    assert_eq!(answer, [0, 0x5b, 0, 0, 0, 0, 0, 0]);
    let (r, answer) = drive(b"GET / HTTP/1.1\r\n").await;
    assert_eq!(r.unwrap_err(), SocksError::BadVersion(b'G'));
    assert!(answer.is_empty());
    let (r, _) = drive(&[5, 1]).await;
    assert_eq!(r.unwrap_err(), SocksError::Truncated);
    let (r, _) = drive(&[]).await;
    assert_eq!(r.unwrap_err(), SocksError::Truncated);
}

#[tokio::test]
async fn handshake_refuses_endless_input() {
    let mut input = vec![4, 1, 0, 80, 0, 0, 0, 1];
    input.extend(std::iter::repeat_n(b'x', 5000));
    let (r, _) = drive(&input).await;
    assert!(matches!(
        r.unwrap_err(),
        SocksError::Malformed(_) | SocksError::TooLong
    ));
}
