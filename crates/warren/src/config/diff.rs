//! What a reload changes in the forwards: the difference between the running configuration
//! and a new one, as a pure function of the two. The daemon applies it; which host sessions
//! start, stop or reconnect is decided (and reported) by the supervisors, from the new
//! configuration alone (`session::Supervisors::update`).

use std::collections::BTreeMap;

use super::{Config, ForwardConfig};

/// The difference between two configurations, by name, each list sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Forwards only the old file has: stopped, their connections closed.
    pub forwards_removed: Vec<String>,
    /// Forwards only the new file has: started.
    pub forwards_added: Vec<String>,
    /// Forwards in both files with other settings: stopped, then started anew.
    pub forwards_changed: Vec<String>,
    /// Settings that take effect only when the daemon restarts.
    pub needs_restart: Vec<String>,
}

impl Plan {
    /// True when the new file changes no forward.
    pub fn is_empty(&self) -> bool {
        self.forwards_removed.is_empty()
            && self.forwards_added.is_empty()
            && self.forwards_changed.is_empty()
    }
}

/// The difference between the running `old` and the new `new` configuration.
pub fn diff(old: &Config, new: &Config) -> Plan {
    let mut plan = Plan::default();

    let old_fwd: BTreeMap<&str, &ForwardConfig> =
        old.forwards.iter().map(|f| (f.name.as_str(), f)).collect();
    let new_fwd: BTreeMap<&str, &ForwardConfig> =
        new.forwards.iter().map(|f| (f.name.as_str(), f)).collect();
    for (name, f) in &old_fwd {
        match new_fwd.get(name) {
            None => plan.forwards_removed.push((*name).to_string()),
            Some(g) if g != f => plan.forwards_changed.push((*name).to_string()),
            Some(_) => {}
        }
    }
    plan.forwards_added = new_fwd
        .keys()
        .filter(|n| !old_fwd.contains_key(*n))
        .map(|n| (*n).to_string())
        .collect();

    if old.daemon.control_socket != new.daemon.control_socket {
        plan.needs_restart.push(format!(
            "control_socket (still {})",
            old.daemon.control_socket.display()
        ));
    }
    if old.daemon.control_socket_group != new.daemon.control_socket_group {
        let still = old
            .daemon
            .control_socket_group
            .as_ref()
            .map_or("none".to_string(), |g| g.name.clone());
        plan.needs_restart
            .push(format!("control_socket_group (still {still})"));
    }
    if old.daemon.metrics_listen != new.daemon.metrics_listen {
        let still = old
            .daemon
            .metrics_listen
            .as_ref()
            .map_or("off".to_string(), ToString::to_string);
        plan.needs_restart
            .push(format!("metrics_listen (still {still})"));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;
    use std::path::{Path, PathBuf};

    fn env() -> Env {
        Env {
            home: Some(PathBuf::from("/home/u")),
            user: "u".into(),
            is_root: false,
            runtime_directory: None,
            xdg_runtime_dir: None,
            xdg_config_home: None,
        }
    }

    fn parse(src: &str) -> Config {
        Config::parse(src, Path::new("/etc/warren/warren.toml"), &env())
            .unwrap_or_else(|e| panic!("{e}\n{src}"))
    }

    fn config(body: &str) -> Config {
        parse(&format!(
            "[daemon]\ncontrol_socket = \"/run/w.sock\"\n\n\
             [hosts.a]\nhostname = \"a.example\"\nuser = \"u\"\n\n\
             [hosts.b]\nhostname = \"b.example\"\nuser = \"u\"\n\n\
             [hosts.c]\nhostname = \"c.example\"\nuser = \"u\"\njump = [\"b\"]\n\n{body}"
        ))
    }

    fn fwd(name: &str, host: &str, listen: &str) -> String {
        format!(
            "[[forward]]\nname = \"{name}\"\nhost = \"{host}\"\ntype = \"local\"\n\
             listen = \"{listen}\"\nconnect = \"db:5432\"\n\n"
        )
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn table() {
        let base = fwd("A", "a", "127.0.0.1:7001") + &fwd("C", "a", "127.0.0.1:7003");
        struct Case {
            what: &'static str,
            new: String,
            expect: Plan,
        }
        let cases = [
            Case {
                what: "the same file changes nothing",
                new: base.clone(),
                expect: Plan::default(),
            },
            Case {
                what: "add B, remove C, keep A",
                new: fwd("A", "a", "127.0.0.1:7001") + &fwd("B", "a", "127.0.0.1:7002"),
                expect: Plan {
                    forwards_removed: names(&["C"]),
                    forwards_added: names(&["B"]),
                    ..Plan::default()
                },
            },
            Case {
                what: "a forward's listen changes: restarted",
                new: fwd("A", "a", "127.0.0.1:7001") + &fwd("C", "a", "127.0.0.1:7333"),
                expect: Plan {
                    forwards_changed: names(&["C"]),
                    ..Plan::default()
                },
            },
            Case {
                what: "a forward moves to another host: changed",
                new: fwd("A", "a", "127.0.0.1:7001") + &fwd("C", "c", "127.0.0.1:7003"),
                expect: Plan {
                    forwards_changed: names(&["C"]),
                    ..Plan::default()
                },
            },
            Case {
                what: "every forward goes",
                new: String::new(),
                expect: Plan {
                    forwards_removed: names(&["A", "C"]),
                    ..Plan::default()
                },
            },
            Case {
                what: "file order alone changes nothing",
                new: fwd("C", "a", "127.0.0.1:7003") + &fwd("A", "a", "127.0.0.1:7001"),
                expect: Plan::default(),
            },
        ];
        let old = config(&base);
        for case in cases {
            let got = diff(&old, &config(&case.new));
            assert_eq!(got, case.expect, "{}", case.what);
        }
    }

    #[test]
    fn daemon_settings_that_wait_for_a_restart() {
        let old = config("");
        let mut new = old.clone();
        new.daemon.control_socket = "/run/other.sock".into();
        new.daemon.shutdown_grace = std::time::Duration::from_secs(1);
        let plan = diff(&old, &new);
        assert!(plan.is_empty());
        assert_eq!(plan.needs_restart, ["control_socket (still /run/w.sock)"]);
        new.daemon.control_socket = old.daemon.control_socket.clone();
        new.daemon.control_socket_group = Some(crate::config::SocketGroup {
            name: "ops".into(),
            gid: 1000,
        });
        assert_eq!(
            diff(&old, &new).needs_restart,
            ["control_socket_group (still none)"]
        );
        new.daemon.control_socket_group = None;
        new.daemon.metrics_listen = Some(crate::config::BindAddr::Tcp(
            "127.0.0.1:9187".parse().unwrap(),
        ));
        assert_eq!(
            diff(&old, &new).needs_restart,
            ["metrics_listen (still off)"]
        );
    }
}
