//! Running the built `warren` binary: output captured line by line, waits on lines, signals, exit codes.

use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::util::{tail, within};

/// The binary under test.
pub const WARREN: &str = env!("CARGO_BIN_EXE_warren");

/// Environment variables a developer's shell may set that would change what warren does.
const SCRUBBED_ENV: &[&str] = &[
    "WARREN_CONFIG",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "SSH_AUTH_SOCK",
    "RUNTIME_DIRECTORY",
    "RUST_LOG",
];

/// Lines of one output stream, and whether it has ended.
#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    eof: bool,
}

/// Reads `stream` line by line into a watch channel.
fn capture(
    stream: impl AsyncRead + Unpin + Send + 'static,
) -> (watch::Receiver<Lines>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(Lines::default());
    let task = tokio::spawn(async move {
        let verbose = std::env::var_os("E2E_VERBOSE").is_some();
        let mut reader = BufReader::new(stream).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if verbose {
                eprintln!("warren| {line}");
            }
            tx.send_modify(|l| l.lines.push(line));
        }
        tx.send_modify(|l| l.eof = true);
    });
    (rx, task)
}

/// A running `warren` process. Killed on drop.
pub struct WarrenProcess {
    child: Child,
    /// `$RUNTIME_DIRECTORY` of this process, so that its default control socket is its own.
    runtime_dir: tempfile::TempDir,
    pid: i32,
    stdout: watch::Receiver<Lines>,
    stderr: watch::Receiver<Lines>,
    readers: [JoinHandle<()>; 2],
}

impl WarrenProcess {
    /// Starts `warren ARGS` with `env` added to a scrubbed environment.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::spawn_command(warren_command(args, env))
    }

    /// Starts `cmd`: warren itself, or a launcher that execs it in the same process (a shell's
    /// `exec`, `systemd-socket-activate`); see [`launcher_command`]. The command (and so any
    /// descriptor it was to hand over) is dropped once the process started.
    pub fn spawn_command(mut cmd: Command) -> anyhow::Result<Self> {
        let runtime_dir = tempfile::tempdir().context("runtime dir")?;
        if !cmd
            .as_std()
            .get_envs()
            .any(|(k, _)| k == "RUNTIME_DIRECTORY")
        {
            cmd.env("RUNTIME_DIRECTORY", runtime_dir.path());
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("spawn warren")?;
        let pid = child.id().context("warren exited at once")? as i32;
        let (stdout, out_task) = capture(child.stdout.take().context("stdout pipe")?);
        let (stderr, err_task) = capture(child.stderr.take().context("stderr pipe")?);
        Ok(WarrenProcess {
            child,
            runtime_dir,
            pid,
            stdout,
            stderr,
            readers: [out_task, err_task],
        })
    }

    /// The control socket this process uses unless its config names another.
    pub fn default_control_socket(&self) -> std::path::PathBuf {
        self.runtime_dir.path().join("warren.sock")
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Stderr lines so far (warren logs there).
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.borrow().lines.clone()
    }

    /// Stderr so far as one string.
    pub fn stderr_text(&self) -> String {
        self.stderr.borrow().lines.join("\n")
    }

    /// Stdout so far as one string.
    pub fn stdout_text(&self) -> String {
        self.stdout.borrow().lines.join("\n")
    }

    /// How many stderr lines there are so far; pass it to [`WarrenProcess::wait_for_stderr_after`].
    pub fn stderr_len(&self) -> usize {
        self.stderr.borrow().lines.len()
    }

    /// Waits for a stderr line matching `pred`; fails on timeout or when stderr ends.
    pub async fn wait_for_stderr(
        &self,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        self.wait_for_stderr_after(0, limit, pred).await
    }

    /// Like [`WarrenProcess::wait_for_stderr`], considering only lines from index `from` on.
    pub async fn wait_for_stderr_after(
        &self,
        from: usize,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        wait_lines(&self.stderr, "stderr", limit, |l| {
            l.lines.iter().skip(from).find(|s| pred(s)).cloned()
        })
        .await
    }

    /// Waits until stdout has at least `n` lines; returns the first `n`. Fails on timeout or
    /// when stdout ends before (`warren connect` announces its forwards there).
    pub async fn wait_for_stdout_lines(
        &self,
        n: usize,
        limit: Duration,
    ) -> anyhow::Result<Vec<String>> {
        wait_lines(&self.stdout, "stdout", limit, |l| {
            (l.lines.len() >= n).then(|| l.lines[..n].to_vec())
        })
        .await
        .with_context(|| format!("stderr tail:\n{}", tail(&self.stderr_text(), 40)))
    }

    /// Sends `signal` to warren.
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        kill(Pid::from_raw(self.pid), signal).with_context(|| format!("send {signal} to warren"))
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn sigterm(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// Sends SIGHUP (reload).
    pub fn sighup(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGHUP)
    }

    /// Waits for exit and returns the exit code (128 + N when killed by signal N).
    /// Output is fully captured afterwards unless a descendant still holds the pipes.
    pub async fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<i32> {
        let status = within(limit, "warren to exit", self.child.wait())
            .await
            .with_context(|| format!("stderr tail:\n{}", tail(&self.stderr_text(), 40)))?
            .context("wait for warren")?;
        for reader in &mut self.readers {
            // A finished JoinHandle must not be polled again.
            if !reader.is_finished() {
                let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
            }
        }
        Ok(exit_code(status))
    }

    /// Waits for exit and returns the exit code, without waiting for the end of its output:
    /// for a process whose pipes a successor it started still holds (an upgrade).
    pub async fn wait_exit_only(&mut self, limit: Duration) -> anyhow::Result<i32> {
        let status = within(limit, "warren to exit", self.child.wait())
            .await
            .with_context(|| format!("stderr tail:\n{}", tail(&self.stderr_text(), 40)))?
            .context("wait for warren")?;
        Ok(exit_code(status))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILLs warren.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.start_kill().context("kill warren")
    }
}

