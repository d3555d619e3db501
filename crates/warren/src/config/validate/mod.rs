//! Stage two: raw TOML to a typed [`Config`], applying `[defaults]` and built-in defaults
//! and enforcing every rule of warren.toml(5). Problems are collected with their positions,
//! never thrown one by one. By concern: the daemon's settings here; host settings (defaults
//! merged once) in `hosts`; how each host is reached (jump chains, ad-hoc hops, cycles) in
//! `routes`; the ssh_config overlay in `ssh_overlay`; forwards in `forwards`; which hosts are
//! on demand in `on_demand`.

mod forwards;
mod hosts;
mod on_demand;
mod routes;
mod ssh_overlay;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use self::forwards::{check_unique_forwards, forward, number_generated_names};
use self::hosts::{check_host_name, host_config, refuse_host_only_keys};
use self::routes::{find_jump_cycles, route_via};
use self::ssh_overlay::overlay_ssh_config;
use super::diag::Diagnostic;
use super::duration::parse_duration;
use super::env::Env;
use super::raw::{RawConfig, RawDaemon, RawHost, SshConfigSetting, Str};
use super::ssh_config::SshConfig;
use super::{BindAddr, Config, DaemonConfig, ForwardConfig, HostConfig, Route, SocketGroup};

/// What every check needs: the environment for paths and `~`, the file's directory, the
/// problems found so far, and the ssh_config when one is used.
pub(super) struct Ctx<'a> {
    pub(super) env: &'a Env,
    pub(super) base: PathBuf,
    pub(super) diags: &'a mut Vec<Diagnostic>,
    /// The OpenSSH client config of `[daemon] ssh_config`, and the span of that key.
    pub(super) ssh: Option<(SshConfig, std::ops::Range<usize>)>,
}

impl Ctx<'_> {
    pub(super) fn err(&mut self, span: std::ops::Range<usize>, msg: impl Into<String>) {
        self.diags.push(Diagnostic::new(span, msg));
    }

    pub(super) fn path(&self, s: &str) -> PathBuf {
        self.env.expand(s, &self.base)
    }

    pub(super) fn duration(&mut self, v: &Str, key: &str, allow_zero: bool) -> Option<Duration> {
        match parse_duration(v.get_ref()) {
            Ok(d) if d.is_zero() && !allow_zero => {
                self.err(v.span(), format!("`{key}` must be longer than zero"));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.err(v.span(), format!("`{key}`: {e}"));
                None
            }
        }
    }
}

/// Stage two of [`Config::parse`]: every problem goes to `diags`; `None` when there was one.
pub(in crate::config) fn validate(
    raw: RawConfig,
    path: &Path,
    env: &Env,
    diags: &mut Vec<Diagnostic>,
) -> Option<Config> {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base = absolute.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut cx = Ctx {
        env,
        base,
        diags,
        ssh: None,
    };

    let daemon = daemon(&raw, &mut cx);
    let mut raw = raw;
    let ssh_file = daemon.as_ref().and_then(|d| d.ssh_config.clone());
    if let (Some(file), Some(path)) = (ssh_file, raw.daemon.ssh_config.as_ref().map(Spanned::span))
    {
        match SshConfig::load(&file, cx.env.home.as_deref()) {
            Ok(ssh) => cx.ssh = Some((ssh, path)),
            Err(e) => cx.err(path, format!("`ssh_config`: {e}")),
        }
    }
    overlay_ssh_config(&mut raw, &mut cx);
    let defaults = raw
        .defaults
        .as_ref()
        .map(|d| d.get_ref().clone())
        .unwrap_or_default();
    if let Some(d) = &raw.defaults {
        refuse_host_only_keys(d.get_ref(), &mut cx);
        // Checked once on its own, so that a bad default is reported even with no hosts.
        host_config(
            "[defaults]",
            d.get_ref(),
            &RawHost::default(),
            Route::Direct,
            &mut cx,
        );
    }

    let mut hosts: BTreeMap<String, Arc<HostConfig>> = BTreeMap::new();
    let names: Vec<String> = raw.hosts.iter().map(|(n, _)| n.get_ref().clone()).collect();
    for (name, host) in &raw.hosts {
        check_host_name(name, &mut cx);
        let route = route_via(
            name.get_ref(),
            host.get_ref(),
            &names,
            &defaults,
            &mut hosts,
            &mut cx,
            &mut Vec::new(),
        );
        if let Some(h) = host_config(name.get_ref(), host.get_ref(), &defaults, route, &mut cx) {
            hosts.insert(h.name.clone(), Arc::new(h));
        }
    }
    find_jump_cycles(&raw, &mut cx);

    let mut forwards: Vec<(usize, ForwardConfig)> = raw
        .forwards
        .iter()
        .enumerate()
        .filter_map(|(i, f)| forward(f, &names, &mut cx).map(|fwd| (i, fwd)))
        .collect();
    number_generated_names(&raw.forwards, &mut forwards);
    check_unique_forwards(&raw.forwards, &forwards, &mut cx);
    on_demand::check_remote_forwards(&raw.forwards, &forwards, &hosts, &mut cx);
    let forwards: Vec<ForwardConfig> = forwards.into_iter().map(|(_, f)| f).collect();
    on_demand::follow_users(&mut hosts, &forwards);

    Some(Config {
        path: absolute,
        daemon: daemon?,
        hosts,
        forwards,
    })
}

