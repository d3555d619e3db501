//! What each host resolves to, for a table of config trees.

use super::*;

struct Case {
    name: &'static str,
    files: &'static [(&'static str, &'static str)],
    /// Host name and its expected result (see [`expected`]).
    hosts: &'static [(&'static str, &'static str)],
}

const CASES: &[Case] = &[
    Case {
        name: "options before the first Host apply to every host and win",
        files: &[(
            "home/.ssh/config",
            "# global\nUser global\nPort 2200\n\nHost a\n  User alice\n  HostName a.example\n",
        )],
        hosts: &[
            ("a", "user global\nport 2200\nhostname a.example"),
            ("b", "user global\nport 2200"),
        ],
    },
    Case {
        name: "first match wins across blocks; Host * defaults come last",
        files: &[(
            "home/.ssh/config",
            "Host web\n  HostName web.internal\n  User deploy\n\
             Host web db\n  User other\n  Port 2201\n\
             Host *\n  User fallback\n  Port 22\n  ServerAliveInterval 30\n",
        )],
        hosts: &[
            (
                "web",
                "hostname web.internal\nuser deploy\nport 2201\nserveraliveinterval 30",
            ),
            ("db", "user other\nport 2201\nserveraliveinterval 30"),
            ("zzz", "user fallback\nport 22\nserveraliveinterval 30"),
        ],
    },
    Case {
        name: "negation, ? and case-insensitive patterns",
        files: &[(
            "home/.ssh/config",
            "Host *.Example.com !bastion.example.com\n  User inner\n\
             Host !nothing\n  Port 1\n\
             Host db?\n  Port 5432\n\
             Host *\n  User outer\n",
        )],
        hosts: &[
            ("a.example.com", "user inner"),
            ("A.EXAMPLE.COM", "user inner"),
            ("bastion.example.com", "user outer"),
            ("db1", "user outer\nport 5432"),
            ("db10", "user outer"),
        ],
    },
    Case {
        name: "Keyword=value, spacing, keyword case, comments, CRLF",
        files: &[(
            "home/.ssh/config",
            "HOSTNAME=h.example\r\n\tuser = bob\r\nPort= 2022   # trailing comment\r\n\
             port =2023\r\nidentityfile=~/.ssh/k\r\nServerAliveCountMax\t=\t5\r\n",
        )],
        hosts: &[(
            "x",
            "hostname h.example\nuser bob\nport 2022\nidentityfile $HOME/.ssh/k\n\
             serveralivecountmax 5",
        )],
    },
    Case {
        name: "quoted values with spaces",
        files: &[(
            "home/.ssh/config",
            "Host \"q\"\n  IdentityFile \"~/my keys/id one\"\n  \
             UserKnownHostsFile \"~/known hosts\" /etc/kh2\n  User \"a b\"\n",
        )],
        hosts: &[(
            "q",
            "user a b\nidentityfile $HOME/my keys/id one\n\
             userknownhostsfile $HOME/known hosts\nuserknownhostsfile /etc/kh2",
        )],
    },
    Case {
        name: "ProxyJump lists, ProxyCommand whole, none, and their shared slot",
        files: &[(
            "home/.ssh/config",
            "Host j\n  ProxyJump  ops@j1.example:2222, j2 # via two hops\n\
             Host c\n  ProxyCommand ssh -W \"%h:%p\" bastion  2>/dev/null\n\
             Host direct\n  ProxyJump NONE\n\
             Host nocmd\n  ProxyCommand none\n\
             Host *\n  ProxyJump fallback\n  ProxyCommand nc %h %p\n",
        )],
        hosts: &[
            ("j", "proxyjump ops@j1.example:2222,j2"),
            ("c", "proxycommand ssh -W \"%h:%p\" bastion  2>/dev/null"),
            ("direct", ""),
            ("nocmd", ""),
            ("other", "proxyjump fallback"),
        ],
    },
    Case {
        name: "Match host (after HostName), originalhost, all, negation, unsupported",
        files: &[(
            "home/.ssh/config",
            "Host short\n  HostName %h.example.com\n\
             Match host *.example.com\n  User matched\n\
             Match originalhost short\n  Port 2222\n\
             Match exec \"true\"\n  User never\n\
             Match !host *.example.com final\n  StrictHostKeyChecking accept-new\n\
             Match user root\n  Port 1\n\
             Match all\n  ConnectTimeout 1m30s\n",
        )],
        hosts: &[
            (
                "short",
                "hostname short.example.com\nuser matched\nport 2222\nconnecttimeout 90",
            ),
            ("b.example.com", "user matched\nconnecttimeout 90"),
            ("zzz", "stricthostkeychecking accept-new\nconnecttimeout 90"),
        ],
    },
    Case {
        name: "Include: absolute, relative to ~/.ssh, ~/, glob, nested, missing",
        files: &[
            (
                "home/.ssh/config",
                "Include $ROOT/etc/abs.conf\nInclude config.d/*.conf\n\
                 Include ~/.ssh/tilde.conf nowhere.conf $ROOT/none/*\nInclude ~/.ssh/config.d\n\
                 Host *\n  User default\n",
            ),
            ("etc/abs.conf", "Host abs\n  User from-abs\n"),
            (
                "home/.ssh/config.d/10-a.conf",
                "Host globbed\n  User from-10\n",
            ),
            (
                "home/.ssh/config.d/20-b.conf",
                "Host globbed\n  User from-20\n  Port 20\n",
            ),
            ("home/.ssh/config.d/notes.txt", "Host globbed\n  Port 99\n"),
            (
                "home/.ssh/config.d/.hidden.conf",
                "Host globbed\n  Port 98\n",
            ),
            (
                "home/.ssh/tilde.conf",
                "Host tilde\n  Include nested/one.conf\n",
            ),
            ("home/.ssh/nested/one.conf", "Include nested/two.conf\n"),
            ("home/.ssh/nested/two.conf", "User from-two\n"),
        ],
        hosts: &[
            ("abs", "user from-abs"),
            ("globbed", "user from-10\nport 20"),
            ("tilde", "user from-two"),
            ("other", "user default"),
        ],
    },
    Case {
        name: "an Include inside a block applies only when the block matches",
        files: &[
            (
                "home/.ssh/config",
                "Host special\n  Include special.conf\n  Port 7\nHost *\n  User default\n",
            ),
            // Its `Host other` must not leak out: for "other" the Include is never applied,
            // and for "special" the block is active again after the Include.
            (
                "home/.ssh/special.conf",
                "User from-include\nHost other\n  Port 9\n",
            ),
        ],
        hosts: &[
            ("special", "user from-include\nport 7"),
            ("other", "user default"),
        ],
    },
    Case {
        name: "IdentityFile and CertificateFile accumulate in order, once each",
        files: &[(
            "home/.ssh/config",
            "Host a\n  IdentityFile ~/.ssh/id_a\n  IdentityFile /keys/id_%h_%r_%p\n  \
             CertificateFile ~/.ssh/id_a-cert.pub\n  User ops\n\
             Host *\n  IdentityFile ~/.ssh/id_a\n  IdentityFile %d/.ssh/id_default\n  \
             IdentityFile ~/.ssh/id_%u\n  CertificateFile ~/.ssh/other-cert.pub\n",
        )],
        hosts: &[
            (
                "a",
                "user ops\nidentityfile $HOME/.ssh/id_a\nidentityfile /keys/id_a_ops_22\n\
                 identityfile $HOME/.ssh/id_default\nidentityfile $HOME/.ssh/id_%u\n\
                 certificatefile $HOME/.ssh/id_a-cert.pub\n\
                 certificatefile $HOME/.ssh/other-cert.pub",
            ),
            (
                "b",
                "identityfile $HOME/.ssh/id_a\nidentityfile $HOME/.ssh/id_default\n\
                 identityfile $HOME/.ssh/id_%u\ncertificatefile $HOME/.ssh/other-cert.pub",
            ),
        ],
    },
    Case {
        name: "unknown keywords are ignored, values unchecked",
        files: &[(
            "home/.ssh/config",
            "Frobnicate yes\nPermitLocalCommand yes\nCompression maybe\nBogus\n\
             IgnoreUnknown Frob*\nHost a\n  UseKeychain yes\n  User u\n",
        )],
        hosts: &[("a", "user u")],
    },
    Case {
        name: "host keys, keepalives, timeouts and known hosts",
        files: &[(
            "home/.ssh/config",
            "Host yes\n  StrictHostKeyChecking YES\nHost ask\n  StrictHostKeyChecking ask\n\
             Host off\n  StrictHostKeyChecking off\nHost no\n  StrictHostKeyChecking no\n\
             Host new\n  StrictHostKeyChecking accept-new\n  UserKnownHostsFile ~/kh\n\
             Host *\n  ServerAliveInterval 2m\n  ServerAliveCountMax 3\n  ConnectTimeout none\n  \
             ConnectTimeout 10\n  UserKnownHostsFile none\n  UserKnownHostsFile ~/ignored\n",
        )],
        hosts: &[
            (
                "yes",
                "stricthostkeychecking yes\nuserknownhostsfile none\n\
                serveraliveinterval 120\nserveralivecountmax 3\nconnecttimeout 10",
            ),
            (
                "ask",
                "stricthostkeychecking yes\nuserknownhostsfile none\n\
                serveraliveinterval 120\nserveralivecountmax 3\nconnecttimeout 10",
            ),
            (
                "off",
                "stricthostkeychecking off\nuserknownhostsfile none\n\
                serveraliveinterval 120\nserveralivecountmax 3\nconnecttimeout 10",
            ),
            (
                "no",
                "stricthostkeychecking off\nuserknownhostsfile none\n\
                serveraliveinterval 120\nserveralivecountmax 3\nconnecttimeout 10",
            ),
            (
                "new",
                "stricthostkeychecking accept-new\nuserknownhostsfile $HOME/kh\n\
                serveraliveinterval 120\nserveralivecountmax 3\nconnecttimeout 10",
            ),
        ],
    },
    Case {
        name: "HostName tokens",
        files: &[(
            "home/.ssh/config",
            "Host *.lan\n  HostName %h.example.com\nHost pct\n  HostName 100%%-%h\n",
        )],
        hosts: &[
            ("nas.lan", "hostname nas.lan.example.com"),
            ("pct", "hostname 100%-pct"),
        ],
    },
    Case {
        name: "forwards of every matching block add up; ExitOnForwardFailure, AddressFamily",
        files: &[(
            "home/.ssh/config",
            "Host bastion
  LocalForward 5432 db:5432
  LocalForward [::1]:6000 [fd00::1]:6000
             \x20 RemoteForward 127.0.0.1:9000 localhost:3000
  DynamicForward 1080
             \x20 LocalForward /tmp/l.sock /run/pg.sock
  ExitOnForwardFailure yes
             \x20 AddressFamily INET
             Host *
  LocalForward 5432 db:5432
  LocalForward 7000 other:7000
             \x20 ExitOnForwardFailure no
",
        )],
        hosts: &[
            (
                "bastion",
                "localforward 5432:db:5432
localforward [::1]:6000:[fd00::1]:6000
                 remoteforward 127.0.0.1:9000:localhost:3000
dynamicforward 1080
                 localforward /tmp/l.sock:/run/pg.sock
exitonforwardfailure yes
                 addressfamily inet
localforward 7000:other:7000",
            ),
            (
                "web",
                "localforward 5432:db:5432
localforward 7000:other:7000
exitonforwardfailure no",
            ),
        ],
    },
];

#[test]
fn table() {
    for case in CASES {
        let tree = Tree::new(case.files);
        let config = match tree.load() {
            Ok(c) => c,
            Err(e) => panic!("{}: {e}", case.name),
        };
        for (host, want) in case.hosts {
            assert_eq!(
                config.resolve(host),
                expected(want, &tree.home()),
                "{}: host {host}",
                case.name
            );
        }
    }
}

#[test]
fn time_suffixes() {
    for (text, secs) in [
        ("0", 0),
        ("45", 45),
        ("45s", 45),
        ("2M", 120),
        ("1h30m", 5400),
        ("1h30", 3630),
        ("1d", 86_400),
        ("1w", 604_800),
    ] {
        let c = SshConfig::parse(
            &format!("ServerAliveInterval {text}\n"),
            Path::new("/x/config"),
            None,
        )
        .unwrap();
        assert_eq!(
            c.resolve("h").server_alive_interval,
            Some(Duration::from_secs(secs)),
            "{text}"
        );
    }
}
