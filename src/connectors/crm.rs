//! CRMs: every email and SMS of a case a CRM connector serves, in and out, logged once as an
//! activity on the CRM's record whose case-number field holds the case number (else on the
//! contact with the debtor's email; neither: `unlinked`, shown to the admin, no record
//! invented), and the record kept up to date when the case's status changes or a payment
//! comes. One module per CRM (`salesforce`, `dynamics`, `hubspot`) behind [`Crm`].
//!
//! Driven by the queue: `store::crm` queues an activity in the transaction that records a
//! message sent or received, and [`CrmJob`] works the queue with the engine's leases. The
//! activities a claim holds are worked together, per connector: each case's record found
//! once, the messages logged in the CRM's batches. Once per message whatever fails: each
//! CRM gets an idempotency key per message (Salesforce an external id upserted, Dataverse
//! the activity's own id, HubSpot a property searched for before a retry creates again).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::clock::SharedClock;
use crate::domain::message::{Direction, MessageType};
use crate::domain::party::Actor;
use crate::domain::time::Micros;
use crate::domain::{CaseId, ConnectorId, MessageId};
use crate::store::queue::{CRM_ACTIVITIES, Claim, QueueTable, Transition};
use crate::store::{ActivityKind, Connector, CrmOutcome as Outcome, DueActivity, Store, SyncEnd};
use crate::worker::{Backoff, Job, Preloaded};

use super::web::Failure;
use super::{dynamics, hubspot, salesforce};

/// The most of a message's text an activity carries (Salesforce's `TextBody` holds 32,000).
pub const MAX_BODY: usize = 32_000;
/// Activities of a claim (and so of one batch at most), when `PARLEY_CRM_CONCURRENCY` says
/// none (its default is the same).
pub const CONCURRENCY: usize = 200;
pub const LEASE: Duration = Duration::from_secs(300);
/// How long an erasure waits for a CRM before it answers `failed` (the copy is deleted
/// later).
const ERASE_WAIT: Duration = Duration::from_secs(20);
/// Waits between attempts; after them, once an hour for as long as it takes.
const SCHEDULE: [Duration; 5] = [
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(300),
    Duration::from_secs(1800),
    Duration::from_secs(3600),
];

/// A message as a CRM logs it.
#[derive(Debug, Clone)]
pub struct Activity {
    /// The idempotency key: the message's id.
    pub key: String,
    pub sms: bool,
    pub inbound: bool,
    pub at: Micros,
    pub subject: Option<String>,
    /// Its text, at most [`MAX_BODY`] characters.
    pub body: String,
    pub from: String,
    pub to: Vec<String>,
    /// `sent` or `received`.
    pub status: String,
}

/// What an activity is logged on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The record whose case-number field holds the case number.
    Record(String),
    /// The contact with the debtor's email.
    Contact(String),
}

impl Target {
    fn text(&self) -> String {
        match self {
            Self::Record(id) => format!("record:{id}"),
            Self::Contact(id) => format!("contact:{id}"),
        }
    }
}

/// An activity logged: its id in the CRM (`Type/id`) and where a person opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub remote_id: String,
    pub link: Option<String>,
}

/// What a case's record is told: its status and what was paid (a decimal).
#[derive(Debug, Clone)]
pub struct RecordFacts {
    pub status: String,
    pub paid: String,
}

/// A CRM connector's client, built from its settings.
pub enum Crm {
    Salesforce(salesforce::Salesforce),
    Dynamics(dynamics::Dynamics),
    Hubspot(hubspot::Hubspot),
}

macro_rules! each {
    ($self:ident, $c:ident => $call:expr) => {
        match $self {
            Crm::Salesforce($c) => $call,
            Crm::Dynamics($c) => $call,
            Crm::Hubspot($c) => $call,
        }
    };
}

impl Crm {
    fn new(http: reqwest::Client, c: &Connector) -> Option<Self> {
        use crate::domain::connector::ConnectorType as T;
        Some(match c.kind {
            T::Salesforce => Self::Salesforce(salesforce::Salesforce::new(http, &c.settings)),
            T::Dynamics365 => Self::Dynamics(dynamics::Dynamics::new(http, &c.settings)),
            T::Hubspot => Self::Hubspot(hubspot::Hubspot::new(http, &c.settings)),
            _ => return None,
        })
    }

