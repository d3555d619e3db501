//! One line's keyword and arguments turned into a typed directive, or the message saying why
//! the value is wrong. Values are checked whether or not their block ever matches, as OpenSSH
//! does.

use std::time::Duration;

use super::StrictHostKeyChecking;
use super::lex::{Line, split_args};
use super::pattern::HostPattern;

/// What one line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Directive {
    /// `Host PATTERN...`.
    Host(Vec<HostPattern>),
    /// `Match CRITERION...`: every criterion must hold.
    Match(Vec<Criterion>),
    /// `Include PATH...`, unexpanded.
    Include(Vec<String>),
    /// An option warren reads.
    Set(Setting),
    /// A keyword warren does not read (or a time of `none`, which sets nothing).
    Ignored,
}

/// One `Match` criterion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Criterion {
    /// Written with a leading `!`.
    pub negated: bool,
    /// What is tested.
    pub test: Test,
}

/// What a `Match` criterion tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Test {
    /// `all`.
    All,
    /// `canonical` or `final`: warren makes one pass and does not canonicalize, so both hold.
    Pass,
    /// `host LIST`: the HostName set so far (with `%h` expanded), else the name asked for.
    Host(Vec<HostPattern>),
    /// `originalhost LIST`: the name asked for.
    OriginalHost(Vec<HostPattern>),
    /// `exec`, `user`, `localuser` and the rest, which warren cannot or will not evaluate:
    /// the block never matches.
    Unsupported,
}

/// The options warren reads, each parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Setting {
    /// May hold `%h` and `%%`, expanded when resolved.
    HostName(String),
    User(String),
    Port(u16),
    IdentityFile(String),
    CertificateFile(String),
    /// `ProxyJump` and `ProxyCommand` share one slot: whichever comes first wins.
    Proxy(Proxy),
    /// Empty for `none`.
    UserKnownHostsFile(Vec<String>),
    StrictHostKeyChecking(StrictHostKeyChecking),
    ServerAliveInterval(Duration),
    ServerAliveCountMax(u32),
    ConnectTimeout(Duration),
    /// `KexAlgorithms`, `HostKeyAlgorithms`, `Ciphers`, `MACs`: the list as written (checked
    /// with the TOML's, at the `ssh_config` key).
    Algorithms(AlgorithmList, String),
    /// `LocalForward`, `RemoteForward`, `DynamicForward`: the arguments joined with `:`, as
    /// the `-L`, `-R`, `-D` of the command line write them (read by `warren connect` only).
    Forward(ForwardFlag, String),
    /// `ExitOnForwardFailure yes|no`.
    ExitOnForwardFailure(bool),
    /// `AddressFamily`: `any`, `inet` or `inet6`, lowercase.
    AddressFamily(String),
}

/// Which forward a `*Forward` line adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardFlag {
    /// `LocalForward`, ssh's `-L`.
    Local,
    /// `RemoteForward`, ssh's `-R`.
    Remote,
    /// `DynamicForward`, ssh's `-D`.
    Dynamic,
}

/// Which algorithm list an option sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlgorithmList {
    /// `KexAlgorithms`.
    Kex,
    /// `HostKeyAlgorithms`.
    HostKey,
    /// `Ciphers`.
    Cipher,
    /// `MACs`.
    Mac,
}

/// How the connection is carried, as the file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Proxy {
    /// `ProxyJump` hops, first hop first.
    Jump(Vec<String>),
    /// `ProxyCommand`, whole.
    Command(String),
    /// `ProxyJump none` or `ProxyCommand none`.
    Direct,
}

