//! Reading a file, and every file it includes, into a tree of directives. Included files are
//! read whether or not the block around the `Include` matches, as OpenSSH does, so a bad
//! value or an include loop is reported at load time for every host.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::SshConfigError;
use super::directive::{self, Criterion, Directive, Setting};
use super::lex::split_line;
use super::pattern::{HostPattern, has_wildcard, wildcard};

/// How deep includes may nest (OpenSSH's `READCONF_MAX_DEPTH`); the top file is depth 0.
pub(super) const MAX_DEPTH: usize = 16;

/// One file's directives, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct File {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its directives, blank lines, comments and unread keywords left out.
    pub items: Vec<Item>,
}

/// A directive as the resolver walks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Item {
    /// `Host`: starts a block.
    Host(Vec<HostPattern>),
    /// `Match`: starts a block.
    Match(Vec<Criterion>),
    /// `Include`: the files its patterns matched, in glob order.
    Include(Vec<File>),
    /// An option.
    Set(Setting),
}

/// Parses `text`, read from `path` at include depth `depth`.
pub(super) fn parse_file(
    text: &str,
    path: &Path,
    home: Option<&Path>,
    depth: usize,
) -> Result<File, SshConfigError> {
    let mut items = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let invalid = |message: String| SshConfigError::Invalid {
            file: path.to_path_buf(),
            line: index + 1,
            message,
        };
        let Some(line) = split_line(raw) else {
            continue;
        };
        let item = match directive::parse(&line).map_err(invalid)? {
            Directive::Host(patterns) => Item::Host(patterns),
            Directive::Match(criteria) => Item::Match(criteria),
            Directive::Set(setting) => Item::Set(setting),
            Directive::Ignored => continue,
            Directive::Include(patterns) => {
                let mut files = Vec::new();
                for pattern in &patterns {
                    for found in include_paths(pattern, home).map_err(invalid)? {
                        if depth >= MAX_DEPTH {
                            return Err(invalid(format!(
                                "Include nested more than {MAX_DEPTH} files deep (does a file \
                                 include itself?) at {}",
                                found.display()
                            )));
                        }
                        let Some(text) = read_included(&found).map_err(invalid)? else {
                            continue;
                        };
                        files.push(parse_file(&text, &found, home, depth + 1)?);
                    }
                }
                Item::Include(files)
            }
        };
        items.push(item);
    }
    Ok(File {
        path: path.to_path_buf(),
        items,
    })
}

/// The text of an included file; `None` when it vanished or is a directory (OpenSSH skips
/// those too).
fn read_included(path: &Path) -> Result<Option<String>, String> {
    if path.is_dir() {
        return Ok(None);
    }
    match fs::read_to_string(path) {
        Ok(_) if !safe_owner_and_mode(path) => Err(format!(
            "bad owner or permissions on included file {}: it must belong to this user or \
             root and not be writable by group or others, since its ProxyCommand lines are run",
            path.display()
        )),
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read included file {}: {e}", path.display())),
    }
}

/// OpenSSH's check on a user's config file and its includes: owned by this user or root,
/// not writable by group or others.
pub(super) fn safe_owner_and_mode(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::metadata(path) else {
        return false;
    };
    let uid = nix::unistd::getuid().as_raw();
    (meta.uid() == 0 || meta.uid() == uid) && meta.mode() & 0o022 == 0
}

/// The files an `Include` argument names: `~/` is the home directory, a relative path is
/// relative to `~/.ssh/`, and `*` / `?` glob in any component. Nothing matching is not an
/// error.
fn include_paths(pattern: &str, home: Option<&Path>) -> Result<Vec<PathBuf>, String> {
    let need_home = || {
        home.ok_or_else(|| {
            format!("Include \"{pattern}\" is relative to the home directory, which is unknown")
        })
    };
    let path = if let Some(rest) = pattern.strip_prefix("~/") {
        need_home()?.join(rest)
    } else if pattern == "~" {
        need_home()?.to_path_buf()
    } else if pattern.starts_with('~') {
        return Err(format!(
            "Include \"{pattern}\": ~user paths are not supported; write the path in full"
        ));
    } else if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        need_home()?.join(".ssh").join(pattern)
    };
    Ok(glob(&path))
}

/// The existing paths matching `path`, sorted. As with glob(3), a wildcard does not match a
/// leading `.` of a name.
fn glob(path: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for component in path.components() {
        let text = component.as_os_str().to_str();
        let pattern = match (component, text) {
            (Component::Normal(_), Some(t)) if has_wildcard(t) => t,
            _ => {
                for base in &mut found {
                    base.push(component);
                }
                continue;
            }
        };
        let mut next = Vec::new();
        for base in &found {
            let dir = if base.as_os_str().is_empty() {
                Path::new(".")
            } else {
                base.as_path()
            };
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else {
                    continue;
                };
                if name.starts_with('.') && !pattern.starts_with('.') {
                    continue;
                }
                if wildcard(pattern, name) {
                    next.push(base.join(name));
                }
            }
        }
        found = next;
    }
    found.retain(|p| p.exists());
    found.sort();
    found
}
