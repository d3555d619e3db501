//! The decision: revocation, then pins, then certificates, then plain known_hosts lines.

use std::time::{SystemTime, UNIX_EPOCH};

use russh::keys::PublicKeyOrCertificate;

use super::cert;
use super::known_hosts::{KeyStatus, KnownHosts, Learnt, learn};
use super::pattern::lookup_name;
use super::{Accepted, Fingerprint, HostKeyCheck, HostKeyError, Policy};

/// Decides whether `presented`, offered by `host` on `port`, is trusted under `check`.
///
/// Re-reads the known_hosts files on every call, so edits take effect at the next connection.
pub fn verify(
    check: &HostKeyCheck,
    host: &str,
    port: u16,
    presented: &PublicKeyOrCertificate,
) -> Result<Accepted, HostKeyError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    verify_at(check, host, port, presented, now)
}

/// [`verify`] at Unix time `now`.
fn verify_at(
    check: &HostKeyCheck,
    host: &str,
    port: u16,
    presented: &PublicKeyOrCertificate,
    now: u64,
) -> Result<Accepted, HostKeyError> {
    let known = KnownHosts::load(&check.known_hosts)?;
    let lookup = lookup_name(host, port);
    let shown = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let (key, cert) = match presented {
        PublicKeyOrCertificate::PublicKey { key, .. } => (key.key_data(), None),
        PublicKeyOrCertificate::Certificate(cert) => (cert.public_key(), Some(cert)),
    };
    let fingerprint = Fingerprint::of(key);

    let revocable = std::iter::once(key).chain(cert.map(|c| c.signature_key()));
    for candidate in revocable {
        if let Some(location) = known.revoked(candidate) {
            return Err(HostKeyError::Revoked {
                host: shown,
                fingerprint: Fingerprint::of(candidate),
                location: location.clone(),
            });
        }
    }

    if !check.pins.is_empty() {
        return match check.pins.iter().find(|pin| pin.matches(key)) {
            Some(pin) => Ok(Accepted::Pinned(*pin)),
            None => Err(HostKeyError::PinMismatch {
                host: shown,
                fingerprint,
            }),
        };
    }

    let mut rejection = None;
    if let Some(cert) = cert {
        match cert::check(cert, host, &lookup, &known, now) {
            Ok(location) => return Ok(Accepted::CertAuthority(location)),
            // Like `ssh`, fall back to the plain key inside the certificate.
            Err(reason) => rejection = Some(reason),
        }
    }

    let mut status = known.check_key(&lookup, key);
    // A host already known by keys of other algorithms is not new: refuse to learn, so a
    // server cannot swap algorithms to slip past a change.
    if check.policy == Policy::AcceptNew
        && !check.known_hosts.is_empty()
        && rejection.is_none()
        && matches!(&status, KeyStatus::Unknown { other_keys } if other_keys.is_empty())
    {
        match learn(&check.known_hosts, host, port, key)? {
            Learnt::Appended(at) => return Ok(Accepted::Learned(at)),
            // Another session learned the host first: decide on what it wrote.
            Learnt::Decided(now) => status = now,
        }
    }
    match status {
        KeyStatus::Trusted(location) => {
            if let Some(reason) = rejection {
                tracing::debug!(%reason, "host certificate rejected, its plain key is known");
            }
            Ok(Accepted::KnownHost(location))
        }
        KeyStatus::Changed(old) => Err(HostKeyError::Changed {
            host: shown,
            fingerprint,
            old,
        }),
        KeyStatus::Unknown { other_keys } => match rejection {
            Some(reason) => Err(HostKeyError::CertRejected {
                host: shown,
                fingerprint,
                reason,
            }),
            None => Err(HostKeyError::Unknown {
                host: shown,
                fingerprint,
                other_keys,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostkey::Location;
    use crate::hostkey::cert::CertRejection;
    use crate::hostkey::testutil::{keygen, openssh, sign, write};
    use russh::keys::Certificate;
    use russh::keys::PublicKey;
    use std::fs;
    use std::path::{Path, PathBuf};

    fn check(files: &[&Path], policy: Policy) -> HostKeyCheck {
        HostKeyCheck {
            known_hosts: files.iter().map(|f| f.to_path_buf()).collect(),
            policy,
            pins: vec![],
        }
    }

    fn plain(key: &PublicKey) -> PublicKeyOrCertificate {
        key.clone().into()
    }

    fn certified(cert: &Certificate) -> PublicKeyOrCertificate {
        cert.clone().into()
    }

    fn at(file: &Path, line: usize) -> Location {
        Location {
            file: file.to_path_buf(),
            line,
        }
    }

    fn fp(key: &PublicKey) -> Fingerprint {
        Fingerprint::of(key.key_data())
    }

    #[test]
    fn trusted_changed_and_unknown_plain_keys() {
        let dir = tempfile::tempdir().unwrap();
        let old = keygen(dir.path(), "old", "ed25519");
        let new = keygen(dir.path(), "new", "ed25519");
        let text = format!(
            "db.example.com {}\n[db.example.com]:2222 {}\n",
            openssh(&old),
            openssh(&new)
        );
        let file = write(dir.path(), "known_hosts", &text);
        let strict = check(&[&file], Policy::Strict);
        let ok = verify(&strict, "db.example.com", 22, &plain(&old)).unwrap();
        assert_eq!(ok, Accepted::KnownHost(at(&file, 1)));
        let ok = verify(&strict, "DB.Example.Com", 2222, &plain(&new)).unwrap();
        assert_eq!(ok, Accepted::KnownHost(at(&file, 2)));

        let err = verify(&strict, "db.example.com", 22, &plain(&new)).unwrap_err();
        assert!(
            matches!(&err, HostKeyError::Changed { old, .. } if *old == at(&file, 1)),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "host key for db.example.com:22 changed ({}); the old key is at {}:1",
                fp(&new),
                file.display()
            )
        );

        let err = verify(&strict, "db.example.com", 2223, &plain(&old)).unwrap_err();
        assert!(
            matches!(&err, HostKeyError::Unknown { other_keys, .. } if other_keys.is_empty()),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "host key for db.example.com:2223 ({}) is not in any known_hosts file",
                fp(&old)
            )
        );
    }

    #[test]
    fn changed_names_the_right_file_and_line_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let old = keygen(dir.path(), "old", "ecdsa");
        let new = keygen(dir.path(), "new", "ecdsa");
        let first_text = format!("# nothing for db here\nweb {}\n", openssh(&new));
        let first = write(dir.path(), "first", &first_text);
        let second_text = format!("web {}\n\n# old\ndb {}\n", openssh(&old), openssh(&old));
        let second = write(dir.path(), "second", &second_text);
        let strict = check(&[&first, &second], Policy::Strict);
        let err = verify(&strict, "db", 22, &plain(&new)).unwrap_err();
        assert!(
            matches!(&err, HostKeyError::Changed { old, .. } if *old == at(&second, 4)),
            "{err:?}"
        );
        let tail = format!("the old key is at {}:4", second.display());
        assert!(err.to_string().ends_with(&tail), "{err}");
        // Any line holding the key trusts it, even after a line with another key.
        let ok = verify(&strict, "web", 22, &plain(&old)).unwrap();
        assert_eq!(ok, Accepted::KnownHost(at(&second, 1)));
    }

    #[test]
    fn other_algorithm_is_unknown_with_the_other_lines_and_never_learned() {
        let dir = tempfile::tempdir().unwrap();
        let ed = keygen(dir.path(), "ed", "ed25519");
        let ecdsa = keygen(dir.path(), "ecdsa", "ecdsa");
        let text = format!("# c\nhost {}\n", openssh(&ed));
        let file = write(dir.path(), "known_hosts", &text);
        for policy in [Policy::Strict, Policy::AcceptNew] {
            let err = verify(&check(&[&file], policy), "host", 22, &plain(&ecdsa)).unwrap_err();
            assert!(
                matches!(&err, HostKeyError::Unknown { other_keys, .. } if *other_keys == [at(&file, 2)]),
                "{err:?}"
            );
            let tail = format!(
                "; keys of other types are known for it at {}:2",
                file.display()
            );
            assert!(err.to_string().ends_with(&tail), "{err}");
        }
        assert_eq!(fs::read_to_string(&file).unwrap(), text);
    }

    #[test]
    fn revoked_refuses_even_with_a_plain_line_or_a_pin() {
        let dir = tempfile::tempdir().unwrap();
        let key = keygen(dir.path(), "k", "ed25519");
        let first_text = format!("host {}\n", openssh(&key));
        let first = write(dir.path(), "first", &first_text);
        let second_text = format!("# x\n@revoked some-other-host {}\n", openssh(&key));
        let second = write(dir.path(), "second", &second_text);
        let mut settings = check(&[&first, &second], Policy::AcceptNew);
        let err = verify(&settings, "host", 22, &plain(&key)).unwrap_err();
        assert!(
            matches!(&err, HostKeyError::Revoked { location, .. } if *location == at(&second, 2)),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "host key for host:22 is revoked: {} is marked @revoked at {}:2",
                fp(&key),
                second.display()
            )
        );
        settings.pins = vec![fp(&key)];
        let pinned = verify(&settings, "host", 22, &plain(&key));
        assert!(
            matches!(pinned, Err(HostKeyError::Revoked { .. })),
            "{pinned:?}"
        );
        // Revoked for hosts no line names as well, and nothing is learned.
        let pinned = verify(&settings, "new-host", 22, &plain(&key));
        assert!(
            matches!(pinned, Err(HostKeyError::Revoked { .. })),
            "{pinned:?}"
        );
        settings.pins.clear();
        let learned = verify(&settings, "new-host", 22, &plain(&key));
        assert!(
            matches!(learned, Err(HostKeyError::Revoked { .. })),
            "{learned:?}"
        );
        assert_eq!(fs::read_to_string(&first).unwrap(), first_text);
    }

    #[test]
    fn accept_new_learns_into_the_first_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let key = keygen(dir.path(), "k", "ed25519");
        let other = keygen(dir.path(), "other", "ed25519");
        let first = dir.path().join("created/known_hosts");
        let second_text = format!("elsewhere {}\n", openssh(&other));
        let second = write(dir.path(), "second", &second_text);

        let strict = check(&[&first, &second], Policy::Strict);
        let refused = verify(&strict, "db", 2222, &plain(&key));
        assert!(
            matches!(refused, Err(HostKeyError::Unknown { .. })),
            "{refused:?}"
        );
        assert!(!first.exists(), "strict must not write");

        let accept_new = check(&[&first, &second], Policy::AcceptNew);
        let learned = verify(&accept_new, "db", 2222, &plain(&key)).unwrap();
        assert_eq!(learned, Accepted::Learned(at(&first, 1)));
        let written = fs::read_to_string(&first).unwrap();
        assert_eq!(written, format!("[db]:2222 {}\n", openssh(&key)));
        assert_eq!(fs::read_to_string(&second).unwrap(), second_text);

        // Now known under either policy; a different key of the same type is a change.
        for settings in [&accept_new, &strict] {
            let ok = verify(settings, "db", 2222, &plain(&key)).unwrap();
            assert_eq!(ok, Accepted::KnownHost(at(&first, 1)));
            let err = verify(settings, "db", 2222, &plain(&other)).unwrap_err();
            assert!(
                matches!(&err, HostKeyError::Changed { old, .. } if *old == at(&first, 1)),
                "{err:?}"
            );
        }
        assert_eq!(fs::read_to_string(&first).unwrap(), written);
        // Port 22 is another name for known_hosts, so it is learned on its own line.
        let learned = verify(&accept_new, "db", 22, &plain(&other)).unwrap();
        assert_eq!(learned, Accepted::Learned(at(&first, 2)));
    }

    #[test]
    fn accept_new_without_files_stays_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let key = keygen(dir.path(), "k", "ed25519");
        let settings = check(&[], Policy::AcceptNew);
        let refused = verify(&settings, "db", 22, &plain(&key));
        assert!(
            matches!(refused, Err(HostKeyError::Unknown { .. })),
            "{refused:?}"
        );
    }

    #[test]
    fn pins_accept_their_keys_and_refuse_others() {
        let dir = tempfile::tempdir().unwrap();
        let pinned = keygen(dir.path(), "pinned", "rsa");
        let known = keygen(dir.path(), "known", "ed25519");
        let file = write(
            dir.path(),
            "known_hosts",
            &format!("db {}\n", openssh(&known)),
        );
        let mut settings = check(&[&file], Policy::AcceptNew);
        let extra: Fingerprint = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
            .parse()
            .unwrap();
        settings.pins = vec![extra, fp(&pinned)];
        let ok = verify(&settings, "db", 22, &plain(&pinned)).unwrap();
        assert_eq!(ok, Accepted::Pinned(fp(&pinned)));
        // known_hosts does not help a key that matches no pin, and accept-new does not apply.
        let err = verify(&settings, "db", 22, &plain(&known)).unwrap_err();
        assert!(
            matches!(&err, HostKeyError::PinMismatch { fingerprint, .. } if *fingerprint == fp(&known)),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "host key for db:22 ({}) matches none of the pinned fingerprints",
                fp(&known)
            )
        );
        let other = keygen(dir.path(), "other", "ed25519");
        let refused = verify(&settings, "new-host", 22, &plain(&other));
        assert!(
            matches!(refused, Err(HostKeyError::PinMismatch { .. })),
            "{refused:?}"
        );
        assert_eq!(fs::read_to_string(&file).unwrap().lines().count(), 1);
    }

    #[test]
    fn certificates_are_checked_against_cert_authority_lines() {
        let dir = tempfile::tempdir().unwrap();
        let ca = keygen(dir.path(), "ca", "ed25519");
        let host_key = keygen(dir.path(), "host", "ecdsa");
        let text = format!("@cert-authority *.example.com {}\n", openssh(&ca));
        let file = write(dir.path(), "known_hosts", &text);
        let settings = check(&[&file], Policy::AcceptNew);
        let good_args = ["-h", "-n", "db.example.com", "-V", "-5m:+1h"];
        let good = sign(dir.path(), "ca", "host", &good_args);
        let accepted = verify(&settings, "db.example.com", 22, &certified(&good)).unwrap();
        assert_eq!(accepted, Accepted::CertAuthority(at(&file, 1)));

        let err = verify(&settings, "web.example.com", 22, &certified(&good)).unwrap_err();
        assert!(
            matches!(
                &err,
                HostKeyError::CertRejected {
                    reason: CertRejection::WrongPrincipal { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "host certificate for web.example.com:22 ({}) rejected: its principals \
                 (db.example.com) do not include web.example.com",
                fp(&host_key)
            )
        );
        // A rejected certificate is not learned under accept-new.
        assert_eq!(fs::read_to_string(&file).unwrap(), text);

        let old_args = ["-h", "-n", "db.example.com", "-V", "20000101:20010101"];
        let expired = sign(dir.path(), "ca", "host", &old_args);
        let err = verify(&settings, "db.example.com", 22, &certified(&expired)).unwrap_err();
        let tail = "rejected: it expired at 2001-01-01T00:00:00Z";
        assert!(err.to_string().ends_with(tail), "{err}");
        // verify_at sees the same certificate as valid inside its window.
        let then = expired.valid_after() + 1;
        let ok = verify_at(&settings, "db.example.com", 22, &certified(&expired), then);
        assert_eq!(ok.unwrap(), Accepted::CertAuthority(at(&file, 1)));
    }

    #[test]
    fn rejected_certificate_falls_back_to_a_known_plain_key() {
        let dir = tempfile::tempdir().unwrap();
        keygen(dir.path(), "ca", "ed25519");
        let host_key = keygen(dir.path(), "host", "ed25519");
        let stale = keygen(dir.path(), "stale", "ed25519");
        let expired = sign(dir.path(), "ca", "host", &["-h", "-V", "20000101:20010101"]);
        let known = write(dir.path(), "known", &format!("db {}\n", openssh(&host_key)));
        let settings = check(&[&known], Policy::Strict);
        let ok = verify(&settings, "db", 22, &certified(&expired)).unwrap();
        assert_eq!(ok, Accepted::KnownHost(at(&known, 1)));
        let changed = write(dir.path(), "changed", &format!("db {}\n", openssh(&stale)));
        let settings = check(&[&changed], Policy::Strict);
        let err = verify(&settings, "db", 22, &certified(&expired));
        assert!(matches!(err, Err(HostKeyError::Changed { .. })), "{err:?}");
    }

    #[test]
    fn revoked_ca_or_certified_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = keygen(dir.path(), "ca", "ed25519");
        let host_key = keygen(dir.path(), "host", "ed25519");
        let cert = sign(dir.path(), "ca", "host", &["-h", "-n", "db"]);
        for (revoked, name) in [(&ca, "ca-revoked"), (&host_key, "host-revoked")] {
            let text = format!(
                "@cert-authority db {}\n@revoked * {}\n",
                openssh(&ca),
                openssh(revoked)
            );
            let file = write(dir.path(), name, &text);
            let settings = check(&[&file], Policy::Strict);
            let err = verify(&settings, "db", 22, &certified(&cert)).unwrap_err();
            assert!(
                matches!(&err, HostKeyError::Revoked { fingerprint, location, .. }
                    if *fingerprint == fp(revoked) && *location == at(&file, 2)),
                "{name}: {err:?}"
            );
        }
    }

    #[test]
    fn unreadable_or_unwritable_files_are_io_errors() {
        let dir = tempfile::tempdir().unwrap();
        let key = keygen(dir.path(), "k", "ed25519");
        let settings = check(&[dir.path()], Policy::Strict);
        let err = verify(&settings, "db", 22, &plain(&key)).unwrap_err();
        assert!(
            matches!(&err, HostKeyError::Io { action: "read", .. }),
            "{err:?}"
        );
        let expected = format!("cannot read known_hosts file {}", dir.path().display());
        assert_eq!(err.to_string(), expected);

        // A dangling symlink reads as missing, but creating its target fails.
        let inside: PathBuf = dir.path().join("known_hosts");
        std::os::unix::fs::symlink(dir.path().join("no-such-dir/known_hosts"), &inside).unwrap();
        let settings = check(&[&inside], Policy::AcceptNew);
        let err = verify(&settings, "db", 22, &plain(&key)).unwrap_err();
        assert!(
            matches!(&err, HostKeyError::Io { action: "write", file, .. } if *file == inside),
            "{err:?}"
        );
    }
}