    /// Signs in (where there is a sign-in) and reads: the credentials tried.
    pub async fn check(&self) -> Result<(), Failure> {
        each!(self, c => c.check().await)
    }

    /// The record whose case-number field holds `case_number`.
    pub async fn find_record(&self, case_number: &str) -> Result<Option<String>, Failure> {
        each!(self, c => c.find_record(case_number).await)
    }

    /// The contact with this email address.
    pub async fn find_contact(&self, email: &str) -> Result<Option<String>, Failure> {
        each!(self, c => c.find_contact(email).await)
    }

    /// Logs the activities on their targets: each one's outcome, in order (an earlier
    /// attempt may have logged some: each CRM finds those by their key).
    pub async fn log(
        &self,
        batch: &[(&Activity, &Target)],
    ) -> Result<Vec<Result<Logged, Failure>>, Failure> {
        each!(self, c => c.log(batch).await)
    }

    /// Tells the record the case's status and what was paid.
    pub async fn update(&self, record: &str, facts: &RecordFacts) -> Result<(), Failure> {
        each!(self, c => c.update(record, facts).await)
    }

    /// Deletes logged activities (`Type/id`); one already gone counts as deleted.
    pub async fn delete(&self, remote: &[&str]) -> Result<Vec<Result<(), Failure>>, Failure> {
        each!(self, c => c.delete(remote).await)
    }
}

/// The CRM connectors' clients and what they need to log: shared by the queue's job and the
/// erasure.
pub struct Crms {
    http: reqwest::Client,
    clients: std::sync::Mutex<HashMap<ConnectorId, (Micros, Arc<Crm>)>>,
    crm: crate::store::Crm,
    connectors: crate::store::Connectors,
    messages: crate::store::Messages,
    cases: crate::store::Cases,
    clock: SharedClock,
    backoff: Backoff,
}

/// What one connector's share of a claim came to: each activity's outcome, how many were
/// logged, and the failure that stopped it, if one did.
#[derive(Default)]
struct Worked {
    outcomes: Vec<(String, Outcome)>,
    logged: i64,
    failure: Option<Failure>,
}

impl Crms {
    pub fn new(store: &Store, clock: SharedClock) -> anyhow::Result<Self> {
        Ok(Self {
            http: super::web::client()?,
            clients: Default::default(),
            crm: store.crm(),
            connectors: store.connectors(),
            messages: store.messages(),
            cases: store.cases(),
            clock,
            backoff: Backoff::new(SCHEDULE.to_vec()),
        })
    }

