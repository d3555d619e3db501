//! User authentication in OpenSSH's order: agent keys, identity files (with their
//! `-cert.pub` certificates), then a password from a file. RSA signs with rsa-sha2 only.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::client::{AuthResult, Handle, Handler};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{Certificate, HashAlg, PrivateKey, PrivateKeyWithHashAlg};
use tracing::{debug, info};

use super::error::SessionError;
use crate::config::HostConfig;
use crate::secret::Secret;

/// What was tried, for the error message when nothing worked (never a secret).
#[derive(Default)]
struct Attempts {
    offered: Vec<String>,
    unusable: Vec<String>,
}

/// Authenticates `handle` as `host.user`; `Ok` once the server accepts a method.
pub async fn authenticate<H: Handler>(
    handle: &mut Handle<H>,
    host: &HostConfig,
) -> Result<(), SessionError> {
    let mut tried = Attempts::default();
    if host.agent && try_agent(handle, host, &mut tried).await? {
        return Ok(());
    }
    let passphrase = match &host.passphrase_file {
        Some(path) => Some(read_secret(path, "passphrase_file")?),
        None => None,
    };
    for path in &host.identity_files {
        if try_identity(handle, host, path, passphrase.as_ref(), &mut tried).await? {
            return Ok(());
        }
    }
    if let Some(path) = &host.password_file {
        let password = read_secret(path, "password_file")?;
        tried.offered.push("password".into());
        let result = handle
            .authenticate_password(&host.user, password.expose())
            .await?;
        if result.success() {
            info!(method = "password", "authenticated");
            return Ok(());
        }
    }
    if tried.offered.is_empty() && !tried.unusable.is_empty() {
        return Err(SessionError::Config(format!(
            "no usable credential for user {}: {}",
            host.user,
            tried.unusable.join("; ")
        )));
    }
    let mut detail = if tried.offered.is_empty() {
        "nothing to offer (no agent keys, no identity file, no password_file)".to_string()
    } else {
        format!("the server rejected {}", tried.offered.join(", "))
    };
    if !tried.unusable.is_empty() {
        detail.push_str(&format!("; skipped: {}", tried.unusable.join("; ")));
    }
    Err(SessionError::Auth {
        user: host.user.clone(),
        detail,
    })
}

fn read_secret(path: &Path, key: &str) -> Result<Secret, SessionError> {
    Secret::read_file(path)
        .map_err(|e| SessionError::Config(format!("cannot read {key} {}: {e}", path.display())))
}

async fn try_agent<H: Handler>(
    handle: &mut Handle<H>,
    host: &HostConfig,
    tried: &mut Attempts,
) -> Result<bool, SessionError> {
    let Some(sock) = std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty()) else {
        return Ok(false);
    };
    let mut agent = match AgentClient::connect_uds(&sock).await {
        Ok(agent) => agent,
        Err(e) => {
            debug!(error = %e, "ssh agent unreachable");
            tried
                .unusable
                .push(format!("agent at {}: {e}", PathBuf::from(sock).display()));
            return Ok(false);
        }
    };
    let identities = match agent.request_identities().await {
        Ok(ids) => ids,
        Err(e) => {
            tried.unusable.push(format!("agent: {e}"));
            return Ok(false);
        }
    };
    for identity in identities {
        let result = match identity {
            AgentIdentity::PublicKey { key, comment } => {
                let hash = rsa_hash(handle, key.algorithm().is_rsa()).await?;
                tried.offered.push(format!("agent key {comment}"));
                handle
                    .authenticate_publickey_with(&host.user, key, hash, &mut agent)
                    .await
            }
            AgentIdentity::Certificate {
                certificate,
                comment,
            } => {
                let hash = rsa_hash(handle, certificate.algorithm().is_rsa()).await?;
                tried.offered.push(format!("agent certificate {comment}"));
                handle
                    .authenticate_certificate_with(&host.user, certificate, hash, &mut agent)
                    .await
            }
        };
        match result {
            Ok(r) if r.success() => {
                info!(method = "agent", "authenticated");
                return Ok(true);
            }
            Ok(_) => {}
            Err(e) => debug!(error = %e, "agent could not sign"),
        }
    }
    Ok(false)
}

async fn try_identity<H: Handler>(
    handle: &mut Handle<H>,
    host: &HostConfig,
    path: &Path,
    passphrase: Option<&Secret>,
    tried: &mut Attempts,
) -> Result<bool, SessionError> {
    let key = match load_key(path, passphrase, host.identity_files_explicit) {
        Ok(Some(key)) => Arc::new(key),
        Ok(None) => return Ok(false),
        Err(why) => {
            tried.unusable.push(why);
            return Ok(false);
        }
    };
    let is_rsa = key.algorithm().is_rsa();
    for (cert_path, cert) in certificates_for(&key, path, &host.certificate_files) {
        tried
            .offered
            .push(format!("certificate {}", cert_path.display()));
        let result = handle
            .authenticate_openssh_cert(&host.user, key.clone(), cert)
            .await?;
        if result.success() {
            info!(method = "certificate", key = %path.display(), cert = %cert_path.display(), "authenticated");
            return Ok(true);
        }
    }
    let hash = rsa_hash(handle, is_rsa).await?;
    tried.offered.push(format!("key {}", path.display()));
    let result: AuthResult = handle
        .authenticate_publickey(&host.user, PrivateKeyWithHashAlg::new(key, hash))
        .await?;
    if result.success() {
        info!(method = "publickey", key = %path.display(), "authenticated");
        return Ok(true);
    }
    Ok(false)
}

