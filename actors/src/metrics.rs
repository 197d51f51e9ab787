//! What the daemon counts of itself, for `GET /metrics` (docs/PROTOCOL.md,
//! "Metrics"): one registry holding the store's measurements and these.
//!
//! Each number is kept where the fact is known, and none is read back from
//! a log: how many actors of a kind are alive is a gauge their state holds
//! ([`Alive`], given back when the state is dropped, a panic included); an
//! approval's wait and an interrupt's latency are observed by the turn that
//! saw them end; tokens by the turn that spent them. What only the store
//! knows (approvals pending) is counted from it when scraped.

use bosun_state::StoreMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How recently a client must have polled `GET /api/v1/events` to count as
/// one that follows by polling rather than by WebSocket.
pub const POLLING_WINDOW: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecidedByLabel {
    /// `user`, `policy` (full-access) or `daemon` (cancelled as the turn ended).
    pub decided_by: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub provider: String,
    /// `input` or `output`.
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TurnEndLabels {
    pub provider: String,
    pub status: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Waits people make: from under a millisecond (the daemon deciding) to
/// about nine hours (an approval left overnight).
fn wait_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 13))
}

pub struct Metrics {
    registry: Registry,
    pub sessions: Gauge,
    pub turns: Gauge,
    pub workflow_runs: Gauge,
    pub terminals: Gauge,
    pub websocket_subscribers: Gauge,
    pub terminal_sockets: Gauge,
    pub polling_clients: Gauge,
    pub approvals_pending: Gauge,
    pub approval_wait: HistogramFamily<DecidedByLabel>,
    pub interrupt_latency: Histogram,
    pub actor_restarts: Family<KindLabel, Counter>,
    pub tokens: Family<TokenLabels, Counter>,
    pub turns_ended: Family<TurnEndLabels, Counter>,
    /// Who polled the event log last when, by client (device id or address).
    pollers: Mutex<HashMap<String, Instant>>,
}

impl Metrics {
    pub fn new(store: &StoreMetrics) -> Metrics {
        let mut registry = Registry::with_prefix("bosun");
        store.register(&mut registry);
        let metrics = Metrics {
            sessions: Gauge::default(),
            turns: Gauge::default(),
            workflow_runs: Gauge::default(),
            terminals: Gauge::default(),
            websocket_subscribers: Gauge::default(),
            terminal_sockets: Gauge::default(),
            polling_clients: Gauge::default(),
            approvals_pending: Gauge::default(),
            approval_wait: Family::new_with_constructor(wait_histogram),
            // 1 ms to about 65 s: an agent asked to stop should within a second.
            interrupt_latency: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            actor_restarts: Family::default(),
            tokens: Family::default(),
            turns_ended: Family::default(),
            pollers: Mutex::new(HashMap::new()),
            registry: Registry::default(),
        };
        metrics.register_into(&mut registry);
        Metrics { registry, ..metrics }
    }

    fn register_into(&self, r: &mut Registry) {
        r.register(
            "sessions",
            "Sessions held by the daemon (a live actor each; archived ones included)",
            self.sessions.clone(),
        );
        r.register("turns_active", "Turns under way", self.turns.clone());
        r.register("workflow_runs_active", "Workflow runs not ended", self.workflow_runs.clone());
        r.register("terminals_open", "Terminal bindings open (pty and emulator panes)", self.terminals.clone());
        r.register(
            "websocket_subscribers",
            "Event sockets (/ws) open and authenticated",
            self.websocket_subscribers.clone(),
        );
        r.register(
            "terminal_sockets",
            "Terminal sockets (/ws/terminal) open and authenticated",
            self.terminal_sockets.clone(),
        );
        r.register(
            "polling_clients",
            "Clients that polled GET /api/v1/events in the last minute (following without a WebSocket)",
            self.polling_clients.clone(),
        );
        r.register("approvals_pending", "Approvals waiting for a decision", self.approvals_pending.clone());
        r.register_with_unit(
            "approval_wait",
            "From an approval asked for to its decision",
            Unit::Seconds,
            self.approval_wait.clone(),
        );
        r.register_with_unit(
            "interrupt_latency",
            "From an interrupt asked for to its turn's end",
            Unit::Seconds,
            self.interrupt_latency.clone(),
        );
        r.register("actor_restarts", "Actors restarted by their supervisor, by kind", self.actor_restarts.clone());
        r.register("tokens", "Tokens spent by ended turns, by provider and direction", self.tokens.clone());
        r.register("turns_ended", "Turns ended, by provider and how they ended", self.turns_ended.clone());
    }

