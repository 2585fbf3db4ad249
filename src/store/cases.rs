//! Cases, their payments and deadlines.

use crate::domain::audit::AuditAction;
use crate::domain::code::Code;
use crate::domain::event::EventType;
use crate::domain::message::Channel;
use crate::domain::payload;
use chrono::{Datelike, NaiveDate, Utc};
use sqlx::AnyConnection;

use super::{
    Cases, Page, Parties, Sibling, StoreError, StoreInner, StoreResult, admin_flag, audit,
    decode_cursor, emit, encode_cursor,
};
use crate::domain::party::Actor;
use crate::domain::time::Micros;
use crate::domain::{CaseId, CaseNumber, CaseStatus, Debtor, MessageId, Money, PartyKind};

pub struct NewCase {
    pub case_number: Option<CaseNumber>,
    pub creditor_id: String,
    pub partner_id: Option<String>,
    pub debtor: Debtor,
    pub amount: Money,
    pub invoice_number: Option<String>,
    pub due_date: Option<NaiveDate>,
}

#[derive(Debug, Clone)]
pub struct CaseView {
    pub id: CaseId,
    pub case_number: String,
    pub status: CaseStatus,
    pub creditor_id: String,
    pub partner_id: Option<String>,
    pub debtor: Debtor,
    pub amount: Money,
    pub paid_minor: i64,
    pub invoice_number: Option<String>,
    pub due_date: Option<String>,
    pub created_at: Micros,
    pub updated_at: Micros,
    /// Its debtor asked for erasure while a retention rule holds: nothing more is sent.
    pub restricted_at: Option<Micros>,
    /// Its debtor's personal data was erased.
    pub erased_at: Option<Micros>,
    /// A reply that holds its collection messages until a person reviews it.
    pub hold: Option<CaseHold>,
}

/// Why a case's collection messages are held: the reply awaiting review, what it was read
/// as, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseHold {
    pub message_id: MessageId,
    pub intent: String,
    pub since: Micros,
}

/// A change to a case; `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Default)]
pub struct CasePatch {
    pub status: Option<CaseStatus>,
    pub partner_id: Option<Option<String>>,
    pub debtor_name: Option<String>,
    pub debtor_email: Option<Option<String>>,
    pub debtor_phone: Option<Option<String>>,
    pub debtor_language: Option<Option<String>>,
    pub debtor_timezone: Option<Option<String>>,
}

impl CasePatch {
    /// Makes the patch's changes of the debtor; whether anything changed.
    fn debtor_changes(&mut self, d: &mut Debtor) -> bool {
        let before = d.clone();
        if let Some(name) = self.debtor_name.take() {
            d.name = name;
        }
        if let Some(v) = self.debtor_email.take() {
            d.email = v;
        }
        if let Some(v) = self.debtor_phone.take() {
            d.phone = v;
        }
        if let Some(v) = self.debtor_language.take() {
            d.language = v;
        }
        if let Some(v) = self.debtor_timezone.take() {
            d.timezone = v;
        }
        *d != before
    }
}

pub struct ListCases {
    pub status: Option<CaseStatus>,
    /// A search: the start of a case number, or a debtor's whole email address or phone
    /// number (found through the blind indexes).
    pub search: Option<String>,
    pub cursor: Option<String>,
    pub limit: i64,
}

/// The case columns every read selects, with the sum of its payments (a macro, so that the
/// read of a send can add to it at compile time).
macro_rules! case_columns {
    () => {
        "c.id, c.case_number, c.status, c.creditor_id, c.partner_id, c.debtor_sealed, \
         c.amount_minor, c.currency, c.invoice_number, c.due_date, c.created_at, c.updated_at, c.restricted_at, c.erased_at, \
         c.hold_message_id, c.hold_intent, c.hold_since, \
         CAST(COALESCE((SELECT SUM(p.amount_minor) FROM payments p WHERE p.case_id = c.id), 0) AS BIGINT) AS paid_minor"
    };
}
const CASE_SELECT: &str = concat!("SELECT ", case_columns!(), " FROM cases c");

