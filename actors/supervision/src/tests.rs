//! Tests of the supervision core and the generic supervisor actor, against
//! real ractor actors. Every test uses its own actor names: the ractor
//! registry is global and tests run in parallel in one process.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{
    call_t, registry, Actor, ActorId, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort, SupervisionEvent,
};
use tokio::sync::mpsc;

use super::*;

// ----- test child -----

/// Shared probes of one child id, surviving its restarts.
#[derive(Clone, Default)]
struct Probe {
    /// Successful starts (incremented in pre_start).
    starts: Arc<AtomicU32>,
    /// When set, pre_start fails.
    fail_start: Arc<AtomicBool>,
    /// Names of children whose post_stop ran, in order (shared across children).
    stopped: Arc<Mutex<Vec<String>>>,
}

impl Probe {
    fn starts(&self) -> u32 {
        self.starts.load(Ordering::SeqCst)
    }
}

struct TestChild {
    name: String,
    probe: Probe,
}

enum TestMsg {
    /// Panic in the handler.
    Panic,
    /// Stop normally.
    Stop,
    /// Sleep in the handler (ignores a graceful stop meanwhile).
    Sleep(Duration),
    /// Reply, to prove the actor is alive.
    Ping(RpcReplyPort<()>),
}

impl Actor for TestChild {
    type Msg = TestMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<TestMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        if self.probe.fail_start.load(Ordering::SeqCst) {
            return Err("refusing to start".into());
        }
        self.probe.starts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn handle(&self, myself: ActorRef<TestMsg>, message: TestMsg, _: &mut ()) -> Result<(), ActorProcessingErr> {
        match message {
            TestMsg::Panic => panic!("test child `{}` panics on purpose", self.name),
            TestMsg::Stop => myself.stop(None),
            TestMsg::Sleep(d) => tokio::time::sleep(d).await,
            TestMsg::Ping(reply) => {
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<TestMsg>, _: &mut ()) -> Result<(), ActorProcessingErr> {
        self.probe.stopped.lock().expect("probe lock").push(self.name.clone());
        Ok(())
    }
}

fn spec(id: &str, restart: Restart, shutdown: Shutdown, probe: &Probe) -> ChildSpec {
    let probe = probe.clone();
    let name = id.to_string();
    ChildSpec::for_actor(id, restart, shutdown, move || (TestChild { name: name.clone(), probe: probe.clone() }, ()))
}

fn permanent(id: &str, probe: &Probe) -> ChildSpec {
    spec(id, Restart::Permanent, Shutdown::Timeout(Duration::from_secs(2)), probe)
}

/// A config with negligible backoff, for tests that don't test backoff.
fn config(strategy: Strategy) -> SupervisorConfig {
    SupervisorConfig {
        strategy,
        intensity: Intensity { max_restarts: 10, within: Duration::from_secs(10) },
        backoff: Backoff { initial: Duration::from_millis(1), max: Duration::from_millis(5) },
        on_restart: None,
    }
}

fn id_of(name: &str) -> Option<ActorId> {
    registry::where_is(name).map(|c| c.get_id())
}

fn send(name: &str, msg: TestMsg) {
    registry::where_is(name)
        .unwrap_or_else(|| panic!("`{name}` not registered"))
        .send_message(msg)
        .unwrap_or_else(|_| panic!("send to `{name}` failed"));
}

/// Polls `cond` every 5 ms until it holds or `timeout` passes.
async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const WAIT: Duration = Duration::from_secs(3);

/// Waits until `name` is registered with a cell different from `old`.
async fn replaced(name: &str, old: ActorId) -> bool {
    eventually(WAIT, || id_of(name).is_some_and(|id| id != old)).await
}

async fn spawn_supervisor(name: &str, config: SupervisorConfig, specs: Vec<ChildSpec>) -> ActorRef<SupervisorMsg> {
    let (sup, _join) =
        Actor::spawn(Some(name.to_string()), Supervisor, (config, specs)).await.expect("supervisor starts");
    sup
}

async fn children_of(sup: &ActorRef<SupervisorMsg>) -> Vec<ChildInfo> {
    call_t!(sup, SupervisorMsg::Children, 2000).expect("children call")
}

// ----- a test parent that records its children's exits -----

struct Parent;

impl Actor for Parent {
    type Msg = ();
    type State = mpsc::UnboundedSender<String>;
    type Arguments = mpsc::UnboundedSender<String>;

    async fn pre_start(&self, _: ActorRef<()>, tx: Self::Arguments) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<()>,
        event: SupervisionEvent,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let line = match event {
            SupervisionEvent::ActorFailed(_, err) => format!("failed: {err}"),
            SupervisionEvent::ActorTerminated(_, _, reason) => format!("terminated: {reason:?}"),
            _ => return Ok(()),
        };
        let _ = tx.send(line);
        Ok(())
    }
}

async fn spawn_parent(name: &str) -> (ActorRef<()>, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (parent, _join) = Actor::spawn(Some(name.to_string()), Parent, tx).await.expect("parent starts");
    (parent, rx)
}

// ----- a business actor embedding Supervision, reporting its outcomes -----

struct Host;

enum HostMsg {
    Restart(RestartChild),
    Start(ChildSpec, RpcReplyPort<bool>),
    Terminate(String, RpcReplyPort<bool>),
}

impl From<RestartChild> for HostMsg {
    fn from(req: RestartChild) -> Self {
        HostMsg::Restart(req)
    }
}

struct HostState {
    supervision: Supervision,
    /// (source, outcome) of every outcome but those of `ActorStarted`.
    tx: mpsc::UnboundedSender<(&'static str, Outcome)>,
    /// The hook being forwarded, to label the outcomes `on_outcome` sees;
    /// `None` while one that is not reported is.
    source: Option<&'static str>,
}

impl Supervises for Host {
    fn supervision(state: &mut HostState) -> &mut Supervision {
        &mut state.supervision
    }

