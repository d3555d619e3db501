//! OpenSSH known_hosts files: parsing as `sshd(8)` describes them, lookups, and accept-new appends.

use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use nix::fcntl::{Flock, FlockArg};
use russh::keys::PublicKey;
use russh::keys::ssh_key::public::KeyData;

use super::HostKeyError;
use super::pattern::{HostField, lookup_name};

/// Where a known_hosts line is: its file and 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The known_hosts file.
    pub file: PathBuf,
    /// The 1-based line number in that file.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// The optional marker that starts a known_hosts line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    /// No marker: the key belongs to the hosts.
    Plain,
    /// `@cert-authority`: the key is a CA trusted to sign host certificates for the hosts.
    CertAuthority,
    /// `@revoked`: the key must never be accepted.
    Revoked,
}

/// One usable known_hosts line.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) marker: Marker,
    pub(crate) hosts: HostField,
    pub(crate) key: KeyData,
    pub(crate) location: Location,
}

/// What the plain lines say about one host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyStatus {
    /// A line for this host holds exactly this key.
    Trusted(Location),
    /// No line holds this key, but this line holds another key of the same algorithm.
    Changed(Location),
    /// No line holds a key of this algorithm; these lines hold keys of other algorithms.
    Unknown { other_keys: Vec<Location> },
}

/// The usable lines of a list of known_hosts files, in file and line order.
#[derive(Debug, Clone, Default)]
pub(crate) struct KnownHosts {
    entries: Vec<Entry>,
}

impl KnownHosts {
    /// Reads the files in order: a missing file has no lines, an unreadable one is an error.
    pub(crate) fn load(files: &[PathBuf]) -> Result<Self, HostKeyError> {
        let mut known = Self::default();
        for file in files {
            let bytes = match fs::read(file) {
                Ok(bytes) => bytes,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(HostKeyError::Io {
                        action: "read",
                        file: file.clone(),
                        source,
                    });
                }
            };
            known.add_text(file, &String::from_utf8_lossy(&bytes));
        }
        Ok(known)
    }

    /// Adds the usable lines of `text`, read from `file`; bad lines are logged and skipped.
    pub(crate) fn add_text(&mut self, file: &Path, text: &str) {
        for (index, line) in text.lines().enumerate() {
            let location = Location {
                file: file.to_path_buf(),
                line: index + 1,
            };
            match parse_line(line) {
                Ok(Some((marker, hosts, key))) => self.entries.push(Entry {
                    marker,
                    hosts,
                    key,
                    location,
                }),
                Ok(None) => {}
                // Like OpenSSH: one bad line must not make the rest of the file useless.
                Err(reason) => tracing::debug!(
                    file = %location.file.display(),
                    line = location.line,
                    reason,
                    "skipping malformed known_hosts line"
                ),
            }
        }
    }

    /// The first `@revoked` line holding `key`, whatever hosts it names.
    pub(crate) fn revoked(&self, key: &KeyData) -> Option<&Location> {
        self.entries
            .iter()
            .find(|e| e.marker == Marker::Revoked && e.key == *key)
            .map(|e| &e.location)
    }

    /// Looks `key` up in the plain lines matching `lookup` (a [`lookup_name`]).
    pub(crate) fn check_key(&self, lookup: &str, key: &KeyData) -> KeyStatus {
        let mut changed = None;
        let mut other_keys = Vec::new();
        for entry in self.for_host(lookup, Marker::Plain) {
            if entry.key == *key {
                return KeyStatus::Trusted(entry.location.clone());
            }
            if entry.key.algorithm() == key.algorithm() {
                changed.get_or_insert_with(|| entry.location.clone());
            } else {
                other_keys.push(entry.location.clone());
            }
        }
        match changed {
            Some(location) => KeyStatus::Changed(location),
            None => KeyStatus::Unknown { other_keys },
        }
    }

    /// The `@cert-authority` lines matching `lookup` (a [`lookup_name`]).
    pub(crate) fn authorities<'a>(&'a self, lookup: &'a str) -> impl Iterator<Item = &'a Entry> {
        self.for_host(lookup, Marker::CertAuthority)
    }

    fn for_host<'a>(&'a self, lookup: &'a str, marker: Marker) -> impl Iterator<Item = &'a Entry> {
        self.entries
            .iter()
            .filter(move |e| e.marker == marker && e.hosts.matches(lookup))
    }
}

