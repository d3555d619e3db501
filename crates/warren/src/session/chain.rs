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

/// Starts the supervisors that the forwards of `config` need; returns them by name. A host
/// reached by a path other than its own `jump` (an inner hop of someone else's chain) is
/// listed as `NAME via HOP,...`.
pub fn spawn_hosts(
    config: &Config,
    tracker: &TaskTracker,
    root: &CancellationToken,
) -> BTreeMap<String, HostHandle> {
    let mut b = Builder {
        config,
        tracker,
        root,
        made: BTreeMap::new(),
    };
    let mut names: Vec<&str> = config.forwards.iter().map(|f| f.host.as_str()).collect();
    names.dedup();
    for name in names {
        let path = b.own_path(name);
        b.ensure(name, path, 0);
    }
    b.made
        .into_values()
        .map(|h| (h.config().name.clone(), h))
        .collect()
}

struct Builder<'a> {
    config: &'a Config,
    tracker: &'a TaskTracker,
    root: &'a CancellationToken,
    /// By (host, path of hops before it).
    made: BTreeMap<(String, Vec<String>), HostHandle>,
}

impl Builder<'_> {
    fn own_path(&self, name: &str) -> Vec<String> {
        match self.config.hosts.get(name).map(|h| &h.route) {
            Some(Route::Jump(hops)) => hops.clone(),
            _ => Vec::new(),
        }
    }

    fn ensure(&mut self, name: &str, path: Vec<String>, depth: usize) -> Option<HostHandle> {
        let key = (name.to_string(), path.clone());
        if let Some(h) = self.made.get(&key) {
            return Some(h.clone());
        }
        // Validation rejects cycles; the bound only guards against a bug turning into a hang.
        if depth > 64 {
            return None;
        }
        let base = self.config.hosts.get(name)?;
        let own = path == self.own_path(name);
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
        let handle = HostHandle::spawn_via(config, upstream, self.tracker, self.root.child_token());
        self.made.insert(key, handle.clone());
        Some(handle)
    }
}
