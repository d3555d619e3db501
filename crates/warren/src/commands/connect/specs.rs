//! ssh's `-L`/`-R`/`-D` argument grammar: `[BIND:]PORT:HOST:HOSTPORT`, Unix socket paths,
//! `[IPv6]` in brackets.

/// Splits on ':' outside `[...]`.
pub(super) fn split_colons(s: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut depth = 0;
    for c in s.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ':' if depth == 0 => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    parts
}

pub(super) fn is_explicit_bind(bind: &str) -> bool {
    !bind.is_empty() && bind != "localhost" && bind != "127.0.0.1" && bind != "[::1]"
}

pub(super) fn join_bind(bind: &str, port: &str) -> String {
    if bind.is_empty() {
        port.to_string()
    } else {
        format!("{bind}:{port}")
    }
}

/// ssh's forward grammar: `[BIND:]PORT:HOST:HOSTPORT`, `[BIND:]PORT:/socket`,
/// `/socket:HOST:HOSTPORT`, `/socket:/socket`. Returns (listen, connect, explicit public bind).
pub(super) fn split_forward(spec: &str, flag: &str) -> Result<(String, String, bool), String> {
    let p = split_colons(spec);
    let is_path = |s: &String| s.starts_with('/');
    let r = match p.as_slice() {
        [a, b] if is_path(b) => (a.clone(), b.clone(), false),
        [a, h, hp] if is_path(a) => (a.clone(), format!("{h}:{hp}"), false),
        [bind, port, path] if is_path(path) => {
            (join_bind(bind, port), path.clone(), is_explicit_bind(bind))
        }
        [port, h, hp] => (port.clone(), format!("{h}:{hp}"), false),
        [bind, port, h, hp] => (
            join_bind(bind, port),
            format!("{h}:{hp}"),
            is_explicit_bind(bind),
        ),
        _ => return Err(format!("{flag} {spec}: expected [BIND:]PORT:HOST:HOSTPORT")),
    };
    Ok(r)
}