/// `metrics_listen`: an address like a local ingress's (a bare port is on 127.0.0.1) or an
/// absolute socket path; reachable from other machines only with `metrics_allow_public`.
fn metrics_listen(d: &RawDaemon, cx: &mut Ctx<'_>) -> Option<BindAddr> {
    let public = d
        .metrics_allow_public
        .as_ref()
        .is_some_and(|v| *v.get_ref());
    let Some(listen) = &d.metrics_listen else {
        if let Some(p) = &d.metrics_allow_public {
            cx.err(p.span(), "`metrics_allow_public` without `metrics_listen`");
        }
        return None;
    };
    let expand = |s: &str| cx.path(s);
    let addr = match super::parse_bind(listen.get_ref(), &expand) {
        Ok(addr) => addr,
        Err(e) => {
            cx.err(listen.span(), format!("`metrics_listen` {e}"));
            return None;
        }
    };
    if !addr.is_local_only() && !public {
        cx.err(
            listen.span(),
            format!(
                "`metrics_listen` {addr} is reachable from other machines; set \
                 `metrics_allow_public = true` if that is intended"
            ),
        );
        return None;
    }
    Some(addr)
}

fn daemon(raw: &RawConfig, cx: &mut Ctx<'_>) -> Option<DaemonConfig> {
    let d = &raw.daemon;
    let control_socket = d
        .control_socket
        .as_ref()
        .map_or_else(|| cx.env.default_control_socket(), |s| cx.path(s.get_ref()));
    let shutdown_grace = match &d.shutdown_grace {
        Some(v) => cx.duration(v, "shutdown_grace", true)?,
        None => Duration::from_secs(10),
    };
    let ssh_config = match d.ssh_config.as_ref().map(Spanned::get_ref) {
        None | Some(SshConfigSetting::Enabled(false)) => None,
        Some(SshConfigSetting::Enabled(true)) => Some(cx.path("~/.ssh/config")),
        Some(SshConfigSetting::Path(p)) => Some(cx.path(p)),
    };
    let control_socket_group = d.control_socket_group.as_ref().and_then(|g| {
        let name = g.get_ref();
        match nix::unistd::Group::from_name(name) {
            Ok(Some(group)) => Some(SocketGroup {
                name: name.clone(),
                gid: group.gid.as_raw(),
            }),
            Ok(None) => {
                cx.err(
                    g.span(),
                    format!("`control_socket_group` {name:?}: no such group"),
                );
                None
            }
            Err(e) => {
                cx.err(g.span(), format!("`control_socket_group` {name:?}: {e}"));
                None
            }
        }
    });
    let metrics_listen = metrics_listen(d, cx);
    Some(DaemonConfig {
        control_socket,
        control_socket_group,
        shutdown_grace,
        ssh_config,
        metrics_listen,
    })
}
