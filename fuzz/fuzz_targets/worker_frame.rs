//! Any payload that reaches a worker: reading it as a frame never panics (a frame that does not
//! parse is refused by the runtime with a fixed text), and a frame that parses names its type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::frames::ClientFrame;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = serde_json::from_slice::<ClientFrame>(data) {
        assert!(!frame.kind().name().is_empty());
        let _ = frame.client_message_id();
    }
});