/// Splits off the next field: skips spaces and tabs, then takes up to the next one.
fn next_field(text: &str) -> (&str, &str) {
    let text = text.trim_start_matches([' ', '\t']);
    text.split_at(text.find([' ', '\t']).unwrap_or(text.len()))
}

/// Parses one line: `Ok(None)` for blank and comment lines, `Err(reason)` for unusable ones.
fn parse_line(line: &str) -> Result<Option<(Marker, HostField, KeyData)>, &'static str> {
    let (mut field, mut rest) = next_field(line);
    if field.is_empty() || field.starts_with('#') {
        return Ok(None);
    }
    let marker = match field {
        "@cert-authority" => Marker::CertAuthority,
        "@revoked" => Marker::Revoked,
        _ if field.starts_with('@') => return Err("unknown marker"),
        _ => Marker::Plain,
    };
    if marker != Marker::Plain {
        (field, rest) = next_field(rest);
        if field.is_empty() {
            return Err("no host field after the marker");
        }
    }
    let hosts = match HostField::parse(field) {
        Ok(hosts) => hosts,
        // A revocation applies to every host, so a host field it cannot use does not void it.
        Err(_) if marker == Marker::Revoked => HostField::Patterns(Vec::new()),
        Err(reason) => return Err(reason),
    };
    let (key_type, rest) = next_field(rest);
    if key_type.is_empty() || key_type.starts_with('#') {
        return Err("truncated before the key type");
    }
    let (blob, _comment) = next_field(rest);
    if blob.is_empty() {
        return Err("truncated after the key type");
    }
    let key =
        PublicKey::from_openssh(&format!("{key_type} {blob}")).map_err(|_| "key does not parse")?;
    if key.algorithm().as_str() != key_type {
        return Err("key type does not match the key");
    }
    Ok(Some((marker, hosts, key.key_data().clone())))
}

/// Reads one known_hosts line as [`verify`](super::verify) does and says whether it applies
/// to `host` on `port`: `Ok(None)` for a blank or comment line, `Err(reason)` for a line the
/// reader skips, else whether its host field names `host` (the marker is not considered).
///
/// An entry point for fuzzing and tests; the daemon reads whole files.
pub fn known_hosts_line_matches(
    line: &str,
    host: &str,
    port: u16,
) -> Result<Option<bool>, &'static str> {
    Ok(parse_line(line)?.map(|(_, hosts, _)| hosts.matches(&lookup_name(host, port))))
}

/// What [`learn`] found once it held the lock.
#[derive(Debug)]
pub(crate) enum Learnt {
    /// The host was still unknown: its key was appended here.
    Appended(Location),
    /// Meanwhile the files say this (another session of the host, or another process,
    /// learned a key first).
    Decided(KeyStatus),
}

/// One learner at a time within this process; `flock` orders it with other processes
/// (another warren, or `ssh` with `StrictHostKeyChecking accept-new` on the same file).
static LEARNING: Mutex<()> = Mutex::new(());

/// Learns `key` for `host`/`port` under accept-new, into the first of `files`: with the
/// process lock and an exclusive `flock` on that file, every file is read again, and the key
/// is appended only if the host is still unknown. So when several sessions of one new host
/// verify at once (two `[hosts.*]` entries for one server, or a reconnect racing a reload),
/// at most one key is learned, and a different one offered by another is a changed key.
pub(crate) fn learn(
    files: &[PathBuf],
    host: &str,
    port: u16,
    key: &KeyData,
) -> Result<Learnt, HostKeyError> {
    let Some(file) = files.first() else {
        return Err(HostKeyError::Io {
            action: "write",
            file: PathBuf::new(),
            source: io::Error::new(io::ErrorKind::NotFound, "no known_hosts file to write"),
        });
    };
    let io_error = |source| HostKeyError::Io {
        action: "write",
        file: file.clone(),
        source,
    };
    let name = lookup_name(host, port);
    if !is_literal(host) {
        return Err(io_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{host:?} is not a literal host name; it would be read as a pattern"),
        )));
    }
    let _process = LEARNING.lock().unwrap_or_else(PoisonError::into_inner);
    let mut handle = open_locked(file).map_err(io_error)?;
    match KnownHosts::load(files)?.check_key(&name, key) {
        KeyStatus::Unknown { other_keys } if other_keys.is_empty() => {}
        status => return Ok(Learnt::Decided(status)),
    }
    append_line(&mut handle, file, &name, key)
        .map(Learnt::Appended)
        .map_err(io_error)
}

