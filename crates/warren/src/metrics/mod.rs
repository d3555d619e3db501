//! The Prometheus metrics of `[daemon] metrics_listen`: every family read at scrape time from
//! what the daemon keeps anyway (host status and counters, forward counters), so scraping
//! takes no lock that forwarding waits on. `http` serves them.

pub mod http;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::control::ControlState;
use crate::forward::Readiness;
use crate::session::{CLASSES, HostState, LossReason, OpenFailure};
use crate::stats::Histogram;

/// The states `warren_host_state` has a series for.
const STATES: [&str; 5] = HostState::NAMES;

/// Reads the daemon's state on every scrape.
struct Collect {
    state: watch::Receiver<ControlState>,
}

impl std::fmt::Debug for Collect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Collect")
    }
}

/// The metrics text (OpenMetrics) of the daemon publishing `state`.
pub fn render(state: &watch::Receiver<ControlState>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Collect {
        state: state.clone(),
    }));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// One family: its descriptor, then one sample per label set.
fn family<'a, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels<'a>, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A histogram family from `histograms`, one per label set.
fn histograms<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels<'a>, &'a Histogram)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in samples {
        let (sum, count, cumulative) = h.snapshot();
        // The snapshot is cumulative and ends with f64::INFINITY. prometheus-client's encoder
        // takes each bucket's own count (it adds them up itself), and writes `le="+Inf"` only
        // for f64::MAX, the last bound of its own histograms (f64::INFINITY would come out as
        // `le="inf"`, which OpenMetrics rejects).
        let mut below = 0;
        let buckets: Vec<(f64, u64)> = cumulative
            .into_iter()
            .map(|(bound, n)| {
                let own = n.saturating_sub(below);
                below = n;
                (if bound.is_infinite() { f64::MAX } else { bound }, own)
            })
            .collect();
        metric
            .encode_family(&labels)?
            .encode_histogram::<Labels<'_>>(sum, count, &buckets, None)?;
    }
    Ok(())
}

/// A single label.
fn one<'a>(key: &'static str, value: &'a str) -> Labels<'a> {
    vec![(key, value)]
}

fn gauge(v: bool) -> ConstGauge {
    ConstGauge::new(i64::from(v))
}

