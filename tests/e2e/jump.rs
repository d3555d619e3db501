//! Jump chains and ProxyCommand on loopback (the mechanics; `netns.rs` proves them across
//! hosts that cannot see each other).

use std::time::Duration;

use tokio::net::TcpStream;

use crate::harness::{
    EchoServer, KeyKind, MIB, SshServer, Transport, UserKey, push_through, with_timeout,
};
use crate::support::{
    Fixture, TestDaemon, forward_table, host_table, host_table_with, ingress, with_setting,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_hop_chain_shares_the_bastion_session() {
    with_timeout(Duration::from_secs(60), async {
        let bastion = SshServer::start().await?;
        let inner = SshServer::start().await?;
        let key = UserKey::generate(KeyKind::Ed25519, None).await?;
        bastion.authorize(&key)?;
        inner.authorize(&key)?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let (l1, a1) = ingress();
        let (l2, a2) = ingress();
        // Two inner hosts (the same server under two names) behind one bastion.
        let toml = host_table("bastion", &bastion, &key)
            + &host_table_with(
                "inner1",
                &inner,
                &key,
                &inner.known_hosts_path(),
                "jump = [\"bastion\"]\n",
            )
            + &host_table_with(
                "inner2",
                &inner,
                &key,
                &inner.known_hosts_path(),
                "jump = [\"bastion\"]\n",
            )
            + &forward_table(
                "f1",
                "inner1",
                "local",
                &a1.to_string(),
                Some(&echo.addr().to_string()),
            )
            + &forward_table(
                "f2",
                "inner2",
                "local",
                &a2.to_string(),
                Some(&echo.addr().to_string()),
            );
        let d = TestDaemon::start(&toml, vec![l1, l2]).await?;
        push_through(TcpStream::connect(a1).await?, 16 * MIB)
            .await?
            .check_echoed()?;
        push_through(TcpStream::connect(a2).await?, 4 * MIB)
            .await?
            .check_echoed()?;
        assert_eq!(
            bastion.session_counts().accepted,
            1,
            "one bastion session for both inner hosts"
        );
        assert_eq!(
            inner.session_counts().accepted,
            2,
            "one session per inner host"
        );

        // The bastion session dies: the inner hosts come back through a new one.
        bastion.kill_sessions().await?;
        d.wait_host("inner1", Duration::from_secs(20), |s| s.reconnects >= 1)
            .await?;
        d.wait_up("inner1", Duration::from_secs(20)).await?;
        push_through(TcpStream::connect(a1).await?, MIB)
            .await?
            .check_echoed()?;
        d.stop(Duration::from_millis(100)).await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_command_carries_the_session_and_its_failure_is_network_class() {
    with_timeout(Duration::from_secs(60), async {
        let Fixture { server, key, echo } = Fixture::start().await?;
        let (l1, a1) = ingress();
        let proxy = "proxy_command = \"exec nc %h %p\"\n";
        let broken = "proxy_command = \"echo no route to %h >&2; exit 3\"\n";
        // The ingress of the host that never comes up: a path of this test's own.
        let never_used = tempfile::tempdir()?;
        let toml = host_table_with("via-nc", &server, &key, &server.known_hosts_path(), proxy)
            + &with_setting(
                &host_table_with("broken", &server, &key, &server.known_hosts_path(), broken),
                "connect_timeout",
                "\"2s\"",
            )
            + &forward_table(
                "f",
                "via-nc",
                "local",
                &a1.to_string(),
                Some(&echo.addr().to_string()),
            )
            + &forward_table(
                "g",
                "broken",
                "local",
                &never_used.path().join("never-used.sock").to_string_lossy(),
                Some("1"),
            );
        let d = TestDaemon::start(&toml, vec![l1]).await?;
        push_through(TcpStream::connect(a1).await?, 8 * MIB)
            .await?
            .check_echoed()?;
        let s = d
            .wait_host("broken", Duration::from_secs(20), |s| {
                s.last_error.is_some()
            })
            .await?;
        let e = s.last_error.unwrap();
        assert_eq!(
            e.class,
            warren::session::FailureClass::Network,
            "{}",
            e.message
        );
        d.stop(Duration::from_millis(100)).await;
        Ok(())
    })
    .await;
}