/// The count of the frequency cap for a send's read of `c` (outbound messages of `channel`
/// since `since` to the case or to another case of its debtor held by the same creditor: one
/// creditor's sends never spend another's), or `-1` when not asked.
fn recent_sql(channel: Channel, count_recent: bool, since: &str) -> String {
    if !count_recent {
        return "-1".to_string();
    }
    let debtor_index = match channel {
        Channel::Email => "debtor_email_index",
        Channel::Sms => "debtor_phone_index",
    };
    format!(
        "(SELECT COUNT(*) FROM messages m WHERE m.message_type = '{}' \
         AND m.direction = 'outbound' AND m.created_at >= {since} AND m.status <> 'failed' AND m.case_id IN ( \
           SELECT c2.id FROM cases c2 WHERE c2.id = c.id \
             OR (c.{debtor_index} IS NOT NULL AND c2.{debtor_index} = c.{debtor_index} \
                 AND c2.creditor_id = c.creditor_id)))",
        channel.as_str()
    )
}

/// One send's read ([`Store::case_for_sending`]), made with those of other sends in one
/// statement ([`read_sending_batch`]).
#[derive(Debug)]
pub(crate) struct SendingRead {
    case_id: CaseId,
    party_id: String,
    admin: i64,
    token_id: String,
    now: Micros,
    channel: Channel,
    recent_since: Option<Micros>,
    /// The suppression indexes of the recipients the request names.
    recipients: Vec<String>,
}

/// The reads of several sends of one channel in one statement: the sends as a `VALUES` table
/// `r` joined to their cases, their named recipients as another (`x`). Per send, numbered by
/// its place: the case, its preferences row, the token's validity, and (when asked) the
/// messages counted against the frequency cap and the suppressed recipients among those
/// named. Both tables are padded to a power of two with rows that match nothing, so the
/// statement has few shapes and PostgreSQL keeps a plan for each.
///
/// The channel is written into the text and a part not asked for is left out, rather than
/// switched off by a parameter: each shape then has one plan that serves every execution,
/// which PostgreSQL keeps instead of planning the statement again each time (it did, at
/// some 0.2 ms a send, while a parameter could still prune the frequency count).
fn batched_sending_sql(channel: Channel, count_recent: bool, sends: usize, named: usize) -> String {
    const SENDS: [&str; 7] = [
        "BIGINT", "TEXT", "TEXT", "BIGINT", "TEXT", "BIGINT", "BIGINT",
    ];
    let sends_table = super::cast_rows(sends, &SENDS, 1);
    let named_table = super::cast_rows(named, &["BIGINT", "TEXT"], 1 + sends * SENDS.len());
    let recent = recent_sql(channel, count_recent, "r.since");
    let applies = super::policy::applies_to("c.creditor_id");
    let channel = channel.as_str();
    format!(
        "WITH r (n, case_id, party_id, admin, token_id, at, since) AS (VALUES {sends_table}), \
         x (n, value_index) AS (VALUES {named_table}) \
         SELECT r.n AS n, {}, {}, {recent} AS recent, \
         (SELECT COUNT(*) FROM suppressions s JOIN x ON x.value_index = s.value_index \
           WHERE x.n = r.n AND s.channel = '{channel}' AND {applies}) AS suppressed, \
         (SELECT COUNT(*) FROM tokens t WHERE t.id = r.token_id AND t.revoked_at IS NULL \
           AND (t.expires_at IS NULL OR t.expires_at > r.at)) AS token_live \
         FROM r JOIN cases c ON c.id = r.case_id \
           AND (c.creditor_id = r.party_id OR c.partner_id = r.party_id OR r.admin = 1) \
         LEFT JOIN preferences pr ON pr.case_id = c.id",
        case_columns!(),
        super::preferences::PREFERENCE_COLUMNS,
    )
}

