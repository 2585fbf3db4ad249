//! Conversation threads: every message of a case joins one. A reply joins the thread of the
//! message it answers; otherwise the thread with the same normalised subject; otherwise a
//! new one.

use crate::domain::CaseId;
use crate::domain::{MessageId, ThreadId};
use std::collections::BTreeMap;

use sqlx::AnyConnection;

use super::cases::visible;
use super::{Messages, StoreInner, StoreResult, admin_flag};
use crate::domain::party::Actor;
use crate::domain::prefixed_id;
use crate::domain::thread::normalize_subject;
use crate::domain::time::Micros;

#[derive(Debug, Clone)]
pub struct ThreadView {
    pub id: ThreadId,
    pub subject: Option<String>,
    pub participants: Vec<String>,
    pub message_count: i64,
    pub last_message_at: Option<Micros>,
    pub status: String,
}

#[derive(Debug, Clone)]
pub struct ThreadMessage {
    pub id: String,
    pub direction: String,
    pub channel: String,
    pub from: String,
    pub subject: Option<String>,
    pub body: String,
    pub at: Micros,
}

/// A thread with the count and time of its messages, as `list_threads` reads it.
#[derive(sqlx::FromRow)]
struct ThreadRow {
    id: ThreadId,
    subject_sealed: Option<Vec<u8>>,
    message_count: i64,
    last_message_at: Option<i64>,
    status: String,
    participants_kept: i32,
}

/// A participant of a thread, as `thread_participants` keeps it.
#[derive(sqlx::FromRow)]
struct KeptParticipant {
    id: String,
    thread_id: ThreadId,
    participant_sealed: Vec<u8>,
}

/// A participant of a thread, sealed and indexed, ready to be written with a message.
#[derive(Debug, Clone)]
pub(crate) struct NewParticipant {
    pub id: String,
    pub index: String,
    pub sealed: Vec<u8>,
}

pub(crate) fn participant_context(id: &(impl std::fmt::Display + ?Sized)) -> String {
    format!("participant:{id}")
}

/// The sealed envelope of one message of a thread, for the thread's participants.
#[derive(sqlx::FromRow)]
struct ParticipantRow {
    thread_id: ThreadId,
    id: String,
    envelope_sealed: Vec<u8>,
}

#[derive(sqlx::FromRow)]
struct ThreadMessageRow {
    id: String,
    direction: String,
    message_type: String,
    envelope_sealed: Vec<u8>,
    subject_sealed: Option<Vec<u8>>,
    body_sealed: Option<Vec<u8>>,
    at: i64,
}

#[derive(sqlx::FromRow)]
struct RfcMessageRow {
    id: MessageId,
    case_id: Option<CaseId>,
    thread_id: Option<ThreadId>,
    sender_verified: i32,
}

/// A case's threads (`$1`) with their counts, most recent first.
pub(crate) const LIST_THREADS_SQL: &str = "SELECT t.id AS id, t.subject_sealed AS subject_sealed, \
     COUNT(m.id) AS message_count, MAX(COALESCE(m.received_at, m.sent_at, m.created_at)) AS last_message_at, \
     t.status AS status, t.participants_kept AS participants_kept FROM threads t LEFT JOIN messages m ON m.thread_id = t.id \
     WHERE t.case_id = $1 GROUP BY t.id, t.subject_sealed, t.status, t.participants_kept \
     ORDER BY last_message_at DESC, t.id DESC";

pub(super) fn thread_context(id: &(impl std::fmt::Display + ?Sized)) -> String {
    format!("thread:{id}")
}

/// Threads this process has read, by case and subject index. A thread, once made, stays
/// the thread of its case and subject for as long as the case can be written to (only an
/// erasure, after which nothing more is sent, unlinks them: it also forgets them here), so
/// a send that finds its thread here need not read it. Only threads read from the database
/// are kept, so never one whose transaction might still roll back.
pub(crate) type KnownThreads = super::Remembered<(CaseId, String), String>;

impl Messages {
    /// The addresses and numbers of an envelope as participants of a thread, sealed (what is
    /// not an address, such as a system message's sender, is left out).
    pub(crate) fn participants_of(
        &self,
        key: &crate::crypto::SubjectKey,
        envelope: &super::Envelope,
    ) -> Vec<NewParticipant> {
        let mut out: Vec<NewParticipant> = Vec::new();
        for a in std::iter::once(&envelope.from)
            .chain(&envelope.to)
            .chain(&envelope.cc)
        {
            if !(a.contains('@') || a.starts_with('+')) {
                continue;
            }
            let a = a.to_lowercase();
            let index = self.keys.blind_index("participant", &a);
            if out.iter().any(|p| p.index == index) {
                continue;
            }
            let id = prefixed_id("tp");
            out.push(NewParticipant {
                sealed: key.seal_str(&participant_context(&id), &a),
                id,
                index,
            });
        }
        out
    }

