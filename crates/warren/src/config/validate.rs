//! Stage two: raw TOML to a typed [`Config`], applying `[defaults]` and built-in defaults
//! and enforcing every rule of SPEC section 2. Problems are collected, never thrown one by one.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::address::{BindAddr, Endpoint, parse_bind, parse_egress, parse_remote_bind};
use super::diag::Diagnostic;
use super::duration::parse_duration;
use super::env::Env;
use super::names;
use super::raw::{RawConfig, RawForward, RawHost, SshConfigSetting, Str, StrList, edit_distance};
use super::ssh_config::{ResolvedHost, SshConfig, StrictHostKeyChecking};
use super::{
    Config, DaemonConfig, ForwardConfig, ForwardSpec, HostConfig, HostKeyPolicy, Route, SocketGroup,
};

const DEFAULT_IDENTITY_FILES: &[&str] = &["~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa"];
const DEFAULT_KNOWN_HOSTS: &[&str] = &["~/.ssh/known_hosts", "/etc/ssh/ssh_known_hosts"];

struct Ctx<'a> {
    env: &'a Env,
    base: PathBuf,
    diags: &'a mut Vec<Diagnostic>,
    /// The OpenSSH client config of `[daemon] ssh_config`, and the span of that key.
    ssh: Option<(SshConfig, std::ops::Range<usize>)>,
}

