//! The single writer thread. It alone assigns seqs, so seqs follow arrival
//! order with no lock. A group is: take every queued request (up to
//! `max_group`), apply them in one sled transaction, flush once, then make the
//! group visible (durable head, broadcast) and answer each request.
//!
//! The topic index is not written per group: a group's entries go to the
//! pending index in memory, and every so often a group's transaction persists
//! all pending entries plus its own, with `indexed_upto` (see `pending`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use bosun_proto::{now_ts, Envelope, Topic, ENVELOPE_VERSION};
use sled::transaction::TransactionError;
use sled::{IVec, Transactional};
use tokio::sync::oneshot;

use crate::batch::Write;
use crate::codec;
use crate::store::{FlushPolicy, Shared};
use crate::{Batch, StoreError};

pub(crate) type CommitResult = Result<Vec<Arc<Envelope>>, StoreError>;

pub(crate) enum Msg {
    Commit(Request),
    Stop,
}

pub(crate) struct Request {
    pub(crate) batch: Batch,
    pub(crate) ack: Ack,
    /// When the caller handed it over: the commit latency counts from here.
    pub(crate) submitted: Instant,
}

pub(crate) enum Ack {
    Async(oneshot::Sender<CommitResult>),
    Blocking(mpsc::SyncSender<CommitResult>),
}

