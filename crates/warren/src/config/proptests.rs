//! Property tests of the whole configuration path (TOML, stage one, stage two): a config
//! generated from a model (hosts, defaults, jumps, forwards of every kind) validates to the
//! values the model holds; one bad value put into it is reported on its own line; arbitrary,
//! mutated and TOML-shaped text never panics, and every problem's line and column point
//! inside the text; with an ssh_config from the grammar, the same holds.

use proptest::prelude::*;

use super::proptest_model::{env, model};
use super::*;

/// Every problem is on a line of `src`, at a column within that line (or just past it).
fn check_positions(src: &str, result: &Result<Config, ConfigError>) -> Result<(), TestCaseError> {
    if let Err(ConfigError::Invalid { problems, .. }) = result {
        prop_assert!(!problems.is_empty());
        let lines: Vec<&str> = src.split('\n').collect();
        for p in problems {
            prop_assert!(
                (1..=lines.len()).contains(&p.line),
                "{} in {} lines",
                p,
                lines.len()
            );
            let width = lines[p.line - 1].chars().count();
            prop_assert!(
                (1..=width + 1).contains(&p.column),
                "{} in a line of {} characters",
                p,
                width
            );
        }
        let order: Vec<(usize, usize)> = problems.iter().map(|p| (p.line, p.column)).collect();
        prop_assert!(order.is_sorted(), "{:?}", order);
    }
    Ok(())
}

fn parse(src: &str) -> Result<Config, ConfigError> {
    Config::parse(
        src,
        Path::new("/etc/warren/w.toml"),
        &env(Path::new("/home/op")),
    )
}

/// TOML in the shape of a config: known sections and keys, some misspelt, values of any type.
fn toml_shaped() -> impl Strategy<Value = String> {
    let section = prop::sample::select(vec![
        "[daemon]",
        "[defaults]",
        "[hosts.a]",
        "[hosts.\"b.c\"]",
        "[[forward]]",
        "[hosts]",
        "[forward]",
        "[[hosts]]",
        "[deamon]",
        "",
    ]);
    let key = prop::sample::select(vec![
        "hostname",
        "user",
        "port",
        "identity_files",
        "known_hosts",
        "host_key_policy",
        "host_key_fingerprints",
        "jump",
        "proxy_command",
        "connect_timeout",
        "keepalive_interval",
        "keepalive_count_max",
        "reconnect_min",
        "reconnect_max",
        "agent",
        "name",
        "host",
        "type",
        "listen",
        "connect",
        "allow_public",
        "shutdown_grace",
        "ssh_config",
        "control_socket",
        "hostnme",
        "a",
        "forward",
    ]);
    let value = prop::sample::select(vec![
        "\"a\"",
        "\"\"",
        "\"1s\"",
        "\"90000000h\"",
        "\"local\"",
        "\"5432\"",
        "\"a:0\"",
        "1",
        "0",
        "-5",
        "99999999999",
        "true",
        "[\"a\"]",
        "[]",
        "[1]",
        "{ a = 1 }",
        "1.5",
        "1979-05-27",
        "\"[::1]:22\"",
        "\"accept-new\"",
        "\"SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU\"",
        "\"é\"",
    ]);
    let table = (section, prop::collection::vec((key, value), 0..5)).prop_map(|(s, kv)| {
        let body: Vec<String> = kv.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        format!("{s}\n{}", body.join("\n"))
    });
    prop::collection::vec(table, 0..6).prop_map(|t| t.join("\n"))
}

