//! Any text a client can send: the gateway's judging never panics, and whatever it publishes goes
//! to a subject of exactly the shape the subject map allows (three tokens, no wildcard, no space),
//! so no frame can reach another subject or fan out (contract section 5).
#![no_main]

use gateway::inbound::{Verdict, judge};
use libfuzzer_sys::fuzz_target;
use shared::auth::Role;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for role in [Role::Seeker, Role::Provider] {
        if let Verdict::Publish { subject, .. } = judge(text, role) {
            assert!(
                !subject.contains(['*', '>', ' ', '\t', '\r', '\n']),
                "{subject:?}"
            );
            assert_eq!(subject.split('.').count(), 3, "{subject:?}");
            assert!(
                shared::subjects::Address::parse(&subject).is_some(),
                "{subject:?}"
            );
        }
    }
});
