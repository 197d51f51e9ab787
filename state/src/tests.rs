use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bosun_proto::{Action, ApprovalStatus, EventType, NewEvent, Policy, Topic, TurnStatus, Usage};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::*;

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(StoreConfig::new(dir.path().join("db"))).expect("open store")
}

fn open_with(dir: &tempfile::TempDir, flush: FlushPolicy) -> Store {
    Store::open(StoreConfig { flush, ..StoreConfig::new(dir.path().join("db")) }).expect("open store")
}

fn ev(topic: &Topic, n: u64) -> NewEvent {
    NewEvent::new(topic.clone(), EventType::StreamChunk, json!({ "n": n }))
}

fn one_event(topic: &Topic, n: u64) -> Batch {
    let mut batch = Batch::by(Owner::Session);
    batch.event(ev(topic, n));
    batch
}

fn session(id: &str, title: &str) -> SessionRecord {
    SessionRecord {
        id: id.into(),
        provider: "codex".into(),
        cwd: "/tmp".into(),
        title: title.into(),
        policy: Policy::PlanOnly,
        archived: false,
        draft: String::new(),
        active_turn: Some("t1".into()),
        awaiting_approval: false,
        usage: Usage { input_tokens: 3, output_tokens: 4, context_tokens: None },
        turn_count: 1,
        created_at: TS.into(),
        updated_at: TS.into(),
        workspace: None,
        sandbox: Default::default(),
        network: false,
        violation: None,
    }
}

fn turn(session_id: &str, number: u64) -> TurnRecord {
    TurnRecord {
        id: format!("{session_id}-t{number}"),
        session_id: session_id.into(),
        number,
        text: "do it".into(),
        steers: vec!["faster".into()],
        status: TurnStatus::Running,
        reason: None,
        usage: Usage::default(),
        approvals: vec!["a1".into()],
        started_at: TS.into(),
        ended_at: None,
        result: None,
        cut: false,
    }
}

fn approval(id: &str) -> ApprovalRecord {
    ApprovalRecord {
        id: id.into(),
        session_id: "s1".into(),
        turn_id: "s1-t1".into(),
        request_id: "0".into(),
        action: Action::Command { command: "ls".into(), cwd: "/tmp".into() },
        status: ApprovalStatus::Pending,
        decided_by: None,
        requested_at: TS.into(),
        decided_at: None,
    }
}

fn seqs(envelopes: &[Arc<bosun_proto::Envelope>]) -> Vec<u64> {
    envelopes.iter().map(|e| e.seq).collect()
}

const TS: &str = "2026-01-01T00:00:00.000000Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seqs_are_gap_free_and_increasing_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut tasks = Vec::new();
    for t in 0..50u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let topic = Topic::session(&format!("s{}", t % 7));
            let mut mine = Vec::new();
            for i in 0..40u64 {
                let mut batch = Batch::by(Owner::Session);
                for k in 0..=(i % 3) {
                    batch.event(ev(&topic, t * 1000 + i * 10 + k));
                }
                let envelopes = store.commit(batch).await.expect("commit");
                assert_eq!(envelopes.len() as u64, i % 3 + 1);
                mine.extend(seqs(&envelopes));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let mine = task.await.unwrap();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "one caller's seqs go up: {mine:?}");
        all.extend(mine);
    }
    all.sort_unstable();
    let total = all.len() as u64;
    assert_eq!(all, (1..=total).collect::<Vec<_>>(), "gap-free, no duplicates");
    assert_eq!(store.durable_head(), total);
    let read = store.events_since(0, None, usize::MAX).unwrap();
    assert_eq!(read.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=total).collect::<Vec<_>>());
}

async fn concurrent_single_commits(store: &Store, n: u64) {
    let topic = Topic::system();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = store.clone();
            let topic = topic.clone();
            tokio::spawn(async move { store.commit(one_event(&topic, i)).await.expect("commit") })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_shares_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(&dir, FlushPolicy::GroupCommit);
    concurrent_single_commits(&store, 1000).await;
    assert_eq!(store.durable_head(), 1000);
    let flushes = store.flush_count();
    assert!(flushes < 500, "1000 concurrent commits took {flushes} flushes");
    assert!(flushes >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_request_policy_flushes_per_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(&dir, FlushPolicy::EveryRequest);
    concurrent_single_commits(&store, 1000).await;
    assert_eq!(store.durable_head(), 1000);
    assert_eq!(store.flush_count(), 1000);
    // Still one seq per event, gap-free.
    let read = store.events_since(0, None, usize::MAX).unwrap();
    assert_eq!(read.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=1000).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribers_only_see_durable_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut live = store.subscribe();
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut last = 0;
            while last < 500 {
                let env = live.recv().await.expect("no lag at this rate");
                assert_eq!(env.seq, last + 1, "live tail in seq order");
                assert!(store.durable_head() >= env.seq);
                let back = store.events_since(env.seq - 1, None, 1).unwrap();
                assert_eq!(back, vec![(*env).clone()], "published means readable");
                last = env.seq;
            }
        })
    };
    // A reader racing the writer never sees past the durable head.
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let store = store.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let head = store.durable_head();
                let read = store.events_since(0, None, usize::MAX).unwrap();
                assert!(read.len() as u64 >= head);
                let after = store.durable_head();
                assert!(read.last().map_or(0, |e| e.seq) <= after);
            }
        })
    };
    let topic = Topic::session("p");
    let writers: Vec<_> = (0..10)
        .map(|w| {
            let store = store.clone();
            let topic = topic.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    store.commit(one_event(&topic, w * 100 + i)).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(20), reader).await.expect("reader done").unwrap();
    stop.store(true, Ordering::Relaxed);
    racer.join().unwrap();
}

