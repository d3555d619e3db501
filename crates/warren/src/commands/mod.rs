//! One function per subcommand; each returns the process exit code.

mod check;
mod connect;
mod reload;
mod run;
mod status;

pub use check::check;
pub use connect::{connect, to_toml as connect_config};
pub use reload::{reconnect, reload, upgrade};
pub use run::run;
pub use status::status;

use std::path::PathBuf;

use crate::cli::ConfigArg;
use crate::config::Env;

/// The config file to use: `-c`, `$WARREN_CONFIG` (via clap), else the default of warren(1) FILES.
pub fn config_path(arg: &ConfigArg, env: &Env) -> PathBuf {
    arg.config
        .clone()
        .unwrap_or_else(|| env.default_config_file())
}

/// `warren completions SHELL`: the completion script for `shell`, generated from the command
/// line's definition.
pub fn completions(args: &crate::cli::CompletionsArgs, out: &mut dyn std::io::Write) -> u8 {
    let mut cmd = <crate::cli::Cli as clap::CommandFactory>::command();
    clap_complete::generate(args.shell, &mut cmd, "warren", out);
    crate::cli::exit::OK
}

/// warren(1) in roff, generated from the command line's definition (the subcommands and
/// their options), with the sections no definition holds from `docs/man/warren.1.tail`.
pub fn man_page(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let cmd = <crate::cli::Cli as clap::CommandFactory>::command();
    let man = clap_mangen::Man::new(cmd.clone())
        .title("WARREN")
        .section("1")
        .manual("warren manual");
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    // One section per subcommand, with its own synopsis and options as subsections.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        writeln!(out, ".SH \"WARREN {}\"", name.to_uppercase())?;
        let sub_man = clap_mangen::Man::new(sub.clone().name(format!("warren {name}")));
        let mut text = Vec::new();
        sub_man.render_synopsis_section(&mut text)?;
        sub_man.render_description_section(&mut text)?;
        sub_man.render_options_section(&mut text)?;
        let text = String::from_utf8_lossy(&text).replace(".SH ", ".SS ");
        out.write_all(text.as_bytes())?;
    }
    out.write_all(include_bytes!("../../../../docs/man/warren.1.tail"))?;
    man.render_version_section(out)
}