    pub(super) fn subject_index(&self, subject: Option<&str>) -> String {
        // SMS have no subject: they share one thread per case.
        let key = subject.map_or_else(|| "\u{0}sms".to_string(), normalize_subject);
        self.keys.blind_index("thread-subject", &key)
    }

    /// The thread a new message of `case_id` joins, created if needed.
    pub(crate) async fn join_thread(
        &self,
        conn: &mut AnyConnection,
        key: &crate::crypto::SubjectKey,
        case_id: &CaseId,
        parent_thread: Option<ThreadId>,
        subject: Option<&str>,
        at: Micros,
    ) -> StoreResult<ThreadId> {
        if let Some(thread) = parent_thread {
            return Ok(thread);
        }
        let index = self.subject_index(subject);
        let find = "SELECT id FROM threads WHERE case_id = $1 AND subject_index = $2";
        if let Some(id) = sqlx::query_scalar(find)
            .bind(case_id)
            .bind(&index)
            .fetch_optional(&mut *conn)
            .await?
        {
            return Ok(id);
        }
        let id = prefixed_id("thread");
        sqlx::query(
            "INSERT INTO threads (id, case_id, subject_sealed, subject_index, status, created_at, participants_kept) \
             VALUES ($1, $2, $3, $4, 'active', $5, 1) \
             ON CONFLICT (case_id, subject_index) DO NOTHING",
        )
        .bind(&id)
        .bind(case_id)
        .bind(subject.map(|s| key.seal_str(&thread_context(&id), s)))
        .bind(&index)
        .bind(at)
        .execute(&mut *conn)
        .await?;
        // Another transaction may have opened the same thread first.
        Ok(sqlx::query_scalar(find)
            .bind(case_id)
            .bind(&index)
            .fetch_one(&mut *conn)
            .await?)
    }

    /// The threads of a case the actor may see, most recent first, with everyone who wrote
    /// or was written to in them.
    pub async fn list_threads(
        &self,
        actor: &Actor,
        case_id: &CaseId,
    ) -> StoreResult<Option<Vec<ThreadView>>> {
        let mut conn = self.pool.acquire().await?;
        if !StoreInner::case_visible(&mut conn, actor, case_id, "").await? {
            return Ok(None);
        }
        let rows = sqlx::query_as::<_, ThreadRow>(LIST_THREADS_SQL)
            .bind(case_id)
            .fetch_all(&mut *conn)
            .await?;
        let mut participants: BTreeMap<ThreadId, Vec<String>> = BTreeMap::new();
        // Kept with the thread as its messages came.
        let kept = sqlx::query_as::<_, KeptParticipant>(
            "SELECT p.id, p.thread_id, p.participant_sealed FROM thread_participants p \
             JOIN threads t ON t.id = p.thread_id WHERE t.case_id = $1 AND t.participants_kept = 1 \
             ORDER BY p.first_at, p.id",
        )
        .bind(case_id)
        .fetch_all(&mut *conn)
        .await?;
        // Threads from before participants were kept: from their messages' envelopes.
        let from_envelopes = if rows.iter().any(|r| r.participants_kept == 0) {
            sqlx::query_as::<_, ParticipantRow>(
                "SELECT m.thread_id, m.id, m.envelope_sealed FROM messages m JOIN threads t ON t.id = m.thread_id \
                 WHERE t.case_id = $1 AND t.participants_kept = 0 ORDER BY m.id",
            )
            .bind(case_id)
            .fetch_all(&mut *conn)
            .await?
        } else {
            Vec::new()
        };
        drop(conn);
        self.unlock(
            kept.iter()
                .map(|r| &r.participant_sealed[..])
                .chain(from_envelopes.iter().map(|r| &r.envelope_sealed[..]))
                .chain(rows.iter().filter_map(|r| r.subject_sealed.as_deref())),
        )
        .await?;
        for r in kept {
            let a = self.open_text(&participant_context(&r.id), &r.participant_sealed)?;
            let list = participants.entry(r.thread_id).or_default();
            if !list.contains(&a) {
                list.push(a);
            }
        }
        {
            for r in from_envelopes {
                let envelope = self.open_envelope(&r.id, &r.envelope_sealed)?;
                let list = participants.entry(r.thread_id).or_default();
                for a in std::iter::once(envelope.from)
                    .chain(envelope.to)
                    .chain(envelope.cc)
                {
                    let a = a.to_lowercase();
                    if !list.contains(&a) {
                        list.push(a);
                    }
                }
            }
        }
        rows.into_iter()
            .map(|r| {
                Ok(ThreadView {
                    subject: r
                        .subject_sealed
                        .map(|s| self.open_text(&thread_context(&r.id), &s))
                        .transpose()?,
                    participants: participants.remove(&r.id).unwrap_or_default(),
                    message_count: r.message_count,
                    last_message_at: r.last_message_at,
                    status: r.status,
                    id: r.id,
                })
            })
            .collect::<StoreResult<Vec<_>>>()
            .map(Some)
    }