    pub fn client(&self, c: &Connector) -> Option<Arc<Crm>> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        match clients.get(&c.id) {
            Some((version, client)) if *version >= c.updated_at => Some(client.clone()),
            _ => {
                let client = Arc::new(Crm::new(self.http.clone(), c)?);
                clients.insert(c.id.clone(), (c.updated_at, client.clone()));
                Some(client)
            }
        }
    }

    /// Works these claimed activities, each connector's together, and records every
    /// outcome in one transaction.
    pub async fn work(&self, due: Vec<DueActivity>) -> anyhow::Result<()> {
        if due.is_empty() {
            return Ok(());
        }
        let started = self.clock.now();
        let connectors = self.connectors.connectors().await?;
        let mut groups: Vec<(Connector, Vec<DueActivity>)> = Vec::new();
        for d in due {
            match groups.iter_mut().find(|(c, _)| c.id == d.connector_id) {
                Some((_, items)) => items.push(d),
                None => {
                    if let Some(c) = connectors.iter().find(|c| c.id == d.connector_id) {
                        groups.push((c.clone(), vec![d]));
                    }
                }
            }
        }
        let worked = futures_util::future::join_all(
            groups
                .iter()
                .map(|(c, items)| self.work_connector(c, items)),
        )
        .await;
        let mut outcomes = Vec::new();
        let mut fine = Vec::new();
        for ((c, _), w) in groups.iter().zip(worked) {
            outcomes.extend(w.outcomes);
            match w.failure {
                None => fine.push((c.id.clone(), w.logged)),
                Some(failure) => self.failed(c, started, &failure).await?,
            }
        }
        self.crm.finish(&outcomes, &fine).await?;
        Ok(())
    }

    /// Marks the connector failing (or waiting for its credentials) with the failure.
    async fn failed(
        &self,
        c: &Connector,
        started: Micros,
        failure: &Failure,
    ) -> anyhow::Result<()> {
        let status = failure.status();
        tracing::warn!(connector = %c.id, kind = %c.kind, status = %status, "crm connector failed");
        crate::telemetry::OUTCOMES.count("connector", c.kind.as_str(), "failed");
        let end = SyncEnd::Failed {
            status,
            error: failure.describe(),
            items: 0,
        };
        self.connectors
            .record_sync(&c.id, (started, c.updated_at), &end)
            .await?;
        Ok(())
    }

    /// When an activity whose attempt failed is tried again: a throttled one when the CRM
    /// says (not counted as an attempt), others on the schedule, then hourly.
    fn next(&self, d: &DueActivity, attempts: i32, failure: &Failure) -> Transition {
        let now = self.clock.now();
        match failure {
            Failure::Throttled { retry_after, .. } => Transition::Defer(
                now + crate::domain::time::duration_micros(
                    retry_after.unwrap_or(Duration::from_secs(10)),
                ),
            ),
            Failure::Permanent(reason) if d.kind != ActivityKind::Erase => Transition::Failed {
                error: reason.clone(),
            },
            other => Transition::Retry {
                at: self
                    .backoff
                    .next(attempts, now, None)
                    .unwrap_or(now + 3_600_000_000),
                error: other.describe(),
            },
        }
    }

    /// One connector's activities: erasures, then messages, then records.
    async fn work_connector(&self, c: &Connector, items: &[DueActivity]) -> Worked {
        let mut w = Worked::default();
        let Some(client) = self.client(c) else {
            return w;
        };
        let mut targets = Targets::default();
        let run = async {
            self.erase_some(&client, items, &mut w).await?;
            self.log_messages(c, &client, items, &mut targets, &mut w)
                .await?;
            self.update_records(c, &client, items, &mut targets, &mut w)
                .await
        };
        if let Err(failure) = run.await {
            // What the failure stopped is tried again; what was done before it stays done.
            for d in items {
                if !w.outcomes.iter().any(|(id, _)| *id == d.id) {
                    let next = self.next(d, d.attempts, &failure);
                    w.outcomes.push((d.id.clone(), Outcome::Next(next)));
                }
            }
            w.failure = Some(failure);
        }
        w
    }

    async fn erase_some(
        &self,
        client: &Crm,
        items: &[DueActivity],
        w: &mut Worked,
    ) -> Result<(), Failure> {
        let erase: Vec<&DueActivity> = items
            .iter()
            .filter(|d| d.kind == ActivityKind::Erase && d.remote_id.is_some())
            .collect();
        if erase.is_empty() {
            return Ok(());
        }
        let remote: Vec<&str> = erase
            .iter()
            .filter_map(|d| d.remote_id.as_deref())
            .collect();
        let done = client.delete(&remote).await?;
        for (d, outcome) in erase.iter().zip(done) {
            let o = match outcome {
                Ok(()) => Outcome::Forgotten,
                Err(f) => Outcome::Next(self.next(d, d.attempts, &f)),
            };
            w.outcomes.push((d.id.clone(), o));
        }
        Ok(())
    }

    /// Logs the messages: each case's target found once, the activities logged in one
    /// call of the CRM's batches.
    async fn log_messages(
        &self,
        c: &Connector,
        client: &Crm,
        items: &[DueActivity],
        targets: &mut Targets,
        w: &mut Worked,
    ) -> Result<(), Failure> {
        let mut batch: Vec<(&DueActivity, Activity, Target)> = Vec::new();
        let due: Vec<&DueActivity> = items
            .iter()
            .filter(|d| d.kind == ActivityKind::Message)
            .collect();
        let mut activities = self.activities(&due).await.map_err(database)?;
        for d in due {
            let Some(activity) = activities.remove(&d.subject_id) else {
                let gone = Transition::Failed {
                    error: "the message is gone, or its debtor erased".into(),
                };
                w.outcomes.push((d.id.clone(), Outcome::Next(gone)));
                continue;
            };
            match targets.of(self, client, &d.case_id).await? {
                Some(target) => batch.push((d, activity, target)),
                None => w
                    .outcomes
                    .push((d.id.clone(), Outcome::Unlinked(unlinked(c)))),
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let pairs: Vec<(&Activity, &Target)> = batch.iter().map(|(_, a, t)| (a, t)).collect();
        let results = client.log(&pairs).await?;
        for ((d, _, target), result) in batch.iter().zip(results) {
            let o = match result {
                Ok(logged) => {
                    w.logged += 1;
                    Outcome::Logged {
                        remote_id: Some(logged.remote_id),
                        target: Some(target.text()),
                        link: logged.link,
                    }
                }
                Err(f) => Outcome::Next(self.next(d, d.attempts, &f)),
            };
            w.outcomes.push((d.id.clone(), o));
        }
        Ok(())
    }

    /// Tells each changed case's record its status and what was paid (once per case
    /// however many changes are queued).
    async fn update_records(
        &self,
        c: &Connector,
        client: &Crm,
        items: &[DueActivity],
        targets: &mut Targets,
        w: &mut Worked,
    ) -> Result<(), Failure> {
        let mut told: HashMap<CaseId, Outcome> = HashMap::new();
        for d in items.iter().filter(|d| d.kind == ActivityKind::Record) {
            if let Some(o) = told.get(&d.case_id) {
                w.outcomes.push((d.id.clone(), o.clone()));
                continue;
            }
            let o = if !c.settings.flag("updateRecord") {
                Outcome::Logged {
                    remote_id: None,
                    target: None,
                    link: None,
                }
            } else {
                match (
                    targets.of(self, client, &d.case_id).await?,
                    targets.facts(&d.case_id),
                ) {
                    (Some(Target::Record(record)), Some(facts)) => {
                        client.update(&record, &facts).await?;
                        Outcome::Logged {
                            remote_id: None,
                            target: Some(format!("record:{record}")),
                            link: None,
                        }
                    }
                    _ => Outcome::Unlinked(format!(
                        "no {} holds the case number",
                        c.settings.text(c.kind.mailbox_field())
                    )),
                }
            };
            told.insert(d.case_id, o.clone());
            w.outcomes.push((d.id.clone(), o));
        }
        Ok(())
    }

    /// The messages as the CRM logs them, by message id, read in one query; a message that
    /// is gone or whose debtor was erased (no body) is missing.
    async fn activities(
        &self,
        due: &[&DueActivity],
    ) -> crate::store::StoreResult<HashMap<String, Activity>> {
        let ids: Vec<MessageId> = due
            .iter()
            .map(|d| MessageId::from_stored(d.subject_id.clone()))
            .collect();
        let messages = self.messages.messages_with_bodies(&ids).await?;
        Ok(messages
            .into_iter()
            .filter_map(|m| {
                let body = m.body?;
                let inbound = m.direction == Direction::Inbound;
                Some((
                    m.id.to_string(),
                    Activity {
                        key: m.id.to_string(),
                        sms: m.message_type == MessageType::Sms,
                        inbound,
                        at: m.received_at.or(m.sent_at).unwrap_or(m.created_at),
                        subject: m.subject,
                        body: bounded(&body),
                        from: m.envelope.from,
                        to: m.envelope.to,
                        status: if inbound { "received" } else { "sent" }.into(),
                    },
                ))
            })
            .collect())
    }

    /// Deletes the activities logged about these (erased) cases, each CRM given a while;
    /// what fails stays queued and is tried again until it is deleted.
    pub async fn erase(&self, cases: &[CaseId]) -> Vec<crate::app::connectors::RemoteCopy> {
        use crate::domain::connector::RemoteCopyStatus;
        let owner = crate::domain::prefixed_id("erasure");
        let held = match self.crm.hand_to_erasure(cases, &owner).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "handing the CRM activities to the erasure failed");
                return Vec::new();
            }
        };
        let due: Vec<DueActivity> = held
            .iter()
            .map(|(id, connector, case, remote)| DueActivity {
                id: id.clone(),
                connector_id: connector.clone(),
                case_id: *case,
                kind: ActivityKind::Erase,
                subject_id: case.to_string(),
                remote_id: Some(remote.clone()),
                attempts: 1,
            })
            .collect();
        let worked = tokio::time::timeout(ERASE_WAIT, self.work(due.clone())).await;
        if !matches!(worked, Ok(Ok(()))) {
            tracing::warn!(
                "deleting CRM activities of an erasure did not finish; they are tried again"
            );
        }
        let connectors = self.connectors.connectors().await.unwrap_or_default();
        let left = self
            .crm
            .due_activities(&due.iter().map(|d| d.id.as_str()).collect::<Vec<_>>())
            .await
            .unwrap_or_default();
        let mut out: Vec<crate::app::connectors::RemoteCopy> = Vec::new();
        for d in &due {
            let Some(c) = connectors.iter().find(|c| c.id == d.connector_id) else {
                continue;
            };
            let failed = left.iter().any(|l| l.id == d.id);
            let status = if failed {
                RemoteCopyStatus::Failed
            } else {
                RemoteCopyStatus::Deleted
            };
            match out
                .iter_mut()
                .find(|r| r.connector_id == c.id && r.case_id == d.case_id)
            {
                Some(r) if failed => r.status = status,
                Some(_) => {}
                None => out.push(crate::app::connectors::RemoteCopy {
                    connector_id: c.id.clone(),
                    kind: c.kind,
                    case_id: d.case_id,
                    status,
                }),
            }
        }
        out
    }
}

