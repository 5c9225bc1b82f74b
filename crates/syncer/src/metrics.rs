//! Prometheus metrics of the syncer: queue depth, syncs and errors by kind, sync latency
//! histogram by kind, and readiness (all caches synced). Rendered in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Debug, Default, Clone)]
struct KindStats {
    syncs: u64,
    errors: u64,
    buckets: [u64; BUCKETS.len()],
    sum: f64,
}

/// Counters shared between the syncer and whoever serves `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    depth: AtomicI64,
    in_flight: AtomicI64,
    ready: AtomicBool,
    kinds: Mutex<BTreeMap<&'static str, KindStats>>,
}

impl Metrics {
    pub(crate) fn queued(&self) {
        self.depth.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dequeued(&self, items: i64) {
        self.depth.fetch_sub(items, Ordering::Relaxed);
    }

    pub(crate) fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Reconciles running now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed).max(0)
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// True once every cache of the syncer has its initial list.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Items waiting in the work queue.
    pub fn queue_depth(&self) -> i64 {
        self.depth.load(Ordering::Relaxed).max(0)
    }

    pub(crate) fn observe(&self, kind: &'static str, took: Duration, ok: bool) {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let stats = kinds.entry(kind).or_default();
        stats.syncs += 1;
        if !ok {
            stats.errors += 1;
        }
        let seconds = took.as_secs_f64();
        stats.sum += seconds;
        for (bucket, bound) in stats.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
    }

    /// Errors counted for `kind` so far.
    pub fn errors(&self, kind: &str) -> u64 {
        self.kinds.lock().unwrap_or_else(|p| p.into_inner()).get(kind).map(|s| s.errors).unwrap_or(0)
    }

    /// The metrics in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP vkube_syncer_ready 1 when every cache of the syncer has its initial list.");
        let _ = writeln!(out, "# TYPE vkube_syncer_ready gauge");
        let _ = writeln!(out, "vkube_syncer_ready {}", u8::from(self.is_ready()));
        let _ = writeln!(out, "# HELP vkube_syncer_queue_depth Work items waiting to be reconciled.");
        let _ = writeln!(out, "# TYPE vkube_syncer_queue_depth gauge");
        let _ = writeln!(out, "vkube_syncer_queue_depth {}", self.queue_depth());
        let _ = writeln!(out, "# HELP vkube_syncer_in_flight Reconciles running now.");
        let _ = writeln!(out, "# TYPE vkube_syncer_in_flight gauge");
        let _ = writeln!(out, "vkube_syncer_in_flight {}", self.in_flight());
        let kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let _ = writeln!(out, "# HELP vkube_syncer_syncs_total Reconciles run, by kind.");
        let _ = writeln!(out, "# TYPE vkube_syncer_syncs_total counter");
        for (kind, stats) in &kinds {
            let _ = writeln!(out, "vkube_syncer_syncs_total{{kind=\"{kind}\"}} {}", stats.syncs);
        }
        let _ =
            writeln!(out, "# HELP vkube_syncer_sync_errors_total Reconciles that failed (and were retried), by kind.");
        let _ = writeln!(out, "# TYPE vkube_syncer_sync_errors_total counter");
        for (kind, stats) in &kinds {
            let _ = writeln!(out, "vkube_syncer_sync_errors_total{{kind=\"{kind}\"}} {}", stats.errors);
        }
        let _ = writeln!(out, "# HELP vkube_syncer_sync_duration_seconds Time one reconcile took, by kind.");
        let _ = writeln!(out, "# TYPE vkube_syncer_sync_duration_seconds histogram");
        for (kind, stats) in &kinds {
            for (count, bound) in stats.buckets.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "vkube_syncer_sync_duration_seconds_bucket{{kind=\"{kind}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "vkube_syncer_sync_duration_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {}",
                stats.syncs
            );
            let _ = writeln!(out, "vkube_syncer_sync_duration_seconds_sum{{kind=\"{kind}\"}} {}", stats.sum);
            let _ = writeln!(out, "vkube_syncer_sync_duration_seconds_count{{kind=\"{kind}\"}} {}", stats.syncs);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::default();
        metrics.observe("Pod", Duration::from_millis(3), true);
        metrics.observe("Pod", Duration::from_millis(30), false);
        let text = metrics.render();
        assert!(text.contains("vkube_syncer_syncs_total{kind=\"Pod\"} 2"), "{text}");
        assert!(text.contains("vkube_syncer_sync_errors_total{kind=\"Pod\"} 1"));
        assert!(text.contains("vkube_syncer_sync_duration_seconds_bucket{kind=\"Pod\",le=\"0.005\"} 1"));
        assert!(text.contains("vkube_syncer_sync_duration_seconds_bucket{kind=\"Pod\",le=\"0.05\"} 2"));
        assert!(text.contains("vkube_syncer_sync_duration_seconds_bucket{kind=\"Pod\",le=\"+Inf\"} 2"));
        assert!(text.contains("vkube_syncer_ready 0"));
    }
}