/// Holds the writer between applying a group and flushing it.
fn gate_before_flush(store: &Store) -> (mpsc::Receiver<()>, mpsc::Sender<Result<(), sled::Error>>) {
    let (reached_tx, reached_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<Result<(), sled::Error>>();
    *store.shared().before_flush.lock().unwrap() = Some(Box::new(move || {
        let _ = reached_tx.send(());
        release_rx.recv().unwrap_or(Ok(()))
    }));
    (reached_rx, release_tx)
}

#[test]
fn applied_but_unflushed_events_are_invisible() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let topic = Topic::session("gate");
    store.commit_blocking(one_event(&topic, 0)).unwrap();
    let mut live = store.subscribe();
    let (reached, release) = gate_before_flush(&store);

    let committer = {
        let store = store.clone();
        let topic = topic.clone();
        std::thread::spawn(move || store.commit_blocking(one_event(&topic, 1)))
    };
    reached.recv_timeout(Duration::from_secs(10)).expect("writer reached the flush");
    assert!(store.shared().events.get(2u64.to_be_bytes()).unwrap().is_some(), "seq 2 is applied in sled");
    assert_eq!(store.durable_head(), 1);
    assert_eq!(store.events_since(0, None, 10).unwrap().len(), 1);
    assert_eq!(store.events_since(1, None, 10).unwrap(), vec![]);
    assert_eq!(store.events_since(0, Some(&topic), 10).unwrap().len(), 1);
    assert!(live.try_recv().is_err(), "nothing published before the flush");

    release.send(Ok(())).unwrap();
    let envelopes = committer.join().unwrap().unwrap();
    assert_eq!(envelopes[0].seq, 2);
    assert_eq!(store.durable_head(), 2);
    assert_eq!(live.try_recv().unwrap().seq, 2);
    assert_eq!(store.events_since(1, Some(&topic), 10).unwrap().len(), 1);
}

#[test]
fn a_failed_group_is_undone_and_its_seqs_reused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let topic = Topic::session("f");
    let mut first = Batch::by(Owner::Session);
    first.event(ev(&topic, 0)).put(&session("s1", "before")).unwrap().put(&session("s2", "kept")).unwrap();
    store.commit_blocking(first).unwrap();
    let mut live = store.subscribe();

    let (reached, release) = gate_before_flush(&store);
    let failing = {
        let store = store.clone();
        let topic = topic.clone();
        std::thread::spawn(move || {
            let mut batch = Batch::by(Owner::Session);
            batch.event(ev(&topic, 1)).event(ev(&Topic::system(), 2));
            batch.put(&session("s1", "after")).unwrap().put(&session("s1", "after again")).unwrap();
            batch.put(&session("s3", "new")).unwrap();
            batch.delete::<SessionRecord>("s2");
            store.commit_blocking(batch)
        })
    };
    reached.recv_timeout(Duration::from_secs(10)).unwrap();
    release.send(Err(sled::Error::Unsupported("injected flush failure".into()))).unwrap();
    let err = failing.join().unwrap().expect_err("the group fails");
    assert!(matches!(err, StoreError::Sled(_)), "{err}");

    // Everything of the failed group is gone from the trees, old values are back.
    let shared = store.shared();
    assert!(shared.events.get(2u64.to_be_bytes()).unwrap().is_none());
    assert!(shared.events.get(3u64.to_be_bytes()).unwrap().is_none());
    assert_eq!(shared.index.len(), 1, "only the first group's index entry");
    assert_eq!(store.get::<SessionRecord>("s1").unwrap().unwrap().title, "before");
    assert_eq!(store.get::<SessionRecord>("s2").unwrap().unwrap().title, "kept");
    assert!(store.get::<SessionRecord>("s3").unwrap().is_none());
    assert_eq!(store.durable_head(), 1);
    assert!(live.try_recv().is_err(), "a failed group publishes nothing");

    // The seqs are handed out again: no gap.
    *shared.before_flush.lock().unwrap() = None;
    let envelopes = store.commit_blocking(one_event(&Topic::system(), 9)).unwrap();
    assert_eq!(envelopes[0].seq, 2);
    let all = store.events_since(0, None, 10).unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(all[1].data, json!({ "n": 9 }));
    assert_eq!(store.events_since(0, Some(&topic), 10).unwrap().len(), 1);
}

/// A record kind whose tree collides with the store's own.
#[derive(Debug, Serialize, Deserialize)]
struct Intruder {
    id: String,
}

impl Record for Intruder {
    const TREE: &'static str = "events";
    const OWNER: Owner = Owner::Session;
    const SCHEMA: u16 = 1;
    fn key(&self) -> String {
        self.id.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_fails_alone_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert!(matches!(
        Batch::by(Owner::Session).put(&Intruder { id: "x".into() }),
        Err(StoreError::ReservedTree("events"))
    ));
    assert!(matches!(store.get::<Intruder>("x"), Err(StoreError::ReservedTree("events"))));

    let topic = Topic::system();
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let store = store.clone();
        let topic = topic.clone();
        tasks.push(tokio::spawn(async move {
            let mut batch = one_event(&topic, i);
            if i % 3 == 0 {
                batch.delete::<Intruder>("x");
            }
            (i, store.commit(batch).await)
        }));
    }
    let mut got = Vec::new();
    for task in tasks {
        let (i, result) = task.await.unwrap();
        if i % 3 == 0 {
            assert!(matches!(result, Err(StoreError::ReservedTree(_))), "{result:?}");
        } else {
            got.extend(seqs(&result.unwrap()));
        }
    }
    got.sort_unstable();
    assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>());
    assert_eq!(store.durable_head(), got.len() as u64);
}

#[test]
fn reopen_keeps_events_head_and_records() {
    let dir = tempfile::tempdir().unwrap();
    let topic = Topic::session("r");
    {
        let store = open(&dir);
        for i in 0..30 {
            let mut batch = one_event(&topic, i);
            batch.event(ev(&Topic::system(), i)).put(&session("s1", &format!("title {i}"))).unwrap();
            store.commit_blocking(batch).unwrap();
        }
        assert_eq!(store.durable_head(), 60);
        let clone = store.clone();
        drop(store);
        clone.commit_blocking(one_event(&topic, 99)).unwrap();
    }
    Store::checkpoint(&dir.path().join("db")).expect("checkpoint once every handle is gone");
    let store = open(&dir);
    assert!(Store::checkpoint(&dir.path().join("db")).is_err(), "refused while the store is open");
    assert_eq!(store.durable_head(), 61);
    assert_eq!(store.events_since(0, None, usize::MAX).unwrap().len(), 61);
    assert_eq!(store.events_since(0, Some(&topic), usize::MAX).unwrap().len(), 31);
    assert_eq!(store.get::<SessionRecord>("s1").unwrap().unwrap().title, "title 29");
    let next = store.commit_blocking(one_event(&topic, 100)).unwrap();
    assert_eq!(next[0].seq, 62, "seq continues after a restart");
}

