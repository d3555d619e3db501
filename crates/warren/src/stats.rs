//! Lock-free statistics the daemon keeps (a histogram of durations): observing takes no lock,
//! so a scrape never holds up the task that observes (a connection opening its channel, a
//! keepalive). Read by `warren status` and by the metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the buckets: 100 µs to 30 s, for round trips and channel opens.
pub const BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Observations counted per bucket, with their count and sum.
#[derive(Debug)]
pub struct Histogram {
    /// Observations at most `BOUNDS[i]` (and above the previous bound).
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    /// Sum in nanoseconds (584 years before it wraps).
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

/// What a scrape reads: sum (seconds), count, and cumulative buckets ending with `+Inf`.
pub type Snapshot = (f64, u64, Vec<(f64, u64)>);

impl Histogram {
    /// Counts one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|b| secs <= *b)
            && let Some(bucket) = self.buckets.get(i)
        {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The histogram as a scrape shows it.
    pub fn snapshot(&self) -> Snapshot {
        let count = self.count.load(Ordering::Relaxed);
        let mut cumulative = 0;
        let mut buckets: Vec<(f64, u64)> = BOUNDS
            .iter()
            .zip(&self.buckets)
            .map(|(bound, n)| {
                cumulative += n.load(Ordering::Relaxed);
                (*bound, cumulative)
            })
            .collect();
        // Read apart from the buckets: never below the last finite bucket.
        buckets.push((f64::INFINITY, count.max(cumulative)));
        #[allow(clippy::cast_precision_loss)] // nanoseconds as seconds, for display
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, count.max(cumulative), buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_everything() {
        let h = Histogram::default();
        for ms in [0, 1, 3, 40, 40, 2_000, 60_000] {
            h.observe(Duration::from_millis(ms));
        }
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 7);
        assert!((sum - 62.084).abs() < 1e-9, "{sum}");
        let at = |bound: f64| buckets.iter().find(|(b, _)| *b == bound).map(|(_, n)| *n);
        assert_eq!(at(0.0001), Some(1));
        assert_eq!(at(0.001), Some(2));
        assert_eq!(at(0.005), Some(3));
        assert_eq!(at(0.05), Some(5));
        assert_eq!(at(2.5), Some(6));
        assert_eq!(at(30.0), Some(6));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 7)));
    }
}
