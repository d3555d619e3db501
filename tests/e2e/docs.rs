//! The documentation shipped in the repository: warren(1) is what `warren man` generates from
//! the command line's definition (so it cannot drift), both manual pages render with `man -l`
//! and without a groff warning, the shell completions are valid scripts, and the README's
//! Prometheus rules and scrape config pass promtool and name only families warren exports.

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

/// The README's fenced block of `lang` whose text contains `marker`.
fn readme_block(lang: &str, marker: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let fence = format!("```{lang}\n");
    readme
        .split(&fence)
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
        .find(|block| block.contains(marker))
        .unwrap_or_else(|| panic!("the README has no ```{lang} block with {marker:?}"))
        .to_string()
}

/// promtool: on PATH, or where scripts/test.sh unpacks it.
fn promtool() -> PathBuf {
    let unpacked = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/promtool");
    if unpacked.exists() {
        return unpacked;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("promtool"))
                .find(|p| p.exists())
        })
        .expect(
            "promtool is missing: scripts/test.sh unpacks it from Debian's `prometheus` package \
             into target/tools",
        )
}

#[test]
fn the_readme_alert_rules_and_scrape_config_pass_promtool_and_name_real_families() {
    let dir = tempfile::tempdir().unwrap();
    let rules = readme_block("yaml", "groups:");
    let rules_file = dir.path().join("warren.rules.yml");
    std::fs::write(&rules_file, &rules).unwrap();
    let (ok, out, err) = run(Command::new(promtool())
        .args(["check", "rules"])
        .arg(&rules_file));
    assert!(ok, "promtool check rules:\n{out}{err}\n---\n{rules}");
    assert!(out.contains("SUCCESS: 3 rules found"), "{out}");

    let scrape = readme_block("yaml", "scrape_configs:");
    let scrape_file = dir.path().join("prometheus.yml");
    std::fs::write(&scrape_file, &scrape).unwrap();
    let (ok, out, err) = run(Command::new(promtool())
        .args(["check", "config", "--syntax-only"])
        .arg(&scrape_file));
    assert!(ok, "promtool check config:\n{out}{err}\n---\n{scrape}");

    // Every metric a rule names is one warren exports (a typo would never fire).
    let (_tx, rx) = tokio::sync::watch::channel(warren::control::ControlState::default());
    let exported = warren::metrics::render(&rx);
    let names: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("warren_"))
        .collect();
    assert!(
        names.len() >= 3,
        "the rules name no warren metric:\n{rules}"
    );
    for name in names {
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            exported.contains(&format!("# TYPE {family} ")),
            "the rules use {name}, which warren does not export:\n{exported}"
        );
    }
}
