//! ssh's command line habits turned into configuration: `ssh://` destinations, `-4`/`-6`,
//! `-F`, `ExitOnForwardFailure` and the `*Forward` lines of the destination's ssh_config.

use std::path::Path;

use super::document::{AdHoc, to_document};
use super::test_args as args;
use crate::config::{AddressFamily, Config, Env};

/// This process's environment with `home` as its home.
fn env_at(home: &Path) -> Env {
    Env {
        home: Some(home.to_path_buf()),
        ..Env::from_process()
    }
}

fn adhoc(line: &[&str], env: &Env) -> Result<(AdHoc, Config), String> {
    let adhoc = to_document(&args(line), env)?;
    let text = toml::to_string(&adhoc.document).map_err(|e| e.to_string())?;
    let config = Config::parse(&text, Path::new("c.toml"), env).map_err(|e| format!("{e}"))?;
    Ok((adhoc, config))
}

fn config(line: &[&str]) -> Result<Config, String> {
    adhoc(line, &env_at(Path::new("/nonexistent-home"))).map(|(_, c)| c)
}

/// (kind, listen, connect) of every forward.
fn forwards(c: &Config) -> Vec<(String, String, String)> {
    c.forwards
        .iter()
        .map(|f| {
            (
                f.spec.kind_name().into(),
                f.spec.listen_text(),
                f.spec.connect_text(),
            )
        })
        .collect()
}

fn f(kind: &str, listen: &str, connect: &str) -> (String, String, String) {
    (kind.into(), listen.into(), connect.into())
}

#[test]
fn ssh_urls_name_user_host_and_port() {
    let c = config(&["-D", "1080", "ssh://tunnel@[::1]:2222"]).unwrap();
    let h = &c.hosts["destination"];
    assert_eq!(
        (h.hostname.as_str(), h.user.as_str(), h.port),
        ("::1", "tunnel", 2222)
    );
    let c = config(&["-N", "-L", "1:db:2", "ssh://ops@db.example.com/"]).unwrap();
    let h = &c.hosts["db.example.com"];
    assert_eq!((h.user.as_str(), h.port), ("ops", 22));
    let c = config(&["-L", "1:db:2", "ssh://127.0.0.1:2200"]).unwrap();
    assert_eq!(c.hosts["127.0.0.1"].port, 2200);
    // -l and -p win over the URL's, as in ssh.
    let c = config(&["-D", "1", "-l", "u", "-p", "2", "ssh://a@h.example:3"]).unwrap();
    let h = &c.hosts["h.example"];
    assert_eq!((h.user.as_str(), h.port), ("u", 2));
}

#[test]
fn bad_ssh_urls_are_refused() {
    for bad in [
        "ssh://",
        "ssh://@h",
        "ssh://u@",
        "ssh://h:99999",
        "ssh://h:x",
        "ssh://[::1",
        "ssh://u@[::1]x",
    ] {
        assert!(config(&["-D", "1080", bad]).is_err(), "{bad}");
    }
    // Names that a shell or ssh would read as something else are refused by validation.
    for bad in [
        "ssh://-oProxyCommand=x",
        "ssh://-u@h",
        "ssh://u;id@h",
        "ssh://h$x",
    ] {
        let e = config(&["-D", "1080", bad]).unwrap_err();
        assert!(!e.is_empty(), "{bad}");
    }
}

#[test]
fn address_family_from_4_6_and_o() {
    let family = |line: &[&str]| {
        let mut all = vec!["-D", "1080"];
        all.extend_from_slice(line);
        all.push("h.example");
        config(&all).unwrap().hosts["h.example"].address_family
    };
    assert_eq!(family(&[]), AddressFamily::Any);
    assert_eq!(family(&["-4"]), AddressFamily::Inet);
    assert_eq!(family(&["-6"]), AddressFamily::Inet6);
    assert_eq!(family(&["-o", "AddressFamily=inet6"]), AddressFamily::Inet6);
    assert_eq!(family(&["-o", "AddressFamily=INET"]), AddressFamily::Inet);
    // The flag wins over -o.
    assert_eq!(
        family(&["-4", "-o", "AddressFamily=inet6"]),
        AddressFamily::Inet
    );
    assert!(config(&["-D", "1", "-o", "AddressFamily=ipx", "h.example"]).is_err());
}

