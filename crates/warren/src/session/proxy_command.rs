//! A ProxyCommand as a transport: `/bin/sh -c "exec CMD"` in a process group of its own,
//! started off the async threads, its stderr logged in bounded lines, and the whole group
//! killed when the session ends (a command that forks, such as `sh -c 'nc %h %p | cat'`,
//! leaves nothing behind).

use std::process::Stdio;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, DuplexStream};
use tokio::process::{Child, Command};
use tracing::{Instrument, debug, info_span, warn};

use super::error::SessionError;
use super::transport::{expand_tokens, relay};
use crate::config::HostConfig;

/// The longest stderr line logged whole; the rest of a longer line is cut.
const STDERR_LINE: usize = 4096;

/// Starts the ProxyCommand `cmd` for `host`: its stdout/stdin are the transport.
pub async fn start(cmd: &str, host: &HostConfig) -> Result<DuplexStream, SessionError> {
    // `exec`: the shell becomes the command, so that the process warren watches is the
    // command itself. fork and exec are blocking system calls: a blocking thread makes them
    // (it has the runtime's context, which tokio's child reaping needs).
    let command = exec_line(&expand_tokens(cmd, host));
    let spawn_command = command.clone();
    let mut child = tokio::task::spawn_blocking(move || {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(&spawn_command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
    })
    .await
    .map_err(|e| SessionError::ProxyCommand(std::io::Error::other(e)))?
    .map_err(SessionError::ProxyCommand)?;
    let group = ProcessGroup::of(&child);
    let missing = || SessionError::ProxyCommand(std::io::Error::other("no pipe to the command"));
    let stdin = child.stdin.take().ok_or_else(missing)?;
    let stdout = child.stdout.take().ok_or_else(missing)?;
    let span = info_span!("proxy_command", host = %host.name);
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(log_lines(stderr).instrument(span.clone()));
    }
    debug!(command = %command, "proxy_command started");
    let guard = (group, child);
    Ok(relay(tokio::io::join(stdout, stdin), guard, span))
}

/// The shell line for a command: `exec CMD`, as OpenSSH runs it, unless it starts with `exec`
/// already (`exec exec nc` would look for a program named `exec`).
fn exec_line(cmd: &str) -> String {
    let trimmed = cmd.trim_start();
    if trimmed.starts_with("exec ") || trimmed.starts_with("exec\t") {
        trimmed.to_string()
    } else {
        format!("exec {trimmed}")
    }
}

/// The command's process group (its id is the command's pid); SIGKILLed on drop. Declared
/// before the `Child` in the guard, so the group goes first, then tokio reaps the child.
struct ProcessGroup(Option<Pid>);

impl ProcessGroup {
    fn of(child: &Child) -> Self {
        Self(
            child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(Pid::from_raw),
        )
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // ESRCH (already gone) is the usual case for a command that exited.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// Logs each stderr line of the command at warn, cutting lines at [`STDERR_LINE`] bytes so
/// that a command writing without newlines cannot make warren hold its output.
async fn log_lines(mut stderr: impl AsyncRead + Unpin) {
    let mut cutter = LineCutter::default();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for line in cutter.feed(buf.get(..n).unwrap_or_default()) {
            warn!(stderr = %line, "proxy_command says");
        }
    }
    if let Some(line) = cutter.finish() {
        warn!(stderr = %line, "proxy_command says");
    }
}

/// Splits a byte stream into lines of at most [`STDERR_LINE`] bytes (a longer line is cut
/// there and marked; its rest is skipped up to the next newline).
#[derive(Default)]
struct LineCutter {
    line: Vec<u8>,
    cut: bool,
}

impl LineCutter {
    fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                out.push(self.take());
            } else if self.line.len() < STDERR_LINE {
                self.line.push(b);
            } else {
                self.cut = true;
            }
        }
        out
    }

    fn finish(&mut self) -> Option<String> {
        (!self.line.is_empty() || self.cut).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let mut text = String::from_utf8_lossy(&self.line)
            .trim_end_matches('\r')
            .to_string();
        if std::mem::take(&mut self.cut) {
            text.push_str(" [line cut at 4 KiB]");
        }
        self.line.clear();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_execd_once() {
        assert_eq!(exec_line("nc %h %p"), "exec nc %h %p");
        assert_eq!(exec_line("  exec nc h p"), "exec nc h p");
        assert_eq!(exec_line("executor --x"), "exec executor --x");
    }

    #[test]
    fn lines_are_split_and_cut_at_4_kib() {
        let mut c = LineCutter::default();
        assert_eq!(c.feed(b"one\r\ntw"), vec!["one".to_string()]);
        assert_eq!(c.feed(b"o\n"), vec!["two".to_string()]);
        let long = vec![b'x'; 3 * STDERR_LINE];
        assert!(c.feed(&long).is_empty());
        let lines = c.feed(b"xx\nlast");
        assert_eq!(lines.len(), 1);
        assert_eq!(
            lines[0],
            format!("{} [line cut at 4 KiB]", "x".repeat(STDERR_LINE))
        );
        assert_eq!(c.finish(), Some("last".to_string()));
        assert_eq!(c.finish(), None);
    }

    #[tokio::test]
    async fn the_whole_group_is_killed_with_the_transport() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        // The command forks a grandchild that would outlive a plain kill of the command.
        let cmd = format!("sh -c 'sleep 600 & echo $! > {}; wait'", pidfile.display());
        let cfg = crate::config::Config::parse(
            &format!("[hosts.p]\nproxy_command = \"{cmd}\"\n"),
            std::path::Path::new("/w.toml"),
            &crate::config::Env::from_process(),
        )
        .unwrap();
        let transport = start(&cmd, &cfg.hosts["p"]).await.unwrap();
        let grandchild = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                if let Some(pid) = std::fs::read_to_string(&pidfile)
                    .ok()
                    .and_then(|t| t.trim().parse::<i32>().ok())
                {
                    return pid;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        let alive = |pid: i32| nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok();
        assert!(alive(grandchild));
        drop(transport);
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            // A killed process stays a zombie until its parent (the killed shell, then init)
            // reaps it; `kill(pid, 0)` fails once it is reaped.
            while alive(grandchild) && !is_zombie(grandchild) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the grandchild outlived the transport");
    }

    fn is_zombie(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true)
    }
}