    /// The messages of a thread the actor may see, oldest first.
    pub async fn thread_messages(
        &self,
        actor: &Actor,
        thread_id: &ThreadId,
    ) -> StoreResult<Option<Vec<ThreadMessage>>> {
        let mut conn = self.pool.acquire().await?;
        let found: Option<String> = sqlx::query_scalar(&format!(
            "SELECT t.id FROM threads t JOIN cases c ON c.id = t.case_id WHERE t.id = $1 AND {}",
            visible(2, 3)
        ))
        .bind(thread_id)
        .bind(actor.party_id.as_str())
        .bind(admin_flag(actor))
        .fetch_optional(&mut *conn)
        .await?;
        if found.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query_as::<_, ThreadMessageRow>(
            "SELECT id, direction, message_type, envelope_sealed, subject_sealed, body_sealed, \
             COALESCE(received_at, sent_at, created_at) AS at FROM messages WHERE thread_id = $1 ORDER BY at, id",
        )
        .bind(thread_id)
        .fetch_all(&mut *conn)
        .await?;
        drop(conn);
        self.unlock(rows.iter().map(|r| &r.envelope_sealed[..]))
            .await?;
        rows.into_iter()
            .map(|r| {
                let envelope = self.open_envelope(&r.id, &r.envelope_sealed)?;
                Ok(ThreadMessage {
                    direction: r.direction,
                    channel: r.message_type,
                    from: envelope.from,
                    subject: self.open_opt(&r.id, "subject", r.subject_sealed)?,
                    body: self
                        .open_opt(&r.id, "body", r.body_sealed)?
                        .unwrap_or_default(),
                    at: r.at,
                    id: r.id,
                })
            })
            .collect::<StoreResult<Vec<_>>>()
            .map(Some)
    }

    /// The participants of a message's envelope join its thread (what is there already is
    /// left), inside the caller's transaction.
    pub(crate) fn keep_participants<'q>(
        writes: &mut super::writes::Writes<'q>,
        rows: &[(&'q str, &'q NewParticipant, Micros)],
    ) {
        for chunk in rows.chunks(100) {
            let sql = format!(
                "INSERT INTO thread_participants (id, thread_id, participant_index, participant_sealed, first_at) \
                 VALUES {} ON CONFLICT (thread_id, participant_index) DO NOTHING",
                super::rows_sql(chunk.len(), &["", "", "", "", ""])
            );
            let mut values = writes.add(&sql);
            for (thread, p, at) in chunk {
                values
                    .bind(p.id.as_str())
                    .bind(*thread)
                    .bind(p.index.as_str())
                    .bind(p.sealed.as_slice())
                    .bind(*at);
            }
        }
    }

    /// The thread of the message whose `Message-ID` is `rfc_id`, with its case.
    pub(crate) async fn message_by_rfc_id_in(
        conn: &mut AnyConnection,
        rfc_id: &str,
    ) -> StoreResult<Option<(MessageId, CaseId, Option<ThreadId>, bool)>> {
        let row = sqlx::query_as::<_, RfcMessageRow>("SELECT id, case_id, thread_id, sender_verified FROM messages WHERE rfc_message_id = $1 AND case_id IS NOT NULL")
            .bind(rfc_id)
            .fetch_optional(&mut *conn)
            .await?;
        Ok(row.and_then(|r| Some((r.id, r.case_id?, r.thread_id, r.sender_verified != 0))))
    }
}
