//! An OpenSSH client config (ssh_config(5)) reader: parses a file and its includes, and
//! resolves the options warren needs for one host name, as `ssh -G` would.
//!
//! What it follows from OpenSSH's readconf: keywords are case-insensitive and separated from
//! their value by whitespace or one `=`; double quotes group an argument; options before the
//! first `Host` apply to every host; for each option the first value obtained wins (a
//! `UserKnownHostsFile` line gives its whole list), except `IdentityFile` and
//! `CertificateFile`, which accumulate in order; `ProxyJump` and `ProxyCommand` share one
//! slot, so whichever comes first wins; `Host` and `Match` start blocks; an `Include` inside
//! a block applies only to hosts that block matches (its files are read and checked all the
//! same), and a `Host` or `Match` inside an included file ends with that file; includes nest
//! at most 16 deep. Keywords warren does not read are ignored, their values unchecked.
//!
//! What it does not do: `Match exec`, `user`, `localuser`, `localnetwork`, `tagged`,
//! `command`, `version` and `sessiontype` are never evaluated, so a block using them never
//! matches; `Match canonical` and `Match final` always hold (warren makes a single pass and
//! does not canonicalize host names); `%`-tokens in `Include` paths are refused; `~user/`
//! and `${VAR}` in file paths are not expanded; host patterns compare case-insensitively.

mod directive;
mod lex;
mod pattern;
mod read;

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(super) mod proptests;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use directive::ForwardFlag;
use directive::{AlgorithmList, Criterion, Proxy, Setting, Test};
use pattern::matches_list;
use read::{File, Item};

/// An ssh_config file with its includes, parsed and checked, ready to resolve host names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshConfig {
    root: File,
    home: Option<PathBuf>,
}

/// What `StrictHostKeyChecking` asks for.
///
/// warren never connects without checking the host key: the caller refuses [`Self::Off`]
/// with a message saying so, rather than silently checking anyway or not checking at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictHostKeyChecking {
    /// `yes` (and `ask`: a daemon has nobody to ask, so an unknown key is refused).
    Yes,
    /// `accept-new`: record an unknown key, refuse a changed one.
    AcceptNew,
    /// `no` or `off`: accept any key. warren refuses this setting.
    Off,
}

/// The options warren uses, resolved for one host; `None` or empty where the file says
/// nothing, so the caller applies its own defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedHost {
    /// `HostName`, with `%h` replaced by the name asked for.
    pub hostname: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// `Port`.
    pub port: Option<u16>,
    /// Every `IdentityFile` that applies, in file order, duplicates dropped.
    pub identity_files: Vec<PathBuf>,
    /// Every `CertificateFile` that applies, in file order, duplicates dropped.
    pub certificate_files: Vec<PathBuf>,
    /// `ProxyJump` hops as written (`[user@]host[:port]`), first hop first.
    pub proxy_jump: Option<Vec<String>>,
    /// `ProxyCommand`, whole and unexpanded (its `%` tokens are expanded at connect time).
    pub proxy_command: Option<String>,
    /// `UserKnownHostsFile`; `Some` and empty for `none`.
    pub user_known_hosts_files: Option<Vec<PathBuf>>,
    /// `StrictHostKeyChecking`.
    pub strict_host_key_checking: Option<StrictHostKeyChecking>,
    /// `ServerAliveInterval` (zero turns keepalives off in OpenSSH).
    pub server_alive_interval: Option<Duration>,
    /// `ServerAliveCountMax`.
    pub server_alive_count_max: Option<u32>,
    /// `ConnectTimeout`.
    pub connect_timeout: Option<Duration>,
    /// `KexAlgorithms`, as written.
    pub kex_algorithms: Option<String>,
    /// `HostKeyAlgorithms`, as written.
    pub host_key_algorithms: Option<String>,
    /// `Ciphers`, as written.
    pub ciphers: Option<String>,
    /// `MACs`, as written.
    pub macs: Option<String>,
    /// Every `LocalForward`, `RemoteForward` and `DynamicForward` that applies, in file order,
    /// each as the command line's `-L`/`-R`/`-D` would write it (`5432:db:5432`).
    pub forwards: Vec<(ForwardFlag, String)>,
    /// `ExitOnForwardFailure`.
    pub exit_on_forward_failure: Option<bool>,
    /// `AddressFamily`: `any`, `inet` or `inet6`.
    pub address_family: Option<String>,
}