/// The batch reader of sends' reads (a [`super::pipeline::Batcher`]): one statement for the
/// sends of each channel in the batch. A statement costs PostgreSQL a wake-up, its protocol
/// and the start of an executor, several times what reading one case takes, and SQLite a
/// hand-over to its connection's thread and back; concurrent sends share that.
pub(crate) fn read_sending_batch<'c>(
    conn: &'c mut AnyConnection,
    backend: super::Backend,
    items: &'c [SendingRead],
) -> futures_util::future::BoxFuture<'c, StoreResult<Vec<Option<SendingRow>>>> {
    Box::pin(async move {
        let mut rows: Vec<Option<SendingRow>> = items.iter().map(|_| None).collect();
        for channel in [Channel::Email, Channel::Sms] {
            let of_channel: Vec<(usize, &SendingRead)> = items
                .iter()
                .enumerate()
                .filter(|(_, item)| item.channel == channel)
                .collect();
            // Named recipients of one statement at most (a send names up to 101), so that
            // padded they stay far below PostgreSQL's 65,535 values.
            let mut groups: Vec<&[(usize, &SendingRead)]> = Vec::new();
            let (mut start, mut named) = (0, 0);
            for (at, (_, send)) in of_channel.iter().enumerate() {
                if at > start && named + send.recipients.len() > 4096 {
                    groups.push(&of_channel[start..at]);
                    (start, named) = (at, 0);
                }
                named += send.recipients.len();
            }
            if start < of_channel.len() {
                groups.push(&of_channel[start..]);
            }
            for sends in groups {
                let count_recent = sends.iter().any(|(_, s)| s.recent_since.is_some());
                let named: usize = sends.iter().map(|(_, s)| s.recipients.len()).sum();
                let (width, named_width) = (
                    sends.len().next_power_of_two(),
                    named.max(1).next_power_of_two(),
                );
                let sql = super::positional(
                    batched_sending_sql(channel, count_recent, width, named_width),
                    backend,
                );
                let mut q = sqlx::query_as::<_, NumberedSendingRow>(&sql);
                for (i, send) in sends {
                    q = q
                        .bind(i64::try_from(*i).unwrap_or(i64::MAX))
                        .bind(send.case_id)
                        .bind(send.party_id.as_str())
                        .bind(send.admin)
                        .bind(send.token_id.as_str())
                        .bind(send.now)
                        .bind(send.recent_since);
                }
                for _ in sends.len()..width {
                    q = q
                        .bind(None::<i64>)
                        .bind(None::<String>)
                        .bind(None::<String>)
                        .bind(None::<i64>)
                        .bind(None::<String>)
                        .bind(None::<i64>)
                        .bind(None::<i64>);
                }
                for (i, send) in sends {
                    for r in &send.recipients {
                        q = q
                            .bind(i64::try_from(*i).unwrap_or(i64::MAX))
                            .bind(r.as_str());
                    }
                }
                for _ in named..named_width {
                    q = q.bind(None::<i64>).bind(None::<String>);
                }
                for row in q.fetch_all(&mut *conn).await? {
                    let Some(i) = usize::try_from(row.n).ok().filter(|i| *i < items.len()) else {
                        continue;
                    };
                    let mut found = row.row;
                    // What the send did not ask, as its own read answers it.
                    if items[i].recipients.is_empty() {
                        found.suppressed = -1;
                    }
                    if items[i].recent_since.is_none() {
                        found.recent = -1;
                    }
                    rows[i] = Some(found);
                }
            }
        }
        Ok(rows)
    })
}

/// A row of [`read_sending_batch`]: the send's place in the batch, and its row.
#[derive(sqlx::FromRow)]
struct NumberedSendingRow {
    n: i64,
    #[sqlx(flatten)]
    row: SendingRow,
}

/// A send's read: its case, its preferences row and what its policy counts.
#[derive(sqlx::FromRow)]
pub(crate) struct SendingRow {
    #[sqlx(flatten)]
    case: CaseRow,
    #[sqlx(flatten)]
    preferences: super::preferences::JoinedPreferences,
    recent: i64,
    suppressed: i64,
    token_live: i64,
}

