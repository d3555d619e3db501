//! The command line, as clap types (warren(1) and the shell completions are generated from
//! them), and the exit codes it promises.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit codes (sysexits.h where one fits).
pub mod exit {
    /// Success or clean shutdown.
    pub const OK: u8 = 0;
    /// Any other failure, for example a listener that cannot be bound at start-up.
    pub const FAILURE: u8 = 1;
    /// Bad command line (EX_USAGE).
    pub const USAGE: u8 = 64;
    /// No daemon answers on the control socket (EX_UNAVAILABLE).
    pub const UNAVAILABLE: u8 = 69;
    /// The configuration is invalid (EX_CONFIG).
    pub const CONFIG: u8 = 78;
}

/// Always-on SSH tunnels (local -L, remote -R and SOCKS -D forwards) from one TOML file,
/// one supervised SSH session per host.
#[derive(Debug, Parser)]
#[command(name = "warren", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (systemd Type=notify); logs go to stderr.
    Run(RunArgs),
    /// Parse and validate the configuration, print every problem; binds nothing, connects nowhere.
    Check(ConfigArg),
    /// Ask a running daemon for the state of every host and forward.
    Status(StatusArgs),
    /// Ask a running daemon to re-read its configuration (same as SIGHUP).
    Reload(SocketArg),
    /// Ask a running daemon to reconnect one host now (skipping its backoff wait).
    Reconnect(ReconnectArgs),
    /// Ask a running daemon to start its binary anew and hand it every socket (same as SIGUSR2).
    Upgrade(SocketArg),
    /// Ad-hoc tunnels without a file, with ssh's options (`-N -L ... user@host` as written for
    /// ssh or autossh works); `--print-config` turns the command line into a configuration file.
    Connect(Box<ConnectArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(CompletionsArgs),
    /// Print the warren(1) manual page (roff) to stdout.
    #[command(hide = true)]
    Man,
}

/// `warren completions`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// `-c FILE`.
#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// Configuration file [default: $WARREN_CONFIG, else /etc/warren/warren.toml as root,
    /// else $XDG_CONFIG_HOME/warren/warren.toml]
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        env = "WARREN_CONFIG"
    )]
    pub config: Option<PathBuf>,
}

/// Log output options of `run` and `connect`.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter, for example `info` or `warren=debug,russh=info` [default: $RUST_LOG, else info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colour only on a terminal).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// `warren run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub log: LogArgs,
}

/// `-s SOCKET`.
#[derive(Debug, Clone, Args)]
pub struct SocketArg {
    /// Control socket [default: [daemon] control_socket of the config, else
    /// $RUNTIME_DIRECTORY/warren.sock, /run/warren/warren.sock as root, $XDG_RUNTIME_DIR/warren.sock]
    #[arg(short = 's', long = "socket", value_name = "SOCKET")]
    pub socket: Option<PathBuf>,
}

/// `warren status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print one JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub socket: SocketArg,
}

/// `warren reconnect`.
#[derive(Debug, Clone, Args)]
pub struct ReconnectArgs {
    /// The host, as `warren status` names it.
    #[arg(value_name = "HOST")]
    pub host: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub socket: SocketArg,
}

