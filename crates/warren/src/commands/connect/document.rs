//! The command line as a configuration document (a `toml::Table`, serialized by the `toml`
//! crate): one `[hosts.*]` table for the destination and one per `-J` hop, one `[[forward]]`
//! per `-L`/`-R`/`-D` and per `LocalForward`/`RemoteForward`/`DynamicForward` of the
//! destination's ssh_config `Host` blocks, as ssh adds them.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::options;
use super::specs::{self, split_colons, split_forward};
use crate::cli::ConnectArgs;
use crate::config::ssh_config::{ForwardFlag, SshConfig};
use crate::config::{Destination, Env};

/// What the command line asks for.
#[derive(Debug)]
pub struct AdHoc {
    /// The configuration document.
    pub document: Table,
    /// `-o ExitOnForwardFailure=yes`, or the ssh_config's: exit 1 when a forward fails at
    /// start instead of retrying it.
    pub exit_on_forward_failure: bool,
}

/// Which ssh_config `-F` names: `None` for `-F none`, else the file and the value of
/// `[daemon] ssh_config` that reads it. A file named by `-F` must exist (as in ssh; a typo
/// would silently drop its forwards); a missing `~/.ssh/config` is an empty one.
fn ssh_config_file(args: &ConnectArgs, env: &Env) -> Result<Option<(PathBuf, Value)>, String> {
    Ok(match args.ssh_config.as_deref() {
        Some("none") => None,
        Some(file) => {
            let path = absolute(Path::new(file));
            if let Err(e) = std::fs::metadata(&path) {
                return Err(format!("-F {file}: cannot open the ssh_config file: {e}"));
            }
            let value = Value::String(path.to_string_lossy().into_owned());
            Some((path, value))
        }
        None => env
            .home
            .as_ref()
            .map(|home| (home.join(".ssh/config"), Value::Boolean(true))),
    })
}

/// A relative path made absolute against the working directory, so that the document means
/// the same from wherever it is written (`~` paths are left to the config's own expansion).
fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() || p.starts_with("~") {
        return p.to_path_buf();
    }
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The command line, with the ssh_config's forwards for the destination, as a document.
pub fn to_document(args: &ConnectArgs, env: &Env) -> Result<AdHoc, String> {
    let dest = Destination::parse(&args.destination)?;
    // Like ssh, read ~/.ssh/config (a missing file is an empty one) or the -F file: a host
    // written by its alias gets its HostName, User, Port, ProxyJump... from there (when the
    // configuration is validated) and its *Forward lines here; the options here win.
    let ssh = ssh_config_file(args, env)?;
    let mut doc = Table::new();
    doc.insert(
        "daemon".into(),
        table([(
            "ssh_config",
            ssh.as_ref()
                .map_or(Value::Boolean(false), |(_, v)| v.clone()),
        )]),
    );
    let resolved = match &ssh {
        Some((file, _)) => SshConfig::load(file, env.home.as_deref())
            .map_err(|e| e.to_string())?
            .resolve(&dest.host),
        None => Default::default(),
    };

    let mut hosts = Table::new();
    let dest_name = table_name(&dest.host, "destination");
    let mut host = host_table(&dest, &dest_name);
    if let Some(u) = &args.user {
        host.insert("user".into(), Value::String(u.clone()));
    }
    if let Some(p) = args.port {
        host.insert("port".into(), Value::Integer(i64::from(p)));
    }
    if !args.identity.is_empty() {
        let files = args
            .identity
            .iter()
            .map(|p| Value::String(absolute(p).to_string_lossy().into_owned()))
            .collect();
        host.insert("identity_files".into(), Value::Array(files));
    }
    if let Some(jumps) = &args.jump {
        let mut names = Vec::new();
        for (i, hop) in jumps.split(',').enumerate() {
            let hop = Destination::parse(hop.trim())?;
            let name = table_name(&hop.host, &format!("jump{}", i + 1));
            hosts.insert(name.clone(), Value::Table(host_table(&hop, &name)));
            names.push(Value::String(name));
        }
        host.insert("jump".into(), Value::Array(names));
    }
    let mut exit_on_forward_failure = None;
    for o in &args.options {
        if let Some(yes) = options::exit_on_forward_failure(o)? {
            // As in ssh, the first value obtained wins.
            exit_on_forward_failure.get_or_insert(yes);
            continue;
        }
        if let Some((k, v)) = options::option(o)? {
            host.insert(k, v);
        }
    }
    if args.inet4 || args.inet6 {
        let family = if args.inet4 { "inet" } else { "inet6" };
        host.insert("address_family".into(), Value::String(family.into()));
    }
    hosts.insert(dest_name.clone(), Value::Table(host));
    doc.insert("hosts".into(), Value::Table(hosts));

    // The command line's forwards, then the ssh_config's (ssh adds both, dropping a
    // forward given twice). The command line's are kept as given: two `-L 0:db:5432` are two
    // forwards on two free ports, as warren always made them.
    let mut wanted: Vec<(ForwardFlag, String, String)> = Vec::new();
    let given = [
        (ForwardFlag::Local, &args.local),
        (ForwardFlag::Remote, &args.remote),
        (ForwardFlag::Dynamic, &args.dynamic),
    ];
    for (flag, specs) in given {
        for spec in specs {
            wanted.push((flag, spec.clone(), cli_flag(flag).to_string()));
        }
    }
    let file_name = ssh
        .as_ref()
        .map(|(f, _)| f.display().to_string())
        .unwrap_or_default();
    for (flag, spec) in &resolved.forwards {
        if !wanted.iter().any(|(f, s, _)| f == flag && s == spec) {
            let origin = format!("{file_name}: {}", directive_name(*flag));
            wanted.push((*flag, spec.clone(), origin));
        }
    }
    let mut forwards = Vec::new();
    for (flag, spec, origin) in &wanted {
        forwards.push(forward_from(&dest_name, *flag, spec, origin)?);
    }
    if forwards.is_empty() {
        return Err("nothing to forward: give at least one -L, -R or -D".into());
    }
    doc.insert("forward".into(), Value::Array(forwards));
    Ok(AdHoc {
        document: doc,
        exit_on_forward_failure: exit_on_forward_failure
            .or(resolved.exit_on_forward_failure)
            .unwrap_or(false),
    })
}

