//! A model of a valid configuration for the property tests: hosts with every setting,
//! defaults, jumps (to earlier hosts, ad hoc, or a proxy command) and forwards of every kind
//! on distinct ingresses; rendered as TOML, optionally with one bad value on a line of its own.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use proptest::prelude::*;

use super::{Env, format_duration};

pub(crate) fn env(home: &Path) -> Env {
    Env {
        home: Some(home.to_path_buf()),
        user: "op".into(),
        is_root: false,
        runtime_directory: Some("/run/warren".into()),
        xdg_runtime_dir: None,
        xdg_config_home: None,
    }
}

const MAX_MS: u64 = 30 * 24 * 3600 * 1000;

/// A TOML string holding `s`.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn ms(d: u64) -> String {
    quote(&format_duration(Duration::from_millis(d)))
}

/// One `[hosts.NAME]`.
#[derive(Debug, Clone)]
pub(crate) struct HostModel {
    pub(crate) name: String,
    pub(crate) hostname: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) user: Option<String>,
    pub(crate) policy: Option<&'static str>,
    pub(crate) pins: Vec<[u8; 32]>,
    pub(crate) connect_timeout: Option<u64>,
    pub(crate) keepalive: Option<u64>,
    pub(crate) count: Option<u32>,
    pub(crate) reconnect: Option<(u64, u64)>,
    /// Earlier hosts to jump through (indices taken modulo the position), an ad-hoc hop, or
    /// a proxy command.
    pub(crate) route: (u8, Vec<usize>),
}

/// One `[[forward]]`: kind 0 local, 1 remote, 2 dynamic; listen form; connect text.
#[derive(Debug, Clone)]
pub(crate) struct ForwardModel {
    pub(crate) host: usize,
    pub(crate) kind: u8,
    pub(crate) listen_form: u8,
    pub(crate) connect: &'static str,
    pub(crate) named: bool,
}

/// A whole valid configuration.
#[derive(Debug, Clone)]
pub(crate) struct Model {
    pub(crate) grace: Option<u64>,
    pub(crate) default_user: Option<String>,
    pub(crate) default_count: Option<u32>,
    pub(crate) hosts: Vec<HostModel>,
    pub(crate) forwards: Vec<ForwardModel>,
    pub(crate) port_base: u16,
}

fn duration_ms() -> impl Strategy<Value = u64> {
    prop_oneof![1u64..=120_000, 1..=MAX_MS, Just(MAX_MS)]
}

fn host_model(name: String) -> impl Strategy<Value = HostModel> {
    let hostname = prop::option::of(prop_oneof![
        "[a-z][a-z0-9-]{0,8}(\\.[a-z0-9-]{1,8}){0,2}",
        any::<[u8; 4]>().prop_map(|o| std::net::Ipv4Addr::from(o).to_string()),
        Just("fd00::1".to_string()),
    ]);
    let timing = (
        prop::option::of(duration_ms()),
        prop::option::of(duration_ms()),
        prop::option::of(1u32..=1000),
        prop::option::of((duration_ms(), duration_ms()).prop_map(|(a, b)| (a.min(b), a.max(b)))),
    );
    let who = (
        hostname,
        prop::option::of(1u16..=u16::MAX),
        prop::option::of("[a-z_][a-z0-9_-]{0,8}"),
        prop::option::of(prop::sample::select(vec!["strict", "accept-new"])),
        prop::collection::vec(any::<[u8; 32]>(), 0..3),
    );
    let route = (0u8..4, prop::collection::vec(any::<usize>(), 1..3));
    (who, timing, route).prop_map(
        move |((hostname, port, user, policy, pins), (ct, ka, count, rc), route)| HostModel {
            name: name.clone(),
            hostname,
            port,
            user,
            policy,
            pins,
            connect_timeout: ct,
            keepalive: ka,
            count,
            reconnect: rc,
            route,
        },
    )
}

pub(crate) fn model() -> impl Strategy<Value = Model> {
    let names = prop::collection::btree_set(
        prop_oneof!["[a-z][a-z0-9_-]{0,6}", "[a-z]{1,3}\\.[a-z]{1,3}"],
        1..5,
    );
    let hosts = names.prop_flat_map(|names| names.into_iter().map(host_model).collect::<Vec<_>>());
    let connect = prop::sample::select(vec![
        "db.internal:5432",
        "[fd00::1]:22",
        "5432",
        "/var/run/pg.sock",
    ]);
    let forward = (any::<usize>(), 0u8..3, 0u8..4, connect, any::<bool>()).prop_map(
        |(host, kind, listen_form, connect, named)| ForwardModel {
            host,
            kind,
            listen_form,
            connect,
            named,
        },
    );
    (
        prop::option::of(0..=MAX_MS),
        prop::option::of("[a-z]{1,8}"),
        prop::option::of(1u32..=1000),
        hosts,
        prop::collection::vec(forward, 0..6),
        1u16..60_000,
    )
        .prop_map(
            |(grace, default_user, default_count, hosts, mut forwards, port_base)| {
                for f in &mut forwards {
                    f.host %= hosts.len();
                }
                Model {
                    grace,
                    default_user,
                    default_count,
                    hosts,
                    forwards,
                    port_base,
                }
            },
        )
}

