//! Property tests of the ssh_config reader: arbitrary text and files built from the grammar
//! (every keyword warren reads, valid and wrong values, includes, mutations) never panic,
//! every error names a line of its file, and resolved values stay in range; `Host` and
//! `Match` patterns agree with a plain recursive matcher; quoting round-trips through the
//! lexer; times read like OpenSSH's `convtime` up to 30 days.

use proptest::prelude::*;

use super::directive::{self, Directive, Setting};
use super::lex::{Line, split_args, split_line};
use super::pattern::wildcard;
use super::*;
use crate::config::MAX_DURATION;

/// `*` any run of characters, `?` one: small and obviously right.
fn reference_wildcard(p: &[char], t: &[char]) -> bool {
    match p.split_first() {
        None => t.is_empty(),
        Some(('*', rest)) => (0..=t.len()).any(|i| reference_wildcard(rest, &t[i..])),
        Some(('?', rest)) => !t.is_empty() && reference_wildcard(rest, &t[1..]),
        Some((c, rest)) => t.first() == Some(c) && reference_wildcard(rest, &t[1..]),
    }
}

/// A pattern list matches when some plain pattern matches and no negated one does; names
/// compare without regard to ASCII case.
fn reference_list(patterns: &[String], host: &str) -> bool {
    let host: Vec<char> = host.to_ascii_lowercase().chars().collect();
    let hit = |p: &str| {
        let p: Vec<char> = p.to_ascii_lowercase().chars().collect();
        reference_wildcard(&p, &host)
    };
    let negated = patterns.iter().filter_map(|p| p.strip_prefix('!'));
    !negated.clone().any(hit)
        && patterns
            .iter()
            .filter(|p| !p.starts_with('!'))
            .any(|p| hit(p))
}

fn pattern() -> impl Strategy<Value = String> {
    "!?[aAbé.*?-]{0,5}".prop_filter("an empty argument", |p| !p.is_empty())
}

fn host() -> impl Strategy<Value = String> {
    "[aAbé.-]{1,6}"
}

/// One time part: digits and an optional unit (only the last part may lack one, or its
/// digits would run into the next part's).
fn time() -> impl Strategy<Value = (String, u128)> {
    let number = prop_oneof![4 => 0u64..100, 1 => 0u64..10_000_000, 1 => any::<u64>()];
    let unit = prop::sample::select(vec![
        ("s", 1u128),
        ("S", 1),
        ("m", 60),
        ("M", 60),
        ("h", 3600),
        ("H", 3600),
        ("d", 86_400),
        ("D", 86_400),
        ("w", 604_800),
        ("W", 604_800),
    ]);
    let parts = prop::collection::vec((number.clone(), unit), 0..4);
    (parts, prop::option::of(number))
        .prop_filter("empty", |(p, last)| !p.is_empty() || last.is_some())
        .prop_map(|(parts, last)| {
            let mut text = String::new();
            let mut secs = 0u128;
            for (n, (u, size)) in parts {
                text.push_str(&format!("{n}{u}"));
                secs += u128::from(n) * size;
            }
            if let Some(n) = last {
                text.push_str(&n.to_string());
                secs += u128::from(n);
            }
            (text, secs)
        })
}

/// A value for `keyword`: right or wrong, as files hold them.
fn value(keyword: &'static str) -> BoxedStrategy<String> {
    let pick = |v: &[&str]| {
        prop::sample::select(v.iter().map(|s| (*s).to_string()).collect::<Vec<_>>()).boxed()
    };
    match keyword {
        "Host" => prop::collection::vec(pattern(), 1..4)
            .prop_map(|p| p.join(" "))
            .boxed(),
        "Match" => pick(&[
            "all",
            "host a*",
            "originalhost b,!c",
            "!host x",
            "exec true",
            "user root",
            "canonical",
            "final all",
            "all host x",
            "bogus",
            "host",
            "Host A*,!b final",
        ]),
        "HostName" => pick(&[
            "%h.example.com",
            "10.0.0.1",
            "a%%b",
            "%x",
            "x%",
            "db",
            "\"q d\"",
        ]),
        "User" => pick(&["u", "root", "\"a b\"", "\"\"", "x y"]),
        "Port" => pick(&["22", "0", "65535", "65536", "-1", "x", "2222", "+2"]),
        "IdentityFile" | "CertificateFile" | "identityfile2" => pick(&[
            "~/.ssh/id_%h",
            "%d/k_%p",
            "/abs/%r",
            "rel",
            "~",
            "%u/%%",
            "\"x",
        ]),
        "ProxyJump" => pick(&["a,b", "u@h:2", "none", "a,,b", "a b", "x # c", "=j"]),
        "ProxyCommand" => pick(&[
            "nc %h %p",
            "none",
            "=",
            "\"quoted cmd\"",
            "=  ssh -W %h:%p j",
        ]),
        "UserKnownHostsFile" => pick(&["none", "~/kh1 ~/kh2", "none x", "%d/kh_%h"]),
        "StrictHostKeyChecking" => pick(&["yes", "no", "accept-new", "ask", "maybe", "OFF"]),
        "ServerAliveInterval" | "ConnectTimeout" => prop_oneof![
            4 => time().prop_map(|(t, _)| t),
            1 => pick(&["none", "5x", "m", "-1", "1 2"]),
        ]
        .boxed(),
        "ServerAliveCountMax" => pick(&["3", "0", "4294967295", "4294967296", "-1", "x"]),
        "Include" => pick(&[
            "inc_a",
            "inc_*",
            "missing",
            "~/.ssh/inc_b",
            "%d/x",
            "~bob/x",
            "loop",
            "inc_a inc_b",
        ]),
        _ => pick(&["yes", "", "a b"]),
    }
}

