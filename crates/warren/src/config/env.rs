//! The parts of the process environment that defaults depend on: home, user, runtime dirs.

use std::path::{Path, PathBuf};

/// Inputs for defaults and `~/` expansion, captured once so that tests can fix them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// `$HOME`, or the home of the current user.
    pub home: Option<PathBuf>,
    /// The user the daemon runs as (default login user).
    pub user: String,
    /// Running as root (changes default paths).
    pub is_root: bool,
    /// `$RUNTIME_DIRECTORY` (set by systemd's `RuntimeDirectory=`).
    pub runtime_directory: Option<PathBuf>,
    /// `$XDG_RUNTIME_DIR`.
    pub xdg_runtime_dir: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<PathBuf>,
}

impl Env {
    /// Reads the environment of this process.
    pub fn from_process() -> Self {
        let uid = nix::unistd::getuid();
        let account = nix::unistd::User::from_uid(uid).ok().flatten();
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let home = var("HOME").or_else(|| account.as_ref().map(|a| a.dir.clone()));
        let user = account
            .map(|a| a.name)
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| uid.to_string());
        Self {
            home,
            user,
            is_root: uid.is_root(),
            runtime_directory: var("RUNTIME_DIRECTORY"),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR"),
            xdg_config_home: var("XDG_CONFIG_HOME"),
        }
    }

    /// Expands a leading `~/` and makes relative paths relative to `base`
    /// (the directory of the config file), since a daemon's working directory means nothing.
    pub fn expand(&self, path: &str, base: &Path) -> PathBuf {
        let expanded = match (path.strip_prefix("~/"), &self.home) {
            (Some(rest), Some(home)) => home.join(rest),
            _ if path == "~" => self.home.clone().unwrap_or_else(|| PathBuf::from(path)),
            _ => PathBuf::from(path),
        };
        if expanded.is_absolute() {
            expanded
        } else {
            base.join(expanded)
        }
    }

    /// The control socket when `[daemon] control_socket` is not set (warren(1), FILES).
    pub fn default_control_socket(&self) -> PathBuf {
        if let Some(dir) = &self.runtime_directory {
            dir.join("warren.sock")
        } else if self.is_root {
            PathBuf::from("/run/warren/warren.sock")
        } else if let Some(dir) = &self.xdg_runtime_dir {
            dir.join("warren.sock")
        } else {
            self.home
                .clone()
                .unwrap_or_else(|| PathBuf::from("/tmp"))
                .join(".warren.sock")
        }
    }

    /// The config file when `-c` is not given and `$WARREN_CONFIG` is unset (warren(1), FILES).
    pub fn default_config_file(&self) -> PathBuf {
        if self.is_root {
            return PathBuf::from("/etc/warren/warren.toml");
        }
        let base = self
            .xdg_config_home
            .clone()
            .or_else(|| self.home.as_ref().map(|h| h.join(".config")))
            .unwrap_or_else(|| PathBuf::from(".config"));
        base.join("warren/warren.toml")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env {
            home: Some("/home/u".into()),
            user: "u".into(),
            is_root: false,
            runtime_directory: None,
            xdg_runtime_dir: None,
            xdg_config_home: None,
        }
    }

    #[test]
    fn expand_tilde_and_relative() {
        let base = Path::new("/etc/warren");
        assert_eq!(
            env().expand("~/.ssh/id", base),
            PathBuf::from("/home/u/.ssh/id")
        );
        assert_eq!(
            env().expand("keys/id", base),
            PathBuf::from("/etc/warren/keys/id")
        );
        assert_eq!(env().expand("/abs", base), PathBuf::from("/abs"));
    }

    #[test]
    fn default_paths_follow_the_spec() {
        let mut e = env();
        assert_eq!(
            e.default_config_file(),
            PathBuf::from("/home/u/.config/warren/warren.toml")
        );
        e.xdg_config_home = Some("/xdg".into());
        assert_eq!(
            e.default_config_file(),
            PathBuf::from("/xdg/warren/warren.toml")
        );
        e.xdg_runtime_dir = Some("/run/user/1000".into());
        assert_eq!(
            e.default_control_socket(),
            PathBuf::from("/run/user/1000/warren.sock")
        );
        e.is_root = true;
        assert_eq!(
            e.default_config_file(),
            PathBuf::from("/etc/warren/warren.toml")
        );
        assert_eq!(
            e.default_control_socket(),
            PathBuf::from("/run/warren/warren.sock")
        );
        e.runtime_directory = Some("/run/warren-x".into());
        assert_eq!(
            e.default_control_socket(),
            PathBuf::from("/run/warren-x/warren.sock")
        );
    }
}
