//! User authentication in OpenSSH's order: agent keys, identity files (with their
//! `-cert.pub` certificates), then a password from a file, sent as `password` and then, when
//! the server offers it, as the answer to `keyboard-interactive`. RSA signs with rsa-sha2 only.

use std::path::{Path, PathBuf};

use russh::MethodKind;
use russh::client::{AuthResult, Handle, Handler};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg};
use tracing::{debug, info};

use super::error::SessionError;
use super::kbd_interactive::{self, Outcome};
use super::keys;
use crate::config::HostConfig;

/// What was tried, for the error message when nothing worked (never a secret).
#[derive(Default)]
struct Attempts {
    offered: Vec<String>,
    unusable: Vec<String>,
    /// Why keyboard-interactive could not be answered (naming the prompt).
    unanswered: Option<String>,
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
    for path in &host.identity_files {
        if try_identity(handle, host, path, &mut tried).await? {
            return Ok(());
        }
    }
    if let Some(path) = &host.password_file {
        let password = keys::read_secret(path, "password_file")
            .await
            .map_err(SessionError::Config)?;
        tried.offered.push("password".into());
        let result = handle
            .authenticate_password(&host.user, password.expose())
            .await?;
        if result.success() {
            info!(method = "password", "authenticated");
            return Ok(());
        }
        if offers(&result, MethodKind::KeyboardInteractive) {
            match kbd_interactive::authenticate(handle, &host.user, &password).await? {
                Outcome::Accepted => {
                    info!(method = "keyboard-interactive", "authenticated");
                    return Ok(());
                }
                Outcome::Rejected => tried.offered.push("keyboard-interactive".into()),
                Outcome::Unanswerable(why) => tried.unanswered = Some(why),
            }
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
    if let Some(why) = &tried.unanswered {
        detail.push_str(&format!("; {why}"));
    }
    if !tried.unusable.is_empty() {
        detail.push_str(&format!("; skipped: {}", tried.unusable.join("; ")));
    }
    Err(SessionError::Auth {
        user: host.user.clone(),
        detail,
    })
}

/// Whether the server, rejecting a method, names `method` as one that can continue.
fn offers(result: &AuthResult, method: MethodKind) -> bool {
    match result {
        AuthResult::Success => false,
        AuthResult::Failure {
            remaining_methods, ..
        } => remaining_methods.contains(&method),
    }
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
    tried: &mut Attempts,
) -> Result<bool, SessionError> {
    let identity = keys::load_identity(
        path,
        host.passphrase_file.as_deref(),
        host.identity_files_explicit,
        &host.certificate_files,
    )
    .await;
    let identity = match identity {
        Ok(Some(identity)) => identity,
        Ok(None) => return Ok(false),
        Err(why) => {
            tried.unusable.push(why);
            return Ok(false);
        }
    };
    let key = identity.key.key().clone();
    let is_rsa = key.algorithm().is_rsa();
    for (cert_path, cert) in identity.certificates {
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