/// What a send needs to know about its case, read at once.
#[derive(Debug)]
pub struct SendingFacts {
    pub case: CaseView,
    pub preferences: crate::domain::policy::Preferences,
    /// Outbound messages to the debtor within the frequency cap's window, when asked.
    pub recent: Option<u32>,
    /// Whether one of the recipients asked about is suppressed, when some were named.
    pub suppressed: Option<bool>,
}

/// A case as `CASE_SELECT` reads it, the debtor still sealed.
#[derive(sqlx::FromRow)]
struct CaseRow {
    id: CaseId,
    case_number: String,
    status: String,
    creditor_id: String,
    partner_id: Option<String>,
    debtor_sealed: Vec<u8>,
    amount_minor: i64,
    currency: String,
    invoice_number: Option<String>,
    due_date: Option<String>,
    created_at: i64,
    updated_at: i64,
    restricted_at: Option<i64>,
    erased_at: Option<i64>,
    hold_message_id: Option<MessageId>,
    hold_intent: Option<String>,
    hold_since: Option<i64>,
    paid_minor: i64,
}

/// The visibility rule over `cases c`, with `$party` the acting party and `$admin` its admin
/// flag: a creditor sees the cases it owns, a partner those assigned to it, an admin all.
pub(crate) fn visible(party: usize, admin: usize) -> String {
    format!("(c.creditor_id = ${party} OR c.partner_id = ${party} OR ${admin} = 1)")
}

/// The cases a party sees, as a condition on `c` with the party in `$1`: spelled per kind of
/// party, so that a creditor's or partner's list walks their own index (`cases_creditor`,
/// `cases_partner`) and an admin's the whole table, never both behind an `OR`.
fn visible_to(actor: &Actor) -> &'static str {
    if actor.kind == crate::domain::PartyKind::Admin {
        "$1 = $1"
    } else {
        "(c.creditor_id = $1 OR c.partner_id = $1)"
    }
}

/// A page of the cases `actor` sees, newest first: `$2` status, `$3` cursor, `$4` size + 1.
pub(crate) fn list_cases_sql(actor: &Actor) -> String {
    format!(
        "{CASE_SELECT} WHERE {} AND ($2 IS NULL OR c.status = $2) AND ($3 IS NULL OR c.id < $3) \
         ORDER BY c.id DESC LIMIT $4",
        visible_to(actor)
    )
}

/// The cases `actor` sees whose number starts with `$2`, or whose debtor's email or phone
/// index is `$3` or `$4`, with the list's status filter and cursor.
fn search_cases_sql(actor: &Actor, select: &str, page: bool) -> String {
    format!(
        "{select} WHERE {} AND (LOWER(c.case_number) LIKE $2 ESCAPE '\\' \
         OR c.debtor_email_index = $3 OR c.debtor_phone_index = $4) AND ($5 IS NULL OR c.status = $5){}",
        visible_to(actor),
        if page {
            " AND ($6 IS NULL OR c.id < $6) ORDER BY c.id DESC LIMIT $7"
        } else {
            ""
        }
    )
}

/// How many cases `actor` sees with the list's filter.
pub(crate) fn count_cases_sql(actor: &Actor) -> String {
    format!(
        "SELECT COUNT(*) FROM cases c WHERE {} AND ($2 IS NULL OR c.status = $2)",
        visible_to(actor)
    )
}

pub(super) fn debtor_context(case_id: &(impl std::fmt::Display + ?Sized)) -> String {
    format!("case:{case_id}:debtor")
}

/// A case's change of status, audited and announced (`case.status_changed`).
async fn status_changed(
    tx: &mut sqlx::AnyConnection,
    actor: &Actor,
    case: &CaseView,
    previous: CaseStatus,
    now: Micros,
) -> StoreResult<()> {
    let case_id = &case.id;
    audit(
        &mut *tx,
        Some(case_id),
        actor,
        AuditAction::CaseStatusChanged,
        "case",
        &case_id.to_string(),
        now,
    )
    .await?;
    let payload = payload::CaseStatusChanged {
        case_id,
        case_number: &case.case_number,
        previous_status: previous.as_str(),
        status: case.status.as_str(),
    };
    emit(
        &mut *tx,
        EventType::CaseStatusChanged,
        Some(case_id),
        &payload,
        now,
    )
    .await?;
    super::crm::enqueue_record(&mut *tx, case_id, now).await?;
    Ok(())
}

