//! Jump chains and ProxyCommand across hosts that really cannot see each other: network
//! namespaces joined by veth pairs, an OpenSSH server in each, warren in this namespace.
//!
//! This machine can reach only the bastion; the bastion reaches the hosts behind it. Each
//! test proves the isolation first and then moves checked bytes through warren. They need
//! root and `ip netns`; without them they fail and say why (they never skip silently).

mod lab;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::ensure;
use tokio::net::TcpStream;
use warren::session::{FailureClass, HostState};

use crate::harness::{MIB, push_through, with_timeout};
use crate::support::{TestDaemon, forward_table, ingress};
use lab::{Lab, Ns, Reach, SSH_PORT, connect_via, reachable_from, route_get};

/// Each test's limit (they take a few seconds).
const LIMIT: Duration = Duration::from_secs(25);
/// How long a host may take to come (back) up.
const UP: Duration = Duration::from_secs(15);

/// Proves that from this namespace `bastion` answers through the lab link `veth` while none
/// of `hidden` does, and that the routing table has no path to them through the lab.
async fn prove_hidden(veth: &str, bastion: Ipv4Addr, hidden: &[Ipv4Addr]) -> anyhow::Result<()> {
    // The control: the same probe reaches the bastion, so a failure below means something.
    let control = connect_via(veth, (bastion, SSH_PORT).into(), Duration::from_secs(2)).await?;
    ensure!(
        matches!(control, Reach::Connected | Reach::Refused),
        "the bastion {bastion} does not answer on {veth}: {control:?}"
    );
    // Concurrently: each probe waits out its limit.
    let mut probes = tokio::task::JoinSet::new();
    for &ip in hidden {
        let veth = veth.to_owned();
        probes.spawn(async move {
            let route = route_get(ip).await;
            ensure!(
                !route.contains(&veth),
                "this namespace routes {ip} into the lab: {route}"
            );
            let addr = SocketAddr::from((ip, SSH_PORT));
            let reach = connect_via(&veth, addr, Duration::from_millis(1500)).await?;
            ensure!(
                matches!(reach, Reach::Nothing(_)),
                "{addr} must not be reachable from this machine, yet: {reach:?}"
            );
            Ok(())
        });
    }
    while let Some(probe) = probes.join_next().await {
        probe??;
    }
    Ok(())
}

/// Proves that `from` reaches `ip:22`, or (when `expect` is false) does not.
async fn prove_reach(from: &Ns, ip: Ipv4Addr, expect: bool) -> anyhow::Result<()> {
    let got = reachable_from(from, ip, SSH_PORT).await?;
    ensure!(
        got == expect,
        "{}:{SSH_PORT} is {}reachable from {}",
        ip,
        if got { "" } else { "not " },
        from.name
    );
    Ok(())
}

/// 32 MiB each way through a forward whose egress is the echo service on a host this machine
/// cannot reach, one jump through the bastion away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_one_jump_reaches_a_host_this_machine_cannot() {
    with_timeout(LIMIT, async {
        let mut lab = Lab::new().await?;
        let bastion_ns = lab.namespace("bastion").await?;
        let internal_ns = lab.namespace("internal").await?;
        let (veth, bastion_ip) = lab.link_root(&bastion_ns).await?;
        let (_, internal_ip) = lab.link(&bastion_ns, &internal_ns, 201).await?;
        let bastion = lab.sshd(&bastion_ns, bastion_ip, None).await?;
        let internal = lab
            .sshd(&internal_ns, internal_ip, Some(&bastion_ns))
            .await?;
        let echo = lab.echo(&internal_ns, internal_ip).await?;
        prove_hidden(&veth, bastion_ip, &[internal_ip]).await?;
        prove_reach(&bastion_ns, internal_ip, true).await?;

        let (l, a) = ingress();
        let toml = lab.host_table("bastion", bastion_ip, "")
            + &lab.host_table("internal", internal_ip, "jump = [\"bastion\"]\n")
            + &forward_table(
                "f",
                "internal",
                "local",
                &a.to_string(),
                Some(&echo.addr.to_string()),
            );
        let d = TestDaemon::start(&toml, vec![l]).await?;
        push_through(TcpStream::connect(a).await?, 32 * MIB)
            .await?
            .check_echoed()?;
        assert_eq!(bastion.accepted(), 1, "one session on the bastion");
        assert_eq!(internal.accepted(), 1, "one session on the internal host");
        d.stop(Duration::from_millis(100)).await;
        Ok(())
    })
    .await;
}

