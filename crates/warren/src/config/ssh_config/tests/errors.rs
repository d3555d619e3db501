//! Values that fail to parse, include loops and unreadable files: each error names the file
//! and line.

use super::*;

fn top(text: &str) -> String {
    Tree::new(&[("home/.ssh/config", text)]).error()
}

#[test]
fn bad_values_are_reported_with_file_and_line() {
    for (text, want) in [
        (
            "Host a\n  Port 99999\n",
            "2: bad Port \"99999\": expected a number from 1 to 65535",
        ),
        // A block that never matches is still checked.
        (
            "Host nothing\nHost a\n\n  Port=http\n",
            "4: bad Port \"http\"",
        ),
        ("Port 0\n", "1: bad Port \"0\""),
        ("Port +22\n", "1: bad Port \"+22\""),
        ("Port 22 23\n", "1: Port takes one value; unexpected \"23\""),
        ("Port\n", "1: Port needs a value"),
        ("Port =\n", "1: Port needs a value"),
        (
            "ServerAliveInterval 5x\n",
            "1: bad ServerAliveInterval \"5x\"",
        ),
        (
            "ServerAliveInterval m\n",
            "1: bad ServerAliveInterval \"m\"",
        ),
        ("ConnectTimeout -1\n", "1: bad ConnectTimeout \"-1\""),
        ("ConnectTimeout 99999999999\n", "1: bad ConnectTimeout"),
        (
            "ServerAliveInterval 31d\n",
            "1: bad ServerAliveInterval \"31d\": longer than 30 days",
        ),
        (
            "ServerAliveCountMax -1\n",
            "1: bad ServerAliveCountMax \"-1\"",
        ),
        (
            "StrictHostKeyChecking maybe\n",
            "1: bad StrictHostKeyChecking \"maybe\"",
        ),
        (
            "IdentityFile \"~/unterminated\n",
            "1: IdentityFile: unterminated double quote",
        ),
        ("User \"\"\n", "1: User has an empty argument"),
        (
            "HostName %h.%d\n",
            "1: HostName \"%h.%d\": unknown token %d",
        ),
        ("HostName x%\n", "1: HostName \"x%\" ends in a lone %"),
        ("Host\n", "1: Host needs a value"),
        (
            "LocalForward 5432\n",
            "1: bad LocalForward \"5432\": expected [BIND:]PORT HOST:HOSTPORT",
        ),
        (
            "DynamicForward 1080 x:1\n",
            "1: bad DynamicForward \"1080 x:1\": expected [BIND:]PORT",
        ),
        (
            "ExitOnForwardFailure maybe\n",
            "1: bad ExitOnForwardFailure \"maybe\": expected yes or no",
        ),
        (
            "AddressFamily ipx\n",
            "1: bad AddressFamily \"ipx\": expected any, inet or inet6",
        ),
        ("Match hots x\n", "1: unknown Match criterion \"hots\""),
        ("Match host\n", "1: Match host needs a value"),
        (
            "Match all host x\n",
            "1: Match all cannot be combined with other criteria",
        ),
        ("ProxyJump a,,b\n", "1: bad ProxyJump \"a,,b\""),
        ("ProxyJump a b\n", "1: bad ProxyJump \"a b\""),
        ("ProxyCommand =\n", "1: ProxyCommand needs a value"),
        (
            "UserKnownHostsFile a none\n",
            "1: UserKnownHostsFile none must appear alone",
        ),
        (
            "Include ~/.ssh/%h.conf\n",
            "1: Include \"~/.ssh/%h.conf\": %-tokens",
        ),
        (
            "Include ~bob/x\n",
            "1: Include \"~bob/x\": ~user paths are not supported",
        ),
    ] {
        let got = top(text);
        let want = format!("$ROOT/home/.ssh/config:{want}");
        assert!(got.starts_with(&want), "{text:?}:\n got {got}\nwant {want}");
    }
}

#[test]
fn errors_in_included_files_name_that_file() {
    let got = Tree::new(&[
        ("home/.ssh/config", "Include inc.conf\n"),
        ("home/.ssh/inc.conf", "# one\nHost x\n  Port 70000\n"),
    ])
    .error();
    assert!(
        got.starts_with("$ROOT/home/.ssh/inc.conf:3: bad Port \"70000\""),
        "{got}"
    );
}

