//! `warren status`: ask a running daemon over its control socket; tables or JSON.

use std::io::Write;
use std::path::PathBuf;

use crate::cli::{StatusArgs, exit};
use crate::config::{Config, Env};
use crate::control::{self, ClientError, Request};

/// The control socket to talk to: `-s`, else the configuration's `[daemon] control_socket`
/// (when the default configuration file can be read), else the default control socket.
pub fn socket_path(arg: Option<&PathBuf>, env: &Env) -> PathBuf {
    if let Some(p) = arg {
        return p.clone();
    }
    let file =
        std::env::var_os("WARREN_CONFIG").map_or_else(|| env.default_config_file(), PathBuf::from);
    Config::load_with(&file, env)
        .map(|c| c.daemon.control_socket)
        .unwrap_or_else(|_| env.default_control_socket())
}

/// Prints the daemon's status; exit 69 when no daemon answers.
pub fn status(args: &StatusArgs, env: &Env, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let path = socket_path(args.socket.socket.as_ref(), env);
    match control::request(&path, &Request::Status) {
        Ok(answer) => {
            let doc = answer.status.unwrap_or_default();
            let text = if args.json {
                serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
            } else {
                control::status::render_table(&doc, std::time::SystemTime::now())
            };
            let _ = out.write_all(text.as_bytes());
            exit::OK
        }
        Err(e @ ClientError::NoDaemon { .. }) => {
            let _ = writeln!(err, "warren status: {e}");
            exit::UNAVAILABLE
        }
        Err(e) => {
            let _ = writeln!(err, "warren status: {e}");
            exit::FAILURE
        }
    }
}
