//! `LocalUser`: a throwaway account on this machine with a password, for sshd's PAM to check.
//! Needs root and `useradd`; without them it fails and says why (tests never skip silently).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use anyhow::{Context, bail, ensure};

use super::util::is_root;

const USERADD: &str = "/usr/sbin/useradd";
const CHPASSWD: &str = "/usr/sbin/chpasswd";
const USERDEL: &str = "/usr/sbin/userdel";

/// Numbers the users of this process.
static USERS: AtomicUsize = AtomicUsize::new(0);
/// useradd, chpasswd and userdel lock /etc/passwd and fail rather than wait when another
/// holds it; the tests of this process take turns.
static PASSWD_LOCK: Mutex<()> = Mutex::new(());

/// A local user with a shell, no home directory and a password; removed on drop.
pub struct LocalUser {
    name: String,
}

impl LocalUser {
    /// Creates the user (`useradd -M -s /bin/sh`) and sets its password (`chpasswd`).
    pub async fn create(password: &str) -> anyhow::Result<Self> {
        ensure!(
            is_root(),
            "the keyboard-interactive tests need root (they create a local user with a password \
             for sshd's PAM with `useradd` and `chpasswd`); run them as root, e.g. in the CI \
             container"
        );
        ensure!(
            Path::new(USERADD).exists() && Path::new(CHPASSWD).exists(),
            "the keyboard-interactive tests need {USERADD} and {CHPASSWD} (package passwd) to \
             create a local user with a password"
        );
        let name = format!(
            "wrn{:x}k{}",
            std::process::id(),
            USERS.fetch_add(1, Ordering::SeqCst)
        );
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || Self::create_now(name, &password))
            .await
            .context("the useradd thread")?
    }

    fn create_now(name: String, password: &str) -> anyhow::Result<Self> {
        let _lock = PASSWD_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let out = Command::new(USERADD)
            .args(["-M", "-s", "/bin/sh", "-c", "warren e2e test user"])
            .arg(&name)
            .stdin(Stdio::null())
            .output()
            .context("run useradd")?;
        if !out.status.success() {
            bail!(
                "useradd {name} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // From here on, dropping the user removes it.
        let user = LocalUser { name };
        let mut chpasswd = Command::new(CHPASSWD)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("start chpasswd")?;
        chpasswd
            .stdin
            .take()
            .context("chpasswd stdin")?
            .write_all(format!("{}:{password}\n", user.name).as_bytes())
            .context("write to chpasswd")?;
        let out = chpasswd.wait_with_output().context("wait for chpasswd")?;
        ensure!(
            out.status.success(),
            "chpasswd failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(user)
    }

    /// The login name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for LocalUser {
    fn drop(&mut self) {
        let _lock = PASSWD_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let out = Command::new(USERDEL)
            .arg(&self.name)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "WARNING: userdel {} failed ({}): {}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("WARNING: userdel {}: {e}", self.name),
        }
    }
}
