//! Property tests of the known_hosts reader: arbitrary and mutated lines never panic; lines
//! built from the grammar are used or skipped exactly as a reference reading says; what
//! `learn` writes for a host and port is found again for that host and port only;
//! `|1|` hashed names match the name they were made from; `*`, `?` and `!` patterns agree
//! with a plain recursive matcher.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use russh::keys::ssh_key::public::Ed25519PublicKey;
use sha1::Sha1;

use super::super::pattern::glob;
use super::*;

/// An Ed25519 key: any 32 bytes make one the parser takes.
fn key() -> impl Strategy<Value = PublicKey> {
    any::<[u8; 32]>().prop_map(|b| PublicKey::new(KeyData::Ed25519(Ed25519PublicKey(b)), ""))
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// `ssh-ed25519 AAAA...`, no comment.
fn openssh(key: &PublicKey) -> String {
    key.to_openssh().unwrap_or_else(|e| panic!("{e}"))
}

/// `*` any run of bytes, `?` one byte, everything else itself: small and obviously right.
fn reference_glob(p: &[u8], t: &[u8]) -> bool {
    match p.split_first() {
        None => t.is_empty(),
        Some((b'*', rest)) => (0..=t.len()).any(|i| reference_glob(rest, &t[i..])),
        Some((b'?', rest)) => !t.is_empty() && reference_glob(rest, &t[1..]),
        Some((c, rest)) => t.first() == Some(c) && reference_glob(rest, &t[1..]),
    }
}

/// A host field of patterns matches when a plain pattern does and no negated one does.
fn reference_field(patterns: &[String], name: &str) -> bool {
    let hit = |p: &str| reference_glob(p.to_ascii_lowercase().as_bytes(), name.as_bytes());
    let negated = patterns.iter().filter_map(|p| p.strip_prefix('!'));
    !negated.clone().any(hit)
        && patterns
            .iter()
            .filter(|p| !p.starts_with('!'))
            .any(|p| hit(p))
}

fn hashed(salt: &[u8], name: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(salt).unwrap_or_else(|e| panic!("{e}"));
    mac.update(name.as_bytes());
    let hash = mac.finalize().into_bytes();
    format!("|1|{}|{}", STANDARD.encode(salt), STANDARD.encode(hash))
}

/// Host names ssh would connect to: DNS names in any case, IPv4 and IPv6 literals. (Names
/// holding pattern characters are refused by config validation and by `learn` itself; see
/// `a_name_that_would_be_a_pattern_is_never_written`.)
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9][a-zA-Z0-9-]{0,10}(\\.[a-zA-Z0-9-]{1,10}){0,3}",
        any::<[u8; 4]>().prop_map(|o| std::net::Ipv4Addr::from(o).to_string()),
        any::<[u16; 8]>().prop_map(|s| std::net::Ipv6Addr::from(s).to_string()),
    ]
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![Just(22), 1..=u16::MAX]
}

/// Patterns over a small alphabet, so that they often match.
fn pattern() -> impl Strategy<Value = String> {
    "!?[aAb.*?\\[\\]:2]{0,6}"
}

/// Names over the same alphabet (lowercase, as lookup names are).
fn name() -> impl Strategy<Value = String> {
    "[ab.\\[\\]:2]{0,8}"
}

/// One line from the grammar, with what a reference reading expects of it: `None` for a line
/// the reader must skip, else the marker and the key it must hold.
fn line() -> impl Strategy<Value = (String, Option<(Marker, PublicKey)>)> {
    let marker = prop::sample::select(vec![
        ("", Some(Marker::Plain)),
        ("@cert-authority", Some(Marker::CertAuthority)),
        ("@revoked", Some(Marker::Revoked)),
        ("@bogus", None),
        ("@CERT-AUTHORITY", None),
    ]);
    let hosts = prop_oneof![
        3 => prop::collection::vec(pattern(), 1..4)
            .prop_map(|p| p.join(","))
            .prop_filter("an empty field is no field", |f| !f.is_empty())
            .prop_map(|f| (f, true)),
        1 => (any::<[u8; 20]>(), name()).prop_map(|(s, n)| (hashed(&s, &n), true)),
        1 => (any::<[u8; 12]>(), name()).prop_map(|(s, n)| (hashed(&s, &n), false)),
        1 => Just(("|1|!!!|AAAA".to_string(), false)),
        1 => Just(("|2|AAAA|AAAA".to_string(), false)),
    ];
    // 0: right type and key; 1: wrong type; 2: truncated blob; 3: no blob; 4: no key at all.
    let form = 0u8..5;
    let sep = "[ \t]{1,3}";
    let comment = prop::option::of("[ \t]{1,2}[ -~]{0,10}");
    (marker, hosts, key(), form, sep, "[ \t]{0,2}", comment).prop_map(
        |((marker, m), (hosts, hosts_ok), key, form, sep, lead, comment)| {
            let text = openssh(&key);
            let (kind, blob) = text.split_once(' ').unwrap_or_default();
            let key_part = match form {
                0 => format!("{kind}{sep}{blob}"),
                1 => format!("ssh-rsa{sep}{blob}"),
                2 => format!("{kind}{sep}{}", &blob[..20]),
                3 => kind.to_string(),
                _ => String::new(),
            };
            let marker_part = if marker.is_empty() {
                String::new()
            } else {
                format!("{marker}{sep}")
            };
            let mut line = format!("{lead}{marker_part}{hosts}{sep}{key_part}");
            if form < 3 {
                line.push_str(&comment.unwrap_or_default());
            }
            let usable = m.filter(|m| (hosts_ok || *m == Marker::Revoked) && form == 0);
            (line, usable.map(|m| (m, key)))
        },
    )
}

