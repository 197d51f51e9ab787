//! What the store's writer measures of itself, for `GET /metrics`.
//!
//! Kept by the writer thread as it commits (atomics and a histogram's lock,
//! never I/O), and registered by the daemon in its registry. The commit
//! latency is the caller's: from the moment a batch is handed to the writer
//! to its acknowledgement, flush included.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone)]
pub struct StoreMetrics {
    pub commit_latency: Histogram,
    pub events_per_flush: Histogram,
    pub events_appended: Counter,
    pub commit_failures: Counter,
}

impl Default for StoreMetrics {
    fn default() -> StoreMetrics {
        StoreMetrics {
            // 50 µs to about 3.3 s: a flush on this disk is a fraction of a
            // millisecond; seconds mean trouble.
            commit_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 17)),
            // 1 to 4096 events a flush (group commit under load).
            events_per_flush: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            events_appended: Counter::default(),
            commit_failures: Counter::default(),
        }
    }
}

impl StoreMetrics {
    /// Adds them to `registry` (names get its prefix, `bosun_` in the daemon).
    pub fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "store_commit_latency",
            "From a batch handed to the store to its acknowledgement, the flush that made it durable included",
            Unit::Seconds,
            self.commit_latency.clone(),
        );
        registry.register(
            "store_events_per_flush",
            "Events made durable by one flush (group commit shares a flush among queued commits)",
            self.events_per_flush.clone(),
        );
        registry.register("events_appended", "Events appended to the durable log", self.events_appended.clone());
        registry.register(
            "store_commit_failures",
            "Commit groups that failed and were undone",
            self.commit_failures.clone(),
        );
    }
}
