//! The documentation shipped in the repository: warren(1) is what `warren man` generates from
//! the command line's definition (so it cannot drift), both manual pages render with `man -l`
//! and without a groff warning, and the shell completions are valid scripts.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::WARREN;

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/man")
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn warren_1_is_generated_from_the_command_line() {
    let (ok, generated, err) = run(Command::new(WARREN).arg("man"));
    assert!(ok, "warren man: {err}");
    let committed = std::fs::read_to_string(docs().join("warren.1")).unwrap();
    assert!(
        generated == committed,
        "docs/man/warren.1 is out of date: regenerate it with `cargo run -q -- man > docs/man/warren.1`"
    );
    for needed in [
        ".SH \"WARREN CONNECT\"",
        ".SH \"EXIT STATUS\"",
        "warren.toml",
    ] {
        assert!(committed.contains(needed), "warren.1 lacks {needed}");
    }
}

#[test]
fn both_manual_pages_render_without_a_warning() {
    assert!(
        Path::new("/usr/bin/man").exists(),
        "man is missing: install Debian's `man-db` package (scripts/test.sh does)"
    );
    for (page, title) in [
        ("warren.1", "WARREN(1)"),
        ("warren.toml.5", "WARREN.TOML(5)"),
    ] {
        let path = docs().join(page);
        let (ok, text, err) = run(Command::new("man")
            .arg("-l")
            .arg(&path)
            .env("MANWIDTH", "100")
            .env("MAN_KEEP_FORMATTING", "0"));
        assert!(ok && err.trim().is_empty(), "man -l {page}: {err}");
        assert!(
            text.contains(title),
            "{page} renders without its title:\n{text}"
        );
        let (ok, _, err) = run(Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&path));
        assert!(
            ok && err.trim().is_empty(),
            "groff warns about {page}:\n{err}"
        );
    }
}

#[test]
fn completions_are_valid_scripts() {
    let (ok, bash, err) = run(Command::new(WARREN).args(["completions", "bash"]));
    assert!(
        ok && bash.contains("_warren()"),
        "warren completions bash: {err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("warren.bash");
    std::fs::write(&script, &bash).unwrap();
    let (ok, _, err) = run(Command::new("bash").arg("-n").arg(&script));
    assert!(ok, "bash -n: {err}");
    for shell in ["zsh", "fish"] {
        let (ok, text, err) = run(Command::new(WARREN).args(["completions", shell]));
        assert!(
            ok && text.contains("connect"),
            "warren completions {shell}: {err}"
        );
    }
}
