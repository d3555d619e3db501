//! Host settings: every `[hosts.NAME]` with `[defaults]` merged into it once, checked and
//! typed; the names of host tables; the keys only a host may set.

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::Ctx;
use crate::config::algorithms::{Algorithms, Kind};
use crate::config::names;
use crate::config::raw::{RawHost, Str, StrList};
use crate::config::{AddressFamily, HostConfig, HostKeyPolicy, Route};

const DEFAULT_IDENTITY_FILES: &[&str] = &["~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa"];
const DEFAULT_KNOWN_HOSTS: &[&str] = &["~/.ssh/known_hosts", "/etc/ssh/ssh_known_hosts"];

pub(super) fn refuse_host_only_keys(d: &RawHost, cx: &mut Ctx<'_>) {
    let per_host = [
        ("hostname", d.hostname.as_ref().map(Spanned::span)),
        ("jump", d.jump.as_ref().map(Spanned::span)),
        ("proxy_command", d.proxy_command.as_ref().map(Spanned::span)),
        (
            "host_key_fingerprints",
            d.host_key_fingerprints.as_ref().map(Spanned::span),
        ),
    ];
    for (key, span) in per_host {
        if let Some(span) = span {
            cx.err(
                span,
                format!("`{key}` is set per host in [hosts.NAME], not in [defaults]"),
            );
        }
    }
}

/// A `[hosts.NAME]` name: it is the host name when `hostname` is not set, and `%n` of a
/// ProxyCommand, so it follows the host name rule, and it may not look like an ad-hoc hop.
pub(super) fn check_host_name(name: &Str, cx: &mut Ctx<'_>) {
    let n = name.get_ref();
    if n.chars().any(|c| "@:/".contains(c)) {
        cx.err(
            name.span(),
            format!("host name `{n}` may not contain '@', ':' or '/'"),
        );
    } else if let Err(e) = names::check_hostname(n) {
        cx.err(name.span(), format!("[hosts.{n}]: {e}"));
    }
}

