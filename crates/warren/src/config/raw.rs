//! Stage one: the file as written. serde structs that mirror the TOML, unknown keys
//! rejected, every value kept with its span so that stage two can point at it.
//!
//! serde stops at the first error of a table; to report every problem in one run,
//! each table is deserialized on its own and a key that fails is reported and
//! removed before trying again.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, Deserializer};

use super::diag::Diagnostic;

/// A string value with its span.
pub type Str = Spanned<String>;
/// A list of strings, the list and each item with its span.
pub type StrList = Spanned<Vec<Spanned<String>>>;

/// `[daemon]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    pub control_socket: Option<Str>,
    pub control_socket_group: Option<Str>,
    pub shutdown_grace: Option<Str>,
    pub ssh_config: Option<Spanned<SshConfigSetting>>,
    pub metrics_listen: Option<Str>,
    pub metrics_allow_public: Option<Spanned<bool>>,
}

/// `ssh_config = true | false | "path"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshConfigSetting {
    Enabled(bool),
    Path(String),
}

impl<'de> Deserialize<'de> for SshConfigSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SshConfigSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false or the path of an OpenSSH client config file")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(SshConfigSetting::Enabled(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(SshConfigSetting::Path(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `[defaults]` and every `[hosts.NAME]`: one shape, so that both read the same.
/// The keys that only make sense per host are refused in `[defaults]` by stage two.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    pub hostname: Option<Str>,
    pub user: Option<Str>,
    pub port: Option<Spanned<i64>>,
    pub identity_files: Option<StrList>,
    pub certificate_files: Option<StrList>,
    pub passphrase_file: Option<Str>,
    pub agent: Option<Spanned<bool>>,
    pub password_file: Option<Str>,
    pub known_hosts: Option<StrList>,
    pub host_key_policy: Option<Str>,
    pub host_key_fingerprints: Option<StrList>,
    pub jump: Option<StrList>,
    pub proxy_command: Option<Str>,
    pub connect_timeout: Option<Str>,
    pub address_family: Option<Str>,
    pub keepalive_interval: Option<Str>,
    pub keepalive_count_max: Option<Spanned<i64>>,
    pub reconnect_min: Option<Str>,
    pub reconnect_max: Option<Str>,
    pub kex_algorithms: Option<Spanned<AlgoSpec>>,
    pub host_key_algorithms: Option<Spanned<AlgoSpec>>,
    pub ciphers: Option<Spanned<AlgoSpec>>,
    pub macs: Option<Spanned<AlgoSpec>>,
    pub on_demand: Option<Spanned<bool>>,
    pub idle_timeout: Option<Str>,
}

/// An algorithm list as written: `"a,b"`, `"+a"`, or `["a", "b"]` (joined with commas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlgoSpec(pub String);

