//! Runs the crash-recovery demo (`examples/crash_recovery.rs`) against the
//! freshly built daemon and checks the numbers it reports.

#[path = "../examples/crash_recovery.rs"]
#[allow(dead_code)]
mod crash_recovery;

use std::path::Path;

#[tokio::test(flavor = "multi_thread")]
async fn the_crash_recovery_demo_holds() {
    let dir = tempfile::Builder::new().prefix("bosun-test").tempdir().expect("tempdir");
    let report = crash_recovery::run_demo(Path::new(env!("CARGO_BIN_EXE_bosun")), &dir.path().join("data"), true)
        .await
        .expect("the demo runs to the end");
    println!("{report}");

    assert!(report.ok(), "the demo failed: {:?}\n{report}", report.failures());
    // The stream, as the client saw it: whole, in order, once.
    assert_eq!(report.first_tick, Some(1), "{report}");
    assert_eq!((report.tick_gaps, report.tick_duplicates), (0, 0), "{report}");
    assert_eq!((report.chunk_index_gaps, report.chunk_index_duplicates), (0, 0), "{report}");
    assert_eq!(report.event_duplicates, 0, "{report}");
    assert!(report.ticks_before_kill > 0 && report.ticks_after_restart >= 40, "{report}");
    assert!(report.ws_connections >= 2, "the client resubscribed after the kill: {report}");
    // Nothing the client saw was lost by the kill -9, and it missed nothing.
    assert!(report.events_before_kill > 0 && report.events_after_restart > 0, "{report}");
    assert_eq!(report.seen_not_stored, 0, "{report}");
    assert_eq!(report.stored_not_seen, 0, "{report}");
    // Every injected panic was a supervised restart.
    for kind in ["turn", "provider", "session", "front"] {
        assert!(report.health_restarts.get(kind).copied().unwrap_or(0) >= 1, "{kind}: {report}");
        assert!(report.restarts_on_record.get(kind).copied().unwrap_or(0) >= 1, "{kind} on record: {report}");
    }
    assert!(report.restart_to_first_tick.is_some(), "{report}");
    assert_eq!(report.turn_status, "interrupted");
}
