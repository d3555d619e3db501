//! Key loading: permissions, missing files, encryption, formats, and the cache.

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
    let pass_file = secret_file(dir.path(), "pass", "secret-pass\n");
    // russh reads only AES-128-CBC legacy PEM: the file is named and refused, with no panic
    // and no passphrase in the message.
    let err = load_key(&key, Some(&pass_file), true).unwrap_err();
    assert!(
        err.starts_with(&format!("identity file {}:", key.display())),
        "{err}"
    );
    assert!(!err.contains("secret-pass"));
}

/// A secret file with mode 0600.
fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn encrypted_keys_need_the_passphrase_and_never_show_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "enc", "s3cret-phrase");
    let err = load_key(&key, None, true).unwrap_err();
    assert!(err.contains("encrypted and no passphrase_file"), "{err}");
    let wrong = secret_file(dir.path(), "wrong", "wrong\n");
    let err = load_key(&key, Some(&wrong), true).unwrap_err();
    assert!(!err.contains("wrong") && !err.contains("s3cret"), "{err}");
    let pass = secret_file(dir.path(), "pass", "s3cret-phrase\n");
    let loaded = load_key(&key, Some(&pass), true).unwrap().unwrap();
    let shown = format!("{loaded:?}");
    assert!(
        shown.contains("<redacted>") && !shown.contains("s3cret"),
        "{shown}"
    );
}

#[test]
fn a_decrypted_key_is_kept_while_its_file_is_unchanged_and_read_again_once_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "cached", "first-phrase");
    let pass = secret_file(dir.path(), "pass", "first-phrase\n");
    let first = load_key(&key, Some(&pass), true).unwrap().unwrap();
    // The passphrase file no longer opens the key, but the key file is the one decrypted
    // before: no KDF, no failure.
    std::fs::write(&pass, "not-the-phrase\n").unwrap();
    let again = load_key(&key, Some(&pass), true).unwrap().unwrap();
    assert!(
        Arc::ptr_eq(first.key(), again.key()),
        "the cached key is reused"
    );
    // Rotated: a new key at the same path is read and decrypted anew.
    std::fs::remove_file(&key).unwrap();
    std::fs::remove_file(dir.path().join("cached.pub")).unwrap();
    keygen(dir.path(), "cached", "second-phrase");
    let err = load_key(&key, Some(&pass), true).unwrap_err();
    assert!(
        err.contains("cached"),
        "the rotated file is decrypted again: {err}"
    );
    std::fs::write(&pass, "second-phrase\n").unwrap();
    let rotated = load_key(&key, Some(&pass), true).unwrap().unwrap();
    assert_ne!(
        rotated.key().public_key(),
        first.key().public_key(),
        "the new key is used"
    );
    // Without a passphrase_file setting the cached key is not handed out.
    assert!(load_key(&key, None, true).is_err());
}

#[test]
fn secret_files_open_to_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pw = secret_file(dir.path(), "pw", "hunter2\n");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ok = rt.block_on(read_secret(&pw, "password_file")).unwrap();
    assert_eq!(ok.expose(), "hunter2");
    for mode in [0o640, 0o604, 0o660] {
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = rt.block_on(read_secret(&pw, "password_file")).unwrap_err();
        assert!(
            err.starts_with(&format!("permissions {mode:04o} for '{}'", pw.display()))
                && err.contains("password_file files are not accessible by others"),
            "{err}"
        );
        assert!(!err.contains("hunter2"));
    }
}

#[test]
fn concurrent_loads_of_one_encrypted_key_decrypt_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "shared", "phrase");
    let pass = secret_file(dir.path(), "pass", "phrase\n");
    let keys: Vec<DecryptedKey> = std::thread::scope(|scope| {
        let loads: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| load_key(&key, Some(&pass), true).unwrap().unwrap()))
            .collect();
        loads.into_iter().map(|l| l.join().unwrap()).collect()
    });
    // One decryption: every caller got the same key, the one the first decrypted.
    assert!(keys.iter().all(|k| Arc::ptr_eq(k.key(), keys[0].key())));
}
