//! Frames that could not be applied after `WORKER_MAX_DELIVER` attempts go to the `DEAD_LETTER`
//! stream (`dead.<kind>`): the original payload and headers, plus an `error` header, kept for an
//! operator to read (`nats stream view DEAD_LETTER`) and replay by hand.

use async_nats::jetstream;
use shared::headers;

/// Stores the frame in `DEAD_LETTER`; waits for the stream's ack. The `Nats-Msg-Id` names the
/// frame's place in `INBOUND`, so a repeat after a crash stores it once.
pub async fn store(
    jetstream: &jetstream::Context,
    kind: &str,
    message: &jetstream::Message,
    stream_seq: u64,
    error: &str,
) -> anyhow::Result<()> {
    let mut dead_headers = message.headers.clone().unwrap_or_default();
    // Header values may not hold line breaks; an error text may.
    let error: String = error
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1000)
        .collect();
    dead_headers.insert(headers::ERROR, error.as_str());
    dead_headers.insert("original-subject", message.subject.as_str());
    dead_headers.insert(
        headers::MSG_ID,
        format!("dead-{kind}-{stream_seq}").as_str(),
    );
    jetstream
        .publish_with_headers(
            format!("dead.{kind}"),
            dead_headers,
            message.payload.clone(),
        )
        .await?
        .await?;
    metrics::counter!("worker_dead_letters_total", "kind" => kind.to_owned()).increment(1);
    Ok(())
}
