//! Property tests of the forward address parsers: nothing panics; what `Display` writes
//! parses back to the same address; whatever parses is written in a form that parses the
//! same again (so `warren check`'s names and messages name the address the daemon uses).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

use proptest::prelude::*;

use super::*;

fn expand(s: &str) -> PathBuf {
    match s.strip_prefix("~/") {
        Some(rest) => PathBuf::from("/home/u").join(rest),
        None => PathBuf::from(s),
    }
}

fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        any::<[u16; 8]>()
            .prop_map(|s| Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7])),
        Just(Ipv6Addr::LOCALHOST),
        Just(Ipv6Addr::UNSPECIFIED),
        any::<[u8; 4]>().prop_map(|o| Ipv4Addr::from(o).to_ipv6_mapped()),
    ]
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(o.into())),
        ipv6().prop_map(IpAddr::V6),
    ]
}

/// DNS-like names, IP literals, and odd but accepted host words.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,3}",
        ip().prop_map(|ip| ip.to_string()),
        "[!-.0-9;-~]{1,12}",
    ]
    .prop_filter("an all-digit host reads as a port", |h: &String| {
        !h.bytes().all(|b| b.is_ascii_digit())
    })
    .prop_filter("a path", |h| !h.starts_with('/') && !h.starts_with("~/"))
    .prop_filter("brackets are for IPv6", |h| !h.starts_with('['))
}

fn unix_path() -> impl Strategy<Value = PathBuf> {
    "/[a-zA-Z0-9._-]{1,10}(/[a-zA-Z0-9._-]{1,10}){0,3}".prop_map(PathBuf::from)
}

fn endpoint(min_port: u16) -> impl Strategy<Value = Endpoint> {
    prop_oneof![
        (host(), min_port..=u16::MAX).prop_map(|(host, port)| Endpoint::Tcp { host, port }),
        unix_path().prop_map(Endpoint::Unix),
    ]
}

fn bind() -> impl Strategy<Value = BindAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), 1..=u16::MAX)
            .prop_map(|(o, p)| BindAddr::Tcp(SocketAddr::new(IpAddr::V4(o.into()), p))),
        (ipv6(), 1..=u16::MAX)
            .prop_map(|(ip, p)| BindAddr::Tcp(SocketAddr::V6(SocketAddrV6::new(ip, p, 0, 0)))),
        unix_path().prop_map(BindAddr::Unix),
    ]
}

/// A valid address of any form with a few characters inserted, replaced or removed.
fn mutated() -> impl Strategy<Value = String> {
    let seed = prop_oneof![
        endpoint(0).prop_map(|e| e.to_string()),
        bind().prop_map(|b| b.to_string()),
        any::<u16>().prop_map(|p| p.to_string()),
        Just("~/w.sock".to_string()),
        Just("*:1080".to_string()),
        Just("localhost:22".to_string()),
    ];
    let edits = prop::collection::vec(
        (
            any::<prop::sample::Index>(),
            prop::sample::select(vec![
                '[', ']', ':', '/', '~', '0', '9', 'f', '.', '*', ' ', '%', 'é',
            ]),
            0u8..3,
        ),
        0..4,
    );
    (seed, edits).prop_map(|(seed, edits)| {
        let mut chars: Vec<char> = seed.chars().collect();
        for (at, c, op) in edits {
            let i = at.index(chars.len() + 1);
            match op {
                0 => chars.insert(i, c),
                1 if i < chars.len() => chars[i] = c,
                _ if i < chars.len() => drop(chars.remove(i)),
                _ => chars.push(c),
            }
        }
        chars.into_iter().collect()
    })
}

/// Parses `text` in every role and checks that each success reads back the same.
fn check_all_roles(text: &str) {
    if let Ok(b) = parse_bind(text, &expand) {
        assert_eq!(
            parse_bind(&b.to_string(), &expand),
            Ok(b.clone()),
            "{text:?}"
        );
    }
    if let Ok(e) = parse_egress(text, &expand) {
        assert_eq!(
            parse_egress(&e.to_string(), &expand),
            Ok(e.clone()),
            "{text:?}"
        );
        assert!(!matches!(e, Endpoint::Tcp { port: 0, .. }), "{text:?}");
    }
    if let Ok(e) = parse_remote_bind(text, &expand) {
        assert_eq!(
            parse_remote_bind(&e.to_string(), &expand),
            Ok(e),
            "{text:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        check_all_roles(&text);
    }

    #[test]
    fn mutated_addresses_never_panic_and_read_back(text in mutated()) {
        check_all_roles(&text);
    }

    #[test]
    fn egress_display_parses_back(e in endpoint(1)) {
        prop_assert_eq!(parse_egress(&e.to_string(), &expand), Ok(e.clone()));
        prop_assert_eq!(parse_remote_bind(&e.to_string(), &expand), Ok(e));
    }

    #[test]
    fn an_ingress_takes_port_zero_and_an_egress_does_not(host in host()) {
        let e = Endpoint::Tcp { host, port: 0 };
        prop_assert_eq!(parse_remote_bind(&e.to_string(), &expand), Ok(e.clone()));
        prop_assert!(parse_egress(&e.to_string(), &expand).is_err());
    }

    #[test]
    fn bind_display_parses_back(b in bind()) {
        prop_assert_eq!(parse_bind(&b.to_string(), &expand), Ok(b.clone()));
        let local = match &b {
            BindAddr::Tcp(a) => a.ip().is_loopback(),
            BindAddr::Unix(_) => true,
        };
        prop_assert_eq!(b.is_local_only(), local);
    }

    #[test]
    fn a_bare_port_means_loopback(port in 1..=u16::MAX, pad in "[ \t]{0,2}") {
        let text = format!("{pad}{port}{pad}");
        let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        prop_assert_eq!(parse_bind(&text, &expand), Ok(BindAddr::Tcp(v4)));
        prop_assert_eq!(
            parse_egress(&text, &expand),
            Ok(Endpoint::Tcp { host: "localhost".into(), port })
        );
        prop_assert_eq!(
            parse_remote_bind(&text, &expand),
            Ok(Endpoint::Tcp { host: "127.0.0.1".into(), port })
        );
    }

    #[test]
    fn ports_past_65535_are_refused(
        port in prop_oneof![Just(65_536u64), 65_536u64..=70_000, 65_536u64..=u64::MAX],
        host in host(),
    ) {
        let bare = port.to_string();
        prop_assert!(parse_remote_bind(&bare, &expand).is_err());
        let e = Endpoint::Tcp { host, port: 0 }.to_string();
        let text = format!("{}{port}", e.strip_suffix('0').unwrap_or(&e));
        prop_assert!(parse_egress(&text, &expand).is_err(), "{}", text);
    }
}