impl Ctx<'_> {
    fn err(&mut self, span: std::ops::Range<usize>, msg: impl Into<String>) {
        self.diags.push(Diagnostic::new(span, msg));
    }

    fn path(&self, s: &str) -> PathBuf {
        self.env.expand(s, &self.base)
    }

    fn duration(&mut self, v: &Str, key: &str, allow_zero: bool) -> Option<Duration> {
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

pub(super) fn validate(
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

    let forwards: Vec<(usize, ForwardConfig)> = raw
        .forwards
        .iter()
        .enumerate()
        .filter_map(|(i, f)| forward(f, &names, &mut cx).map(|fwd| (i, fwd)))
        .collect();
    check_unique_forwards(&raw.forwards, &forwards, &mut cx);
    let forwards = forwards.into_iter().map(|(_, f)| f).collect();

    Some(Config {
        path: absolute,
        daemon: daemon?,
        hosts,
        forwards,
    })
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
    Some(DaemonConfig {
        control_socket,
        control_socket_group,
        shutdown_grace,
        ssh_config,
    })
}

fn refuse_host_only_keys(d: &RawHost, cx: &mut Ctx<'_>) {
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
fn check_host_name(name: &Str, cx: &mut Ctx<'_>) {
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

/// How host `name` is reached, from its `jump` or `proxy_command`; ad-hoc
/// `[user@]host[:port]` hops become host entries. `path` holds the hosts `name` is reached
/// through (outermost first, empty for a `[hosts.*]` table): a hop that only the ssh_config
/// knows gets its own route from there too (its `ProxyJump` or `ProxyCommand`, as ssh honours
/// them for a jump host), and a hop already on `path` is a cycle.
fn route_via(
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

/// Fills every host setting that neither `[hosts.NAME]` nor `[defaults]` sets from the
/// matching `Host` blocks of the ssh_config (the TOML always wins). Values found there are
/// reported at the `ssh_config` key when they are wrong.
fn overlay_ssh_config(raw: &mut RawConfig, cx: &mut Ctx<'_>) {
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

fn fill_from_ssh_config(h: &mut RawHost, name: &str, d: &RawHost, cx: &mut Ctx<'_>) {
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
    if h.connect_timeout.is_none() && d.connect_timeout.is_none() {
        h.connect_timeout = r.connect_timeout.map(super::format_duration).and_then(s);
    }
    if h.keepalive_interval.is_none() && d.keepalive_interval.is_none() {
        h.keepalive_interval = r
            .server_alive_interval
            .filter(|i| !i.is_zero())
            .map(super::format_duration)
            .and_then(s);
    }
    if h.keepalive_count_max.is_none() && d.keepalive_count_max.is_none() {
        h.keepalive_count_max = r
            .server_alive_count_max
            .map(|n| Spanned::new(span.clone(), i64::from(n)));
    }
    if h.jump.is_none() && h.proxy_command.is_none() {
        h.jump = r.proxy_jump.clone().and_then(list);
        h.proxy_command = r.proxy_command.clone().and_then(s);
    }
}

/// `[user@]host[:port]` for a hop that no `[hosts.*]` table names. A bare word that is not an
/// IP address is taken for a misspelt host name rather than a DNS name.
fn adhoc_hop(text: &str) -> Option<(Option<String>, String, Option<i64>)> {
    let (user, rest) = match text.rsplit_once('@') {
        Some((u, r)) => (Some(u.to_string()), r),
        None => (None, text),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (h, after) = inner.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse::<i64>().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        (h.to_string(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.parse::<i64>().ok()?)),
            None => (rest.to_string(), None),
        }
    };
    let explicit =
        user.is_some() || port.is_some() || host.contains('.') || host.parse::<IpAddr>().is_ok();
    let valid =
        !host.is_empty() && !host.contains(char::is_whitespace) && user.as_deref() != Some("");
    (explicit && valid).then_some((user, host, port))
}

fn unknown_host(text: &str, names: &[String], what: &str) -> String {
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

fn host_config(
    name: &str,
    h: &RawHost,
    d: &RawHost,
    route: Route,
    cx: &mut Ctx<'_>,
) -> Option<HostConfig> {
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
    let user = match h.user.as_ref().or(d.user.as_ref()) {
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
    let port = match h.port.as_ref().or(d.port.as_ref()) {
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
    let identity = h.identity_files.as_ref().or(d.identity_files.as_ref());
    let identity_files = paths(identity, DEFAULT_IDENTITY_FILES, cx);
    let certificate_files = paths(
        h.certificate_files
            .as_ref()
            .or(d.certificate_files.as_ref()),
        &[],
        cx,
    );
    let known_hosts = paths(
        h.known_hosts.as_ref().or(d.known_hosts.as_ref()),
        DEFAULT_KNOWN_HOSTS,
        cx,
    );
    if known_hosts.is_empty()
        && let Some(v) = h.known_hosts.as_ref().or(d.known_hosts.as_ref())
    {
        cx.err(v.span(), "`known_hosts` needs at least one file");
        ok = false;
    }
    let file = |v: Option<&Str>, cx: &Ctx<'_>| v.map(|s| cx.path(s.get_ref()));
    let passphrase_file = file(
        h.passphrase_file.as_ref().or(d.passphrase_file.as_ref()),
        cx,
    );
    let password_file = file(h.password_file.as_ref().or(d.password_file.as_ref()), cx);
    let agent = h
        .agent
        .as_ref()
        .or(d.agent.as_ref())
        .is_none_or(|v| *v.get_ref());

    let host_key_policy = match h.host_key_policy.as_ref().or(d.host_key_policy.as_ref()) {
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
    let connect_timeout = dur(
        "connect_timeout",
        h.connect_timeout.as_ref().or(d.connect_timeout.as_ref()),
        15,
        cx,
    );
    let keepalive_interval = dur(
        "keepalive_interval",
        h.keepalive_interval
            .as_ref()
            .or(d.keepalive_interval.as_ref()),
        15,
        cx,
    );
    let reconnect_min = dur(
        "reconnect_min",
        h.reconnect_min.as_ref().or(d.reconnect_min.as_ref()),
        1,
        cx,
    );
    let reconnect_max = dur(
        "reconnect_max",
        h.reconnect_max.as_ref().or(d.reconnect_max.as_ref()),
        60,
        cx,
    );
    if reconnect_min > reconnect_max {
        let at = h
            .reconnect_min
            .as_ref()
            .or(h.reconnect_max.as_ref())
            .or(d.reconnect_min.as_ref())
            .or(d.reconnect_max.as_ref());
        if let Some(v) = at {
            cx.err(
                v.span(),
                format!(
                    "`reconnect_min` ({}) is longer than `reconnect_max` ({})",
                    super::format_duration(reconnect_min),
                    super::format_duration(reconnect_max)
                ),
            );
        }
        ok = false;
    }
    let keepalive_count_max = match h
        .keepalive_count_max
        .as_ref()
        .or(d.keepalive_count_max.as_ref())
    {
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
        connect_timeout,
        keepalive_interval,
        keepalive_count_max,
        reconnect_min,
        reconnect_max,
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

fn find_jump_cycles(raw: &RawConfig, cx: &mut Ctx<'_>) {
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

fn forward(f: &Spanned<RawForward>, names: &[String], cx: &mut Ctx<'_>) -> Option<ForwardConfig> {
    let raw = f.get_ref();
    let header = f.span().start..f.span().start;
    let host = match &raw.host {
        None => {
            cx.err(
                header.clone(),
                "[[forward]] needs `host`: the [hosts.*] whose session carries it",
            );
            None
        }
        Some(h) if !names.contains(h.get_ref()) => {
            cx.err(h.span(), unknown_host(h.get_ref(), names, "`host`"));
            None
        }
        Some(h) => Some(h.get_ref().clone()),
    };
    let kind = match &raw.kind {
        None => {
            cx.err(
                header.clone(),
                "[[forward]] needs `type`: \"local\", \"remote\" or \"dynamic\"",
            );
            None
        }
        Some(k) => match k.get_ref().as_str() {
            k @ ("local" | "remote" | "dynamic") => Some(k),
            other => {
                cx.err(k.span(), format!("`type` \"{other}\" is not valid; expected \"local\", \"remote\" or \"dynamic\""));
                None
            }
        },
    };
    let max_connections = max_connections(raw, cx);
    let Some(listen) = &raw.listen else {
        cx.err(header, "[[forward]] needs `listen`: the ingress address");
        return None;
    };
    let (env, base) = (cx.env, cx.base.clone());
    let expand = move |s: &str| env.expand(s, &base);
    let spec = match kind? {
        "local" | "dynamic" => {
            let bind = parse_bind(listen.get_ref(), &expand);
            let bind = bind
                .map_err(|e| cx.err(listen.span(), format!("`listen`: {e}")))
                .ok();
            let public = raw.allow_public.as_ref().is_some_and(|v| *v.get_ref());
            if let Some(b) = &bind
                && !b.is_local_only()
                && !public
            {
                cx.err(listen.span(), format!("`listen` {b} is reachable from other machines; set `allow_public = true` on this forward if that is intended"));
            }
            if kind == Some("dynamic") {
                if let Some(c) = &raw.connect {
                    cx.err(c.span(), "a dynamic forward takes no `connect`: each SOCKS client names its own destination");
                }
                ForwardSpec::Dynamic { listen: bind? }
            } else {
                let connect = egress(raw, header.clone(), cx);
                ForwardSpec::Local {
                    listen: bind?,
                    connect: connect?,
                }
            }
        }
        _ => {
            if let Some(p) = &raw.allow_public {
                cx.err(p.span(), "`allow_public` applies to local and dynamic forwards; a remote ingress is governed by the server's GatewayPorts");
            }
            let bind = parse_remote_bind(listen.get_ref(), &expand);
            let bind = bind
                .map_err(|e| cx.err(listen.span(), format!("`listen`: {e}")))
                .ok();
            let connect = egress(raw, header.clone(), cx);
            ForwardSpec::Remote {
                listen: bind?,
                connect: connect?,
            }
        }
    };
    let host = host?;
    let name = match &raw.name {
        Some(n) if n.get_ref().trim().is_empty() => {
            cx.err(n.span(), "`name` is empty");
            return None;
        }
        Some(n) => n.get_ref().clone(),
        None => format!("{host}:{}:{}", spec.kind_name(), spec.listen_text()),
    };
    let socket_mode = socket_mode(raw, &spec, cx)?;
    Some(ForwardConfig {
        name,
        host,
        spec,
        max_connections: max_connections?,
        socket_mode,
    })
}

/// The mode a Unix-socket ingress gets unless `socket_mode` says otherwise: the owner only.
pub const DEFAULT_SOCKET_MODE: u32 = 0o600;

/// `socket_mode = "0660"`: octal permission bits of a Unix-socket ingress on this machine.
fn socket_mode(raw: &RawForward, spec: &ForwardSpec, cx: &mut Ctx<'_>) -> Option<u32> {
    let Some(v) = &raw.socket_mode else {
        return Some(DEFAULT_SOCKET_MODE);
    };
    let unix_ingress = matches!(
        spec,
        ForwardSpec::Local {
            listen: BindAddr::Unix(_),
            ..
        } | ForwardSpec::Dynamic {
            listen: BindAddr::Unix(_)
        }
    );
    if !unix_ingress {
        cx.err(
            v.span(),
            "`socket_mode` applies to a Unix-socket ingress on this machine (a local or dynamic forward listening on a path)",
        );
        return None;
    }
    let text = v.get_ref();
    match u32::from_str_radix(text, 8) {
        Ok(mode)
            if (3..=4).contains(&text.len())
                && text.bytes().all(|b| (b'0'..=b'7').contains(&b))
                && mode <= 0o777 =>
        {
            Some(mode)
        }
        _ => {
            cx.err(
                v.span(),
                format!("`socket_mode` {text:?} is not a mode: write three or four octal digits, for example \"0660\""),
            );
            None
        }
    }
}

/// The most connections a forward holds open when the file does not say.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;

/// `max_connections`: 1 to 1 000 000, or 0 for no limit; 1024 when not set. `None` inside
/// the `Some` is "no limit"; the outer `None` an error already reported.
fn max_connections(raw: &RawForward, cx: &mut Ctx<'_>) -> Option<Option<u32>> {
    let Some(v) = &raw.max_connections else {
        return Some(Some(DEFAULT_MAX_CONNECTIONS));
    };
    match u32::try_from(*v.get_ref()) {
        Ok(0) => Some(None),
        Ok(n) if n <= 1_000_000 => Some(Some(n)),
        _ => {
            cx.err(
                v.span(),
                format!(
                    "`max_connections` {} is outside 0-1000000 (0 means no limit)",
                    v.get_ref()
                ),
            );
            None
        }
    }
}

fn egress(raw: &RawForward, header: std::ops::Range<usize>, cx: &mut Ctx<'_>) -> Option<Endpoint> {
    let Some(c) = &raw.connect else {
        let kind = raw.kind.as_ref().map_or("", |k| k.get_ref().as_str());
        cx.err(
            header,
            format!("a {kind} forward needs `connect`: the egress address"),
        );
        return None;
    };
    let (env, base) = (cx.env, cx.base.clone());
    let expand = move |s: &str| env.expand(s, &base);
    parse_egress(c.get_ref(), &expand)
        .map_err(|e| cx.err(c.span(), format!("`connect`: {e}")))
        .ok()
}

/// Names unique; no two local ingresses (or remote ingresses of one host) on the same address.
/// `fwds` pairs each valid forward with its index in `raw`.
fn check_unique_forwards(
    raw: &[Spanned<RawForward>],
    fwds: &[(usize, ForwardConfig)],
    cx: &mut Ctx<'_>,
) {
    let mut seen_names: HashMap<&str, usize> = HashMap::new();
    let mut seen_binds: Vec<(&BindAddr, &str)> = Vec::new();
    let mut seen_remote: Vec<(&str, &Endpoint, &str)> = Vec::new();
    for (i, f) in fwds {
        let r = raw[*i].get_ref();
        let name_span = r
            .name
            .as_ref()
            .or(r.listen.as_ref())
            .map_or(0..0, Spanned::span);
        let listen_span = r.listen.as_ref().map_or(0..0, Spanned::span);
        let mut clash = false;
        match &f.spec {
            ForwardSpec::Local { listen, .. } | ForwardSpec::Dynamic { listen } => {
                if let Some((_, other)) = seen_binds.iter().find(|(b, _)| binds_clash(b, listen)) {
                    cx.err(
                        listen_span.clone(),
                        format!("`listen` {listen} is already the ingress of forward `{other}`"),
                    );
                    clash = true;
                }
                seen_binds.push((listen, &f.name));
            }
            ForwardSpec::Remote { listen, .. } => {
                let fixed = !matches!(listen, Endpoint::Tcp { port: 0, .. });
                if fixed
                    && let Some((_, _, other)) = seen_remote
                        .iter()
                        .find(|(h, l, _)| *h == f.host && *l == listen)
                {
                    cx.err(listen_span.clone(), format!("`listen` {listen} on host `{}` is already the ingress of forward `{other}`", f.host));
                    clash = true;
                }
                seen_remote.push((&f.host, listen, &f.name));
            }
        }
        // A default name repeats exactly when the ingress does; say that only once.
        let explicit = r.name.is_some();
        if let Some(first) = seen_names.insert(&f.name, *i)
            && (explicit || !clash)
        {
            let hint = if explicit {
                ""
            } else {
                "; give each forward its own `name`"
            };
            cx.err(
                name_span,
                format!(
                    "forward name `{}` is already used by forward #{}{hint}",
                    f.name,
                    first + 1
                ),
            );
        }
    }
}

fn binds_clash(a: &BindAddr, b: &BindAddr) -> bool {
    match (a, b) {
        (BindAddr::Unix(x), BindAddr::Unix(y)) => x == y,
        (BindAddr::Tcp(x), BindAddr::Tcp(y)) => {
            x.port() == y.port()
                && (x.ip() == y.ip()
                    || (x.is_ipv4() == y.is_ipv4()
                        && (x.ip().is_unspecified() || y.ip().is_unspecified())))
        }
        _ => false,
    }
}
