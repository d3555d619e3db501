//! Test helpers: real keys, certificates and hashed files made by OpenSSH's `ssh-keygen`.

use std::path::{Path, PathBuf};
use std::process::Command;

use russh::keys::{Certificate, PublicKey};

/// Runs `ssh-keygen` with `args`, panicking with its stderr if it fails; returns stdout.
pub(crate) fn ssh_keygen(args: &[&str]) -> String {
    // -V dates are read in local time; pin it so validity windows are predictable.
    let out = Command::new("ssh-keygen")
        .args(args)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Generates `dir/name` (no passphrase) with `ssh-keygen -t kind` and returns its public key.
pub(crate) fn keygen(dir: &Path, name: &str, kind: &str) -> PublicKey {
    let path = dir.join(name);
    let path = path.to_str().unwrap();
    ssh_keygen(&["-q", "-t", kind, "-N", "", "-C", name, "-f", path]);
    read_pub(&dir.join(format!("{name}.pub")))
}

/// Reads an OpenSSH `.pub` file.
pub(crate) fn read_pub(path: &Path) -> PublicKey {
    PublicKey::from_openssh(std::fs::read_to_string(path).unwrap().trim()).unwrap()
}

/// Signs `dir/key.pub` with the CA `dir/ca` (`ssh-keygen -s`) plus `extra` args; returns the cert.
pub(crate) fn sign(dir: &Path, ca: &str, key: &str, extra: &[&str]) -> Certificate {
    let ca = dir.join(ca);
    let public = dir.join(format!("{key}.pub"));
    let mut args = vec!["-q", "-s", ca.to_str().unwrap(), "-I", "test-id"];
    args.extend_from_slice(extra);
    args.push(public.to_str().unwrap());
    ssh_keygen(&args);
    let cert = std::fs::read_to_string(dir.join(format!("{key}-cert.pub"))).unwrap();
    Certificate::from_openssh(cert.trim()).unwrap()
}

/// `ALGO BASE64` of a key, without comment, as known_hosts lines hold it.
pub(crate) fn openssh(key: &PublicKey) -> String {
    PublicKey::new(key.key_data().clone(), "")
        .to_openssh()
        .unwrap()
}

/// Writes `text` to `dir/name` and returns its path.
pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
