//! The `sshd_config` a test server runs with, rendered from settings the test can change at any time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::process::Command;

use super::util::run_checked;

/// sshd must be started by absolute path (it re-executes itself).
pub const SSHD: &str = "/usr/sbin/sshd";

/// Everything that goes into the rendered `sshd_config`.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Private host key files (`HostKey`).
    pub host_keys: Vec<PathBuf>,
    /// Host certificates (`HostCertificate`).
    pub host_certificates: Vec<PathBuf>,
    /// The `AuthorizedKeysFile`.
    pub authorized_keys: PathBuf,
    /// The `TrustedUserCAKeys` file, if user certificates are trusted.
    pub trusted_user_ca_keys: Option<PathBuf>,
    /// `PasswordAuthentication`.
    pub password_authentication: bool,
    /// Lines from the test. sshd keeps the *first* value of most options, so
    /// these go above the defaults; from the first `Match` line on they go at the end.
    pub extra: Vec<String>,
}

impl ServerSettings {
    /// The `sshd_config` text.
    pub fn render(&self) -> String {
        let split = self
            .extra
            .iter()
            .position(|line| line.trim_start().to_ascii_lowercase().starts_with("match "))
            .unwrap_or(self.extra.len());
        let (overrides, matches) = self.extra.split_at(split);

        let mut out = String::from("# Written by the warren e2e harness.\n");
        for line in overrides {
            let _ = writeln!(out, "{line}");
        }
        for key in &self.host_keys {
            let _ = writeln!(out, "HostKey {}", key.display());
        }
        for cert in &self.host_certificates {
            let _ = writeln!(out, "HostCertificate {}", cert.display());
        }
        let _ = writeln!(out, "AuthorizedKeysFile {}", self.authorized_keys.display());
        if let Some(ca) = &self.trusted_user_ca_keys {
            let _ = writeln!(out, "TrustedUserCAKeys {}", ca.display());
        }
        let password = if self.password_authentication {
            "yes"
        } else {
            "no"
        };
        let _ = writeln!(out, "PasswordAuthentication {password}");
        out.push_str(FIXED);
        for line in matches {
            let _ = writeln!(out, "{line}");
        }
        out
    }

    /// Writes the config to `path` once `sshd -t` accepts it. The file is
    /// replaced atomically, so a session starting meanwhile reads a whole file.
    pub async fn install(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, self.render()).with_context(|| format!("write {}", tmp.display()))?;
        run_checked(
            Command::new(SSHD).arg("-t").arg("-f").arg(&tmp),
            "sshd -t (check the test sshd_config)",
        )
        .await?;
        std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
    }
}

/// The settings every test server shares.
const FIXED: &str = "\
PubkeyAuthentication yes
KbdInteractiveAuthentication no
PermitEmptyPasswords no
PermitRootLogin yes
StrictModes no
UsePAM no
PidFile none
UseDNS no
PrintMotd no
PrintLastLog no
LogLevel DEBUG1
LoginGraceTime 30
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
StreamLocalBindUnlink yes
GatewayPorts no
X11Forwarding no
AllowAgentForwarding no
PermitTunnel no
Subsystem sftp internal-sftp
";
