//! Every shipped example in `config/` passes `warren check`; every file in
//! `tests/invalid-configs/` fails with exit 78 and exactly the problems in its `.errors` file.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(repo_root().join(dir))
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .map(|p| Path::new(dir).join(p.file_name().expect("file name")))
        .collect();
    out.sort();
    out
}

fn check(rel: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_warren"))
        .current_dir(repo_root())
        .env("HOME", "/nonexistent-home")
        .env_remove("WARREN_CONFIG")
        .args(["check", "-c"])
        .arg(rel)
        .output()
        .expect("run warren check")
}

#[test]
fn every_example_config_is_valid() {
    let examples = files("config", "toml");
    assert!(
        examples.len() >= 4,
        "expected the example configs, found {examples:?}"
    );
    for rel in examples {
        let out = check(&rel);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{}: {stderr}", rel.display());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(": ok ("), "{stdout}");
    }
}

#[test]
fn every_invalid_config_gives_its_exact_problems() {
    let invalid = files("tests/invalid-configs", "toml");
    assert!(
        invalid.len() >= 5,
        "expected the invalid configs, found {invalid:?}"
    );
    for rel in invalid {
        let expected_file = repo_root().join(rel.with_extension("errors"));
        let expected = std::fs::read_to_string(&expected_file)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_file.display()));
        let out = check(&rel);
        assert_eq!(out.status.code(), Some(78), "{}", rel.display());
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            expected,
            "{}",
            rel.display()
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn check_exit_codes_for_missing_file_and_bad_usage() {
    let out = check(Path::new("tests/invalid-configs/does-not-exist.toml"));
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read configuration"));
    let out = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["check", "--no-such-flag"])
        .output()
        .expect("run warren");
    assert_eq!(out.status.code(), Some(64));
}