/// Parses one directive; the error message names the keyword and the value at fault.
pub(super) fn parse(line: &Line<'_>) -> Result<Directive, String> {
    let keyword = line.keyword.to_ascii_lowercase();
    let Some(name) = canonical_name(&keyword) else {
        return Ok(Directive::Ignored);
    };
    if line.rest.is_empty() {
        return Err(format!("{name} needs a value"));
    }
    // These two take the rest of the line as written, quotes and all (a shell reads it).
    match keyword.as_str() {
        "proxycommand" => return Ok(Directive::Set(Setting::Proxy(proxy_command(line.rest)?))),
        "proxyjump" => return Ok(Directive::Set(Setting::Proxy(proxy_jump(line.rest)?))),
        _ => {}
    }
    let args = split_args(line.rest).map_err(|e| format!("{name}: {e}"))?;
    if args.iter().any(String::is_empty) {
        return Err(format!("{name} has an empty argument"));
    }
    match keyword.as_str() {
        "host" => host(args),
        "match" => match_criteria(args).map(Directive::Match),
        "include" => include(args),
        "userknownhostsfile" => Ok(Directive::Set(known_hosts(args)?)),
        "localforward" | "remoteforward" | "dynamicforward" => forward(&keyword, name, &args),
        _ => option(&keyword, name, single(name, args)?),
    }
}

/// A single-valued option.
fn option(keyword: &str, name: &str, value: String) -> Result<Directive, String> {
    let setting = match keyword {
        "hostname" => Setting::HostName(hostname(&value)?),
        "user" => Setting::User(value),
        "port" => Setting::Port(port(&value)?),
        "identityfile" | "identityfile2" => Setting::IdentityFile(value),
        "certificatefile" => Setting::CertificateFile(value),
        "stricthostkeychecking" => Setting::StrictHostKeyChecking(strict(&value)?),
        "serveralivecountmax" => Setting::ServerAliveCountMax(count(name, &value)?),
        // OpenSSH reads a time of `none` as "not set": a later line may still set it.
        "serveraliveinterval" => match time(name, &value)? {
            Some(t) => Setting::ServerAliveInterval(t),
            None => return Ok(Directive::Ignored),
        },
        "connecttimeout" => match time(name, &value)? {
            Some(t) => Setting::ConnectTimeout(t),
            None => return Ok(Directive::Ignored),
        },
        "kexalgorithms" => Setting::Algorithms(AlgorithmList::Kex, value),
        "hostkeyalgorithms" => Setting::Algorithms(AlgorithmList::HostKey, value),
        "ciphers" => Setting::Algorithms(AlgorithmList::Cipher, value),
        "macs" => Setting::Algorithms(AlgorithmList::Mac, value),
        "exitonforwardfailure" => Setting::ExitOnForwardFailure(yes_no(name, &value)?),
        "addressfamily" => match value.to_ascii_lowercase().as_str() {
            family @ ("any" | "inet" | "inet6") => Setting::AddressFamily(family.to_owned()),
            _ => {
                return Err(format!(
                    "bad AddressFamily \"{value}\": expected any, inet or inet6"
                ));
            }
        },
        _ => return Ok(Directive::Ignored),
    };
    Ok(Directive::Set(setting))
}

/// The keyword as ssh_config(5) spells it, for the keywords warren reads.
fn canonical_name(lowercase: &str) -> Option<&'static str> {
    Some(match lowercase {
        "host" => "Host",
        "match" => "Match",
        "include" => "Include",
        "hostname" => "HostName",
        "user" => "User",
        "port" => "Port",
        "identityfile" | "identityfile2" => "IdentityFile",
        "certificatefile" => "CertificateFile",
        "proxyjump" => "ProxyJump",
        "proxycommand" => "ProxyCommand",
        "userknownhostsfile" => "UserKnownHostsFile",
        "stricthostkeychecking" => "StrictHostKeyChecking",
        "serveraliveinterval" => "ServerAliveInterval",
        "serveralivecountmax" => "ServerAliveCountMax",
        "connecttimeout" => "ConnectTimeout",
        "kexalgorithms" => "KexAlgorithms",
        "hostkeyalgorithms" => "HostKeyAlgorithms",
        "ciphers" => "Ciphers",
        "macs" => "MACs",
        "localforward" => "LocalForward",
        "remoteforward" => "RemoteForward",
        "dynamicforward" => "DynamicForward",
        "exitonforwardfailure" => "ExitOnForwardFailure",
        "addressfamily" => "AddressFamily",
        _ => return None,
    })
}

