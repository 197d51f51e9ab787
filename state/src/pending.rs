//! The pending topic index: topic → seqs of durable events whose entries are
//! not in the `topic_index` tree yet.
//!
//! sled's cost is per insert, so writing one index entry per topic per commit
//! group made the index the main cost of a group with many topics. Instead
//! the writer keeps the entries of recent groups here and persists all of them
//! at once, one entry per topic, inside the transaction of a later group (see
//! [`PersistLimits`]). That transaction also sets `indexed_upto` in `meta`: every
//! seq up to it has its entry in the tree.
//!
//! Nothing is lost in a crash: the events themselves are in the event log, and
//! `Store::open` rebuilds this map from the pages after `indexed_upto`. That
//! tail is shorter than [`PersistLimits::seqs`], because the group that reaches
//! the limit persists in its own transaction, so opening stays O(tail).

use std::collections::HashMap;
use std::time::Duration;

use bosun_proto::Topic;
use sled::IVec;

use crate::codec;
use crate::StoreError;

/// When the writer persists the pending index: at the first group after
/// open, then at the first group that would leave pending holding at least
/// `seqs` seqs or `topics` topics, or that comes `interval` after the last
/// persist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PersistLimits {
    /// Bounds the tail `Store::open` re-reads after a crash, and the memory.
    pub(crate) seqs: usize,
    /// Bounds the inserts (and so the latency) of the group that persists:
    /// one insert per topic.
    pub(crate) topics: usize,
    /// Keeps the tree current when the store is quiet.
    pub(crate) interval: Duration,
}

/// Measured with `bosun bench --only append` (one event per commit, about 65
/// to 580 events per group): with 128 topics a persist comes every ~60 groups,
/// about two inserts per group instead of about 65. The topic cap equals the
/// seq cap, so only the seq cap acts: a lower one undoes the gain whenever
/// more topics than that are active (512 topics: 57k to 62k ev/s with a cap of
/// 256, as without the lazy index, against 107k to 127k; 1024 topics: 65k
/// with a cap of 1024 against 95k). The price is the persisting group: up to
/// one insert per pending topic, a few milliseconds when thousands of topics
/// are active, which then cost as much in every group without the lazy index.
pub(crate) const PERSIST_LIMITS: PersistLimits =
    PersistLimits { seqs: 4096, topics: 4096, interval: Duration::from_millis(250) };

#[derive(Debug, Default)]
pub(crate) struct PendingIndex {
    /// Seqs ascending per topic; every one is at or below the durable head.
    by_topic: HashMap<Topic, Vec<u64>>,
    seqs: usize,
}

impl PendingIndex {
    pub(crate) fn is_empty(&self) -> bool {
        self.seqs == 0
    }

    pub(crate) fn seq_count(&self) -> usize {
        self.seqs
    }

    pub(crate) fn topic_count(&self) -> usize {
        self.by_topic.len()
    }

    pub(crate) fn holds_topic(&self, topic: &Topic) -> bool {
        self.by_topic.contains_key(topic)
    }

    /// `seqs` must be ascending and above every seq already held for `topic`
    /// (the writer adds whole groups in seq order).
    pub(crate) fn add(&mut self, topic: &Topic, seqs: &[u64]) {
        if seqs.is_empty() {
            return;
        }
        match self.by_topic.get_mut(topic) {
            Some(held) => {
                debug_assert!(held.last() < seqs.first(), "pending seqs of {topic} out of order");
                held.extend_from_slice(seqs);
            }
            None => {
                self.by_topic.insert(topic.clone(), seqs.to_vec());
            }
        }
        self.seqs += seqs.len();
    }

    pub(crate) fn clear(&mut self) {
        self.by_topic.clear();
        self.seqs = 0;
    }

    /// Seqs of `topic` in `since + 1..=head`, ascending, at most `limit`.
    pub(crate) fn seqs(&self, topic: &Topic, since: u64, head: u64, limit: usize) -> Vec<u64> {
        let Some(held) = self.by_topic.get(topic) else { return Vec::new() };
        let from = held.partition_point(|&seq| seq <= since);
        let to = held.partition_point(|&seq| seq <= head);
        held[from..to.max(from)].iter().take(limit).copied().collect()
    }

    /// One `topic_index` entry per topic for everything held plus `group`,
    /// whose seqs are all above the held ones.
    pub(crate) fn entries_with(&self, group: &[(&Topic, Vec<u64>)]) -> Vec<(IVec, IVec)> {
        let mut out = Vec::with_capacity(self.by_topic.len() + group.len());
        let in_group: HashMap<&Topic, &[u64]> = group.iter().map(|(topic, seqs)| (*topic, seqs.as_slice())).collect();
        let mut seqs = Vec::new();
        for (topic, held) in &self.by_topic {
            seqs.clear();
            seqs.extend_from_slice(held);
            if let Some(more) = in_group.get(topic) {
                seqs.extend_from_slice(more);
            }
            out.push(entry(topic, &seqs));
        }
        for (topic, seqs) in group {
            if !self.by_topic.contains_key(*topic) && !seqs.is_empty() {
                out.push(entry(topic, seqs));
            }
        }
        out
    }

    /// The pending index of a store whose `topic_index` covers every seq up to
    /// `indexed_upto`: the topics of the events after it, read from the pages.
    pub(crate) fn rebuild(events: &sled::Tree, indexed_upto: u64, head: u64) -> Result<PendingIndex, StoreError> {
        let mut pending = PendingIndex::default();
        if indexed_upto >= head {
            return Ok(pending);
        }
        let from = indexed_upto + 1;
        // Start at the page holding `from`, which may begin before it.
        let start = match events.range(..=codec::seq_key(from)).next_back() {
            Some(item) => item?.0,
            None => IVec::from(&codec::seq_key(from)),
        };
        for item in events.range(start..=IVec::from(&codec::seq_key(head))) {
            let (key, value) = item?;
            let page = codec::Page::parse(&key, &value)?;
            for seq in page.first().max(from)..=page.last().min(head) {
                if let Some(envelope) = page.envelope(seq) {
                    pending.add(&envelope?.topic, &[seq]);
                }
            }
        }
        Ok(pending)
    }
}

fn entry(topic: &Topic, seqs: &[u64]) -> (IVec, IVec) {
    let key = codec::index_key(&codec::index_prefix(topic), seqs[0]);
    (IVec::from(key), IVec::from(codec::index_value(seqs)))
}
