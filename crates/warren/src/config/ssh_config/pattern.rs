//! OpenSSH's wildcard patterns (`*` and `?`) and pattern lists with `!` negation.

/// One `Host` pattern or one element of a `Match host` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HostPattern {
    /// A leading `!`: a host matching it never matches the block.
    pub negated: bool,
    /// The pattern without `!`, lowercased (host names compare case-insensitively).
    pub pattern: String,
}

impl HostPattern {
    /// Parses `pattern` or `!pattern`.
    pub fn new(text: &str) -> Self {
        let (negated, pattern) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        Self {
            negated,
            pattern: pattern.to_ascii_lowercase(),
        }
    }

    /// Parses a comma-separated list, as `Match host` takes it.
    pub fn list(text: &str) -> Vec<Self> {
        text.split(',').map(Self::new).collect()
    }
}

/// True when some plain pattern matches `host` and no negated one does (OpenSSH's
/// `match_pattern_list(...) == 1`); `host` must already be lowercased.
pub(super) fn matches_list(patterns: &[HostPattern], host: &str) -> bool {
    let mut matched = false;
    for p in patterns {
        if wildcard(&p.pattern, host) {
            if p.negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// `*` matches any run of characters (also none), `?` exactly one; all else is literal.
pub(super) fn wildcard(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was and how much text it has swallowed so far: on a mismatch it
    // takes one more character and matching resumes after it.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// True when `text` holds a wildcard character.
pub(super) fn has_wildcard(text: &str) -> bool {
    text.contains(['*', '?'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        for (p, t, want) in [
            ("*", "", true),
            ("*", "anything", true),
            ("db?", "db1", true),
            ("db?", "db10", false),
            ("db?", "db", false),
            ("*.example.com", "a.example.com", true),
            ("*.example.com", "example.com", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("a*c", "abcbc", true),
            ("**", "x", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("", "", true),
            ("", "x", false),
        ] {
            assert_eq!(wildcard(p, t), want, "{p:?} vs {t:?}");
        }
    }

    #[test]
    fn lists_and_negation() {
        let l = HostPattern::list("*.Example.com,!bad.example.com");
        assert!(matches_list(&l, "good.example.com"));
        assert!(!matches_list(&l, "bad.example.com"));
        assert!(!matches_list(&l, "other.org"));
        assert!(!matches_list(&HostPattern::list("!x"), "y"));
    }
}
