//! The daemon: binds every ingress, starts one supervisor per host and every forward, applies
//! reloads by difference, and shuts down in order (stop accepting, let connections finish,
//! cut the rest, disconnect sessions). Everything runs under one root cancellation token.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::config::{Config, Plan};
use crate::control::ControlState;
use crate::forward::lifecycle::{Forwards, Ingress};
pub use crate::forward::lifecycle::{Inherited, StartError};
use crate::forward::{ForwardRuntime, ProbeState, Readiness};
use crate::session::{HostChanges, HostHandle, HostState, Supervisors};

/// What a reload did: the forwards the difference named, and the host changes the
/// supervisors made (the one account of those).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Forwards stopped, their connections closed.
    pub forwards_removed: Vec<String>,
    /// Forwards started.
    pub forwards_added: Vec<String>,
    /// Forwards stopped and started anew with other settings.
    pub forwards_changed: Vec<String>,
    /// Hosts (supervisors) started.
    pub hosts_started: Vec<String>,
    /// Hosts (supervisors) stopped.
    pub hosts_stopped: Vec<String>,
    /// Hosts whose sessions were replaced for new settings or a new hop.
    pub hosts_reconnected: Vec<String>,
    /// Settings that take effect only when the daemon restarts.
    pub needs_restart: Vec<String>,
}

impl Reloaded {
    fn from(plan: Plan, hosts: HostChanges) -> Self {
        Self {
            forwards_removed: plan.forwards_removed,
            forwards_added: plan.forwards_added,
            forwards_changed: plan.forwards_changed,
            hosts_started: hosts.started,
            hosts_stopped: hosts.stopped,
            hosts_reconnected: hosts.reconnected,
            needs_restart: plan.needs_restart,
        }
    }

    /// One line per change, for logs and `warren reload`.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut each = |what: &str, names: &[String]| {
            out.extend(names.iter().map(|n| format!("{what} {n}")));
        };
        each("forward removed:", &self.forwards_removed);
        each("forward changed, restarted:", &self.forwards_changed);
        each("forward added:", &self.forwards_added);
        each("host disconnected:", &self.hosts_stopped);
        each(
            "host reconnected with new settings:",
            &self.hosts_reconnected,
        );
        each("host connected:", &self.hosts_started);
        for what in &self.needs_restart {
            out.push(format!("not applied until restart: {what}"));
        }
        if out.is_empty() {
            out.push("no changes".into());
        }
        out
    }
}

/// A running daemon.
pub struct Daemon {
    config: Config,
    root: CancellationToken,
    tasks: TaskTracker,
    supervisors: Supervisors,
    hosts: BTreeMap<String, HostHandle>,
    forwards: Forwards,
    published: watch::Sender<ControlState>,
}

