//! `warren connect`: ad-hoc tunnels from `ssh -N`-style options. The options become a
//! configuration (a TOML document built with the `toml` crate), validated and run by exactly
//! the code of `warren run`.

mod announce;
mod options;
mod specs;

pub(super) use announce::{announce, idle_for};

use std::path::Path;

use toml::{Table, Value};
use tracing::error;

use self::specs::{split_colons, split_forward};
use crate::cli::{ConnectArgs, exit};
use crate::config::{Config, Destination, Env};

/// Runs the tunnels of `args`; returns the exit code.
pub fn connect(args: &ConnectArgs, env: &Env) -> u8 {
    crate::logging::init(&args.log);
    let text = match to_toml(args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("warren connect: {e}");
            return exit::USAGE;
        }
    };
    let config = match Config::parse(&text, Path::new("warren-connect.toml"), env) {
        Ok(c) => c,
        Err(e) => {
            if let crate::config::ConfigError::Invalid { problems, .. } = &e {
                for p in problems {
                    eprintln!("warren connect: {}", p.message);
                }
            }
            error!("options rejected; nothing started");
            return exit::USAGE;
        }
    };
    super::run::serve_blocking(
        config,
        super::run::Mode::Connect {
            json: args.json,
            exit_when_idle: args.exit_when_idle,
        },
        crate::handover::Passed::default(),
    )
}

/// Translates the command line into configuration text.
pub fn to_toml(args: &ConnectArgs) -> Result<String, String> {
    toml::to_string(&to_document(args)?).map_err(|e| e.to_string())
}

