//! OpenSSH's own `ssh` client pointed at a test server, isolated from the user's config, keys and agent.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::sshd::SshServer;
use super::util::current_user;

/// How the client authenticates.
#[derive(Clone, Debug)]
enum Auth {
    /// `-i KEY` only (a `KEY-cert.pub` beside it is used too).
    Identity(PathBuf),
    /// The keys of the agent at this socket only.
    Agent(PathBuf),
}

/// A builder for `ssh` command lines against one [`SshServer`].
#[derive(Clone, Debug)]
pub struct OpenSshClient {
    port: u16,
    server_port: u16,
    user: String,
    known_hosts: PathBuf,
    auth: Option<Auth>,
    options: Vec<String>,
}

impl OpenSshClient {
    /// `ssh` as the current user to `127.0.0.1:PORT`, trusting the server's known_hosts file.
    pub fn new(server: &SshServer) -> anyhow::Result<Self> {
        Ok(OpenSshClient {
            port: server.port(),
            server_port: server.port(),
            user: current_user()?,
            known_hosts: server.known_hosts_path(),
            auth: None,
            options: Vec::new(),
        })
    }

    /// Authenticate with this private key only.
    pub fn identity(mut self, key: &Path) -> Self {
        self.auth = Some(Auth::Identity(key.to_owned()));
        self
    }

    /// Authenticate with the keys of the agent at `socket` only (`SSH_AUTH_SOCK`).
    pub fn agent(mut self, socket: &Path) -> Self {
        self.auth = Some(Auth::Agent(socket.to_owned()));
        self
    }

    /// Connect to `port` instead (e.g. a [`super::FaultProxy`] in front of the
    /// server); host keys are still looked up as the server's own `[127.0.0.1]:PORT`.
    pub fn via_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Use another known_hosts file (e.g. one with a `@cert-authority` line).
    pub fn known_hosts(mut self, path: &Path) -> Self {
        self.known_hosts = path.to_owned();
        self
    }

    /// Add `-o KEY=VALUE`.
    pub fn option(mut self, option: &str) -> Self {
        self.options.push(option.to_owned());
        self
    }

    /// `ssh OPTIONS... EXTRA... USER@127.0.0.1`; add a remote command with `.arg()`.
    /// The child is killed when the returned command's child is dropped.
    pub fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        let known_hosts = format!("UserKnownHostsFile={}", self.known_hosts.display());
        cmd.env_remove("SSH_AUTH_SOCK")
            .args(["-F", "/dev/null", "-p", &self.port.to_string()])
            .args(["-o", "BatchMode=yes", "-o", &known_hosts])
            .args(["-o", "GlobalKnownHostsFile=/dev/null"])
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10"])
            .args(["-o", "LogLevel=ERROR"]);
        match &self.auth {
            Some(Auth::Identity(key)) => {
                cmd.args(["-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-i"])
                    .arg(key);
            }
            Some(Auth::Agent(socket)) => {
                cmd.env("SSH_AUTH_SOCK", socket)
                    .args(["-o", "IdentitiesOnly=no"]);
            }
            None => {
                cmd.args(["-o", "IdentityAgent=none"]);
            }
        }
        if self.port != self.server_port {
            cmd.arg("-o")
                .arg(format!("HostKeyAlias=[127.0.0.1]:{}", self.server_port));
        }
        for option in &self.options {
            cmd.args(["-o", option]);
        }
        cmd.args(extra)
            .arg(format!("{}@127.0.0.1", self.user))
            .kill_on_drop(true);
        cmd
    }

    /// `ssh -W TARGET`: the child's stdin/stdout become a stream to `TARGET` via the server.
    pub fn stdio_forward(&self, target: &str) -> Command {
        self.command(&["-W", target])
    }
}
