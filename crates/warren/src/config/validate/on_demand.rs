//! On-demand hosts: a remote (or remote-dynamic) forward needs its host's session all the time, so its host
//! cannot be on demand; and a jump host that carries no forward of its own and is used only by
//! on-demand hosts follows them (its session opens when theirs does and closes soon after).

use super::Ctx;
use crate::config::raw::RawForward;
use crate::config::{ForwardConfig, HOP_LINGER, HostConfig, Route};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Refuses remote and remote-dynamic forwards of on-demand hosts, at the forward's `type`.
pub(super) fn check_remote_forwards(
    raw: &[toml::Spanned<RawForward>],
    forwards: &[(usize, ForwardConfig)],
    hosts: &BTreeMap<String, Arc<HostConfig>>,
    cx: &mut Ctx<'_>,
) {
    for (i, f) in forwards {
        let on_demand = hosts.get(&f.host).is_some_and(|h| h.on_demand.is_some());
        if !on_demand || f.spec.remote_listen().is_none() {
            continue;
        }
        let Some(at) = raw.get(*i).and_then(|r| r.get_ref().kind.as_ref()) else {
            continue;
        };
        cx.err(
            at.span(),
            format!(
                "a {} forward needs its host's session up all the time (the server listens \
                 only while it lasts), but host `{}` is `on_demand`",
                f.spec.kind_name(),
                f.host
            ),
        );
    }
}

/// Makes each jump host that no forward uses, and whose every user is on demand, follow them
/// (on demand, closing [`HOP_LINGER`] after its last user).
pub(super) fn follow_users(
    hosts: &mut BTreeMap<String, Arc<HostConfig>>,
    forwards: &[ForwardConfig],
) {
    // The host each host's session runs through: the last hop of its chain.
    let upstream: Vec<(String, String)> = hosts
        .values()
        .filter_map(|h| match &h.route {
            Route::Jump(chain) => chain.last().map(|hop| (h.name.clone(), hop.clone())),
            _ => None,
        })
        .collect();
    // Users become on demand before their hops are looked at: repeat until nothing changes
    // (a chain is at most as long as the host list).
    loop {
        let mut changed = false;
        for hop in hosts.keys().cloned().collect::<Vec<_>>() {
            let users: Vec<&String> = upstream
                .iter()
                .filter(|(_, up)| *up == hop)
                .map(|(user, _)| user)
                .collect();
            let follows = !users.is_empty()
                && !forwards.iter().any(|f| f.host == hop)
                && users
                    .iter()
                    .all(|u| hosts.get(*u).is_some_and(|h| h.on_demand.is_some()));
            if let Some(h) = hosts.get_mut(&hop)
                && follows
                && h.on_demand.is_none()
            {
                Arc::make_mut(h).on_demand = Some(HOP_LINGER);
                changed = true;
            }
        }
        if !changed {
            return;
        }
    }
}