#[test]
fn exit_on_forward_failure_from_o() {
    let home = Path::new("/nonexistent-home");
    let exits = |line: &[&str]| {
        adhoc(line, &env_at(home))
            .unwrap()
            .0
            .exit_on_forward_failure
    };
    assert!(!exits(&["-D", "1", "h"]));
    assert!(exits(&["-D", "1", "-o", "ExitOnForwardFailure=yes", "h"]));
    assert!(exits(&[
        "-D",
        "1",
        "-o",
        "exitonforwardfailure yes",
        "-o",
        "ExitOnForwardFailure=no",
        "h"
    ]));
    assert!(!exits(&["-D", "1", "-o", "ExitOnForwardFailure=no", "h"]));
    let e = to_document(
        &args(&["-D", "1", "-o", "ExitOnForwardFailure=maybe", "h"]),
        &env_at(home),
    )
    .unwrap_err();
    assert!(e.contains("expected yes or no"), "{e}");
}

/// A home with `.ssh/config` holding `text`, and another ssh_config file `other.conf`.
fn home_with(text: &str, other: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".ssh")).unwrap();
    std::fs::write(home.path().join(".ssh/config"), text).unwrap();
    std::fs::write(home.path().join("other.conf"), other).unwrap();
    home
}

#[test]
fn ssh_config_forwards_of_the_destination_are_added() {
    let home = home_with(
        "Host bastion\n  HostName 127.0.0.1\n  LocalForward 5432 db:5432\n\
         \x20 DynamicForward 127.0.0.1:1080\n  ExitOnForwardFailure yes\n\
         Host *\n  RemoteForward 9000 localhost:3000\nHost other\n  LocalForward 1 x:1\n",
        "Host bastion\n  LocalForward 6000 db:6000\n",
    );
    let env = env_at(home.path());
    let (a, c) = adhoc(&["-N", "-L", "7000:db:7000", "bastion"], &env).unwrap();
    assert!(a.exit_on_forward_failure);
    assert_eq!(
        forwards(&c),
        [
            f("local", "127.0.0.1:7000", "db:7000"),
            f("local", "127.0.0.1:5432", "db:5432"),
            f("dynamic", "127.0.0.1:1080", "-"),
            f("remote", "127.0.0.1:9000", "localhost:3000"),
        ]
    );
    assert_eq!(c.hosts["bastion"].hostname, "127.0.0.1");
    // The same forward on the command line and in the file is one forward, as in ssh; the
    // command line's are kept as given (two port-0 forwards are two forwards).
    let (_, c) = adhoc(&["-L", "5432:db:5432", "bastion"], &env).unwrap();
    assert_eq!(c.forwards.len(), 3);
    let (_, c) = adhoc(&["-L", "0:db:1", "-L", "0:db:1", "bastion"], &env).unwrap();
    assert_eq!(c.forwards.len(), 5);
    // The ssh_config alone may give every forward; -o wins over its ExitOnForwardFailure.
    let (a, c) = adhoc(&["-o", "ExitOnForwardFailure=no", "bastion"], &env).unwrap();
    assert!(!a.exit_on_forward_failure);
    assert_eq!(c.forwards.len(), 3);

    // -F FILE reads that file instead (relative to the working directory, written absolute).
    let other = home.path().join("other.conf");
    let (a, c) = adhoc(&["-F", other.to_str().unwrap(), "bastion"], &env).unwrap();
    assert!(!a.exit_on_forward_failure);
    assert_eq!(forwards(&c), [f("local", "127.0.0.1:6000", "db:6000")]);
    assert_eq!(c.daemon.ssh_config.as_deref(), Some(other.as_path()));
    assert_eq!(c.hosts["bastion"].hostname, "bastion");
    // -F none reads none.
    let e = to_document(&args(&["-F", "none", "bastion"]), &env).unwrap_err();
    assert!(e.contains("nothing to forward"), "{e}");
    let (_, c) = adhoc(&["-F", "none", "-D", "1", "bastion"], &env).unwrap();
    assert_eq!(c.daemon.ssh_config, None);
    assert_eq!(c.hosts["bastion"].hostname, "bastion");
}