impl Ack {
    fn send(self, result: CommitResult) {
        // A caller that stopped waiting has nothing to learn: its batch is
        // committed either way.
        match self {
            Ack::Async(tx) => {
                let _ = tx.send(result);
            }
            Ack::Blocking(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    receiver: mpsc::Receiver<Msg>,
    policy: FlushPolicy,
    max_group: usize,
    next_seq: u64,
    /// Set when a failed group could not be undone: the in-memory trees may
    /// then disagree with `next_seq`, so no further write is safe.
    failed: Option<String>,
    /// When the pending index was last persisted; `None` until the first
    /// group after open, which persists whatever `Store::open` rebuilt (and
    /// records `indexed_upto` in a store that predates it).
    last_persist: Option<Instant>,
}

/// Tree positions inside a group's transaction.
const EVENTS_AT: usize = 0;
const INDEX_AT: usize = 1;

/// Everything one group writes, encoded, ready for the transaction.
struct Plan {
    trees: Vec<sled::Tree>,
    tree_names: Vec<&'static str>,
    /// (seq, encoded envelope) of every staged event, seq ascending, no gap.
    encoded: Vec<(u64, Vec<u8>)>,
    pages: Vec<(IVec, IVec)>,
    /// Empty unless this group persists the pending index.
    index: Vec<(IVec, IVec)>,
    /// When this group persists the pending index: the position of `meta` in
    /// `trees` and the new `indexed_upto`.
    indexed_upto: Option<(usize, u64)>,
    /// (tree position, key, value or delete)
    writes: Vec<(usize, IVec, Option<IVec>)>,
}

/// What `apply` overwrote, for `undo`.
#[derive(Default)]
struct Olds {
    /// The previous value of every record write, in `Plan::writes` order.
    writes: Vec<Option<IVec>>,
    /// `Some(previous value)` once `indexed_upto` was written.
    indexed_upto: Option<Option<IVec>>,
}

struct Staged {
    ack: Ack,
    envelopes: Vec<Arc<Envelope>>,
    submitted: Instant,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        receiver: mpsc::Receiver<Msg>,
        policy: FlushPolicy,
        max_group: usize,
        head: u64,
    ) -> Writer {
        Writer { shared, receiver, policy, max_group, next_seq: head + 1, failed: None, last_persist: None }
    }

    pub(crate) fn run(mut self) {
        self.serve();
        // Best effort: so that a clean restart has nothing to rebuild. If it
        // fails, the next open rebuilds the entries from the event log.
        self.persist_pending_on_stop();
    }

    fn serve(&mut self) {
        loop {
            let first = match self.receiver.recv() {
                Ok(Msg::Commit(request)) => request,
                // Err: every handle is gone, nobody can send again.
                Ok(Msg::Stop) | Err(_) => return,
            };
            let mut group = vec![first];
            let mut stop = false;
            if self.policy == FlushPolicy::GroupCommit {
                // Whatever queued up during the previous flush shares this one.
                while group.len() < self.max_group {
                    match self.receiver.try_recv() {
                        Ok(Msg::Commit(request)) => group.push(request),
                        Ok(Msg::Stop) => {
                            stop = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            self.commit_group(group);
            if stop {
                return;
            }
        }
    }

    fn commit_group(&mut self, group: Vec<Request>) {
        if let Some(why) = &self.failed {
            for request in group {
                request.ack.send(Err(StoreError::Failed(why.clone())));
            }
            return;
        }
        let first_seq = self.next_seq;
        let mut plan = Plan {
            trees: vec![self.shared.events.clone(), self.shared.index.clone()],
            tree_names: vec![codec::EVENTS, codec::TOPIC_INDEX],
            encoded: Vec::new(),
            pages: Vec::new(),
            index: Vec::new(),
            indexed_upto: None,
            writes: Vec::new(),
        };
        let mut staged = Vec::with_capacity(group.len());
        for Request { batch, ack, submitted } in group {
            // A request that cannot be encoded fails alone and gives its seqs
            // back, so the rest of the group stays gap-free.
            match self.stage(batch, &mut plan) {
                Ok(envelopes) => staged.push(Staged { ack, envelopes, submitted }),
                Err(e) => ack.send(Err(e)),
            }
        }
        if staged.is_empty() {
            return;
        }
        plan.pages = codec::build_pages(&plan.encoded);
        let group_index = group_index(&staged);
        let persist = self.should_persist(&group_index, plan.encoded.len());
        if persist {
            plan.index = self.shared.pending().entries_with(&group_index);
            plan.trees.push(self.shared.meta.clone());
            plan.tree_names.push(codec::META);
            plan.indexed_upto = Some((plan.trees.len() - 1, self.next_seq - 1));
        }

        let olds = RefCell::new(Olds::default());
        let outcome = apply(&plan, &olds).and_then(|()| {
            #[cfg(test)]
            if let Some(hook) = self.shared.before_flush.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                hook()?;
            }
            let flushed = self.shared.db.flush();
            self.shared.flushes.fetch_add(1, Ordering::Relaxed);
            flushed.map(|_| ())
        });

        match outcome {
            Ok(()) => {
                // Before the head moves: a reader that sees the new head must
                // find the group's entries in pending or in the tree. Clearing
                // comes after the flush, so the persisted entries are in the
                // tree (and on disk) by then.
                {
                    let mut pending = self.shared.pending_mut();
                    if persist {
                        pending.clear();
                    } else {
                        for (topic, seqs) in &group_index {
                            pending.add(topic, seqs);
                        }
                    }
                }
                if persist {
                    self.last_persist = Some(Instant::now());
                }
                if self.next_seq > first_seq {
                    self.shared.head.store(self.next_seq - 1, Ordering::Release);
                }
                for envelope in staged.iter().flat_map(|s| &s.envelopes) {
                    // Err only means nobody listens right now.
                    let _ = self.shared.live.send(envelope.clone());
                }
                tracing::trace!(requests = staged.len(), events = plan.encoded.len(), "group committed");
                let metrics = &self.shared.metrics;
                metrics.events_per_flush.observe(plan.encoded.len() as f64);
                metrics.events_appended.inc_by(plan.encoded.len() as u64);
                for Staged { ack, envelopes, submitted } in staged {
                    ack.send(Ok(envelopes));
                    metrics.commit_latency.observe(submitted.elapsed().as_secs_f64());
                }
            }
            Err(error) => {
                // Pending is untouched: it never received this group's
                // entries, and keeps those it would have persisted.
                tracing::error!(%error, requests = staged.len(), "commit group failed; undoing it");
                if let Err(undo_error) = undo(&plan, &olds.borrow()) {
                    let why = format!("commit failed ({error}) and could not be undone ({undo_error})");
                    tracing::error!("{why}");
                    self.failed = Some(why);
                }
                self.next_seq = first_seq;
                self.shared.metrics.commit_failures.inc();
                for Staged { ack, .. } in staged {
                    ack.send(Err(StoreError::Sled(error.clone())));
                }
            }
        }
    }

    /// Assigns seqs to the batch's events and encodes everything into `plan`;
    /// on error `plan` and `next_seq` are as before (apart from a tree opened).
    fn stage(&mut self, batch: Batch, plan: &mut Plan) -> Result<Vec<Arc<Envelope>>, StoreError> {
        let mut writes = Vec::with_capacity(batch.writes.len());
        for Write { tree, key, value } in batch.writes {
            // Checked before the lookup: the plan holds the store's own trees.
            if codec::is_reserved(tree) {
                return Err(StoreError::ReservedTree(tree));
            }
            let at = match plan.tree_names.iter().position(|&name| name == tree) {
                Some(at) => at,
                None => {
                    plan.trees.push(self.shared.tree(tree)?);
                    plan.tree_names.push(tree);
                    plan.trees.len() - 1
                }
            };
            writes.push((at, IVec::from(key), value.map(IVec::from)));
        }

        let ts = now_ts();
        let mut seq = self.next_seq;
        let mut envelopes = Vec::with_capacity(batch.events.len());
        let mut encoded = Vec::with_capacity(batch.events.len());
        for event in batch.events {
            let envelope = Envelope {
                v: ENVELOPE_VERSION,
                seq,
                ts: ts.clone(),
                topic: event.topic,
                kind: event.kind,
                data: event.data,
            };
            encoded.push((seq, codec::encode_envelope(&envelope)?));
            envelopes.push(Arc::new(envelope));
            seq += 1;
        }

        self.next_seq = seq;
        plan.encoded.append(&mut encoded);
        plan.writes.append(&mut writes);
        Ok(envelopes)
    }
}

impl Writer {
    /// Whether this group persists the pending index (see `PersistLimits`).
    fn should_persist(&self, group: &[(&Topic, Vec<u64>)], events: usize) -> bool {
        let pending = self.shared.pending();
        if pending.is_empty() && events == 0 {
            return false;
        }
        let Some(last) = self.last_persist else { return true };
        let limits = self.shared.persist_limits();
        let topics = pending.topic_count() + group.iter().filter(|(topic, _)| !pending.holds_topic(topic)).count();
        pending.seq_count() + events >= limits.seqs || topics >= limits.topics || last.elapsed() >= limits.interval
    }

    /// Persists the pending index in a transaction of its own, when the writer
    /// stops. Every pending seq is durable and at or below the head.
    fn persist_pending_on_stop(&mut self) {
        if self.failed.is_some() {
            // The trees may disagree with memory; write nothing more.
            return;
        }
        #[cfg(test)]
        if self.shared.skip_final_persist.load(Ordering::Relaxed) {
            return;
        }
        let entries = {
            let pending = self.shared.pending();
            if pending.is_empty() {
                return;
            }
            pending.entries_with(&[])
        };
        let upto = self.next_seq - 1;
        let trees = [self.shared.index.clone(), self.shared.meta.clone()];
        let result: Result<(), TransactionError<()>> = trees[..].transaction(|tx| {
            for (key, value) in &entries {
                tx[0].insert(key, value)?;
            }
            tx[1].insert(codec::INDEXED_UPTO, &upto.to_be_bytes())?;
            Ok(())
        });
        let outcome = result.map_err(transaction_error).and_then(|()| {
            let flushed = self.shared.db.flush();
            self.shared.flushes.fetch_add(1, Ordering::Relaxed);
            flushed.map(|_| ())
        });
        match outcome {
            // Applied and flushed: the tree has every entry, pending may go.
            Ok(()) => self.shared.pending_mut().clear(),
            // Whatever was applied names durable events correctly, so nothing
            // is undone; pending keeps the entries for readers of this process
            // and the next open rebuilds them from the event log.
            Err(error) => {
                tracing::warn!(%error, "could not persist the topic index at close; the next open rebuilds it")
            }
        }
    }
}

/// The seqs of each topic in the group, topics in order of first appearance.
fn group_index(staged: &[Staged]) -> Vec<(&Topic, Vec<u64>)> {
    let mut order: Vec<(&Topic, Vec<u64>)> = Vec::new();
    let mut position: HashMap<&str, usize> = HashMap::new();
    for envelope in staged.iter().flat_map(|s| &s.envelopes) {
        let at = *position.entry(envelope.topic.as_str()).or_insert_with(|| {
            order.push((&envelope.topic, Vec::new()));
            order.len() - 1
        });
        order[at].1.push(envelope.seq);
    }
    order
}

fn transaction_error(e: TransactionError<()>) -> sled::Error {
    match e {
        TransactionError::Storage(e) => e,
        TransactionError::Abort(()) => sled::Error::ReportableBug("transaction aborted without a reason".into()),
    }
}

/// One transaction, so a crash keeps all of the group or none of it. `olds`
/// receives what the group overwrote, for `undo`.
fn apply(plan: &Plan, olds: &RefCell<Olds>) -> Result<(), sled::Error> {
    let result: Result<(), TransactionError<()>> = plan.trees[..].transaction(|tx| {
        // sled may run this closure again on a conflict; start clean.
        let mut olds = olds.borrow_mut();
        olds.writes.clear();
        olds.indexed_upto = None;
        for (key, value) in &plan.pages {
            tx[EVENTS_AT].insert(key, value)?;
        }
        for (key, value) in &plan.index {
            tx[INDEX_AT].insert(key, value)?;
        }
        if let Some((at, upto)) = plan.indexed_upto {
            olds.indexed_upto = Some(tx[at].insert(codec::INDEXED_UPTO, &upto.to_be_bytes())?);
        }
        for (at, key, value) in &plan.writes {
            let old = match value {
                Some(value) => tx[*at].insert(key, value)?,
                None => tx[*at].remove(key)?,
            };
            olds.writes.push(old);
        }
        Ok(())
    });
    result.map_err(transaction_error)
}

/// Puts the in-memory trees back as they were before the group, newest write
/// first so a key written twice ends at its original value.
///
/// The index keys are new (each starts with a seq above the previous
/// `indexed_upto`), so removing them restores the tree; the pending entries
/// they held stay in memory, since pending is only cleared after success.
fn undo(plan: &Plan, olds: &Olds) -> Result<(), sled::Error> {
    for (key, _) in &plan.pages {
        plan.trees[EVENTS_AT].remove(key)?;
    }
    for (key, _) in &plan.index {
        plan.trees[INDEX_AT].remove(key)?;
    }
    if let (Some((at, _)), Some(old)) = (plan.indexed_upto, &olds.indexed_upto) {
        match old {
            Some(value) => plan.trees[at].insert(codec::INDEXED_UPTO, value.clone())?,
            None => plan.trees[at].remove(codec::INDEXED_UPTO)?,
        };
    }
    for ((at, key, _), old) in plan.writes.iter().zip(&olds.writes).rev() {
        match old {
            Some(value) => plan.trees[*at].insert(key, value.clone())?,
            None => plan.trees[*at].remove(key)?,
        };
    }
    Ok(())
}