/// Whether `host` is written as itself in a known_hosts line (no pattern, list, negation,
/// hash or marker character), so that the line matches this host and no other.
fn is_literal(host: &str) -> bool {
    !host.is_empty()
        && !host.starts_with(['|', '@'])
        && !host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "*?!,[]#".contains(c))
}

/// Opens `file` for appending (creating it 0600, and its directories 0700) with an exclusive
/// `flock`, released when the handle drops.
fn open_locked(file: &Path) -> io::Result<Flock<fs::File>> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let handle = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file)?;
    Flock::lock(handle, FlockArg::LockExclusive).map_err(|(_, errno)| io::Error::from(errno))
}

/// Appends `name` with `key` the way `ssh` does, returning the new line's place: the key
/// type and the key, without comment; a file whose last line lacks its newline gets one first.
fn append_line(
    handle: &mut fs::File,
    file: &Path,
    name: &str,
    key: &KeyData,
) -> io::Result<Location> {
    let key_text = PublicKey::new(key.clone(), "")
        .to_openssh()
        .map_err(io::Error::other)?;
    let mut existing = Vec::new();
    handle.read_to_end(&mut existing)?;
    let newlines = existing.iter().filter(|&&b| b == b'\n').count();
    let mut text = String::new();
    let mut line = newlines + 1;
    if existing.last().is_some_and(|&b| b != b'\n') {
        text.push('\n');
        line += 1;
    }
    text.push_str(name);
    text.push(' ');
    text.push_str(&key_text);
    text.push('\n');
    // One write in append mode, so that a writer not taking the lock cannot split the line.
    handle.write_all(text.as_bytes())?;
    handle.sync_all()?;
    Ok(Location {
        file: file.to_path_buf(),
        line,
    })
}

