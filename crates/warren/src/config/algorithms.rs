//! The algorithms a session offers: key exchange, host key, cipher and MAC, chosen as in
//! `ssh_config(5)` (`KexAlgorithms` and friends): a list replaces the defaults, `+` appends to
//! them, `-` removes from them (wildcards allowed), `^` puts first. Only what warren's SSH
//! library implements can be named; the defaults follow OpenSSH 10's client where it does,
//! without SHA-1 anywhere.

/// The four lists, in order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Algorithms {
    /// Key exchange methods (the strict-kex and ext-info markers are always added).
    pub kex: Vec<&'static str>,
    /// Host key signature algorithms, certificate algorithms included.
    pub host_key: Vec<&'static str>,
    /// Ciphers.
    pub cipher: Vec<&'static str>,
    /// MACs (used with a non-AEAD cipher).
    pub mac: Vec<&'static str>,
}

impl Default for Algorithms {
    fn default() -> Self {
        Self {
            kex: Kind::Kex.defaults().to_vec(),
            host_key: Kind::HostKey.defaults().to_vec(),
            cipher: Kind::Cipher.defaults().to_vec(),
            mac: Kind::Mac.defaults().to_vec(),
        }
    }
}

/// One of the four lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `kex_algorithms` (`KexAlgorithms`).
    Kex,
    /// `host_key_algorithms` (`HostKeyAlgorithms`).
    HostKey,
    /// `ciphers` (`Ciphers`).
    Cipher,
    /// `macs` (`MACs`).
    Mac,
}

/// Key exchange methods implemented, in OpenSSH 10's order (sntrup761 is not implemented).
const KEX: &[&str] = &[
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group14-sha256",
    "diffie-hellman-group15-sha512",
    "diffie-hellman-group17-sha512",
    "diffie-hellman-group-exchange-sha1",
    "diffie-hellman-group14-sha1",
    "diffie-hellman-group1-sha1",
];
/// OpenSSH 10's client default (the implemented part).
const KEX_DEFAULT: &[&str] = &[
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group14-sha256",
];

/// Host key algorithms implemented: certificates first, as OpenSSH offers them.
const HOST_KEY: &[&str] = &[
    "ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com",
    "rsa-sha2-256-cert-v01@openssh.com",
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ssh-rsa",
    "ssh-rsa-cert-v01@openssh.com",
];
/// OpenSSH 10's client default without SHA-1 (`ssh-rsa`). Certificates are asked for only
/// when a known_hosts file names a certificate authority, unless the list is configured.
const HOST_KEY_DEFAULT: &[&str] = &[
    "ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com",
    "rsa-sha2-256-cert-v01@openssh.com",
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
];

/// Ciphers implemented.
const CIPHER: &[&str] = &[
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
    "aes128-cbc",
    "aes192-cbc",
    "aes256-cbc",
];
/// OpenSSH 10's client ciphers, AES-GCM first: with AES instructions it is several times
/// faster than chacha20-poly1305, which OpenSSH puts first (docs/benchmarks.md).
const CIPHER_DEFAULT: &[&str] = &[
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
];

/// MACs implemented.
const MAC: &[&str] = &[
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
    "hmac-sha1-etm@openssh.com",
    "hmac-sha1",
];
/// OpenSSH 10's client MACs without SHA-1 (umac is not implemented).
const MAC_DEFAULT: &[&str] = &[
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
];

impl Kind {
    /// Every name warren can offer, in preference order for `+` (appended ones keep it).
    pub fn supported(self) -> &'static [&'static str] {
        match self {
            Self::Kex => KEX,
            Self::HostKey => HOST_KEY,
            Self::Cipher => CIPHER,
            Self::Mac => MAC,
        }
    }

    /// The list offered when nothing is configured.
    pub fn defaults(self) -> &'static [&'static str] {
        match self {
            Self::Kex => KEX_DEFAULT,
            Self::HostKey => HOST_KEY_DEFAULT,
            Self::Cipher => CIPHER_DEFAULT,
            Self::Mac => MAC_DEFAULT,
        }
    }

    /// The setting's name in the configuration file.
    pub fn key(self) -> &'static str {
        match self {
            Self::Kex => "kex_algorithms",
            Self::HostKey => "host_key_algorithms",
            Self::Cipher => "ciphers",
            Self::Mac => "macs",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Kex => "key exchange method",
            Self::HostKey => "host key algorithm",
            Self::Cipher => "cipher",
            Self::Mac => "MAC",
        }
    }

    /// The list `spec` asks for, OpenSSH's way: `a,b` (that list), `+a,b` (the defaults and
    /// these), `-a,b*` (the defaults without these; wildcards), `^a,b` (these, then the rest
    /// of the defaults). The error names the unknown name and what is supported.
    pub fn parse(self, spec: &str) -> Result<Vec<&'static str>, String> {
        let spec = spec.trim();
        let (op, list) = match spec.chars().next() {
            Some(c @ ('+' | '-' | '^')) => (Some(c), &spec[1..]),
            _ => (None, spec),
        };
        let names: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return Err(format!("`{}` names no {}", self.key(), self.what()));
        }
        let defaults = self.defaults();
        if op == Some('-') {
            // As in OpenSSH, a removal may name what is not offered (`MACs -umac-64*`, a
            // common hardening line, names MACs warren does not implement): it removes nothing.
            let out: Vec<&'static str> = defaults
                .iter()
                .copied()
                .filter(|n| !names.iter().any(|p| glob(p, n)))
                .collect();
            if out.is_empty() {
                return Err(format!("`{}` removes every {}", self.key(), self.what()));
            }
            return Ok(out);
        }
        let listed = names
            .iter()
            .map(|n| self.lookup(n))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out: Vec<&'static str> = match op {
            Some('+') => defaults.to_vec(),
            Some('^') => listed.clone(),
            _ => Vec::new(),
        };
        let rest: Vec<&'static str> = match op {
            Some('+') => listed,
            Some('^') => defaults.to_vec(),
            _ => listed,
        };
        for n in rest {
            if !out.contains(&n) {
                out.push(n);
            }
        }
        Ok(out)
    }

    fn lookup(self, name: &str) -> Result<&'static str, String> {
        self.supported()
            .iter()
            .find(|n| n.eq_ignore_ascii_case(name))
            .copied()
            .ok_or_else(|| self.unknown(name))
    }

    fn unknown(self, name: &str) -> String {
        format!(
            "`{}`: unknown or unsupported {} {name:?}; supported: {}",
            self.key(),
            self.what(),
            self.supported().join(", ")
        )
    }
}