/// One line from the grammar, in any keyword case, with any separator and maybe a comment.
fn line() -> impl Strategy<Value = String> {
    let keyword = prop::sample::select(vec![
        "Host",
        "Match",
        "HostName",
        "User",
        "Port",
        "IdentityFile",
        "CertificateFile",
        "ProxyJump",
        "ProxyCommand",
        "UserKnownHostsFile",
        "StrictHostKeyChecking",
        "ServerAliveInterval",
        "ServerAliveCountMax",
        "ConnectTimeout",
        "Include",
        "identityfile2",
        "Compression",
    ]);
    let sep = prop::sample::select(vec![" ", "=", " = ", "\t", "  =", "=="]);
    let comment = prop::sample::select(vec!["", "", " # note", "#", "\r"]);
    (keyword, any::<bool>(), sep, "[ \t]{0,2}", comment).prop_flat_map(
        |(k, upper, sep, lead, comment)| {
            value(k).prop_map(move |v| {
                let k = if upper {
                    k.to_ascii_uppercase()
                } else {
                    k.to_string()
                };
                format!("{lead}{k}{sep}{v}{comment}")
            })
        },
    )
}

/// A file of grammar lines, some with a few characters changed.
pub(in crate::config) fn text() -> impl Strategy<Value = String> {
    let mutation = (
        any::<prop::sample::Index>(),
        prop::sample::select(vec!['"', '=', ' ', '#', '%', '!', ',', '*', '\\']),
    );
    let mutated = (line(), prop::collection::vec(mutation, 0..2)).prop_map(|(l, edits)| {
        let mut chars: Vec<char> = l.chars().collect();
        for (at, c) in edits {
            chars.insert(at.index(chars.len() + 1), c);
        }
        chars.into_iter().collect::<String>()
    });
    prop::collection::vec(mutated, 0..12).prop_map(|lines| lines.join("\n"))
}

fn fail(e: SshConfigError) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// A home directory whose `.ssh/` holds the files the `Include` values above name.
pub(in crate::config) fn home() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ssh = dir.path().join(".ssh");
    for (name, text) in [
        ("inc_a", "Host a*\n  Port 2222\n  User ia\n"),
        (
            "inc_b",
            "IdentityFile ~/.ssh/ib\nInclude inc_a\nHost *\n  ConnectTimeout 5\n",
        ),
        ("loop", "Include loop\n"),
    ] {
        std::fs::create_dir_all(&ssh).unwrap_or_else(|e| panic!("{e}"));
        write_private(&ssh.join(name), text);
    }
    dir
}

/// Writes `text` to `path` with mode 0600, which the reader requires of a config file.
pub(in crate::config) fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
    let private = std::fs::Permissions::from_mode(0o600);
    std::fs::set_permissions(path, private).unwrap_or_else(|e| panic!("{e}"));
}

