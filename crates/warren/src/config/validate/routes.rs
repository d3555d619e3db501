//! How each host is reached: directly, through a ProxyCommand, or through a jump chain whose
//! hops are `[hosts.*]` tables, ad-hoc `[user@]host[:port]` entries or ssh_config aliases;
//! and the cycles a chain must not make.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use toml::Spanned;

use super::Ctx;
use super::hosts::host_config;
use super::ssh_overlay::fill_from_ssh_config;
use crate::config::raw::{RawConfig, RawHost, edit_distance};
use crate::config::{Destination, HostConfig, Route};

/// How host `name` is reached, from its `jump` or `proxy_command`; ad-hoc
/// `[user@]host[:port]` hops become host entries. `path` holds the hosts `name` is reached
/// through (outermost first, empty for a `[hosts.*]` table): a hop that only the ssh_config
/// knows gets its own route from there too (its `ProxyJump` or `ProxyCommand`, as ssh honours
/// them for a jump host), and a hop already on `path` is a cycle.
pub(super) fn route_via(
    name: &str,
    host: &RawHost,
    names: &[String],
    defaults: &RawHost,
    hosts: &mut BTreeMap<String, Arc<HostConfig>>,
    cx: &mut Ctx<'_>,
    path: &mut Vec<String>,
) -> Route {
    path.push(name.to_string());
    let route = route_of(name, host, names, defaults, hosts, cx, path);
    path.pop();
    route
}

fn route_of(
    name: &str,
    host: &RawHost,
    names: &[String],
    defaults: &RawHost,
    hosts: &mut BTreeMap<String, Arc<HostConfig>>,
    cx: &mut Ctx<'_>,
    path: &mut Vec<String>,
) -> Route {
    if let (Some(jump), Some(cmd)) = (&host.jump, &host.proxy_command)
        && !jump.get_ref().is_empty()
    {
        cx.err(
            cmd.span(),
            format!("[hosts.{name}] sets both `jump` and `proxy_command`; choose one"),
        );
    }
    if let Some(cmd) = &host.proxy_command {
        if cmd.get_ref().trim().is_empty() {
            cx.err(cmd.span(), "`proxy_command` is empty");
        }
        return Route::ProxyCommand(cmd.get_ref().clone());
    }
    let Some(jump) = &host.jump else {
        return Route::Direct;
    };
    let mut hops = Vec::new();
    for entry in jump.get_ref() {
        let text = entry.get_ref().trim();
        // Only a chain that went through an ssh_config hop gets here with a longer path;
        // cycles among [hosts.*] alone are reported by `find_jump_cycles`.
        if path.len() > 1 && path.iter().any(|p| p == text) {
            cx.err(
                entry.span(),
                format!("`jump` makes a cycle: {} -> {text}", path.join(" -> ")),
            );
            continue;
        }
        if names.iter().any(|n| n == text) {
            hops.push(text.to_string());
            continue;
        }
        let adhoc = adhoc_hop(text).or_else(|| {
            // With an ssh_config, a bare word is a Host alias there, as for ssh -J.
            cx.ssh.as_ref().map(|_| (None, text.to_string(), None))
        });
        match adhoc {
            Some((user, hostname, port)) => {
                let mut raw = defaults.clone();
                fill_from_ssh_config(&mut raw, text, defaults, cx);
                let hostname = raw.hostname.take().map_or(hostname, Spanned::into_inner);
                raw.hostname = Some(Spanned::new(entry.span(), hostname));
                if let Some(user) = user {
                    raw.user = Some(Spanned::new(entry.span(), user));
                }
                if let Some(port) = port {
                    raw.port = Some(Spanned::new(entry.span(), port));
                }
                let hop_route = route_via(text, &raw, names, defaults, hosts, cx, path);
                if let Some(h) = host_config(text, &raw, defaults, hop_route, cx) {
                    hosts.insert(text.to_string(), Arc::new(h));
                }
                hops.push(text.to_string());
            }
            None => cx.err(entry.span(), unknown_host(text, names, "jump entry")),
        }
    }
    if hops.is_empty() {
        Route::Direct
    } else {
        Route::Jump(hops)
    }
}

/// `[user@]host[:port]` for a hop that no `[hosts.*]` table names. A bare word that is not an
/// IP address is taken for a misspelt host name rather than a DNS name.
fn adhoc_hop(text: &str) -> Option<(Option<String>, String, Option<i64>)> {
    let d = Destination::parse(text)
        .ok()
        .filter(Destination::is_explicit)?;
    Some((d.user, d.host, d.port.map(i64::from)))
}

pub(super) fn unknown_host(text: &str, names: &[String], what: &str) -> String {
    let mut msg = format!("{what} `{text}` names no [hosts.{text}] table");
    if let Some(best) = names.iter().min_by_key(|n| edit_distance(text, n))
        && edit_distance(text, best) <= 2
    {
        msg.push_str(&format!("; did you mean `{best}`?"));
    } else if what == "jump entry" {
        msg.push_str("; for a host not defined here write `user@host` or `host:port`");
    }
    msg
}

pub(super) fn find_jump_cycles(raw: &RawConfig, cx: &mut Ctx<'_>) {
    let graph: HashMap<&str, &[Spanned<String>]> = raw
        .hosts
        .iter()
        .map(|(n, h)| {
            let hops = h
                .get_ref()
                .jump
                .as_ref()
                .map_or(&[][..], |j| j.get_ref().as_slice());
            (n.get_ref().as_str(), hops)
        })
        .collect();
    for (name, _) in &raw.hosts {
        let start = name.get_ref().as_str();
        // Depth-first over every path from `start`, remembering the entry of `start`'s own
        // list that the path began with: a cycle is reported there, once.
        for first in graph.get(start).copied().unwrap_or_default() {
            let mut stack = vec![(vec![start], first)];
            let mut found = None;
            while let Some((path, entry)) = stack.pop() {
                let next = entry.get_ref().trim();
                if next == start {
                    found = Some(path);
                    break;
                }
                if path.contains(&next) {
                    continue;
                }
                for e in graph.get(next).copied().unwrap_or_default() {
                    let mut p = path.clone();
                    p.push(next);
                    stack.push((p, e));
                }
            }
            if let Some(path) = found {
                let chain = format!("{} -> {start}", path.join(" -> "));
                cx.err(first.span(), format!("`jump` makes a cycle: {chain}"));
            }
        }
    }
}
