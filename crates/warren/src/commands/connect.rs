//! `warren connect`: ad-hoc tunnels from `ssh -N`-style options. The options become a
//! configuration file's text, validated and run by exactly the code of `warren run`.

use std::fmt::Write as _;
use std::path::Path;

use tracing::error;

use crate::cli::{ConnectArgs, exit};
use crate::config::{Config, Env};

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
    super::run::serve_blocking(config, None)
}

/// Translates the command line into configuration text.
pub fn to_toml(args: &ConnectArgs) -> Result<String, String> {
    if args.local.is_empty() && args.remote.is_empty() && args.dynamic.is_empty() {
        return Err("nothing to forward: give at least one -L, -R or -D".into());
    }
    let (user, host, port) = split_destination(&args.destination)?;
    // Like ssh, read ~/.ssh/config (a missing file is an empty one): a host written by its
    // alias gets its HostName, User, Port, ProxyJump... from there; the options here win.
    let mut hosts = String::from("[daemon]\nssh_config = true\n\n");
    let mut dest = Table::default();
    let dest_name = table_name(&host, "destination");
    if dest_name != host {
        dest.set("hostname", quote(&host));
    }
    if let Some(u) = args.user.clone().or(user) {
        dest.set("user", quote(&u));
    }
    if let Some(p) = args.port.or(port) {
        dest.set("port", p.to_string());
    }
    if !args.identity.is_empty() {
        let files: Vec<String> = args
            .identity
            .iter()
            .map(|p| quote(&p.to_string_lossy()))
            .collect();
        dest.set("identity_files", format!("[{}]", files.join(", ")));
    }
    if let Some(jumps) = &args.jump {
        let mut names = Vec::new();
        for (i, hop) in jumps.split(',').enumerate() {
            let (u, h, p) = split_destination(hop.trim())?;
            let name = table_name(&h, &format!("jump{}", i + 1));
            let mut t = Table::default();
            if name != h {
                t.set("hostname", quote(&h));
            }
            if let Some(u) = u {
                t.set("user", quote(&u));
            }
            if let Some(p) = p {
                t.set("port", p.to_string());
            }
            t.write(&mut hosts, &name);
            names.push(quote(&name));
        }
        dest.set("jump", format!("[{}]", names.join(", ")));
    }
    for o in &args.options {
        let (k, v) = option(o)?;
        dest.set(&k, v);
    }
    dest.write(&mut hosts, &dest_name);

    let mut out = hosts;
    for spec in &args.local {
        let (listen, connect, public) = split_forward(spec, "-L")?;
        forward(
            &mut out,
            &dest_name,
            "local",
            &listen,
            Some(&connect),
            public,
        );
    }
    for spec in &args.remote {
        let (listen, connect, _) = split_forward(spec, "-R")?;
        forward(
            &mut out,
            &dest_name,
            "remote",
            &listen,
            Some(&connect),
            false,
        );
    }
    for spec in &args.dynamic {
        let parts = split_colons(spec);
        let (listen, public) = match parts.as_slice() {
            [port] => (port.clone(), false),
            [bind, port] => (join_bind(bind, port), is_explicit_bind(bind)),
            _ => return Err(format!("-D {spec}: expected [BIND:]PORT")),
        };
        forward(&mut out, &dest_name, "dynamic", &listen, None, public);
    }
    Ok(out)
}

#[derive(Default)]
struct Table(Vec<(String, String)>);

impl Table {
    /// Later values win (an `-o` after `-p` overrides it, as in ssh the first wins, but
    /// here the explicit `-o` is the more specific).
    fn set(&mut self, key: &str, value: String) {
        self.0.retain(|(k, _)| k != key);
        self.0.push((key.to_string(), value));
    }

    fn write(&self, out: &mut String, name: &str) {
        let _ = writeln!(out, "[hosts.{}]", quote(name));
        for (k, v) in &self.0 {
            let _ = writeln!(out, "{k} = {v}");
        }
        out.push('\n');
    }
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

fn forward(
    out: &mut String,
    host: &str,
    kind: &str,
    listen: &str,
    connect: Option<&str>,
    public: bool,
) {
    let _ = writeln!(
        out,
        "[[forward]]\nhost = \"{host}\"\ntype = \"{kind}\"\nlisten = {}",
        quote(listen)
    );
    if let Some(c) = connect {
        let _ = writeln!(out, "connect = {}", quote(c));
    }
    if public {
        out.push_str("allow_public = true\n");
    }
    out.push('\n');
}

fn quote(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{:04x}", u32::from(c));
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// `[user@]host[:port]`, with `[v6]:port` brackets.
fn split_destination(d: &str) -> Result<(Option<String>, String, Option<u16>), String> {
    let (user, rest) = match d.rsplit_once('@') {
        Some((u, r)) if !u.is_empty() => (Some(u.to_string()), r),
        Some(_) => return Err(format!("{d}: empty user before '@'")),
        None => (None, d),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (h, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("{d}: missing ']'"))?;
        (h.to_string(), after.strip_prefix(':'))
    } else if rest.matches(':').count() == 1 {
        let (h, p) = rest.split_once(':').unwrap_or((rest, ""));
        (h.to_string(), Some(p))
    } else {
        (rest.to_string(), None)
    };
    if host.is_empty() {
        return Err(format!("{d}: no host"));
    }
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| format!("{d}: bad port \"{p}\""))
        })
        .transpose()?;
    Ok((user, host, port))
}