fn cli_flag(flag: ForwardFlag) -> &'static str {
    match flag {
        ForwardFlag::Local => "-L",
        ForwardFlag::Remote => "-R",
        ForwardFlag::Dynamic => "-D",
    }
}

fn directive_name(flag: ForwardFlag) -> &'static str {
    match flag {
        ForwardFlag::Local => "LocalForward",
        ForwardFlag::Remote => "RemoteForward",
        ForwardFlag::Dynamic => "DynamicForward",
    }
}

/// The `[[forward]]` of one `-L`/`-R`/`-D` argument (or ssh_config line, joined as one);
/// `origin` names it in a message.
fn forward_from(host: &str, flag: ForwardFlag, spec: &str, origin: &str) -> Result<Value, String> {
    Ok(match flag {
        ForwardFlag::Local => {
            let (listen, connect, public) = split_forward(spec, origin)?;
            forward(host, "local", &listen, Some(&connect), public)
        }
        ForwardFlag::Remote => {
            // As in ssh, a -R (or RemoteForward) with no destination is a SOCKS proxy on the
            // server.
            let listen = match split_colons(spec).as_slice() {
                [port] if port.parse::<u16>().is_ok() => Some(port.clone()),
                [bind, port] if !bind.starts_with('/') && port.parse::<u16>().is_ok() => {
                    Some(specs::join_bind(bind, port))
                }
                _ => None,
            };
            if let Some(listen) = listen {
                forward(host, "remote-dynamic", &listen, None, false)
            } else {
                let (listen, connect, _) = split_forward(spec, origin)?;
                forward(host, "remote", &listen, Some(&connect), false)
            }
        }
        ForwardFlag::Dynamic => {
            let parts = split_colons(spec);
            let (listen, public) = match parts.as_slice() {
                [port] => (port.clone(), false),
                [bind, port] => (specs::join_bind(bind, port), specs::is_explicit_bind(bind)),
                _ => return Err(format!("{origin} {spec}: expected [BIND:]PORT")),
            };
            forward(host, "dynamic", &listen, None, public)
        }
    })
}

fn table<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Table(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// The `[hosts.NAME]` table of a destination: its host (when the table's name is not it),
/// user and port.
fn host_table(d: &Destination, name: &str) -> Table {
    let mut t = Table::new();
    if name != d.host {
        t.insert("hostname".into(), Value::String(d.host.clone()));
    }
    if let Some(u) = &d.user {
        t.insert("user".into(), Value::String(u.clone()));
    }
    if let Some(p) = d.port {
        t.insert("port".into(), Value::Integer(i64::from(p)));
    }
    t
}

/// The `[hosts.NAME]` name for `host`: the host itself when it can be one (so that ssh_config
/// `Host` blocks match it, as with ssh), else `fallback` (IPv6 literals).
fn table_name(host: &str, fallback: &str) -> String {
    let usable = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if usable {
        host.to_string()
    } else {
        fallback.to_string()
    }
}

/// A `[[forward]]` table.
fn forward(host: &str, kind: &str, listen: &str, connect: Option<&str>, public: bool) -> Value {
    let mut t = Table::new();
    t.insert("host".into(), Value::String(host.into()));
    t.insert("type".into(), Value::String(kind.into()));
    t.insert("listen".into(), Value::String(listen.into()));
    if let Some(c) = connect {
        t.insert("connect".into(), Value::String(c.into()));
    }
    if public {
        t.insert("allow_public".into(), Value::Boolean(true));
    }
    Value::Table(t)
}