impl<'de> Deserialize<'de> for AlgoSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = AlgoSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an algorithm list: a string such as \"+ssh-rsa\" or a list of names")
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(AlgoSpec(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut names: Vec<String> = Vec::new();
                while let Some(n) = seq.next_element::<String>()? {
                    names.push(n);
                }
                Ok(AlgoSpec(names.join(",")))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl RawHost {
    /// These settings with `defaults` filling what they leave out: the settings a host
    /// inherits (everything but `hostname`, `jump`, `proxy_command` and
    /// `host_key_fingerprints`, which are per host).
    pub fn with_defaults(&self, defaults: &RawHost) -> RawHost {
        macro_rules! inherit {
            ($($key:ident),*) => {
                RawHost {
                    $($key: self.$key.clone().or_else(|| defaults.$key.clone()),)*
                    hostname: self.hostname.clone(),
                    jump: self.jump.clone(),
                    proxy_command: self.proxy_command.clone(),
                    host_key_fingerprints: self.host_key_fingerprints.clone(),
                }
            };
        }
        inherit!(
            user,
            port,
            identity_files,
            certificate_files,
            passphrase_file,
            agent,
            password_file,
            known_hosts,
            host_key_policy,
            connect_timeout,
            address_family,
            keepalive_interval,
            keepalive_count_max,
            reconnect_min,
            reconnect_max,
            kex_algorithms,
            host_key_algorithms,
            ciphers,
            macs,
            on_demand,
            idle_timeout
        )
    }
}

/// One `[[forward]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForward {
    pub name: Option<Str>,
    pub host: Option<Str>,
    #[serde(rename = "type")]
    pub kind: Option<Str>,
    pub listen: Option<Str>,
    pub connect: Option<Str>,
    pub allow_public: Option<Spanned<bool>>,
    pub max_connections: Option<Spanned<i64>>,
    pub socket_mode: Option<Str>,
    pub probe_interval: Option<Str>,
}

/// The whole file as written.
#[derive(Debug, Default)]
pub struct RawConfig {
    pub daemon: RawDaemon,
    pub defaults: Option<Spanned<RawHost>>,
    /// Host name (with the span of its table name) and its settings, in file order.
    pub hosts: Vec<(Str, Spanned<RawHost>)>,
    pub forwards: Vec<Spanned<RawForward>>,
}

const TOP_LEVEL: &[&str] = &["daemon", "defaults", "hosts", "forward"];

/// Parses `src` into the raw shape, collecting every problem that stage one can see.
pub fn parse(src: &str, diags: &mut Vec<Diagnostic>) -> Option<RawConfig> {
    let (root, errors) = DeTable::parse_recoverable(src);
    if !errors.is_empty() {
        for e in errors {
            let span = e.span().unwrap_or(0..0);
            diags.push(Diagnostic::new(
                span,
                format!("invalid TOML: {}", e.message().trim()),
            ));
        }
        return None;
    }
    let mut raw = RawConfig::default();
    for (key, value) in root.into_inner() {
        let (key_span, value_span) = (key.span(), value.span());
        match key.get_ref().as_ref() {
            "daemon" => {
                if let Some(t) = table(value, "[daemon]", diags) {
                    raw.daemon = deserialize(t, "[daemon]", diags)
                        .map(Spanned::into_inner)
                        .unwrap_or_default();
                }
            }
            "defaults" => {
                if let Some(t) = table(value, "[defaults]", diags) {
                    raw.defaults = deserialize(t, "[defaults]", diags);
                }
            }
            "hosts" => {
                let Some(hosts) = table(value, "[hosts]", diags) else {
                    continue;
                };
                for (name, host) in hosts.into_inner() {
                    let section = format!("[hosts.{}]", name.get_ref());
                    let name = Spanned::new(name.span(), name.get_ref().to_string());
                    if let Some(t) = table(host, &section, diags)
                        && let Some(h) = deserialize(t, &section, diags)
                    {
                        raw.hosts.push((name, h));
                    }
                }
            }
            "forward" => match value.into_inner() {
                DeValue::Array(items) => {
                    for (i, item) in items.into_iter().enumerate() {
                        let section = format!("[[forward]] #{}", i + 1);
                        if let Some(t) = table(item, &section, diags)
                            && let Some(f) = deserialize(t, &section, diags)
                        {
                            raw.forwards.push(f);
                        }
                    }
                }
                _ => diags.push(Diagnostic::new(
                    value_span,
                    "`forward` must be an array of tables: write each one as [[forward]]",
                )),
            },
            other => diags.push(Diagnostic::new(
                key_span,
                unknown_key_message(other, "the top level", TOP_LEVEL),
            )),
        }
    }
    raw.hosts.sort_by_key(|(name, _)| name.span().start);
    raw.forwards.sort_by_key(|f| f.span().start);
    Some(raw)
}

fn table<'i>(
    value: Spanned<DeValue<'i>>,
    section: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Spanned<DeTable<'i>>> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Table(t) => Some(Spanned::new(span, t)),
        other => {
            diags.push(Diagnostic::new(
                span,
                format!("{section} must be a table, not a {}", other.type_str()),
            ));
            None
        }
    }
}