impl Cases {
    /// A case from its row (its subject key looked up first by `unlock`); the debtor of an
    /// erased case is `[erased]`, without contact details.
    fn case_from_row(&self, row: CaseRow) -> StoreResult<CaseView> {
        let debtor: Debtor = match self.open_kept(&debtor_context(&row.id), &row.debtor_sealed)? {
            Some(json) => serde_json::from_slice(&json).map_err(anyhow::Error::from)?,
            None => Debtor {
                name: super::subject_keys::ERASED.to_string(),
                email: None,
                phone: None,
                language: None,
                timezone: None,
            },
        };
        Ok(CaseView {
            case_number: row.case_number,
            status: CaseStatus::parse(&row.status).map_err(anyhow::Error::from)?,
            creditor_id: row.creditor_id,
            partner_id: row.partner_id,
            debtor,
            amount: Money {
                minor: row.amount_minor,
                currency: crate::domain::case::parse_currency(&row.currency)
                    .map_err(|e| anyhow::anyhow!(e))?,
            },
            paid_minor: row.paid_minor,
            invoice_number: row.invoice_number,
            due_date: row.due_date,
            created_at: row.created_at,
            updated_at: row.updated_at,
            restricted_at: row.restricted_at,
            erased_at: row.erased_at,
            hold: match (row.hold_message_id, row.hold_intent, row.hold_since) {
                (Some(message_id), Some(intent), Some(since)) => Some(CaseHold {
                    message_id,
                    intent,
                    since,
                }),
                _ => None,
            },
            id: row.id,
        })
    }

    /// The debtor sealed under the case's subject key, and the blind indexes of its contact
    /// details.
    fn seal_debtor(
        &self,
        key: &crate::crypto::SubjectKey,
        case_id: &CaseId,
        debtor: &Debtor,
    ) -> (Vec<u8>, Option<String>, Option<String>) {
        let json = serde_json::to_vec(debtor).expect("a debtor serialises");
        (
            key.seal(&debtor_context(case_id), &json),
            debtor
                .email
                .as_deref()
                .map(|e| self.keys.blind_index("email", &e.to_lowercase())),
            debtor
                .phone
                .as_deref()
                .map(|p| self.keys.blind_index("phone", p)),
        )
    }

    async fn require_party_kind(
        conn: &mut AnyConnection,
        id: &str,
        kind: PartyKind,
        field: &str,
    ) -> StoreResult<()> {
        let found: Option<String> = sqlx::query_scalar("SELECT kind FROM parties WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        if found.as_deref() == Some(kind.as_str()) {
            Ok(())
        } else {
            Err(StoreError::invalid(
                Code::InvalidParty,
                format!("{field} {id:?} is not a {kind} party"),
            ))
        }
    }

