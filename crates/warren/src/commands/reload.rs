//! `warren reload`: ask a running daemon to re-read its file (same as SIGHUP) and print what
//! changed, or the problems of a file it rejected (exit 78; the running configuration stays).
//! `warren reconnect HOST`: have it replace one host's session now. `warren upgrade`: have it
//! hand everything over to a new process of its binary.

use std::io::Write;
use std::time::Duration;

use crate::cli::{ReconnectArgs, SocketArg, exit};
use crate::config::Env;
use crate::control::{self, ClientError, Request};

/// How long a reload may take: stopping forwards waits for their ingresses to close.
const RELOAD_LIMIT: Duration = Duration::from_secs(120);

/// Asks for a reload; exit 0 when applied, 78 when the new file was rejected, 69 when no
/// daemon answers.
pub fn reload(args: &SocketArg, env: &Env, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let path = super::status::socket_path(args.socket.as_ref(), env);
    let answer = match control::exchange(&path, &Request::Reload, RELOAD_LIMIT) {
        Ok(a) => a,
        Err(e @ ClientError::NoDaemon { .. }) => {
            let _ = writeln!(err, "warren reload: {e}");
            return exit::UNAVAILABLE;
        }
        Err(e) => {
            let _ = writeln!(err, "warren reload: {e}");
            return exit::FAILURE;
        }
    };
    if answer.ok {
        for change in answer.changes.unwrap_or_default() {
            let _ = writeln!(out, "{change}");
        }
        return exit::OK;
    }
    let error = answer.error.as_deref().unwrap_or("unknown error");
    let problems = answer.problems.unwrap_or_default();
    let _ = writeln!(err, "warren reload: {error}");
    for p in &problems {
        let _ = writeln!(err, "{p}");
    }
    if problems.is_empty() {
        exit::FAILURE
    } else {
        exit::CONFIG
    }
}

/// Asks for host `args.host` to reconnect now; exit 0 when done, 1 for an unknown host, 69
/// when no daemon answers.
pub fn reconnect(args: &ReconnectArgs, env: &Env, err: &mut dyn Write) -> u8 {
    let path = super::status::socket_path(args.socket.socket.as_ref(), env);
    let request = Request::Reconnect {
        host: args.host.clone(),
    };
    match control::request(&path, &request) {
        Ok(_) => exit::OK,
        Err(e @ ClientError::NoDaemon { .. }) => {
            let _ = writeln!(err, "warren reconnect: {e}");
            exit::UNAVAILABLE
        }
        Err(e) => {
            let _ = writeln!(err, "warren reconnect {}: {e}", args.host);
            exit::FAILURE
        }
    }
}

/// How long an upgrade may take: the new process starts its sessions (each within its
/// `connect_timeout`) before it says it is ready.
const UPGRADE_LIMIT: Duration = Duration::from_secs(300);

/// Asks for an upgrade in place; exit 0 once the new process took over (its pid printed), 1
/// when it did not (the old one keeps serving; the reason printed), 69 when no daemon answers.
pub fn upgrade(args: &SocketArg, env: &Env, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let path = super::status::socket_path(args.socket.as_ref(), env);
    match control::exchange(&path, &Request::Upgrade, UPGRADE_LIMIT) {
        Ok(answer) if answer.ok => {
            let pid = answer.pid.map_or_else(|| "?".into(), |p| p.to_string());
            let _ = writeln!(
                out,
                "upgraded: new process {pid}; the old one drains and exits"
            );
            exit::OK
        }
        Ok(answer) => {
            let why = answer.error.as_deref().unwrap_or("unknown error");
            let _ = writeln!(
                err,
                "warren upgrade: {why}; the running daemon keeps serving"
            );
            exit::FAILURE
        }
        Err(e @ ClientError::NoDaemon { .. }) => {
            let _ = writeln!(err, "warren upgrade: {e}");
            exit::UNAVAILABLE
        }
        Err(e) => {
            let _ = writeln!(err, "warren upgrade: {e}");
            exit::FAILURE
        }
    }
}
