//! Secrets (passphrases, passwords) read from files, which never print.

use std::fmt;
use std::path::Path;

/// A secret that redacts itself in `Debug` and `Display` and is wiped on drop.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Reads a secret from `path`: the first line, without its line ending, as OpenSSH-style
    /// tools expect. The error names the file, never the contents.
    pub fn read_file(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        let line = text.lines().next().unwrap_or_default();
        Ok(Self(line.to_string()))
    }

    /// The secret itself, for handing to the SSH library only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Overwrite in place; the allocation is freed right after.
        let bytes = std::mem::take(&mut self.0).into_bytes();
        let mut bytes = bytes;
        bytes.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Env};

    #[test]
    fn secrets_never_print_and_configs_hold_only_their_paths() {
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("key.pass");
        let pw = dir.path().join("pw");
        std::fs::write(&pass, "correct horse battery staple\n").unwrap();
        std::fs::write(&pw, "hunter2-password\r\n").unwrap();
        let src = format!(
            "[defaults]\npassphrase_file = \"{}\"\npassword_file = \"{}\"\n[hosts.h]\n",
            pass.display(),
            pw.display()
        );
        let cfg = Config::parse(&src, &dir.path().join("w.toml"), &Env::from_process()).unwrap();
        let debug = format!("{cfg:?} {cfg:#?}");
        assert!(debug.contains("key.pass"), "the path is shown");
        assert!(!debug.contains("horse") && !debug.contains("hunter2"));

        let secret = Secret::read_file(&pass).unwrap();
        assert_eq!(secret.expose(), "correct horse battery staple");
        let shown = format!("{secret:?} {secret} {secret:#?}");
        assert!(!shown.contains("horse"), "{shown}");
        assert_eq!(Secret::read_file(&pw).unwrap().expose(), "hunter2-password");

        let err = Secret::read_file(&dir.path().join("missing")).unwrap_err();
        assert!(!err.to_string().contains("horse"));
    }
}