/// Splits on ':' outside `[...]`.
fn split_colons(s: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut depth = 0;
    for c in s.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ':' if depth == 0 => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    parts
}

fn is_explicit_bind(bind: &str) -> bool {
    !bind.is_empty() && bind != "localhost" && bind != "127.0.0.1" && bind != "[::1]"
}

fn join_bind(bind: &str, port: &str) -> String {
    if bind.is_empty() {
        port.to_string()
    } else {
        format!("{bind}:{port}")
    }
}

/// ssh's forward grammar: `[BIND:]PORT:HOST:HOSTPORT`, `[BIND:]PORT:/socket`,
/// `/socket:HOST:HOSTPORT`, `/socket:/socket`. Returns (listen, connect, explicit public bind).
fn split_forward(spec: &str, flag: &str) -> Result<(String, String, bool), String> {
    let p = split_colons(spec);
    let is_path = |s: &String| s.starts_with('/');
    let r = match p.as_slice() {
        [a, b] if is_path(b) => (a.clone(), b.clone(), false),
        [a, h, hp] if is_path(a) => (a.clone(), format!("{h}:{hp}"), false),
        [bind, port, path] if is_path(path) => {
            (join_bind(bind, port), path.clone(), is_explicit_bind(bind))
        }
        [port, h, hp] => (port.clone(), format!("{h}:{hp}"), false),
        [bind, port, h, hp] => (
            join_bind(bind, port),
            format!("{h}:{hp}"),
            is_explicit_bind(bind),
        ),
        _ => return Err(format!("{flag} {spec}: expected [BIND:]PORT:HOST:HOSTPORT")),
    };
    Ok(r)
}

/// `-o KEY=VALUE`: a host setting of the configuration file, or the OpenSSH option of the
/// same meaning.
fn option(o: &str) -> Result<(String, String), String> {
    let (k, v) = o
        .split_once('=')
        .or_else(|| o.split_once(char::is_whitespace))
        .ok_or_else(|| format!("-o {o}: expected KEY=VALUE"))?;
    let (k, v) = (k.trim(), v.trim());
    let secs = |v: &str| {
        if v.bytes().all(|b| b.is_ascii_digit()) {
            format!("{v}s")
        } else {
            v.to_string()
        }
    };
    let (key, value) = match k.to_ascii_lowercase().as_str() {
        "stricthostkeychecking" => {
            let policy = match v.to_ascii_lowercase().as_str() {
                "yes" => "strict",
                "accept-new" => "accept-new",
                other => {
                    return Err(format!(
                        "-o StrictHostKeyChecking={other}: warren always verifies host keys; use yes or accept-new"
                    ));
                }
            };
            ("host_key_policy", quote(policy))
        }
        "userknownhostsfile" => ("known_hosts", list(v, ' ')),
        "identityfile" => ("identity_files", list(v, ',')),
        "certificatefile" => ("certificate_files", list(v, ',')),
        "serveraliveinterval" => ("keepalive_interval", quote(&secs(v))),
        "serveralivecountmax" => ("keepalive_count_max", v.to_string()),
        "connecttimeout" => ("connect_timeout", quote(&secs(v))),
        "proxycommand" => ("proxy_command", quote(v)),
        "hostname" => ("hostname", quote(v)),
        "user" => ("user", quote(v)),
        "port" => ("port", v.to_string()),
        _ => {
            let key = k.to_string();
            let value = match key.as_str() {
                "identity_files"
                | "certificate_files"
                | "known_hosts"
                | "host_key_fingerprints" => list(v, ','),
                "port" | "keepalive_count_max" => v.to_string(),
                "agent" => v.to_string(),
                _ => quote(v),
            };
            return Ok((key, value));
        }
    };
    Ok((key.to_string(), value))
}

fn list(v: &str, sep: char) -> String {
    let items: Vec<String> = v
        .split(sep)
        .filter(|s| !s.is_empty())
        .map(|s| quote(s.trim()))
        .collect();
    format!("[{}]", items.join(", "))
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
