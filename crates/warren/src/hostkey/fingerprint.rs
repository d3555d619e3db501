//! SHA256 key fingerprints as `ssh-keygen -l -E sha256` prints them, and pins parsed from config.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{HashAlg, PublicKey};

/// `SHA256:` and the unpadded base64 SHA-256 of the key blob, exactly as `ssh-keygen -l` prints.
pub fn fingerprint_sha256(key: &PublicKey) -> String {
    Fingerprint::of(key.key_data()).to_string()
}

/// A SHA256 key fingerprint, used as a pin (`SHA256:...` in the config) and in messages.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The SHA256 fingerprint of a key.
    pub fn of(key: &KeyData) -> Self {
        // A SHA256 fingerprint always has a SHA-256 digest; the default is unreachable.
        Self(
            key.fingerprint(HashAlg::Sha256)
                .sha256()
                .unwrap_or_default(),
        )
    }

    /// Whether `key` has this fingerprint.
    pub fn matches(&self, key: &KeyData) -> bool {
        *self == Self::of(key)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SHA256:{}", STANDARD_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// A pin string that is not a SHA256 fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "expected a SHA256 fingerprint as printed by `ssh-keygen -l -E sha256` \
     (`SHA256:` then 43 base64 characters), got `{0}`"
)]
pub struct FingerprintError(String);

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    /// Accepts `SHA256:` followed by the unpadded base64 digest; nothing else (no MD5, no hex).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let error = || FingerprintError(text.to_owned());
        let digest = text.strip_prefix("SHA256:").ok_or_else(error)?;
        let bytes = STANDARD_NO_PAD.decode(digest).map_err(|_| error())?;
        Ok(Self(bytes.try_into().map_err(|_| error())?))
    }
}

#[cfg(test)]
#[path = "fingerprint_proptests.rs"]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostkey::testutil::{keygen, ssh_keygen};

    #[test]
    fn matches_ssh_keygen_for_every_key_type() {
        let dir = tempfile::tempdir().unwrap();
        for kind in ["ed25519", "ecdsa", "rsa"] {
            let key = keygen(dir.path(), kind, kind);
            let public = dir.path().join(format!("{kind}.pub"));
            let listed = ssh_keygen(&["-l", "-E", "sha256", "-f", public.to_str().unwrap()]);
            // `256 SHA256:... comment (ED25519)`
            let expected = listed.split_whitespace().nth(1).unwrap();
            assert!(expected.starts_with("SHA256:"), "{listed}");
            assert_eq!(fingerprint_sha256(&key), expected, "{kind}");
            let pin: Fingerprint = expected.parse().unwrap();
            assert_eq!(pin.to_string(), expected);
            assert!(pin.matches(key.key_data()));
        }
    }

    #[test]
    fn pin_matches_only_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = keygen(dir.path(), "a", "ed25519");
        let b = keygen(dir.path(), "b", "ed25519");
        let pin: Fingerprint = format!("  {}\n", fingerprint_sha256(&a)).parse().unwrap();
        assert!(pin.matches(a.key_data()));
        assert!(!pin.matches(b.key_data()));
        assert_eq!(pin, Fingerprint::of(a.key_data()));
    }

    #[test]
    fn only_sha256_pins_parse() {
        let good = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU";
        assert!(good.parse::<Fingerprint>().is_ok());
        for bad in [
            "",
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
            "sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSu",
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSu!U",
            "MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48",
            "16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48",
            "SHA512:z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg",
        ] {
            let err = bad.parse::<Fingerprint>().unwrap_err();
            let message = err.to_string();
            assert!(
                message.starts_with("expected a SHA256 fingerprint"),
                "{message}"
            );
            assert!(message.contains(bad.trim()), "{message}");
        }
    }
}