/// Two hops: the bastion cannot reach the internal host either, only the middle host can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_two_jumps_reach_a_host_only_the_middle_host_sees() {
    with_timeout(LIMIT, async {
        let mut lab = Lab::new().await?;
        let bastion_ns = lab.namespace("bastion").await?;
        let middle_ns = lab.namespace("middle").await?;
        let internal_ns = lab.namespace("internal").await?;
        let (veth, bastion_ip) = lab.link_root(&bastion_ns).await?;
        let (_, middle_ip) = lab.link(&bastion_ns, &middle_ns, 201).await?;
        let (_, internal_ip) = lab.link(&middle_ns, &internal_ns, 202).await?;
        let bastion = lab.sshd(&bastion_ns, bastion_ip, None).await?;
        let middle = lab.sshd(&middle_ns, middle_ip, Some(&bastion_ns)).await?;
        let internal = lab
            .sshd(&internal_ns, internal_ip, Some(&middle_ns))
            .await?;
        let echo = lab.echo(&internal_ns, internal_ip).await?;
        prove_hidden(&veth, bastion_ip, &[middle_ip, internal_ip]).await?;
        prove_reach(&bastion_ns, middle_ip, true).await?;
        prove_reach(&bastion_ns, internal_ip, false).await?;
        prove_reach(&middle_ns, internal_ip, true).await?;

        let (l, a) = ingress();
        let toml = lab.host_table("bastion", bastion_ip, "")
            + &lab.host_table("middle", middle_ip, "")
            + &lab.host_table(
                "internal",
                internal_ip,
                "jump = [\"bastion\", \"middle\"]\n",
            )
            + &forward_table(
                "f",
                "internal",
                "local",
                &a.to_string(),
                Some(&echo.addr.to_string()),
            );
        let d = TestDaemon::start(&toml, vec![l]).await?;
        push_through(TcpStream::connect(a).await?, 32 * MIB)
            .await?
            .check_echoed()?;
        assert_eq!(bastion.accepted(), 1, "one session on the bastion");
        assert_eq!(middle.accepted(), 1, "one session on the middle host");
        assert_eq!(internal.accepted(), 1, "one session on the internal host");
        // The middle hop is reached by a path other than its own (it has no `jump`).
        let hop = d
            .daemon()
            .host("middle via bastion")
            .map(|h| h.status().state);
        assert_eq!(hop, Some(HostState::Up), "the middle hop's supervisor");
        d.stop(Duration::from_millis(100)).await;
        Ok(())
    })
    .await;
}

/// A hop written as `root@IP:22` (no `[hosts.*]` table) takes its settings from [defaults].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_an_ad_hoc_jump_entry_uses_the_defaults() {
    with_timeout(LIMIT, async {
        let mut lab = Lab::new().await?;
        let bastion_ns = lab.namespace("bastion").await?;
        let internal_ns = lab.namespace("internal").await?;
        let (veth, bastion_ip) = lab.link_root(&bastion_ns).await?;
        let (_, internal_ip) = lab.link(&bastion_ns, &internal_ns, 201).await?;
        let bastion = lab.sshd(&bastion_ns, bastion_ip, None).await?;
        let internal = lab
            .sshd(&internal_ns, internal_ip, Some(&bastion_ns))
            .await?;
        let echo = lab.echo(&internal_ns, internal_ip).await?;
        prove_hidden(&veth, bastion_ip, &[internal_ip]).await?;

        let hop = format!("root@{bastion_ip}:{SSH_PORT}");
        let (l, a) = ingress();
        let toml = format!(
            "[defaults]\nuser = \"root\"\n{}\n\
             [hosts.internal]\nhostname = \"{internal_ip}\"\njump = [\"{hop}\"]\n\n",
            lab.client_settings()
        ) + &forward_table(
            "f",
            "internal",
            "local",
            &a.to_string(),
            Some(&echo.addr.to_string()),
        );
        let d = TestDaemon::start(&toml, vec![l]).await?;
        push_through(TcpStream::connect(a).await?, 8 * MIB)
            .await?
            .check_echoed()?;
        assert_eq!(d.host_status(&hop).state, HostState::Up, "the ad-hoc hop");
        assert_eq!(bastion.accepted(), 1, "one session on the bastion");
        assert_eq!(internal.accepted(), 1, "one session on the internal host");
        d.stop(Duration::from_millis(100)).await;
        Ok(())
    })
    .await;
}

