//! A stalled client cannot stall its session (russh.md trap 1): a connection whose local
//! peer never reads holds back only its own channel, bounded by the SSH window, while another
//! connection of the same session moves 64 MiB.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::harness::{
    EchoServer, KeyKind, MIB, PeerServer, SshServer, Transport, UserKey, push_through, wait_until,
    with_timeout,
};
use crate::support::{TestDaemon, forward_table, host_table, ingress};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_holds_only_its_own_window() {
    with_timeout(Duration::from_secs(120), async {
        let server = SshServer::start().await?;
        let key = UserKey::generate(KeyKind::Ed25519, None).await?;
        server.authorize(&key)?;
        // A firehose: writes until the socket stops taking bytes, counting what it took.
        let taken = Arc::new(AtomicU64::new(0));
        let firehose = PeerServer::start(Transport::Tcp, {
            let taken = taken.clone();
            move |mut s| {
                let taken = taken.clone();
                async move {
                    let chunk = vec![0x5a_u8; 64 * 1024];
                    while s.write_all(&chunk).await.is_ok() {
                        taken.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    }
                }
            }
        })
        .await?;
        let echo = EchoServer::start(Transport::Tcp).await?;
        let (l1, stalled_addr) = ingress();
        let (l2, busy_addr) = ingress();
        let toml = host_table("h", &server, &key)
            + &forward_table(
                "stalled",
                "h",
                "local",
                &stalled_addr.to_string(),
                Some(&firehose.addr().to_string()),
            )
            + &forward_table(
                "busy",
                "h",
                "local",
                &busy_addr.to_string(),
                Some(&echo.addr().to_string()),
            );
        let d = TestDaemon::start(&toml, vec![l1, l2]).await?;

        // The stalled client connects and never reads.
        let _stalled = TcpStream::connect(stalled_addr).await?;
        wait_until(Duration::from_secs(20), "the firehose to start", || {
            taken.load(Ordering::SeqCst) > 0
        })
        .await?;

        // Meanwhile the same session carries 64 MiB each way for another client.
        let busy = TcpStream::connect(busy_addr).await?;
        let t = push_through(busy, 64 * MIB).await?;
        t.check_echoed()?;

        // What the firehose got rid of is bounded: the SSH window (8 MiB) plus socket buffers
        // on the way, not the 64 MiB that moved meanwhile.
        let held = taken.load(Ordering::SeqCst);
        assert!(
            held < 24 * MIB,
            "the stalled channel kept receiving: {held} bytes"
        );
        assert_eq!(
            d.forward("stalled").counters.active.load(Ordering::SeqCst),
            1,
            "the stalled connection is still open"
        );
        d.stop(Duration::from_millis(100)).await;
        Ok(())
    })
    .await;
}
