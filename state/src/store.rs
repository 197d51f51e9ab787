//! The store handle: opening, reads, and the door to the writer thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bosun_proto::{Envelope, Topic};
use sled::IVec;
use tokio::sync::{broadcast, oneshot};

use crate::codec::{self, EVENTS, INDEXED_UPTO, META, TOPIC_INDEX};
use crate::pending::{PendingIndex, PersistLimits, PERSIST_LIMITS};
use crate::writer::{Ack, Msg, Request, Writer};
use crate::{Batch, Record, StoreError};

/// Layout version of the whole store (tree names, key and value layouts),
/// recorded in the `meta` tree. Record schemas are versioned separately.
/// 1 stored one event per key; 2 stores pages of events.
///
/// Still 2 with the lazily persisted topic index: keys and values are laid out
/// as before, and a store without `indexed_upto` in `meta` (written before it
/// existed, when every group indexed its own events) reads as indexed up to
/// its head. A binary that predates `indexed_upto` can still open a store
/// written since; after a clean close it reads it fully, but after a crash it
/// would miss topic entries of the unindexed tail (see `pending`).
pub const FORMAT_VERSION: u16 = 2;
const FORMAT_KEY: &[u8] = b"format";

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    pub flush: FlushPolicy,
    /// Capacity of the live broadcast; a subscriber further behind gets
    /// `Lagged` and must catch up with `events_since`.
    pub live_capacity: usize,
    /// Most requests one group commit takes from the queue.
    pub max_group: usize,
}

impl StoreConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StoreConfig { path: path.into(), ..Self::default() }
    }
}

