//! `-o KEY=VALUE`: a host setting of the configuration file, or the OpenSSH option of the
//! same meaning, as a TOML value.

use toml::Value;

/// `-o KEY=VALUE` (or `KEY VALUE`) split at the first `=` or white space, whichever comes
/// first, as ssh does (`-o "ProxyCommand ssh -o X=Y gw"` has the key `ProxyCommand`); trimmed.
fn split(o: &str) -> Result<(&str, &str), String> {
    let o = o.trim_start();
    let at = o
        .find(|c: char| c == '=' || c.is_whitespace())
        .ok_or_else(|| format!("-o {o}: expected KEY=VALUE"))?;
    let (k, rest) = o.split_at(at);
    // `KEY = VALUE`, `KEY =VALUE`, `KEY VALUE`: one `=` may follow the white space.
    let rest = rest.trim_start();
    let v = rest.strip_prefix('=').unwrap_or(rest);
    Ok((k, v.trim()))
}

/// `Some` when `o` is `ExitOnForwardFailure=yes|no`: a setting of `warren connect` itself,
/// not of the host.
pub(super) fn exit_on_forward_failure(o: &str) -> Result<Option<bool>, String> {
    let (k, v) = split(o)?;
    if !k.eq_ignore_ascii_case("exitonforwardfailure") {
        return Ok(None);
    }
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(Some(true)),
        "no" | "false" => Ok(Some(false)),
        _ => Err(format!("-o {o}: expected yes or no")),
    }
}

/// The setting `-o KEY=VALUE` stands for; `None` for one that keeps the default.
pub(super) fn option(o: &str) -> Result<Option<(String, Value)>, String> {
    let (k, v) = split(o)?;
    let secs = |v: &str| {
        let text = if v.bytes().all(|b| b.is_ascii_digit()) {
            format!("{v}s")
        } else {
            v.to_string()
        };
        Value::String(text)
    };
    let string = |v: &str| Value::String(v.to_string());
    let (key, value) = match k.to_ascii_lowercase().as_str() {
        "stricthostkeychecking" => {
            let policy = match v.to_ascii_lowercase().as_str() {
                "yes" => "strict",
                "accept-new" => "accept-new",
                other => {
                    return Err(format!(
                        "-o StrictHostKeyChecking={other}: warren always verifies host keys; use yes or accept-new"
                    ));
                }
            };
            ("host_key_policy", string(policy))
        }
        "userknownhostsfile" => ("known_hosts", list(v, ' ')),
        "identityfile" => ("identity_files", list(v, ',')),
        "certificatefile" => ("certificate_files", list(v, ',')),
        // 0 is ssh's "no keepalives"; warren always sends them: keep its default.
        "serveraliveinterval" if v == "0" => return Ok(None),
        "serveraliveinterval" => ("keepalive_interval", secs(v)),
        "serveralivecountmax" => ("keepalive_count_max", number(v)),
        "connecttimeout" => ("connect_timeout", secs(v)),
        "addressfamily" => ("address_family", string(&v.to_ascii_lowercase())),
        "proxycommand" => ("proxy_command", string(v)),
        "hostname" => ("hostname", string(v)),
        "user" => ("user", string(v)),
        "port" => ("port", number(v)),
        "kexalgorithms" => ("kex_algorithms", string(v)),
        "hostkeyalgorithms" => ("host_key_algorithms", string(v)),
        "ciphers" => ("ciphers", string(v)),
        "macs" => ("macs", string(v)),
        _ => {
            let value = match k {
                "identity_files"
                | "certificate_files"
                | "known_hosts"
                | "host_key_fingerprints" => list(v, ','),
                "port" | "keepalive_count_max" => number(v),
                "agent" => match v {
                    "true" | "yes" => Value::Boolean(true),
                    "false" | "no" => Value::Boolean(false),
                    other => string(other),
                },
                _ => string(v),
            };
            return Ok(Some((k.to_string(), value)));
        }
    };
    Ok(Some((key.to_string(), value)))
}

/// A whole number, or the text as written (which validation then reports as the wrong type,
/// naming the key).
fn number(v: &str) -> Value {
    v.parse()
        .map_or_else(|_| Value::String(v.to_string()), Value::Integer)
}

fn list(v: &str, sep: char) -> Value {
    Value::Array(
        v.split(sep)
            .filter(|s| !s.is_empty())
            .map(|s| Value::String(s.trim().to_string()))
            .collect(),
    )
}