#[cfg(test)]
#[path = "known_hosts_proptests.rs"]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostkey::testutil::{keygen, openssh, ssh_keygen, write};
    use std::os::unix::fs::PermissionsExt as _;

    fn load(files: &[PathBuf]) -> KnownHosts {
        KnownHosts::load(files).unwrap()
    }

    fn at(file: &Path, line: usize) -> Location {
        Location {
            file: file.to_path_buf(),
            line,
        }
    }

    #[test]
    fn plain_lines_match_by_name_list_wildcard_and_case() {
        let dir = tempfile::tempdir().unwrap();
        let a = keygen(dir.path(), "a", "ed25519");
        let b = keygen(dir.path(), "b", "ed25519");
        let c = keygen(dir.path(), "c", "ed25519");
        let text = format!(
            "web1,Web2.Example.COM,10.0.0.5 {} a comment\n*.db.example.com {}\n[bastion]:2222 {}\n",
            openssh(&a),
            openssh(&b),
            openssh(&c)
        );
        let file = write(dir.path(), "known_hosts", &text);
        let known = load(std::slice::from_ref(&file));
        let check = |host: &str, port, key: &PublicKey| {
            known.check_key(&lookup_name(host, port), key.key_data())
        };
        assert_eq!(check("web1", 22, &a), KeyStatus::Trusted(at(&file, 1)));
        assert_eq!(
            check("WEB2.example.com", 22, &a),
            KeyStatus::Trusted(at(&file, 1))
        );
        assert_eq!(check("10.0.0.5", 22, &a), KeyStatus::Trusted(at(&file, 1)));
        assert_eq!(
            check("x.db.example.com", 22, &b),
            KeyStatus::Trusted(at(&file, 2))
        );
        assert_eq!(check("bastion", 2222, &c), KeyStatus::Trusted(at(&file, 3)));
        // `host` lines are for port 22 only, `[host]:port` lines for that port only.
        let unknown = KeyStatus::Unknown { other_keys: vec![] };
        assert_eq!(check("web1", 2222, &a), unknown);
        assert_eq!(check("bastion", 22, &c), unknown);
        assert_eq!(check("bastion", 2223, &c), unknown);
        assert_eq!(check("db.example.com", 22, &b), unknown);
    }

    #[test]
    fn negated_pattern_excludes_host() {
        let dir = tempfile::tempdir().unwrap();
        let key = keygen(dir.path(), "k", "ed25519");
        let text = format!("*.example.com,!secret.example.com {}\n", openssh(&key));
        let file = write(dir.path(), "known_hosts", &text);
        let known = load(std::slice::from_ref(&file));
        let ok = known.check_key("db.example.com", key.key_data());
        assert_eq!(ok, KeyStatus::Trusted(at(&file, 1)));
        let refused = known.check_key("secret.example.com", key.key_data());
        assert_eq!(refused, KeyStatus::Unknown { other_keys: vec![] });
    }

    #[test]
    fn tabs_spaces_comments_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let key = keygen(dir.path(), "k", "ecdsa");
        let (kind, blob) = openssh(&key)
            .split_once(' ')
            .map(|(k, b)| (k.to_owned(), b.to_owned()))
            .unwrap();
        let text = format!(
            "# a comment\n\
             \n\
             \t   \n\
             garbage\n\
             host-only-no-key ssh-ed25519\n\
             badkey ssh-ed25519 AAAAnotbase64!!!\n\
             mismatch ssh-rsa {blob}\n\
             @bogus-marker host {kind} {blob}\n\
             |1|broken|hash {kind} {blob}\n\
             \t tabbed\t\t{kind} \t {blob}\tcomment here\n\
             doubled  {kind}  {blob}  two  spaces\r\n"
        );
        let file = write(dir.path(), "known_hosts", &text);
        let known = load(std::slice::from_ref(&file));
        // Only the last two lines are usable; line numbers count every line.
        assert_eq!(known.entries.len(), 2);
        let tabbed = known.check_key("tabbed", key.key_data());
        assert_eq!(tabbed, KeyStatus::Trusted(at(&file, 10)));
        let doubled = known.check_key("doubled", key.key_data());
        assert_eq!(doubled, KeyStatus::Trusted(at(&file, 11)));
        assert_eq!(
            known.check_key("mismatch", key.key_data()),
            KeyStatus::Unknown { other_keys: vec![] }
        );
    }

    #[test]
    fn markers_are_parsed_and_revoked_ignores_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let ca = keygen(dir.path(), "ca", "ed25519");
        let bad = keygen(dir.path(), "bad", "ed25519");
        let also_bad = keygen(dir.path(), "also-bad", "ecdsa");
        let text = format!(
            "@cert-authority *.example.com {}\n@revoked\tnot-this-host {}\n@revoked |1|x {}\n",
            openssh(&ca),
            openssh(&bad),
            openssh(&also_bad)
        );
        let file = write(dir.path(), "known_hosts", &text);
        let known = load(std::slice::from_ref(&file));
        assert_eq!(known.revoked(bad.key_data()), Some(&at(&file, 2)));
        // Even with a host field that could never match anything.
        assert_eq!(known.revoked(also_bad.key_data()), Some(&at(&file, 3)));
        assert_eq!(known.revoked(ca.key_data()), None);
        let cas: Vec<_> = known
            .authorities("db.example.com")
            .map(|e| &e.location)
            .collect();
        assert_eq!(cas, vec![&at(&file, 1)]);
        assert_eq!(known.authorities("example.org").count(), 0);
        // Marker lines are not plain host keys.
        let status = known.check_key("db.example.com", ca.key_data());
        assert_eq!(status, KeyStatus::Unknown { other_keys: vec![] });
    }

    #[test]
    fn changed_and_other_algorithms_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let old = keygen(dir.path(), "old", "ed25519");
        let new = keygen(dir.path(), "new", "ed25519");
        let ecdsa = keygen(dir.path(), "ecdsa", "ecdsa");
        let first = write(
            dir.path(),
            "first",
            &format!("# mine\nhost {}\n", openssh(&ecdsa)),
        );
        let second = write(
            dir.path(),
            "second",
            &format!("other {}\n\nhost {}\n", openssh(&new), openssh(&old)),
        );
        let known = load(&[first.clone(), second.clone()]);
        assert_eq!(
            known.check_key("host", new.key_data()),
            KeyStatus::Changed(at(&second, 3))
        );
        assert_eq!(
            known.check_key("host", old.key_data()),
            KeyStatus::Trusted(at(&second, 3))
        );
        let another_ecdsa = keygen(dir.path(), "other", "ecdsa");
        assert_eq!(
            known.check_key("host", another_ecdsa.key_data()),
            KeyStatus::Changed(at(&first, 2))
        );
        let ed = keygen(dir.path(), "ed", "ed25519");
        let only_first = load(std::slice::from_ref(&first));
        assert_eq!(
            only_first.check_key("host", ed.key_data()),
            KeyStatus::Unknown {
                other_keys: vec![at(&first, 2)]
            }
        );
    }

    #[test]
    fn hashed_lines_from_ssh_keygen_match_like_plain_ones() {
        let dir = tempfile::tempdir().unwrap();
        let a = keygen(dir.path(), "a", "ed25519");
        let b = keygen(dir.path(), "b", "ecdsa");
        let plain = format!(
            "db.example.com {}\n[db.example.com]:2222 {}\n",
            openssh(&a),
            openssh(&b)
        );
        let file = write(dir.path(), "known_hosts", &plain);
        ssh_keygen(&["-q", "-H", "-f", file.to_str().unwrap()]);
        let hashed = fs::read_to_string(&file).unwrap();
        assert!(hashed.lines().all(|l| l.starts_with("|1|")), "{hashed}");
        let plain_known = {
            let mut k = KnownHosts::default();
            k.add_text(&file, &plain);
            k
        };
        let hashed_known = load(std::slice::from_ref(&file));
        for known in [&plain_known, &hashed_known] {
            let check = |host: &str, port, key: &PublicKey| {
                known.check_key(&lookup_name(host, port), key.key_data())
            };
            assert_eq!(
                check("db.example.com", 22, &a),
                KeyStatus::Trusted(at(&file, 1))
            );
            assert_eq!(
                check("DB.example.com", 22, &a),
                KeyStatus::Trusted(at(&file, 1))
            );
            assert_eq!(
                check("db.example.com", 2222, &b),
                KeyStatus::Trusted(at(&file, 2))
            );
            assert_eq!(
                check("db.example.com", 2222, &a),
                KeyStatus::Unknown {
                    other_keys: vec![at(&file, 2)]
                }
            );
            assert_eq!(
                check("db.example.org", 22, &a),
                KeyStatus::Unknown { other_keys: vec![] }
            );
        }
    }

    #[test]
    fn missing_file_is_empty_and_unreadable_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert_eq!(load(std::slice::from_ref(&missing)).entries.len(), 0);
        // A directory cannot be read as a file, even by root.
        let err = KnownHosts::load(&[dir.path().to_path_buf()]).unwrap_err();
        match &err {
            HostKeyError::Io { file, .. } => assert_eq!(file, dir.path()),
            other => panic!("unexpected error {other:?}"),
        }
        assert!(
            err.to_string().starts_with("cannot read known_hosts file "),
            "{err}"
        );
    }

    /// Learns `key` for `host`/`port` into `file` alone; where it was appended.
    fn learn_into(file: &Path, host: &str, port: u16, key: &PublicKey) -> Location {
        match learn(&[file.to_path_buf()], host, port, key.key_data()).unwrap() {
            Learnt::Appended(at) => at,
            other => panic!("not appended: {other:?}"),
        }
    }

    #[test]
    fn append_creates_private_file_that_ssh_keygen_finds() {
        let dir = tempfile::tempdir().unwrap();
        let key = keygen(dir.path(), "k", "ed25519");
        let file = dir.path().join("new/dir/known_hosts");
        assert_eq!(
            learn_into(&file, "DB.example.com", 2222, &key),
            at(&file, 1)
        );
        assert_eq!(learn_into(&file, "db.example.com", 22, &key), at(&file, 2));
        let text = fs::read_to_string(&file).unwrap();
        let line = openssh(&key);
        assert_eq!(
            text,
            format!("[db.example.com]:2222 {line}\ndb.example.com {line}\n")
        );
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let parent = fs::metadata(dir.path().join("new")).unwrap();
        assert_eq!(parent.permissions().mode() & 0o777, 0o700);
        // OpenSSH's own lookup finds both entries.
        let found = ssh_keygen(&["-F", "[db.example.com]:2222", "-f", file.to_str().unwrap()]);
        assert!(
            found.contains(&format!("[db.example.com]:2222 {line}")),
            "{found}"
        );
        let found = ssh_keygen(&["-F", "db.example.com", "-f", file.to_str().unwrap()]);
        assert!(
            found.contains(&format!("\ndb.example.com {line}")),
            "{found}"
        );
    }

    #[test]
    fn append_keeps_a_file_without_trailing_newline_intact() {
        let dir = tempfile::tempdir().unwrap();
        let old = keygen(dir.path(), "old", "ed25519");
        let new = keygen(dir.path(), "new", "ecdsa");
        let file = write(
            dir.path(),
            "known_hosts",
            &format!("# c\nold {}", openssh(&old)),
        );
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(learn_into(&file, "new", 22, &new), at(&file, 3));
        let text = fs::read_to_string(&file).unwrap();
        assert_eq!(
            text,
            format!("# c\nold {}\nnew {}\n", openssh(&old), openssh(&new))
        );
        // An existing file keeps its mode.
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let known = load(std::slice::from_ref(&file));
        assert_eq!(
            known.check_key("old", old.key_data()),
            KeyStatus::Trusted(at(&file, 2))
        );
        assert_eq!(
            known.check_key("new", new.key_data()),
            KeyStatus::Trusted(at(&file, 3))
        );
    }

    #[test]
    fn a_host_learned_meanwhile_is_decided_on_not_learned_again() {
        let dir = tempfile::tempdir().unwrap();
        let first = keygen(dir.path(), "first", "ed25519");
        let second = keygen(dir.path(), "second", "ed25519");
        let file = dir.path().join("known_hosts");
        assert_eq!(learn_into(&file, "db", 2222, &first), at(&file, 1));
        // A second session offering the same key: already trusted, nothing written.
        let again = learn(std::slice::from_ref(&file), "db", 2222, first.key_data()).unwrap();
        assert!(
            matches!(again, Learnt::Decided(KeyStatus::Trusted(_))),
            "{again:?}"
        );
        // One offering another key of the same type: a changed key.
        let other = learn(std::slice::from_ref(&file), "db", 2222, second.key_data()).unwrap();
        assert!(
            matches!(other, Learnt::Decided(KeyStatus::Changed(_))),
            "{other:?}"
        );
        assert_eq!(fs::read_to_string(&file).unwrap().lines().count(), 1);
    }

    #[test]
    fn concurrent_learners_of_one_host_write_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<PublicKey> = (0..8)
            .map(|i| keygen(dir.path(), &format!("k{i}"), "ed25519"))
            .collect();
        let file = dir.path().join("known_hosts");
        let appended: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = keys
                .iter()
                .map(|k| {
                    let file = file.clone();
                    scope.spawn(move || {
                        matches!(
                            learn(&[file], "db", 22, k.key_data()).unwrap(),
                            Learnt::Appended(_)
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(appended, 1);
        assert_eq!(fs::read_to_string(&file).unwrap().lines().count(), 1);
    }

    #[test]
    fn a_name_that_would_be_a_pattern_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let key = keygen(dir.path(), "k", "ed25519");
        let file = dir.path().join("known_hosts");
        for bad in [
            "*", "db*", "a,b", "!db", "db?", "|1|x", "@revoked", "a b", "[db]",
        ] {
            let err = learn(std::slice::from_ref(&file), bad, 22, key.key_data()).unwrap_err();
            assert!(
                format!("{err:?}").contains("not a literal host name"),
                "{bad}: {err:?}"
            );
        }
        assert!(!file.exists());
    }
}
