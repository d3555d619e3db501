//! OpenSSH host certificates, trusted through `@cert-authority` lines the way `ssh` checks them.

use russh::keys::{Algorithm, Certificate, HashAlg};

use super::fingerprint::Fingerprint;
use super::known_hosts::{KnownHosts, Location};
use super::pattern::glob;

/// Why a host certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertRejection {
    /// No `@cert-authority` line for this host lists the certificate's signer.
    #[error(
        "its certificate authority {ca} is not trusted for {name} (no matching @cert-authority line)"
    )]
    UntrustedAuthority {
        /// The signing CA key.
        ca: Fingerprint,
        /// The known_hosts lookup name (`host` or `[host]:port`).
        name: String,
    },
    /// A user certificate was presented as a host key.
    #[error("it is a user certificate, not a host certificate")]
    NotHostCertificate,
    /// The validity window starts in the future.
    #[error("it is not valid before {}", utc(*valid_after))]
    NotYetValid {
        /// Start of validity, in seconds since the Unix epoch.
        valid_after: u64,
    },
    /// The validity window has ended.
    #[error("it expired at {}", utc(*valid_before))]
    Expired {
        /// End of validity, in seconds since the Unix epoch.
        valid_before: u64,
    },
    /// The signature does not verify against the CA key it names.
    #[error("its signature does not verify against its certificate authority {ca}")]
    BadSignature {
        /// The CA key named in the certificate.
        ca: Fingerprint,
    },
    /// Signed with `ssh-rsa` (RSA with SHA-1), which OpenSSH refuses by default since 8.2.
    #[error("it is signed with ssh-rsa (sha-1), which is not accepted")]
    Sha1Signature,
    /// The host name is not among the certificate's principals.
    #[error("its principals ({}) do not include {host}", principals.join(", "))]
    WrongPrincipal {
        /// The host name checked (lowercased, without port).
        host: String,
        /// The principals the certificate lists.
        principals: Vec<String>,
    },
    /// Critical options, none of which are defined for host certificates.
    #[error("it has unsupported critical options ({})", options.join(", "))]
    CriticalOptions {
        /// The option names.
        options: Vec<String>,
    },
}

