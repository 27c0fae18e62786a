//! Timestamps as the contract writes them: RFC 3339, UTC, with `Z`, millisecond precision.

use chrono::{DateTime, SecondsFormat, Utc};

/// Formats a timestamp the way every frame and REST answer carries it.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The current time, formatted for a frame.
pub fn now() -> String {
    rfc3339(Utc::now())
}

/// Serde adapter for `DateTime<Utc>` fields (`#[serde(with = "shared::time::serde_rfc3339")]`).
pub mod serde_rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::rfc3339(*at))
    }
}

/// Serde adapter for optional timestamps.
pub mod serde_rfc3339_option {
    use chrono::{DateTime, Utc};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(
        at: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => serializer.serialize_str(&super::rfc3339(*at)),
            None => serializer.serialize_none(),
        }
    }
}