#[test]
fn include_loop_stops_at_the_depth_limit() {
    let got = top("Host *\n  Include config\n");
    assert!(
        got.starts_with("$ROOT/home/.ssh/config:2: Include nested more than 16 files deep"),
        "{got}"
    );
    // Even when the block around it never matches: OpenSSH reads it all the same.
    let got = top("Host nothing\n  Include config\n");
    assert!(got.contains("nested more than 16"), "{got}");
}

#[test]
fn include_depth_limit_is_sixteen() {
    // config includes c1, which includes c2... up to cN: depth 16 is allowed, 17 is not.
    let chain = |n: usize| {
        let mut files = vec![("home/.ssh/config".to_string(), "Include c1\n".to_string())];
        for i in 1..=n {
            let text = if i == n {
                "User deepest\n".to_string()
            } else {
                format!("Include c{}\n", i + 1)
            };
            files.push((format!("home/.ssh/c{i}"), text));
        }
        Tree::new(&files)
    };
    let config = chain(16).load().unwrap();
    assert_eq!(config.resolve("h").user.as_deref(), Some("deepest"));
    let got = chain(17).error();
    assert!(
        got.starts_with("$ROOT/home/.ssh/c16:1: Include nested more than 16"),
        "{got}"
    );
}

#[test]
fn missing_file_is_empty_and_unreadable_file_is_an_error() {
    let tree = Tree::new::<&str, &str>(&[]);
    let config = tree.load().unwrap();
    assert_eq!(config.resolve("anything"), ResolvedHost::default());

    // A directory cannot be read as a file.
    let dir = tree.path("home/.ssh");
    let err = SshConfig::load(&dir, None).unwrap_err();
    assert!(
        matches!(&err, SshConfigError::Read { file, .. } if file == &dir),
        "{err:?}"
    );
    assert!(err.to_string().contains(dir.to_str().unwrap()), "{err}");
}

#[test]
fn without_a_home_tilde_stays_and_relative_includes_fail() {
    let file = Path::new("/nonexistent/config");
    let config = SshConfig::parse("IdentityFile ~/.ssh/id\n", file, None).unwrap();
    assert_eq!(
        config.resolve("h").identity_files,
        [PathBuf::from("~/.ssh/id")]
    );
    let err = SshConfig::parse("\nInclude conf.d/*\n", file, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/nonexistent/config:2: Include \"conf.d/*\" is relative to the home directory, \
         which is unknown"
    );
}

#[test]
fn a_file_others_may_change_is_refused_like_openssh_does() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |tree: &Tree, file: &str, m: u32| {
        std::fs::set_permissions(tree.path(file), std::fs::Permissions::from_mode(m)).unwrap();
    };
    let tree = Tree::new(&[("home/.ssh/config", "Host x\n  ProxyCommand nc %h %p\n")]);
    assert!(tree.load().is_ok());
    mode(&tree, "home/.ssh/config", 0o666);
    let got = tree.error();
    assert!(
        got.starts_with("$ROOT/home/.ssh/config: bad owner or permissions"),
        "{got}"
    );
    mode(&tree, "home/.ssh/config", 0o640);
    assert!(tree.load().is_ok(), "group-readable is fine, as in OpenSSH");

    let tree = Tree::new(&[
        ("home/.ssh/config", "Include inc.conf\n"),
        ("home/.ssh/inc.conf", "Host x\n  ProxyCommand nc %h %p\n"),
    ]);
    mode(&tree, "home/.ssh/inc.conf", 0o620);
    let got = tree.error();
    assert!(
        got.starts_with(
            "$ROOT/home/.ssh/config:1: bad owner or permissions on included file $ROOT/home/.ssh/inc.conf"
        ),
        "{got}"
    );
    // Owned by another user (not root): refused too. Only root can hand a file away.
    if nix::unistd::geteuid().is_root() {
        mode(&tree, "home/.ssh/inc.conf", 0o644);
        assert!(tree.load().is_ok());
        let nobody = nix::unistd::Uid::from_raw(65534);
        nix::unistd::chown(&tree.path("home/.ssh/inc.conf"), Some(nobody), None).unwrap();
        assert!(tree.error().contains("bad owner or permissions"));
    }
}