/// Checks `cert` for `host` (principal name) and `lookup` (known_hosts name) at Unix time `now`.
///
/// Returns the `@cert-authority` line that vouches for it. Revocation is the caller's job.
pub(crate) fn check(
    cert: &Certificate,
    host: &str,
    lookup: &str,
    known: &KnownHosts,
    now: u64,
) -> Result<Location, CertRejection> {
    let ca = cert.signature_key();
    let ca_fingerprint = Fingerprint::of(ca);
    let Some(authority) = known.authorities(lookup).find(|e| e.key == *ca) else {
        return Err(CertRejection::UntrustedAuthority {
            ca: ca_fingerprint,
            name: lookup.to_owned(),
        });
    };
    if !cert.cert_type().is_host() {
        return Err(CertRejection::NotHostCertificate);
    }
    if now < cert.valid_after() {
        return Err(CertRejection::NotYetValid {
            valid_after: cert.valid_after(),
        });
    }
    if now >= cert.valid_before() {
        return Err(CertRejection::Expired {
            valid_before: cert.valid_before(),
        });
    }
    // The window and the CA were checked above, so only the signature can fail here.
    let ca_sha256 = ca.fingerprint(HashAlg::Sha256);
    if cert.validate_at(now, [&ca_sha256]).is_err() {
        return Err(CertRejection::BadSignature { ca: ca_fingerprint });
    }
    if cert.signature().algorithm() == (Algorithm::Rsa { hash: None }) {
        return Err(CertRejection::Sha1Signature);
    }
    let host = host.to_ascii_lowercase();
    let principals = cert.valid_principals();
    // An empty list means any host; OpenSSH allows wildcards in host principals.
    if !principals.is_empty() && !principals.iter().any(|p| glob(p, &host)) {
        return Err(CertRejection::WrongPrincipal {
            host,
            principals: principals.to_vec(),
        });
    }
    if !cert.critical_options().is_empty() {
        return Err(CertRejection::CriticalOptions {
            options: cert.critical_options().keys().cloned().collect(),
        });
    }
    Ok(authority.location.clone())
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC), for refusal messages.
fn utc(secs: u64) -> String {
    if secs == u64::MAX {
        return "forever".to_owned();
    }
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil, on the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostkey::pattern::lookup_name;
    use crate::hostkey::testutil::{keygen, openssh, sign};
    use std::path::Path;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// known_hosts text trusting `dir/ca.pub` for `hosts`.
    fn trust(dir: &Path, hosts: &str) -> KnownHosts {
        let ca = crate::hostkey::testutil::read_pub(&dir.join("ca.pub"));
        let mut known = KnownHosts::default();
        let text = format!("# ca\n@cert-authority {hosts} {}\n", openssh(&ca));
        known.add_text(Path::new("kh"), &text);
        known
    }

    fn check_now(
        cert: &Certificate,
        host: &str,
        port: u16,
        known: &KnownHosts,
    ) -> Result<Location, CertRejection> {
        check(cert, host, &lookup_name(host, port), known, now())
    }

    #[test]
    fn valid_host_cert_is_trusted_for_its_principals_only() {
        let dir = tempfile::tempdir().unwrap();
        keygen(dir.path(), "ca", "ed25519");
        keygen(dir.path(), "host", "ecdsa");
        let cert = sign(
            dir.path(),
            "ca",
            "host",
            &["-h", "-n", "host1,host2", "-V", "-5m:+1h"],
        );
        let known = trust(dir.path(), "host*");
        let vouched = Location {
            file: "kh".into(),
            line: 2,
        };
        assert_eq!(check_now(&cert, "host1", 22, &known), Ok(vouched.clone()));
        assert_eq!(check_now(&cert, "HOST2", 22, &known), Ok(vouched));
        let err = check_now(&cert, "host3", 22, &known).unwrap_err();
        assert_eq!(
            err,
            CertRejection::WrongPrincipal {
                host: "host3".into(),
                principals: vec!["host1".into(), "host2".into()]
            }
        );
        assert_eq!(
            err.to_string(),
            "its principals (host1, host2) do not include host3"
        );
    }

    #[test]
    fn empty_principals_mean_any_host_and_ports_use_bracket_patterns() {
        let dir = tempfile::tempdir().unwrap();
        keygen(dir.path(), "ca", "rsa");
        keygen(dir.path(), "host", "ed25519");
        let cert = sign(dir.path(), "ca", "host", &["-h"]);
        let known = trust(dir.path(), "[*.example.com]:2222");
        assert!(check_now(&cert, "db.example.com", 2222, &known).is_ok());
        let err = check_now(&cert, "db.example.com", 22, &known).unwrap_err();
        assert!(
            matches!(err, CertRejection::UntrustedAuthority { ref name, .. } if name == "db.example.com")
        );
    }

    #[test]
    fn untrusted_or_misplaced_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        keygen(dir.path(), "ca", "ed25519");
        keygen(dir.path(), "host", "ed25519");
        let other = keygen(dir.path(), "other-ca", "ed25519");
        let cert = sign(dir.path(), "other-ca", "host", &["-h", "-n", "host1"]);
        let known = trust(dir.path(), "*");
        let err = check_now(&cert, "host1", 22, &known).unwrap_err();
        assert_eq!(
            err,
            CertRejection::UntrustedAuthority {
                ca: Fingerprint::of(other.key_data()),
                name: "host1".into()
            }
        );
        let cert = sign(dir.path(), "ca", "host", &["-h", "-n", "host1"]);
        let elsewhere = trust(dir.path(), "*.example.org,!host1");
        assert!(matches!(
            check_now(&cert, "host1", 22, &elsewhere),
            Err(CertRejection::UntrustedAuthority { .. })
        ));
    }

    #[test]
    fn validity_window_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        keygen(dir.path(), "ca", "ed25519");
        keygen(dir.path(), "host", "ed25519");
        let known = trust(dir.path(), "host1");
        let expired = sign(
            dir.path(),
            "ca",
            "host",
            &["-h", "-n", "host1", "-V", "20000101:20010101"],
        );
        let err = check_now(&expired, "host1", 22, &known).unwrap_err();
        assert!(matches!(err, CertRejection::Expired { .. }), "{err:?}");
        assert_eq!(err.to_string(), "it expired at 2001-01-01T00:00:00Z");
        let future = sign(
            dir.path(),
            "ca",
            "host",
            &["-h", "-n", "host1", "-V", "+1d:+2d"],
        );
        let err = check_now(&future, "host1", 22, &known).unwrap_err();
        assert!(matches!(err, CertRejection::NotYetValid { .. }), "{err:?}");
        // At a time inside the window, the same certificate passes.
        assert!(check(&future, "host1", "host1", &known, future.valid_after() + 60).is_ok());
    }

    #[test]
    fn user_certificate_is_not_a_host_certificate() {
        let dir = tempfile::tempdir().unwrap();
        keygen(dir.path(), "ca", "ed25519");
        keygen(dir.path(), "host", "ed25519");
        let cert = sign(dir.path(), "ca", "host", &["-n", "host1"]);
        let known = trust(dir.path(), "host1");
        assert_eq!(
            check_now(&cert, "host1", 22, &known),
            Err(CertRejection::NotHostCertificate)
        );
    }

    #[test]
    fn tampered_certificate_fails_its_signature() {
        let dir = tempfile::tempdir().unwrap();
        keygen(dir.path(), "ca", "ecdsa");
        keygen(dir.path(), "host", "ed25519");
        let cert = sign(dir.path(), "ca", "host", &["-h", "-n", "host1"]);
        let mut bytes = cert.to_bytes().unwrap();
        let at = bytes.windows(5).position(|w| w == b"host1").unwrap();
        bytes[at + 4] = b'9';
        let tampered = Certificate::from_bytes(&bytes).unwrap();
        assert_eq!(tampered.valid_principals(), ["host9".to_owned()]);
        let known = trust(dir.path(), "host9");
        let err = check_now(&tampered, "host9", 22, &known).unwrap_err();
        assert!(matches!(err, CertRejection::BadSignature { .. }), "{err:?}");
    }

    #[test]
    fn sha1_signed_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        keygen(dir.path(), "ca", "rsa");
        keygen(dir.path(), "host", "ed25519");
        let cert = sign(
            dir.path(),
            "ca",
            "host",
            &["-h", "-n", "host1", "-t", "ssh-rsa"],
        );
        assert_eq!(cert.signature().algorithm(), Algorithm::Rsa { hash: None });
        let known = trust(dir.path(), "host1");
        assert_eq!(
            check_now(&cert, "host1", 22, &known),
            Err(CertRejection::Sha1Signature)
        );
        let sha2 = sign(
            dir.path(),
            "ca",
            "host",
            &["-h", "-n", "host1", "-t", "rsa-sha2-256"],
        );
        assert!(check_now(&sha2, "host1", 22, &known).is_ok());
    }

    #[test]
    fn critical_options_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        keygen(dir.path(), "ca", "ed25519");
        keygen(dir.path(), "host", "ed25519");
        let cert = sign(
            dir.path(),
            "ca",
            "host",
            &["-h", "-n", "host1", "-O", "critical:frob=1"],
        );
        let known = trust(dir.path(), "host1");
        assert_eq!(
            check_now(&cert, "host1", 22, &known),
            Err(CertRejection::CriticalOptions {
                options: vec!["frob".into()]
            })
        );
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(978_307_199), "2000-12-31T23:59:59Z");
        assert_eq!(utc(u64::MAX), "forever");
    }
}
