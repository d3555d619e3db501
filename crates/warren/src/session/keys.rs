//! Identity files, their certificates and secret files, read on a blocking thread (a key
//! encrypted with many bcrypt rounds takes seconds to decrypt), and decrypted keys kept in
//! memory while their file is unchanged, so that a reconnect does not pay the KDF again and a
//! rotated file is still read anew.

use std::collections::HashMap;
use std::fmt;
use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use russh::keys::{Certificate, PrivateKey};
use tracing::debug;

use crate::secret::Secret;

/// A private key, decrypted. Its `Debug` names only the algorithm; the key material is
/// wiped when the last reference goes (ssh-key zeroizes private key data on drop).
#[derive(Clone)]
pub struct DecryptedKey(Arc<PrivateKey>);

impl DecryptedKey {
    /// The key, for signing.
    pub fn key(&self) -> &Arc<PrivateKey> {
        &self.0
    }
}

impl fmt::Debug for DecryptedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DecryptedKey({}, <redacted>)", self.0.algorithm())
    }
}

/// An identity file ready to offer: the key and the certificates that go with it.
#[derive(Debug)]
pub struct Identity {
    /// The decrypted key.
    pub key: DecryptedKey,
    /// Certificates for this key, in the order to offer them.
    pub certificates: Vec<(PathBuf, Certificate)>,
}

/// What makes a cached key still valid: the key file is the same file with the same size and
/// modification time, and it was decrypted with the same `passphrase_file` setting.
#[derive(Clone, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    passphrase_file: Option<PathBuf>,
}

impl FileIdentity {
    fn of(meta: &Metadata, passphrase_file: Option<&Path>) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            passphrase_file: passphrase_file.map(Path::to_path_buf),
        }
    }
}

/// Decrypted keys by path, shared by every host of the process.
static CACHE: LazyLock<Mutex<HashMap<PathBuf, (FileIdentity, DecryptedKey)>>> =
    LazyLock::new(Mutex::default);

/// Loads identity file `path` (with its certificates) on a blocking thread; `Ok(None)` for a
/// default key file that does not exist. The error names the file and the reason, never the
/// passphrase.
pub async fn load_identity(
    path: &Path,
    passphrase_file: Option<&Path>,
    explicit: bool,
    certificate_files: &[PathBuf],
) -> Result<Option<Identity>, String> {
    let (path, passphrase_file, certificate_files) = (
        path.to_path_buf(),
        passphrase_file.map(Path::to_path_buf),
        certificate_files.to_vec(),
    );
    blocking(move || {
        let Some(key) = load_key(&path, passphrase_file.as_deref(), explicit)? else {
            return Ok(None);
        };
        let certificates = certificates_for(key.key(), &path, &certificate_files);
        Ok(Some(Identity { key, certificates }))
    })
    .await
}

/// Reads a secret file (`passphrase_file`, `password_file`) on a blocking thread, refusing
/// one that its group or others may read, as OpenSSH refuses such key files.
pub async fn read_secret(path: &Path, setting: &'static str) -> Result<Secret, String> {
    let path = path.to_path_buf();
    blocking(move || read_secret_now(&path, setting)).await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(format!("reading credentials failed: {e}")))
}

fn read_secret_now(path: &Path, setting: &str) -> Result<Secret, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {setting} {}: {e}", path.display()))?;
    check_private(path, &meta, &format!("{setting} files"), "file")?;
    Secret::read_file(path).map_err(|e| format!("cannot read {setting} {}: {e}", path.display()))
}

/// OpenSSH's refusal of a private file its group or others can read, in its words.
fn check_private(path: &Path, meta: &Metadata, files: &str, this: &str) -> Result<(), String> {
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "permissions {mode:04o} for '{}' are too open; it is required that {files} are not \
             accessible by others, so this {this} is ignored",
            path.display()
        ));
    }
    Ok(())
}

/// Loads a private key from the cache or the file (blocking: it may run the bcrypt KDF).
pub fn load_key(
    path: &Path,
    passphrase_file: Option<&Path>,
    explicit: bool,
) -> Result<Option<DecryptedKey>, String> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(None),
        Err(e) => return Err(format!("identity file {}: {e}", path.display())),
    };
    check_private(path, &meta, "private key files", "key")?;
    let identity = FileIdentity::of(&meta, passphrase_file);
    // One decryption per file at a time: an attempt that timed out leaves its KDF running
    // on its blocking thread, and the next attempt waits for it (then finds the key cached)
    // instead of starting a second one.
    let in_flight = decrypting(path);
    let _one_at_a_time = in_flight.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((cached, key)) = cache().get(path)
        && *cached == identity
    {
        debug!(key = %path.display(), "decrypted key reused (file unchanged)");
        return Ok(Some(key.clone()));
    }
    let passphrase = passphrase_file
        .map(|p| read_secret_now(p, "passphrase_file"))
        .transpose()?;
    let key = match russh::keys::load_secret_key(path, passphrase.as_ref().map(Secret::expose)) {
        Ok(key) => DecryptedKey(Arc::new(key)),
        Err(russh::keys::Error::KeyIsEncrypted) => {
            return Err(format!(
                "identity file {} is encrypted and no passphrase_file is set",
                path.display()
            ));
        }
        Err(e) => return Err(format!("identity file {}: {e}", path.display())),
    };
    // Keyed by what was stat'ed before reading: a file replaced meanwhile is read again next
    // time.
    cache().insert(path.to_path_buf(), (identity, key.clone()));
    Ok(Some(key))
}

fn cache() -> std::sync::MutexGuard<'static, HashMap<PathBuf, (FileIdentity, DecryptedKey)>> {
    CACHE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Key files being read or decrypted now, each with the lock its readers take in turn.
static DECRYPTING: LazyLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> =
    LazyLock::new(Mutex::default);

/// The lock of `path`'s decryption.
fn decrypting(path: &Path) -> Arc<Mutex<()>> {
    let mut all = DECRYPTING.lock().unwrap_or_else(PoisonError::into_inner);
    // Forget the locks nobody holds or waits for, so the map stays as small as the set of
    // key files in use.
    all.retain(|_, lock| Arc::strong_count(lock) > 1);
    all.entry(path.to_path_buf()).or_default().clone()
}

/// The certificates to offer with `key` (read from `key_path`): the `certificate_files`
/// that certify this key, in order, then `KEY-cert.pub` next to the key, as OpenSSH picks
/// them up. A certificate for another key, or one that cannot be read, is skipped. Read
/// anew every time: short-lived certificates are renewed beside a long-lived key.
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
#[path = "keys_tests.rs"]
mod tests;