    fn escalation_error(_: &HostState, reason: &str) -> ActorProcessingErr {
        format!("host gave up: {reason}").into()
    }

    fn on_outcome(state: &mut HostState, outcome: &Outcome) {
        if let Some(source) = state.source {
            let _ = state.tx.send((source, outcome.clone()));
        }
    }
}

impl Actor for Host {
    type Msg = HostMsg;
    type State = HostState;
    type Arguments = (SupervisorConfig, mpsc::UnboundedSender<(&'static str, Outcome)>);

    async fn pre_start(
        &self,
        _: ActorRef<HostMsg>,
        (config, tx): Self::Arguments,
    ) -> Result<HostState, ActorProcessingErr> {
        Ok(HostState { supervision: Supervision::new(config), tx, source: None })
    }

    async fn handle(
        &self,
        myself: ActorRef<HostMsg>,
        message: HostMsg,
        st: &mut HostState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            HostMsg::Restart(req) => {
                st.source = Some("restart");
                Self::supervise_restart(&myself, req, st).await?;
            }
            HostMsg::Start(spec, reply) => {
                let ok = st.supervision.start_child(spec, &myself).await.is_ok();
                let _ = reply.send(ok);
            }
            HostMsg::Terminate(id, reply) => {
                let ok = st.supervision.terminate_child(&id).await.is_ok();
                let _ = reply.send(ok);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<HostMsg>,
        event: SupervisionEvent,
        st: &mut HostState,
    ) -> Result<(), ActorProcessingErr> {
        st.source = (!matches!(event, SupervisionEvent::ActorStarted(_))).then_some("event");
        Self::supervise_event(&myself, event, st).await
    }

    async fn post_stop(&self, _: ActorRef<HostMsg>, st: &mut HostState) -> Result<(), ActorProcessingErr> {
        Self::stop_children(st).await
    }
}

async fn next_outcome(rx: &mut mpsc::UnboundedReceiver<(&'static str, Outcome)>) -> (&'static str, Outcome) {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("an outcome in time").expect("host alive")
}

// ----- pure helpers -----

#[test]
fn backoff_doubles_and_caps() {
    let b = Backoff { initial: Duration::from_millis(10), max: Duration::from_millis(50) };
    assert_eq!(b.delay(1), Duration::ZERO);
    assert_eq!(b.delay(2), Duration::from_millis(10));
    assert_eq!(b.delay(3), Duration::from_millis(20));
    assert_eq!(b.delay(4), Duration::from_millis(40));
    assert_eq!(b.delay(5), Duration::from_millis(50));
    assert_eq!(b.delay(1000), Duration::from_millis(50));
}

#[test]
fn defaults_match_the_documented_policy() {
    let c = SupervisorConfig::default();
    assert_eq!(c.strategy, Strategy::OneForOne);
    assert_eq!(c.intensity.max_restarts, 5);
    assert_eq!(c.intensity.within, Duration::from_secs(10));
    assert_eq!(c.backoff.initial, Duration::from_millis(10));
    assert_eq!(c.backoff.max, Duration::from_secs(1));
    assert!(c.on_restart.is_none());
}

// ----- strategies -----

#[tokio::test]
async fn one_for_one_restarts_only_the_failed_child() {
    let (pa, pb) = (Probe::default(), Probe::default());
    let restarted = Arc::new(Mutex::new(Vec::<String>::new()));
    let hook_log = restarted.clone();
    let mut cfg = config(Strategy::OneForOne);
    cfg.on_restart = Some(Arc::new(move |id: &str| {
        hook_log.lock().expect("hook lock").push(id.to_string());
    }));
    let sup = spawn_supervisor("sv-ofo", cfg, vec![permanent("sv-ofo-a", &pa), permanent("sv-ofo-b", &pb)]).await;
    let a0 = id_of("sv-ofo-a").expect("a registered");
    let b0 = id_of("sv-ofo-b").expect("b registered");

    send("sv-ofo-a", TestMsg::Panic);
    assert!(replaced("sv-ofo-a", a0).await, "a restarted under its name");
    assert_eq!(pa.starts(), 2);

    // The new incarnation answers under the same name.
    let a1 = registry::where_is("sv-ofo-a").expect("a registered");
    let a1: ActorRef<TestMsg> = a1.into();
    call_t!(a1, TestMsg::Ping, 2000).expect("new a answers");

    assert_eq!(id_of("sv-ofo-b"), Some(b0), "sibling keeps its cell");
    assert_eq!(pb.starts(), 1);
    let kids = children_of(&sup).await;
    assert_eq!(
        kids,
        vec![
            ChildInfo { id: "sv-ofo-a".into(), running: true, restarts: 1 },
            ChildInfo { id: "sv-ofo-b".into(), running: true, restarts: 0 },
        ]
    );
    assert_eq!(*restarted.lock().expect("hook lock"), vec!["sv-ofo-a".to_string()]);
    sup.stop_and_wait(None, Some(WAIT)).await.expect("supervisor stops");
    assert!(id_of("sv-ofo-a").is_none() && id_of("sv-ofo-b").is_none());
}

#[tokio::test]
async fn one_for_all_restarts_all_children() {
    let shared = Arc::new(Mutex::new(Vec::new()));
    let probe = || Probe { stopped: shared.clone(), ..Probe::default() };
    let probes = [probe(), probe(), probe()];
    let names = ["sv-ofa-a", "sv-ofa-b", "sv-ofa-c"];
    let sup = spawn_supervisor(
        "sv-ofa",
        config(Strategy::OneForAll),
        names.iter().zip(&probes).map(|(n, p)| permanent(n, p)).collect(),
    )
    .await;
    let before: Vec<ActorId> = names.iter().map(|n| id_of(n).expect("registered")).collect();

    send("sv-ofa-b", TestMsg::Panic);
    for (name, old) in names.iter().zip(&before) {
        assert!(replaced(name, *old).await, "{name} restarted");
    }
    assert!(eventually(WAIT, || probes.iter().all(|p| p.starts() == 2)).await);
    // Siblings were stopped gracefully (post_stop ran) in reverse start
    // order; the panicked one ran no post_stop.
    assert_eq!(*shared.lock().expect("lock"), vec!["sv-ofa-c".to_string(), "sv-ofa-a".to_string()]);
    sup.stop_and_wait(None, Some(WAIT)).await.expect("supervisor stops");
}

#[tokio::test]
async fn rest_for_one_restarts_the_failed_and_later_children() {
    let probes = [Probe::default(), Probe::default(), Probe::default()];
    let names = ["sv-rfo-a", "sv-rfo-b", "sv-rfo-c"];
    let sup = spawn_supervisor(
        "sv-rfo",
        config(Strategy::RestForOne),
        names.iter().zip(&probes).map(|(n, p)| permanent(n, p)).collect(),
    )
    .await;
    let before: Vec<ActorId> = names.iter().map(|n| id_of(n).expect("registered")).collect();

    send("sv-rfo-b", TestMsg::Panic);
    assert!(replaced("sv-rfo-b", before[1]).await);
    assert!(replaced("sv-rfo-c", before[2]).await);
    assert!(eventually(WAIT, || probes[1].starts() == 2 && probes[2].starts() == 2).await);
    assert_eq!(id_of("sv-rfo-a"), Some(before[0]), "earlier child untouched");
    assert_eq!(probes[0].starts(), 1);
    let restarts: Vec<u64> = children_of(&sup).await.iter().map(|c| c.restarts).collect();
    assert_eq!(restarts, vec![0, 1, 1]);
    sup.stop_and_wait(None, Some(WAIT)).await.expect("supervisor stops");
}

// ----- restart types -----

#[tokio::test]
async fn restart_types_permanent_transient_temporary() {
    let (pp, pt, pt2, ptmp) = (Probe::default(), Probe::default(), Probe::default(), Probe::default());
    let timeout = Shutdown::Timeout(Duration::from_secs(2));
    let sup = spawn_supervisor(
        "sv-types",
        config(Strategy::OneForOne),
        vec![
            spec("sv-types-perm", Restart::Permanent, timeout, &pp),
            spec("sv-types-trans", Restart::Transient, timeout, &pt),
            spec("sv-types-trans2", Restart::Transient, timeout, &pt2),
            spec("sv-types-temp", Restart::Temporary, timeout, &ptmp),
        ],
    )
    .await;
    let ids = |kids: &[ChildInfo]| kids.iter().map(|c| c.id.clone()).collect::<Vec<_>>();

    // Permanent: restarted after a normal stop.
    let perm0 = id_of("sv-types-perm").expect("registered");
    send("sv-types-perm", TestMsg::Stop);
    assert!(replaced("sv-types-perm", perm0).await, "permanent restarted after a normal stop");
    assert_eq!(pp.starts(), 2);

    // Transient: a normal stop removes it.
    send("sv-types-trans", TestMsg::Stop);
    let mut kids = Vec::new();
    for _ in 0..200 {
        kids = children_of(&sup).await;
        if !ids(&kids).contains(&"sv-types-trans".to_string()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!ids(&kids).contains(&"sv-types-trans".to_string()), "transient removed after a normal stop");
    assert_eq!(pt.starts(), 1);
    assert!(id_of("sv-types-trans").is_none());

    // Transient: a panic restarts it.
    let t0 = id_of("sv-types-trans2").expect("registered");
    send("sv-types-trans2", TestMsg::Panic);
    assert!(replaced("sv-types-trans2", t0).await, "transient restarted after a panic");
    assert_eq!(pt2.starts(), 2);

    // Temporary: a panic removes it.
    send("sv-types-temp", TestMsg::Panic);
    for _ in 0..200 {
        kids = children_of(&sup).await;
        if !ids(&kids).contains(&"sv-types-temp".to_string()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!ids(&kids).contains(&"sv-types-temp".to_string()), "temporary removed after a panic");
    assert_eq!(ptmp.starts(), 1);
    assert!(id_of("sv-types-temp").is_none());
    assert_eq!(ids(&kids), vec!["sv-types-perm".to_string(), "sv-types-trans2".to_string()]);
    sup.stop_and_wait(None, Some(WAIT)).await.expect("supervisor stops");
}

// ----- intensity and escalation -----

#[tokio::test]
async fn intensity_exceeded_fails_the_supervisor_towards_its_parent() {
    let (parent, mut events) = spawn_parent("sv-int-parent").await;
    let probe = Probe::default();
    let mut cfg = config(Strategy::OneForOne);
    cfg.intensity = Intensity { max_restarts: 2, within: Duration::from_secs(10) };
    let (sup, _join) = Actor::spawn_linked(
        Some("sv-int".to_string()),
        Supervisor,
        (cfg, vec![permanent("sv-int-a", &probe)]),
        parent.get_cell(),
    )
    .await
    .expect("supervisor starts");

    for expected_starts in [2, 3] {
        let old = id_of("sv-int-a").expect("registered");
        send("sv-int-a", TestMsg::Panic);
        assert!(replaced("sv-int-a", old).await);
        assert_eq!(probe.starts(), expected_starts);
    }
    // Third failure within the window: more than 2 restarts → escalate.
    send("sv-int-a", TestMsg::Panic);
    let line = tokio::time::timeout(WAIT, events.recv()).await.expect("parent notified in time").expect("parent alive");
    assert!(line.starts_with("failed:"), "parent sees ActorFailed, got {line}");
    assert!(line.contains("intensity"), "reason mentions intensity: {line}");
    assert!(sup.wait(Some(WAIT)).await.is_ok());
    assert_eq!(probe.starts(), 3, "no restart after escalation");
    assert!(id_of("sv-int-a").is_none());
    parent.stop_and_wait(None, Some(WAIT)).await.expect("parent stops");
}

#[tokio::test]
async fn failing_restarts_count_toward_intensity_and_end_in_escalation() {
    let (parent, mut events) = spawn_parent("sv-fs-parent").await;
    let probe = Probe::default();
    let mut cfg = config(Strategy::OneForOne);
    cfg.intensity = Intensity { max_restarts: 3, within: Duration::from_secs(10) };
    cfg.backoff = Backoff { initial: Duration::from_millis(10), max: Duration::from_millis(40) };
    let (sup, _join) = Actor::spawn_linked(
        Some("sv-fs".to_string()),
        Supervisor,
        (cfg, vec![permanent("sv-fs-a", &probe)]),
        parent.get_cell(),
    )
    .await
    .expect("supervisor starts");

    probe.fail_start.store(true, Ordering::SeqCst);
    send("sv-fs-a", TestMsg::Panic);
    let line = tokio::time::timeout(WAIT, events.recv()).await.expect("escalation in time").expect("parent alive");
    assert!(line.starts_with("failed:") && line.contains("could not be restarted"), "{line}");
    assert!(sup.wait(Some(WAIT)).await.is_ok());
    assert_eq!(probe.starts(), 1);
    parent.stop_and_wait(None, Some(WAIT)).await.expect("parent stops");
}

// ----- backoff -----

#[tokio::test]
async fn backoff_delays_the_second_and_third_restarts() {
    let probe = Probe::default();
    let mut cfg = config(Strategy::OneForOne);
    cfg.backoff = Backoff { initial: Duration::from_millis(150), max: Duration::from_secs(1) };
    let sup = spawn_supervisor("sv-bo", cfg, vec![permanent("sv-bo-a", &probe)]).await;

    // First restart: immediate (no lower bound to check).
    let old = id_of("sv-bo-a").expect("registered");
    send("sv-bo-a", TestMsg::Panic);
    assert!(replaced("sv-bo-a", old).await);

    // Second: at least `initial`.
    let old = id_of("sv-bo-a").expect("registered");
    let t = Instant::now();
    send("sv-bo-a", TestMsg::Panic);
    assert!(replaced("sv-bo-a", old).await);
    let second = t.elapsed();
    assert!(second >= Duration::from_millis(150), "second restart after {second:?}");

    // Third: at least 2 * initial; meanwhile the child is reported not running.
    let old = id_of("sv-bo-a").expect("registered");
    let t = Instant::now();
    send("sv-bo-a", TestMsg::Panic);
    let mut saw_not_running = false;
    while t.elapsed() < Duration::from_millis(250) {
        let kids = children_of(&sup).await;
        if kids.first().is_some_and(|c| !c.running) {
            saw_not_running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(replaced("sv-bo-a", old).await);
    let third = t.elapsed();
    assert!(third >= Duration::from_millis(300), "third restart after {third:?}");
    assert!(saw_not_running, "child reported not running while its restart is pending");
    assert_eq!(probe.starts(), 4);
    sup.stop_and_wait(None, Some(WAIT)).await.expect("supervisor stops");
}

// ----- shutdown -----

#[tokio::test]
async fn shutdown_stops_in_reverse_order_and_kills_a_child_that_ignores_stop() {
    let shared = Arc::new(Mutex::new(Vec::new()));
    let probe = |s: &Arc<Mutex<Vec<String>>>| Probe { stopped: s.clone(), ..Probe::default() };
    let (pa, pb, pc) = (probe(&shared), probe(&shared), probe(&shared));
    let sup = spawn_supervisor(
        "sv-sd",
        config(Strategy::OneForOne),
        vec![
            permanent("sv-sd-a", &pa),
            spec("sv-sd-slow", Restart::Permanent, Shutdown::Timeout(Duration::from_millis(200)), &pb),
            permanent("sv-sd-c", &pc),
        ],
    )
    .await;
    let slow = registry::where_is("sv-sd-slow").expect("registered");
    send("sv-sd-slow", TestMsg::Sleep(Duration::from_secs(30)));
    tokio::time::sleep(Duration::from_millis(20)).await;

    let t = Instant::now();
    sup.stop_and_wait(None, Some(Duration::from_secs(5))).await.expect("supervisor stops");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(200), "waited for the timeout first: {took:?}");
    assert!(took < Duration::from_secs(3), "killed after the timeout: {took:?}");
    assert_eq!(slow.get_status(), ActorStatus::Stopped);
    // c then a stopped gracefully; the slow one was killed (no post_stop).
    assert_eq!(*shared.lock().expect("lock"), vec!["sv-sd-c".to_string(), "sv-sd-a".to_string()]);
    assert!(id_of("sv-sd-a").is_none() && id_of("sv-sd-slow").is_none() && id_of("sv-sd-c").is_none());
}

// ----- dynamic children -----

#[tokio::test]
async fn dynamic_start_and_terminate_child() {
    let sup = spawn_supervisor("sv-dyn", config(Strategy::OneForOne), Vec::new()).await;
    let probe = Probe::default();
    let res = call_t!(sup, SupervisorMsg::StartChild, 2000, permanent("sv-dyn-a", &probe)).expect("call");
    assert_eq!(res, Ok(()));
    assert!(id_of("sv-dyn-a").is_some());
    let dup = call_t!(sup, SupervisorMsg::StartChild, 2000, permanent("sv-dyn-a", &probe)).expect("call");
    assert!(dup.is_err(), "duplicate id refused");

    let known = call_t!(sup, SupervisorMsg::TerminateChild, 2000, "sv-dyn-a".to_string()).expect("call");
    assert!(known);
    assert!(id_of("sv-dyn-a").is_none(), "terminated child unregistered on return");
    assert!(children_of(&sup).await.is_empty());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(probe.starts(), 1, "terminated child not restarted");
    let unknown = call_t!(sup, SupervisorMsg::TerminateChild, 2000, "sv-dyn-a".to_string()).expect("call");
    assert!(!unknown);

    // Same id can be added again right after.
    let res = call_t!(sup, SupervisorMsg::StartChild, 2000, permanent("sv-dyn-a", &probe)).expect("call");
    assert_eq!(res, Ok(()));
    assert_eq!(probe.starts(), 2);
    sup.stop_and_wait(None, Some(WAIT)).await.expect("supervisor stops");
}

#[tokio::test]
async fn failing_initial_child_fails_the_spawn_and_stops_started_ones() {
    let ok = Probe::default();
    let bad = Probe::default();
    bad.fail_start.store(true, Ordering::SeqCst);
    let res = Actor::spawn(
        Some("sv-init".to_string()),
        Supervisor,
        (config(Strategy::OneForOne), vec![permanent("sv-init-ok", &ok), permanent("sv-init-bad", &bad)]),
    )
    .await;
    assert!(res.is_err());
    assert_eq!(ok.starts(), 1);
    assert!(eventually(WAIT, || id_of("sv-init-ok").is_none()).await);
    assert_eq!(*ok.stopped.lock().expect("lock"), vec!["sv-init-ok".to_string()]);
}

// ----- embedded Supervision: outcomes, stale events and restarts -----

#[tokio::test]
async fn embedded_outcomes_backoff_and_stale_messages() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut cfg = config(Strategy::OneForOne);
    cfg.backoff = Backoff { initial: Duration::from_millis(200), max: Duration::from_secs(1) };
    let (host, _join) = Actor::spawn(Some("sv-host".to_string()), Host, (cfg, tx)).await.expect("host starts");
    let probe = Probe::default();
    let started = call_t!(host, HostMsg::Start, 2000, permanent("sv-host-a", &probe)).expect("call");
    assert!(started);

    // First failure: restarted at once.
    send("sv-host-a", TestMsg::Panic);
    assert_eq!(next_outcome(&mut rx).await, ("event", Outcome::Restarted { ids: vec!["sv-host-a".into()] }));

    // Second: scheduled after `initial`.
    send("sv-host-a", TestMsg::Panic);
    assert_eq!(
        next_outcome(&mut rx).await,
        ("event", Outcome::RestartScheduled { ids: vec!["sv-host-a".into()], delay: Duration::from_millis(200) })
    );
    // A stale request (wrong generation) is ignored; the real one restarts.
    host.send_message(HostMsg::Restart(RestartChild { child_id: "sv-host-a".into(), generation: 0 })).expect("send");
    assert_eq!(next_outcome(&mut rx).await, ("restart", Outcome::Ignored));
    assert_eq!(next_outcome(&mut rx).await, ("restart", Outcome::Restarted { ids: vec!["sv-host-a".into()] }));
    assert_eq!(probe.starts(), 3);

    // Terminating: the child's exit event is ignored, nothing restarts.
    let known = call_t!(host, HostMsg::Terminate, 2000, "sv-host-a".to_string()).expect("call");
    assert!(known);
    assert_eq!(next_outcome(&mut rx).await, ("event", Outcome::Ignored));
    assert_eq!(probe.starts(), 3);
    host.stop_and_wait(None, Some(WAIT)).await.expect("host stops");
}

#[tokio::test]
async fn delayed_group_restart_ignores_exits_of_siblings_it_stopped() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut cfg = config(Strategy::OneForAll);
    cfg.backoff = Backoff { initial: Duration::from_millis(200), max: Duration::from_secs(1) };
    let (host, _join) = Actor::spawn(Some("sv-grp".to_string()), Host, (cfg, tx)).await.expect("host starts");
    let probes = [Probe::default(), Probe::default(), Probe::default()];
    let names = ["sv-grp-a", "sv-grp-b", "sv-grp-c"];
    for (name, probe) in names.iter().zip(&probes) {
        let ok = call_t!(host, HostMsg::Start, 2000, permanent(name, probe)).expect("call");
        assert!(ok);
    }
    let all: Vec<String> = names.iter().map(|n| n.to_string()).collect();

    send("sv-grp-b", TestMsg::Panic);
    assert_eq!(next_outcome(&mut rx).await, ("event", Outcome::Restarted { ids: all.clone() }));
    // The exits of a and c, stopped by the supervisor, are ignored.
    assert_eq!(next_outcome(&mut rx).await, ("event", Outcome::Ignored));
    assert_eq!(next_outcome(&mut rx).await, ("event", Outcome::Ignored));

    // Second failure within the window: the whole group waits for the backoff.
    send("sv-grp-b", TestMsg::Panic);
    assert_eq!(
        next_outcome(&mut rx).await,
        ("event", Outcome::RestartScheduled { ids: all.clone(), delay: Duration::from_millis(200) })
    );
    assert!(names.iter().all(|n| id_of(n).is_none()), "group stopped while waiting");
    assert_eq!(next_outcome(&mut rx).await, ("event", Outcome::Ignored));
    assert_eq!(next_outcome(&mut rx).await, ("event", Outcome::Ignored));
    assert_eq!(next_outcome(&mut rx).await, ("restart", Outcome::Restarted { ids: all.clone() }));
    assert!(probes.iter().all(|p| p.starts() == 3));
    assert!(names.iter().all(|n| id_of(n).is_some()));
    host.stop_and_wait(None, Some(WAIT)).await.expect("host stops");
}

#[tokio::test]
async fn an_embedder_that_escalates_stops_its_children_then_fails_with_its_own_error() {
    let (parent, mut events) = spawn_parent("sv-esc-parent").await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut cfg = config(Strategy::OneForOne);
    cfg.intensity = Intensity { max_restarts: 1, within: Duration::from_secs(10) };
    let (host, _join) =
        Actor::spawn_linked(Some("sv-esc".to_string()), Host, (cfg, tx), parent.get_cell()).await.expect("host starts");
    let stopped = Arc::new(Mutex::new(Vec::new()));
    let (pa, pb) = (
        Probe { stopped: stopped.clone(), ..Probe::default() },
        Probe { stopped: stopped.clone(), ..Probe::default() },
    );
    for (name, probe) in [("sv-esc-a", &pa), ("sv-esc-b", &pb)] {
        let ok = call_t!(host, HostMsg::Start, 2000, permanent(name, probe)).expect("call");
        assert!(ok);
    }

    send("sv-esc-a", TestMsg::Panic);
    assert_eq!(next_outcome(&mut rx).await, ("event", Outcome::Restarted { ids: vec!["sv-esc-a".into()] }));
    // Second failure within the window: more than 1 restart → escalate.
    send("sv-esc-a", TestMsg::Panic);
    let line = tokio::time::timeout(WAIT, events.recv()).await.expect("parent notified in time").expect("parent alive");
    assert!(line.starts_with("failed: host gave up: restart intensity exceeded"), "the embedder's own error: {line}");
    assert!(host.wait(Some(WAIT)).await.is_ok());
    // The sibling was stopped gracefully before the host failed (the
    // panicked child runs no post_stop), and nothing is left running.
    assert_eq!(*stopped.lock().expect("lock"), vec!["sv-esc-b".to_string()]);
    assert!(id_of("sv-esc-a").is_none() && id_of("sv-esc-b").is_none());
    assert_eq!(pa.starts(), 2, "no restart after escalation");
    parent.stop_and_wait(None, Some(WAIT)).await.expect("parent stops");
}

#[tokio::test]
async fn an_embedder_that_stops_stops_its_children_in_reverse_order() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let (host, _join) =
        Actor::spawn(Some("sv-stop".to_string()), Host, (config(Strategy::OneForOne), tx)).await.expect("host starts");
    let stopped = Arc::new(Mutex::new(Vec::new()));
    let names = ["sv-stop-a", "sv-stop-b", "sv-stop-c"];
    for name in names {
        let probe = Probe { stopped: stopped.clone(), ..Probe::default() };
        let ok = call_t!(host, HostMsg::Start, 2000, permanent(name, &probe)).expect("call");
        assert!(ok);
    }
    host.stop_and_wait(None, Some(WAIT)).await.expect("host stops");
    let expected: Vec<String> = names.iter().rev().map(|n| n.to_string()).collect();
    assert_eq!(*stopped.lock().expect("lock"), expected, "each child's post_stop ran, last started first");
    assert!(names.iter().all(|n| id_of(n).is_none()));
}
