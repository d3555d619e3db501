//! Moving checked bytes: seeded pseudo-random streams, SHA-256 digests, and a push-and-read-back helper.

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// 1 MiB, for sizes written as `64 * MIB`.
pub const MIB: u64 = 1024 * 1024;

const CHUNK: usize = 64 * 1024;

/// Lowercase hex of a digest, for messages.
pub fn hex(digest: &Digest) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest of the `len` bytes that [`write_random`] writes for `seed`.
pub fn random_digest(len: u64, seed: u64) -> Digest {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    hasher.finalize().into()
}

/// Writes `len` pseudo-random bytes generated from `seed`; returns their digest. Does not shut down.
pub async fn write_random<W: AsyncWrite + Unpin>(
    writer: &mut W,
    len: u64,
    seed: u64,
) -> std::io::Result<Digest> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    writer.flush().await?;
    Ok(hasher.finalize().into())
}

/// Reads until EOF; returns the byte count and digest.
pub async fn read_digest<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<(u64, Digest)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok((total, hasher.finalize().into()));
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

/// What went out and what came back on one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// Bytes written.
    pub sent: u64,
    /// Digest of the bytes written.
    pub sent_digest: Digest,
    /// Bytes read until EOF.
    pub received: u64,
    /// Digest of the bytes read.
    pub received_digest: Digest,
}

impl Transfer {
    /// Whether exactly the sent bytes came back (an echo round trip).
    pub fn echoed(&self) -> bool {
        self.sent == self.received && self.sent_digest == self.received_digest
    }

    /// Fails unless exactly the sent bytes came back.
    pub fn check_echoed(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.echoed(),
            "echo mismatch: sent {} bytes ({}), received {} bytes ({})",
            self.sent,
            hex(&self.sent_digest),
            self.received,
            hex(&self.received_digest)
        );
        Ok(())
    }
}

/// Writes `len` random bytes to `stream` (then shuts down its write side) while
/// reading everything that comes back until EOF, concurrently.
pub async fn push_through<S: AsyncRead + AsyncWrite>(
    stream: S,
    len: u64,
) -> anyhow::Result<Transfer> {
    let (reader, writer) = tokio::io::split(stream);
    push_through_split(reader, writer, len).await
}

/// [`push_through`] over separate halves (e.g. a child's stdout and stdin);
/// `writer` is dropped once written, since a pipe signals EOF only when closed.
pub async fn push_through_split<R, W>(
    mut reader: R,
    mut writer: W,
    len: u64,
) -> anyhow::Result<Transfer>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let seed = rand::random();
    let send = async move {
        let digest = write_random(&mut writer, len, seed)
            .await
            .context("write")?;
        writer
            .shutdown()
            .await
            .context("shut down the write side")?;
        drop(writer);
        anyhow::Ok(digest)
    };
    let receive = async { read_digest(&mut reader).await.context("read") };
    let (sent_digest, (received, received_digest)) = tokio::try_join!(send, receive)?;
    Ok(Transfer {
        sent: len,
        sent_digest,
        received,
        received_digest,
    })
}
