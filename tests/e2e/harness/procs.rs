//! Process trees read from `/proc`: find every descendant of a pid, then stop, resume or kill them all.
//!
//! `sshd -i` forks privilege-separation children (and session children that may
//! `setsid()`), so a process group is not enough: the tree is rebuilt from the
//! parent pid of every process in `/proc`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::bail;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// How long stopping a tree may take before the harness gives up.
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// State letter and parent pid of `pid`, from `/proc/PID/stat`.
fn stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// `pid` followed by all of its descendants, parents before children.
pub fn tree(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some((_, ppid)) = stat(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = vec![root];
    let mut next = 0;
    while next < out.len() {
        if let Some(kids) = children.get(&out[next]) {
            out.extend(kids);
        }
        next += 1;
    }
    out
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
fn signal(pid: i32, signal: Signal) -> anyhow::Result<()> {
    match kill(Pid::from_raw(pid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(err) => bail!("send {signal} to pid {pid}: {err}"),
    }
}

/// Whether `pid` is stopped, or gone (a zombie or reaped) and so harmless.
fn is_stopped_or_gone(pid: i32) -> bool {
    match stat(pid) {
        Some((state, _)) => matches!(state, 'T' | 't' | 'Z' | 'X'),
        None => true,
    }
}

/// SIGSTOPs `root` and every descendant and returns once all of them are
/// really stopped and none forked meanwhile. Returns the frozen pids.
pub fn freeze_tree(root: i32) -> anyhow::Result<Vec<i32>> {
    let deadline = Instant::now() + STOP_DEADLINE;
    let mut frozen: Vec<i32> = Vec::new();
    loop {
        let current = tree(root);
        let fresh: Vec<i32> = current
            .iter()
            .copied()
            .filter(|p| !frozen.contains(p))
            .collect();
        if fresh.is_empty() && current.iter().all(|&p| is_stopped_or_gone(p)) {
            return Ok(current);
        }
        for &pid in &fresh {
            signal(pid, Signal::SIGSTOP)?;
        }
        frozen.extend(fresh);
        if Instant::now() >= deadline {
            bail!("process tree of pid {root} did not stop within {STOP_DEADLINE:?}");
        }
        // Stopping is asynchronous: give the kernel a moment, then look again.
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// SIGCONTs every pid in `pids` (as returned by [`freeze_tree`]).
pub fn thaw(pids: &[i32]) -> anyhow::Result<()> {
    for &pid in pids {
        signal(pid, Signal::SIGCONT)?;
    }
    Ok(())
}

/// Makes this test process the reaper of its orphaned descendants (once).
///
/// Killing an `sshd -i` re-parents its children, and where PID 1 does not reap
/// (a container's init may not) they would stay zombies forever. Returns
/// whether this process now adopts them.
pub fn adopt_orphans() -> bool {
    static ADOPTING: OnceLock<bool> = OnceLock::new();
    *ADOPTING.get_or_init(|| nix::sys::prctl::set_child_subreaper(true).is_ok())
}

/// SIGKILLs `root` and all of its descendants. The tree is frozen first so
/// that nothing forks half-way through. The descendants are reaped here once
/// they are re-parented to this process; `root` is left to whoever spawned it.
pub fn kill_tree(root: i32) -> anyhow::Result<()> {
    let pids = freeze_tree(root).unwrap_or_else(|_| tree(root));
    for &pid in &pids {
        signal(pid, Signal::SIGKILL)?;
    }
    if adopt_orphans() {
        reap(pids.get(1..).unwrap_or_default());
    }
    Ok(())
}

/// Reaps killed descendants once they become our children (bounded wait).
/// Only these pids are waited for: tokio reaps its own children by pid, too.
fn reap(pids: &[i32]) {
    let deadline = Instant::now() + STOP_DEADLINE;
    let mut left = pids.to_vec();
    while !left.is_empty() && Instant::now() < deadline {
        left.retain(|&pid| {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => true,
                Ok(_) => false,
                // Not our child (yet): its old parent is still dying, or reaped it.
                Err(Errno::ECHILD) => Path::new(&format!("/proc/{pid}")).exists(),
                Err(_) => false,
            }
        });
        if !left.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