fn single(name: &str, args: Vec<String>) -> Result<String, String> {
    let mut args = args.into_iter();
    match (args.next(), args.next()) {
        (Some(value), None) => Ok(value),
        (None, _) => Err(format!("{name} needs a value")),
        (Some(_), Some(extra)) => Err(format!(
            "{name} takes one value; unexpected \"{extra}\" (quote a value that holds spaces)"
        )),
    }
}

/// `LocalForward LISTEN CONNECT`, `RemoteForward LISTEN CONNECT` (or `LISTEN` alone, a
/// remote SOCKS proxy), `DynamicForward LISTEN`; the forward itself is checked by
/// `warren connect`, with those of the command line.
fn forward(keyword: &str, name: &str, args: &[String]) -> Result<Directive, String> {
    let (flag, counts, usage) = match keyword {
        "localforward" => (ForwardFlag::Local, 2..=2, "[BIND:]PORT HOST:HOSTPORT"),
        "remoteforward" => (ForwardFlag::Remote, 1..=2, "[BIND:]PORT [HOST:HOSTPORT]"),
        _ => (ForwardFlag::Dynamic, 1..=1, "[BIND:]PORT"),
    };
    if !counts.contains(&args.len()) {
        return Err(format!(
            "bad {name} \"{}\": expected {usage}",
            args.join(" ")
        ));
    }
    Ok(Directive::Set(Setting::Forward(flag, args.join(":"))))
}

fn yes_no(name: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(format!("bad {name} \"{value}\": expected yes or no")),
    }
}

fn host(args: Vec<String>) -> Result<Directive, String> {
    if args.is_empty() {
        return Err("Host needs at least one pattern".into());
    }
    Ok(Directive::Host(
        args.iter().map(|a| HostPattern::new(a)).collect(),
    ))
}

fn include(args: Vec<String>) -> Result<Directive, String> {
    if args.is_empty() {
        return Err("Include needs at least one path".into());
    }
    if let Some(a) = args.iter().find(|a| a.contains('%') || a.contains("${")) {
        return Err(format!(
            "Include \"{a}\": %-tokens and ${{VAR}} in Include paths are not supported"
        ));
    }
    Ok(Directive::Include(args))
}

fn match_criteria(args: Vec<String>) -> Result<Vec<Criterion>, String> {
    let mut criteria = Vec::new();
    let mut args = args.into_iter();
    while let Some(word) = args.next() {
        let (negated, attribute) = match word.strip_prefix('!') {
            Some(rest) => (true, rest.to_ascii_lowercase()),
            None => (false, word.to_ascii_lowercase()),
        };
        let test = match attribute.as_str() {
            "all" => Test::All,
            "canonical" | "final" => Test::Pass,
            "host" | "originalhost" | "user" | "localuser" | "localnetwork" | "exec" | "tagged"
            | "command" | "version" | "sessiontype" => {
                let Some(list) = args.next() else {
                    return Err(format!("Match {attribute} needs a value"));
                };
                match attribute.as_str() {
                    "host" => Test::Host(HostPattern::list(&list)),
                    "originalhost" => Test::OriginalHost(HostPattern::list(&list)),
                    _ => Test::Unsupported,
                }
            }
            _ => return Err(format!("unknown Match criterion \"{word}\"")),
        };
        criteria.push(Criterion { negated, test });
    }
    let all = criteria.iter().any(|c| c.test == Test::All);
    let others = criteria
        .iter()
        .any(|c| !matches!(c.test, Test::All | Test::Pass));
    if criteria.is_empty() {
        return Err("Match needs at least one criterion".into());
    }
    if all && others {
        return Err("Match all cannot be combined with other criteria".into());
    }
    Ok(criteria)
}