#[test]
fn a_store_of_another_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path().join("db")).unwrap();
        db.open_tree("meta").unwrap().insert("format", &7u16.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(StoreConfig::new(dir.path().join("db"))).err().expect("refused");
    assert!(matches!(err, StoreError::UnsupportedSchema { tree: "meta", found: 7, current: FORMAT_VERSION }), "{err}");
    assert!(matches!(Store::open(StoreConfig::default()), Err(StoreError::Config(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topic_reads_match_a_filtered_full_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let topics: Vec<Topic> = vec![Topic::session("a"), Topic::session("ab"), Topic::session("b"), Topic::system()];
    // Concurrent multi-event batches make groups whose index entries list many seqs.
    let tasks: Vec<_> = (0..40u64)
        .map(|t| {
            let store = store.clone();
            let topics = topics.clone();
            tokio::spawn(async move {
                for i in 0..10u64 {
                    let mut batch = Batch::by(Owner::Session);
                    for k in 0..(1 + (t + i) % 4) {
                        batch.event(ev(&topics[((t * 7 + i * 3 + k) % 4) as usize], t * 100 + i * 10 + k));
                    }
                    store.commit(batch).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let all = store.events_since(0, None, usize::MAX).unwrap();
    let head = store.durable_head();
    assert_eq!(all.len() as u64, head);
    for topic in &topics {
        let expected: Vec<_> = all.iter().filter(|e| e.topic == *topic).cloned().collect();
        assert!(!expected.is_empty());
        for since in 0..=head {
            let tail: Vec<_> = expected.iter().filter(|e| e.seq > since).cloned().collect();
            for limit in [1, 3, usize::MAX] {
                let got = store.events_since(since, Some(topic), limit).unwrap();
                let want: Vec<_> = tail.iter().take(limit).cloned().collect();
                assert_eq!(got, want, "topic {topic} since {since} limit {limit}");
            }
        }
    }
    for since in 0..=head {
        for limit in [1, 7] {
            let got = store.events_since(since, None, limit).unwrap();
            let want: Vec<_> = all.iter().skip(since as usize).take(limit).cloned().collect();
            assert_eq!(got, want, "all topics since {since} limit {limit}");
        }
    }
    assert!(store.events_since(0, Some(&Topic::session("none")), 10).unwrap().is_empty());
    assert!(store.events_since(head, None, 10).unwrap().is_empty());
    assert!(store.events_since(0, None, 0).unwrap().is_empty());
    assert_eq!(
        store.events_since(head - 5, None, 2).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![head - 4, head - 3]
    );
}

#[tokio::test]
async fn records_ride_in_the_same_batch_as_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let topic = Topic::session("s1");
    let mut batch = Batch::by(Owner::Session);
    batch.event(NewEvent::new(topic.clone(), EventType::SessionUpdate, json!({ "id": "s1" })));
    batch.put(&session("s1", "one")).unwrap().put(&session("s2", "two")).unwrap();
    assert!(!batch.is_empty());
    assert_eq!((batch.event_count(), batch.write_count()), (1, 2));
    let envelopes = store.commit(batch).await.unwrap();
    assert_eq!(envelopes.len(), 1);
    let mut batch = Batch::by(Owner::Turn);
    for n in [1, 2, 10] {
        batch.put(&turn("s1", n)).unwrap();
    }
    batch.put(&turn("s10", 1)).unwrap();
    batch.put(&approval("a1")).unwrap();
    assert!(store.commit(batch).await.unwrap().is_empty());

    assert_eq!(store.get::<SessionRecord>("s1").unwrap(), Some(session("s1", "one")));
    assert_eq!(store.get::<ApprovalRecord>("a1").unwrap(), Some(approval("a1")));
    assert_eq!(store.get::<TurnRecord>(&TurnRecord::key_for("s1", 2)).unwrap(), Some(turn("s1", 2)));
    assert_eq!(store.count::<SessionRecord>(), 2);
    assert_eq!(store.count::<TurnRecord>(), 4);
    assert_eq!(store.scan::<SessionRecord>().unwrap().iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["s1", "s2"]);
    let turns = store.scan_prefix::<TurnRecord>(&TurnRecord::prefix_for("s1")).unwrap();
    assert_eq!(turns.iter().map(|t| t.number).collect::<Vec<_>>(), [1, 2, 10], "s10's turn is not s1's");
    assert!(store.get::<SessionRecord>("nope").unwrap().is_none());

    // Put then delete, and delete then put, of one key in one batch: last
    // wins. (A session's batch may delete its turns' records.)
    let mut batch = Batch::by(Owner::Session);
    batch.event(ev(&topic, 1));
    batch.put(&session("s3", "gone")).unwrap().delete::<SessionRecord>("s3");
    batch.delete::<SessionRecord>("s2").put(&session("s2", "back")).unwrap();
    batch.delete::<TurnRecord>(&TurnRecord::key_for("s1", 2));
    batch.delete::<ApprovalRecord>("a1");
    store.commit(batch).await.unwrap();
    assert!(store.get::<SessionRecord>("s3").unwrap().is_none());
    assert_eq!(store.get::<SessionRecord>("s2").unwrap().unwrap().title, "back");
    assert_eq!(store.count::<TurnRecord>(), 3);
    assert_eq!(store.count::<ApprovalRecord>(), 0);

    // A batch of records alone is committed too (and flushed), without a seq.
    let mut batch = Batch::by(Owner::Session);
    batch.put(&session("s4", "quiet")).unwrap();
    assert!(store.commit(batch).await.unwrap().is_empty());
    assert_eq!(store.durable_head(), 2);
    assert!(store.commit(Batch::new()).await.unwrap().is_empty());
}

/// Schema 2 of a test record; schema 1 had only `text`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Note {
    id: String,
    text: String,
    words: usize,
}

#[derive(Serialize, Deserialize)]
struct NoteV1 {
    id: String,
    text: String,
}

impl Record for Note {
    const TREE: &'static str = "notes";
    const OWNER: Owner = Owner::Session;
    const SCHEMA: u16 = 2;
    fn key(&self) -> String {
        self.id.clone()
    }
    fn migrate(from_schema: u16, bytes: &[u8]) -> Result<Self, StoreError> {
        match from_schema {
            1 => {
                let old: NoteV1 = decode_body(Self::TREE, bytes)?;
                let words = old.text.split_whitespace().count();
                Ok(Note { id: old.id, text: old.text, words })
            }
            found => Err(StoreError::UnsupportedSchema { tree: Self::TREE, found, current: Self::SCHEMA }),
        }
    }
}

fn raw_value(schema: u16, body: &impl Serialize) -> Vec<u8> {
    let mut value = schema.to_be_bytes().to_vec();
    value.extend(rmp_serde::to_vec_named(body).unwrap());
    value
}

#[test]
fn old_schemas_go_through_the_migration_hook() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let notes = store.shared().tree("notes").unwrap();
    notes.insert("n1", raw_value(1, &NoteV1 { id: "n1".into(), text: "three small words".into() })).unwrap();
    notes.insert("n9", raw_value(9, &NoteV1 { id: "n9".into(), text: "from the future".into() })).unwrap();
    let mut batch = Batch::by(Owner::Session);
    batch.put(&Note { id: "n2".into(), text: "current".into(), words: 1 }).unwrap();
    store.commit_blocking(batch).unwrap();

    assert_eq!(
        store.get::<Note>("n1").unwrap(),
        Some(Note { id: "n1".into(), text: "three small words".into(), words: 3 })
    );
    assert_eq!(store.get::<Note>("n2").unwrap().unwrap().words, 1);
    let err = store.get::<Note>("n9").unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedSchema { tree: "notes", found: 9, current: 2 }), "{err}");

    notes.remove("n9").unwrap();
    assert_eq!(store.upgrade::<Note>().unwrap(), 1);
    assert_eq!(&notes.get("n1").unwrap().unwrap()[..2], &2u16.to_be_bytes(), "rewritten in schema 2");
    assert_eq!(store.upgrade::<Note>().unwrap(), 0);
    assert_eq!(store.scan::<Note>().unwrap().len(), 2);

    // The records' default hook knows no older schema.
    let sessions = store.shared().tree(SessionRecord::TREE).unwrap();
    sessions.insert("old", raw_value(0, &session("old", "x"))).unwrap();
    assert!(matches!(
        store.get::<SessionRecord>("old"),
        Err(StoreError::UnsupportedSchema { found: 0, current: 1, .. })
    ));
    sessions.insert("bad", &[1u8][..]).unwrap();
    assert!(matches!(store.get::<SessionRecord>("bad"), Err(StoreError::Corrupt { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_drains_queued_commits_then_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let topic = Topic::system();
    let tasks: Vec<_> = (0..300u64)
        .map(|i| {
            let store = store.clone();
            let topic = topic.clone();
            tokio::spawn(async move { store.commit(one_event(&topic, i)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(2)).await;
    let closer = store.clone();
    tokio::task::spawn_blocking(move || closer.close()).await.unwrap();
    let mut ok = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(envelopes) => ok.extend(seqs(&envelopes)),
            Err(StoreError::Closed) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    ok.sort_unstable();
    assert_eq!(ok, (1..=ok.len() as u64).collect::<Vec<_>>());
    assert_eq!(store.durable_head(), ok.len() as u64, "every acknowledged commit, nothing more");
    assert!(matches!(store.commit(one_event(&topic, 0)).await, Err(StoreError::Closed)));
    assert!(matches!(store.commit_blocking(one_event(&topic, 0)), Err(StoreError::Closed)));
    assert_eq!(store.events_since(0, None, usize::MAX).unwrap().len(), ok.len(), "reads still work");
    store.close(); // idempotent
}

#[test]
fn the_store_is_shareable() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<Store>();
}

// ---- kill -9 ------------------------------------------------------------

const CHILD_ENV: &str = "BOSUN_STATE_CHILD";
const CHILD_WRITERS: u64 = 4;

/// Progress of one child writer, kept in the same batch as its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Progress {
    writer: u64,
    n: u64,
}

impl Record for Progress {
    const TREE: &'static str = "progress";
    const OWNER: Owner = Owner::Session;
    const SCHEMA: u16 = 1;
    fn key(&self) -> String {
        format!("w{}", self.writer)
    }
}

/// Not a test on its own: with `BOSUN_STATE_CHILD` set, it is the process
/// that `kill9_keeps_every_acknowledged_commit` starts and kills.
#[test]
fn kill9_child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    let store = Store::open(StoreConfig::new(path)).expect("child opens the store");
    // Persist the topic index often, so the kill lands between persists with
    // a tail that only the event log holds.
    set_persist_limits(&store, 64, 256, Duration::from_secs(3600));
    let writers: Vec<_> = (0..CHILD_WRITERS)
        .map(|writer| {
            let store = store.clone();
            std::thread::spawn(move || {
                let start = store.get::<Progress>(&format!("w{writer}")).expect("read progress").map_or(0, |p| p.n + 1);
                for n in start.. {
                    let mut batch = Batch::by(Owner::Session);
                    batch.event(NewEvent::new(
                        Topic::session(&format!("w{writer}")),
                        EventType::StreamChunk,
                        json!({ "writer": writer, "n": n, "pad": "x".repeat(200) }),
                    ));
                    batch.put(&Progress { writer, n }).expect("encode");
                    let envelopes = store.commit_blocking(batch).expect("commit");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {} {writer} {n}", envelopes[0].seq).expect("stdout");
                    out.flush().expect("stdout");
                }
            })
        })
        .collect();
    for writer in writers {
        let _ = writer.join();
    }
}

#[test]
fn kill9_keeps_every_acknowledged_commit() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for (round, wanted) in [150usize, 400, 250].into_iter().enumerate() {
        let mut child = Command::new(&exe)
            .args(["tests::kill9_child_writer", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let mut this_round = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut line = String::new();
        while this_round < wanted && Instant::now() < deadline {
            line.clear();
            if lines.read_line(&mut line).unwrap() == 0 {
                break;
            }
            // Only whole lines: a line cut by the kill is not an acknowledgement.
            let Some(ack) = line.strip_suffix('\n').and_then(|l| l.strip_prefix("ACK ")) else { continue };
            let fields: Vec<u64> = ack.split(' ').map(|f| f.parse().unwrap()).collect();
            assert!(acked.insert(fields[0], (fields[1], fields[2])).is_none(), "seq {} acknowledged twice", fields[0]);
            this_round += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert_eq!(this_round, wanted, "round {round}: the child stopped acknowledging");

        let store = Store::open(StoreConfig::new(&path)).unwrap();
        let head = store.durable_head();
        let all = store.events_since(0, None, usize::MAX).unwrap();
        assert_eq!(
            all.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=head).collect::<Vec<_>>(),
            "gap-free after a crash"
        );
        let by_seq: HashMap<u64, &bosun_proto::Envelope> = all.iter().map(|e| (e.seq, e)).collect();
        for (seq, (writer, n)) in &acked {
            let env = by_seq.get(seq).unwrap_or_else(|| panic!("round {round}: acknowledged seq {seq} lost"));
            assert_eq!((env.data["writer"].as_u64(), env.data["n"].as_u64()), (Some(*writer), Some(*n)), "seq {seq}");
        }
        // The progress record and the events were one transaction: the record
        // names exactly the last surviving event of its writer.
        for writer in 0..CHILD_WRITERS {
            let topic = Topic::session(&format!("w{writer}"));
            let last = store.events_since(0, Some(&topic), usize::MAX).unwrap().last().map(|e| e.data["n"].as_u64());
            let progress = store.get::<Progress>(&format!("w{writer}")).unwrap().map(|p| Some(p.n));
            assert_eq!(progress, last, "round {round} writer {writer}");
        }
        // Topic reads are complete across the persisted index and the tail
        // that the open rebuilt from the event log.
        let topics: Vec<Topic> = (0..CHILD_WRITERS).map(|w| Topic::session(&format!("w{w}"))).collect();
        assert_topic_reads_complete(&store, &topics, 5);
    }
}

#[test]
fn a_store_reopens_right_after_it_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let topic = Topic::session("s");
    for n in 0..20 {
        let store = open(&dir);
        store.commit_blocking(one_event(&topic, n)).unwrap();
        assert_eq!(store.durable_head(), n + 1);
    }
}

#[test]
fn a_store_held_open_elsewhere_is_refused_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _held = open(&dir);
    match Store::open(StoreConfig::new(dir.path().join("db"))) {
        Err(err @ StoreError::Locked(_)) => assert!(err.to_string().contains("in use by another process"), "{err}"),
        Err(err) => panic!("expected Locked, got {err}"),
        Ok(_) => panic!("a second open of a held store succeeded"),
    }
}

// ---- measurements (not run by default) ------------------------------------
// cargo test --release -p bosun-state -- --ignored --nocapture bench_

fn append_run(policy: FlushPolicy, callers: u64, per_caller: u64, events_per_commit: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(&dir, policy);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let start = Instant::now();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..callers)
            .map(|c| {
                let store = store.clone();
                tokio::spawn(async move {
                    let topic = Topic::session(&format!("bench-{}", c % 100));
                    for i in 0..per_caller {
                        let mut batch = Batch::by(Owner::Session);
                        for k in 0..events_per_commit {
                            batch.event(NewEvent::new(
                                topic.clone(),
                                EventType::StreamChunk,
                                json!({ "turn": "t1", "index": i * events_per_commit + k, "text": "x".repeat(120) }),
                            ));
                        }
                        store.commit(batch).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    let elapsed = start.elapsed();
    let events = callers * per_caller * events_per_commit;
    assert_eq!(store.durable_head(), events);
    println!(
        "{policy:?}: {callers} callers x {per_caller} commits x {events_per_commit} events: {:.0} events/s, {:.0} commits/s, {} flushes ({:.1} commits/flush)",
        events as f64 / elapsed.as_secs_f64(),
        (callers * per_caller) as f64 / elapsed.as_secs_f64(),
        store.flush_count(),
        (callers * per_caller) as f64 / store.flush_count() as f64
    );
}

#[test]
#[ignore]
fn bench_append_throughput() {
    append_run(FlushPolicy::EveryRequest, 64, 300, 1);
    append_run(FlushPolicy::GroupCommit, 64, 300, 1);
    append_run(FlushPolicy::GroupCommit, 128, 400, 1);
    append_run(FlushPolicy::GroupCommit, 512, 400, 1);
    append_run(FlushPolicy::GroupCommit, 1024, 200, 1);
    append_run(FlushPolicy::GroupCommit, 64, 300, 10);
}

#[test]
#[ignore]
fn bench_restart_to_ready() {
    let dir = tempfile::tempdir().unwrap();
    // BOSUN_BENCH_DIR keeps the store (and skips populating it if it exists).
    let path = std::env::var_os("BOSUN_BENCH_DIR").map_or_else(|| dir.path().join("db"), std::path::PathBuf::from);
    let open = |_: &tempfile::TempDir| Store::open(StoreConfig::new(&path)).unwrap();
    let sessions = 10_000u64;
    let events = 1_000_000u64;
    if !path.exists() {
        let store = open(&dir);
        let start = Instant::now();
        for chunk in 0..events / 1000 {
            let mut batch = Batch::by(Owner::Session);
            for k in 0..1000 {
                let s = (chunk * 1000 + k) % sessions;
                batch.event(NewEvent::new(
                    Topic::session(&format!("s{s}")),
                    EventType::StreamChunk,
                    json!({ "turn": "t1", "index": chunk, "text": "x".repeat(120) }),
                ));
            }
            // Each session record is written (again) as its events come in.
            for s in (chunk * 10) % sessions..(chunk * 10) % sessions + 10 {
                batch.put(&session(&format!("s{s}"), "bench")).unwrap();
            }
            store.commit_blocking(batch).unwrap();
        }
        println!("populated {events} events, {} sessions in {:?}", store.count::<SessionRecord>(), start.elapsed());
        drop(store);
        if std::env::var_os("BOSUN_BENCH_CHECKPOINT").is_some() {
            let start = Instant::now();
            Store::checkpoint(&path).unwrap();
            println!("checkpoint at shutdown: {:?}", start.elapsed());
        }
    }
    for round in 0..2 {
        let start = Instant::now();
        let store = open(&dir);
        let opened = start.elapsed();
        let all = store.scan::<SessionRecord>().unwrap();
        let head = store.durable_head();
        println!(
            "restart {round}: open {opened:?}, + scan of {} sessions {:?} (head {head})",
            all.len(),
            start.elapsed()
        );
        let start = Instant::now();
        let tail = store.events_since(0, Some(&Topic::session("s42")), 100).unwrap();
        let last = store.events_since(head - 1000, None, 1000).unwrap();
        println!("  reads: {} events of one session + last {} events in {:?}", tail.len(), last.len(), start.elapsed());
    }
}

// ---- lazily persisted topic index -------------------------------------------

/// sled releases its file lock when the last reference to the database goes,
/// and its I/O threads may still hold one for a moment after the store is
/// dropped; a new process never sees that, a reopen in the same process can.
fn retry_while_locked<T>(mut open: impl FnMut() -> Result<T, sled::Error>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open() {
            Ok(value) => return value,
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("open: {e}"),
        }
    }
}

/// Store::open itself waits out the lock a dropped store still holds.
fn reopen(dir: &tempfile::TempDir) -> Store {
    open(dir)
}

fn set_persist_limits(store: &Store, seqs: usize, topics: usize, interval: Duration) {
    *store.shared().persist_limits.lock().unwrap() = crate::pending::PersistLimits { seqs, topics, interval };
}

fn indexed_upto(store: &Store) -> Option<u64> {
    let value = store.shared().meta.get(b"indexed_upto").unwrap()?;
    Some(u64::from_be_bytes(value.as_ref().try_into().unwrap()))
}

fn pending_seqs(store: &Store) -> usize {
    store.shared().pending.read().unwrap().seq_count()
}

/// Every topic read, from every `step`-th cursor and with several limits,
/// equals the brute-force filter of the whole log.
fn assert_topic_reads_complete(store: &Store, topics: &[Topic], step: u64) {
    let head = store.durable_head();
    let all = store.events_since(0, None, usize::MAX).unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=head).collect::<Vec<_>>());
    for topic in topics {
        let expected: Vec<&bosun_proto::Envelope> = all.iter().filter(|e| e.topic == *topic).collect();
        // Every `step`-th cursor, plus those around the persisted/pending
        // boundary and the head.
        let upto = indexed_upto(store).unwrap_or(head);
        let mut cursors: Vec<u64> = (0..=head).step_by(step as usize).collect();
        cursors.extend((upto.saturating_sub(3)..=upto + 3).chain(head.saturating_sub(3)..=head).filter(|&c| c <= head));
        cursors.sort_unstable();
        cursors.dedup();
        for since in cursors {
            for limit in [1, 7, usize::MAX] {
                let got = store.events_since(since, Some(topic), limit).unwrap();
                let want: Vec<bosun_proto::Envelope> =
                    expected.iter().filter(|e| e.seq > since).take(limit).map(|e| (*e).clone()).collect();
                if got != want {
                    let seqs = |v: &[bosun_proto::Envelope]| v.iter().map(|e| e.seq).collect::<Vec<_>>();
                    panic!(
                        "topic {topic} since {since} limit {limit} (head {head}, indexed_upto {:?}): got {:?}, want {:?}",
                        indexed_upto(store),
                        seqs(&got),
                        seqs(&want)
                    );
                }
            }
        }
    }
}

fn index_topics() -> Vec<Topic> {
    ["a", "ab", "b", "c", "d", "e"].iter().map(|id| Topic::session(id)).chain([Topic::system()]).collect()
}

/// Concurrent commits of 1 to 3 events each, on topics picked per event.
async fn commit_mixed(store: &Store, topics: &[Topic], tasks: u64, per_task: u64) {
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let store = store.clone();
            let topics = topics.to_vec();
            tokio::spawn(async move {
                for i in 0..per_task {
                    let mut batch = Batch::by(Owner::Session);
                    for k in 0..(1 + (t + i) % 3) {
                        let topic = &topics[((t * 5 + i * 3 + k) % topics.len() as u64) as usize];
                        batch.event(ev(topic, t * 1000 + i * 10 + k));
                    }
                    store.commit(batch).await.unwrap();
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topic_reads_are_complete_across_pending_and_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let topics = index_topics();
    // Persist every ~40 events (or 5 topics): many persists, each entry
    // spanning several groups.
    set_persist_limits(&store, 40, 5, Duration::from_secs(3600));
    commit_mixed(&store, &topics, 10, 40).await;
    let head = store.durable_head();
    let upto = indexed_upto(&store).expect("persisted");
    assert!(upto > head / 2, "persisted often: indexed_upto {upto}, head {head}");
    assert!(store.shared().index.len() > 3 * topics.len(), "several persists: {} entries", store.shared().index.len());

    // Leave a pending tail on top of the persisted entries, for every topic.
    set_persist_limits(&store, 1_000_000, 1000, Duration::from_secs(3600));
    for round in 0..3 {
        for (i, topic) in topics.iter().enumerate() {
            store.commit_blocking(one_event(topic, round * 100 + i as u64)).unwrap();
        }
    }
    assert!(pending_seqs(&store) >= 3 * topics.len(), "pending holds the tail");
    assert_eq!(indexed_upto(&store), Some(upto), "nothing persisted meanwhile");
    assert_topic_reads_complete(&store, &topics, 1);
}

/// Holds the writer in a group that persists, after its transaction is
/// applied and before its flush: the entries are in the tree and in pending
/// at once, and readers see each seq once.
#[test]
fn reads_during_a_persist_see_each_seq_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let topics = index_topics();
    set_persist_limits(&store, 1_000_000, 1000, Duration::from_secs(3600));
    for round in 0..4 {
        for (i, topic) in topics.iter().enumerate() {
            store.commit_blocking(one_event(topic, round * 10 + i as u64)).unwrap();
        }
    }
    let head = store.durable_head();
    assert_eq!(pending_seqs(&store) as u64, head - 1, "all but the first group pending");
    set_persist_limits(&store, 1, 1000, Duration::from_secs(3600));
    let (reached, release) = gate_before_flush(&store);
    let committer = {
        let store = store.clone();
        let topic = topics[0].clone();
        std::thread::spawn(move || store.commit_blocking(one_event(&topic, 99)))
    };
    reached.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(pending_seqs(&store) as u64, head - 1, "pending is cleared only after the flush");
    assert!(store.shared().index.len() > topics.len(), "the persisted entries are applied");
    assert_eq!(store.durable_head(), head);
    assert_topic_reads_complete(&store, &topics, 1);
    release.send(Ok(())).unwrap();
    committer.join().unwrap().unwrap();
    assert_eq!(pending_seqs(&store), 0);
    assert_eq!(indexed_upto(&store), Some(head + 1));
    assert_topic_reads_complete(&store, &topics, 1);
}

/// Readers race a writer that persists at almost every group: whatever was
/// durable before a topic read started is in it, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_reads_racing_persists_miss_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let topics = index_topics();
    set_persist_limits(&store, 12, 4, Duration::from_secs(3600));
    let stop = Arc::new(AtomicBool::new(false));
    let racer = |offset: usize| {
        let store = store.clone();
        let stop = stop.clone();
        let topics = topics.clone();
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let topic = &topics[(rounds as usize + offset) % topics.len()];
                let before = store.durable_head();
                // A short window keeps each round cheap, so rounds are many.
                let since = before.saturating_sub(48);
                let got = store.events_since(since, Some(topic), usize::MAX).unwrap();
                let all = store.events_since(since, None, usize::MAX).unwrap();
                let got_seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
                assert!(got_seqs.windows(2).all(|w| w[0] < w[1]), "ascending, no duplicate: {got_seqs:?}");
                assert!(got.iter().all(|e| e.topic == *topic && e.seq > since));
                let want: Vec<u64> = all
                    .iter()
                    .filter(|e| e.topic == *topic && e.seq > since && e.seq <= before)
                    .map(|e| e.seq)
                    .collect();
                let got_durable_before: Vec<u64> = got_seqs.iter().copied().filter(|&s| s <= before).collect();
                assert_eq!(got_durable_before, want, "topic {topic} since {since}, head {before} before the read");
                rounds += 1;
            }
            rounds
        })
    };
    let racers = [racer(0), racer(3)];
    commit_mixed(&store, &topics, 30, 150).await;
    stop.store(true, Ordering::Relaxed);
    for racer in racers {
        assert!(racer.join().unwrap() > 100, "the readers raced the writer");
    }
    let head = store.durable_head();
    assert!(indexed_upto(&store).unwrap() + 12 > head);
    assert_topic_reads_complete(&store, &topics, 37);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clean_close_or_drop_persists_the_pending_index() {
    let dir = tempfile::tempdir().unwrap();
    let topics = index_topics();
    {
        let store = open(&dir);
        set_persist_limits(&store, 1_000_000, 1000, Duration::from_secs(3600));
        commit_mixed(&store, &topics, 10, 20).await;
        // Only the first group after open persisted (at most one event from
        // each of 10 tasks, 3 events each).
        assert!(indexed_upto(&store).unwrap() <= 30);
        assert_eq!(pending_seqs(&store) as u64, store.durable_head() - indexed_upto(&store).unwrap());
        store.close();
        let head = store.durable_head();
        assert_eq!(indexed_upto(&store), Some(head), "close persisted everything");
        assert_eq!(pending_seqs(&store), 0);
        assert_topic_reads_complete(&store, &topics, 3);
    }
    let head = {
        let store = reopen(&dir);
        assert_eq!(pending_seqs(&store), 0, "nothing to rebuild after a clean close");
        assert_topic_reads_complete(&store, &topics, 3);
        set_persist_limits(&store, 1_000_000, 1000, Duration::from_secs(3600));
        commit_mixed(&store, &topics, 10, 20).await;
        assert!(pending_seqs(&store) > 100);
        let clone = store.clone();
        drop(store);
        clone.commit_blocking(one_event(&topics[0], 7)).unwrap();
        let head = clone.durable_head();
        drop(clone); // the last handle: the writer stops and persists
        head
    };
    let store = reopen(&dir);
    assert_eq!(pending_seqs(&store), 0, "nothing to rebuild after the last handle dropped");
    assert_eq!(store.durable_head(), head);
    assert_eq!(indexed_upto(&store), Some(head));
    assert_topic_reads_complete(&store, &topics, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_after_a_crash_rebuilds_the_pending_index_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let topics = index_topics();
    let (head, upto) = {
        let store = open(&dir);
        set_persist_limits(&store, 50, 1000, Duration::from_secs(3600));
        commit_mixed(&store, &topics, 10, 30).await;
        // A few single events that stay pending, so the tail is not empty.
        set_persist_limits(&store, 1_000_000, 1000, Duration::from_secs(3600));
        for (i, topic) in topics.iter().enumerate() {
            store.commit_blocking(one_event(topic, 900 + i as u64)).unwrap();
        }
        // Stop as a crash would: without persisting what is pending.
        store.shared().skip_final_persist.store(true, Ordering::Relaxed);
        (store.durable_head(), indexed_upto(&store).unwrap())
    };
    assert!(upto < head, "a tail is left unindexed: indexed_upto {upto}, head {head}");
    assert!(head - upto < 50 + topics.len() as u64, "the tail stays under the persist limit: {}", head - upto);
    let store = reopen(&dir);
    assert_eq!(store.durable_head(), head);
    assert_eq!(indexed_upto(&store), Some(upto));
    assert_eq!(pending_seqs(&store), (head - upto) as usize, "every event after indexed_upto, and only those");
    assert_topic_reads_complete(&store, &topics, 1);

    // The rebuilt entries are persisted by the next group, and writing goes on.
    set_persist_limits(&store, 50, 1000, Duration::from_secs(3600));
    commit_mixed(&store, &topics, 5, 10).await;
    assert!(indexed_upto(&store).unwrap() > head);
    assert_topic_reads_complete(&store, &topics, 1);
    store.shared().skip_final_persist.store(true, Ordering::Relaxed);
    drop(store);
    let store = reopen(&dir);
    assert_topic_reads_complete(&store, &topics, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_without_indexed_upto_reads_as_fully_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let topics = index_topics();
    {
        // Persisting at every group is the layout before `indexed_upto`: one
        // entry per topic per group.
        let store = open(&dir);
        set_persist_limits(&store, 1, 1000, Duration::ZERO);
        commit_mixed(&store, &topics, 10, 20).await;
        assert_eq!(pending_seqs(&store), 0);
        assert_eq!(indexed_upto(&store), Some(store.durable_head()));
    }
    {
        let db = retry_while_locked(|| sled::open(dir.path().join("db")));
        db.open_tree("meta").unwrap().remove("indexed_upto").unwrap();
        db.flush().unwrap();
    }
    let store = reopen(&dir);
    let head = store.durable_head();
    assert_eq!(indexed_upto(&store), None);
    assert_eq!(pending_seqs(&store), 0, "a missing indexed_upto means indexed up to the head");
    assert_topic_reads_complete(&store, &topics, 1);

    // Writing on: the first group records indexed_upto, later ones stay pending.
    set_persist_limits(&store, 1_000_000, 1000, Duration::from_secs(3600));
    commit_mixed(&store, &topics, 5, 10).await;
    let upto = indexed_upto(&store).unwrap();
    assert!(upto > head && upto < store.durable_head());
    assert!(pending_seqs(&store) > 0);
    assert_topic_reads_complete(&store, &topics, 1);
    store.shared().skip_final_persist.store(true, Ordering::Relaxed);
    drop(store);
    let store = open(&dir);
    assert_eq!(pending_seqs(&store), (store.durable_head() - upto) as usize);
    assert_topic_reads_complete(&store, &topics, 1);
}

#[test]
fn failed_groups_leave_no_pending_entries_and_undo_a_persist() {
    let dir = tempfile::tempdir().unwrap();
    let store = reopen(&dir);
    let (t1, t2, t3) = (Topic::session("t1"), Topic::session("t2"), Topic::session("t3"));
    set_persist_limits(&store, 1_000_000, 1000, Duration::from_secs(3600));
    store.commit_blocking(one_event(&t1, 1)).unwrap(); // persisted: first group after open
    store.commit_blocking(one_event(&t1, 2)).unwrap(); // pending
    store.commit_blocking(one_event(&t2, 3)).unwrap(); // pending
    assert_eq!((indexed_upto(&store), pending_seqs(&store), store.shared().index.len()), (Some(1), 2, 1));

    let fail_next = |batch: Batch| {
        let (reached, release) = gate_before_flush(&store);
        let committer = {
            let store = store.clone();
            std::thread::spawn(move || store.commit_blocking(batch))
        };
        reached.recv_timeout(Duration::from_secs(10)).unwrap();
        release.send(Err(sled::Error::Unsupported("injected flush failure".into()))).unwrap();
        assert!(committer.join().unwrap().is_err());
        *store.shared().before_flush.lock().unwrap() = None;
    };
    let seqs_of = |topic: &Topic| {
        store.events_since(0, Some(topic), usize::MAX).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>()
    };

    // A group that only adds to pending fails: pending does not keep it.
    let mut batch = one_event(&t1, 4);
    batch.event(ev(&t3, 5));
    fail_next(batch);
    assert_eq!(pending_seqs(&store), 2);
    assert!(store.shared().pending.read().unwrap().seqs(&t1, 0, u64::MAX, usize::MAX) == vec![2]);
    assert!(store.shared().pending.read().unwrap().seqs(&t3, 0, u64::MAX, usize::MAX).is_empty());

    // A group that persists fails: its index writes and indexed_upto are
    // undone, and pending still holds what it was persisting.
    set_persist_limits(&store, 3, 1000, Duration::from_secs(3600));
    let mut batch = one_event(&t1, 6);
    batch.event(ev(&t3, 7));
    fail_next(batch);
    assert_eq!((indexed_upto(&store), pending_seqs(&store), store.shared().index.len()), (Some(1), 2, 1));
    assert_eq!((seqs_of(&t1), seqs_of(&t2), seqs_of(&t3)), (vec![1, 2], vec![3], vec![]));

    // Seq 4 goes to another topic now; the next persist carries it.
    store.commit_blocking(one_event(&t3, 8)).unwrap();
    assert_eq!((indexed_upto(&store), pending_seqs(&store)), (Some(4), 0));
    assert_eq!((seqs_of(&t1), seqs_of(&t2), seqs_of(&t3)), (vec![1, 2], vec![3], vec![4]));
    assert_topic_reads_complete(&store, &[t1, t2, t3], 1);
}

#[tokio::test]
async fn only_a_records_owner_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // Events alone need no owner; a record does.
    let refused = Batch::new().put(&session("s1", "x")).map(|_| ()).unwrap_err();
    assert!(matches!(refused, StoreError::NotOwner { tree: "sessions", owner: Owner::Session, writer: None }));
    let refused = Batch::by(Owner::Session).put(&turn("s1", 1)).map(|_| ()).unwrap_err();
    assert!(refused.to_string().contains("turns records are written by the turn actor only, not by session"));
    assert!(Batch::by(Owner::Provider).put(&approval("a1")).is_err());
    // A refused delete fails the whole commit, and nothing of it is written.
    let mut batch = Batch::by(Owner::Turn);
    batch.put(&turn("s1", 1)).unwrap().delete::<SessionRecord>("s1");
    assert!(matches!(store.commit(batch).await, Err(StoreError::NotOwner { tree: "sessions", .. })));
    assert_eq!(store.count::<TurnRecord>(), 0);
    // Deletes: a session's children's records are the session's to remove.
    assert!(Owner::Session.may_delete(Owner::Turn) && Owner::Session.may_delete(Owner::Provider));
    assert!(!Owner::Turn.may_delete(Owner::Session) && !Owner::Auth.may_delete(Owner::Session));
    assert!(Owner::Startup.may_delete(Owner::Provider) && !Owner::Startup.may_delete(Owner::Auth));
}