    pub async fn create_case(&self, actor: &Actor, new: NewCase) -> StoreResult<CaseView> {
        let id = CaseId::new();
        let key = self.case_key(&id).await?;
        let mut tx = self.write_tx().await?;
        Self::require_party_kind(&mut tx, &new.creditor_id, PartyKind::Creditor, "creditorId")
            .await?;
        if let Some(partner) = &new.partner_id {
            Self::require_party_kind(&mut tx, partner, PartyKind::Partner, "partnerId").await?;
        }
        let given = new.case_number.is_some();
        let mut case_number = match new.case_number {
            Some(n) => n,
            None => next_free_case_number(&mut tx).await?,
        };
        let (sealed, email_index, phone_index) = self.seal_debtor(&key, &id, &new.debtor);
        let now = self.now();
        // A generated number can meet one a creditor chose by hand; draw the next one.
        for attempt in 0.. {
            let inserted = sqlx::query(
                "INSERT INTO cases (id, case_number, creditor_id, partner_id, status, debtor_sealed, debtor_email_index, \
                 debtor_phone_index, debtor_language, debtor_timezone, amount_minor, currency, invoice_number, due_date, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, 'open', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14) \
                 ON CONFLICT (creditor_id, case_number) DO NOTHING",
            )
            .bind(id)
            .bind(case_number.as_str())
            .bind(&new.creditor_id)
            .bind(new.partner_id.as_deref())
            .bind(&sealed)
            .bind(email_index.as_deref())
            .bind(phone_index.as_deref())
            .bind(new.debtor.language.as_deref())
            .bind(new.debtor.timezone.as_deref())
            .bind(new.amount.minor)
            .bind(new.amount.currency())
            .bind(new.invoice_number.as_deref())
            .bind(new.due_date.map(|d| d.to_string()))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 1 {
                break;
            }
            if given || attempt >= 100 {
                return Err(StoreError::Conflict(Code::CaseNumberTaken));
            }
            case_number = next_free_case_number(&mut tx).await?;
        }
        audit(
            &mut tx,
            Some(&id),
            actor,
            AuditAction::CaseCreated,
            "case",
            &id.to_string(),
            self.now(),
        )
        .await?;
        emit(
            &mut tx,
            EventType::CaseCreated,
            Some(&id),
            &payload::CaseCreated {
                case_id: &id,
                case_number: case_number.as_str(),
            },
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(CaseView {
            id,
            case_number: case_number.as_str().to_string(),
            status: CaseStatus::Open,
            creditor_id: new.creditor_id,
            partner_id: new.partner_id,
            debtor: new.debtor,
            amount: new.amount,
            paid_minor: 0,
            invoice_number: new.invoice_number,
            due_date: new.due_date.map(|d| d.to_string()),
            created_at: now,
            updated_at: now,
            restricted_at: None,
            erased_at: None,
            hold: None,
        })
    }

    /// A case the actor may see with what its send policy needs, in one statement: the
    /// preferences, the messages of the frequency cap's window (from `recent_since`), and
    /// whether one of `recipients` (the request's own, when it names them) is suppressed.
    /// The actor's token is checked in the same statement: revoked or expired since it was
    /// verified, the answer is [`StoreError::TokenGone`].
    pub async fn case_for_sending(
        &self,
        actor: &Actor,
        case_id: &CaseId,
        channel: Channel,
        recipients: &[&str],
        recent_since: Option<Micros>,
    ) -> StoreResult<Option<SendingFacts>> {
        let indexes = recipients
            .iter()
            .map(|r| self.suppression_index(channel.as_str(), r));
        let found = self
            .sending_reads
            .submit(SendingRead {
                case_id: *case_id,
                party_id: actor.party_id.as_str().to_string(),
                admin: admin_flag(actor),
                token_id: actor.token_id.clone(),
                now: self.now(),
                channel,
                recent_since,
                recipients: indexes.collect(),
            })
            .await?;
        let Some(row) = found else {
            // No case to show: unless the token is what is wrong.
            return if self
                .sibling::<Parties>()
                .token_valid(&actor.token_id)
                .await?
            {
                Ok(None)
            } else {
                Err(StoreError::TokenGone)
            };
        };
        if row.token_live == 0 {
            self.known_tokens
                .forget(|_, known| known.token_id == actor.token_id);
            return Err(StoreError::TokenGone);
        }
        let preferences = self
            .stored_preferences(case_id, row.preferences.into_row())
            .await?
            .preferences;
        self.unlock([&row.case.debtor_sealed[..]]).await?;
        Ok(Some(SendingFacts {
            case: self.case_from_row(row.case)?,
            preferences,
            recent: (row.recent >= 0).then(|| u32::try_from(row.recent).unwrap_or(u32::MAX)),
            suppressed: (row.suppressed >= 0).then_some(row.suppressed > 0),
        }))
    }

    pub async fn get_case(&self, actor: &Actor, case_id: &CaseId) -> StoreResult<Option<CaseView>> {
        let row = sqlx::query_as::<_, CaseRow>(&format!(
            "{CASE_SELECT} WHERE c.id = $1 AND {}",
            visible(2, 3)
        ))
        .bind(case_id)
        .bind(actor.party_id.as_str())
        .bind(admin_flag(actor))
        .fetch_optional(&self.pool)
        .await?;
        if let Some(r) = &row {
            self.unlock([&r.debtor_sealed[..]]).await?;
        }
        row.map(|r| self.case_from_row(r)).transpose()
    }

    pub async fn list_cases(
        &self,
        actor: &Actor,
        q: ListCases,
    ) -> StoreResult<(Page<CaseView>, i64)> {
        let cursor = q.cursor.as_deref().map(decode_cursor).transpose()?;
        let status = q.status.map(CaseStatus::as_str);
        let (rows, total) = match q.search.as_deref() {
            Some(search) => {
                let pattern = format!(
                    "{}%",
                    search
                        .to_lowercase()
                        .replace('\\', "\\\\")
                        .replace('%', "\\%")
                        .replace('_', "\\_")
                );
                let email = self.keys.blind_index("email", &search.to_lowercase());
                let phone = crate::domain::PhoneNumber::parse(search).map_or_else(
                    |_| self.keys.blind_index("phone", search),
                    |p| self.keys.blind_index("phone", p.as_str()),
                );
                let rows =
                    sqlx::query_as::<_, CaseRow>(&search_cases_sql(actor, CASE_SELECT, true))
                        .bind(actor.party_id.as_str())
                        .bind(&pattern)
                        .bind(&email)
                        .bind(&phone)
                        .bind(status)
                        .bind(cursor.as_deref())
                        .bind(q.limit + 1)
                        .fetch_all(&self.pool)
                        .await?;
                let total: i64 = sqlx::query_scalar(&search_cases_sql(
                    actor,
                    "SELECT COUNT(*) FROM cases c",
                    false,
                ))
                .bind(actor.party_id.as_str())
                .bind(&pattern)
                .bind(&email)
                .bind(&phone)
                .bind(status)
                .fetch_one(&self.pool)
                .await?;
                (rows, total)
            }
            None => {
                let rows = sqlx::query_as::<_, CaseRow>(&list_cases_sql(actor))
                    .bind(actor.party_id.as_str())
                    .bind(status)
                    .bind(cursor.as_deref())
                    .bind(q.limit + 1)
                    .fetch_all(&self.pool)
                    .await?;
                let total: i64 = sqlx::query_scalar(&count_cases_sql(actor))
                    .bind(actor.party_id.as_str())
                    .bind(status)
                    .fetch_one(&self.pool)
                    .await?;
                (rows, total)
            }
        };
        self.unlock(rows.iter().map(|r| &r.debtor_sealed[..]))
            .await?;
        let mut items = rows
            .into_iter()
            .map(|r| self.case_from_row(r))
            .collect::<StoreResult<Vec<_>>>()?;
        let next_cursor = page_cursor(&mut items, q.limit, |c| c.id.to_string());
        Ok((Page { items, next_cursor }, total))
    }

    pub async fn update_case(
        &self,
        actor: &Actor,
        case_id: &CaseId,
        mut patch: CasePatch,
    ) -> StoreResult<Option<CaseView>> {
        let mut tx = self.write_tx().await?;
        if !StoreInner::case_visible(&mut tx, actor, case_id, self.backend.for_update()).await? {
            return Ok(None);
        }
        let row = sqlx::query_as::<_, CaseRow>(&format!("{CASE_SELECT} WHERE c.id = $1"))
            .bind(case_id)
            .fetch_one(&mut *tx)
            .await?;
        // An erased case's debtor cannot be sealed again: the key is gone.
        if row.erased_at.is_some() {
            return Err(StoreError::invalid(
                Code::Restricted,
                "this case's personal data was erased; it cannot be changed",
            ));
        }
        let key = self.case_key(case_id).await?;
        self.unlock([&row.debtor_sealed[..]]).await?;
        let mut case = self.case_from_row(row)?;
        let now = self.now();

        if patch.status == Some(CaseStatus::Disputed) {
            // A person disputes the case: the replies that held it are confirmed.
            super::inbox::confirm_holds(&mut tx, actor, case_id, now).await?;
            case.hold = None;
        }
        if let Some(status) = patch.status.take().filter(|s| *s != case.status) {
            let previous = std::mem::replace(&mut case.status, status);
            status_changed(&mut tx, actor, &case, previous, now).await?;
        }
        if let Some(partner) = patch.partner_id.take().filter(|p| *p != case.partner_id) {
            if let Some(p) = &partner {
                Self::require_party_kind(&mut tx, p, PartyKind::Partner, "partnerId").await?;
            }
            case.partner_id = partner;
            audit(
                &mut tx,
                Some(case_id),
                actor,
                AuditAction::CasePartnerChanged,
                "case",
                &case_id.to_string(),
                now,
            )
            .await?;
        }
        if patch.debtor_changes(&mut case.debtor) {
            audit(
                &mut tx,
                Some(case_id),
                actor,
                AuditAction::CaseDebtorUpdated,
                "case",
                &case_id.to_string(),
                now,
            )
            .await?;
        }
        let (sealed, email_index, phone_index) = self.seal_debtor(&key, case_id, &case.debtor);
        case.updated_at = now;
        sqlx::query(
            "UPDATE cases SET status = $2, partner_id = $3, debtor_sealed = $4, debtor_email_index = $5, \
             debtor_phone_index = $6, debtor_language = $7, debtor_timezone = $8, updated_at = $9, \
             ended_at = CASE WHEN $2 IN ('paid', 'closed') THEN COALESCE(ended_at, $9) ELSE NULL END WHERE id = $1",
        )
        .bind(case_id)
        .bind(case.status.as_str())
        .bind(case.partner_id.as_deref())
        .bind(&sealed)
        .bind(email_index.as_deref())
        .bind(phone_index.as_deref())
        .bind(case.debtor.language.as_deref())
        .bind(case.debtor.timezone.as_deref())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(case))
    }
}