impl Drop for WarrenProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        for reader in &self.readers {
            reader.abort();
        }
    }
}

/// Waits until `find` yields something from the lines of `rx` (warren's `name` stream); fails
/// on timeout or when the stream ends without it.
async fn wait_lines<T>(
    rx: &watch::Receiver<Lines>,
    name: &str,
    limit: Duration,
    find: impl Fn(&Lines) -> Option<T>,
) -> anyhow::Result<T> {
    let mut rx = rx.clone();
    // The watch's guard goes at the end of this statement, before the stream is read again.
    let found = match tokio::time::timeout(limit, rx.wait_for(|l| l.eof || find(l).is_some())).await
    {
        Ok(Ok(lines)) => find(&lines),
        _ => None,
    };
    if let Some(found) = found {
        return Ok(found);
    }
    let why = if rx.borrow().eof {
        format!("warren's {name} ended")
    } else {
        "timed out".to_string()
    };
    let text = rx.borrow().lines.join("\n");
    bail!(
        "{why} before a matching {name} line (waited up to {limit:?}); {name} tail:\n{}",
        tail(&text, 40)
    )
}

/// A `warren ARGS` command with a scrubbed environment plus `env`.
pub fn warren_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    launcher_command(WARREN, args, env)
}

/// `PROGRAM ARGS` with the environment [`warren_command`] gives warren: for a program that
/// execs warren, or a copy of the binary elsewhere.
pub fn launcher_command(
    program: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
    env: &[(&str, &str)],
) -> Command {
    let mut cmd = Command::new(program);
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1")
        .args(args)
        .envs(env.iter().copied());
    cmd
}

/// Runs a one-shot `warren ARGS` (e.g. `check`, `status`) to completion within `limit`.
pub async fn run_warren(
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> anyhow::Result<Output> {
    let mut cmd = warren_command(args, env);
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    within(limit, "a one-shot warren command", cmd.output())
        .await?
        .context("run warren")
}

/// The shell-style exit code: the code, or 128 + signal number.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}
