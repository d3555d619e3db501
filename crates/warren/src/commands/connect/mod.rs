//! `warren connect`: ad-hoc tunnels from ssh's command line (and the forwards of the
//! destination's ssh_config `Host` blocks). The options become a configuration (a TOML
//! document built with the `toml` crate), validated and run by exactly the code of
//! `warren run`; `--print-config` prints that document instead of running it.

mod announce;
mod document;
mod habits;
mod options;
mod specs;

#[cfg(test)]
mod ssh_habits_tests;

pub(super) use announce::{announce, failure_at_start, idle_for};

use std::io::Write;
use std::path::Path;

use tracing::error;

use crate::cli::{ConnectArgs, exit};
use crate::config::{Config, Env};

/// Runs the tunnels of `args` (or prints them as a file); returns the exit code.
pub fn connect(args: &ConnectArgs, env: &Env) -> u8 {
    crate::logging::init(&habits::log_args(args));
    // `--print-config` on an `autossh -f ...` line is the way out of -f, not a use of it.
    if args.background && !args.print_config {
        eprintln!("{}", habits::NO_BACKGROUND);
        return exit::USAGE;
    }
    let adhoc = match document::to_document(args, env) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("warren connect: {e}");
            return exit::USAGE;
        }
    };
    let text = match toml::to_string(&adhoc.document) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("warren connect: {e}");
            return exit::FAILURE;
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
    if args.print_config {
        let mut out = std::io::stdout().lock();
        return match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => exit::OK,
            Err(_) => exit::FAILURE,
        };
    }
    super::run::serve_blocking(
        config,
        super::run::Mode::Connect {
            json: args.json,
            exit_when_idle: args.exit_when_idle,
            exit_on_forward_failure: adhoc.exit_on_forward_failure,
        },
        crate::handover::Passed::default(),
    )
}

/// Translates the command line (and the ssh_config's forwards for its destination) into
/// configuration text.
pub fn to_toml(args: &ConnectArgs, env: &Env) -> Result<String, String> {
    let adhoc = document::to_document(args, env)?;
    toml::to_string(&adhoc.document).map_err(|e| e.to_string())
}

/// `warren connect LINE`, parsed: for the tests of this module and its children.
#[cfg(test)]
fn test_args(line: &[&str]) -> ConnectArgs {
    let mut full = vec!["warren", "connect"];
    full.extend_from_slice(line);
    match crate::cli::Cli::parse_args(full).unwrap().command {
        crate::cli::Command::Connect(c) => *c,
        _ => unreachable!(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_args as args;

    /// This process's environment with a home that holds no ssh_config.
    fn env() -> Env {
        Env {
            home: Some("/nonexistent-home".into()),
            ..Env::from_process()
        }
    }

    fn config(line: &[&str]) -> Config {
        let text = to_toml(&args(line), &env()).unwrap();
        Config::parse(&text, Path::new("c.toml"), &env()).unwrap_or_else(|e| panic!("{e}\n{text}"))
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
            Some(std::path::PathBuf::from("/nonexistent-home/.ssh/config"))
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
            to_toml(&args(&["h"]), &env())
                .unwrap_err()
                .contains("nothing to forward")
        );
        assert!(
            to_toml(&args(&["-L", "1:2", "h"]), &env())
                .unwrap_err()
                .contains("expected [BIND:]PORT")
        );
        assert!(
            to_toml(
                &args(&["-D", "1080", "-o", "StrictHostKeyChecking=no", "h"]),
                &env()
            )
            .unwrap_err()
            .contains("always verifies")
        );
        assert!(
            to_toml(&args(&["-D", "1080", "-o", "novalue", "h"]), &env())
                .unwrap_err()
                .contains("KEY=VALUE")
        );
        let text = to_toml(&args(&["-D", "1080", "-o", "bogus_key=1", "h"]), &env()).unwrap();
        assert!(Config::parse(&text, Path::new("c"), &env()).is_err());
    }
}