/// Why an ssh_config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SshConfigError {
    /// The top file exists but could not be read.
    #[error("{file}: cannot read ssh_config: {source}", file = file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file may be changed by someone other than its owner or root (it can name a
    /// `ProxyCommand`, which warren runs): OpenSSH's "Bad owner or permissions".
    #[error(
        "{file}: bad owner or permissions: it must belong to this user or root and not be          writable by group or others, since its ProxyCommand lines are run",
        file = file.display()
    )]
    Permissions {
        /// The file.
        file: PathBuf,
    },
    /// A line is wrong: a bad value, a bad `Match`, an include nested too deep...
    #[error("{file}:{line}: {message}", file = file.display())]
    Invalid {
        /// The file holding the line (an included file when the problem is there).
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong, naming the keyword.
        message: String,
    },
}

impl SshConfig {
    /// Reads `path` and its includes; a missing file is an empty config. `home` anchors `~`
    /// and relative includes (`~/.ssh/`).
    pub fn load(path: &Path, home: Option<&Path>) -> Result<Self, SshConfigError> {
        match fs::read_to_string(path) {
            Ok(text) => {
                if !read::safe_owner_and_mode(path) {
                    return Err(SshConfigError::Permissions {
                        file: path.to_path_buf(),
                    });
                }
                Self::parse(&text, path, home)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self {
                root: File {
                    path: path.to_path_buf(),
                    items: Vec::new(),
                },
                home: home.map(Path::to_path_buf),
            }),
            Err(source) => Err(SshConfigError::Read {
                file: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses `text` as if read from `file` (its includes are still read from disk).
    pub fn parse(text: &str, file: &Path, home: Option<&Path>) -> Result<Self, SshConfigError> {
        Ok(Self {
            root: read::parse_file(text, file, home, 0)?,
            home: home.map(Path::to_path_buf),
        })
    }

    /// The options that apply to `host`, the name as the user would give it to `ssh`.
    pub fn resolve(&self, host: &str) -> ResolvedHost {
        let mut walk = Walk {
            host,
            host_lower: host.to_ascii_lowercase(),
            found: Found::default(),
        };
        let mut active = true;
        walk.items(&self.root.items, &mut active);
        walk.found.finish(host, self.home.as_deref())
    }
}

/// One resolution in progress.
struct Walk<'a> {
    host: &'a str,
    host_lower: String,
    found: Found,
}

impl Walk<'_> {
    /// Applies `items`; `active` says whether the current block matches.
    fn items(&mut self, items: &[Item], active: &mut bool) {
        for item in items {
            match item {
                Item::Host(patterns) => *active = matches_list(patterns, &self.host_lower),
                Item::Match(criteria) => *active = self.matches(criteria),
                Item::Set(setting) if *active => self.found.apply(setting),
                Item::Set(_) => {}
                Item::Include(files) if *active => {
                    for file in files {
                        self.items(&file.items, active);
                        // A Host or Match in the included file ends with it.
                        *active = true;
                    }
                }
                Item::Include(_) => {}
            }
        }
    }

    fn matches(&self, criteria: &[Criterion]) -> bool {
        criteria.iter().all(|c| {
            let holds = match &c.test {
                Test::All | Test::Pass => true,
                Test::Unsupported => return false,
                Test::OriginalHost(list) => matches_list(list, &self.host_lower),
                Test::Host(list) => {
                    let target = match &self.found.hostname {
                        Some(h) => expand_hostname(h, self.host).to_ascii_lowercase(),
                        None => self.host_lower.clone(),
                    };
                    matches_list(list, &target)
                }
            };
            holds != c.negated
        })
    }
}

/// The values found so far, as written.
#[derive(Default)]
struct Found {
    hostname: Option<String>,
    user: Option<String>,
    port: Option<u16>,
    identity_files: Vec<String>,
    certificate_files: Vec<String>,
    proxy: Option<Proxy>,
    known_hosts: Option<Vec<String>>,
    strict: Option<StrictHostKeyChecking>,
    alive_interval: Option<Duration>,
    alive_count_max: Option<u32>,
    connect_timeout: Option<Duration>,
    kex: Option<String>,
    host_key: Option<String>,
    ciphers: Option<String>,
    macs: Option<String>,
    forwards: Vec<(ForwardFlag, String)>,
    exit_on_forward_failure: Option<bool>,
    address_family: Option<String>,
}

impl Found {
    fn apply(&mut self, setting: &Setting) {
        fn first<T: Clone>(slot: &mut Option<T>, value: &T) {
            if slot.is_none() {
                *slot = Some(value.clone());
            }
        }
        fn add(list: &mut Vec<String>, value: &str) {
            if !list.iter().any(|v| v == value) {
                list.push(value.to_owned());
            }
        }
        match setting {
            Setting::HostName(v) => first(&mut self.hostname, v),
            Setting::User(v) => first(&mut self.user, v),
            Setting::Port(v) => first(&mut self.port, v),
            Setting::IdentityFile(v) => add(&mut self.identity_files, v),
            Setting::CertificateFile(v) => add(&mut self.certificate_files, v),
            Setting::Proxy(v) => first(&mut self.proxy, v),
            Setting::UserKnownHostsFile(v) => first(&mut self.known_hosts, v),
            Setting::StrictHostKeyChecking(v) => first(&mut self.strict, v),
            Setting::ServerAliveInterval(v) => first(&mut self.alive_interval, v),
            Setting::ServerAliveCountMax(v) => first(&mut self.alive_count_max, v),
            Setting::ConnectTimeout(v) => first(&mut self.connect_timeout, v),
            // Forwards add up, as in ssh (which drops exact duplicates).
            Setting::Forward(flag, v) => {
                let forward = (*flag, v.clone());
                if !self.forwards.contains(&forward) {
                    self.forwards.push(forward);
                }
            }
            Setting::ExitOnForwardFailure(v) => first(&mut self.exit_on_forward_failure, v),
            Setting::AddressFamily(v) => first(&mut self.address_family, v),
            Setting::Algorithms(list, v) => first(
                match list {
                    AlgorithmList::Kex => &mut self.kex,
                    AlgorithmList::HostKey => &mut self.host_key,
                    AlgorithmList::Cipher => &mut self.ciphers,
                    AlgorithmList::Mac => &mut self.macs,
                },
                v,
            ),
        }
    }

    fn finish(self, host: &str, home: Option<&Path>) -> ResolvedHost {
        let hostname = self.hostname.map(|h| expand_hostname(&h, host));
        let paths = PathTokens {
            home,
            hostname: hostname.as_deref().unwrap_or(host),
            original: host,
            port: self.port.unwrap_or(22),
            user: self.user.as_deref(),
        };
        let expand = |list: Vec<String>| list.iter().map(|p| paths.expand(p)).collect();
        let (proxy_jump, proxy_command) = match self.proxy {
            Some(Proxy::Jump(hops)) => (Some(hops), None),
            Some(Proxy::Command(command)) => (None, Some(command)),
            Some(Proxy::Direct) | None => (None, None),
        };
        ResolvedHost {
            user_known_hosts_files: self.known_hosts.map(expand),
            identity_files: expand(self.identity_files),
            certificate_files: expand(self.certificate_files),
            hostname,
            user: self.user,
            port: self.port,
            proxy_jump,
            proxy_command,
            strict_host_key_checking: self.strict,
            server_alive_interval: self.alive_interval,
            server_alive_count_max: self.alive_count_max,
            connect_timeout: self.connect_timeout,
            kex_algorithms: self.kex,
            host_key_algorithms: self.host_key,
            ciphers: self.ciphers,
            macs: self.macs,
            forwards: self.forwards,
            exit_on_forward_failure: self.exit_on_forward_failure,
            address_family: self.address_family,
        }
    }
}

/// `HostName`'s tokens: `%h` the name asked for, `%%` a percent sign (others were refused
/// when parsed).
fn expand_hostname(value: &str, host: &str) -> String {
    expand_tokens(value, |t| (t == 'h').then(|| host.to_owned()))
}

/// What the `%` tokens of file paths stand for.
struct PathTokens<'a> {
    home: Option<&'a Path>,
    hostname: &'a str,
    original: &'a str,
    port: u16,
    user: Option<&'a str>,
}

impl PathTokens<'_> {
    /// `~` or `~/` becomes the home directory, then `%d` (home), `%h` (HostName), `%n` (the
    /// name asked for), `%p` (port), `%r` (User, when set) and `%%` are expanded. Tokens that
    /// need the local machine (`%u`, `%l`, `%C`...) and `${VAR}` stay as written.
    fn expand(&self, path: &str) -> PathBuf {
        let (base, rest) = match (path.strip_prefix('~'), self.home) {
            (Some(""), Some(home)) => (Some(home), ""),
            (Some(rest), Some(home)) if rest.starts_with('/') => {
                (Some(home), rest.trim_start_matches('/'))
            }
            _ => (None, path),
        };
        let rest = expand_tokens(rest, |t| match t {
            'd' => self.home.map(|h| h.to_string_lossy().into_owned()),
            'h' => Some(self.hostname.to_owned()),
            'n' => Some(self.original.to_owned()),
            'p' => Some(self.port.to_string()),
            'r' => self.user.map(str::to_owned),
            _ => None,
        });
        match base {
            Some(home) if rest.is_empty() => home.to_path_buf(),
            Some(home) => home.join(rest),
            None => PathBuf::from(rest),
        }
    }
}

/// Replaces `%%` and each `%X` for which `lookup` has a value; anything else stays.
fn expand_tokens(text: &str, lookup: impl Fn(char) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(t) => match lookup(t) {
                Some(value) => out.push_str(&value),
                None => {
                    out.push('%');
                    out.push(t);
                }
            },
            None => out.push('%'),
        }
    }
    out
}