/// A line from the grammar with a few characters changed, inserted or removed.
fn mutated() -> impl Strategy<Value = String> {
    let edits = prop::collection::vec(
        (
            any::<prop::sample::Index>(),
            prop::sample::select(vec![' ', '\t', '|', ',', '!', '#', '@', '=', 'A', '*']),
            0u8..3,
        ),
        1..4,
    );
    (line(), edits).prop_map(|((line, _), edits)| {
        let mut chars: Vec<char> = line.chars().collect();
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_lines_never_panic(
        line in any::<String>(),
        host in any::<String>(),
        port in any::<u16>(),
    ) {
        let _ = known_hosts_line_matches(&line, &host, port);
        let mut known = KnownHosts::default();
        known.add_text(Path::new("k"), &line);
    }

    #[test]
    fn mutated_lines_never_panic(line in mutated(), name in name()) {
        if let Ok(Some((_, hosts, _))) = parse_line(&line) {
            let _ = hosts.matches(&name);
        }
    }

    #[test]
    fn grammar_lines_are_read_as_the_reference_says((line, want) in line()) {
        let got = parse_line(&line);
        match want {
            None => prop_assert!(got.is_err(), "{:?} gave {:?}", line, got),
            Some((marker, key)) => {
                let (m, _, k) = got.map_err(|e| TestCaseError::fail(format!("{line:?}: {e}")))?
                    .ok_or_else(|| TestCaseError::fail(format!("{line:?} read as blank")))?;
                prop_assert_eq!(m, marker);
                prop_assert_eq!(&k, key.key_data());
            }
        }
    }

    #[test]
    fn glob_agrees_with_the_reference(p in "[ab*?]{0,8}", t in "[ab]{0,10}") {
        prop_assert_eq!(glob(&p, &t), reference_glob(p.as_bytes(), t.as_bytes()));
    }

    #[test]
    fn pattern_lists_agree_with_the_reference(
        patterns in prop::collection::vec(pattern(), 1..5),
        name in name(),
    ) {
        let field = HostField::parse(&patterns.join(",")).map_err(TestCaseError::fail)?;
        prop_assert_eq!(field.matches(&name), reference_field(&patterns, &name), "{:?}", patterns);
    }

    #[test]
    fn hashed_names_match_the_name_they_were_made_from(
        salt in any::<[u8; 20]>(), host in host(), port in port(), other in host(), key in key(),
    ) {
        let name = lookup_name(&host, port);
        let field = HostField::parse(&hashed(&salt, &name)).map_err(TestCaseError::fail)?;
        prop_assert!(field.matches(&name));
        let other = lookup_name(&other, port);
        prop_assert_eq!(field.matches(&other), other == name);
        let line = format!("{} {}", hashed(&salt, &name), openssh(&key));
        prop_assert_eq!(known_hosts_line_matches(&line, &host, port), Ok(Some(true)));
    }

    #[test]
    fn a_plain_name_matches_itself_in_any_case(host in host(), port in port()) {
        let written = HostField::parse(&lookup_name(&host, port)).map_err(TestCaseError::fail)?;
        prop_assert!(written.matches(&lookup_name(&host.to_ascii_uppercase(), port)));
    }
}

proptest! {
    // Each case writes and syncs files (about 10 ms).
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn appended_entries_are_found_for_their_host_and_port_only(
        entries in prop::collection::vec((host(), port(), key()), 1..4),
        other in (host(), port()),
    ) {
        let dir = tempfile::tempdir().map_err(fail)?;
        let file = dir.path().join("ssh/known_hosts");
        let mut names = std::collections::HashSet::new();
        let entries: Vec<_> = entries
            .into_iter()
            .filter(|(h, p, _)| names.insert(lookup_name(h, *p)))
            .collect();
        for (i, (host, port, key)) in entries.iter().enumerate() {
            match learn(std::slice::from_ref(&file), host, *port, key.key_data()).map_err(fail)? {
                Learnt::Appended(at) => prop_assert_eq!(at.line, i + 1),
                other => prop_assert!(false, "{host}:{port} not appended: {other:?}"),
            }
        }
        let known = KnownHosts::load(std::slice::from_ref(&file)).map_err(fail)?;
        for (i, (host, port, key)) in entries.iter().enumerate() {
            let line = Location { file: file.clone(), line: i + 1 };
            let found = known.check_key(&lookup_name(host, *port), key.key_data());
            prop_assert_eq!(found, KeyStatus::Trusted(line));
        }
        let lookup = lookup_name(&other.0, other.1);
        if entries.iter().all(|(h, p, _)| lookup_name(h, *p) != lookup) {
            let (_, _, key) = &entries[0];
            let found = known.check_key(&lookup, key.key_data());
            prop_assert_eq!(found, KeyStatus::Unknown { other_keys: vec![] });
        }
    }
}
