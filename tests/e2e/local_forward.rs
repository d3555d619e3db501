//! Local forwards (-L) against the real sshd: bytes, concurrency, sharing, half-close, Unix sockets.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::harness::{EchoServer, KeyKind, MIB, SshServer, Transport, UserKey, push_through, with_timeout};
use crate::support::{TestDaemon, forward_table, host_table, ingress};

const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_each_way_through_a_local_forward() {
    with_timeout(LIMIT, async {
        let server = SshServer::start().await?;
        let key = UserKey::generate(KeyKind::Ed25519, None).await?;
        server.authorize(&key)?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let (listener, addr) = ingress();
        let toml = host_table("h", &server, &key)
            + &forward_table("pg", "h", "local", &addr.to_string(), Some(&echo.addr().to_string()));
        let d = TestDaemon::start(&toml, vec![listener]).await?;
        let stream = TcpStream::connect(addr).await?;
        let t = push_through(stream, 64 * MIB).await?;
        t.check_echoed()?;
        let c = &d.forward("pg").counters;
        assert_eq!(c.bytes_in.load(std::sync::atomic::Ordering::Relaxed), 64 * MIB);
        assert_eq!(c.bytes_out.load(std::sync::atomic::Ordering::Relaxed), 64 * MIB);
        d.stop(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
}