/// Deserializes one table, reporting every key that fails instead of only the first.
fn deserialize<T: DeserializeOwned>(
    mut t: Spanned<DeTable<'_>>,
    section: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Spanned<T>> {
    let span = t.span();
    // Each failed attempt removes one key, so this ends after at most len + 1 tries.
    for _ in 0..=t.get_ref().len() {
        match T::deserialize(Deserializer::from(t.clone())) {
            Ok(v) => return Some(Spanned::new(span, v)),
            Err(e) => {
                let err_span = e.span().unwrap_or(span.clone());
                let culprit = t
                    .get_ref()
                    .iter()
                    .find(|(k, v)| overlaps(&k.span(), &err_span) || overlaps(&v.span(), &err_span))
                    .map(|(k, _)| k.get_ref().to_string());
                let Some(key) = culprit else {
                    diags.push(Diagnostic::new(
                        err_span,
                        format!("{section}: {}", e.message()),
                    ));
                    return None;
                };
                diags.push(Diagnostic::new(
                    err_span,
                    explain(&key, section, e.message()),
                ));
                t.get_mut().remove(key.as_str());
            }
        }
    }
    None
}

fn overlaps(a: &std::ops::Range<usize>, b: &std::ops::Range<usize>) -> bool {
    a.start <= b.start && b.end <= a.end
}

/// Rewrites serde's messages into ones that name the key and the section.
fn explain(key: &str, section: &str, message: &str) -> String {
    if message.starts_with("unknown field") {
        let expected: Vec<&str> = message
            .split_once("expected")
            .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        return unknown_key_message(key, section, &expected);
    }
    let message = message
        .replace("expected i64", "expected an integer")
        .replace("expected a sequence", "expected a list like [\"...\"]");
    format!("`{key}` in {section}: {message}")
}

fn unknown_key_message(key: &str, section: &str, expected: &[&str]) -> String {
    let mut msg = format!("unknown key `{key}` in {section}");
    if let Some(best) = expected
        .iter()
        .filter(|cand| edit_distance(key, cand) <= 2.max(key.len() / 4))
        .min_by_key(|cand| edit_distance(key, cand))
    {
        msg.push_str(&format!("; did you mean `{best}`?"));
    } else if !expected.is_empty() {
        let list: Vec<String> = expected.iter().map(|k| format!("`{k}`")).collect();
        msg.push_str(&format!("; expected one of {}", list.join(", ")));
    }
    msg
}

/// Levenshtein distance, for "did you mean" hints.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(src: &str) -> (RawConfig, Vec<Diagnostic>) {
        let mut diags = Vec::new();
        let raw = parse(src, &mut diags).expect("toml parses");
        (raw, diags)
    }

    #[test]
    fn every_bad_key_of_one_table_is_reported() {
        let src = "[hosts.db]\nhostnme = \"x\"\nport = \"22\"\nuser = \"u\"\nagnet = true\n";
        let (raw, diags) = parse_ok(src);
        let msgs: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(diags.len(), 3, "{msgs:?}");
        assert!(
            msgs.iter().any(
                |m| m.contains("unknown key `hostnme` in [hosts.db]; did you mean `hostname`?")
            )
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("unknown key `agnet`") && m.contains("`agent`"))
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("`port` in [hosts.db]: invalid type: string"))
        );
        // The good key survives.
        assert_eq!(
            raw.hosts[0].1.get_ref().user.as_ref().unwrap().get_ref(),
            "u"
        );
        let hostnme = src.find("hostnme").unwrap();
        assert!(diags.iter().any(|d| d.span.start == hostnme));
    }

    #[test]
    fn unknown_top_level_and_wrong_shapes() {
        let (_, diags) = parse_ok("forward = 3\nhots = 1\n[daemon]\nshutdown_grace = \"1s\"\n");
        let msgs: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
        assert!(
            msgs.contains(&"unknown key `hots` in the top level; did you mean `hosts`?"),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.contains("array of tables")),
            "{msgs:?}"
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let mut diags = Vec::new();
        assert!(parse("[daemon\n", &mut diags).is_none());
        assert!(!diags.is_empty());
        assert!(diags[0].message.starts_with("invalid TOML"));
    }

    #[test]
    fn forwards_keep_file_order() {
        let src = "[[forward]]\nname = \"b\"\n[[forward]]\nname = \"a\"\n";
        let (raw, diags) = parse_ok(src);
        assert!(diags.is_empty());
        let names: Vec<&str> = raw
            .forwards
            .iter()
            .map(|f| f.get_ref().name.as_ref().unwrap().get_ref().as_str())
            .collect();
        assert_eq!(names, ["b", "a"]);
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("hostnme", "hostname"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