impl Default for StoreConfig {
    /// The path is empty: set it (`open` refuses an empty path).
    fn default() -> Self {
        StoreConfig { path: PathBuf::new(), flush: FlushPolicy::GroupCommit, live_capacity: 8192, max_group: 4096 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// Requests queued while the writer is busy share one flush.
    #[default]
    GroupCommit,
    /// One flush per `commit` call; only for comparison in benchmarks.
    EveryRequest,
}

/// State shared by the handle (readers) and the writer thread.
pub(crate) struct Shared {
    pub(crate) db: sled::Db,
    pub(crate) events: sled::Tree,
    pub(crate) index: sled::Tree,
    pub(crate) meta: sled::Tree,
    /// Index entries of durable events that are not in `index` yet. Only the
    /// writer changes it: it adds a group's entries before publishing the
    /// group, and clears it only after the entries are applied to `index`
    /// (and flushed). See `Store::topic_events_since` for the readers' side.
    pub(crate) pending: RwLock<PendingIndex>,
    trees: RwLock<HashMap<&'static str, sled::Tree>>,
    /// Highest seq that is flushed and published. Readers never go past it.
    pub(crate) head: AtomicU64,
    pub(crate) flushes: AtomicU64,
    pub(crate) metrics: crate::StoreMetrics,
    pub(crate) live: broadcast::Sender<Arc<Envelope>>,
    /// Lets tests stop the writer between apply and flush, or fail the flush.
    #[cfg(test)]
    #[allow(clippy::type_complexity)]
    pub(crate) before_flush: Mutex<Option<Box<dyn FnMut() -> Result<(), sled::Error> + Send>>>,
    /// Lets tests persist the pending index more or less often.
    #[cfg(test)]
    pub(crate) persist_limits: Mutex<PersistLimits>,
    /// Lets tests stop the writer without persisting the pending index, as a
    /// crash would.
    #[cfg(test)]
    pub(crate) skip_final_persist: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub(crate) fn persist_limits(&self) -> PersistLimits {
        #[cfg(test)]
        return *self.persist_limits.lock().unwrap_or_else(|e| e.into_inner());
        #[cfg(not(test))]
        PERSIST_LIMITS
    }

    pub(crate) fn pending(&self) -> std::sync::RwLockReadGuard<'_, PendingIndex> {
        // Poisoning cannot leave a half-updated map: the writer's updates
        // (extend a Vec, insert, clear) do not panic midway, and an
        // allocation failure aborts the process.
        self.pending.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn pending_mut(&self) -> std::sync::RwLockWriteGuard<'_, PendingIndex> {
        self.pending.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn tree(&self, name: &'static str) -> Result<sled::Tree, StoreError> {
        if codec::is_reserved(name) {
            return Err(StoreError::ReservedTree(name));
        }
        if let Some(tree) = self.trees.read().unwrap_or_else(|e| e.into_inner()).get(name) {
            return Ok(tree.clone());
        }
        let tree = self.db.open_tree(name)?;
        self.trees.write().unwrap_or_else(|e| e.into_inner()).insert(name, tree.clone());
        Ok(tree)
    }
}

/// The durable store. Cheap to clone; every clone talks to the same writer.
/// The writer stops on [`Store::close`] or when the last clone drops; the sled
/// database (and its file lock) is released when the last clone drops.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    sender: mpsc::Sender<Msg>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Store {
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        if config.path.as_os_str().is_empty() {
            return Err(StoreError::Config("empty path".into()));
        }
        let db = open_db(&config.path)?;
        let meta = db.open_tree(META)?;
        check_format(&db, &meta)?;
        let events = db.open_tree(EVENTS)?;
        let index = db.open_tree(TOPIC_INDEX)?;
        // The last key is found by descending the tree, not by scanning it.
        let head = match events.last()? {
            Some((key, value)) => codec::Page::parse(&key, &value)?.last(),
            None => 0,
        };
        // Missing: the store predates `indexed_upto`, when every group wrote
        // its own index entries, so everything up to the head is indexed.
        let indexed_upto = match meta.get(INDEXED_UPTO)? {
            Some(value) => codec::seq_from_bytes(META, &value)?,
            None => head,
        };
        // Written in the same transaction as the events up to it, so it cannot
        // pass the head; if it ever did, the tail after the head is what counts.
        if indexed_upto > head {
            tracing::warn!(indexed_upto, head, "indexed_upto is past the last event");
        }
        // Only the tail after `indexed_upto` is read (fewer events than the
        // persist limit), never the whole log.
        let pending = PendingIndex::rebuild(&events, indexed_upto.min(head), head)?;
        let (live, _) = broadcast::channel(config.live_capacity.max(1));
        let shared = Arc::new(Shared {
            db,
            events,
            index,
            meta,
            pending: RwLock::new(pending),
            trees: RwLock::new(HashMap::new()),
            head: AtomicU64::new(head),
            flushes: AtomicU64::new(0),
            metrics: crate::StoreMetrics::default(),
            live,
            #[cfg(test)]
            before_flush: Mutex::new(None),
            #[cfg(test)]
            persist_limits: Mutex::new(PERSIST_LIMITS),
            #[cfg(test)]
            skip_final_persist: std::sync::atomic::AtomicBool::new(false),
        });
        let (sender, receiver) = mpsc::channel();
        let writer = Writer::new(shared.clone(), receiver, config.flush, config.max_group.max(1), head);
        let handle = std::thread::Builder::new().name("bosun-store-writer".into()).spawn(move || writer.run())?;
        tracing::debug!(path = %config.path.display(), head, indexed_upto, "store opened");
        Ok(Store { inner: Arc::new(Inner { shared, sender, writer: Mutex::new(Some(handle)) }) })
    }

    /// Makes the next open fast. sled writes its recovery snapshot only when
    /// it opens a database, and on open replays everything logged since the
    /// previous open (about 0.7 s after writing a million events here, against
    /// 0.06 s with nothing to replay). Opening once at clean shutdown, after
    /// every clone of the store is dropped, moves that cost out of start-up.
    /// Fails (sled cannot take its lock) while a store on `path` is open.
    pub fn checkpoint(path: &std::path::Path) -> Result<(), StoreError> {
        let db = open_db(path)?;
        drop(db);
        Ok(())
    }