fn hostname(value: &str) -> Result<String, String> {
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('h' | '%') => {}
                Some(t) => {
                    return Err(format!(
                        "HostName \"{value}\": unknown token %{t} (only %h and %% are allowed)"
                    ));
                }
                None => return Err(format!("HostName \"{value}\" ends in a lone %")),
            }
        }
    }
    Ok(value.to_owned())
}

fn port(value: &str) -> Result<u16, String> {
    match value.parse::<u16>() {
        Ok(p) if p != 0 && value.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(format!(
            "bad Port \"{value}\": expected a number from 1 to 65535"
        )),
    }
}

fn strict(value: &str) -> Result<StrictHostKeyChecking, String> {
    match value.to_ascii_lowercase().as_str() {
        // A daemon cannot ask anyone; OpenSSH without a terminal refuses the key too.
        "yes" | "true" | "ask" => Ok(StrictHostKeyChecking::Yes),
        "accept-new" => Ok(StrictHostKeyChecking::AcceptNew),
        "no" | "false" | "off" => Ok(StrictHostKeyChecking::Off),
        _ => Err(format!(
            "bad StrictHostKeyChecking \"{value}\": expected yes, accept-new, no, off or ask"
        )),
    }
}

fn count(name: &str, value: &str) -> Result<u32, String> {
    value
        .parse()
        .map_err(|_| format!("bad {name} \"{value}\": expected a whole number"))
}

/// OpenSSH's `convtime`: `90`, `90s`, `1m30s`, `2h`, `1d`, `1w` (units in either case; a
/// bare number is seconds). `None` for `none`.
fn time(name: &str, value: &str) -> Result<Option<Duration>, String> {
    if value == "none" {
        return Ok(None);
    }
    let bad =
        || format!("bad {name} \"{value}\": expected seconds, or a time such as 30s, 5m, 1h30m");
    let mut total: u64 = 0;
    let mut rest = value;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let (number, after) = rest.split_at(digits);
        let mut after = after.chars();
        let unit = match after.next().map(|c| c.to_ascii_lowercase()) {
            None | Some('s') => 1,
            Some('m') => 60,
            Some('h') => 60 * 60,
            Some('d') => 24 * 60 * 60,
            Some('w') => 7 * 24 * 60 * 60,
            Some(_) => return Err(bad()),
        };
        let part = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit))
            .ok_or_else(bad)?;
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = after.as_str();
    }
    // OpenSSH keeps times in an int; warren takes no duration over 30 days.
    let total = Duration::from_secs(total);
    if total > crate::config::MAX_DURATION {
        return Err(format!(
            "bad {name} \"{value}\": longer than 30 days, the most warren takes"
        ));
    }
    Ok(Some(total))
}

fn known_hosts(args: Vec<String>) -> Result<Setting, String> {
    if args.iter().any(|a| a.eq_ignore_ascii_case("none")) {
        if args.len() > 1 {
            return Err("UserKnownHostsFile none must appear alone".into());
        }
        return Ok(Setting::UserKnownHostsFile(Vec::new()));
    }
    Ok(Setting::UserKnownHostsFile(args))
}

fn proxy_command(rest: &str) -> Result<Proxy, String> {
    let command = rest.trim_start_matches([' ', '\t', '=']);
    match command {
        "" => Err("ProxyCommand needs a value".into()),
        "none" => Ok(Proxy::Direct),
        _ => Ok(Proxy::Command(command.to_owned())),
    }
}

fn proxy_jump(rest: &str) -> Result<Proxy, String> {
    let rest = rest.trim_start_matches([' ', '\t', '=']);
    let value = rest.split('#').next().unwrap_or_default().trim();
    if value.eq_ignore_ascii_case("none") {
        return Ok(Proxy::Direct);
    }
    let mut hops = Vec::new();
    for hop in value.split(',') {
        let hop = hop.trim();
        if hop.is_empty() || hop.contains(char::is_whitespace) {
            return Err(format!(
                "bad ProxyJump \"{value}\": expected [user@]host[:port] hops separated by commas"
            ));
        }
        hops.push(hop.to_owned());
    }
    Ok(Proxy::Jump(hops))
}