/// The next generated number that no creditor uses yet. Numbers are unique per creditor, but
/// a generated one is kept unique across all of them, so that a reply naming it in its
/// subject still names one case.
async fn next_free_case_number(conn: &mut AnyConnection) -> StoreResult<CaseNumber> {
    loop {
        let number = next_case_number(conn).await?;
        let used: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM cases WHERE case_number = $1 LIMIT 1")
                .bind(number.as_str())
                .fetch_optional(&mut *conn)
                .await?;
        if used.is_none() {
            return Ok(number);
        }
    }
}

async fn next_case_number(conn: &mut AnyConnection) -> StoreResult<CaseNumber> {
    let year = Utc::now().year();
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO case_number_counters (year, last_value) VALUES ($1, 1) \
         ON CONFLICT (year) DO UPDATE SET last_value = case_number_counters.last_value + 1 RETURNING last_value",
    )
    .bind(year)
    .fetch_one(conn)
    .await?;
    Ok(CaseNumber::generated(year, seq))
}

/// Trims a page fetched with one row extra and returns the cursor of the next page.
pub(crate) fn page_cursor<T>(
    items: &mut Vec<T>,
    limit: i64,
    id: impl Fn(&T) -> String,
) -> Option<String> {
    let limit = usize::try_from(limit).unwrap_or(0);
    if items.len() > limit {
        items.truncate(limit);
        items.last().map(|last| encode_cursor(&id(last)))
    } else {
        None
    }
}

impl StoreInner {
    /// True when the case exists and the actor may see it; the guard of every case-scoped verb.
    pub(crate) async fn case_visible(
        conn: &mut AnyConnection,
        actor: &Actor,
        case_id: &CaseId,
        lock: &str,
    ) -> StoreResult<bool> {
        let found: Option<String> = sqlx::query_scalar(&format!(
            "SELECT c.id FROM cases c WHERE c.id = $1 AND {}{lock}",
            visible(2, 3)
        ))
        .bind(case_id)
        .bind(actor.party_id.as_str())
        .bind(admin_flag(actor))
        .fetch_optional(conn)
        .await?;
        Ok(found.is_some())
    }
}
