//! Proves the harness with OpenSSH's own `ssh` client, so these tests do not depend on warren.

mod auth;
mod faults;

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::harness::{
    EchoServer, KeyKind, MIB, OpenSshClient, SshServer, Transport, UserKey, current_user,
    exit_code, push_through_split, with_timeout, within,
};

/// Upper bound for every test here.
const TEST_LIMIT: Duration = Duration::from_secs(30);
/// Bound for single steps that should be quick.
const STEP: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is watched for. Asserting absence needs some bounded wait.
const QUIET: Duration = Duration::from_millis(400);

/// A server with one authorized ed25519 key.
async fn server_and_key() -> anyhow::Result<(SshServer, UserKey)> {
    let server = SshServer::start().await?;
    let key = UserKey::generate(KeyKind::Ed25519, None).await?;
    server.authorize(&key)?;
    Ok((server, key))
}

/// A running `ssh -W` with its stdin and stdout taken.
struct Forward {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

fn spawn_forward(mut cmd: Command) -> anyhow::Result<Forward> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // ssh reports the expected resets on stderr; keep the test output clean.
        .stderr(Stdio::null())
        .spawn()
        .context("spawn ssh")?;
    let stdin = child.stdin.take().context("ssh stdin")?;
    let stdout = child.stdout.take().context("ssh stdout")?;
    Ok(Forward {
        child,
        stdin,
        stdout,
    })
}

impl Forward {
    /// Sends `msg` and expects it echoed back.
    async fn round_trip(&mut self, msg: &[u8]) -> anyhow::Result<()> {
        self.stdin.write_all(msg).await?;
        self.stdin.flush().await?;
        let mut back = vec![0u8; msg.len()];
        within(STEP, "the echo", self.stdout.read_exact(&mut back)).await??;
        ensure!(back == msg, "echo returned {back:?}");
        Ok(())
    }
}

/// Runs `cmd` to completion and returns (exit code, stdout).
async fn run(mut cmd: Command) -> anyhow::Result<(i32, String)> {
    let out = within(STEP, "ssh to finish", cmd.stdin(Stdio::null()).output()).await??;
    Ok((
        exit_code(out.status),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_ssh_stdio_forward_moves_8_mib_and_counts_sessions() {
    with_timeout(TEST_LIMIT, async {
        let (server, key) = server_and_key().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let client = OpenSshClient::new(&server)?.identity(key.path());

        let fwd = spawn_forward(client.stdio_forward(&echo.addr().to_string()))?;
        let transfer = push_through_split(fwd.stdout, fwd.stdin, 8 * MIB).await?;
        transfer.check_echoed()?;
        assert_eq!(transfer.received, 8 * MIB);

        let mut child = fwd.child;
        let status = within(STEP, "ssh -W to exit after EOF", child.wait()).await??;
        assert!(status.success(), "ssh -W exited with {status}");
        let counts = server
            .wait_sessions(STEP, "the session ends", |c| c.alive == 0)
            .await?;
        assert_eq!(counts.accepted, 1);
        assert_eq!(echo.connections(), 1);
        let user = current_user()?;
        assert!(server.log_contains(&format!("Accepted publickey for {user}")));
        assert!(
            server.log_contains(&key.fingerprint()?),
            "sshd did not log the key"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_kill_sessions_makes_ssh_exit() {
    with_timeout(TEST_LIMIT, async {
        let (server, key) = server_and_key().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let client = OpenSshClient::new(&server)?.identity(key.path());
        let mut fwd = spawn_forward(client.stdio_forward(&echo.addr().to_string()))?;
        fwd.round_trip(b"ping").await?;
        assert_eq!(server.sessions_alive(), 1);
        // Root logins skip post-auth privilege separation: then it is one process.
        let pids = server.session_process_pids();
        assert!(!pids.is_empty());

        assert_eq!(server.kill_sessions().await?, 1);
        let status = within(STEP, "ssh to notice the reset", fwd.child.wait()).await??;
        assert_eq!(exit_code(status), 255, "ssh exit status {status}");
        assert_eq!(server.sessions_alive(), 0);
        for pid in pids {
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| !s.contains(") Z "));
            assert!(!alive, "session process {pid} survived kill_sessions");
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_frozen_session_is_a_black_hole() {
    with_timeout(TEST_LIMIT, async {
        let (server, key) = server_and_key().await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let client = OpenSshClient::new(&server)?.identity(key.path());
        let mut fwd = spawn_forward(client.stdio_forward(&echo.addr().to_string()))?;
        fwd.round_trip(b"before").await?;

        assert_eq!(server.freeze_sessions()?, 1);
        for pid in server.session_process_pids() {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
            let state = stat.rsplit(')').next().unwrap_or_default().trim_start();
            assert!(state.starts_with('T'), "pid {pid} not stopped: {state}");
        }
        fwd.stdin.write_all(b"frozen").await?;
        fwd.stdin.flush().await?;
        let mut back = [0u8; 6];
        let early = tokio::time::timeout(QUIET, fwd.stdout.read_exact(&mut back)).await;
        assert!(early.is_err(), "bytes came back through a frozen session");

        // A connection made while frozen is parked: not even the banner arrives.
        let mut parked = TcpStream::connect(server.addr()).await?;
        let mut banner = [0u8; 8];
        let early = tokio::time::timeout(QUIET, parked.read_exact(&mut banner)).await;
        assert!(early.is_err(), "a parked connection got a banner");

        server.thaw_sessions()?;
        within(STEP, "the held echo", fwd.stdout.read_exact(&mut back)).await??;
        assert_eq!(&back, b"frozen");
        within(STEP, "the parked banner", parked.read_exact(&mut banner)).await??;
        assert_eq!(&banner, b"SSH-2.0-");
        fwd.round_trip(b"after").await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_stop_accepting_refuses_then_resumes() {
    with_timeout(TEST_LIMIT, async {
        let server = SshServer::start().await?;
        server.stop_accepting();
        let refused = TcpStream::connect(server.addr()).await;
        let kind = refused.as_ref().err().map(std::io::Error::kind);
        assert_eq!(kind, Some(std::io::ErrorKind::ConnectionRefused));

        server.resume_accepting()?;
        let mut stream = TcpStream::connect(server.addr()).await?;
        let mut banner = [0u8; 8];
        within(STEP, "the banner", stream.read_exact(&mut banner)).await??;
        assert_eq!(&banner, b"SSH-2.0-");
        assert_eq!(server.sessions_accepted(), 1);
        Ok(())
    })
    .await
}
