//! Splits one ssh_config line the way OpenSSH's readconf does: a keyword, then `=` or
//! whitespace, then arguments that double quotes may group.

/// A line that holds a directive.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Line<'a> {
    /// The keyword as written.
    pub keyword: &'a str,
    /// Everything after the keyword and its separator, trailing whitespace removed: what
    /// `ProxyCommand` and `ProxyJump` take whole.
    pub rest: &'a str,
}

const WHITESPACE: &[char] = &[' ', '\t', '\r', '\n', '\x0c'];

/// The directive on `line`, or `None` for a blank or comment line.
pub(super) fn split_line(line: &str) -> Option<Line<'_>> {
    let line = line.trim_matches(WHITESPACE);
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line.find(|c: char| c == '=' || WHITESPACE.contains(&c));
    let Some(end) = end else {
        return Some(Line {
            keyword: line,
            rest: "",
        });
    };
    let (keyword, after) = line.split_at(end);
    // One `=` may separate the keyword from its value, with whitespace on either side.
    let mut rest = after.trim_start_matches(WHITESPACE);
    let ended_by_equals = after.starts_with('=');
    if ended_by_equals {
        rest = after[1..].trim_start_matches(WHITESPACE);
    } else if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start_matches(WHITESPACE);
    }
    Some(Line { keyword, rest })
}

/// Splits arguments on whitespace; `"..."` groups (quotes may start mid-word), `\"` and `\\`
/// stand for themselves, and a `#` at the start of an argument ends the line.
pub(super) fn split_args(text: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| WHITESPACE.contains(c)).is_some() {}
        match chars.peek() {
            None | Some('#') => return Ok(args),
            Some(_) => {}
        }
        let mut arg = String::new();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            match c {
                '"' => quoted = !quoted,
                '\\' if matches!(chars.peek(), Some('"' | '\\')) => {
                    arg.extend(chars.next());
                }
                c if !quoted && WHITESPACE.contains(&c) => break,
                c => arg.push(c),
            }
        }
        if quoted {
            return Err("unterminated double quote".into());
        }
        args.push(arg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Option<(&str, &str)> {
        split_line(text).map(|l| (l.keyword, l.rest))
    }

    #[test]
    fn keyword_separators() {
        assert_eq!(line("Port 22"), Some(("Port", "22")));
        assert_eq!(line("Port=22"), Some(("Port", "22")));
        assert_eq!(line("  Port = 22  \r"), Some(("Port", "22")));
        assert_eq!(line("Port\t=\t22"), Some(("Port", "22")));
        assert_eq!(line("Port= 22"), Some(("Port", "22")));
        assert_eq!(line("Port ==22"), Some(("Port", "=22")));
        assert_eq!(line("Port"), Some(("Port", "")));
        assert_eq!(line("Port   "), Some(("Port", "")));
        assert_eq!(line(""), None);
        assert_eq!(line("   "), None);
        assert_eq!(line("  # Port 22"), None);
    }

    #[test]
    fn arguments() {
        let ok = |s: &str| split_args(s).unwrap();
        assert_eq!(ok("a b\tc"), ["a", "b", "c"]);
        assert_eq!(ok("\"a b\" c"), ["a b", "c"]);
        assert_eq!(ok("x\"a b\"y"), ["xa by"]);
        assert_eq!(ok("\"\""), [""]);
        assert_eq!(ok("a # comment \"b"), ["a"]);
        assert_eq!(ok("a#b"), ["a#b"]);
        assert_eq!(ok("\"#x\""), ["#x"]);
        assert_eq!(
            ok(r#""say \"hi\"" c:\\d \x"#),
            [r#"say "hi""#, r"c:\d", r"\x"]
        );
        assert!(ok("").is_empty());
        assert!(split_args("\"open").is_err());
    }
}
