//! Host fields of known_hosts lines: comma lists of `*`/`?`/`!` patterns and `|1|` hashed names.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The name OpenSSH looks a host up under: `host` on port 22, `[host]:port` otherwise.
///
/// Lowercased, because `ssh` lowercases the host name before any lookup or hashing.
pub(crate) fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// The host field of one known_hosts line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostField {
    /// `|1|base64(salt)|base64(hmac-sha1(salt, name))`, as written by `ssh-keygen -H`.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    /// A comma list of patterns, lowercased; a leading `!` negates one.
    Patterns(Vec<String>),
}

impl HostField {
    /// Parses a host field; the error says why the line is unusable.
    pub(crate) fn parse(field: &str) -> Result<Self, &'static str> {
        if let Some(rest) = field.strip_prefix("|1|") {
            let (salt, hash) = rest.split_once('|').ok_or("hashed host has no hash part")?;
            let salt = STANDARD
                .decode(salt)
                .map_err(|_| "hashed host salt is not base64")?;
            let hash = STANDARD
                .decode(hash)
                .map_err(|_| "hashed host hash is not base64")?;
            // OpenSSH refuses any salt or hash that is not exactly one SHA-1 digest long.
            if salt.len() != 20 || hash.len() != 20 {
                return Err("hashed host salt or hash is not 20 bytes");
            }
            return Ok(Self::Hashed { salt, hash });
        }
        if field.starts_with('|') {
            return Err("unsupported hashed host format");
        }
        Ok(Self::Patterns(
            field.split(',').map(str::to_ascii_lowercase).collect(),
        ))
    }

    /// Whether this field matches a lookup name from [`lookup_name`].
    ///
    /// A name matching any negated pattern never matches, whatever else matches.
    pub(crate) fn matches(&self, name: &str) -> bool {
        match self {
            Self::Hashed { salt, hash } => {
                let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(salt) else {
                    return false;
                };
                mac.update(name.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
            Self::Patterns(patterns) => {
                let mut positive = false;
                for pattern in patterns {
                    match pattern.strip_prefix('!') {
                        Some(negated) if glob(negated, name) => return false,
                        Some(_) => {}
                        None => positive |= glob(pattern, name),
                    }
                }
                positive
            }
        }
    }
}

/// OpenSSH's `match_pattern`: `*` matches any run of bytes, `?` exactly one.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was and how much text it has swallowed so far: on a
    // mismatch it swallows one more byte, which makes the match linear-ish
    // instead of exponential in the number of stars.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(text: &str) -> HostField {
        HostField::parse(text).unwrap()
    }

    #[test]
    fn glob_follows_openssh_wildcards() {
        assert!(glob("*", ""));
        assert!(glob("*", "anything"));
        assert!(glob("db?.example.com", "db1.example.com"));
        assert!(!glob("db?.example.com", "db12.example.com"));
        assert!(glob("*.example.com", "a.b.example.com"));
        assert!(!glob("*.example.com", "example.com"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("10.0.*.*", "10.0.3.4"));
        assert!(!glob("", "x"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }

    #[test]
    fn lookup_name_brackets_non_default_ports_and_lowercases() {
        assert_eq!(lookup_name("DB.Example.com", 22), "db.example.com");
        assert_eq!(lookup_name("db.example.com", 2222), "[db.example.com]:2222");
        assert_eq!(lookup_name("::1", 2222), "[::1]:2222");
    }

    #[test]
    fn comma_lists_wildcards_and_case() {
        let hosts = field("web1,*.Example.COM,10.0.0.?");
        assert!(hosts.matches("web1"));
        assert!(hosts.matches("db.example.com"));
        assert!(hosts.matches(&lookup_name("DB.EXAMPLE.COM", 22)));
        assert!(hosts.matches("10.0.0.7"));
        assert!(!hosts.matches("10.0.0.77"));
        assert!(!hosts.matches("web2"));
    }

    #[test]
    fn negation_wins_over_any_positive_match() {
        let hosts = field("*.example.com,!secret.example.com");
        assert!(hosts.matches("db.example.com"));
        assert!(!hosts.matches("secret.example.com"));
        // Order does not matter.
        let hosts = field("!secret.example.com,*.example.com");
        assert!(!hosts.matches("secret.example.com"));
        // A negation alone matches nothing.
        assert!(!field("!secret.example.com").matches("db.example.com"));
    }

    #[test]
    fn port_form_only_matches_port_form() {
        let hosts = field("[*.example.com]:2222");
        assert!(hosts.matches(&lookup_name("db.example.com", 2222)));
        assert!(!hosts.matches(&lookup_name("db.example.com", 22)));
        assert!(!hosts.matches(&lookup_name("db.example.com", 2223)));
        assert!(!field("db.example.com").matches(&lookup_name("db.example.com", 2222)));
    }

    #[test]
    fn malformed_hashes_are_refused() {
        assert!(HostField::parse("|1|nohash").is_err());
        assert!(HostField::parse("|1|!!!|AAAA").is_err());
        // Valid base64, but a 3-byte salt.
        assert!(HostField::parse("|1|AAAA|AAAAAAAAAAAAAAAAAAAAAAAAAAA=").is_err());
        assert!(HostField::parse("|2|AAAA|AAAA").is_err());
    }
}
