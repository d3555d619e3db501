//! Jump chains: one supervisor per host *and path to it*, so that a hop's session is shared
//! by every host that jumps through it (and by the hop's own forwards), and each session runs
//! over a `direct-tcpip` channel of the previous hop's. A dead hop ends the sessions riding on
//! it; they wait for it to come back (a channel is opened only on a live hop session).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::HostHandle;
use super::supervisor::{Connector, SshConnector};
use crate::config::{Config, HostConfig, Route};

/// A supervisor's identity: the host, and the hops before it when that is not the host's
/// own route (an inner hop of someone else's chain). A host's own supervisor keeps its
/// identity when its route changes, so that its forwards keep their handle.
type Key = (String, Option<Vec<String>>);

/// A running supervisor and the hop it was told to reach its host through.
struct Made {
    handle: HostHandle,
    upstream: Option<HostHandle>,
}

/// The host supervisors a configuration needs.
pub struct Supervisors {
    made: BTreeMap<Key, Made>,
    connector: Arc<dyn Connector>,
}

/// What [`Supervisors::update`] did, by supervisor name (`NAME`, or `NAME via HOP,...`): the
/// one account of a reload's host changes, which `warren reload` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostChanges {
    /// Supervisors started (their hosts connect).
    pub started: Vec<String>,
    /// Supervisors stopped (their sessions disconnected).
    pub stopped: Vec<String>,
    /// Supervisors kept with new settings or a new hop (their sessions replaced).
    pub reconnected: Vec<String>,
}

impl Supervisors {
    /// Starts the supervisors that the forwards of `config` need.
    pub async fn start(config: &Config, tracker: &TaskTracker, root: &CancellationToken) -> Self {
        Self::start_with(Arc::new(SshConnector), config, tracker, root).await
    }

    /// Like [`Supervisors::start`], their sessions brought up by `connector`.
    pub async fn start_with(
        connector: Arc<dyn Connector>,
        config: &Config,
        tracker: &TaskTracker,
        root: &CancellationToken,
    ) -> Self {
        let mut s = Self {
            made: BTreeMap::new(),
            connector,
        };
        s.update(config, tracker, root).await;
        s
    }

    /// Brings the supervisors in line with `config`: one whose settings and hop are
    /// unchanged is left alone; one whose settings or hop changed gets the new ones and
    /// reconnects (its handle, and so its forwards, stay); missing ones start; the ones no
    /// longer needed stop. Returns what it did.
    pub async fn update(
        &mut self,
        config: &Config,
        tracker: &TaskTracker,
        root: &CancellationToken,
    ) -> HostChanges {
        let mut b = Builder {
            config,
            tracker,
            root,
            connector: &self.connector,
            old: std::mem::take(&mut self.made),
            made: BTreeMap::new(),
            reconfigure: Vec::new(),
            started: Vec::new(),
        };
        let mut names: Vec<&str> = config.forwards.iter().map(|f| f.host.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let path = b.own_path(name);
            b.ensure(name, path, 0);
        }
        let Builder {
            old,
            made,
            reconfigure,
            started,
            ..
        } = b;
        let mut changes = HostChanges {
            started,
            ..HostChanges::default()
        };
        // New settings first: a session moving to another hop is told before its old hop
        // goes, so that it reconnects as asked instead of reporting a lost session.
        for (handle, config, upstream) in reconfigure {
            changes.reconnected.push(config.name.clone());
            handle.reconfigure(config, upstream).await;
        }
        for gone in old.into_values() {
            changes.stopped.push(gone.handle.config().name.clone());
            gone.handle.stop();
        }
        self.made = made;
        for names in [
            &mut changes.started,
            &mut changes.stopped,
            &mut changes.reconnected,
        ] {
            names.sort();
        }
        changes
    }

    /// Every supervisor by its name (`NAME`, or `NAME via HOP,...` for an inner hop).
    pub fn by_name(&self) -> BTreeMap<String, HostHandle> {
        self.made
            .values()
            .map(|m| (m.handle.config().name.clone(), m.handle.clone()))
            .collect()
    }
}

struct Builder<'a> {
    config: &'a Config,
    tracker: &'a TaskTracker,
    root: &'a CancellationToken,
    connector: &'a Arc<dyn Connector>,
    /// Running before this update; what is left at the end is stopped.
    old: BTreeMap<Key, Made>,
    made: BTreeMap<Key, Made>,
    /// Kept supervisors that get new settings or a new hop.
    reconfigure: Vec<(HostHandle, Arc<HostConfig>, Option<HostHandle>)>,
    /// Names of the supervisors started.
    started: Vec<String>,
}