/// Each case's target and facts, found once per connector and claim.
#[derive(Default)]
struct Targets {
    found: HashMap<CaseId, Option<Target>>,
    facts: HashMap<CaseId, RecordFacts>,
}

impl Targets {
    async fn of(
        &mut self,
        crms: &Crms,
        client: &Crm,
        case_id: &CaseId,
    ) -> Result<Option<Target>, Failure> {
        if let Some(t) = self.found.get(case_id) {
            return Ok(t.clone());
        }
        let Some(case) = crms
            .cases
            .get_case(&Actor::system(), case_id)
            .await
            .map_err(database)?
        else {
            self.found.insert(*case_id, None);
            return Ok(None);
        };
        let paid = crate::domain::case::Money {
            minor: case.paid_minor,
            currency: case.amount.currency,
        };
        self.facts.insert(
            *case_id,
            RecordFacts {
                status: case.status.as_str().to_string(),
                paid: paid.value(),
            },
        );
        let target = match client.find_record(&case.case_number).await? {
            Some(record) => Some(Target::Record(record)),
            None => match case.debtor.email.as_deref().filter(|e| !e.is_empty()) {
                Some(email) => client.find_contact(email).await?.map(Target::Contact),
                None => None,
            },
        };
        self.found.insert(*case_id, target.clone());
        Ok(target)
    }