/// Bad values and where they must be reported.
const BAD: &[(&str, &str)] = &[
    ("port", "0"),
    ("port", "70000"),
    ("port", "\"22\""),
    ("keepalive_count_max", "0"),
    ("keepalive_count_max", "1001"),
    ("connect_timeout", "\"15\""),
    ("connect_timeout", "\"90000000h\""),
    ("connect_timeout", "\"0s\""),
    ("keepalive_interval", "\"1.5s\""),
    ("reconnect_min", "\"721h\""),
    ("host_key_policy", "\"off\""),
    ("host_key_policy", "\"sometimes\""),
    ("hostname", "\"a b\""),
    ("user", "\"\""),
    ("host_key_fingerprints", "[\"MD5:00\"]"),
    ("hostnme", "\"x\""),
    ("known_hosts", "[]"),
    ("jump", "[\"nosuch\"]"),
    ("proxy_command", "\" \""),
    ("agent", "\"yes\""),
    ("identity_files", "\"id\""),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn generated_configs_validate_to_their_model(m in model()) {
        let (src, _) = m.render(None);
        let c = parse(&src).map_err(|e| TestCaseError::fail(format!("{e}\n{src}")))?;
        prop_assert_eq!(c.forwards.len(), m.forwards.len());
        prop_assert_eq!(c.daemon.shutdown_grace, Duration::from_millis(m.grace.unwrap_or(10_000)));
        for h in &m.hosts {
            let got = &c.hosts[&h.name];
            prop_assert_eq!(&got.hostname, h.hostname.as_ref().unwrap_or(&h.name));
            prop_assert_eq!(got.port, h.port.unwrap_or(22));
            let user = h.user.clone().or(m.default_user.clone()).unwrap_or_else(|| "op".into());
            prop_assert_eq!(&got.user, &user);
            prop_assert_eq!(got.keepalive_count_max, h.count.or(m.default_count).unwrap_or(3));
            let ms = |v: Option<u64>, default| Duration::from_millis(v.unwrap_or(default));
            prop_assert_eq!(got.connect_timeout, ms(h.connect_timeout, 15_000));
            prop_assert_eq!(got.keepalive_interval, ms(h.keepalive, 15_000));
            prop_assert_eq!(got.reconnect_min, ms(h.reconnect.map(|r| r.0), 1_000));
            prop_assert_eq!(got.reconnect_max, ms(h.reconnect.map(|r| r.1), 60_000));
            prop_assert_eq!(got.host_key_fingerprints.len(), h.pins.len());
        }
        for f in &c.forwards {
            prop_assert!(c.hosts.contains_key(&f.host));
        }
    }

    #[test]
    fn a_bad_value_is_reported_on_its_line(
        m in model(),
        host in any::<prop::sample::Index>(),
        bad in prop::sample::select(BAD),
    ) {
        let at = host.index(m.hosts.len());
        let (src, line) = m.render(Some((at, bad.0, bad.1)));
        let result = parse(&src);
        check_positions(&src, &result)?;
        let Err(ConfigError::Invalid { problems, .. }) = result else {
            return Err(TestCaseError::fail(format!("accepted {} = {}:\n{src}", bad.0, bad.1)));
        };
        prop_assert!(
            problems.iter().any(|p| p.line == line),
            "{} = {} on line {}: {:?}\n{}", bad.0, bad.1, line, problems, src
        );
    }

    #[test]
    fn mutated_configs_never_panic_and_point_inside(
        m in model(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), prop::sample::select(vec![
            '"', '=', '[', ']', '\n', ' ', ',', '0', 'é', '#',
        ])), 1..4),
    ) {
        let (src, _) = m.render(None);
        let mut chars: Vec<char> = src.chars().collect();
        for (at, c) in edits {
            let i = at.index(chars.len());
            chars[i] = c;
        }
        let src: String = chars.into_iter().collect();
        check_positions(&src, &parse(&src))?;
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn toml_shaped_text_never_panics_and_points_inside(src in toml_shaped()) {
        check_positions(&src, &parse(&src))?;
    }

    #[test]
    fn arbitrary_text_never_panics_and_points_inside(src in any::<String>()) {
        check_positions(&src, &parse(&src))?;
    }
}

proptest! {
    // Each case writes an ssh_config and its includes (about 1 ms).
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn with_an_ssh_config_nothing_panics_and_problems_point_inside(
        mut m in model(),
        ssh in ssh_config::proptests::text(),
    ) {
        let home = ssh_config::proptests::home();
        ssh_config::proptests::write_private(&home.path().join(".ssh/config"), &ssh);
        m.grace = None;
        let (body, _) = m.render(None);
        let src = format!("[daemon]\nssh_config = true\n{body}");
        let result = Config::parse(&src, Path::new("/etc/warren/w.toml"), &env(home.path()));
        check_positions(&src, &result)?;
        if let Ok(c) = result {
            for h in c.hosts.values() {
                let (min, max) = (h.reconnect_min, h.reconnect_max);
                for d in [h.connect_timeout, h.keepalive_interval, min, max] {
                    prop_assert!(d <= MAX_DURATION && !d.is_zero());
                }
                prop_assert!(h.reconnect_min <= h.reconnect_max);
                prop_assert!((1..=1000).contains(&h.keepalive_count_max));
            }
        }
    }
}
