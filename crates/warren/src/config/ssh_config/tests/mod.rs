//! Tests over config trees written to a temporary directory with a fake home. Expected
//! results are written like `ssh -G` output, one `keyword value` a line.

mod errors;
mod resolve;

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// A config tree on disk: `home/.ssh/config` is the top file; `$ROOT` in file contents is
/// the tree's absolute path.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new<P: AsRef<str>, T: AsRef<str>>(files: &[(P, T)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap().to_owned();
        std::fs::create_dir_all(dir.path().join("home/.ssh")).unwrap();
        for (path, text) in files {
            let path = dir.path().join(path.as_ref());
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text.as_ref().replace("$ROOT", &root)).unwrap();
        }
        Self { dir }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn load(&self) -> Result<SshConfig, SshConfigError> {
        SshConfig::load(&self.path("home/.ssh/config"), Some(&self.home()))
    }

    /// The error loading gives, with the tree's path written `$ROOT`.
    fn error(&self) -> String {
        match self.load() {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e
                .to_string()
                .replace(self.dir.path().to_str().unwrap(), "$ROOT"),
        }
    }
}

/// Reads an expected result: `keyword value` lines (lowercase keywords as `ssh -G` prints
/// them; times in seconds; forwards as `-L`/`-R`/`-D` write them; `$HOME` for the fake home; list keywords repeat, `none` for an
/// empty known-hosts list).
fn expected(text: &str, home: &Path) -> ResolvedHost {
    let home = home.to_str().unwrap();
    let path = |v: &str| PathBuf::from(v.replace("$HOME", home));
    let secs = |v: &str| Duration::from_secs(v.parse().unwrap());
    let mut r = ResolvedHost::default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "hostname" => r.hostname = Some(value.into()),
            "user" => r.user = Some(value.into()),
            "port" => r.port = Some(value.parse().unwrap()),
            "identityfile" => r.identity_files.push(path(value)),
            "certificatefile" => r.certificate_files.push(path(value)),
            "proxyjump" => r.proxy_jump = Some(value.split(',').map(Into::into).collect()),
            "proxycommand" => r.proxy_command = Some(value.into()),
            "userknownhostsfile" => {
                let list = r.user_known_hosts_files.get_or_insert_with(Vec::new);
                if value != "none" {
                    list.push(path(value));
                }
            }
            "stricthostkeychecking" => {
                r.strict_host_key_checking = Some(match value {
                    "yes" => StrictHostKeyChecking::Yes,
                    "accept-new" => StrictHostKeyChecking::AcceptNew,
                    "off" => StrictHostKeyChecking::Off,
                    other => panic!("bad expectation {other}"),
                });
            }
            "serveraliveinterval" => r.server_alive_interval = Some(secs(value)),
            "serveralivecountmax" => r.server_alive_count_max = Some(value.parse().unwrap()),
            "connecttimeout" => r.connect_timeout = Some(secs(value)),
            "localforward" => r.forwards.push((ForwardFlag::Local, value.into())),
            "remoteforward" => r.forwards.push((ForwardFlag::Remote, value.into())),
            "dynamicforward" => r.forwards.push((ForwardFlag::Dynamic, value.into())),
            "exitonforwardfailure" => r.exit_on_forward_failure = Some(value == "yes"),
            "addressfamily" => r.address_family = Some(value.into()),
            other => panic!("unknown expectation keyword {other}"),
        }
    }
    r
}
