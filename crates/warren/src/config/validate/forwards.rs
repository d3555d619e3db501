//! Forwards: kind, ingress and egress addresses (with the loopback rule), limits, socket
//! modes, names, and the clashes between forwards.

use std::collections::HashMap;

use toml::Spanned;

use super::Ctx;
use super::routes::unknown_host;
use crate::config::address::{BindAddr, Endpoint, parse_bind, parse_egress, parse_remote_bind};
use crate::config::raw::RawForward;
use crate::config::{ForwardConfig, ForwardSpec};

/// The values `type` takes, as messages list them.
const KINDS: &str = "\"local\", \"remote\", \"dynamic\" or \"remote-dynamic\"";

pub(super) fn forward(
    f: &Spanned<RawForward>,
    names: &[String],
    cx: &mut Ctx<'_>,
) -> Option<ForwardConfig> {
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
            cx.err(header.clone(), format!("[[forward]] needs `type`: {KINDS}"));
            None
        }
        Some(k) => match k.get_ref().as_str() {
            k @ ("local" | "remote" | "dynamic" | "remote-dynamic") => Some(k),
            other => {
                cx.err(
                    k.span(),
                    format!("`type` \"{other}\" is not valid; expected {KINDS}"),
                );
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
                cx.err(p.span(), "`allow_public` applies to local and dynamic forwards; an ingress on the server is governed by the server's GatewayPorts");
            }
            let bind = parse_remote_bind(listen.get_ref(), &expand);
            let bind = bind
                .map_err(|e| cx.err(listen.span(), format!("`listen`: {e}")))
                .ok();
            if kind == Some("remote-dynamic") {
                if let Some(c) = &raw.connect {
                    cx.err(c.span(), "a remote-dynamic forward takes no `connect`: each SOCKS or HTTP client names its own destination");
                }
                ForwardSpec::RemoteDynamic { listen: bind? }
            } else {
                let connect = egress(raw, header.clone(), cx);
                ForwardSpec::Remote {
                    listen: bind?,
                    connect: connect?,
                }
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
    let probe_interval = match &raw.probe_interval {
        None => None,
        Some(v) if spec.is_dynamic() => {
            cx.err(
                v.span(),
                format!("`probe_interval` applies to local and remote forwards: a {} one has no egress of its own", spec.kind_name()),
            );
            return None;
        }
        Some(v) => Some(cx.duration(v, "probe_interval", false)?),
    };
    Some(ForwardConfig {
        name,
        host,
        spec,
        max_connections: max_connections?,
        socket_mode,
        probe_interval,
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
pub(super) fn check_unique_forwards(
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
            ForwardSpec::Remote { listen, .. } | ForwardSpec::RemoteDynamic { listen } => {
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
        // Port 0: each gets its own free port.
        (BindAddr::Tcp(x), BindAddr::Tcp(y)) => {
            x.port() != 0
                && x.port() == y.port()
                && (x.ip() == y.ip()
                    || (x.is_ipv4() == y.is_ipv4()
                        && (x.ip().is_unspecified() || y.ip().is_unspecified())))
        }
        _ => false,
    }
}

/// Gives the second and later forwards with the same generated name (`HOST:TYPE:LISTEN`,
/// several ingresses on port 0) the suffix `#2`, `#3`...: named by the file, a name is
/// unique; generated, it is made so.
pub(super) fn number_generated_names(
    raw: &[Spanned<RawForward>],
    fwds: &mut [(usize, ForwardConfig)],
) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, f) in fwds.iter_mut() {
        if raw[*i].get_ref().name.is_some() {
            continue;
        }
        let n = seen.entry(f.name.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            f.name = format!("{}#{n}", f.name);
        }
    }
}
