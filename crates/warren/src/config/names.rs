//! Host and user names, wherever they come from (the TOML, an ssh_config `HostName` or `User`,
//! `-J`, `-l`, a destination), are checked before anything uses them: they reach a
//! ProxyCommand's shell through `%h`, `%r` and `%n`, and known_hosts through accept-new. The
//! rule is OpenSSH 9.6's `valid_hostname`/`valid_ruser` (CVE-2023-51385) plus the characters
//! of known_hosts patterns.

use std::net::Ipv6Addr;

/// Characters no host or user name may contain: shell metacharacters and quotes, and the
/// known_hosts pattern characters (`*`, `?`, `[`, `]`, `!`, `,`).
const FORBIDDEN: &str = "'`\"$\\;&<>|(){}*?[]!,";

/// Checks a host name or address; `[IPV6]` in brackets is accepted and returned without them.
pub fn check_hostname(name: &str) -> Result<&str, String> {
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']'))
        && inner.parse::<Ipv6Addr>().is_ok()
    {
        return Ok(inner);
    }
    check(name, "host name").map(|()| name)
}

/// Checks a user name.
pub fn check_user(name: &str) -> Result<(), String> {
    check(name, "user name")
}

fn check(name: &str, what: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if name.starts_with('-') {
        return Err(format!(
            "{what} {name:?} starts with '-', which a {what} never does (it would read as an option)"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || FORBIDDEN.contains(*c))
    {
        let shown = match c {
            c if c.is_control() || c.is_whitespace() => format!("{c:?}"),
            c => format!("'{c}'"),
        };
        return Err(format!(
            "{what} {name:?} contains {shown}, which a {what} never does (it could reach a \
             ProxyCommand's shell or a known_hosts pattern)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass() {
        for ok in [
            "db",
            "db-1.example.com",
            "10.0.0.5",
            "::1",
            "fe80::1%eth0",
            "xn--bcher-kva.example",
            "host_name",
        ] {
            assert_eq!(check_hostname(ok), Ok(ok), "{ok}");
        }
        assert_eq!(check_hostname("[::1]"), Ok("::1"));
        assert_eq!(check_hostname("[2001:db8::5]"), Ok("2001:db8::5"));
        for ok in ["ops", "deploy-bot", "first.last", "u_1", "svc@realm"] {
            assert_eq!(check_user(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn every_forbidden_character_is_refused_in_both() {
        for c in FORBIDDEN
            .chars()
            .chain([' ', '\t', '\n', '\r', '\0', '\x1b'])
        {
            let host = format!("a{c}b");
            let err = check_hostname(&host).unwrap_err();
            assert!(err.starts_with("host name "), "{err}");
            assert!(check_user(&host).unwrap_err().starts_with("user name "));
        }
        assert!(
            check_hostname("-oProxyCommand=x")
                .unwrap_err()
                .contains("starts with '-'")
        );
        assert!(check_user("-l").is_err());
        assert!(check_hostname("").unwrap_err().contains("empty"));
        // Brackets are only for an IPv6 literal.
        assert!(check_hostname("[db]").is_err());
        assert!(check_hostname("[::1").is_err());
        let err = check_hostname("x;touch${IFS}marker;").unwrap_err();
        assert!(err.contains("';'"), "{err}");
    }
}
