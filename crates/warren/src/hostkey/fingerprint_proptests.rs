//! Property tests of `SHA256:` fingerprints: parsing never panics, every digest round-trips
//! through `Display` and `FromStr`, a pin is accepted only in its one canonical spelling, and
//! `Fingerprint::of` is the SHA-256 of the key blob that known_hosts lines hold.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use russh::keys::ssh_key::public::Ed25519PublicKey;
use sha2::{Digest as _, Sha256};

use super::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_text_never_panics_and_only_the_canonical_form_parses(text in any::<String>()) {
        if let Ok(fp) = text.parse::<Fingerprint>() {
            prop_assert_eq!(fp.to_string(), text.trim());
        }
    }

    #[test]
    fn near_pins_parse_only_when_canonical(
        digest in any::<[u8; 32]>(),
        at in any::<prop::sample::Index>(),
        c in prop::sample::select(vec!['A', 'Q', 'g', 'w', '+', '/', '=', '-', '_', ':']),
    ) {
        let mut text: Vec<char> = Fingerprint(digest).to_string().chars().collect();
        let i = at.index(text.len());
        text[i] = c;
        let text: String = text.into_iter().collect();
        if let Ok(fp) = text.parse::<Fingerprint>() {
            prop_assert_eq!(fp.to_string(), text);
        }
    }

    #[test]
    fn digests_round_trip(digest in any::<[u8; 32]>(), pad in "[ \t\n]{0,2}") {
        let fp = Fingerprint(digest);
        let text = fp.to_string();
        prop_assert_eq!(text.len(), "SHA256:".len() + 43);
        prop_assert_eq!(format!("{pad}{text}{pad}").parse::<Fingerprint>(), Ok(fp));
        // Any other length of digest is refused.
        let short = format!("SHA256:{}", STANDARD_NO_PAD.encode(&digest[..31]));
        prop_assert!(short.parse::<Fingerprint>().is_err());
    }

    #[test]
    fn a_key_fingerprint_is_the_sha256_of_its_blob(bytes in any::<[u8; 32]>()) {
        let key = PublicKey::new(KeyData::Ed25519(Ed25519PublicKey(bytes)), "");
        let text = key.to_openssh().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let blob = text.split(' ').nth(1).unwrap_or_default();
        let blob = STANDARD.decode(blob).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want: [u8; 32] = Sha256::digest(&blob).into();
        prop_assert_eq!(Fingerprint::of(key.key_data()), Fingerprint(want));
        prop_assert_eq!(fingerprint_sha256(&key), Fingerprint(want).to_string());
        prop_assert!(Fingerprint(want).matches(key.key_data()));
    }
}