impl Builder<'_> {
    fn own_path(&self, name: &str) -> Vec<String> {
        match self.config.hosts.get(name).map(|h| &h.route) {
            Some(Route::Jump(hops)) => hops.clone(),
            _ => Vec::new(),
        }
    }

    fn ensure(&mut self, name: &str, path: Vec<String>, depth: usize) -> Option<HostHandle> {
        let own = path == self.own_path(name);
        let key: Key = (name.to_string(), (!own).then(|| path.clone()));
        if let Some(m) = self.made.get(&key) {
            return Some(m.handle.clone());
        }
        // Validation rejects cycles; the bound only guards against a bug turning into a hang.
        if depth > 64 {
            return None;
        }
        let base = self.config.hosts.get(name)?;
        let (config, upstream) = match path.split_last() {
            None => (base.clone(), None),
            Some((last, before)) => {
                let up_path = if before.is_empty() {
                    self.own_path(last)
                } else {
                    before.to_vec()
                };
                let upstream = self.ensure(last, up_path, depth + 1)?;
                let mut cfg: HostConfig = (**base).clone();
                cfg.route = Route::Jump(path.clone());
                if !own {
                    cfg.name = format!("{name} via {}", path.join(","));
                }
                (Arc::new(cfg), Some(upstream))
            }
        };
        let handle = match self.old.remove(&key) {
            Some(old) => {
                let same_hop = match (&old.upstream, &upstream) {
                    (None, None) => true,
                    (Some(a), Some(b)) => a.same(b),
                    _ => false,
                };
                if *old.handle.config() != *config || !same_hop {
                    self.reconfigure
                        .push((old.handle.clone(), config, upstream.clone()));
                }
                old.handle
            }
            None => {
                self.started.push(config.name.clone());
                HostHandle::spawn_with(
                    self.connector.clone(),
                    config,
                    upstream.clone(),
                    self.tracker,
                    self.root.child_token(),
                )
            }
        };
        self.made.insert(
            key,
            Made {
                handle: handle.clone(),
                upstream,
            },
        );
        Some(handle)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Env;
    use crate::session::supervisor::Attempt;

    /// Supervisors whose attempts never finish: what they are and what changes is all there
    /// is to see, and nothing touches the network.
    struct Never;

    impl Connector for Never {
        fn connect<'a>(
            &'a self,
            _: &'a HostConfig,
            _: Option<&'a HostHandle>,
            _: super::super::router::SharedRouter,
        ) -> Attempt<'a> {
            Box::pin(std::future::pending())
        }
    }

    fn config(hosts: &str, forwards: &[(&str, &str)]) -> Config {
        let mut src = format!(
            "[hosts.a]\nhostname = \"a.example\"\nuser = \"u\"\n\n\
             [hosts.b]\nhostname = \"b.example\"\nuser = \"u\"\n\n\
             [hosts.c]\nhostname = \"c.example\"\nuser = \"u\"\njump = [\"b\"]\n\n{hosts}"
        );
        for (i, (name, host)) in forwards.iter().enumerate() {
            src.push_str(&format!(
                "[[forward]]\nname = \"{name}\"\nhost = \"{host}\"\ntype = \"local\"\n\
                 listen = \"127.0.0.1:{}\"\nconnect = \"db:5432\"\n\n",
                7000 + i
            ));
        }
        Config::parse(&src, Path::new("/etc/warren/w.toml"), &Env::from_process())
            .unwrap_or_else(|e| panic!("{e}\n{src}"))
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_string()).collect()
    }

    /// What an update from `old` to `new` reports.
    async fn changes(old: &Config, new: &Config) -> HostChanges {
        let (tracker, root) = (TaskTracker::new(), CancellationToken::new());
        let mut s = Supervisors::start_with(Arc::new(Never), old, &tracker, &root).await;
        let changes = s.update(new, &tracker, &root).await;
        root.cancel();
        changes
    }

    #[tokio::test]
    async fn what_an_update_does_is_what_it_reports() {
        let base = config("", &[("A", "a"), ("C", "a")]);
        assert_eq!(changes(&base, &base).await, HostChanges::default());
        // A forward moves to a host behind a jump: the hop and the host start.
        let moved = config("", &[("A", "a"), ("C", "c")]);
        assert_eq!(
            changes(&base, &moved).await,
            HostChanges {
                started: names(&["b", "c"]),
                ..HostChanges::default()
            }
        );
        // The last forward of a host goes: the host stops.
        assert_eq!(
            changes(&base, &config("", &[])).await,
            HostChanges {
                stopped: names(&["a"]),
                ..HostChanges::default()
            }
        );
        // A changed user reconnects only that host; a host no forward uses may change freely.
        let unused =
            |user: &str| format!("[hosts.unused]\nhostname = \"x.example\"\nuser = \"{user}\"\n\n");
        let before = config(&unused("u"), &[("A", "a"), ("Z", "c")]);
        let mut after = config(&unused("v"), &[("A", "a"), ("Z", "c")]);
        let mut a = (*after.hosts["a"]).clone();
        a.user = "v".into();
        after.hosts.insert("a".into(), Arc::new(a));
        assert_eq!(
            changes(&before, &after).await,
            HostChanges {
                reconnected: names(&["a"]),
                ..HostChanges::default()
            }
        );
        // A hop's keepalive changes: the hop reconnects; what rides on it keeps its
        // supervisor (it follows its hop's session).
        let mut hop = before.clone();
        let mut b = (*hop.hosts["b"]).clone();
        b.keepalive_interval = std::time::Duration::from_secs(3);
        hop.hosts.insert("b".into(), Arc::new(b));
        assert_eq!(
            changes(&before, &hop).await,
            HostChanges {
                reconnected: names(&["b"]),
                ..HostChanges::default()
            }
        );
    }
}