/// Parses `text` as `~/.ssh/config`; checks the error's line, or the values resolved.
fn check(text: &str, home: &Path, hosts: &[String]) -> Result<(), TestCaseError> {
    let file = home.join(".ssh/config");
    match SshConfig::parse(text, &file, Some(home)) {
        Err(SshConfigError::Invalid {
            file: at,
            line,
            message,
        }) => {
            let source = if at == file {
                text.to_string()
            } else {
                std::fs::read_to_string(&at).unwrap_or_default()
            };
            let lines = source.lines().count();
            prop_assert!(
                (1..=lines).contains(&line),
                "{}:{} of {} lines: {}",
                at.display(),
                line,
                lines,
                message
            );
        }
        Err(e) => return Err(TestCaseError::fail(format!("unexpected {e}"))),
        Ok(config) => {
            for host in hosts {
                let r = config.resolve(host);
                prop_assert_ne!(r.port, Some(0));
                for d in [r.server_alive_interval, r.connect_timeout]
                    .into_iter()
                    .flatten()
                {
                    prop_assert!(d <= MAX_DURATION);
                    // What fill_from_ssh_config hands to the TOML side reads back the same.
                    prop_assert_eq!(
                        crate::config::parse_duration(&crate::config::format_duration(d)),
                        Ok(d)
                    );
                }
                let mut ids = r.identity_files.clone();
                ids.dedup();
                prop_assert_eq!(ids.len(), r.identity_files.len());
                if let Some(hops) = &r.proxy_jump {
                    prop_assert!(
                        hops.iter()
                            .all(|h| !h.is_empty() && !h.contains(char::is_whitespace))
                    );
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>(), host in any::<String>()) {
        let home = Path::new("/nonexistent-home");
        let file = Path::new("/nonexistent-home/config");
        if let Ok(config) = SshConfig::parse(&text, file, Some(home)) {
            let _ = config.resolve(&host);
        }
    }

    #[test]
    fn arbitrary_lines_never_panic(text in any::<String>()) {
        if let Some(line) = split_line(&text) {
            prop_assert!(!line.keyword.contains(|c: char| c == '=' || c.is_ascii_whitespace()));
            prop_assert_eq!(line.rest, line.rest.trim_matches([' ', '\t', '\r', '\n', '\x0c']));
            let parsed = directive::parse(&line);
            // A line that starts with `=` has an empty keyword, which nothing reads.
            if line.keyword.is_empty() {
                prop_assert_eq!(parsed, Ok(Directive::Ignored));
            }
        }
    }

    #[test]
    fn wildcard_agrees_with_the_reference(p in "[abé*?]{0,8}", t in "[abé]{0,10}") {
        let (pc, tc): (Vec<char>, Vec<char>) = (p.chars().collect(), t.chars().collect());
        prop_assert_eq!(wildcard(&p, &t), reference_wildcard(&pc, &tc));
    }

    #[test]
    fn host_blocks_match_like_the_reference(
        patterns in prop::collection::vec(pattern(), 1..5),
        host in host(),
    ) {
        let text = format!("Host {}\n  Port 1234\n", patterns.join(" "));
        let config = SshConfig::parse(&text, Path::new("/x/config"), None).map_err(fail)?;
        let want = reference_list(&patterns, &host);
        prop_assert_eq!(config.resolve(&host).port == Some(1234), want, "{}", text);
    }

    #[test]
    fn match_lists_match_like_the_reference(
        patterns in prop::collection::vec(pattern(), 1..5),
        host in host(),
        attribute in prop::sample::select(vec!["originalhost", "host", "Host"]),
        negated in any::<bool>(),
    ) {
        let bang = if negated { "!" } else { "" };
        let text = format!("Match {bang}{attribute} {}\n  Port 1234\n", patterns.join(","));
        let config = SshConfig::parse(&text, Path::new("/x/config"), None).map_err(fail)?;
        let want = reference_list(&patterns, &host) != negated;
        prop_assert_eq!(config.resolve(&host).port == Some(1234), want, "{}", text);
    }

    #[test]
    fn quoted_arguments_round_trip(
        args in prop::collection::vec(any::<String>(), 0..5),
        sep in "[ \t]{1,3}",
    ) {
        let quoted: Vec<String> = args
            .iter()
            .map(|a| format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        prop_assert_eq!(split_args(&quoted.join(&sep)), Ok(args));
    }

    #[test]
    fn times_read_like_convtime_up_to_30_days(
        (text, secs) in time(),
        keyword in prop::sample::select(vec!["ConnectTimeout", "ServerAliveInterval"]),
    ) {
        let got = directive::parse(&Line { keyword, rest: &text });
        if secs <= u128::from(MAX_DURATION.as_secs()) {
            let d = Duration::from_secs(u64::try_from(secs).unwrap_or(u64::MAX));
            let want = match keyword {
                "ConnectTimeout" => Setting::ConnectTimeout(d),
                _ => Setting::ServerAliveInterval(d),
            };
            prop_assert_eq!(got, Ok(Directive::Set(want)), "{}", text);
        } else {
            prop_assert!(got.is_err(), "{} gave {:?}", text, got);
        }
    }
}

proptest! {
    // Each case makes a home directory with the included files (about 0.3 ms).
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn grammar_files_never_panic_and_errors_name_a_line(
        text in text(),
        hosts in prop::collection::vec(host(), 1..3),
    ) {
        let home = home();
        check(&text, home.path(), &hosts)?;
    }
}