/// `*` and `?` patterns, as `-` lists take them.
fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.split_first(), n.split_first()) {
            (None, None) => true,
            (Some((b'*', rest)), _) => go(rest, n) || (!n.is_empty() && go(p, &n[1..])),
            (Some((b'?', rest)), Some((_, nrest))) => go(rest, nrest),
            (Some((a, rest)), Some((b, nrest))) => a.eq_ignore_ascii_case(b) && go(rest, nrest),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_openssh_10_without_sha1() {
        let d = Algorithms::default();
        assert_eq!(d.kex[0], "mlkem768x25519-sha256");
        assert_eq!(d.cipher[0], "aes128-gcm@openssh.com");
        for list in [&d.kex, &d.host_key, &d.cipher, &d.mac] {
            assert!(
                !list
                    .iter()
                    .any(|n| n.contains("sha1") || *n == "ssh-rsa" || n.starts_with("ssh-rsa-")),
                "{list:?}"
            );
        }
        for kind in [Kind::Kex, Kind::HostKey, Kind::Cipher, Kind::Mac] {
            for n in kind.defaults() {
                assert!(kind.supported().contains(n), "{n}");
            }
        }
    }

    #[test]
    fn openssh_list_syntax() {
        let c = Kind::Cipher;
        assert_eq!(
            c.parse("chacha20-poly1305@openssh.com").unwrap(),
            ["chacha20-poly1305@openssh.com"]
        );
        assert_eq!(
            c.parse("aes256-ctr, aes128-ctr").unwrap(),
            ["aes256-ctr", "aes128-ctr"]
        );
        let plus = c.parse("+aes128-cbc").unwrap();
        assert_eq!(plus.last(), Some(&"aes128-cbc"));
        assert_eq!(plus.len(), CIPHER_DEFAULT.len() + 1);
        assert_eq!(
            c.parse("+aes128-ctr").unwrap(),
            CIPHER_DEFAULT,
            "already there"
        );
        let minus = c.parse("-aes*-ctr").unwrap();
        assert_eq!(
            minus,
            [
                "aes128-gcm@openssh.com",
                "aes256-gcm@openssh.com",
                "chacha20-poly1305@openssh.com"
            ]
        );
        let first = c.parse("^chacha20-poly1305@openssh.com").unwrap();
        assert_eq!(first[0], "chacha20-poly1305@openssh.com");
        assert_eq!(first.len(), CIPHER_DEFAULT.len());
        let hk = Kind::HostKey.parse("+ssh-rsa").unwrap();
        assert!(hk.ends_with(&["ssh-rsa"]));
        assert_eq!(Kind::Mac.parse("HMAC-SHA2-256").unwrap(), ["hmac-sha2-256"]);
    }

    #[test]
    fn a_typo_names_itself_and_what_is_supported() {
        let e = Kind::Cipher
            .parse("aes128-ctr,aes128-gmc@openssh.com")
            .unwrap_err();
        assert!(e.starts_with("`ciphers`: unknown or unsupported cipher \"aes128-gmc@openssh.com\"; supported: aes128-gcm@openssh.com"), "{e}");
        assert!(
            Kind::Kex
                .parse("sntrup761x25519-sha512")
                .unwrap_err()
                .contains("key exchange")
        );
        // A removal of what is not offered removes nothing, as in OpenSSH.
        assert_eq!(
            Kind::Mac.parse("-umac-64*").unwrap(),
            Kind::Mac.defaults().to_vec()
        );
        assert!(
            Kind::Mac
                .parse("-hmac*")
                .unwrap_err()
                .contains("removes every MAC")
        );
        assert!(Kind::Kex.parse(" , ").is_err());
    }
}
