//! Prints NATS traffic with its headers, like `nats sub` of the NATS CLI, for operators who do not
//! have the CLI at hand: `trace 'session.>'`, `trace 'user.*.events'`, `trace '>'`.

use clap::Parser;
use futures::StreamExt;
use shared::config::NatsConfig;

#[derive(Parser)]
#[command(
    name = "trace",
    about = "Print NATS messages (subject, headers, payload) on a subject filter"
)]
struct Config {
    /// Subject filter, e.g. 'session.>' or 'user.*.events'.
    #[arg(default_value = ">")]
    subject: String,
    #[command(flatten)]
    nats: NatsConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let client = shared::nats::connect_checked(&config.nats.nats_url, "trace").await?;
    let mut messages = client.subscribe(config.subject.clone()).await?;
    eprintln!(
        "listening on {} at {}",
        config.subject,
        shared::nats::redacted(&config.nats.nats_url)
    );
    while let Some(message) = messages.next().await {
        let headers = message
            .headers
            .iter()
            .flat_map(|headers| headers.iter())
            .map(|(name, values)| {
                let values: Vec<&str> = values.iter().map(|value| value.as_str()).collect();
                format!("{name}={}", values.join(","))
            })
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "[{}] {} {}\n  {}",
            shared::time::now(),
            message.subject,
            headers,
            String::from_utf8_lossy(&message.payload)
        );
    }
    Ok(())
}
