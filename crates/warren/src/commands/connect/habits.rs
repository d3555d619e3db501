//! ssh's habits on `warren connect`: `-q` and `-v`/`-vv`/`-vvv` as log levels, `-f` refused
//! with the way to a service instead. (`-N`, `-T`, `-n` and autossh's `-M` are accepted and
//! never read: warren runs no command, asks for no terminal, reads no stdin and watches the
//! session with its own keepalives.)

use crate::cli::{ConnectArgs, LogArgs};

/// What `-f` gets instead of a fork.
pub(super) const NO_BACKGROUND: &str = "warren connect: -f is not supported: warren does not fork into the \
background. Keep tunnels up as a service instead: write the command line as a file with \
`warren connect ... --print-config > warren.toml` and run `warren run -c warren.toml` under \
systemd (systemd/warren.service), or start warren connect with the shell's `&`";

/// The log options of `args`: `--log-level` if given, else what `-q`/`-v` ask for, else
/// `$RUST_LOG` or `info` (as `warren run`).
pub(super) fn log_args(args: &ConnectArgs) -> LogArgs {
    let mut log = args.log.clone();
    if log.log_level.is_none() {
        log.log_level = level(args.quiet, args.verbose).map(String::from);
    }
    log
}

/// ssh's `-q` is warnings only; `-v` debug; `-vv` russh's debug lines too; `-vvv` everything.
fn level(quiet: bool, verbose: u8) -> Option<&'static str> {
    match (quiet, verbose) {
        (true, _) => Some("warn"),
        (false, 0) => None,
        (false, 1) => Some("debug"),
        (false, 2) => Some("debug,russh=debug"),
        (false, _) => Some("trace,russh=trace"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cli::Cli;
    use crate::commands::connect::test_args as args;

    #[test]
    fn q_and_v_are_log_levels_and_log_level_wins() {
        for (line, want) in [
            (&["h"][..], None),
            (&["-q", "h"], Some("warn")),
            (&["-v", "h"], Some("debug")),
            (&["-vv", "h"], Some("debug,russh=debug")),
            (&["-v", "-v", "h"], Some("debug,russh=debug")),
            (&["-vvv", "h"], Some("trace,russh=trace")),
            (&["-vvvv", "h"], Some("trace,russh=trace")),
            (&["-v", "--log-level", "info", "h"], Some("info")),
            (&["-q", "--log-level", "debug", "h"], Some("debug")),
        ] {
            assert_eq!(log_args(&args(line)).log_level.as_deref(), want, "{line:?}");
        }
    }

    #[test]
    fn ssh_and_autossh_flags_parse() {
        let a = args(&[
            "-N",
            "-T",
            "-n",
            "-f",
            "-4",
            "-M",
            "0",
            "-F",
            "none",
            "--print-config",
            "h",
        ]);
        assert!(a.no_command && a.no_tty && a.null_stdin && a.background && a.inet4);
        assert!(a.print_config && !a.inet6);
        assert_eq!(
            (a.monitor_port.as_deref(), a.ssh_config.as_deref()),
            (Some("0"), Some("none"))
        );
        // Bundled, as ssh users write them.
        let a = args(&["-NTn6", "-L", "1:h:2", "h"]);
        assert!(a.no_command && a.no_tty && a.null_stdin && a.inet6 && !a.inet4);
        assert_eq!(a.local, ["1:h:2"]);
    }

    #[test]
    fn contradictory_flags_are_usage_errors() {
        for bad in [
            &["-4", "-6", "h"][..],
            &["-q", "-v", "h"],
            &["-F"],
            &["-M"],
            &["-x", "h"],
        ] {
            let mut full = vec!["warren", "connect"];
            full.extend_from_slice(bad);
            let (_, code) = Cli::parse_args(full).unwrap_err();
            assert_eq!(code, crate::cli::exit::USAGE, "{bad:?}");
        }
    }
}
