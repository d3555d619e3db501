//! SSH key pairs made with the real `ssh-keygen`: user keys in their own tempdir, and the shared key generator.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::process::Command;

use super::util::run_checked;

/// The key algorithms the tests use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// `ssh-ed25519`.
    Ed25519,
    /// `ecdsa-sha2-nistp256`.
    Ecdsa,
    /// RSA 3072 (signs with `rsa-sha2-256/512` against a modern sshd).
    Rsa,
}

impl KeyKind {
    /// The name `ssh-keygen -t` takes, also used in file names (`id_ed25519`).
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Ed25519 => "ed25519",
            KeyKind::Ecdsa => "ecdsa",
            KeyKind::Rsa => "rsa",
        }
    }

    fn bits(self) -> &'static str {
        match self {
            KeyKind::Ed25519 => "256",
            KeyKind::Ecdsa => "256",
            KeyKind::Rsa => "3072",
        }
    }
}

/// Runs `ssh-keygen -q -t KIND -N PASSPHRASE -f PATH` and makes the private key 0600.
pub async fn generate_key_pair(
    kind: KeyKind,
    path: &Path,
    passphrase: Option<&str>,
    comment: &str,
) -> anyhow::Result<()> {
    run_checked(
        Command::new("ssh-keygen")
            .args(["-q", "-t", kind.name(), "-b", kind.bits(), "-C", comment])
            .arg("-N")
            .arg(passphrase.unwrap_or(""))
            .arg("-f")
            .arg(path),
        &format!("ssh-keygen -t {}", kind.name()),
    )
    .await?;
    set_mode(path, 0o600)
}

/// Sets the permission bits of `path`.
pub fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// Reads a `.pub` file and returns its single line, trimmed.
pub fn read_public(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Ok(text.trim().to_owned())
}

/// The OpenSSH `SHA256:...` fingerprint of a public key line (`TYPE BASE64 [COMMENT]`).
pub fn fingerprint(public_line: &str) -> anyhow::Result<String> {
    let blob = public_line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("not a public key line: {public_line:?}"))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .context("decode the public key blob")?;
    let digest = Sha256::digest(&raw);
    Ok(format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    ))
}

/// `path` with `suffix` appended to its file name (`id_ed25519` + `.pub`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A user key pair in its own tempdir: `id_KIND` (mode 0600) and `id_KIND.pub`.
pub struct UserKey {
    _dir: TempDir,
    kind: KeyKind,
    path: PathBuf,
    public: String,
    passphrase: Option<String>,
}

impl UserKey {
    /// Generates a new key, encrypted when `passphrase` is given.
    pub async fn generate(kind: KeyKind, passphrase: Option<&str>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("create a tempdir for a user key")?;
        let path = dir.path().join(format!("id_{}", kind.name()));
        generate_key_pair(kind, &path, passphrase, "warren-e2e-user").await?;
        let public = read_public(&with_suffix(&path, ".pub"))?;
        Ok(UserKey {
            _dir: dir,
            kind,
            path,
            public,
            passphrase: passphrase.map(str::to_owned),
        })
    }

    /// The algorithm of this key.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The private key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The public key file (`KEY.pub`).
    pub fn public_path(&self) -> PathBuf {
        with_suffix(&self.path, ".pub")
    }

    /// Where a CA writes this key's certificate (`KEY-cert.pub`, found by OpenSSH next to the key).
    pub fn cert_path(&self) -> PathBuf {
        with_suffix(&self.path, "-cert.pub")
    }

    /// The public key line, `TYPE BASE64 COMMENT`.
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// The `SHA256:...` fingerprint, as sshd logs it.
    pub fn fingerprint(&self) -> anyhow::Result<String> {
        fingerprint(&self.public)
    }

    /// The passphrase the key was encrypted with, if any.
    pub fn passphrase(&self) -> Option<&str> {
        self.passphrase.as_deref()
    }

    /// Writes the passphrase into `KEY.pass` (mode 0600), for a `passphrase_file` setting.
    pub fn write_passphrase_file(&self) -> anyhow::Result<PathBuf> {
        let path = with_suffix(&self.path, ".pass");
        let passphrase = self.passphrase.as_deref().unwrap_or("");
        std::fs::write(&path, format!("{passphrase}\n"))
            .with_context(|| format!("write {}", path.display()))?;
        set_mode(&path, 0o600)?;
        Ok(path)
    }
}