/// rsa-sha2-512 unless the server says it prefers rsa-sha2-256; never SHA-1 `ssh-rsa`,
/// which modern servers refuse (russh would fall back to it when the server is silent).
async fn rsa_hash<H: Handler>(
    handle: &Handle<H>,
    is_rsa: bool,
) -> Result<Option<HashAlg>, SessionError> {
    if !is_rsa {
        return Ok(None);
    }
    Ok(match handle.best_supported_rsa_hash().await? {
        Some(Some(hash)) => Some(hash),
        _ => Some(HashAlg::Sha512),
    })
}

/// Loads a private key; `Ok(None)` for a default key file that does not exist.
/// The error text names the file and the reason, never the passphrase.
pub fn load_key(
    path: &Path,
    passphrase: Option<&Secret>,
    explicit: bool,
) -> Result<Option<PrivateKey>, String> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(None),
        Err(e) => return Err(format!("identity file {}: {e}", path.display())),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        // OpenSSH's words, so that operators recognise the problem.
        return Err(format!(
            "permissions {mode:04o} for '{}' are too open; it is required that private key files \
             are not accessible by others, so this key is ignored",
            path.display()
        ));
    }
    match russh::keys::load_secret_key(path, passphrase.map(Secret::expose)) {
        Ok(key) => Ok(Some(key)),
        Err(russh::keys::Error::KeyIsEncrypted) => Err(format!(
            "identity file {} is encrypted and no passphrase_file is set",
            path.display()
        )),
        Err(e) => Err(format!("identity file {}: {e}", path.display())),
    }
}

/// The certificates to offer with `key` (read from `key_path`): the `certificate_files`
/// that certify this key, in order, then `KEY-cert.pub` next to the key, as OpenSSH picks
/// them up. A certificate for another key, or one that cannot be read, is skipped.
fn certificates_for(
    key: &PrivateKey,
    key_path: &Path,
    configured: &[PathBuf],
) -> Vec<(PathBuf, Certificate)> {
    let mut beside = key_path.as_os_str().to_owned();
    beside.push("-cert.pub");
    let beside = PathBuf::from(beside);
    let mut out: Vec<(PathBuf, Certificate)> = Vec::new();
    for path in configured.iter().chain(std::iter::once(&beside)) {
        if out.iter().any(|(p, _)| p == path) || !path.exists() {
            continue;
        }
        match russh::keys::load_openssh_certificate(path) {
            Ok(cert) if cert.public_key() == key.public_key().key_data() => {
                out.push((path.clone(), cert));
            }
            Ok(_) => {
                debug!(cert = %path.display(), key = %key_path.display(), "certificate is for another key")
            }
            Err(e) => debug!(cert = %path.display(), error = %e, "unreadable certificate ignored"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keygen(dir: &Path, name: &str, pass: &str) -> PathBuf {
        let path = dir.join(name);
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", pass, "-f"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        path
    }

    #[test]
    fn key_files_open_to_others_are_refused_like_openssh() {
        let dir = tempfile::tempdir().unwrap();
        let key = keygen(dir.path(), "id", "");
        assert!(load_key(&key, None, true).unwrap().is_some());
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_key(&key, None, true).unwrap_err();
        assert!(err.starts_with("permissions 0644 for '"), "{err}");
        assert!(err.contains("too open"));
    }

    #[test]
    fn missing_default_keys_are_skipped_but_explicit_ones_are_not() {
        let missing = Path::new("/nonexistent/id_ed25519");
        assert!(load_key(missing, None, false).unwrap().is_none());
        assert!(
            load_key(missing, None, true)
                .unwrap_err()
                .contains("/nonexistent/id_ed25519")
        );
    }

    #[test]
    fn a_legacy_aes256_pem_key_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("legacy");
        let status = std::process::Command::new("openssl")
            .args([
                "genrsa",
                "-aes256",
                "-passout",
                "pass:secret-pass",
                "-traditional",
                "-out",
            ])
            .arg(&key)
            .arg("2048")
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = std::fs::read_to_string(&key).unwrap();
        assert!(text.contains("DEK-Info: AES-256-CBC"), "{text}");
        let pass_file = dir.path().join("pass");
        std::fs::write(&pass_file, "secret-pass\n").unwrap();
        let pass = Secret::read_file(&pass_file).unwrap();
        // russh reads only AES-128-CBC legacy PEM (russh.md trap 12): the file is named and
        // refused, with no panic and no passphrase in the message.
        let err = load_key(&key, Some(&pass), true).unwrap_err();
        assert!(
            err.starts_with(&format!("identity file {}:", key.display())),
            "{err}"
        );
        assert!(!err.contains("secret-pass"));
    }

    #[test]
    fn encrypted_keys_need_the_passphrase_and_never_show_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = keygen(dir.path(), "enc", "s3cret-phrase");
        let err = load_key(&key, None, true).unwrap_err();
        assert!(err.contains("encrypted and no passphrase_file"), "{err}");
        let pass_file = dir.path().join("pass");
        std::fs::write(&pass_file, "s3cret-phrase\n").unwrap();
        let pass = Secret::read_file(&pass_file).unwrap();
        assert!(load_key(&key, Some(&pass), true).unwrap().is_some());
        std::fs::write(&pass_file, "wrong\n").unwrap();
        let wrong = Secret::read_file(&pass_file).unwrap();
        let err = load_key(&key, Some(&wrong), true).unwrap_err();
        assert!(!err.contains("wrong") && !err.contains("s3cret"), "{err}");
    }
}
