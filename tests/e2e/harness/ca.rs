//! A throwaway OpenSSH certificate authority that signs user and host keys with `ssh-keygen -s`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use tempfile::TempDir;
use tokio::process::Command;

use super::keys::{KeyKind, UserKey, generate_key_pair, read_public, with_suffix};
use super::util::run_checked;

/// An ed25519 CA key in its own tempdir.
pub struct TestCa {
    _dir: TempDir,
    path: PathBuf,
    public: String,
    serial: AtomicU64,
}

impl TestCa {
    /// Generates a new CA key.
    pub async fn generate() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("create a tempdir for a CA")?;
        let path = dir.path().join("ca");
        generate_key_pair(KeyKind::Ed25519, &path, None, "warren-e2e-ca").await?;
        let public = read_public(&with_suffix(&path, ".pub"))?;
        Ok(TestCa {
            _dir: dir,
            path,
            public,
            serial: AtomicU64::new(1),
        })
    }

    /// The CA's public key line.
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// The CA's public key file (what `TrustedUserCAKeys` points at).
    pub fn public_path(&self) -> PathBuf {
        with_suffix(&self.path, ".pub")
    }

    /// A known_hosts line trusting this CA for hosts matching `pattern`
    /// (for example `[127.0.0.1]:2222` or `*`).
    pub fn known_hosts_line(&self, pattern: &str) -> String {
        format!("@cert-authority {pattern} {}", self.public)
    }

    /// An authorized_keys line trusting this CA for users (`cert-authority`, plus extra `options`).
    pub fn authorized_keys_line(&self, options: Option<&str>) -> String {
        match options {
            Some(extra) => format!("cert-authority,{extra} {}", self.public),
            None => format!("cert-authority {}", self.public),
        }
    }

    /// Signs `key` as a user certificate for `principals`, valid forever; writes `KEY-cert.pub`.
    pub async fn sign_user(&self, key: &UserKey, principals: &[&str]) -> anyhow::Result<PathBuf> {
        self.sign_user_valid(key, principals, None).await
    }

    /// Like [`TestCa::sign_user`] with an `ssh-keygen -V` validity (for example `-5m:+1m`).
    pub async fn sign_user_valid(
        &self,
        key: &UserKey,
        principals: &[&str],
        validity: Option<&str>,
    ) -> anyhow::Result<PathBuf> {
        self.sign(
            &key.public_path(),
            "warren-e2e-user",
            principals,
            false,
            validity,
        )
        .await?;
        Ok(key.cert_path())
    }

    /// Signs the host public key at `public_path` for host names `principals`;
    /// returns the certificate path (`KEY-cert.pub`).
    pub async fn sign_host(
        &self,
        public_path: &Path,
        principals: &[&str],
    ) -> anyhow::Result<PathBuf> {
        self.sign(public_path, "warren-e2e-host", principals, true, None)
            .await
    }

    async fn sign(
        &self,
        public_path: &Path,
        identity: &str,
        principals: &[&str],
        host: bool,
        validity: Option<&str>,
    ) -> anyhow::Result<PathBuf> {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed).to_string();
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-q", "-s"]).arg(&self.path).args([
            "-I",
            identity,
            "-z",
            &serial,
            "-n",
            &principals.join(","),
        ]);
        if host {
            cmd.arg("-h");
        }
        if let Some(validity) = validity {
            cmd.args(["-V", validity]);
        }
        cmd.arg(public_path);
        run_checked(&mut cmd, "ssh-keygen -s (sign a certificate)").await?;
        // ssh-keygen names the certificate after the key: KEY.pub -> KEY-cert.pub.
        let text = public_path.to_string_lossy();
        let base = text.strip_suffix(".pub").unwrap_or(&text);
        Ok(PathBuf::from(format!("{base}-cert.pub")))
    }
}
