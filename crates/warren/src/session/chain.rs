//! Jump chains: one supervisor per host *and path to it*, so that a hop's session is shared
//! by every host that jumps through it (and by the hop's own forwards), and each session runs
//! over a `direct-tcpip` channel of the previous hop's. A dead hop ends the sessions riding on
//! it; they wait for it to come back (a channel is opened only on a live hop session).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::HostHandle;
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
#[derive(Default)]
pub struct Supervisors {
    made: BTreeMap<Key, Made>,
}

impl Supervisors {
    /// Starts the supervisors that the forwards of `config` need.
    pub async fn start(config: &Config, tracker: &TaskTracker, root: &CancellationToken) -> Self {
        let mut s = Self::default();
        s.update(config, tracker, root).await;
        s
    }

    /// Brings the supervisors in line with `config`: one whose settings and hop are
    /// unchanged is left alone; one whose settings or hop changed gets the new ones and
    /// reconnects (its handle, and so its forwards, stay); missing ones start; the ones no
    /// longer needed stop.
    pub async fn update(
        &mut self,
        config: &Config,
        tracker: &TaskTracker,
        root: &CancellationToken,
    ) {
        let mut b = Builder {
            config,
            tracker,
            root,
            old: std::mem::take(&mut self.made),
            made: BTreeMap::new(),
            reconfigure: Vec::new(),
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
            ..
        } = b;
        // New settings first: a session moving to another hop is told before its old hop
        // goes, so that it reconnects as asked instead of reporting a lost session.
        for (handle, config, upstream) in reconfigure {
            handle.reconfigure(config, upstream).await;
        }
        for gone in old.into_values() {
            gone.handle.stop();
        }
        self.made = made;
    }

    /// Every supervisor by its name (`NAME`, or `NAME via HOP,...` for an inner hop).
    pub fn by_name(&self) -> BTreeMap<String, HostHandle> {
        self.made
            .values()
            .map(|m| (m.handle.config().name.clone(), m.handle.clone()))
            .collect()
    }
}

/// Starts the supervisors that the forwards of `config` need; returns them by name. A host
/// reached by a path other than its own `jump` (an inner hop of someone else's chain) is
/// listed as `NAME via HOP,...`.
pub async fn spawn_hosts(
    config: &Config,
    tracker: &TaskTracker,
    root: &CancellationToken,
) -> BTreeMap<String, HostHandle> {
    Supervisors::start(config, tracker, root).await.by_name()
}

struct Builder<'a> {
    config: &'a Config,
    tracker: &'a TaskTracker,
    root: &'a CancellationToken,
    /// Running before this update; what is left at the end is stopped.
    old: BTreeMap<Key, Made>,
    made: BTreeMap<Key, Made>,
    /// Kept supervisors that get new settings or a new hop.
    reconfigure: Vec<(HostHandle, Arc<HostConfig>, Option<HostHandle>)>,
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
            None => HostHandle::spawn(
                config,
                upstream.clone(),
                self.tracker,
                self.root.child_token(),
            ),
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