    fn facts(&self, case_id: &CaseId) -> Option<RecordFacts> {
        self.facts.get(case_id).cloned()
    }
}

fn unlinked(c: &Connector) -> String {
    format!(
        "no {} holds the case number and no contact the debtor's email",
        c.settings.text(c.kind.mailbox_field())
    )
}

fn database(e: crate::store::StoreError) -> Failure {
    Failure::Transient(format!("reading parley's database: {e}"))
}

/// At most [`MAX_BODY`] characters, marked when cut.
fn bounded(text: &str) -> String {
    if text.chars().count() <= MAX_BODY {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(MAX_BODY - 20).collect();
    cut.push_str("\n[… shortened]");
    cut
}

/// The queue's job: claims of CRM activities, worked per connector in batches.
pub struct CrmJob {
    crms: Arc<Crms>,
    crm: crate::store::Crm,
    /// Activities of the last claim already worked and recorded.
    recorded: Preloaded<()>,
}

impl CrmJob {
    pub fn new(crms: Arc<Crms>, store: &Store) -> Self {
        Self {
            crms,
            crm: store.crm(),
            recorded: Preloaded::default(),
        }
    }

    async fn work_ids(&self, ids: &[&str]) -> anyhow::Result<()> {
        let due = self.crm.due_activities(ids).await?;
        self.crms.work(due).await
    }
}

impl Job for CrmJob {
    const QUEUE: QueueTable = CRM_ACTIVITIES;
    const NAME: &'static str = "crm";

    /// The whole claim is worked here, per connector in the CRMs' batches; each attempt
    /// then finds its outcome recorded.
    async fn preload(&self, claims: &[Claim]) {
        let ids: Vec<&str> = claims.iter().map(|c| c.id.as_str()).collect();
        match self.work_ids(&ids).await {
            Ok(()) => self
                .recorded
                .keep(ids.iter().map(|id| (id.to_string(), ()))),
            Err(e) => tracing::warn!(error = format!("{e:#}"), "working CRM activities failed"),
        }
    }

    async fn handle(&self, claim: &Claim) -> anyhow::Result<()> {
        if self.recorded.take(&claim.id).is_some() {
            return Ok(());
        }
        self.work_ids(&[claim.id.as_str()]).await
    }
}
