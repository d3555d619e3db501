//! Configuration problems, each tied to the position of the key or value at fault.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem found in a configuration file, located by a byte span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Byte range of the offending key or value in the source text.
    pub span: Range<usize>,
    /// Lowercase message naming the key and what is expected.
    pub message: String,
}

impl Diagnostic {
    /// A problem at `span`.
    pub fn new(span: Range<usize>, message: impl Into<String>) -> Self {
        Self {
            span,
            message: message.into(),
        }
    }
}

/// A problem turned into the `FILE:LINE:COLUMN: message` form users see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{path}: cannot read configuration: {source}", path = path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read and holds one or more problems.
    #[error("{}", render(path, problems))]
    Invalid {
        /// The file the problems are in.
        path: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// Builds the error for `diags` found in `src`, sorted by position.
    pub(crate) fn invalid(path: &Path, src: &str, mut diags: Vec<Diagnostic>) -> Self {
        diags.sort_by(|a, b| (a.span.start, &a.message).cmp(&(b.span.start, &b.message)));
        diags.dedup();
        let problems = diags
            .into_iter()
            .map(|d| {
                let (line, column) = line_column(src, d.span.start);
                Problem {
                    line,
                    column,
                    message: d.message,
                }
            })
            .collect();
        Self::Invalid {
            path: path.to_path_buf(),
            problems,
        }
    }

    /// Each problem as one `FILE:LINE:COLUMN: message` line.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Self::Read { .. } => vec![self.to_string()],
            Self::Invalid { path, problems } => problems
                .iter()
                .map(|p| format!("{}:{}:{}: {}", path.display(), p.line, p.column, p.message))
                .collect(),
        }
    }
}

fn render(path: &Path, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "{}:{}:{}: {}",
            path.display(),
            p.line,
            p.column,
            p.message
        ));
    }
    out
}

/// 1-based line and character column of byte `offset` in `src`.
pub fn line_column(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_characters_from_one() {
        let src = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_column(src, 0), (1, 1));
        assert_eq!(line_column(src, 4), (1, 5));
        assert_eq!(line_column(src, 6), (2, 1));
        // 'é' is two bytes but one column.
        let eq = src.find(" =").unwrap_or(0) + 1;
        assert_eq!(line_column(src, src[..eq].len()), (1, 3));
        let second_eq = src.rfind('=').unwrap_or(0);
        assert_eq!(line_column(src, second_eq), (2, 4));
    }

    #[test]
    fn problems_are_sorted_and_rendered_with_file_line_column() {
        let src = "x = 1\ny = 2\n";
        let err = ConfigError::invalid(
            Path::new("w.toml"),
            src,
            vec![
                Diagnostic::new(6..7, "second"),
                Diagnostic::new(0..1, "first"),
            ],
        );
        assert_eq!(err.lines(), vec!["w.toml:1:1: first", "w.toml:2:1: second"]);
        assert_eq!(err.to_string(), "w.toml:1:1: first\nw.toml:2:1: second");
    }
}
