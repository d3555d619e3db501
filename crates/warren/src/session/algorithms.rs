//! The configured algorithm names (`config::algorithms`) as russh's types: what a session
//! offers, in order. Every name the configuration accepts maps to one here (a test checks).

use std::borrow::Cow;

use russh::keys::{Algorithm, EcdsaCurve, HashAlg};
use russh::{Preferred, cipher, kex, mac};

use crate::config::Algorithms;

/// russh's name of a key exchange method.
fn kex_name(name: &str) -> Option<kex::Name> {
    Some(match name {
        "mlkem768x25519-sha256" => kex::MLKEM768X25519_SHA256,
        "curve25519-sha256" => kex::CURVE25519,
        "curve25519-sha256@libssh.org" => kex::CURVE25519_PRE_RFC_8731,
        "ecdh-sha2-nistp256" => kex::ECDH_SHA2_NISTP256,
        "ecdh-sha2-nistp384" => kex::ECDH_SHA2_NISTP384,
        "ecdh-sha2-nistp521" => kex::ECDH_SHA2_NISTP521,
        "diffie-hellman-group-exchange-sha256" => kex::DH_GEX_SHA256,
        "diffie-hellman-group16-sha512" => kex::DH_G16_SHA512,
        "diffie-hellman-group18-sha512" => kex::DH_G18_SHA512,
        "diffie-hellman-group14-sha256" => kex::DH_G14_SHA256,
        "diffie-hellman-group15-sha512" => kex::DH_G15_SHA512,
        "diffie-hellman-group17-sha512" => kex::DH_G17_SHA512,
        "diffie-hellman-group-exchange-sha1" => kex::DH_GEX_SHA1,
        "diffie-hellman-group14-sha1" => kex::DH_G14_SHA1,
        "diffie-hellman-group1-sha1" => kex::DH_G1_SHA1,
        _ => return None,
    })
}

/// russh's name of a cipher.
fn cipher_name(name: &str) -> Option<cipher::Name> {
    Some(match name {
        "aes128-gcm@openssh.com" => cipher::AES_128_GCM,
        "aes256-gcm@openssh.com" => cipher::AES_256_GCM,
        "chacha20-poly1305@openssh.com" => cipher::CHACHA20_POLY1305,
        "aes128-ctr" => cipher::AES_128_CTR,
        "aes192-ctr" => cipher::AES_192_CTR,
        "aes256-ctr" => cipher::AES_256_CTR,
        "aes128-cbc" => cipher::AES_128_CBC,
        "aes192-cbc" => cipher::AES_192_CBC,
        "aes256-cbc" => cipher::AES_256_CBC,
        _ => return None,
    })
}

/// russh's name of a MAC.
fn mac_name(name: &str) -> Option<mac::Name> {
    Some(match name {
        "hmac-sha2-256-etm@openssh.com" => mac::HMAC_SHA256_ETM,
        "hmac-sha2-512-etm@openssh.com" => mac::HMAC_SHA512_ETM,
        "hmac-sha2-256" => mac::HMAC_SHA256,
        "hmac-sha2-512" => mac::HMAC_SHA512,
        "hmac-sha1-etm@openssh.com" => mac::HMAC_SHA1_ETM,
        "hmac-sha1" => mac::HMAC_SHA1,
        _ => return None,
    })
}

/// A host key algorithm, and whether it is its certificate variant.
fn host_key(name: &str) -> Option<(Algorithm, bool)> {
    let (plain, cert) = match name.strip_suffix("-cert-v01@openssh.com") {
        Some(plain) => (plain, true),
        None => (name, false),
    };
    let algorithm = match plain {
        "ssh-ed25519" => Algorithm::Ed25519,
        "ecdsa-sha2-nistp256" => Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
        "ecdsa-sha2-nistp384" => Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP384,
        },
        "ecdsa-sha2-nistp521" => Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP521,
        },
        "rsa-sha2-512" => Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        },
        "rsa-sha2-256" => Algorithm::Rsa {
            hash: Some(HashAlg::Sha256),
        },
        "ssh-rsa" => Algorithm::Rsa { hash: None },
        _ => return None,
    };
    Some((algorithm, cert))
}

/// What a session offers for `algorithms`. Certificate host key algorithms are offered only
/// when `certificates` (a certificate authority is known, or the list was configured).
pub fn preferred(algorithms: &Algorithms, certificates: bool) -> Preferred {
    let mut kex: Vec<kex::Name> = algorithms.kex.iter().filter_map(|n| kex_name(n)).collect();
    // Strict key exchange (the Terrapin fix) and server-sig-algs are negotiated through
    // these markers; they are always offered.
    kex.extend([
        kex::EXTENSION_SUPPORT_AS_CLIENT,
        kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT,
    ]);
    let (mut key, mut certs) = (Vec::new(), Vec::new());
    for (algorithm, cert) in algorithms.host_key.iter().filter_map(|n| host_key(n)) {
        match cert {
            false => key.push(algorithm),
            true if certificates => certs.push(algorithm),
            true => {}
        }
    }
    Preferred {
        kex: Cow::Owned(kex),
        key: Cow::Owned(key),
        host_key_certificates: Cow::Owned(certs),
        cipher: Cow::Owned(
            algorithms
                .cipher
                .iter()
                .filter_map(|n| cipher_name(n))
                .collect(),
        ),
        mac: Cow::Owned(algorithms.mac.iter().filter_map(|n| mac_name(n)).collect()),
        ..Preferred::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::algorithms::Kind;

    #[test]
    fn every_name_the_configuration_accepts_is_one_russh_knows() {
        for n in Kind::Kex.supported() {
            assert_eq!(
                kex_name(n).map(|k| k.as_ref().to_string()),
                Some(n.to_string())
            );
        }
        for n in Kind::Cipher.supported() {
            assert_eq!(
                cipher_name(n).map(|c| c.as_ref().to_string()),
                Some(n.to_string())
            );
        }
        for n in Kind::Mac.supported() {
            assert_eq!(
                mac_name(n).map(|m| m.as_ref().to_string()),
                Some(n.to_string())
            );
        }
        for n in Kind::HostKey.supported() {
            let (algorithm, cert) = host_key(n).unwrap_or_else(|| panic!("{n}"));
            let shown = if cert {
                algorithm.to_certificate_type().to_string()
            } else {
                algorithm.as_str().to_string()
            };
            assert_eq!(shown, *n);
        }
    }

    #[test]
    fn defaults_keep_post_quantum_and_aes_gcm_first_and_no_sha1() {
        let p = preferred(&Algorithms::default(), false);
        assert_eq!(p.kex[0], kex::MLKEM768X25519_SHA256);
        assert!(p.kex.contains(&kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT));
        assert_eq!(p.cipher[0], cipher::AES_128_GCM);
        assert!(!p.key.contains(&Algorithm::Rsa { hash: None }));
        assert!(p.host_key_certificates.is_empty());
        assert!(
            !preferred(&Algorithms::default(), true)
                .host_key_certificates
                .is_empty()
        );
    }
}
