//! Signals from the user's side: SIGHUP reloads the configuration and does not stop tallyd
//! (nor lose the window); SIGTERM still drains and flushes.

mod common;

use std::time::Duration;

use common::Tallyd;

#[test]
fn sighup_reloads_and_the_window_survives() {
    let mut t = Tallyd::start("");
    t.send_udp("hup.test:3|c");
    t.wait_value("hup_test_total", 3.0);
    t.send_udp("hup.test:2|c");
    let pid = libc::pid_t::try_from(t.pid()).expect("pid");
    // SAFETY: kill only sends a signal to the child this test started; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !t
        .logs()
        .iter()
        .any(|l| l.contains("configuration reloaded"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload log line: {:?}",
            t.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, body) = t.get("/health");
    assert_eq!(code, 200, "tallyd answers after SIGHUP");
    let h: serde_json::Value = serde_json::from_str(&body).expect("health JSON");
    assert_eq!(h["last_reload"]["trigger"], "signal");
    assert_eq!(h["last_reload"]["result"], "ok");
    // The increment sent before the signal is still counted: the process kept its state.
    t.wait_value("hup_test_total", 5.0);
    let status = t.terminate();
    assert!(status.success(), "SIGTERM still stops cleanly: {status:?}");
}
