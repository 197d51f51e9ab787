//! The single writer thread. It alone assigns seqs, so seqs follow arrival
//! order with no lock. A group is: take every queued request (up to
//! `max_group`), apply them in one sled transaction, flush once, then make the
//! group visible (durable head, broadcast) and answer each request.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

use bosun_proto::{now_ts, Envelope, ENVELOPE_VERSION};
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
    index: Vec<(IVec, IVec)>,
    /// (tree position, key, value or delete)
    writes: Vec<(usize, IVec, Option<IVec>)>,
}

struct Staged {
    ack: Ack,
    envelopes: Vec<Arc<Envelope>>,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        receiver: mpsc::Receiver<Msg>,
        policy: FlushPolicy,
        max_group: usize,
        head: u64,
    ) -> Writer {
        Writer { shared, receiver, policy, max_group, next_seq: head + 1, failed: None }
    }

    pub(crate) fn run(mut self) {
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
            writes: Vec::new(),
        };
        let mut staged = Vec::with_capacity(group.len());
        for Request { batch, ack } in group {
            // A request that cannot be encoded fails alone and gives its seqs
            // back, so the rest of the group stays gap-free.
            match self.stage(batch, &mut plan) {
                Ok(envelopes) => staged.push(Staged { ack, envelopes }),
                Err(e) => ack.send(Err(e)),
            }
        }
        if staged.is_empty() {
            return;
        }
        plan.pages = codec::build_pages(&plan.encoded);
        plan.index = index_entries(&staged);

        let olds = RefCell::new(Vec::new());
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
                if self.next_seq > first_seq {
                    self.shared.head.store(self.next_seq - 1, Ordering::Release);
                }
                for envelope in staged.iter().flat_map(|s| &s.envelopes) {
                    // Err only means nobody listens right now.
                    let _ = self.shared.live.send(envelope.clone());
                }
                tracing::trace!(requests = staged.len(), events = plan.encoded.len(), "group committed");
                for Staged { ack, envelopes } in staged {
                    ack.send(Ok(envelopes));
                }
            }
            Err(error) => {
                tracing::error!(%error, requests = staged.len(), "commit group failed; undoing it");
                if let Err(undo_error) = undo(&plan, &olds.borrow()) {
                    let why = format!("commit failed ({error}) and could not be undone ({undo_error})");
                    tracing::error!("{why}");
                    self.failed = Some(why);
                }
                self.next_seq = first_seq;
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
            let envelope =
                Envelope { v: ENVELOPE_VERSION, seq, ts: ts.clone(), topic: event.topic, kind: event.kind, data: event.data };
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

/// One index entry per topic per group (see `codec`).
fn index_entries(staged: &[Staged]) -> Vec<(IVec, IVec)> {
    let mut order: Vec<(&bosun_proto::Topic, Vec<u64>)> = Vec::new();
    let mut position: HashMap<&str, usize> = HashMap::new();
    for envelope in staged.iter().flat_map(|s| &s.envelopes) {
        let at = *position.entry(envelope.topic.as_str()).or_insert_with(|| {
            order.push((&envelope.topic, Vec::new()));
            order.len() - 1
        });
        order[at].1.push(envelope.seq);
    }
    order
        .into_iter()
        .map(|(topic, seqs)| {
            let key = codec::index_key(&codec::index_prefix(topic), seqs[0]);
            (IVec::from(key), IVec::from(codec::index_value(&seqs)))
        })
        .collect()
}

/// One transaction, so a crash keeps all of the group or none of it. `olds`
/// receives the previous value of every record write, for `undo`.
fn apply(plan: &Plan, olds: &RefCell<Vec<Option<IVec>>>) -> Result<(), sled::Error> {
    let result: Result<(), TransactionError<()>> = plan.trees[..].transaction(|tx| {
        // sled may run this closure again on a conflict; start clean.
        let mut olds = olds.borrow_mut();
        olds.clear();
        for (key, value) in &plan.pages {
            tx[EVENTS_AT].insert(key, value)?;
        }
        for (key, value) in &plan.index {
            tx[INDEX_AT].insert(key, value)?;
        }
        for (at, key, value) in &plan.writes {
            let old = match value {
                Some(value) => tx[*at].insert(key, value)?,
                None => tx[*at].remove(key)?,
            };
            olds.push(old);
        }
        Ok(())
    });
    result.map_err(|e| match e {
        TransactionError::Storage(e) => e,
        TransactionError::Abort(()) => sled::Error::ReportableBug("transaction aborted without a reason".into()),
    })
}

/// Puts the in-memory trees back as they were before the group, newest write
/// first so a key written twice ends at its original value.
fn undo(plan: &Plan, olds: &[Option<IVec>]) -> Result<(), sled::Error> {
    for (key, _) in &plan.pages {
        plan.trees[EVENTS_AT].remove(key)?;
    }
    for (key, _) in &plan.index {
        plan.trees[INDEX_AT].remove(key)?;
    }
    for ((at, key, _), old) in plan.writes.iter().zip(olds).rev() {
        match old {
            Some(value) => plan.trees[*at].insert(key, value.clone())?,
            None => plan.trees[*at].remove(key)?,
        };
    }
    Ok(())
}