impl Daemon {
    /// Binds every ingress and starts everything; returns once all ingresses accept.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        Self::start_with(config, Inherited::new()).await
    }

    /// Like [`Daemon::start`], adopting already-bound TCP listeners for the ingresses at
    /// their addresses (how tests hand over ports they bound to port 0).
    pub async fn start_with(config: &Config, mut inherited: Inherited) -> Result<Self, StartError> {
        // Bind first: a failure must leave nothing running.
        let mut bound = Forwards::bind_all(config, &mut inherited).await?;
        let root = CancellationToken::new();
        let tasks = TaskTracker::new();
        let supervisors = Supervisors::start(config, &tasks, &root).await;
        let (published, _) = watch::channel(ControlState::default());
        let mut daemon = Self {
            config: config.clone(),
            forwards: Forwards::new(&root, tasks.clone()),
            root,
            tasks,
            hosts: supervisors.by_name(),
            supervisors,
            published,
        };
        for f in &config.forwards {
            let ingress = bound.remove(&f.name).map_or(Ingress::None, Ingress::Bound);
            if let Some(host) = daemon.hosts.get(&f.host).cloned() {
                daemon.forwards.start(f, host, ingress);
            }
        }
        daemon.publish();
        Ok(daemon)
    }

    /// Applies a new, valid configuration by difference: forwards removed or changed stop
    /// and close their connections, forwards added or changed start, hosts whose settings
    /// changed reconnect, hosts no longer needed disconnect; everything else — sessions,
    /// ingresses, open connections — is left alone. An added ingress that cannot be bound is
    /// reported in status and retried; it stops nothing.
    pub async fn reload(&mut self, new: Config) -> Reloaded {
        self.reload_with(new, Inherited::new()).await
    }

    /// Like [`Daemon::reload`], adopting already-bound TCP listeners for added ingresses.
    pub async fn reload_with(&mut self, new: Config, mut inherited: Inherited) -> Reloaded {
        let plan = crate::config::diff(&self.config, &new);
        // Stop first, so that an ingress or server address moving between forwards is free
        // before it is bound again.
        for name in plan.forwards_removed.iter().chain(&plan.forwards_changed) {
            self.forwards.stop(name).await;
        }
        let hosts = self.supervisors.update(&new, &self.tasks, &self.root).await;
        self.hosts = self.supervisors.by_name();
        for f in &new.forwards {
            if !plan.forwards_added.contains(&f.name) && !plan.forwards_changed.contains(&f.name) {
                continue;
            }
            let ingress = Forwards::bind_or_retry(f, &mut inherited).await;
            if let Some(host) = self.hosts.get(&f.host).cloned() {
                self.forwards.start(f, host, ingress);
            }
        }
        self.forwards.order_as(&new);
        self.config = new;
        self.publish();
        Reloaded::from(plan, hosts)
    }

    /// The configuration running now.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What the control socket reports on, updated on every reload.
    pub fn watch_control_state(&self) -> watch::Receiver<ControlState> {
        self.published.subscribe()
    }

    fn publish(&self) {
        self.published.send_replace(self.control_state());
    }

    /// Duplicates of the listening sockets of the forwards bound here, by forward name, for
    /// an upgrade to hand over.
    pub fn handover_fds(&self) -> Vec<(String, crate::forward::listener::HandoverFd)> {
        self.forwards.handover_fds()
    }

    /// The forwards, with their bound addresses and counters.
    pub fn forwards(&self) -> &[ForwardRuntime] {
        self.forwards.list()
    }

    /// The supervisor handle of host `name`.
    pub fn host(&self, name: &str) -> Option<&HostHandle> {
        self.hosts.get(name)
    }

    /// What the control socket reports on now.
    pub fn control_state(&self) -> ControlState {
        ControlState {
            hosts: self.hosts.clone(),
            forwards: self.forwards.list().to_vec(),
        }
    }

    /// `3/3 hosts up, 7/7 forwards ready`: the one-line summary systemd shows.
    pub fn summary(&self) -> String {
        self.control_state().summary()
    }

    /// Tasks alive now: (supervisors and forward tasks, connections). For leak checks.
    pub fn task_counts(&self) -> (usize, usize) {
        (self.tasks.len(), self.forwards.open_connections())
    }

    /// Every host supervisor, by name.
    pub fn hosts(&self) -> &BTreeMap<String, HostHandle> {
        &self.hosts
    }

    /// Stops accepting, lets open connections finish for up to `grace`, cuts the rest,
    /// disconnects every session and waits for every task.
    pub async fn shutdown(self, grace: Duration) {
        self.forwards.drain(grace).await;
        self.root.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), self.tasks.wait())
            .await
            .is_err()
        {
            warn!("some tasks did not stop in time");
        }
    }
}

impl ControlState {
    /// `3/3 hosts up, 7/7 forwards ready`.
    pub fn summary(&self) -> String {
        let state = |name: &str| self.hosts.get(name).map(|h| h.status().state);
        let in_state = |wanted: fn(&HostState) -> bool| {
            self.hosts
                .keys()
                .filter(|h| state(h).is_some_and(|s| wanted(&s)))
                .count()
        };
        let hosts_up = in_state(|s| *s == HostState::Up);
        let idle = in_state(|s| *s == HostState::Idle);
        let ready = self
            .forwards
            .iter()
            .filter(|f| {
                let carries = state(&f.config.host).is_some_and(|s| s.carries_forwards());
                f.readiness(carries) == Readiness::Ready
            })
            .count();
        let failing = self
            .forwards
            .iter()
            .filter(|f| {
                f.status()
                    .probe
                    .is_some_and(|p| p.state == ProbeState::Failing)
            })
            .count();
        let idle = match idle {
            0 => String::new(),
            n => format!(" ({n} idle on demand)"),
        };
        let mut summary = format!(
            "{hosts_up}/{} hosts up{idle}, {ready}/{} forwards ready",
            self.hosts.len(),
            self.forwards.len()
        );
        match failing {
            0 => {}
            1 => summary.push_str(", 1 forward failing its probe"),
            n => summary.push_str(&format!(", {n} forwards failing their probes")),
        }
        summary
    }
}