impl HostModel {
    /// `key = value` lines of this host.
    fn lines(&self, index: usize, all: &[HostModel]) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(h) = &self.hostname {
            out.push(("hostname", quote(h)));
        }
        if let Some(p) = self.port {
            out.push(("port", p.to_string()));
        }
        if let Some(u) = &self.user {
            out.push(("user", quote(u)));
        }
        if let Some(p) = self.policy {
            out.push(("host_key_policy", quote(p)));
        }
        if !self.pins.is_empty() {
            let pins: Vec<String> = self
                .pins
                .iter()
                .map(|d| quote(&format!("SHA256:{}", STANDARD_NO_PAD.encode(d))))
                .collect();
            out.push(("host_key_fingerprints", format!("[{}]", pins.join(", "))));
        }
        for (key, v) in [
            ("connect_timeout", self.connect_timeout),
            ("keepalive_interval", self.keepalive),
        ] {
            if let Some(v) = v {
                out.push((key, ms(v)));
            }
        }
        if let Some(c) = self.count {
            out.push(("keepalive_count_max", c.to_string()));
        }
        if let Some((min, max)) = self.reconnect {
            out.push(("reconnect_min", ms(min)));
            out.push(("reconnect_max", ms(max)));
        }
        match self.route.0 {
            1 if index > 0 => {
                let hops: Vec<String> = self
                    .route
                    .1
                    .iter()
                    .map(|i| quote(&all[i % index].name))
                    .collect();
                out.push(("jump", format!("[{}]", hops.join(", "))));
            }
            2 => out.push(("jump", "[\"tunnel@10.9.8.7:2222\"]".into())),
            3 => out.push(("proxy_command", quote("nc %h %p"))),
            _ => {}
        }
        out
    }
}

impl Model {
    /// The file, with `bad = (host, key, value)` replacing or adding one line; returns the
    /// text and the 1-based line of the bad value.
    pub(crate) fn render(&self, bad: Option<(usize, &str, &str)>) -> (String, usize) {
        let mut out = String::new();
        let mut bad_line = 0;
        if let Some(g) = self.grace {
            let _ = writeln!(out, "[daemon]\nshutdown_grace = {}\n", ms(g));
        }
        if self.default_user.is_some() || self.default_count.is_some() {
            out.push_str("[defaults]\n");
            if let Some(u) = &self.default_user {
                let _ = writeln!(out, "user = {}", quote(u));
            }
            if let Some(c) = self.default_count {
                let _ = writeln!(out, "keepalive_count_max = {c}");
            }
        }
        for (i, h) in self.hosts.iter().enumerate() {
            let _ = writeln!(out, "\n[hosts.{}]", quote(&h.name));
            let mut lines = h.lines(i, &self.hosts);
            if let Some((_, key, value)) = bad.filter(|b| b.0 == i) {
                // Keys set together go together: both reconnect bounds, both routes.
                fn group(k: &str) -> &str {
                    match k {
                        "reconnect_min" | "reconnect_max" => "reconnect",
                        "jump" | "proxy_command" => "route",
                        other => other,
                    }
                }
                lines.retain(|(k, _)| group(k) != group(key));
                bad_line = out.lines().count() + 1;
                let _ = writeln!(out, "{key} = {value}");
            }
            for (k, v) in lines {
                let _ = writeln!(out, "{k} = {v}");
            }
        }
        for (i, f) in self.forwards.iter().enumerate() {
            let host = &self.hosts[f.host].name;
            let kind = ["local", "remote", "dynamic"][usize::from(f.kind)];
            let port = u32::from(self.port_base) + u32::try_from(i).unwrap_or(0);
            let listen = match (f.kind, f.listen_form) {
                (_, 0) => port.to_string(),
                (1, 1) => "0".into(),
                (1, _) => format!("127.0.0.1:{port}"),
                (_, 1) => format!("[::1]:{port}"),
                (_, 2) => format!("0.0.0.0:{port}"),
                _ => format!("/run/w/{i}.sock"),
            };
            let _ = writeln!(
                out,
                "\n[[forward]]\nhost = {}\ntype = {}\nlisten = {}",
                quote(host),
                quote(kind),
                quote(&listen)
            );
            if f.kind != 2 {
                let _ = writeln!(out, "connect = {}", quote(f.connect));
            }
            if f.kind != 1 && f.listen_form == 2 {
                out.push_str("allow_public = true\n");
            }
            if f.named || (f.kind == 1 && f.listen_form == 1) {
                let _ = writeln!(out, "name = \"f{i}\"");
            }
        }
        (out, bad_line)
    }
}
