//! The `warren` binary: parse the command line and hand over to the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use warren::cli::{Cli, Command};
use warren::config::Env;

fn main() -> ExitCode {
    let cli = match Cli::parse_args(std::env::args_os()) {
        Ok(cli) => cli,
        Err((e, code)) => {
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let env = Env::from_process();
    let code = match cli.command {
        Command::Check(arg) => {
            warren::commands::check(&arg, &env, &mut std::io::stdout(), &mut std::io::stderr())
        }
        Command::Run(args) => warren::commands::run(&args, &env),
        Command::Connect(args) => warren::commands::connect(&args, &env),
        Command::Status(args) => {
            warren::commands::status(&args, &env, &mut std::io::stdout(), &mut std::io::stderr())
        }
        Command::Reconnect(args) => {
            warren::commands::reconnect(&args, &env, &mut std::io::stderr())
        }
        Command::Upgrade(args) => {
            warren::commands::upgrade(&args, &env, &mut std::io::stdout(), &mut std::io::stderr())
        }
        Command::Reload(args) => {
            warren::commands::reload(&args, &env, &mut std::io::stdout(), &mut std::io::stderr())
        }
        Command::Completions(args) => warren::commands::completions(&args, &mut std::io::stdout()),
        Command::Man => match warren::commands::man_page(&mut std::io::stdout()) {
            Ok(()) => warren::cli::exit::OK,
            Err(_) => warren::cli::exit::FAILURE,
        },
    };
    ExitCode::from(code)
}