/// The settings of host `name`: `own` (its table, or what stands for it) with `defaults`
/// merged in, checked and typed; `None` when one of them is wrong (each is reported).
pub(super) fn host_config(
    name: &str,
    own: &RawHost,
    defaults: &RawHost,
    route: Route,
    cx: &mut Ctx<'_>,
) -> Option<HostConfig> {
    let h = &own.with_defaults(defaults);
    let mut ok = true;
    // Without `hostname` the table's name is the host name; `check_host_name` checked it.
    let hostname = match &h.hostname {
        None => name.to_string(),
        Some(v) => match names::check_hostname(v.get_ref().trim()) {
            Ok(hostname) => hostname.to_string(),
            Err(e) => {
                cx.err(v.span(), format!("`hostname`: {e}"));
                ok = false;
                String::new()
            }
        },
    };
    let user = match h.user.as_ref() {
        Some(v) => match names::check_user(v.get_ref()) {
            Ok(()) => v.get_ref().clone(),
            Err(e) => {
                cx.err(v.span(), format!("`user`: {e}"));
                ok = false;
                String::new()
            }
        },
        None => cx.env.user.clone(),
    };
    let port = match h.port.as_ref() {
        Some(v) if !(1..=65535).contains(v.get_ref()) => {
            cx.err(
                v.span(),
                format!("`port` {} is outside 1-65535", v.get_ref()),
            );
            ok = false;
            22
        }
        Some(v) => u16::try_from(*v.get_ref()).unwrap_or(22),
        None => 22,
    };
    let identity = h.identity_files.as_ref();
    let identity_files = paths(identity, DEFAULT_IDENTITY_FILES, cx);
    let certificate_files = paths(h.certificate_files.as_ref(), &[], cx);
    let known_hosts = paths(h.known_hosts.as_ref(), DEFAULT_KNOWN_HOSTS, cx);
    if known_hosts.is_empty()
        && let Some(v) = h.known_hosts.as_ref()
    {
        cx.err(v.span(), "`known_hosts` needs at least one file");
        ok = false;
    }
    let file = |v: Option<&Str>, cx: &Ctx<'_>| v.map(|s| cx.path(s.get_ref()));
    let passphrase_file = file(h.passphrase_file.as_ref(), cx);
    let password_file = file(h.password_file.as_ref(), cx);
    let agent = h.agent.as_ref().is_none_or(|v| *v.get_ref());

    let host_key_policy = match h.host_key_policy.as_ref() {
        None => HostKeyPolicy::Strict,
        Some(v) => match v.get_ref().as_str() {
            "strict" => HostKeyPolicy::Strict,
            "accept-new" => HostKeyPolicy::AcceptNew,
            "off" | "no" | "none" | "ignore" | "insecure" => {
                cx.err(v.span(), format!("`host_key_policy` \"{}\" does not exist: warren always verifies host keys; use \"strict\" or \"accept-new\" (trust a host on first use)", v.get_ref()));
                ok = false;
                HostKeyPolicy::Strict
            }
            other => {
                cx.err(v.span(), format!("`host_key_policy` \"{other}\" is not valid; expected \"strict\" or \"accept-new\""));
                ok = false;
                HostKeyPolicy::Strict
            }
        },
    };
    let address_family = match h.address_family.as_ref() {
        None => AddressFamily::Any,
        Some(v) => match v.get_ref().as_str() {
            "any" => AddressFamily::Any,
            "inet" => AddressFamily::Inet,
            "inet6" => AddressFamily::Inet6,
            other => {
                cx.err(
                    v.span(),
                    format!("`address_family` \"{other}\" is not valid; expected \"any\", \"inet\" or \"inet6\""),
                );
                ok = false;
                AddressFamily::Any
            }
        },
    };
    let mut host_key_fingerprints = Vec::new();
    for fp in h
        .host_key_fingerprints
        .as_ref()
        .map(|l| l.get_ref().as_slice())
        .unwrap_or_default()
    {
        match check_fingerprint(fp.get_ref()) {
            Ok(f) => host_key_fingerprints.push(f),
            Err(e) => {
                cx.err(fp.span(), e);
                ok = false;
            }
        }
    }

    let mut dur = |key: &str, v: Option<&Str>, default: u64, cx: &mut Ctx<'_>| match v {
        Some(v) => cx.duration(v, key, false).unwrap_or_else(|| {
            ok = false;
            Duration::from_secs(default)
        }),
        None => Duration::from_secs(default),
    };
    let connect_timeout = dur("connect_timeout", h.connect_timeout.as_ref(), 15, cx);
    let keepalive_interval = dur("keepalive_interval", h.keepalive_interval.as_ref(), 15, cx);
    let reconnect_min = dur("reconnect_min", h.reconnect_min.as_ref(), 1, cx);
    let reconnect_max = dur("reconnect_max", h.reconnect_max.as_ref(), 60, cx);
    let idle_timeout = dur("idle_timeout", h.idle_timeout.as_ref(), 600, cx);
    let on_demand = h
        .on_demand
        .as_ref()
        .is_some_and(|v| *v.get_ref())
        .then_some(idle_timeout);
    // In [defaults] it is the default of the hosts that are on demand.
    if on_demand.is_none()
        && name != "[defaults]"
        && let Some(v) = own.idle_timeout.as_ref()
    {
        cx.err(
            v.span(),
            "`idle_timeout` applies to an on-demand host: set `on_demand = true` too",
        );
        ok = false;
    }
    if reconnect_min > reconnect_max {
        // At the host's own setting when it has one, else at the defaults'.
        let at = own
            .reconnect_min
            .as_ref()
            .or(own.reconnect_max.as_ref())
            .or(h.reconnect_min.as_ref())
            .or(h.reconnect_max.as_ref());
        if let Some(v) = at {
            cx.err(
                v.span(),
                format!(
                    "`reconnect_min` ({}) is longer than `reconnect_max` ({})",
                    crate::config::format_duration(reconnect_min),
                    crate::config::format_duration(reconnect_max)
                ),
            );
        }
        ok = false;
    }
    let keepalive_count_max = match h.keepalive_count_max.as_ref() {
        Some(v) if !(1..=1000).contains(v.get_ref()) => {
            cx.err(
                v.span(),
                format!("`keepalive_count_max` {} is outside 1-1000", v.get_ref()),
            );
            ok = false;
            3
        }
        Some(v) => u32::try_from(*v.get_ref()).unwrap_or(3),
        None => 3,
    };

    let mut algorithms = Algorithms::default();
    for (kind, spec) in [
        (Kind::Kex, &h.kex_algorithms),
        (Kind::HostKey, &h.host_key_algorithms),
        (Kind::Cipher, &h.ciphers),
        (Kind::Mac, &h.macs),
    ] {
        let Some(spec) = spec else { continue };
        match kind.parse(&spec.get_ref().0) {
            Ok(list) => match kind {
                Kind::Kex => algorithms.kex = list,
                Kind::HostKey => algorithms.host_key = list,
                Kind::Cipher => algorithms.cipher = list,
                Kind::Mac => algorithms.mac = list,
            },
            Err(e) => {
                cx.err(spec.span(), e);
                ok = false;
            }
        }
    }

    ok.then(|| HostConfig {
        name: name.to_string(),
        hostname,
        port,
        user,
        identity_files,
        identity_files_explicit: identity.is_some(),
        certificate_files,
        passphrase_file,
        agent,
        password_file,
        known_hosts,
        host_key_policy,
        host_key_fingerprints,
        route,
        address_family,
        connect_timeout,
        keepalive_interval,
        keepalive_count_max,
        reconnect_min,
        reconnect_max,
        algorithms,
        host_key_algorithms_set: h.host_key_algorithms.is_some(),
        on_demand,
    })
}

fn paths(list: Option<&StrList>, default: &[&str], cx: &mut Ctx<'_>) -> Vec<PathBuf> {
    match list {
        Some(l) => l.get_ref().iter().map(|p| cx.path(p.get_ref())).collect(),
        None => default.iter().map(|p| cx.path(p)).collect(),
    }
}

/// Accepts the `SHA256:` form that `ssh-keygen -l` prints.
fn check_fingerprint(fp: &str) -> Result<String, String> {
    fp.parse::<crate::hostkey::Fingerprint>()
        .map(|_| fp.to_string())
        .map_err(|e| format!("`host_key_fingerprints`: {e}"))
}
