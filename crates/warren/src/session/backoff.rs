//! Jittered exponential backoff between `reconnect_min` and `reconnect_max`.

use std::time::Duration;

/// Delays that double from `min` to `max`, each drawn from the upper half of its step
/// ("equal jitter"), so that many hosts failing together do not retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next delay; each call doubles the step until `max`.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step();
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        let jitter = rand::random_range(0.0..=1.0);
        (half + half.mul_f64(jitter)).max(self.min.min(step))
    }

    /// The undithered step of the next delay.
    pub fn step(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(30));
        self.min.saturating_mul(factor).min(self.max)
    }

    /// Back to `min`, after a session has stayed up long enough.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_max_and_resets() {
        let (min, max) = (Duration::from_millis(200), Duration::from_secs(2));
        let mut b = Backoff::new(min, max);
        let mut steps = Vec::new();
        for _ in 0..8 {
            let step = b.step();
            let d = b.next_delay();
            assert!(d <= step, "{d:?} > {step:?}");
            assert!(d >= min.min(step), "{d:?} below min");
            assert!(d >= step / 2, "{d:?} below half of {step:?}");
            steps.push(step.as_millis());
        }
        assert_eq!(steps, [200, 400, 800, 1600, 2000, 2000, 2000, 2000]);
        b.reset();
        assert_eq!(b.step(), min);
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..200 {
            assert!(b.next_delay() <= Duration::from_secs(60));
        }
    }
}