/// Two internal hosts behind one bastion ride on one bastion session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_two_inner_hosts_share_one_bastion_session() {
    with_timeout(LIMIT, async {
        let mut lab = Lab::new().await?;
        let bastion_ns = lab.namespace("bastion").await?;
        let a_ns = lab.namespace("internal-a").await?;
        let b_ns = lab.namespace("internal-b").await?;
        let (veth, bastion_ip) = lab.link_root(&bastion_ns).await?;
        let (_, a_ip) = lab.link(&bastion_ns, &a_ns, 201).await?;
        let (_, b_ip) = lab.link(&bastion_ns, &b_ns, 202).await?;
        let bastion = lab.sshd(&bastion_ns, bastion_ip, None).await?;
        let inner_a = lab.sshd(&a_ns, a_ip, Some(&bastion_ns)).await?;
        let inner_b = lab.sshd(&b_ns, b_ip, Some(&bastion_ns)).await?;
        let echo_a = lab.echo(&a_ns, a_ip).await?;
        let echo_b = lab.echo(&b_ns, b_ip).await?;
        prove_hidden(&veth, bastion_ip, &[a_ip, b_ip]).await?;

        let (la, aa) = ingress();
        let (lb, ab) = ingress();
        let toml = lab.host_table("bastion", bastion_ip, "")
            + &lab.host_table("inner-a", a_ip, "jump = [\"bastion\"]\n")
            + &lab.host_table("inner-b", b_ip, "jump = [\"bastion\"]\n")
            + &forward_table(
                "fa",
                "inner-a",
                "local",
                &aa.to_string(),
                Some(&echo_a.addr.to_string()),
            )
            + &forward_table(
                "fb",
                "inner-b",
                "local",
                &ab.to_string(),
                Some(&echo_b.addr.to_string()),
            );
        let d = TestDaemon::start(&toml, vec![la, lb]).await?;
        let (ta, tb) = tokio::try_join!(
            async { push_through(TcpStream::connect(aa).await?, 8 * MIB).await },
            async { push_through(TcpStream::connect(ab).await?, 8 * MIB).await },
        )?;
        ta.check_echoed()?;
        tb.check_echoed()?;
        assert_eq!(
            bastion.accepted(),
            1,
            "one bastion session for both inner hosts; bastion log:\n{}",
            bastion.log()
        );
        assert_eq!(inner_a.accepted(), 1, "one session on inner-a");
        assert_eq!(inner_b.accepted(), 1, "one session on inner-b");
        d.stop(Duration::from_millis(100)).await;
        Ok(())
    })
    .await;
}

