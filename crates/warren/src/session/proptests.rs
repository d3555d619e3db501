//! Property test of what the session derives from settings `warren check` accepts: the
//! keepalive deadline (interval times count), the reconnect backoff and the retry times
//! never overflow or panic, for any generated valid configuration, extremes included.

use std::path::Path;
use std::time::{Instant, SystemTime};

use proptest::prelude::*;

use super::backoff::Backoff;
use super::connect::ssh_client_config;
use crate::config::proptest_model::{env, model};
use crate::config::{Config, MAX_DURATION};
use crate::control::status::short_duration;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn accepted_settings_derive_values_without_panicking(m in model()) {
        let (src, _) = m.render(None);
        let c = Config::parse(&src, Path::new("/etc/warren/w.toml"), &env(Path::new("/home/op")))
            .map_err(|e| TestCaseError::fail(format!("{e}\n{src}")))?;
        let (now, wall) = (Instant::now(), SystemTime::now());
        // ssh_client_config reads the known_hosts files on a blocking thread.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(now.checked_add(c.daemon.shutdown_grace).is_some());
        for h in c.hosts.values() {
            let ssh = runtime.block_on(ssh_client_config(h));
            let dead_after = h.keepalive_interval.checked_mul(h.keepalive_count_max + 1);
            prop_assert!(dead_after.is_some());
            prop_assert_eq!(ssh.inactivity_timeout, dead_after);
            prop_assert_eq!(ssh.keepalive_max, h.keepalive_count_max as usize);
            for d in [h.connect_timeout, h.keepalive_interval, dead_after.unwrap_or_default()] {
                prop_assert!(now.checked_add(d).is_some());
            }
            let mut backoff = Backoff::new(h.reconnect_min, h.reconnect_max);
            for _ in 0..40 {
                let step = backoff.step();
                let delay = backoff.next_delay();
                prop_assert!(delay <= step && step <= h.reconnect_max);
                prop_assert!(h.reconnect_max <= MAX_DURATION);
                prop_assert!(delay >= h.reconnect_min.min(step));
                prop_assert!(wall.checked_add(delay).is_some() && now.checked_add(delay).is_some());
                let _ = short_duration(delay);
            }
        }
    }
}