    /// A client polled the event log.
    pub fn polled(&self, client: String) {
        let mut pollers = self.pollers.lock().unwrap_or_else(|e| e.into_inner());
        pollers.insert(client, Instant::now());
        // Bounded by the clients of the last window, whoever asks.
        if pollers.len() > 1024 {
            pollers.retain(|_, at| at.elapsed() < POLLING_WINDOW);
        }
    }

    /// The exposition (OpenMetrics text), with the gauges read at scrape
    /// time brought up to date first.
    pub fn encode(&self, approvals_pending: usize) -> Result<String, std::fmt::Error> {
        self.approvals_pending.set(approvals_pending as i64);
        let polling = {
            let mut pollers = self.pollers.lock().unwrap_or_else(|e| e.into_inner());
            pollers.retain(|_, at| at.elapsed() < POLLING_WINDOW);
            pollers.len()
        };
        self.polling_clients.set(polling as i64);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    pub fn observe_approval_wait(&self, decided_by: &str, requested_at: &str, decided_at: &str) {
        let parse = |ts: &str| chrono::DateTime::parse_from_rfc3339(ts).ok();
        let (Some(asked), Some(decided)) = (parse(requested_at), parse(decided_at)) else { return };
        let wait = (decided - asked).to_std().unwrap_or_default();
        self.approval_wait
            .get_or_create(&DecidedByLabel { decided_by: decided_by.to_string() })
            .observe(wait.as_secs_f64());
    }

    pub fn turn_ended(&self, provider: &str, status: &str, usage: bosun_proto::Usage) {
        self.turns_ended
            .get_or_create(&TurnEndLabels { provider: provider.to_string(), status: status.to_string() })
            .inc();
        for (direction, tokens) in [("input", usage.input_tokens), ("output", usage.output_tokens)] {
            self.tokens
                .get_or_create(&TokenLabels { provider: provider.to_string(), direction: direction.to_string() })
                .inc_by(tokens);
        }
    }
}

/// One live actor (or socket) counted in `gauge` for as long as this lives.
pub struct Alive(Gauge);

impl Alive {
    pub fn new(gauge: &Gauge) -> Alive {
        gauge.inc();
        Alive(gauge.clone())
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_follow_their_holders_and_the_exposition_names_everything() {
        let metrics = Metrics::new(&StoreMetrics::default());
        let a = Alive::new(&metrics.turns);
        let b = Alive::new(&metrics.turns);
        assert_eq!(metrics.turns.get(), 2);
        drop(a);
        assert_eq!(metrics.turns.get(), 1);
        drop(b);
        assert_eq!(metrics.turns.get(), 0);

        metrics.observe_approval_wait("user", "2026-01-01T00:00:00Z", "2026-01-01T00:00:02.5Z");
        metrics.turn_ended("demo", "completed", bosun_proto::Usage::new(10, 3));
        metrics.polled("127.0.0.1".into());
        metrics.polled("127.0.0.1".into());
        let text = metrics.encode(4).expect("encode");
        assert!(text.contains("bosun_approvals_pending 4"), "{text}");
        assert!(text.contains("bosun_polling_clients 1"), "{text}");
        assert!(text.contains(r#"bosun_approval_wait_seconds_sum{decided_by="user"} 2.5"#), "{text}");
        assert!(text.contains(r#"bosun_tokens_total{provider="demo",direction="input"} 10"#), "{text}");
        assert!(text.contains("bosun_store_commit_latency_seconds_bucket"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
