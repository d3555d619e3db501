//! Table tests of stage two: every validation rule and default of warren.toml(5).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn env() -> Env {
    Env {
        home: Some("/home/op".into()),
        user: "op".into(),
        is_root: false,
        runtime_directory: Some("/run/warren".into()),
        xdg_runtime_dir: None,
        xdg_config_home: None,
    }
}

fn parse(src: &str) -> Result<Config, ConfigError> {
    Config::parse(src, Path::new("/etc/warren/w.toml"), &env())
}

fn ok(src: &str) -> Config {
    match parse(src) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

/// The problems as `LINE:COLUMN: message`.
fn problems(src: &str) -> Vec<String> {
    match parse(src) {
        Ok(_) => panic!("expected problems in:\n{src}"),
        Err(ConfigError::Invalid { problems, .. }) => {
            problems.iter().map(ToString::to_string).collect()
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn one_problem(src: &str) -> String {
    let p = problems(src);
    assert_eq!(p.len(), 1, "expected exactly one problem, got {p:#?}");
    p.into_iter().next().unwrap_or_default()
}

const HOST: &str = "[hosts.db]\nhostname = \"10.0.0.5\"\n";

#[test]
fn empty_file_is_valid_and_idles() {
    let c = ok("");
    assert!(c.hosts.is_empty());
    assert!(c.forwards.is_empty());
    assert_eq!(
        c.daemon.control_socket,
        PathBuf::from("/run/warren/warren.sock")
    );
    assert_eq!(c.daemon.shutdown_grace, Duration::from_secs(10));
    assert_eq!(c.daemon.ssh_config, None);
}

#[test]
fn host_defaults_follow_the_spec() {
    let c = ok("[hosts.db]\n");
    let h = &c.hosts["db"];
    assert_eq!(h.hostname, "db");
    assert_eq!(h.port, 22);
    assert_eq!(h.user, "op");
    assert_eq!(
        h.identity_files,
        ["id_ed25519", "id_ecdsa", "id_rsa"].map(|k| PathBuf::from("/home/op/.ssh").join(k))
    );
    assert!(!h.identity_files_explicit);
    assert!(h.agent);
    assert_eq!(h.passphrase_file, None);
    assert_eq!(h.password_file, None);
    assert_eq!(
        h.known_hosts,
        [
            PathBuf::from("/home/op/.ssh/known_hosts"),
            PathBuf::from("/etc/ssh/ssh_known_hosts")
        ]
    );
    assert_eq!(h.host_key_policy, HostKeyPolicy::Strict);
    assert!(h.host_key_fingerprints.is_empty());
    assert_eq!(h.route, Route::Direct);
    assert_eq!(h.connect_timeout, Duration::from_secs(15));
    assert_eq!(h.keepalive_interval, Duration::from_secs(15));
    assert_eq!(h.keepalive_count_max, 3);
    assert_eq!(h.reconnect_min, Duration::from_secs(1));
    assert_eq!(h.reconnect_max, Duration::from_secs(60));
}

#[test]
fn hosts_inherit_defaults_and_override_them() {
    let c = ok(r#"
[daemon]
control_socket = "~/w.sock"
shutdown_grace = "0s"
ssh_config = true

[defaults]
user = "tunnel"
port = 2222
identity_files = ["keys/id_ed25519"]
passphrase_file = "/etc/warren/key.pass"
agent = false
password_file = "pw"
known_hosts = ["/etc/warren/known_hosts"]
host_key_policy = "accept-new"
connect_timeout = "5s"
keepalive_interval = "500ms"
keepalive_count_max = 2
reconnect_min = "200ms"
reconnect_max = "1m30s"

[hosts.a]
[hosts.b]
user = "other"
port = 22
agent = true
keepalive_count_max = 7
"#);
    assert_eq!(c.daemon.control_socket, PathBuf::from("/home/op/w.sock"));
    assert_eq!(c.daemon.shutdown_grace, Duration::ZERO);
    assert_eq!(
        c.daemon.ssh_config,
        Some(PathBuf::from("/home/op/.ssh/config"))
    );
    let a = &c.hosts["a"];
    assert_eq!((a.user.as_str(), a.port, a.agent), ("tunnel", 2222, false));
    assert_eq!(
        a.identity_files,
        [PathBuf::from("/etc/warren/keys/id_ed25519")]
    );
    assert!(a.identity_files_explicit);
    assert_eq!(
        a.passphrase_file,
        Some(PathBuf::from("/etc/warren/key.pass"))
    );
    assert_eq!(a.password_file, Some(PathBuf::from("/etc/warren/pw")));
    assert_eq!(a.host_key_policy, HostKeyPolicy::AcceptNew);
    assert_eq!(a.connect_timeout, Duration::from_secs(5));
    assert_eq!(a.keepalive_interval, Duration::from_millis(500));
    assert_eq!(a.keepalive_count_max, 2);
    assert_eq!(a.reconnect_min, Duration::from_millis(200));
    assert_eq!(a.reconnect_max, Duration::from_secs(90));
    let b = &c.hosts["b"];
    assert_eq!(
        (b.user.as_str(), b.port, b.agent, b.keepalive_count_max),
        ("other", 22, true, 7)
    );
    assert_eq!(b.known_hosts, [PathBuf::from("/etc/warren/known_hosts")]);
}

#[test]
fn ssh_config_path_form() {
    let c = ok("[daemon]\nssh_config = \"/etc/warren/ssh_config\"\n");
    assert_eq!(
        c.daemon.ssh_config,
        Some(PathBuf::from("/etc/warren/ssh_config"))
    );
    let c = ok("[daemon]\nssh_config = false\n");
    assert_eq!(c.daemon.ssh_config, None);
    assert!(one_problem("[daemon]\nssh_config = 3\n").contains("true, false or the path"));
}

#[test]
fn forward_kinds_and_address_forms() {
    let c = ok(&format!(
        r#"{HOST}
[[forward]]
name = "pg"
host = "db"
type = "local"
listen = "5432"
connect = "5432"

[[forward]]
host = "db"
type = "local"
listen = "[::1]:6000"
connect = "/var/run/postgresql/.s.PGSQL.5432"

[[forward]]
host = "db"
type = "local"
listen = "~/pg.sock"
connect = "[fd00::5]:5432"

[[forward]]
host = "db"
type = "remote"
listen = "0"
connect = "127.0.0.1:3000"

[[forward]]
host = "db"
type = "remote"
listen = "/tmp/r.sock"
connect = "/run/app.sock"

[[forward]]
host = "db"
type = "dynamic"
listen = "1080"
"#
    ));
    let f = &c.forwards;
    assert_eq!(f.len(), 6);
    assert_eq!(f[0].name, "pg");
    assert_eq!(
        f[0].spec,
        ForwardSpec::Local {
            listen: BindAddr::Tcp("127.0.0.1:5432".parse().unwrap()),
            connect: Endpoint::Tcp {
                host: "localhost".into(),
                port: 5432
            },
        }
    );
    assert_eq!(f[1].name, "db:local:[::1]:6000");
    assert_eq!(
        f[1].spec.connect_text(),
        "/var/run/postgresql/.s.PGSQL.5432"
    );
    assert_eq!(
        f[2].spec,
        ForwardSpec::Local {
            listen: BindAddr::Unix("/home/op/pg.sock".into()),
            connect: Endpoint::Tcp {
                host: "fd00::5".into(),
                port: 5432
            },
        }
    );
    assert_eq!(
        f[3].spec,
        ForwardSpec::Remote {
            listen: Endpoint::Tcp {
                host: "127.0.0.1".into(),
                port: 0
            },
            connect: Endpoint::Tcp {
                host: "127.0.0.1".into(),
                port: 3000
            },
        }
    );
    assert_eq!(f[3].name, "db:remote:127.0.0.1:0");
    assert_eq!(
        f[4].spec,
        ForwardSpec::Remote {
            listen: Endpoint::Unix("/tmp/r.sock".into()),
            connect: Endpoint::Unix("/run/app.sock".into()),
        }
    );
    assert_eq!(
        f[5].spec,
        ForwardSpec::Dynamic {
            listen: BindAddr::Tcp("127.0.0.1:1080".parse().unwrap())
        }
    );
    assert_eq!(f[5].spec.connect_text(), "-");
}

#[test]
fn forward_to_an_undefined_host() {
    let p = one_problem(
        "[hosts.db]\n[[forward]]\nhost = \"dbb\"\ntype = \"dynamic\"\nlisten = \"1080\"\n",
    );
    assert_eq!(
        p,
        "3:8: `host` `dbb` names no [hosts.dbb] table; did you mean `db`?"
    );
}

#[test]
fn forward_missing_keys_point_at_the_table() {
    let p = problems(&format!("{HOST}[[forward]]\nname = \"x\"\n"));
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(
        p.iter().all(|m| m.starts_with("3:1: [[forward]] needs")),
        "{p:#?}"
    );
    let p = one_problem(&format!(
        "{HOST}[[forward]]\nhost = \"db\"\ntype = \"local\"\nlisten = \"1\"\n"
    ));
    assert_eq!(
        p,
        "3:1: a local forward needs `connect`: the egress address"
    );
    let p = one_problem(&format!(
        "{HOST}[[forward]]\nhost = \"db\"\ntype = \"remote\"\nlisten = \"1\"\n"
    ));
    assert!(p.contains("needs `connect`"));
}

#[test]
fn dynamic_with_connect_is_refused() {
    let p = one_problem(&format!(
        "{HOST}[[forward]]\nhost = \"db\"\ntype = \"dynamic\"\nlisten = \"1080\"\nconnect = \"x:1\"\n"
    ));
    assert_eq!(
        p,
        "7:11: a dynamic forward takes no `connect`: each SOCKS client names its own destination"
    );
}

#[test]
fn unknown_forward_type() {
    let p = one_problem(&format!(
        "{HOST}[[forward]]\nhost = \"db\"\ntype = \"lcoal\"\nlisten = \"1\"\n"
    ));
    assert_eq!(
        p,
        "5:8: `type` \"lcoal\" is not valid; expected \"local\", \"remote\", \"dynamic\" or \"remote-dynamic\""
    );
}

#[test]
fn ports_out_of_range_and_port_zero() {
    let fwd = |kind: &str, listen: &str, connect: &str| {
        format!(
            "{HOST}[[forward]]\nhost = \"db\"\ntype = \"{kind}\"\nlisten = \"{listen}\"\nconnect = \"{connect}\"\n"
        )
    };
    assert!(one_problem(&fwd("local", "65536", "1")).contains("port 65536 is outside 0-65535"));
    // Port 0 on any ingress: the kernel (or the server) picks a free port.
    let c = ok(&format!(
        "{}[[forward]]\nhost = \"db\"\ntype = \"local\"\nlisten = \"0\"\nconnect = \"2\"\n\
         [[forward]]\nhost = \"db\"\ntype = \"dynamic\"\nlisten = \"127.0.0.1:0\"\n",
        fwd("local", "0", "1")
    ));
    let names: Vec<&str> = c.forwards.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "db:local:127.0.0.1:0",
            "db:local:127.0.0.1:0#2",
            "db:dynamic:127.0.0.1:0"
        ],
        "several unnamed ingresses on port 0 get numbered names"
    );
    assert!(one_problem(&fwd("local", "1", "0")).contains("port 0 is not a port to connect to"));
    assert!(one_problem(&fwd("remote", "0", "0")).contains("7:11: `connect`:"));
    assert!(one_problem(&fwd("remote", "99999", "1")).contains("outside 0-65535"));
    assert!(one_problem("[hosts.db]\nport = 0\n").contains("`port` 0 is outside 1-65535"));
    assert!(one_problem("[hosts.db]\nport = 70000\n").contains("outside 1-65535"));
}

#[test]
fn public_ingress_needs_allow_public() {
    let src = |listen: &str, extra: &str| {
        format!(
            "{HOST}[[forward]]\nhost = \"db\"\ntype = \"dynamic\"\nlisten = \"{listen}\"\n{extra}"
        )
    };
    let p = one_problem(&src("0.0.0.0:1080", ""));
    assert_eq!(
        p,
        "6:10: `listen` 0.0.0.0:1080 is reachable from other machines; set `allow_public = true` on this forward if that is intended"
    );
    assert!(one_problem(&src("192.168.1.4:1080", "")).contains("allow_public"));
    assert!(one_problem(&src("*:1080", "")).contains("allow_public"));
    ok(&src("0.0.0.0:1080", "allow_public = true\n"));
    ok(&src("127.0.0.2:1080", ""));
    ok(&src("[::1]:1080", ""));
    let remote = format!(
        "{HOST}[[forward]]\nhost = \"db\"\ntype = \"remote\"\nlisten = \"0.0.0.0:80\"\nconnect = \"80\"\nallow_public = true\n"
    );
    assert!(one_problem(&remote).contains("GatewayPorts"));
}

#[test]
fn duplicate_names_and_ingresses() {
    let p = problems(&format!(
        r#"{HOST}
[[forward]]
name = "a"
host = "db"
type = "dynamic"
listen = "1080"
[[forward]]
name = "a"
host = "db"
type = "dynamic"
listen = "0.0.0.0:1080"
allow_public = true
[[forward]]
host = "db"
type = "local"
listen = "/tmp/s"
connect = "1"
[[forward]]
host = "db"
type = "local"
listen = "/tmp/s"
connect = "2"
[[forward]]
host = "db"
type = "remote"
listen = "9000"
connect = "1"
[[forward]]
host = "db"
type = "remote"
listen = "127.0.0.1:9000"
connect = "2"
[[forward]]
name = "z1"
host = "db"
type = "remote"
listen = "0"
connect = "2"
[[forward]]
name = "z2"
host = "db"
type = "remote"
listen = "0"
connect = "2"
[[forward]]
name = "z2"
host = "db"
type = "remote"
listen = "0"
connect = "3"
[[forward]]
host = "db"
type = "remote"
listen = "0"
connect = "2"
[[forward]]
host = "db"
type = "remote"
listen = "0"
connect = "3"
"#
    ));
    assert_eq!(
        p,
        [
            "10:8: forward name `a` is already used by forward #1",
            "13:10: `listen` 0.0.0.0:1080 is already the ingress of forward `a`",
            "23:10: `listen` /tmp/s is already the ingress of forward `db:local:/tmp/s`",
            "33:10: `listen` 127.0.0.1:9000 on host `db` is already the ingress of forward `db:remote:127.0.0.1:9000`",
            "48:8: forward name `z2` is already used by forward #8",
        ]
    );
}

#[test]
fn durations_need_units_and_sense() {
    assert_eq!(
        one_problem("[defaults]\nconnect_timeout = \"15\"\n"),
        "2:19: `connect_timeout`: duration needs a unit: \"15s\""
    );
    assert!(one_problem("[daemon]\nshutdown_grace = \"10x\"\n").contains("unknown unit \"x\""));
    assert!(
        one_problem("[hosts.h]\nkeepalive_interval = \"0s\"\n")
            .contains("must be longer than zero")
    );
    assert!(
        one_problem("[hosts.h]\nreconnect_min = \"2m\"\nreconnect_max = \"1m\"\n")
            .contains("`reconnect_min` (2m) is longer than `reconnect_max` (1m)")
    );
    assert!(one_problem("[hosts.h]\nkeepalive_count_max = 0\n").contains("outside 1-1000"));
    assert!(one_problem("[hosts.h]\nconnect_timeout = 15\n").contains("invalid type: integer"));
}

#[test]
fn host_key_policy_has_no_off() {
    let p = one_problem("[defaults]\nhost_key_policy = \"off\"\n");
    assert!(
        p.starts_with(
            "2:19: `host_key_policy` \"off\" does not exist: warren always verifies host keys"
        ),
        "{p}"
    );
    assert!(
        one_problem("[hosts.h]\nhost_key_policy = \"yes\"\n")
            .contains("expected \"strict\" or \"accept-new\"")
    );
}

#[test]
fn fingerprints_must_be_sha256() {
    let good = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
    let c = ok(&format!(
        "[hosts.h]\nhost_key_fingerprints = [\"{good}\"]\n"
    ));
    assert_eq!(c.hosts["h"].host_key_fingerprints, [good]);
    let md5 = "MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48";
    assert!(
        one_problem(&format!("[hosts.h]\nhost_key_fingerprints = [\"{md5}\"]\n"))
            .contains("expected a SHA256 fingerprint")
    );
    assert!(
        one_problem("[hosts.h]\nhost_key_fingerprints = [\"SHA256:short\"]\n")
            .contains("43 base64")
    );
    assert!(one_problem("[defaults]\nhost_key_fingerprints = []\n").contains("set per host"));
}

#[test]
fn jump_chains_resolve_names_and_adhoc_hops() {
    let c = ok(r#"
[defaults]
user = "ops"
[hosts.bastion]
hostname = "bastion.example.com"
[hosts.middle]
jump = ["bastion"]
[hosts.db]
jump = ["jump@gw.example.com:2222", "middle"]
[hosts.v6]
jump = ["[fd00::1]:22", "10.1.2.3"]
"#);
    assert_eq!(
        c.hosts["db"].route,
        Route::Jump(vec!["jump@gw.example.com:2222".into(), "middle".into()])
    );
    let gw = &c.hosts["jump@gw.example.com:2222"];
    assert_eq!(
        (gw.user.as_str(), gw.hostname.as_str(), gw.port),
        ("jump", "gw.example.com", 2222)
    );
    assert_eq!(gw.route, Route::Direct);
    let v6 = &c.hosts["[fd00::1]:22"];
    assert_eq!((v6.user.as_str(), v6.hostname.as_str()), ("ops", "fd00::1"));
    assert_eq!(c.hosts["10.1.2.3"].port, 22);
}

#[test]
fn jump_errors() {
    assert_eq!(
        one_problem("[hosts.db]\njump = [\"bastoin\"]\n[hosts.bastion]\n"),
        "2:9: jump entry `bastoin` names no [hosts.bastoin] table; did you mean `bastion`?"
    );
    assert!(
        one_problem("[hosts.db]\njump = [\"gateway\"]\n")
            .contains("write `user@host` or `host:port`")
    );
    let p = problems("[hosts.a]\njump = [\"b\"]\n[hosts.b]\njump = [\"a\"]\n");
    assert_eq!(
        p,
        [
            "2:9: `jump` makes a cycle: a -> b -> a",
            "4:9: `jump` makes a cycle: b -> a -> b"
        ]
    );
    assert_eq!(
        one_problem("[hosts.a]\njump = [\"a\"]\n"),
        "2:9: `jump` makes a cycle: a -> a"
    );
    let p = one_problem("[hosts.a]\njump = [\"x.example\"]\nproxy_command = \"nc %h %p\"\n");
    assert_eq!(
        p,
        "3:17: [hosts.a] sets both `jump` and `proxy_command`; choose one"
    );
    let c = ok("[hosts.a]\nproxy_command = \"nc %h %p\"\n");
    assert_eq!(c.hosts["a"].route, Route::ProxyCommand("nc %h %p".into()));
}

#[test]
fn host_only_keys_are_refused_in_defaults() {
    let p = problems("[defaults]\nhostname = \"x\"\njump = [\"a.b\"]\nproxy_command = \"nc\"\n");
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(p[0].contains("`hostname` is set per host in [hosts.NAME], not in [defaults]"));
}

#[test]
fn bad_host_names() {
    assert_eq!(
        one_problem("[hosts.\"a b\"]\n"),
        "1:8: [hosts.a b]: host name \"a b\" contains ' ', which a host name never does (it \
         could reach a ProxyCommand's shell or a known_hosts pattern)"
    );
    assert!(one_problem("[hosts.\"u@h\"]\n").contains("'@'"));
}

/// Every character OpenSSH 9.6 refuses in a host or user name (plus the known_hosts pattern
/// characters), from each place the TOML can give one: refused at its position.
#[test]
fn host_and_user_names_that_could_reach_a_shell_are_refused() {
    let forbidden = "'`\"$\\;&<>|(){}*?[]!,";
    for c in forbidden.chars().chain([' ', '\t', '\x07']) {
        let bad = format!("x{c}y");
        let toml_str = toml::Value::String(bad.clone()).to_string();
        for (src, at) in [
            (
                format!("[hosts.h]\nhostname = {toml_str}\n"),
                "2:12: `hostname`: host name",
            ),
            (
                format!("[hosts.h]\nuser = {toml_str}\n"),
                "2:8: `user`: user name",
            ),
            (
                format!("[defaults]\nuser = {toml_str}\n"),
                "2:8: `user`: user name",
            ),
            (
                // Some are refused as names, some before: not a `user@host[:port]` at all.
                format!(
                    "[hosts.h]\njump = [{}]\n",
                    toml::Value::String(format!("ops@{bad}"))
                ),
                "2:9: ",
            ),
            (
                format!(
                    "[hosts.h]\njump = [{}]\n",
                    toml::Value::String(format!("{bad}@gw.example"))
                ),
                "2:9: ",
            ),
        ] {
            let p = problems(&src);
            assert!(
                p.iter().any(|m| m.starts_with(at)),
                "{c:?} in {src:?} gave {p:#?}, expected {at}"
            );
        }
    }
    // A leading dash would read as an option; brackets are for an IPv6 literal only.
    assert!(
        one_problem("[hosts.h]\nhostname = \"-oProxyCommand=x\"\n").contains("starts with '-'")
    );
    assert!(one_problem("[hosts.h]\nuser = \"-l\"\n").contains("starts with '-'"));
    let c = ok("[hosts.h]\nhostname = \"[::1]\"\n");
    assert_eq!(c.hosts["h"].hostname, "::1");
}

#[test]
fn several_mistakes_are_all_listed_in_file_order() {
    let src = r#"[defaults]
conect_timeout = "5s"
keepalive_interval = "15"

[hosts.bastion]
hostname = "bastion.example.com"

[[forward]]
host = "dbx"
type = "local"
listen = "5432"
connect = "5432"

[[forward]]
host = "bastion"
type = "dynamic"
listen = "1080"
connect = "db:5432"
"#;
    assert_eq!(
        problems(src),
        [
            "2:1: unknown key `conect_timeout` in [defaults]; did you mean `connect_timeout`?",
            "3:22: `keepalive_interval`: duration needs a unit: \"15s\"",
            "9:8: `host` `dbx` names no [hosts.dbx] table",
            "18:11: a dynamic forward takes no `connect`: each SOCKS client names its own destination",
        ]
    );
}

#[test]
fn active_hosts_include_jump_hops() {
    let c = ok(r#"
[hosts.bastion]
[hosts.db]
jump = ["bastion"]
[hosts.idle]
[[forward]]
host = "db"
type = "local"
listen = "1"
connect = "1"
"#);
    let names: Vec<String> = c.active_hosts().iter().map(|h| h.name.clone()).collect();
    assert_eq!(names, ["bastion", "db"]);
}

#[test]
fn ssh_config_fills_what_the_toml_leaves_out() {
    let dir = tempfile::tempdir().unwrap();
    let ssh = dir.path().join("ssh_config");
    std::fs::write(
        &ssh,
        "Host db\n  HostName 10.0.0.5\n  User dbuser\n  Port 2222\n  IdentityFile /keys/db\n  CertificateFile /certs/db-cert.pub\n  ProxyJump gw\n  ServerAliveInterval 7\n  ServerAliveCountMax 4\n  ConnectTimeout 9\n  StrictHostKeyChecking accept-new\n\
         Host gw\n  HostName gw.example.com\n  User jump\n\
         Host legacy\n  StrictHostKeyChecking no\n\
         Host viacmd\n  ProxyCommand nc -X connect -x proxy:3128 %h %p\n",
    )
    .unwrap();
    let src = format!(
        "[daemon]\nssh_config = \"{}\"\n[hosts.db]\n[hosts.pinned]\nhostname = \"db\"\nuser = \"toml-wins\"\n[hosts.viacmd]\n",
        ssh.display()
    );
    let c = ok(&src);
    let db = &c.hosts["db"];
    assert_eq!(
        (db.hostname.as_str(), db.user.as_str(), db.port),
        ("10.0.0.5", "dbuser", 2222)
    );
    assert_eq!(db.identity_files, [PathBuf::from("/keys/db")]);
    assert_eq!(db.certificate_files, [PathBuf::from("/certs/db-cert.pub")]);
    assert_eq!(db.route, Route::Jump(vec!["gw".into()]));
    assert_eq!(db.keepalive_interval, Duration::from_secs(7));
    assert_eq!(db.keepalive_count_max, 4);
    assert_eq!(db.connect_timeout, Duration::from_secs(9));
    assert_eq!(db.host_key_policy, HostKeyPolicy::AcceptNew);
    // The ProxyJump alias is a hop resolved through the same file.
    let gw = &c.hosts["gw"];
    assert_eq!(
        (gw.hostname.as_str(), gw.user.as_str()),
        ("gw.example.com", "jump")
    );
    // The TOML always wins; and `hostname = "db"` is not looked up again.
    assert_eq!(c.hosts["pinned"].user, "toml-wins");
    assert_eq!(
        c.hosts["viacmd"].route,
        Route::ProxyCommand("nc -X connect -x proxy:3128 %h %p".into())
    );

    let refused = problems(&format!(
        "[daemon]\nssh_config = \"{}\"\n[hosts.legacy]\n",
        ssh.display()
    ));
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0]
            .starts_with("2:14: `ssh_config`: StrictHostKeyChecking turns host key checking off"),
        "{refused:?}"
    );
    // Set in the TOML, the policy wins and the ssh_config's "no" does not matter.
    ok(&format!(
        "[daemon]\nssh_config = \"{}\"\n[hosts.legacy]\nhost_key_policy = \"strict\"\n",
        ssh.display()
    ));

    std::fs::write(&ssh, "Host x\n  Port many\n").unwrap();
    let bad = problems(&format!("[daemon]\nssh_config = \"{}\"\n", ssh.display()));
    assert!(
        bad[0].contains("`ssh_config`:") && bad[0].contains(":2:"),
        "{bad:?}"
    );
}

#[test]
fn a_proxy_jump_loop_in_the_ssh_config_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let ssh = dir.path().join("ssh_config");
    std::fs::write(&ssh, "Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n").unwrap();
    let p = problems(&format!(
        "[daemon]\nssh_config = \"{}\"\n[hosts.a]\n[hosts.b]\n",
        ssh.display()
    ));
    // Reported at the `ssh_config` key, where the hops came from.
    assert_eq!(
        p,
        [
            "2:14: `jump` makes a cycle: a -> b -> a",
            "2:14: `jump` makes a cycle: b -> a -> b"
        ]
    );
}

#[test]
fn a_hop_only_the_ssh_config_knows_keeps_its_own_proxy_jump_and_proxy_command() {
    let dir = tempfile::tempdir().unwrap();
    let ssh = dir.path().join("ssh_config");
    std::fs::write(
        &ssh,
        "Host db\n  ProxyJump inner-gw\n\
         Host inner-gw\n  HostName 10.1.0.1\n  ProxyJump outer-gw\n\
         Host outer-gw\n  HostName gw.example.com\n  ProxyCommand nc -x proxy:1080 %h %p\n",
    )
    .unwrap();
    let c = ok(&format!(
        "[daemon]\nssh_config = \"{}\"\n[hosts.db]\n\n[[forward]]\nhost = \"db\"\ntype = \"dynamic\"\nlisten = \"127.0.0.1:1080\"\n",
        ssh.display()
    ));
    // As ssh -J would: db through inner-gw, which is reached through outer-gw, which is
    // reached through its ProxyCommand.
    assert_eq!(c.hosts["db"].route, Route::Jump(vec!["inner-gw".into()]));
    assert_eq!(
        c.hosts["inner-gw"].route,
        Route::Jump(vec!["outer-gw".into()])
    );
    assert_eq!(c.hosts["inner-gw"].hostname, "10.1.0.1");
    assert_eq!(
        c.hosts["outer-gw"].route,
        Route::ProxyCommand("nc -x proxy:1080 %h %p".into())
    );
    let names: Vec<String> = c.active_hosts().iter().map(|h| h.name.clone()).collect();
    assert_eq!(names, ["db", "inner-gw", "outer-gw"]);

    // A loop through hops only the ssh_config knows, or back to a [hosts.*] table, is an
    // error at the `ssh_config` key, not a hang.
    std::fs::write(
        &ssh,
        "Host db\n  ProxyJump x\nHost x\n  ProxyJump y\nHost y\n  ProxyJump x\n",
    )
    .unwrap();
    let p = problems(&format!(
        "[daemon]\nssh_config = \"{}\"\n[hosts.db]\n",
        ssh.display()
    ));
    assert_eq!(p, ["2:14: `jump` makes a cycle: db -> x -> y -> x"]);
    std::fs::write(&ssh, "Host db\n  ProxyJump x\nHost x\n  ProxyJump db\n").unwrap();
    let p = problems(&format!(
        "[daemon]\nssh_config = \"{}\"\n[hosts.db]\n",
        ssh.display()
    ));
    assert_eq!(p, ["2:14: `jump` makes a cycle: db -> x -> db"]);
}

#[test]
fn socket_modes_and_the_control_socket_group() {
    let fwd = |listen: &str, extra: &str| {
        format!(
            "{HOST}[[forward]]\nhost = \"db\"\ntype = \"local\"\nlisten = \"{listen}\"\nconnect = \"127.0.0.1:5432\"\n{extra}"
        )
    };
    let c = ok(&fwd("/run/x/in.sock", ""));
    assert_eq!(c.forwards[0].socket_mode, 0o600, "owner only by default");
    let c = ok(&fwd("/run/x/in.sock", "socket_mode = \"0660\"\n"));
    assert_eq!(c.forwards[0].socket_mode, 0o660);
    assert_eq!(
        one_problem(&fwd("127.0.0.1:5432", "socket_mode = \"0660\"\n")),
        "8:15: `socket_mode` applies to a Unix-socket ingress on this machine (a local or dynamic forward listening on a path)"
    );
    for bad in ["660x", "0999", "+660", "06600", "60", "rw-rw----"] {
        let p = one_problem(&fwd(
            "/run/x/in.sock",
            &format!("socket_mode = \"{bad}\"\n"),
        ));
        assert!(
            p.starts_with("8:15: `socket_mode`") && p.contains("octal"),
            "{bad}: {p}"
        );
    }
    let c = ok("[daemon]\ncontrol_socket_group = \"root\"\n");
    assert_eq!(
        c.daemon.control_socket_group.map(|g| (g.name, g.gid)),
        Some(("root".to_string(), 0))
    );
    assert_eq!(
        one_problem("[daemon]\ncontrol_socket_group = \"no-such-group-here\"\n"),
        "2:24: `control_socket_group` \"no-such-group-here\": no such group"
    );
}

#[test]
fn algorithm_lists_take_openssh_syntax_from_the_file_and_from_defaults() {
    let c = ok(&format!(
        "[defaults]\nmacs = \"-hmac-sha2-512*\"\n{HOST}ciphers = [\"chacha20-poly1305@openssh.com\"]\n\
         host_key_algorithms = \"+ssh-rsa\"\nkex_algorithms = \"^curve25519-sha256\"\n"
    ));
    let a = &c.hosts["db"].algorithms;
    assert_eq!(a.cipher, ["chacha20-poly1305@openssh.com"]);
    assert_eq!(a.host_key.last(), Some(&"ssh-rsa"));
    assert!(c.hosts["db"].host_key_algorithms_set);
    assert_eq!(a.kex[0], "curve25519-sha256");
    assert_eq!(a.mac, ["hmac-sha2-256-etm@openssh.com", "hmac-sha2-256"]);
    let plain = ok(HOST);
    assert_eq!(
        plain.hosts["db"].algorithms,
        crate::config::Algorithms::default()
    );
    assert!(!plain.hosts["db"].host_key_algorithms_set);
    // A typo is reported at its value, naming what is supported.
    let p = one_problem(&format!(
        "{HOST}ciphers = \"aes128-ctr,aes128-gmc@openssh.com\"\n"
    ));
    assert!(
        p.starts_with(
            "3:11: `ciphers`: unknown or unsupported cipher \"aes128-gmc@openssh.com\"; supported: "
        ),
        "{p}"
    );
    assert!(one_problem(&format!("{HOST}macs = 5\n")).contains("algorithm list"));
}

#[test]
fn on_demand_hosts_their_following_hops_and_what_they_cannot_carry() {
    let c = ok("[defaults]\nidle_timeout = \"2m\"\n\n\
         [hosts.bastion]\n\
         [hosts.db]\njump = [\"bastion\"]\non_demand = true\n\
         [hosts.web]\nhostname = \"10.0.0.6\"\non_demand = true\nidle_timeout = \"90s\"\n\
         [hosts.always]\n\
         [[forward]]\nhost = \"db\"\ntype = \"local\"\nlisten = \"5432\"\nconnect = \"5432\"\n\
         [[forward]]\nhost = \"web\"\ntype = \"dynamic\"\nlisten = \"1080\"\n");
    assert_eq!(c.hosts["db"].on_demand, Some(Duration::from_secs(120)));
    assert_eq!(c.hosts["web"].on_demand, Some(Duration::from_secs(90)));
    // Used only by an on-demand host and carrying no forward: it follows db.
    assert_eq!(c.hosts["bastion"].on_demand, Some(super::HOP_LINGER));
    assert_eq!(c.hosts["always"].on_demand, None);
    // Default idle_timeout: ten minutes.
    let d = ok(&format!("{HOST}on_demand = true\n"));
    assert_eq!(d.hosts["db"].on_demand, Some(Duration::from_secs(600)));
    // A hop with a forward of its own, or an always-on user, stays up.
    let kept = ok(
        "[hosts.bastion]\n[hosts.db]\njump = [\"bastion\"]\non_demand = true\n\
         [[forward]]\nhost = \"bastion\"\ntype = \"dynamic\"\nlisten = \"1080\"\n",
    );
    assert_eq!(kept.hosts["bastion"].on_demand, None);
    let shared = ok(
        "[hosts.bastion]\n[hosts.db]\njump = [\"bastion\"]\non_demand = true\n\
         [hosts.mail]\njump = [\"bastion\"]\n",
    );
    assert_eq!(shared.hosts["bastion"].on_demand, None);

    let p = one_problem(&format!(
        "{HOST}on_demand = true\n[[forward]]\nhost = \"db\"\ntype = \"remote\"\n\
         listen = \"8080\"\nconnect = \"80\"\n"
    ));
    assert!(
        p.contains("`type`") || p.contains("remote forward needs its host's session up"),
        "{p}"
    );
    let p = one_problem(&format!("{HOST}idle_timeout = \"5m\"\n"));
    assert!(
        p.contains("`idle_timeout` applies to an on-demand host"),
        "{p}"
    );
}

#[test]
fn address_family_from_the_host_the_defaults_or_the_ssh_config() {
    let c = ok(
        "[defaults]\naddress_family = \"inet6\"\n[hosts.a]\n[hosts.b]\naddress_family = \"inet\"\n[hosts.c]\naddress_family = \"any\"\n",
    );
    let family = |n: &str| c.hosts[n].address_family;
    assert_eq!(
        (family("a"), family("b"), family("c")),
        (
            AddressFamily::Inet6,
            AddressFamily::Inet,
            AddressFamily::Any
        )
    );
    assert_eq!(ok(HOST).hosts["db"].address_family, AddressFamily::Any);
    assert_eq!(
        one_problem("[hosts.a]\naddress_family = \"ipv4\"\n"),
        "2:18: `address_family` \"ipv4\" is not valid; expected \"any\", \"inet\" or \"inet6\""
    );

    let dir = tempfile::tempdir().unwrap();
    let ssh = dir.path().join("ssh_config");
    std::fs::write(&ssh, "Host v6\n  AddressFamily inet6\n").unwrap();
    let c = ok(&format!(
        "[daemon]\nssh_config = \"{}\"\n[hosts.v6]\n[hosts.other]\n",
        ssh.display()
    ));
    assert_eq!(c.hosts["v6"].address_family, AddressFamily::Inet6);
    assert_eq!(c.hosts["other"].address_family, AddressFamily::Any);
    assert!(AddressFamily::Inet.admits(&"127.0.0.1:22".parse().unwrap()));
    assert!(!AddressFamily::Inet.admits(&"[::1]:22".parse().unwrap()));
    assert!(AddressFamily::Inet6.admits(&"[::1]:22".parse().unwrap()));
    assert!(AddressFamily::Any.admits(&"[::1]:22".parse().unwrap()));
}

#[test]
fn remote_dynamic_forwards_listen_on_the_server_and_take_no_connect() {
    let fwd = |extra: &str| {
        format!(
            "{HOST}[[forward]]\nhost = \"db\"\ntype = \"remote-dynamic\"\nlisten = \"0\"\n{extra}"
        )
    };
    let c = ok(&fwd(""));
    let f = &c.forwards[0];
    assert_eq!(
        f.spec,
        ForwardSpec::RemoteDynamic {
            listen: Endpoint::Tcp {
                host: "127.0.0.1".into(),
                port: 0
            }
        }
    );
    assert_eq!(f.name, "db:remote-dynamic:127.0.0.1:0");
    assert_eq!(f.spec.connect_text(), "-");
    assert!(f.spec.is_dynamic() && f.spec.remote_listen().is_some());
    assert_eq!(
        one_problem(&fwd("connect = \"127.0.0.1:80\"\n")),
        "7:11: a remote-dynamic forward takes no `connect`: each SOCKS or HTTP client names its own destination"
    );
    assert_eq!(
        one_problem(&fwd("allow_public = false\n")),
        "7:16: `allow_public` applies to local and dynamic forwards; an ingress on the server is governed by the server's GatewayPorts"
    );
    assert_eq!(
        one_problem(&fwd("probe_interval = \"30s\"\n")),
        "7:18: `probe_interval` applies to local and remote forwards: a remote-dynamic one has no egress of its own"
    );
    let on_demand = fwd("").replace("\"10.0.0.5\"\n", "\"10.0.0.5\"\non_demand = true\n");
    assert_eq!(
        one_problem(&on_demand),
        "6:8: a remote-dynamic forward needs its host's session up all the time (the server listens only while it lasts), but host `db` is `on_demand`"
    );
    // Two on one server address clash, as remote ones do; port 0 does not.
    let twice = format!(
        "{}{}",
        fwd(""),
        "[[forward]]\nname = \"b\"\nhost = \"db\"\ntype = \"remote-dynamic\"\nlisten = \"0\"\n"
    );
    assert_eq!(ok(&twice).forwards.len(), 2);
    let clash = fwd("").replace("\"0\"", "\"1080\"")
        + "[[forward]]\nname = \"b\"\nhost = \"db\"\ntype = \"remote\"\nlisten = \"1080\"\nconnect = \"80\"\n";
    assert!(one_problem(&clash).contains("is already the ingress of forward"));
}
