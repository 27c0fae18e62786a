//! `message_delivered` / `message_read` from the recipient: the status only moves forward
//! (sent -> delivered -> read; read implies delivered), and each change gives the sender's sockets
//! one `message_status_update`. Repeats and late `delivered`s are ignored silently. For anyone but
//! the recipient the message does not exist. Receipts stay between seeker and provider (contract
//! section 10): a mediator's are accepted and change nothing, and a party's receipt on a
//! mediator's message moves its status silently (one status, shared by both parties) and records
//! that this party has it, so the re-sends skip it for this party only (section 12). Like the
//! chat, receipts go on after the end while a dispute is unresolved (the re-sends cover those
//! sessions, and a refused receipt would have the message re-sent at every connection).

use super::batch::ChatBatch;
use crate::outbox::Outbox;
use crate::runtime::{FrameError, Sender};
use shared::auth::Role;
use shared::frames::{Event, errors};
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Sent,
    Delivered,
    Read,
}

impl Status {
    fn parse(value: &str) -> Status {
        match value {
            "read" => Status::Read,
            "delivered" => Status::Delivered,
            _ => Status::Sent,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Read => "read",
        }
    }
}

pub fn handle(
    batch: &mut ChatBatch,
    sender: &Sender,
    message_id: Uuid,
    session_id: Option<Uuid>,
    wanted: Status,
    outbox: &mut Outbox,
) -> Result<(), FrameError> {
    let not_found = || FrameError::refused(errors::MESSAGE_NOT_FOUND, session_id);
    let Some(target) = batch.receipt_target(message_id) else {
        return Err(not_found());
    };
    if session_id.is_some_and(|id| id != target.session_id) {
        return Err(not_found());
    }
    let is_party_of_session = match sender.role {
        Role::Seeker => sender.user_id == target.seeker_id,
        Role::Provider => sender.user_id == target.provider_id,
        Role::Mediator => target.mediator_id.as_deref() == Some(sender.user_id.as_str()),
    };
    if sender.role == Role::Mediator {
        return if is_party_of_session {
            Ok(())
        } else {
            Err(not_found())
        };
    }
    let recipient_role = match target.sender_type.as_str() {
        "seeker" => Role::Provider,
        "provider" => Role::Seeker,
        // A mediator's message: either party's receipt moves its status (so it stops counting as
        // unread), and no event tells anyone (receipts stay between the parties).
        _ if is_party_of_session => {
            if Status::parse(&target.delivery_status) < wanted {
                batch.set_status(message_id, wanted.as_str());
            }
            if target.sender_type == Role::Mediator.as_str() {
                batch.delivered_to_party(message_id, sender.role);
            }
            return Ok(());
        }
        _ => return Err(not_found()),
    };
    if sender.role != recipient_role || !is_party_of_session {
        return Err(not_found());
    }
    if !matches!(target.connection_state.as_str(), "waiting" | "active")
        && target.dispute_id.is_none()
    {
        return Err(FrameError::refused(
            errors::SESSION_ENDED,
            Some(target.session_id),
        ));
    }
    if Status::parse(&target.delivery_status) >= wanted {
        return Ok(());
    }
    let at = batch.set_status(message_id, wanted.as_str());
    outbox.to_user(
        &target.sender_id,
        &Event::MessageStatusUpdate {
            message_id,
            session_id: target.session_id,
            status: wanted.as_str().to_owned(),
            timestamp: shared::time::rfc3339(at),
        },
    );
    Ok(())
}