/// `warren connect`.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Local forward: [BIND:]PORT:HOST:HOSTPORT or [BIND:]PORT:/remote/socket (repeatable).
    #[arg(short = 'L', value_name = "SPEC")]
    pub local: Vec<String>,
    /// Remote forward: [BIND:]PORT:HOST:HOSTPORT, or [BIND:]PORT alone for a SOCKS and HTTP
    /// CONNECT proxy on the server whose connections leave from here (repeatable).
    #[arg(short = 'R', value_name = "SPEC")]
    pub remote: Vec<String>,
    /// Dynamic SOCKS forward: [BIND:]PORT (repeatable).
    #[arg(short = 'D', value_name = "SPEC")]
    pub dynamic: Vec<String>,
    /// Jump hosts: [USER@]HOST[:PORT][,...].
    #[arg(short = 'J', value_name = "JUMPS")]
    pub jump: Option<String>,
    /// Identity file (repeatable).
    #[arg(short = 'i', value_name = "IDENTITY")]
    pub identity: Vec<PathBuf>,
    /// SSH port.
    #[arg(short = 'p', value_name = "PORT")]
    pub port: Option<u16>,
    /// Login user.
    #[arg(short = 'l', value_name = "USER")]
    pub user: Option<String>,
    /// A host setting of the config file (`-o keepalive_interval=5s`) or the OpenSSH option of
    /// the same meaning (`-o ServerAliveInterval=30`, `UserKnownHostsFile`, `AddressFamily`...);
    /// `-o ExitOnForwardFailure=yes` exits (1) when a forward fails at start instead of
    /// retrying it (repeatable).
    #[arg(short = 'o', value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// ssh_config file to read instead of ~/.ssh/config; `none` reads none (as ssh -F).
    #[arg(short = 'F', value_name = "FILE")]
    pub ssh_config: Option<String>,
    /// Connect to the server over IPv4 only (ssh's AddressFamily inet).
    #[arg(short = '4', conflicts_with = "inet6")]
    pub inet4: bool,
    /// Connect to the server over IPv6 only (ssh's AddressFamily inet6).
    #[arg(short = '6')]
    pub inet6: bool,
    /// Quiet: log warnings and errors only (as --log-level warn).
    #[arg(short = 'q', conflicts_with = "verbose")]
    pub quiet: bool,
    /// Verbose: -v logs debug lines, -vv adds russh's, -vvv traces everything.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Accepted and ignored, as ssh's -N: warren never runs a remote command.
    #[arg(short = 'N')]
    pub no_command: bool,
    /// Accepted and ignored, as ssh's -T: warren never asks for a terminal.
    #[arg(short = 'T')]
    pub no_tty: bool,
    /// Accepted and ignored, as ssh's -n: warren reads nothing from stdin.
    #[arg(short = 'n')]
    pub null_stdin: bool,
    /// autossh's monitor port (`-M 0`): accepted and ignored, warren's keepalives watch the
    /// session.
    #[arg(short = 'M', value_name = "PORT")]
    pub monitor_port: Option<String>,
    /// Refused (exit 64): warren does not fork into the background; run it under systemd
    /// (`warren run` with the file `--print-config` writes) or a shell's `&`. Ignored with
    /// `--print-config`, so that an `autossh -f ...` line can be converted as written.
    #[arg(short = 'f')]
    pub background: bool,
    /// Print the equivalent configuration file (for `warren run -c`) and exit: the way from
    /// ssh and autossh command lines to a daemon.
    #[arg(long)]
    pub print_config: bool,
    /// Announce the forwards as JSON objects, one per line (default: `-L LISTEN -> CONNECT`).
    #[arg(long)]
    pub json: bool,
    /// Exit (0) once no connection has been open for this long after the first one, e.g. `30s`.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub exit_when_idle: Option<std::time::Duration>,
    /// [USER@]HOST[:PORT], or ssh://[USER@]HOST[:PORT] (`[IPv6]` in brackets); a Host alias
    /// of the ssh_config, whose settings and LocalForward/RemoteForward/DynamicForward lines
    /// apply as with ssh
    #[arg(value_name = "DESTINATION")]
    pub destination: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub log: LogArgs,
}

/// A duration argument, as the configuration file writes them (`500ms`, `30s`, `1m30s`).
fn duration_arg(text: &str) -> Result<std::time::Duration, String> {
    crate::config::parse_duration(text)
}

impl Cli {
    /// Parses `args`; `Err` carries clap's message and the exit code to use
    /// (0 for `--help`/`--version`, 64 for a bad command line).
    pub fn parse_args<I, T>(args: I) -> Result<Self, (clap::Error, u8)>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(args).map_err(|e| {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    exit::OK
                }
                _ => exit::USAGE,
            };
            (e, code)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_subcommand() {
        let cli = Cli::parse_args(["warren", "check", "-c", "/x.toml"]).unwrap();
        assert!(
            matches!(cli.command, Command::Check(ConfigArg { config: Some(p) }) if p == std::path::Path::new("/x.toml"))
        );
        let cli = Cli::parse_args([
            "warren",
            "run",
            "--log-format",
            "json",
            "--log-level",
            "debug",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("run")
        };
        assert_eq!(run.log.log_format, LogFormat::Json);
        let cli = Cli::parse_args(["warren", "status", "--json", "-s", "/s"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Status(StatusArgs { json: true, .. })
        ));
        let cli = Cli::parse_args(["warren", "reload"]).unwrap();
        assert!(matches!(cli.command, Command::Reload(_)));
        let cli = Cli::parse_args(["warren", "reconnect", "db", "-s", "/s"]).unwrap();
        assert!(
            matches!(cli.command, Command::Reconnect(ReconnectArgs { ref host, .. }) if host == "db")
        );
        let cli = Cli::parse_args([
            "warren",
            "connect",
            "-L",
            "5432:db:5432",
            "-L",
            "6000:db:6000",
            "-D",
            "1080",
            "-R",
            "9000:localhost:3000",
            "-J",
            "a,b",
            "-i",
            "/k",
            "-p",
            "2222",
            "-l",
            "u",
            "-o",
            "keepalive_interval=5s",
            "h.example.com",
        ])
        .unwrap();
        let Command::Connect(c) = cli.command else {
            panic!("connect")
        };
        assert_eq!(c.local.len(), 2);
        assert_eq!(
            (c.port, c.user.as_deref(), c.destination.as_str()),
            (Some(2222), Some("u"), "h.example.com")
        );
    }

    #[test]
    fn bad_command_lines_exit_64_and_help_exits_0() {
        for bad in [
            &["warren"][..],
            &["warren", "frobnicate"],
            &["warren", "run", "--bogus"],
            &["warren", "connect"],
            &["warren", "run", "--log-format", "xml"],
        ] {
            let (_, code) = Cli::parse_args(bad).unwrap_err();
            assert_eq!(code, exit::USAGE, "{bad:?}");
        }
        let (_, code) = Cli::parse_args(["warren", "--help"]).unwrap_err();
        assert_eq!(code, exit::OK);
        let (_, code) = Cli::parse_args(["warren", "--version"]).unwrap_err();
        assert_eq!(code, exit::OK);
    }
}
