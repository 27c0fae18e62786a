//! Frames that could not be applied after `WORKER_MAX_DELIVER` attempts go to the `DEAD_LETTER`
//! stream (`dead.<kind>`): the original payload and headers, plus an `error` header, kept for an
//! operator to read (`nats stream view DEAD_LETTER`) and replay by hand.

use async_nats::jetstream;
use shared::headers;

/// Stores the frame in `DEAD_LETTER`; waits for the stream's ack. The `Nats-Msg-Id` names the
/// frame itself (the gateway's id for it; else its place in this `INBOUND`, whose `epoch` tells
/// it from the same sequence of a stream made again), so a repeat after a crash stores it once.
pub async fn store(
    jetstream: &jetstream::Context,
    kind: &str,
    message: &jetstream::Message,
    epoch: i64,
    stream_seq: u64,
    error: &str,
) -> anyhow::Result<()> {
    let mut dead_headers = message.headers.clone().unwrap_or_default();
    let dead_id = match dead_headers.get(headers::MSG_ID) {
        Some(frame_id) => format!("dead-{kind}-{}", frame_id.as_str()),
        None => format!("dead-{kind}-{epoch}-{stream_seq}"),
    };
    // Header values may not hold line breaks; an error text may.
    let error: String = error
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1000)
        .collect();
    dead_headers.insert(headers::ERROR, error.as_str());
    if let Some(frame_id) = message
        .headers
        .as_ref()
        .and_then(|original| original.get(headers::MSG_ID))
    {
        dead_headers.insert(headers::ORIGINAL_MSG_ID, frame_id.as_str());
    }
    dead_headers.insert(headers::ORIGINAL_SUBJECT, message.subject.as_str());
    dead_headers.insert(headers::MSG_ID, dead_id.as_str());
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
