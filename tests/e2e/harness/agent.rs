//! A real `ssh-agent` on a socket in a tempdir, loaded with `ssh-add`; killed on drop.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use super::keys::{UserKey, set_mode};
use super::util::{run_checked, wait_for};

/// A running `ssh-agent -D -a SOCKET`.
pub struct SshAgent {
    dir: TempDir,
    socket: PathBuf,
    child: Child,
}

impl SshAgent {
    /// Starts the agent and returns once its socket accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("create a tempdir for ssh-agent")?;
        let socket = dir.path().join("agent.sock");
        let mut child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("spawn ssh-agent")?;
        let probe = socket.clone();
        let ready = wait_for(Duration::from_secs(10), "the ssh-agent socket", || {
            let probe = probe.clone();
            async move { UnixStream::connect(&probe).await.ok().map(|_| ()) }
        })
        .await;
        if let Err(err) = ready {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("ssh-agent exited early ({status})");
            }
            return Err(err);
        }
        Ok(SshAgent { dir, socket, child })
    }

    /// The agent socket: the value for `SSH_AUTH_SOCK`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The agent's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Loads `key` into the agent, answering its passphrase through `SSH_ASKPASS`.
    pub async fn add(&self, key: &UserKey) -> anyhow::Result<()> {
        let mut cmd = self.ssh_add();
        if key.passphrase().is_some() {
            let pass_file = key.write_passphrase_file()?;
            let script = self.dir.path().join("askpass.sh");
            let body = format!("#!/bin/sh\nexec cat '{}'\n", pass_file.display());
            std::fs::write(&script, body).context("write the askpass script")?;
            set_mode(&script, 0o700)?;
            cmd.env("SSH_ASKPASS", &script)
                .env("SSH_ASKPASS_REQUIRE", "force")
                .env("DISPLAY", ":0");
        }
        cmd.arg(key.path());
        run_checked(&mut cmd, "ssh-add").await.map(drop)
    }

    /// Removes every identity from the agent (`ssh-add -D`).
    pub async fn remove_all(&self) -> anyhow::Result<()> {
        run_checked(self.ssh_add().arg("-D"), "ssh-add -D")
            .await
            .map(drop)
    }

    /// The public key lines the agent holds (`ssh-add -L`).
    pub async fn identities(&self) -> anyhow::Result<Vec<String>> {
        let out = self
            .ssh_add()
            .arg("-L")
            .stdin(Stdio::null())
            .output()
            .await
            .context("run ssh-add -L")?;
        // Exit status 1 means "the agent has no identities".
        match out.status.code() {
            Some(0) => Ok(String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect()),
            Some(1) => Ok(Vec::new()),
            _ => bail!(
                "ssh-add -L failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
    }

    fn ssh_add(&self) -> Command {
        let mut cmd = Command::new("ssh-add");
        cmd.env("SSH_AUTH_SOCK", &self.socket).kill_on_drop(true);
        cmd
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
