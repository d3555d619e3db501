//! The OpenSSH client config as a source of host settings: for each host, the values of its
//! matching `Host` blocks fill what neither `[hosts.NAME]` nor `[defaults]` sets.

use std::path::PathBuf;

use toml::Spanned;

use super::Ctx;
use crate::config::raw::{RawConfig, RawHost};
use crate::config::ssh_config::{ResolvedHost, StrictHostKeyChecking};

/// Fills every host setting that neither `[hosts.NAME]` nor `[defaults]` sets from the
/// matching `Host` blocks of the ssh_config (the TOML always wins). Values found there are
/// reported at the `ssh_config` key when they are wrong.
pub(super) fn overlay_ssh_config(raw: &mut RawConfig, cx: &mut Ctx<'_>) {
    if cx.ssh.is_none() {
        return;
    }
    let defaults = raw
        .defaults
        .as_ref()
        .map(|d| d.get_ref().clone())
        .unwrap_or_default();
    for (name, host) in &mut raw.hosts {
        let name = name.get_ref().clone();
        fill_from_ssh_config(host.get_mut(), &name, &defaults, cx);
    }
}

pub(super) fn fill_from_ssh_config(h: &mut RawHost, name: &str, d: &RawHost, cx: &mut Ctx<'_>) {
    let Some((ssh, span)) = cx.ssh.as_ref() else {
        return;
    };
    let span = span.clone();
    let r: ResolvedHost = ssh.resolve(name);
    let s = |v: String| Some(Spanned::new(span.clone(), v));
    let list = |v: Vec<String>| {
        Some(Spanned::new(
            span.clone(),
            v.into_iter()
                .map(|x| Spanned::new(span.clone(), x))
                .collect(),
        ))
    };
    let path_list = |v: &[PathBuf]| list(v.iter().map(|p| p.display().to_string()).collect());
    if h.hostname.is_none() {
        h.hostname = r.hostname.clone().and_then(s);
    }
    if h.user.is_none() && d.user.is_none() {
        h.user = r.user.clone().and_then(s);
    }
    if h.port.is_none() && d.port.is_none() {
        h.port = r.port.map(|p| Spanned::new(span.clone(), i64::from(p)));
    }
    if h.identity_files.is_none() && d.identity_files.is_none() && !r.identity_files.is_empty() {
        h.identity_files = path_list(&r.identity_files);
    }
    if h.certificate_files.is_none()
        && d.certificate_files.is_none()
        && !r.certificate_files.is_empty()
    {
        h.certificate_files = path_list(&r.certificate_files);
    }
    if h.known_hosts.is_none()
        && d.known_hosts.is_none()
        && let Some(files) = r.user_known_hosts_files.as_ref().filter(|f| !f.is_empty())
    {
        h.known_hosts = path_list(files);
    }
    if h.host_key_policy.is_none() && d.host_key_policy.is_none() {
        match r.strict_host_key_checking {
            Some(StrictHostKeyChecking::Yes) => h.host_key_policy = s("strict".into()),
            Some(StrictHostKeyChecking::AcceptNew) => h.host_key_policy = s("accept-new".into()),
            Some(StrictHostKeyChecking::Off) => cx.err(
                span.clone(),
                format!(
                    "`ssh_config`: StrictHostKeyChecking turns host key checking off for `{name}`; \
                     warren always verifies host keys: set host_key_policy = \"accept-new\" in [hosts.{name}] instead"
                ),
            ),
            None => {}
        }
    }
    if h.address_family.is_none() && d.address_family.is_none() {
        h.address_family = r.address_family.clone().and_then(s);
    }
    if h.connect_timeout.is_none() && d.connect_timeout.is_none() {
        h.connect_timeout = r
            .connect_timeout
            .map(crate::config::format_duration)
            .and_then(s);
    }
    if h.keepalive_interval.is_none() && d.keepalive_interval.is_none() {
        h.keepalive_interval = r
            .server_alive_interval
            .filter(|i| !i.is_zero())
            .map(crate::config::format_duration)
            .and_then(s);
    }
    if h.keepalive_count_max.is_none() && d.keepalive_count_max.is_none() {
        h.keepalive_count_max = r
            .server_alive_count_max
            .map(|n| Spanned::new(span.clone(), i64::from(n)));
    }
    let algorithms = |v: &Option<String>| {
        v.clone()
            .map(|list| Spanned::new(span.clone(), crate::config::raw::AlgoSpec(list)))
    };
    if h.kex_algorithms.is_none() && d.kex_algorithms.is_none() {
        h.kex_algorithms = algorithms(&r.kex_algorithms);
    }
    if h.host_key_algorithms.is_none() && d.host_key_algorithms.is_none() {
        h.host_key_algorithms = algorithms(&r.host_key_algorithms);
    }
    if h.ciphers.is_none() && d.ciphers.is_none() {
        h.ciphers = algorithms(&r.ciphers);
    }
    if h.macs.is_none() && d.macs.is_none() {
        h.macs = algorithms(&r.macs);
    }
    if h.jump.is_none() && h.proxy_command.is_none() {
        h.jump = r.proxy_jump.clone().and_then(list);
        h.proxy_command = r.proxy_command.clone().and_then(s);
    }
}
