//! What one batch of chat frames reads and writes, gathered so that a batch costs a handful of
//! statements however many frames it holds: the sessions it touches are loaded (and locked) once,
//! the messages its receipts name once, the client ids it resends once; new messages get their
//! `seq` in memory and are inserted, with the sessions' new `last_message_seq`, in one statement;
//! receipt changes are written in one statement. The handler modules (`chat_message`, `receipts`,
//! ...) read and queue through it and never talk to Postgres for these themselves.

use crate::runtime::{Frame, FrameError, Sender};
use crate::session::{self, SessionRow};
use chrono::{DateTime, Utc};
use shared::auth::Role;
use shared::frames::{ClientFrame, Content, errors};
use shared::subjects::Address;
use sqlx::{FromRow, PgConnection};
use std::collections::HashMap;
use uuid::Uuid;

/// A stored message a resend (same `client_message_id`) answers with.
#[derive(Clone, FromRow)]
pub struct Stored {
    pub message_id: Uuid,
    pub seq: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct StoredWithKey {
    session_id: Uuid,
    sender_type: String,
    client_message_id: String,
    message_id: Uuid,
    seq: i64,
    created_at: DateTime<Utc>,
}

/// The message a receipt names, with what deciding on it needs.
#[derive(Clone, FromRow)]
pub struct ReceiptTarget {
    pub message_id: Uuid,
    pub session_id: Uuid,
    pub sender_type: String,
    pub sender_id: String,
    pub delivery_status: String,
    pub seeker_id: String,
    pub provider_id: String,
    pub mediator_id: Option<String>,
    pub connection_state: String,
    /// The session's unresolved dispute: its chat (receipts included) goes on after the end.
    pub dispute_id: Option<Uuid>,
}

struct NewMessage {
    message_id: Uuid,
    session_id: Uuid,
    seq: i64,
    sender_id: String,
    sender_type: &'static str,
    client_message_id: Option<String>,
    text: String,
    content: Content,
    created_at: DateTime<Utc>,
}

/// When each party acknowledged one of the mediator's messages (each has its own devices).
#[derive(Clone, Copy, Default)]
struct PartyDeliveries {
    seeker: Option<DateTime<Utc>>,
    provider: Option<DateTime<Utc>>,
}

#[derive(Default)]
pub struct ChatBatch {
    sessions: HashMap<Uuid, SessionRow>,
    receipt_targets: HashMap<Uuid, ReceiptTarget>,
    client_ids: HashMap<(Uuid, &'static str, String), Stored>,
    new_messages: Vec<NewMessage>,
    /// message id -> (status, when), the latest wins.
    status_changes: HashMap<Uuid, (&'static str, DateTime<Utc>)>,
    /// A mediator's message id -> when the seeker's and the provider's receipts said they have it.
    party_deliveries: HashMap<Uuid, PartyDeliveries>,
    /// (session, typist, the other participants) whose typing indicators the batch's messages
    /// clear.
    pub typing_clears: Vec<(Uuid, Role, Vec<String>)>,
}

fn receipt_message_id(frame: &ClientFrame) -> Option<Uuid> {
    match frame {
        ClientFrame::MessageDelivered { message_id, .. }
        | ClientFrame::MessageRead { message_id, .. } => Some(*message_id),
        _ => None,
    }
}

impl ChatBatch {
    /// Loads what `frames` will read: their sessions (locked, in id order so batches never
    /// deadlock), their receipts' messages (locked) and their resends' stored messages.
    pub async fn load(tx: &mut PgConnection, frames: &[Frame]) -> Result<ChatBatch, FrameError> {
        let mut batch = ChatBatch::default();
        let mut session_ids: Vec<Uuid> = Vec::new();
        let mut message_ids: Vec<Uuid> = Vec::new();
        // (session, sender role, client id) of each chat message that names one, column by column.
        let mut client_keys: (Vec<Uuid>, Vec<&'static str>, Vec<String>) = Default::default();
        for Frame { inbound, frame } in frames {
            if let Address::Session { session_id, .. } = inbound.address {
                session_ids.push(session_id);
                if let ClientFrame::ChatMessage {
                    client_message_id: Some(serde_json::Value::String(id)),
                    ..
                } = frame
                {
                    client_keys.0.push(session_id);
                    client_keys.1.push(inbound.sender.role.as_str());
                    client_keys.2.push(id.clone());
                }
            }
            if let Some(message_id) = receipt_message_id(frame) {
                message_ids.push(message_id);
            }
        }
        session_ids.sort();
        session_ids.dedup();
        if !session_ids.is_empty() {
            let rows = session::load_many_for_update(tx, &session_ids).await?;
            batch.sessions = rows.into_iter().map(|row| (row.session_id, row)).collect();
        }
        if !message_ids.is_empty() {
            let targets = sqlx::query_as::<_, ReceiptTarget>(
                "SELECT m.message_id, m.session_id, m.sender_type, m.sender_id, m.delivery_status,
                        s.seeker_id, s.provider_id, s.mediator_id, s.connection_state, s.dispute_id
                 FROM chat_messages m JOIN work_sessions s ON s.session_id = m.session_id
                 WHERE m.message_id = ANY($1) ORDER BY m.message_id FOR UPDATE OF m",
            )
            .bind(&message_ids)
            .fetch_all(&mut *tx)
            .await?;
            batch.receipt_targets = targets
                .into_iter()
                .map(|target| (target.message_id, target))
                .collect();
        }
        if !client_keys.0.is_empty() {
            // Whole keys, so each is one probe of the unique index: matching on the session alone
            // reads every message of the session, and a busy session's batches slow down as its
            // history grows.
            let rows = sqlx::query_as::<_, StoredWithKey>(
                "SELECT m.session_id, m.sender_type, m.client_message_id, m.message_id, m.seq,
                        m.created_at
                 FROM unnest($1::uuid[], $2::text[], $3::text[])
                          AS k(session_id, sender_type, client_message_id)
                 JOIN chat_messages m ON m.session_id = k.session_id
                      AND m.sender_type = k.sender_type
                      AND m.client_message_id = k.client_message_id",
            )
            .bind(&client_keys.0)
            .bind(&client_keys.1)
            .bind(&client_keys.2)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let Some(sender_type) = Role::parse(&row.sender_type).map(Role::as_str) else {
                    continue;
                };
                batch.client_ids.insert(
                    (row.session_id, sender_type, row.client_message_id),
                    Stored {
                        message_id: row.message_id,
                        seq: row.seq,
                        created_at: row.created_at,
                    },
                );
            }
        }
        Ok(batch)
    }

    /// The session, if `sender` is part of it; "session not found" otherwise.
    pub fn participant(
        &self,
        session_id: Uuid,
        sender: &Sender,
    ) -> Result<(SessionRow, Role), FrameError> {
        session::participant(self.sessions.get(&session_id).cloned(), sender)
    }

    /// The stored message a resend of `client_message_id` refers to, if any.
    pub fn resent(&self, session_id: Uuid, role: Role, client_message_id: &str) -> Option<Stored> {
        self.client_ids
            .get(&(session_id, role.as_str(), client_message_id.to_owned()))
            .cloned()
    }

    /// Queues a new message with the session's next `seq`; returns what the events need.
    pub fn add_message(
        &mut self,
        session_id: Uuid,
        sender: &Sender,
        role: Role,
        client_message_id: Option<String>,
        text: String,
        content: Content,
    ) -> Result<Stored, FrameError> {
        let row = self
            .sessions
            .get_mut(&session_id)
            .ok_or_else(|| FrameError::refused(errors::SESSION_NOT_FOUND, Some(session_id)))?;
        row.last_message_seq += 1;
        let stored = Stored {
            message_id: Uuid::now_v7(),
            seq: row.last_message_seq,
            // Postgres keeps microseconds: the event and the stored row say the same time.
            created_at: DateTime::from_timestamp_micros(Utc::now().timestamp_micros())
                .unwrap_or_else(Utc::now),
        };
        if let Some(client_id) = &client_message_id {
            self.client_ids.insert(
                (session_id, role.as_str(), client_id.clone()),
                stored.clone(),
            );
        }
        self.new_messages.push(NewMessage {
            message_id: stored.message_id,
            session_id,
            seq: stored.seq,
            sender_id: sender.user_id.clone(),
            sender_type: role.as_str(),
            client_message_id,
            text,
            content,
            created_at: stored.created_at,
        });
        Ok(stored)
    }

    /// Marks the chat of the cached session started (the caller wrote it).
    pub fn chat_started(&mut self, session_id: Uuid) {
        if let Some(row) = self.sessions.get_mut(&session_id) {
            row.chat_started_at = Some(Utc::now());
        }
    }

    pub fn receipt_target(&self, message_id: Uuid) -> Option<ReceiptTarget> {
        let mut target = self.receipt_targets.get(&message_id).cloned()?;
        if let Some((status, _)) = self.status_changes.get(&message_id) {
            target.delivery_status = (*status).to_owned();
        }
        Some(target)
    }

    /// Queues a receipt's status change; returns its time.
    pub fn set_status(&mut self, message_id: Uuid, status: &'static str) -> DateTime<Utc> {
        let at = Utc::now();
        self.status_changes.insert(message_id, (status, at));
        at
    }

    /// Queues that `party` has one of the mediator's messages (a receipt of theirs said so).
    pub fn delivered_to_party(&mut self, message_id: Uuid, party: Role) {
        let at = Utc::now();
        let deliveries = self.party_deliveries.entry(message_id).or_default();
        match party {
            Role::Seeker => deliveries.seeker = deliveries.seeker.or(Some(at)),
            Role::Provider => deliveries.provider = deliveries.provider.or(Some(at)),
            Role::Mediator => {}
        }
    }

    /// Writes everything queued so far (before a read that must see it, and at the end).
    pub async fn flush(&mut self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        if !self.new_messages.is_empty() {
            let messages = std::mem::take(&mut self.new_messages);
            let mut last_seq: HashMap<Uuid, i64> = HashMap::new();
            for message in &messages {
                let seq = last_seq.entry(message.session_id).or_insert(0);
                *seq = (*seq).max(message.seq);
            }
            let (seq_sessions, seq_values): (Vec<Uuid>, Vec<i64>) = last_seq.into_iter().unzip();
            sqlx::query(
                // A data-modifying WITH always runs to completion: one round trip for both.
                "WITH stored AS (
                     INSERT INTO chat_messages
                         (message_id, session_id, seq, sender_id, sender_type, client_message_id, message_text, created_at,
                          kind, latitude, longitude, url, file_name, size_bytes, mime_type)
                     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[],
                          $11::text[], $12::float8[], $13::float8[], $14::text[], $15::text[], $16::bigint[], $17::text[]))
                 UPDATE work_sessions SET last_message_seq = v.seq, last_activity_at = now()
                 FROM unnest($9::uuid[], $10::bigint[]) AS v(session_id, seq)
                 WHERE work_sessions.session_id = v.session_id",
            )
            .bind(messages.iter().map(|m| m.message_id).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.session_id).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.seq).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.sender_id.as_str()).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.sender_type).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.client_message_id.as_deref()).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.text.as_str()).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.created_at).collect::<Vec<_>>())
            .bind(seq_sessions)
            .bind(seq_values)
            .bind(messages.iter().map(|m| m.content.kind.as_str()).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.content.latitude).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.content.longitude).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.content.url.as_deref()).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.content.name.as_deref()).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.content.size_bytes).collect::<Vec<_>>())
            .bind(messages.iter().map(|m| m.content.mime_type.as_deref()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        if !self.status_changes.is_empty() {
            let changes = std::mem::take(&mut self.status_changes);
            let mut ids = Vec::with_capacity(changes.len());
            let mut statuses = Vec::with_capacity(changes.len());
            let mut times = Vec::with_capacity(changes.len());
            for (id, (status, at)) in changes {
                ids.push(id);
                statuses.push(status);
                times.push(at);
            }
            sqlx::query(
                "UPDATE chat_messages SET delivery_status = v.status,
                     delivered_at = COALESCE(delivered_at, v.at),
                     read_at = CASE WHEN v.status = 'read' THEN v.at ELSE read_at END
                 FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS v(message_id, status, at)
                 WHERE chat_messages.message_id = v.message_id",
            )
            .bind(ids)
            .bind(statuses)
            .bind(times)
            .execute(&mut *tx)
            .await?;
        }
        if !self.party_deliveries.is_empty() {
            let deliveries = std::mem::take(&mut self.party_deliveries);
            let mut ids = Vec::with_capacity(deliveries.len());
            let mut seeker_times = Vec::with_capacity(deliveries.len());
            let mut provider_times = Vec::with_capacity(deliveries.len());
            for (id, PartyDeliveries { seeker, provider }) in deliveries {
                ids.push(id);
                seeker_times.push(seeker);
                provider_times.push(provider);
            }
            sqlx::query(
                "UPDATE chat_messages SET
                     seeker_delivered_at = COALESCE(seeker_delivered_at, v.seeker_at),
                     provider_delivered_at = COALESCE(provider_delivered_at, v.provider_at)
                 FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[])
                          AS v(message_id, seeker_at, provider_at)
                 WHERE chat_messages.message_id = v.message_id
                   AND ((v.seeker_at IS NOT NULL AND seeker_delivered_at IS NULL)
                        OR (v.provider_at IS NOT NULL AND provider_delivered_at IS NULL))",
            )
            .bind(ids)
            .bind(seeker_times)
            .bind(provider_times)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}
