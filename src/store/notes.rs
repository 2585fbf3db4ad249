//! Notes on a case: sealed text, visibility, category and tags.

use crate::domain::CaseId;
use crate::domain::audit::AuditAction;
use crate::domain::event::EventType;
use crate::domain::payload;

use super::cases::page_cursor;
use super::{Cases, Page, StoreInner, StoreResult, audit, decode_cursor, emit};
use crate::domain::party::Actor;
use crate::domain::time::Micros;
use crate::domain::{NoteId, NoteVisibility, Tag};

pub struct NewNote {
    pub note: String,
    pub visibility: NoteVisibility,
    pub category: Option<Tag>,
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone)]
pub struct Note {
    pub id: NoteId,
    pub case_id: CaseId,
    pub note: String,
    pub visibility: NoteVisibility,
    pub category: Option<String>,
    pub tags: Vec<String>,
    pub created_by: String,
    pub created_at: Micros,
}

pub struct NoteFilter {
    /// Private notes of every party too (a data subject's export), not only the actor's own.
    pub every_party: bool,
    pub category: Option<String>,
    pub tag: Option<String>,
    pub cursor: Option<String>,
    pub limit: i64,
}

/// A note as `list_notes` reads it, still sealed and without its tags.
#[derive(sqlx::FromRow)]
struct NoteRow {
    id: NoteId,
    created_by: String,
    visibility: String,
    category: Option<String>,
    note_sealed: Vec<u8>,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
struct NoteTagRow {
    note_id: NoteId,
    tag: String,
}

pub(super) fn note_context(note_id: &(impl std::fmt::Display + ?Sized)) -> String {
    format!("note:{note_id}")
}

impl Cases {
    pub async fn add_note(
        &self,
        actor: &Actor,
        case_id: &CaseId,
        new: NewNote,
    ) -> StoreResult<Option<Note>> {
        let mut tx = self.write_tx().await?;
        if !StoreInner::case_visible(&mut tx, actor, case_id, "").await? {
            return Ok(None);
        }
        let key = self.live_case_key(case_id).await?;
        let id = NoteId::new();
        let now = self.now();
        sqlx::query(
            "INSERT INTO notes (id, case_id, author_party_id, created_by, visibility, category, note_sealed, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(case_id)
        .bind(actor.party_id.as_str())
        .bind(&actor.name)
        .bind(new.visibility.as_str())
        .bind(new.category.as_ref().map(Tag::as_str))
        .bind(key.seal_str(&note_context(&id), &new.note))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let mut tags: Vec<String> = new.tags.into_iter().map(Tag::into_string).collect();
        tags.sort();
        tags.dedup();
        for tag in &tags {
            sqlx::query("INSERT INTO note_tags (note_id, tag) VALUES ($1, $2)")
                .bind(&id)
                .bind(tag)
                .execute(&mut *tx)
                .await?;
        }
        audit(
            &mut tx,
            Some(case_id),
            actor,
            AuditAction::NoteCreated,
            "note",
            &id,
            self.now(),
        )
        .await?;
        if new.visibility == NoteVisibility::Internal {
            let payload = payload::NoteCreated {
                note_id: &id,
                case_id,
                category: new.category.as_ref().map(Tag::as_str),
                created_by: &actor.name,
            };
            emit(
                &mut tx,
                EventType::NoteCreated,
                Some(case_id),
                &payload,
                self.now(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Some(Note {
            id,
            case_id: *case_id,
            note: new.note,
            visibility: new.visibility,
            category: new.category.map(Tag::into_string),
            tags,
            created_by: actor.name.clone(),
            created_at: now,
        }))
    }

    /// Notes of a case the actor may read: all internal ones and its own private ones,
    /// newest first.
    pub async fn list_notes(
        &self,
        actor: &Actor,
        case_id: &CaseId,
        filter: NoteFilter,
    ) -> StoreResult<Option<Page<Note>>> {
        let mut conn = self.pool.acquire().await?;
        if !StoreInner::case_visible(&mut conn, actor, case_id, "").await? {
            return Ok(None);
        }
        let cursor = filter.cursor.as_deref().map(decode_cursor).transpose()?;
        let rows = sqlx::query_as::<_, NoteRow>(
            "SELECT n.id, n.created_by, n.visibility, n.category, n.note_sealed, n.created_at FROM notes n \
             WHERE n.case_id = $1 AND (n.visibility = 'internal' OR n.author_party_id = $2 OR $7 = 1) \
             AND ($3 IS NULL OR n.category = $3) \
             AND ($4 IS NULL OR EXISTS (SELECT 1 FROM note_tags t WHERE t.note_id = n.id AND t.tag = $4)) \
             AND ($5 IS NULL OR n.id < $5) ORDER BY n.id DESC LIMIT $6",
        )
        .bind(case_id)
        .bind(actor.party_id.as_str())
        .bind(filter.category.as_deref())
        .bind(filter.tag.as_deref())
        .bind(cursor.as_deref())
        .bind(filter.limit + 1)
        .bind(i64::from(filter.every_party))
        .fetch_all(&mut *conn)
        .await?;
        self.unlock(rows.iter().map(|r| &r.note_sealed[..])).await?;
        let mut notes = Vec::with_capacity(rows.len());
        for r in rows {
            notes.push(Note {
                note: self.open_text(&note_context(&r.id), &r.note_sealed)?,
                case_id: *case_id,
                created_by: r.created_by,
                visibility: NoteVisibility::parse(&r.visibility).map_err(anyhow::Error::from)?,
                category: r.category,
                tags: Vec::new(),
                created_at: r.created_at,
                id: r.id,
            });
        }
        let next_cursor = page_cursor(&mut notes, filter.limit, |n| n.id.to_string());
        if !notes.is_empty() {
            let placeholders: Vec<String> = (1..=notes.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT note_id, tag FROM note_tags WHERE note_id IN ({}) ORDER BY tag",
                placeholders.join(", ")
            );
            let mut query = sqlx::query_as::<_, NoteTagRow>(&sql);
            for n in &notes {
                query = query.bind(&n.id);
            }
            for r in query.fetch_all(&mut *conn).await? {
                if let Some(n) = notes.iter_mut().find(|n| n.id == r.note_id) {
                    n.tags.push(r.tag);
                }
            }
        }
        Ok(Some(Page {
            items: notes,
            next_cursor,
        }))
    }
}