    /// Returns once the batch is flushed to disk and its events are published,
    /// with the envelopes in seq order. Dropping the future does not cancel
    /// the commit: once submitted, the batch is written.
    pub async fn commit(&self, mut batch: Batch) -> Result<Vec<Arc<Envelope>>, StoreError> {
        if let Some(refused) = batch.refused.take() {
            return Err(refused);
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let (tx, rx) = oneshot::channel();
        self.submit(batch, Ack::Async(tx))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Store::commit`] for threads outside the async runtime. Safe to call
    /// from a runtime thread too (it blocks that thread until the flush).
    pub fn commit_blocking(&self, mut batch: Batch) -> Result<Vec<Arc<Envelope>>, StoreError> {
        if let Some(refused) = batch.refused.take() {
            return Err(refused);
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(batch, Ack::Blocking(tx))?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    fn submit(&self, batch: Batch, ack: Ack) -> Result<(), StoreError> {
        let submitted = std::time::Instant::now();
        self.inner.sender.send(Msg::Commit(Request { batch, ack, submitted })).map_err(|_| StoreError::Closed)
    }

    /// What the writer measures (commit latency, events per flush...).
    pub fn metrics(&self) -> &crate::StoreMetrics {
        &self.inner.shared.metrics
    }

    /// The live tail, in seq order, from the next published event on.
    /// Subscribe before reading history and de-duplicate by seq; on `Lagged`,
    /// catch up with [`Store::events_since`].
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.inner.shared.live.subscribe()
    }

    pub fn durable_head(&self) -> u64 {
        self.inner.shared.head.load(Ordering::Acquire)
    }

    /// Events with `seq > since`, ascending, at most `limit`, never beyond
    /// [`Store::durable_head`]: an event applied but not yet flushed could
    /// still vanish in a crash, so no reader may see it.
    pub fn events_since(&self, since: u64, topic: Option<&Topic>, limit: usize) -> Result<Vec<Envelope>, StoreError> {
        let head = self.durable_head();
        if limit == 0 || since >= head {
            return Ok(Vec::new());
        }
        match topic {
            None => self.all_events_since(since, head, limit),
            Some(topic) => self.topic_events_since(topic, since, head, limit),
        }
    }

    fn all_events_since(&self, since: u64, head: u64, limit: usize) -> Result<Vec<Envelope>, StoreError> {
        let events = &self.inner.shared.events;
        let wanted = limit.min(usize::try_from(head - since).unwrap_or(usize::MAX));
        let mut out = Vec::with_capacity(wanted.min(4096));
        // Start at the page holding since + 1, which may begin before it.
        let start = match events.range(..=codec::seq_key(since + 1)).next_back() {
            Some(item) => item?.0,
            None => IVec::from(&codec::seq_key(since + 1)),
        };
        for item in events.range(start..=IVec::from(&codec::seq_key(head))) {
            let (key, value) = item?;
            let page = codec::Page::parse(&key, &value)?;
            for seq in page.first().max(since + 1)..=page.last().min(head) {
                if let Some(envelope) = page.envelope(seq) {
                    out.push(envelope?);
                }
                if out.len() >= wanted {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// The topic's seqs are the union of the persisted index (`shared.index`)
    /// and the writer's pending entries (`shared.pending`). Race-free because:
    /// - `head` was loaded (Acquire) before anything else, and the writer puts
    ///   a group's entries in pending or in the tree before it publishes the
    ///   head (Release), so every seq up to `head` is in one of the two then;
    /// - an entry only ever moves from pending to the tree: the writer clears
    ///   pending only after the transaction holding its entries is applied
    ///   and flushed, and nothing removes such an entry afterwards (a failed
    ///   group's undo removes the entries it wrote, but then pending was not
    ///   cleared, so they are still there);
    /// - pending is copied first, under its lock, and the tree read after: an
    ///   entry missing from the copy had already left pending, so it was in
    ///   the tree before the copy, so the tree read sees it.
    ///
    /// An entry may be in both (copied just before the writer cleared pending),
    /// hence the sort and dedup.
    fn topic_events_since(
        &self,
        topic: &Topic,
        since: u64,
        head: u64,
        limit: usize,
    ) -> Result<Vec<Envelope>, StoreError> {
        let shared = &self.inner.shared;
        let pending = shared.pending().seqs(topic, since, head, limit);
        let prefix = codec::index_prefix(topic);
        let start = codec::index_key(&prefix, since + 1);
        let end = codec::index_key(&prefix, head);
        let mut seqs: Vec<u64> = Vec::new();
        // An entry keyed at or below `since` may still list later seqs of its
        // group; only the last such entry can (groups cover disjoint ranges).
        if let Some(item) = shared.index.range(prefix.as_slice()..start.as_slice()).next_back() {
            let (key, value) = item?;
            seqs.extend(codec::index_seqs(&key, &value)?.into_iter().filter(|&s| s > since && s <= head));
        }
        // Entries cover disjoint, increasing seq ranges, so the first `limit`
        // seqs of the tree come from the first entries; the pending ones are
        // merged in below.
        if seqs.len() < limit {
            for item in shared.index.range(start.as_slice()..=end.as_slice()) {
                let (key, value) = item?;
                seqs.extend(codec::index_seqs(&key, &value)?.into_iter().filter(|&s| s <= head));
                if seqs.len() >= limit {
                    break;
                }
            }
        }
        if !pending.is_empty() {
            seqs.extend(pending);
            seqs.sort_unstable();
            seqs.dedup();
        }
        seqs.truncate(limit);
        let mut out = Vec::with_capacity(seqs.len());
        // Consecutive seqs of a topic often share a page: keep the last one.
        let mut page: Option<(IVec, IVec)> = None;
        for seq in seqs {
            let held = match &page {
                Some((key, value)) => codec::Page::parse(key, value)?.holds(seq),
                None => false,
            };
            if !held {
                page = match shared.events.range(..=codec::seq_key(seq)).next_back() {
                    Some(item) => Some(item?),
                    None => None,
                };
            }
            let envelope = match &page {
                Some((key, value)) => codec::Page::parse(key, value)?.envelope(seq).transpose()?,
                None => None,
            };
            let Some(envelope) = envelope else {
                tracing::warn!(seq, %topic, "topic index names a missing event");
                continue;
            };
            // Guards against an index entry left over from a failed commit
            // whose seq was later reused for another topic.
            if envelope.topic == *topic {
                out.push(envelope);
            }
        }
        Ok(out)
    }

    pub fn get<R: Record>(&self, key: &str) -> Result<Option<R>, StoreError> {
        let tree = self.inner.shared.tree(R::TREE)?;
        match tree.get(key.as_bytes())? {
            Some(value) => codec::decode_record(&value).map(Some),
            None => Ok(None),
        }
    }

    /// Every record of a kind, in key order.
    pub fn scan<R: Record>(&self) -> Result<Vec<R>, StoreError> {
        let tree = self.inner.shared.tree(R::TREE)?;
        decode_all(tree.iter())
    }

    /// Records whose key starts with `prefix`, in key order.
    pub fn scan_prefix<R: Record>(&self, prefix: &str) -> Result<Vec<R>, StoreError> {
        let tree = self.inner.shared.tree(R::TREE)?;
        decode_all(tree.scan_prefix(prefix.as_bytes()))
    }

    /// Records whose key starts with `prefix`, from the last one keyed at
    /// or before `from_key` (or the first after it, if none is), in key
    /// order, at most `limit`: the chunk holding an offset and those after.
    pub fn scan_prefix_from<R: Record>(
        &self,
        prefix: &str,
        from_key: &str,
        limit: usize,
    ) -> Result<Vec<R>, StoreError> {
        let tree = self.inner.shared.tree(R::TREE)?;
        let start = match tree.range(prefix.as_bytes()..=from_key.as_bytes()).next_back() {
            Some(item) => item?.0.to_vec(),
            None => prefix.as_bytes().to_vec(),
        };
        let prefix = prefix.as_bytes();
        decode_all(
            tree.range(start..)
                .take_while(|item| item.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
                .take(limit),
        )
    }

    /// The first and the last record whose key starts with `prefix`, read
    /// without walking the ones between.
    pub fn first_and_last<R: Record>(&self, prefix: &str) -> Result<Option<(R, R)>, StoreError> {
        let tree = self.inner.shared.tree(R::TREE)?;
        let mut iter = tree.scan_prefix(prefix.as_bytes());
        let Some(first) = iter.next() else { return Ok(None) };
        let (_, first) = first?;
        let last = match iter.next_back() {
            Some(item) => item?.1,
            None => first.clone(),
        };
        Ok(Some((codec::decode_record(&first)?, codec::decode_record(&last)?)))
    }

    /// How many records of a kind are stored (walks the tree; 0 if it cannot
    /// be read).
    pub fn count<R: Record>(&self) -> usize {
        self.inner.shared.tree(R::TREE).map(|t| t.len()).unwrap_or(0)
    }

    /// Rewrites every record of a kind stored under an older schema in the
    /// current one (through [`Record::migrate`]), in one commit. Reads migrate
    /// on the fly anyway; this makes the upgrade permanent. Call it before
    /// anything else writes that kind: a concurrent put could be overwritten.
    pub fn upgrade<R: Record>(&self) -> Result<usize, StoreError> {
        let tree = self.inner.shared.tree(R::TREE)?;
        // Rewriting a record as it is changes nothing its owner wrote.
        let mut batch = Batch::by(R::OWNER);
        for item in tree.iter() {
            let (_, value) = item?;
            if codec::record_schema(R::TREE, &value)? != R::SCHEMA {
                let record: R = codec::decode_record(&value)?;
                batch.put(&record)?;
            }
        }
        let upgraded = batch.write_count();
        self.commit_blocking(batch)?;
        Ok(upgraded)
    }

    /// How many sled flushes the writer has done since open.
    pub fn flush_count(&self) -> u64 {
        self.inner.shared.flushes.load(Ordering::Relaxed)
    }

    /// Stops the writer after it has committed every request queued before
    /// this call; later commits fail with [`StoreError::Closed`]. Reads keep
    /// working until the last clone drops.
    pub fn close(&self) {
        self.inner.shutdown();
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }
}

impl Inner {
    fn shutdown(&self) {
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            // Queued behind every request already sent, so those drain first.
            let _ = self.sender.send(Msg::Stop);
            if handle.join().is_err() {
                tracing::error!("store writer thread panicked");
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How long an open waits for sled's lock on the database file. sled 0.34
/// releases that lock from a background thread some time after the last
/// handle of a database drops, so an open right after a close in the same
/// process can find it still held; a lock held past this is another process's.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Opens the sled database at `path`, waiting up to [`LOCK_WAIT`] for its
/// lock (see there).
fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
    // No background flush: every write goes through the writer, which
    // flushes before it acknowledges, so a timer would only add work.
    let config = sled::Config::new().path(path).flush_every_ms(None);
    let deadline = Instant::now() + LOCK_WAIT;
    let mut pause = Duration::from_millis(5);
    loop {
        match config.open() {
            Err(err) if is_lock_contention(&err) => {
                if Instant::now() >= deadline {
                    return Err(StoreError::Locked(path.to_path_buf()));
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            opened => return Ok(opened?),
        }
    }
}

/// sled reports a held lock only as an `Other` I/O error with this text.
fn is_lock_contention(err: &sled::Error) -> bool {
    matches!(err, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

fn decode_all<R: Record>(
    iter: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
) -> Result<Vec<R>, StoreError> {
    let mut out = Vec::new();
    for item in iter {
        let (_, value) = item?;
        out.push(codec::decode_record(&value)?);
    }
    Ok(out)
}

fn check_format(db: &sled::Db, meta: &sled::Tree) -> Result<(), StoreError> {
    match meta.get(FORMAT_KEY)? {
        Some(value) => {
            let bytes: [u8; 2] = value
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::corrupt(META, format!("format of {} bytes", value.len())))?;
            let found = u16::from_be_bytes(bytes);
            if found != FORMAT_VERSION {
                return Err(StoreError::UnsupportedSchema { tree: META, found, current: FORMAT_VERSION });
            }
        }
        None => {
            meta.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())?;
            db.flush()?;
        }
    }
    Ok(())
}