/// `proxy_command = "ip netns exec BASTION nc %h %p"` carries the session to the internal
/// host; a ProxyCommand whose connection is refused is a network-class failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_proxy_command_through_the_bastion_namespace() {
    with_timeout(LIMIT, async {
        let mut lab = Lab::new().await?;
        let bastion_ns = lab.namespace("bastion").await?;
        let internal_ns = lab.namespace("internal").await?;
        let (veth, bastion_ip) = lab.link_root(&bastion_ns).await?;
        let (_, internal_ip) = lab.link(&bastion_ns, &internal_ns, 201).await?;
        let internal = lab
            .sshd(&internal_ns, internal_ip, Some(&bastion_ns))
            .await?;
        let echo = lab.echo(&internal_ns, internal_ip).await?;
        prove_hidden(&veth, bastion_ip, &[internal_ip]).await?;

        let proxy = format!(
            "proxy_command = \"ip netns exec {} nc %h %p\"\n",
            bastion_ns.name
        );
        let (l, a) = ingress();
        // Nothing listens on port 2222 of the internal host: nc is refused and exits.
        let broken = lab
            .host_table("broken", internal_ip, &proxy)
            .replace("port = 22\n", "port = 2222\n")
            .replace("connect_timeout = \"10s\"", "connect_timeout = \"2s\"");
        let toml = lab.host_table("internal", internal_ip, &proxy)
            + &broken
            + &forward_table(
                "f",
                "internal",
                "local",
                &a.to_string(),
                Some(&echo.addr.to_string()),
            )
            + &forward_table(
                "g",
                "broken",
                "local",
                &lab.dir().join("never-used.sock").display().to_string(),
                Some(&echo.addr.to_string()),
            );
        let d = TestDaemon::start(&toml, vec![l]).await?;
        push_through(TcpStream::connect(a).await?, 16 * MIB)
            .await?
            .check_echoed()?;
        assert_eq!(internal.accepted(), 1, "one session on the internal host");
        let s = d
            .wait_host("broken", UP, |s| s.last_error.is_some())
            .await?;
        let e = s.last_error.expect("an error");
        assert_eq!(e.class, FailureClass::Network, "{}", e.message);
        assert_ne!(s.state, HostState::Up);
        d.stop(Duration::from_millis(100)).await;
        Ok(())
    })
    .await;
}

/// The bastion's sshd process for warren's session is killed: the inner host's session dies
/// with it, both come back through a new bastion session, and bytes flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_the_inner_host_recovers_when_the_bastion_session_is_killed() {
    with_timeout(LIMIT, async {
        let mut lab = Lab::new().await?;
        let bastion_ns = lab.namespace("bastion").await?;
        let internal_ns = lab.namespace("internal").await?;
        let (veth, bastion_ip) = lab.link_root(&bastion_ns).await?;
        let (_, internal_ip) = lab.link(&bastion_ns, &internal_ns, 201).await?;
        let bastion = lab.sshd(&bastion_ns, bastion_ip, None).await?;
        let internal = lab
            .sshd(&internal_ns, internal_ip, Some(&bastion_ns))
            .await?;
        let echo = lab.echo(&internal_ns, internal_ip).await?;
        prove_hidden(&veth, bastion_ip, &[internal_ip]).await?;

        let (l, a) = ingress();
        let toml = lab.host_table("bastion", bastion_ip, "")
            + &lab.host_table("internal", internal_ip, "jump = [\"bastion\"]\n")
            + &forward_table(
                "f",
                "internal",
                "local",
                &a.to_string(),
                Some(&echo.addr.to_string()),
            );
        let d = TestDaemon::start(&toml, vec![l]).await?;
        push_through(TcpStream::connect(a).await?, 4 * MIB)
            .await?
            .check_echoed()?;
        assert_eq!(bastion.accepted(), 1);

        let killed = bastion.kill_sessions().await?;
        assert!(killed >= 1, "killed {killed} bastion session processes");
        d.wait_host("internal", UP, |s| s.reconnects >= 1).await?;
        d.wait_up("internal", UP).await?;
        push_through(TcpStream::connect(a).await?, 8 * MIB)
            .await?
            .check_echoed()?;
        assert_eq!(bastion.accepted(), 2, "a new bastion session");
        assert_eq!(internal.accepted(), 2, "a new internal session");
        assert!(d.host_status("bastion").reconnects >= 1);
        d.stop(Duration::from_millis(100)).await;
        Ok(())
    })
    .await;
}
