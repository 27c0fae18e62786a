//! A socket's outbound queue: what the registry, the read loop and the writer task share (not to be
//! confused with the workers' event outbox or the webhook outbox: this one is in memory). It
//! behaves as a bounded `tokio::sync::mpsc` channel (the same error types: full, closed, timed
//! out; `recv` answers `None` once every sender is gone and the queue is empty), but costs an idle
//! socket about 150 bytes instead of 1.8 KiB: tokio's channel allocates a 32-slot block and
//! its cache-line-padded state up front, per channel, and the gateway keeps one per socket,
//! most of them idle (issue 19: at most 10 KiB per idle socket over every process). Here the
//! queue is a `VecDeque` that grows with what is queued (and keeps that capacity), so a frame
//! queued costs no allocation once a socket has carried a few.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
pub use tokio::sync::mpsc::error::{SendError, SendTimeoutError, TrySendError};

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Something was queued, or the last sender left.
    readable: Notify,
    /// Room was made, or the receiver left.
    writable: Notify,
    capacity: usize,
}

struct State<T> {
    queue: VecDeque<T>,
    senders: usize,
    receiver_alive: bool,
}

/// A bounded queue of at most `capacity` items (at least 1).
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            senders: 1,
            receiver_alive: true,
        }),
        readable: Notify::new(),
        writable: Notify::new(),
        capacity: capacity.max(1),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing here can panic while the lock is held; carry on with the data if it did.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.senders -= 1;
        if state.senders == 0 {
            drop(state);
            // `notify_one` keeps a permit if the receiver is not waiting yet: it cannot miss it.
            self.shared.readable.notify_one();
        }
    }
}

impl<T> Sender<T> {
    /// Queues `item` if there is room, without waiting.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut state = self.shared.lock();
        if !state.receiver_alive {
            return Err(TrySendError::Closed(item));
        }
        if state.queue.len() >= self.shared.capacity {
            return Err(TrySendError::Full(item));
        }
        state.queue.push_back(item);
        drop(state);
        self.shared.readable.notify_one();
        Ok(())
    }

    /// Queues `item`, waiting for room as long as it takes.
    pub async fn send(&self, item: T) -> Result<(), SendError<T>> {
        let mut item = item;
        loop {
            // Registered before the check, so room made in between is not missed.
            let room = self.shared.writable.notified();
            match self.try_send(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(back)) => return Err(SendError(back)),
                Err(TrySendError::Full(back)) => item = back,
            }
            room.await;
        }
    }

    /// Queues `item`, waiting for room up to `timeout`.
    pub async fn send_timeout(
        &self,
        item: T,
        timeout: Duration,
    ) -> Result<(), SendTimeoutError<T>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut item = item;
        loop {
            let room = self.shared.writable.notified();
            match self.try_send(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(back)) => return Err(SendTimeoutError::Closed(back)),
                Err(TrySendError::Full(back)) => item = back,
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(SendTimeoutError::Timeout(item));
            }
        }
    }
}

pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_alive = false;
        state.queue.clear();
        drop(state);
        self.shared.writable.notify_waiters();
    }
}

impl<T> Receiver<T> {
    /// The next item; `None` once every sender is gone and nothing is left.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            let readable = self.shared.readable.notified();
            {
                let mut state = self.shared.lock();
                if let Some(item) = state.queue.pop_front() {
                    drop(state);
                    self.shared.writable.notify_one();
                    return Some(item);
                }
                if state.senders == 0 {
                    return None;
                }
            }
            readable.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn items_come_out_in_order_and_a_full_queue_refuses() {
        let (sender, mut receiver) = channel(2);
        sender.try_send(1).expect("room");
        sender.try_send(2).expect("room");
        assert!(matches!(sender.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(receiver.recv().await, Some(1));
        sender.try_send(3).expect("room again");
        assert_eq!(receiver.recv().await, Some(2));
        assert_eq!(receiver.recv().await, Some(3));
    }

    #[tokio::test]
    async fn recv_ends_when_every_sender_is_gone_and_the_queue_is_drained() {
        let (sender, mut receiver) = channel(4);
        let second = sender.clone();
        sender.try_send("last words").expect("room");
        drop(sender);
        drop(second);
        assert_eq!(receiver.recv().await, Some("last words"));
        assert_eq!(receiver.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_an_item_and_for_the_last_sender_leaving() {
        let (sender, mut receiver) = channel(4);
        let waiting = tokio::spawn(async move {
            let first = receiver.recv().await;
            let end = receiver.recv().await;
            (first, end)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        sender.try_send(7).expect("room");
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(sender);
        let answers = tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .expect("woken")
            .expect("no panic");
        assert_eq!(answers, (Some(7), None));
    }

    #[tokio::test]
    async fn send_waits_for_room_and_send_timeout_gives_up() {
        let (sender, mut receiver) = channel(1);
        sender.try_send(1).expect("room");
        assert!(matches!(
            sender.send_timeout(2, Duration::from_millis(30)).await,
            Err(SendTimeoutError::Timeout(2))
        ));
        let sending = {
            let sender = sender.clone();
            tokio::spawn(async move { sender.send(2).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(receiver.recv().await, Some(1));
        assert!(sending.await.expect("no panic"), "sent once room was made");
        assert_eq!(receiver.recv().await, Some(2));
    }

    #[tokio::test]
    async fn senders_learn_the_receiver_is_gone() {
        let (sender, receiver) = channel(1);
        sender.try_send(1).expect("room");
        let waiting = {
            let sender = sender.clone();
            tokio::spawn(async move { sender.send(2).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(receiver);
        let answer = tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .expect("woken")
            .expect("no panic");
        assert!(matches!(answer, Err(SendError(2))));
        assert!(matches!(sender.try_send(3), Err(TrySendError::Closed(3))));
    }
}
