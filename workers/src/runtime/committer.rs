//! Group commit: the partitions this instance owns hand their ready frames here, and whatever
//! several partitions have ready is applied in one transaction (`batch::apply`), so a busy
//! instance commits tens of frames per transaction instead of one per partition. A partition has at
//! most one share in flight (its task waits for the answer), so its frames keep their order.
//!
//! When a shared transaction fails, every partition in it is told so and retries its share in a
//! transaction of its own: a failing frame then costs only its own partition a retry.

use super::BatchHandler;
use super::batch::{self, Part};
use crate::outbox::Delivery;
use sqlx::PgPool;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// The answer to a share: its events (`None`: it was applied already), or `Err` when the shared
/// transaction failed and the share should be retried alone.
pub type Answer = Result<Option<Vec<Delivery>>, ()>;

pub struct Share {
    pub part: Part,
    pub answer: oneshot::Sender<Answer>,
}

pub async fn run<H: BatchHandler>(
    pool: PgPool,
    handler: Arc<H>,
    kind: &'static str,
    batch_max: usize,
    concurrency: usize,
    mut shares: mpsc::Receiver<Share>,
) {
    let in_flight = Arc::new(Semaphore::new(concurrency.max(1)));
    let transaction_frames = metrics::histogram!("worker_transaction_frames", "kind" => kind);
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = shares.recv().await else {
            return;
        };
        let mut frames = first.part.frames.len();
        let mut group = vec![first];
        while frames < batch_max {
            match shares.try_recv() {
                Ok(share) => {
                    frames += share.part.frames.len();
                    group.push(share);
                }
                Err(_) => break,
            }
        }
        transaction_frames.record(frames as f64);
        let (pool, handler) = (pool.clone(), handler.clone());
        tokio::spawn(async move {
            let (parts, answers): (Vec<Part>, Vec<oneshot::Sender<Answer>>) = group
                .into_iter()
                .map(|share| (share.part, share.answer))
                .unzip();
            match batch::apply(&pool, &*handler, kind, parts).await {
                Ok(results) => {
                    for (answer, result) in answers.into_iter().zip(results) {
                        let _ = answer.send(Ok(result));
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, kind, "shared transaction failed; each partition retries alone");
                    for answer in answers {
                        let _ = answer.send(Err(()));
                    }
                }
            }
            drop(permit);
        });
    }
}