impl Collector for Collect {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let state = self.state.borrow().clone();
        let hosts: Vec<(
            &String,
            crate::session::HostStatus,
            &crate::session::HostHandle,
        )> = state
            .hosts
            .iter()
            .map(|(name, h)| (name, h.status(), h))
            .collect();
        family(
            &mut e,
            "warren_host_up",
            "1 while the host's session is up",
            MetricType::Gauge,
            hosts
                .iter()
                .map(|(n, s, _)| (one("host", n), gauge(s.state == HostState::Up))),
        )?;
        family(
            &mut e,
            "warren_host_state",
            "1 for the state the host is in",
            MetricType::Gauge,
            hosts.iter().flat_map(|(n, s, _)| {
                let now = s.state.name();
                STATES.iter().map(move |st| {
                    (
                        vec![("host", n.as_str()), ("state", *st)],
                        gauge(*st == now),
                    )
                })
            }),
        )?;
        family(
            &mut e,
            "warren_host_connect_failures",
            "Attempts to bring a session up that failed, by failure class",
            MetricType::Counter,
            hosts.iter().flat_map(|(n, _, h)| {
                CLASSES.iter().map(move |c| {
                    (
                        vec![("host", n.as_str()), ("class", c.as_str())],
                        ConstCounter::new(h.counters().connect_failures(*c)),
                    )
                })
            }),
        )?;
        family(
            &mut e,
            "warren_host_sessions_lost",
            "Sessions that were up and ended without being asked to, by reason",
            MetricType::Counter,
            hosts.iter().flat_map(|(n, _, h)| {
                LossReason::ALL.iter().map(move |r| {
                    (
                        vec![("host", n.as_str()), ("reason", r.as_str())],
                        ConstCounter::new(h.counters().sessions_lost(*r)),
                    )
                })
            }),
        )?;
        histograms(
            &mut e,
            "warren_keepalive_rtt_seconds",
            "Keepalive round trips to the server",
            hosts
                .iter()
                .map(|(n, _, h)| (one("host", n), &h.counters().keepalive_rtt)),
        )?;
        histograms(
            &mut e,
            "warren_channel_open_seconds",
            "Time for the server to open a connection's channel",
            hosts
                .iter()
                .map(|(n, _, h)| (one("host", n), &h.counters().channel_open)),
        )?;
        family(
            &mut e,
            "warren_channel_open_failures",
            "Channel opens for connections that failed, by reason",
            MetricType::Counter,
            hosts.iter().flat_map(|(n, _, h)| {
                OpenFailure::ALL.iter().map(move |r| {
                    (
                        vec![("host", n.as_str()), ("reason", r.as_str())],
                        ConstCounter::new(h.counters().open_failures(*r)),
                    )
                })
            }),
        )?;
        let carries = |name: &str| {
            state
                .hosts
                .get(name)
                .is_some_and(|h| h.status().state.carries_forwards())
        };
        let fwd = |f: &crate::forward::ForwardRuntime| f.config.name.clone();
        let forwards: Vec<(String, &crate::forward::ForwardRuntime)> =
            state.forwards.iter().map(|f| (fwd(f), f)).collect();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        family(
            &mut e,
            "warren_forward_ready",
            "1 while the forward carries connections",
            MetricType::Gauge,
            forwards.iter().map(|(n, f)| {
                let ready = f.readiness(carries(&f.config.host)) == Readiness::Ready;
                (one("forward", n), gauge(ready))
            }),
        )?;
        family(
            &mut e,
            "warren_forward_connections_active",
            "Connections open now",
            MetricType::Gauge,
            forwards.iter().map(|(n, f)| {
                let active = i64::try_from(load(&f.counters.active)).unwrap_or(i64::MAX);
                (one("forward", n), ConstGauge::new(active))
            }),
        )?;
        family(
            &mut e,
            "warren_forward_connections",
            "Connections accepted",
            MetricType::Counter,
            forwards.iter().map(|(n, f)| {
                (
                    one("forward", n),
                    ConstCounter::new(load(&f.counters.total)),
                )
            }),
        )?;
        family(
            &mut e,
            "warren_forward_connections_refused",
            "Connections refused, by reason (limit: max_connections were open)",
            MetricType::Counter,
            forwards.iter().map(|(n, f)| {
                (
                    vec![("forward", n.as_str()), ("reason", "limit")],
                    ConstCounter::new(load(&f.counters.refused)),
                )
            }),
        )?;
        family(
            &mut e,
            "warren_forward_bytes",
            "Bytes carried: in = towards the egress, out = back to the ingress",
            MetricType::Counter,
            forwards.iter().flat_map(|(n, f)| {
                [
                    ("in", load(&f.counters.bytes_in)),
                    ("out", load(&f.counters.bytes_out)),
                ]
                .into_iter()
                .map(move |(d, v)| {
                    (
                        vec![("forward", n.as_str()), ("direction", d)],
                        ConstCounter::new(v),
                    )
                })
            }),
        )?;
        family(
            &mut e,
            "warren_forward_probe_up",
            "1 while the forward's egress answers its probe (forwards with probe_interval)",
            MetricType::Gauge,
            forwards.iter().filter_map(|(n, f)| {
                f.status().probe.map(|p| {
                    (
                        one("forward", n),
                        gauge(p.state == crate::forward::ProbeState::Ok),
                    )
                })
            }),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// One histogram family with one series.
    #[derive(Debug)]
    struct One(Histogram);

    impl Collector for One {
        fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
            histograms(&mut e, "t_seconds", "test", [(one("host", "h"), &self.0)])
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_once_and_end_with_the_openmetrics_inf_bucket() {
        let h = Histogram::default();
        for ms in [1, 3, 60_000] {
            h.observe(Duration::from_millis(ms));
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(One(h)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        for (le, n) in [
            ("0.0005", 0),
            ("0.001", 1),
            ("0.0025", 1),
            ("0.005", 2),
            ("30.0", 2),
            ("+Inf", 3),
        ] {
            let line = format!("t_seconds_bucket{{le=\"{le}\",host=\"h\"}} {n}\n");
            assert!(out.contains(&line), "{line:?} in:\n{out}");
        }
        assert!(out.contains("t_seconds_count{host=\"h\"} 3\n"), "{out}");
        assert!(!out.contains("le=\"inf\""), "{out}");
    }
}
