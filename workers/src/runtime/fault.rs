//! A test hook, off unless `WORKER_TEST_PANIC_ON` is set: the first frame of this process whose
//! payload contains that text makes its partition's task panic outside any handler, as a bug in
//! the runtime would. The system tests use it to show that such a partition is served again.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

static TRIGGER: OnceLock<Option<Vec<u8>>> = OnceLock::new();
static FIRED: AtomicBool = AtomicBool::new(false);

/// Panics once per process when the hook is set and `payload` holds its text.
pub fn maybe_panic(payload: &[u8]) {
    let trigger = TRIGGER.get_or_init(|| {
        std::env::var("WORKER_TEST_PANIC_ON")
            .ok()
            .filter(|text| !text.is_empty())
            .map(String::into_bytes)
    });
    let Some(trigger) = trigger else {
        return;
    };
    if payload
        .windows(trigger.len())
        .any(|window| window == trigger.as_slice())
        && !FIRED.swap(true, Ordering::SeqCst)
    {
        panic!("WORKER_TEST_PANIC_ON: injected panic in a partition task");
    }
}
