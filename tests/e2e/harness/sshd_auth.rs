//! Changing what a running test server accepts: authorized keys, CAs, host certificates, config lines.

use std::io::Write as _;

use anyhow::Context;

use super::ca::TestCa;
use super::keys::UserKey;
use super::sshd::SshServer;
use super::sshd_config::ServerSettings;

impl SshServer {
    /// Authorizes `key` for every user.
    pub fn authorize(&self, key: &UserKey) -> anyhow::Result<()> {
        self.authorize_line(key.public_key())
    }

    /// Authorizes `key` with authorized_keys options (e.g. `permitopen="127.0.0.1:9"`).
    pub fn authorize_with_options(&self, key: &UserKey, options: &str) -> anyhow::Result<()> {
        self.authorize_line(&format!("{options} {}", key.public_key()))
    }

    /// Appends a raw authorized_keys line (e.g. `TestCa::authorized_keys_line`).
    pub fn authorize_line(&self, line: &str) -> anyhow::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.authorized_keys)
            .context("open authorized_keys")?;
        writeln!(file, "{line}").context("append to authorized_keys")
    }

    /// Empties authorized_keys.
    pub fn clear_authorized_keys(&self) -> anyhow::Result<()> {
        std::fs::write(&self.authorized_keys, "").context("truncate authorized_keys")
    }

    /// Trusts user certificates signed by `ca` (`TrustedUserCAKeys`).
    pub async fn trust_user_ca(&self, ca: &TestCa) -> anyhow::Result<()> {
        let path = self.dir.path().join("trusted_user_ca_keys");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .context("open trusted_user_ca_keys")?;
        writeln!(file, "{}", ca.public_key()).context("append to trusted_user_ca_keys")?;
        self.update_settings(|s| s.trusted_user_ca_keys = Some(path))
            .await
    }

    /// Has `ca` sign every host key for `127.0.0.1` and `localhost` and serves the certificates.
    pub async fn use_host_certificates(&self, ca: &TestCa) -> anyhow::Result<()> {
        let mut certs = Vec::new();
        for key in &self.host_keys {
            certs.push(
                ca.sign_host(&key.public_path, &["127.0.0.1", "localhost"])
                    .await?,
            );
        }
        self.update_settings(|s| s.host_certificates = certs).await
    }

    /// Adds an `sshd_config` line for the sessions that start from now on.
    pub async fn add_config_line(&self, line: &str) -> anyhow::Result<()> {
        self.update_settings(|s| s.extra.push(line.to_owned()))
            .await
    }

    async fn update_settings(
        &self,
        change: impl FnOnce(&mut ServerSettings),
    ) -> anyhow::Result<()> {
        let mut current = self.settings.lock().await;
        let mut next = current.clone();
        change(&mut next);
        // Keep the old settings if sshd -t rejects the new ones.
        next.install(&self.config).await?;
        *current = next;
        Ok(())
    }
}
