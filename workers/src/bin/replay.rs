//! The operator's way back from a dead letter (`trace`'s sibling). `replay list` shows what is in
//! `DEAD_LETTER` by kind and error; `replay send` puts chosen frames back on `INBOUND` with their
//! original headers (who sent them, from which socket), once the cause is fixed, and removes them
//! from `DEAD_LETTER` when `INBOUND` has them.
//!
//! At most once: the re-published frame carries `Nats-Msg-Id: replay-<its own id>`, so a second
//! `send` of the same frame within the stream's de-duplication window is dropped by JetStream, and
//! after it the dead letter is gone; a chat message also keeps its `client_message_id`, which the
//! chat worker answers with the stored message instead of storing it again.

use async_nats::jetstream::{self, stream::Stream};
use clap::{Parser, Subcommand};
use shared::config::NatsConfig;
use shared::headers;

#[derive(Parser)]
#[command(
    name = "replay",
    about = "List dead-lettered frames, and put chosen ones back on INBOUND once their cause is fixed"
)]
struct Config {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    nats: NatsConfig,
}

#[derive(Subcommand)]
enum Command {
    /// One line per dead letter: its sequence, kind, age, original subject, error; then a count
    /// by kind and error.
    List {
        #[command(flatten)]
        filter: Filter,
    },
    /// Re-publishes the chosen dead letters to INBOUND and deletes them from DEAD_LETTER.
    Send {
        /// DEAD_LETTER sequences to replay (as `list` prints them).
        sequences: Vec<u64>,
        /// Every dead letter that passes the filter instead.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: Filter,
    },
}

#[derive(clap::Args)]
struct Filter {
    /// Only this worker kind (chat, lifecycle, mediums).
    #[arg(long)]
    kind: Option<String>,
    /// Only dead letters whose error contains this text.
    #[arg(long)]
    error: Option<String>,
}

/// One stored dead letter.
struct DeadLetter {
    sequence: u64,
    kind: String,
    error: String,
    original_subject: String,
    age_secs: i64,
    message: async_nats::jetstream::message::StreamMessage,
}

impl Filter {
    fn passes(&self, dead: &DeadLetter) -> bool {
        self.kind.as_ref().is_none_or(|kind| *kind == dead.kind)
            && self
                .error
                .as_ref()
                .is_none_or(|text| dead.error.contains(text.as_str()))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let client = shared::nats::connect_checked(&config.nats.nats_url, "replay").await?;
    let context = jetstream::new(client);
    let mut dead_letters = context
        .get_stream(shared::nats::DEAD_LETTER_STREAM)
        .await
        .map_err(|error| anyhow::anyhow!("stream DEAD_LETTER: {error}"))?;
    match config.command {
        Command::List { filter } => {
            let mut counts: std::collections::BTreeMap<(String, String), usize> =
                Default::default();
            for dead in read_all(&mut dead_letters).await? {
                if !filter.passes(&dead) {
                    continue;
                }
                println!(
                    "{:>8}  {:<9} {:>7}s ago  {}  {}",
                    dead.sequence, dead.kind, dead.age_secs, dead.original_subject, dead.error
                );
                *counts.entry((dead.kind, dead.error)).or_default() += 1;
            }
            for ((kind, error), count) in counts {
                println!("{count:>8} x {kind}: {error}");
            }
        }
        Command::Send {
            sequences,
            all,
            filter,
        } => {
            if sequences.is_empty() && !all {
                anyhow::bail!("name the DEAD_LETTER sequences to replay, or --all");
            }
            let mut replayed = 0;
            for dead in read_all(&mut dead_letters).await? {
                let chosen = if all {
                    filter.passes(&dead)
                } else {
                    sequences.contains(&dead.sequence)
                };
                if !chosen {
                    continue;
                }
                replay(&context, &dead_letters, &dead).await?;
                println!(
                    "replayed {} ({} {})",
                    dead.sequence, dead.kind, dead.original_subject
                );
                replayed += 1;
            }
            println!("{replayed} frame(s) put back on INBOUND");
        }
    }
    Ok(())
}

async fn read_all(stream: &mut Stream) -> anyhow::Result<Vec<DeadLetter>> {
    let state = stream.info().await?.state.clone();
    let now = chrono::Utc::now().timestamp();
    let mut found = Vec::new();
    for sequence in state.first_sequence.max(1)..=state.last_sequence {
        // A gap: deleted by an earlier replay.
        let Ok(message) = stream.get_raw_message(sequence).await else {
            continue;
        };
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .map(|value| value.as_str().to_owned())
                .unwrap_or_default()
        };
        found.push(DeadLetter {
            sequence,
            kind: message
                .subject
                .strip_prefix("dead.")
                .unwrap_or(message.subject.as_str())
                .to_owned(),
            error: header(headers::ERROR),
            original_subject: header(headers::ORIGINAL_SUBJECT),
            age_secs: now - message.time.unix_timestamp(),
            message,
        });
    }
    Ok(found)
}

/// Publishes the frame again as the gateway did (its subject before `INBOUND` added the
/// partition, its original headers), waits for `INBOUND`'s ack, then deletes the dead letter.
async fn replay(
    context: &jetstream::Context,
    dead_letters: &Stream,
    dead: &DeadLetter,
) -> anyhow::Result<()> {
    let subject = published_subject(&dead.original_subject).ok_or_else(|| {
        anyhow::anyhow!(
            "dead letter {} has no usable original-subject header",
            dead.sequence
        )
    })?;
    let mut frame_headers = async_nats::HeaderMap::new();
    for (name, values) in dead.message.headers.iter() {
        let name: &str = name.as_ref();
        if [
            headers::ERROR,
            headers::ORIGINAL_SUBJECT,
            headers::ORIGINAL_MSG_ID,
            headers::MSG_ID,
        ]
        .contains(&name)
        {
            continue;
        }
        for value in values {
            frame_headers.append(name, value.as_str());
        }
    }
    let frame_id = dead
        .message
        .headers
        .get(headers::ORIGINAL_MSG_ID)
        .map(|value| value.as_str().to_owned())
        .unwrap_or_else(|| format!("dead-letter-{}", dead.sequence));
    frame_headers.insert(headers::MSG_ID, format!("replay-{frame_id}").as_str());
    context
        .publish_with_headers(subject, frame_headers, dead.message.payload.clone())
        .await?
        .await
        .map_err(|error| anyhow::anyhow!("INBOUND did not take the frame: {error}"))?;
    dead_letters.delete_message(dead.sequence).await?;
    Ok(())
}

/// `session.<id>.chat.3` -> `session.<id>.chat`: the subject as the gateway published it (the
/// stream's transform adds the partition again).
fn published_subject(stored: &str) -> Option<String> {
    let (subject, partition) = stored.rsplit_once('.')?;
    partition.parse::<u32>().ok()?;
    shared::subjects::Address::parse(stored)?;
    Some(subject.to_owned())
}