/// The command line as a configuration document.
fn to_document(args: &ConnectArgs) -> Result<Table, String> {
    if args.local.is_empty() && args.remote.is_empty() && args.dynamic.is_empty() {
        return Err("nothing to forward: give at least one -L, -R or -D".into());
    }
    let dest = Destination::parse(&args.destination)?;
    // Like ssh, read ~/.ssh/config (a missing file is an empty one): a host written by its
    // alias gets its HostName, User, Port, ProxyJump... from there; the options here win.
    let mut doc = Table::new();
    doc.insert(
        "daemon".into(),
        table([("ssh_config", Value::Boolean(true))]),
    );
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
            .map(|p| Value::String(p.to_string_lossy().into_owned()))
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
    for o in &args.options {
        let (k, v) = options::option(o)?;
        host.insert(k, v);
    }
    hosts.insert(dest_name.clone(), Value::Table(host));
    doc.insert("hosts".into(), Value::Table(hosts));

    let mut forwards = Vec::new();
    for spec in &args.local {
        let (listen, connect, public) = split_forward(spec, "-L")?;
        forwards.push(forward(
            &dest_name,
            "local",
            &listen,
            Some(&connect),
            public,
        ));
    }
    for spec in &args.remote {
        // As in ssh, a -R without a destination is a SOCKS proxy on the server.
        let listen = match split_colons(spec).as_slice() {
            [port] if !port.starts_with('/') => Some(port.clone()),
            [bind, port] if !bind.starts_with('/') && !port.starts_with('/') => {
                Some(specs::join_bind(bind, port))
            }
            _ => None,
        };
        if let Some(listen) = listen {
            forwards.push(forward(&dest_name, "remote-dynamic", &listen, None, false));
            continue;
        }
        let (listen, connect, _) = split_forward(spec, "-R")?;
        forwards.push(forward(
            &dest_name,
            "remote",
            &listen,
            Some(&connect),
            false,
        ));
    }
    for spec in &args.dynamic {
        let parts = split_colons(spec);
        let (listen, public) = match parts.as_slice() {
            [port] => (port.clone(), false),
            [bind, port] => (specs::join_bind(bind, port), specs::is_explicit_bind(bind)),
            _ => return Err(format!("-D {spec}: expected [BIND:]PORT")),
        };
        forwards.push(forward(&dest_name, "dynamic", &listen, None, public));
    }
    doc.insert("forward".into(), Value::Array(forwards));
    Ok(doc)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};

    fn args(line: &[&str]) -> ConnectArgs {
        let mut full = vec!["warren", "connect"];
        full.extend_from_slice(line);
        match Cli::parse_args(full).unwrap().command {
            Command::Connect(c) => c,
            _ => unreachable!(),
        }
    }

    fn config(line: &[&str]) -> Config {
        let text = to_toml(&args(line)).unwrap();
        Config::parse(&text, Path::new("c.toml"), &Env::from_process())
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn ssh_style_forwards_become_config() {
        let c = config(&[
            "-L",
            "5432:db.internal:5432",
            "-L",
            "127.0.0.2:6000:[fd00::1]:6000",
            "-L",
            "/tmp/l.sock:/run/pg.sock",
            "-R",
            "0:localhost:3000",
            "-R",
            "1081",
            "-R",
            "[::1]:0",
            "-R",
            "8080:/run/app.sock",
            "-D",
            "1080",
            "-p",
            "2222",
            "-l",
            "tunnel",
            "-i",
            "/k/id",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            "CertificateFile=/k/id-ca.pub",
            "ops@gw.example.com",
        ]);
        let h = &c.hosts["gw.example.com"];
        assert_eq!(
            (h.hostname.as_str(), h.port, h.user.as_str()),
            ("gw.example.com", 2222, "tunnel")
        );
        assert_eq!(h.identity_files, [std::path::PathBuf::from("/k/id")]);
        assert_eq!(
            h.certificate_files,
            [std::path::PathBuf::from("/k/id-ca.pub")]
        );
        assert_eq!(h.keepalive_interval, std::time::Duration::from_secs(5));
        assert_eq!(h.host_key_policy, crate::config::HostKeyPolicy::AcceptNew);
        let f: Vec<(String, String, String)> = c
            .forwards
            .iter()
            .map(|f| {
                (
                    f.spec.kind_name().into(),
                    f.spec.listen_text(),
                    f.spec.connect_text(),
                )
            })
            .collect();
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            f,
            [
                s("local", "127.0.0.1:5432", "db.internal:5432"),
                s("local", "127.0.0.2:6000", "[fd00::1]:6000"),
                s("local", "/tmp/l.sock", "/run/pg.sock"),
                s("remote", "127.0.0.1:0", "localhost:3000"),
                s("remote-dynamic", "127.0.0.1:1081", "-"),
                s("remote-dynamic", "[::1]:0", "-"),
                s("remote", "127.0.0.1:8080", "/run/app.sock"),
                s("dynamic", "127.0.0.1:1080", "-"),
            ]
        );
    }

    #[test]
    fn jump_hosts_become_a_chain_of_hosts() {
        let c = config(&[
            "-J",
            "ops@gw.example.com:2222,[fd00::1]:22",
            "-D",
            "1080",
            "db.internal",
        ]);
        let db = &c.hosts["db.internal"];
        assert_eq!(db.hostname, "db.internal");
        assert_eq!(
            db.route,
            crate::config::Route::Jump(vec!["gw.example.com".into(), "jump2".into()])
        );
        let gw = &c.hosts["gw.example.com"];
        assert_eq!((gw.user.as_str(), gw.port), ("ops", 2222));
        assert_eq!(c.hosts["jump2"].hostname, "fd00::1");
        assert_eq!(
            c.daemon.ssh_config,
            Env::from_process().home.map(|h| h.join(".ssh/config"))
        );
    }

    #[test]
    fn explicit_public_bind_is_allowed_like_ssh() {
        let c = config(&["-D", "0.0.0.0:1080", "h.example"]);
        assert_eq!(c.forwards[0].spec.listen_text(), "0.0.0.0:1080");
    }

    #[test]
    fn bad_options_are_usage_errors() {
        assert!(
            to_toml(&args(&["h"]))
                .unwrap_err()
                .contains("nothing to forward")
        );
        assert!(
            to_toml(&args(&["-L", "1:2", "h"]))
                .unwrap_err()
                .contains("expected [BIND:]PORT")
        );
        assert!(
            to_toml(&args(&[
                "-D",
                "1080",
                "-o",
                "StrictHostKeyChecking=no",
                "h"
            ]))
            .unwrap_err()
            .contains("always verifies")
        );
        assert!(
            to_toml(&args(&["-D", "1080", "-o", "novalue", "h"]))
                .unwrap_err()
                .contains("KEY=VALUE")
        );
        let text = to_toml(&args(&["-D", "1080", "-o", "bogus_key=1", "h"])).unwrap();
        assert!(Config::parse(&text, Path::new("c"), &Env::from_process()).is_err());
    }
}