#[test]
fn ssh_config_problems_are_reported() {
    let home = home_with("Host *\n  RemoteForward 9000:x\n", "LocalForward 1\n");
    let env = env_at(home.path());
    let e = to_document(&args(&["h"]), &env).unwrap_err();
    assert!(e.contains("RemoteForward 9000:x: expected"), "{e}");
    let other = home.path().join("other.conf");
    let e = to_document(&args(&["-F", other.to_str().unwrap(), "h"]), &env).unwrap_err();
    assert!(e.contains("other.conf:1: bad LocalForward"), "{e}");
    // A file -F names must exist, as in ssh (a missing ~/.ssh/config is an empty one).
    let e = to_document(&args(&["-F", "/nonexistent-dir/x", "-D", "1", "h"]), &env).unwrap_err();
    assert!(
        e.contains("-F /nonexistent-dir/x: cannot open the ssh_config file"),
        "{e}"
    );
    let nohome = env_at(Path::new("/nonexistent-home"));
    assert!(to_document(&args(&["-D", "1", "h"]), &nohome).is_ok());
}

#[test]
fn relative_paths_are_written_absolute() {
    let home = Path::new("/nonexistent-home");
    let (a, _) = adhoc(
        &["-i", "keys/id", "-i", "~/id2", "-D", "1", "h"],
        &env_at(home),
    )
    .unwrap();
    let cwd = std::env::current_dir().unwrap();
    let files = &a.document["hosts"]["h"]["identity_files"];
    assert_eq!(
        files
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect::<Vec<_>>(),
        [cwd.join("keys/id").to_str().unwrap(), "~/id2"]
    );
}

#[test]
fn a_remote_forward_without_a_destination_is_a_proxy_on_the_server() {
    let home = home_with(
        "Host h\n  RemoteForward 1081\n  RemoteForward [::1]:0\n",
        "",
    );
    let env = env_at(home.path());
    let (_, c) = adhoc(
        &["-R", "127.0.0.1:1082", "-R", "8080:/run/app.sock", "h"],
        &env,
    )
    .unwrap();
    assert_eq!(
        forwards(&c),
        [
            f("remote-dynamic", "127.0.0.1:1082", "-"),
            f("remote", "127.0.0.1:8080", "/run/app.sock"),
            f("remote-dynamic", "127.0.0.1:1081", "-"),
            f("remote-dynamic", "[::1]:0", "-"),
        ]
    );
}

#[test]
fn o_splits_at_the_first_equals_or_space_as_ssh_does() {
    let env = env_at(Path::new("/nonexistent-home"));
    let (a, _) = adhoc(
        &[
            "-o",
            "ProxyCommand nc -X connect -x proxy:3128 %h %p",
            "-o",
            "ConnectTimeout = 7",
            "-o",
            "ServerAliveCountMax =4",
            "-D",
            "1",
            "h",
        ],
        &env,
    )
    .unwrap();
    let host = a.document["hosts"]["h"].as_table().unwrap();
    assert_eq!(
        host["proxy_command"].as_str(),
        Some("nc -X connect -x proxy:3128 %h %p")
    );
    assert_eq!(host["connect_timeout"].as_str(), Some("7s"));
    assert_eq!(host["keepalive_count_max"].as_integer(), Some(4));
    let (a, _) = adhoc(
        &["-o", "ProxyCommand=ssh -o X=Y -W %h:%p gw", "-D", "1", "h"],
        &env,
    )
    .unwrap();
    assert_eq!(
        a.document["hosts"]["h"]["proxy_command"].as_str(),
        Some("ssh -o X=Y -W %h:%p gw")
    );
}

#[test]
fn server_alive_interval_0_keeps_warren_s_keepalives() {
    let env = env_at(Path::new("/nonexistent-home"));
    let (a, c) = adhoc(&["-o", "ServerAliveInterval=0", "-D", "1", "h"], &env).unwrap();
    assert!(a.document["hosts"]["h"].get("keepalive_interval").is_none());
    assert_eq!(
        c.hosts["h"].keepalive_interval,
        std::time::Duration::from_secs(15)
    );
}
