//! Document systems: every document of a case a drive connector serves mirrored into the
//! case's folder (named by its case number, under the connector's root folder), and every
//! file a person puts into that folder (or into a sub-folder named by a document type) taken
//! in as a document of the case. The service's own protocol is its module's
//! ([`super::sharepoint`]); what is the same for all of them is here.
//!
//! - **Mirroring** is the `mirror_document` job (queued in the transaction that records a
//!   document; the queue's leases, retries and backoff). The file's name is chosen and kept
//!   before anything is uploaded (a name taken in the folder gets ` 1`, ` 2`, … before its
//!   extension, as the services do), and the remote item's id and an upload session's URL
//!   as soon as they exist: a retry after a crash uploads into the same item, resuming the
//!   session where the service says it stopped, and never leaves a second copy. A new
//!   version of a document (`replacesDocumentId`) becomes a new version of its predecessor's
//!   remote file.
//! - **Taking in** is each round of the connector's sync: the service's changes from the
//!   kept cursor; a folder under the root named by a case number of a case it serves
//!   becomes that case's folder; a file in a case folder that the connector neither
//!   mirrored nor took before is streamed into the document store and recorded, once.
//! - **Erasure** deletes each erased case's folder on every connector that has one; one
//!   that fails is kept and tried again each round (the connector shows why).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};

use super::box_com::BoxCom;
use super::dropbox::Dropbox;
use super::google_drive::GoogleDrive;
use super::sharepoint::Sharepoint;
use super::web::Failure;
use super::{Client, Runtime, Synced};
use crate::app::connectors::{DocumentSystems, RemoteCopy};
use crate::app::drives::Found;
use crate::app::{AppError, AppResult};
use crate::crypto::SubjectKey;
use crate::documents::store::DocumentReader;
use crate::domain::ConnectorId;
use crate::domain::connector::{REFUSED_IN_NAMES, RemoteCopyStatus};
use crate::domain::document::DocumentType;
use crate::domain::{CaseId, DocumentId};
use crate::store::{Connector, DocumentView, DriveFolder, RemoteFile, SyncEnd, ToMirror};

/// Documents from before a connector (or of a creditor it serves since a change) queued for
/// mirroring in one round at most.
const BACKFILL: i64 = 500;
/// The longest an erasure waits for one connector to delete a case folder; what takes
/// longer is tried again by the next round.
const ERASE_WAIT: Duration = Duration::from_secs(20);
/// The longest name given to a file or folder.
const MAX_NAME: usize = 200;

/// Why mirroring or a sync stopped: the service's answer, or parley's own failure.
pub enum Stop {
    Service(Failure),
    App(AppError),
}

impl From<Failure> for Stop {
    fn from(f: Failure) -> Self {
        Self::Service(f)
    }
}

impl From<AppError> for Stop {
    fn from(e: AppError) -> Self {
        Self::App(e)
    }
}

impl From<crate::store::StoreError> for Stop {
    fn from(e: crate::store::StoreError) -> Self {
        Self::App(e.into())
    }
}

/// A name the document systems take: the characters they refuse become `_`, no space at
/// either end nor a dot at the end, at most [`MAX_NAME`] characters; `fallback` for none.
pub fn safe_name(name: &str, fallback: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_control() || REFUSED_IN_NAMES.contains(&c) {
                '_'
            } else {
                c
            }
        })
        .take(MAX_NAME)
        .collect();
    let cleaned = cleaned.trim().trim_end_matches('.').trim_end();
    if cleaned.is_empty() {
        fallback.to_string()
    } else {
        cleaned.to_string()
    }
}

/// `name`, or the first of `name 1`, `name 2`, … (before the extension) that is not in
/// `taken` (compared without regard to case, as the services do).
pub fn free_name(name: &str, taken: &HashSet<String>) -> String {
    if !taken.contains(&name.to_lowercase()) {
        return name.to_string();
    }
    let (stem, extension) = match name.rfind('.') {
        Some(dot) if dot > 0 => (&name[..dot], &name[dot..]),
        _ => (name, ""),
    };
    (1..)
        .map(|n| format!("{stem} {n}{extension}"))
        .find(|candidate| !taken.contains(&candidate.to_lowercase()))
        .unwrap_or_else(|| name.to_string())
}

fn serves(c: &Connector, creditor: &crate::domain::PartyId) -> bool {
    c.creditor_id.as_ref().is_none_or(|only| only == creditor)
}

/// An item of a drive, as every service's listing and changes say it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub name: String,
    pub parent: Option<String>,
    pub folder: bool,
    pub content_type: Option<String>,
    pub size: Option<i64>,
}

/// A page of a drive's changes: what is there now (removals left out).
pub struct Changed {
    pub entries: Vec<Entry>,
    pub cursor: Option<String>,
    pub more: bool,
}

/// A file once its bytes are there: its id, and where a person opens it.
pub struct Uploaded {
    pub id: String,
    pub link: Option<String>,
}

/// Where a document's bytes go: a name in a folder, into the remote item it already has
/// (a new version, or an earlier attempt's), resuming the session an attempt began.
pub struct Target<'a> {
    pub folder: &'a str,
    pub name: &'a str,
    pub remote: Option<&'a str>,
    pub session: Option<&'a str>,
}

/// A document's bytes, opened under its case's key, for an upload.
pub struct Source<'a> {
    drives: &'a crate::app::drives::Drives,
    document: &'a DocumentView,
    key: &'a std::sync::Arc<SubjectKey>,
}

impl Source<'_> {
    pub fn size(&self) -> u64 {
        u64::try_from(self.document.size).unwrap_or(0)
    }

    /// All of a small document's bytes (at most `limit`).
    pub async fn whole(&self, limit: u64) -> Result<Bytes, Stop> {
        let mut ranges = self
            .ranges(0, usize::try_from(limit).unwrap_or(usize::MAX))
            .await?;
        let mut out = BytesMut::new();
        while let Some((_, part)) = ranges.next().await? {
            if ranges.read > limit {
                return Err(store(anyhow::anyhow!(
                    "a document is larger than its record says"
                )));
            }
            out.extend_from_slice(&part);
        }
        Ok(out.freeze())
    }

    /// The bytes from `from` on, in parts of `size` (the last one shorter).
    pub async fn ranges(&self, from: u64, size: usize) -> Result<Ranges, Stop> {
        Ok(Ranges {
            reader: self.drives.reader(self.document, self.key.clone()).await?,
            skip: from,
            at: from,
            size,
            carry: Bytes::new(),
            ended: false,
            read: 0,
        })
    }
}

/// A document's bytes in parts of one size, from an offset: one part in memory at a time.
pub struct Ranges {
    reader: DocumentReader,
    /// Bytes still to read past (what the service has already).
    skip: u64,
    /// Where the next part starts.
    at: u64,
    size: usize,
    /// What the last chunk read held beyond the part it filled.
    carry: Bytes,
    ended: bool,
    /// Bytes read from the store in all.
    read: u64,
}

impl Ranges {
    /// The next part and where it starts; none at the end. Each part is one allocation of
    /// its size, made when it is asked for (the one before is sent and dropped by then).
    pub async fn next(&mut self) -> Result<Option<(u64, Bytes)>, Stop> {
        let mut part = BytesMut::new();
        loop {
            if !self.carry.is_empty() {
                if part.capacity() == 0 {
                    part.reserve(self.size);
                }
                let take = self.carry.len().min(self.size - part.len());
                part.extend_from_slice(&self.carry.split_to(take));
            }
            if part.len() == self.size || self.ended {
                break;
            }
            match self.reader.next_chunk().await.map_err(store)? {
                Some(mut chunk) => {
                    self.read += chunk.len() as u64;
                    if self.skip > 0 {
                        let skip = self.skip.min(chunk.len() as u64);
                        self.skip -= skip;
                        chunk = chunk.slice(usize::try_from(skip).unwrap_or(chunk.len())..);
                    }
                    self.carry = chunk;
                }
                None => self.ended = true,
            }
        }
        if part.is_empty() {
            return Ok(None);
        }
        let part = part.freeze();
        let start = self.at;
        self.at += part.len() as u64;
        Ok(Some((start, part)))
    }
}

/// Keeps what an upload must not lose to a crash: the remote item as soon as it exists,
/// the session as soon as it is opened.
pub struct Keeper<'a> {
    drives: &'a crate::app::drives::Drives,
    connector: &'a ConnectorId,
    document: &'a DocumentId,
    key: &'a SubjectKey,
}

impl Keeper<'_> {
    pub async fn remote(&self, id: &str) -> Result<(), Stop> {
        Ok(self
            .drives
            .set_remote(self.connector, self.document, id)
            .await?)
    }

    pub async fn session(&self, session: Option<&str>) -> Result<(), Stop> {
        Ok(self
            .drives
            .set_session(self.connector, self.document, self.key, session)
            .await?)
    }
}

/// A drive connector's client: the operations every document system has, each by its
/// own protocol.
#[derive(Clone, Copy)]
enum Drive<'a> {
    Sharepoint(&'a Sharepoint),
    Google(&'a GoogleDrive),
    Box(&'a BoxCom),
    Dropbox(&'a Dropbox),
}

impl<'a> Drive<'a> {
    fn of(client: &'a Client) -> Option<Self> {
        match client {
            Client::Sharepoint(s) => Some(Self::Sharepoint(s)),
            Client::GoogleDrive(g) => Some(Self::Google(g)),
            Client::Box(b) => Some(Self::Box(b)),
            Client::Dropbox(d) => Some(Self::Dropbox(d)),
            _ => None,
        }
    }

    async fn root(self) -> Result<String, Failure> {
        match self {
            Self::Sharepoint(s) => s.root().await,
            Self::Google(g) => g.root().await,
            Self::Box(b) => b.root().await,
            Self::Dropbox(d) => d.root().await,
        }
    }

    async fn folder_in(self, parent: &str, name: &str) -> Result<String, Failure> {
        match self {
            Self::Sharepoint(s) => s.folder_in(parent, name).await,
            Self::Google(g) => g.folder_in(parent, name).await,
            Self::Box(b) => b.folder_in(parent, name).await,
            Self::Dropbox(d) => d.folder_in(parent, name).await,
        }
    }

    async fn names_in(self, folder: &str) -> Result<Vec<String>, Failure> {
        match self {
            Self::Sharepoint(s) => s.names_in(folder).await,
            Self::Google(g) => g.names_in(folder).await,
            Self::Box(b) => b.names_in(folder).await,
            Self::Dropbox(d) => d.names_in(folder).await,
        }
    }

    async fn upload(
        self,
        target: &Target<'_>,
        source: &Source<'_>,
        keeper: &Keeper<'_>,
    ) -> Result<Uploaded, Stop> {
        match self {
            Self::Sharepoint(s) => s.upload(target, source, keeper).await,
            Self::Google(g) => g.upload(target, source, keeper).await,
            Self::Box(b) => b.upload(target, source, keeper).await,
            Self::Dropbox(d) => d.upload(target, source, keeper).await,
        }
    }

    async fn changes(self, cursor: Option<&str>) -> Result<Changed, Failure> {
        match self {
            Self::Sharepoint(s) => s.changes(cursor).await,
            Self::Google(g) => g.changes(cursor).await,
            Self::Box(b) => b.changes(cursor).await,
            Self::Dropbox(d) => d.changes(cursor).await,
        }
    }

    async fn download(self, id: &str) -> Result<reqwest::Response, Failure> {
        match self {
            Self::Sharepoint(s) => s.download(id).await,
            Self::Google(g) => g.download(id).await,
            Self::Box(b) => b.download(id).await,
            Self::Dropbox(d) => d.download(id).await,
        }
    }

    async fn delete(self, id: &str) -> Result<(), Failure> {
        match self {
            Self::Sharepoint(s) => s.delete(id).await,
            Self::Google(g) => g.delete(id).await,
            Self::Box(b) => b.delete(id).await,
            Self::Dropbox(d) => d.delete(id).await,
        }
    }
}

impl Runtime {
    /// The `mirror_document` job: the document mirrored to every drive connector serving
    /// its case that has no whole copy. A connector that fails is marked failing and fails
    /// the job (the queue retries it); the others keep what they did.
    pub(super) async fn mirror(&self, id: &DocumentId) -> AppResult<()> {
        let Some((m, key)) = self.drives.to_mirror(id).await? else {
            return Ok(());
        };
        // An older version after a newer one: the newer is the file's content.
        if !m.document.is_latest {
            return Ok(());
        }
        let mut failed = Vec::new();
        for c in self.drives.drive_connectors().await? {
            if !serves(&c, &m.creditor_id) {
                continue;
            }
            let Some(client) = self.client(&c) else {
                continue;
            };
            let Some(drive) = Drive::of(&client) else {
                continue;
            };
            let started = self.clock.now();
            let mut outcome = self.mirror_to(&c, drive, &m, &key).await;
            if let Err(Stop::Service(f)) = &outcome
                && gone(f)
            {
                // The case's folder (or the file) was deleted there: made again.
                self.drives.forget_case(&c.id, &m.document.case_id).await?;
                outcome = self.mirror_to(&c, drive, &m, &key).await;
            }
            match outcome {
                Ok(()) => {}
                Err(Stop::Service(failure)) => {
                    self.failed(&c, started, &failure).await?;
                    failed.push(failure.describe());
                }
                Err(Stop::App(e)) => return Err(e),
            }
        }
        match failed.is_empty() {
            true => Ok(()),
            false => Err(AppError::InvalidState(failed.join("; "))),
        }
    }

    /// Records a connector's failure (its status, `lastError`, `connector.failed`).
    async fn failed(&self, c: &Connector, started: i64, failure: &Failure) -> AppResult<()> {
        let status = failure.status();
        tracing::warn!(connector = %c.id, kind = %c.kind, status = %status, "document system failed");
        let end = SyncEnd::Failed {
            status,
            error: failure.describe(),
            items: 0,
        };
        self.connectors.record_sync(c, started, &end).await
    }

    /// The case's folder on the connector, made (and kept) when it has none.
    async fn case_folder(
        &self,
        c: &Connector,
        drive: Drive<'_>,
        (case, number): (&CaseId, &str),
    ) -> Result<String, Stop> {
        if let Some(folder) = self.drives.case_folder(&c.id, case).await? {
            return Ok(folder);
        }
        let root = drive.root().await?;
        let folder = drive.folder_in(&root, &safe_name(number, "case")).await?;
        let kept = DriveFolder {
            case_id: *case,
            document_type: None,
        };
        self.drives.keep_folder(&c.id, &folder, kept).await?;
        Ok(folder)
    }

    /// The name and remote item a document's file is to have: kept from an earlier
    /// attempt, its predecessor's (a new version), or a free name chosen now and kept.
    async fn plan(
        &self,
        c: &Connector,
        drive: Drive<'_>,
        (m, key): (&ToMirror, &SubjectKey),
        folder: &str,
    ) -> Result<RemoteFile, Stop> {
        let doc = &m.document;
        if let Some(planned) = self.drives.remote_file(&c.id, &doc.id).await? {
            return Ok(planned);
        }
        let predecessor = match &doc.replaces_document_id {
            Some(before) => self
                .drives
                .remote_file(&c.id, &DocumentId::from_stored(before.clone()))
                .await?
                .filter(|r| r.done && r.remote_id.is_some()),
            None => None,
        };
        if let Some(before) = predecessor {
            let name = before
                .name
                .unwrap_or_else(|| safe_name(&doc.file_name, "document"));
            self.drives
                .plan_file(&c.id, doc, key, &name, before.remote_id.as_deref())
                .await?;
            return self.planned(c, doc).await;
        }
        let mut taken: HashSet<String> = drive
            .names_in(folder)
            .await?
            .into_iter()
            .map(|n| n.to_lowercase())
            .collect();
        // A name is the case's once (a keyed hash of it is unique): another document of the
        // case planned at the same moment takes the next one.
        for _ in 0..20 {
            taken.extend(
                self.drives
                    .names_in_case(&c.id, &doc.case_id, false)
                    .await?
                    .into_iter()
                    .map(|n| n.to_lowercase()),
            );
            let name = free_name(&safe_name(&doc.file_name, "document"), &taken);
            if self.drives.plan_file(&c.id, doc, key, &name, None).await? {
                break;
            }
            if self.drives.remote_file(&c.id, &doc.id).await?.is_some() {
                break;
            }
            taken.insert(name.to_lowercase());
        }
        self.planned(c, doc).await
    }

    /// The file planned for a document (it must be, by now).
    async fn planned(&self, c: &Connector, doc: &DocumentView) -> Result<RemoteFile, Stop> {
        self.drives
            .remote_file(&c.id, &doc.id)
            .await?
            .ok_or_else(|| store(anyhow::anyhow!("no free name for a document's file")))
    }

    /// Mirrors one document to one connector, unless it has a whole copy or the file came
    /// from there.
    async fn mirror_to(
        &self,
        c: &Connector,
        drive: Drive<'_>,
        m: &ToMirror,
        key: &std::sync::Arc<SubjectKey>,
    ) -> Result<(), Stop> {
        let doc = &m.document;
        if let Some(file) = self.drives.remote_file(&c.id, &doc.id).await?
            && (file.done || file.taken)
        {
            return Ok(());
        }
        let folder = self
            .case_folder(c, drive, (&doc.case_id, &m.case_number))
            .await?;
        let planned = self.plan(c, drive, (m, key), &folder).await?;
        let target = Target {
            folder: &folder,
            name: planned.name.as_deref().unwrap_or("document"),
            remote: planned.remote_id.as_deref(),
            session: planned.session.as_deref(),
        };
        let source = Source {
            drives: &self.drives,
            document: doc,
            key,
        };
        let keeper = Keeper {
            drives: &self.drives,
            connector: &c.id,
            document: &doc.id,
            key,
        };
        let uploaded = drive.upload(&target, &source, &keeper).await?;
        self.drives
            .finish_file(
                &c.id,
                &doc.id,
                key,
                (&uploaded.id, uploaded.link.as_deref()),
            )
            .await?;
        // Erased while it was uploading: what it made there goes too.
        if self.drives.key_of(&doc.case_id).await?.is_none() {
            drive.delete(&folder).await?;
            self.drives.forget_case(&c.id, &doc.case_id).await?;
        }
        Ok(())
    }

    /// One round of a drive connector: erasures still to make, the service's changes
    /// since the kept cursor (files put into case folders taken in), and documents from
    /// before the connector queued for mirroring. Answers the cursor reached.
    pub(super) async fn sync_drive(
        &self,
        c: &Connector,
        client: &Client,
        synced: &mut Synced,
    ) -> Result<Option<String>, Result<Failure, anyhow::Error>> {
        let app = |e: AppError| Err(anyhow::Error::from(e));
        let stop = |s: Stop| match s {
            Stop::Service(f) => Ok(f),
            Stop::App(e) => Err(anyhow::Error::from(e)),
        };
        let Some(drive) = Drive::of(client) else {
            return Ok(None);
        };
        // Each erasure on its own: one that fails is recorded and the round goes on.
        for (case, folder) in self
            .drives
            .erasures(&c.id)
            .await
            .map_err(|e| app(e.into()))?
        {
            let done = match drive.delete(&folder).await {
                Ok(()) => self.drives.forget_case(&c.id, &case).await,
                Err(f) => {
                    self.drives
                        .erasure_failed(&c.id, (&case, &folder), &f.describe())
                        .await
                }
            };
            done.map_err(|e| app(e.into()))?;
        }
        let cursor = self.take_changes(c, drive, synced).await.map_err(stop)?;
        self.drives
            .queue_unmirrored(c, BACKFILL)
            .await
            .map_err(|e| app(e.into()))?;
        Ok(cursor)
    }

    /// Reads the drive's changes page by page (each page's cursor kept once its files are
    /// taken in); a cursor the service forgot starts again from the beginning, once.
    async fn take_changes(
        &self,
        c: &Connector,
        drive: Drive<'_>,
        synced: &mut Synced,
    ) -> Result<Option<String>, Stop> {
        let root = drive.root().await?;
        let mut folders = self.drives.folders(&c.id).await?;
        let mut cursor = c.cursor.clone();
        let mut restarted = false;
        for _ in 0..super::MAX_PAGES {
            let page = match drive.changes(cursor.as_deref()).await {
                Ok(page) => page,
                Err(Failure::Resync) if !restarted => {
                    restarted = true;
                    cursor = None;
                    continue;
                }
                Err(f) => return Err(f.into()),
            };
            let (dirs, files): (Vec<Entry>, Vec<Entry>) =
                page.entries.into_iter().partition(|e| e.folder);
            for dir in dirs {
                self.learn_folder(c, &root, &dir, &mut folders).await?;
            }
            for file in &files {
                let Some(folder) = file.parent.as_deref().and_then(|p| folders.get(p)).copied()
                else {
                    continue;
                };
                if self.take_file(c, drive, file, folder).await? {
                    synced.taken += 1;
                } else {
                    synced.skipped += 1;
                }
            }
            if let Some(next) = &page.cursor {
                self.connectors.save_cursor(c, next).await?;
            }
            cursor = page.cursor.or(cursor);
            if !page.more {
                return Ok(cursor);
            }
        }
        synced.more = true;
        Ok(cursor)
    }

    /// Learns a folder of the drive: one under the root named by a case number of a case
    /// the connector serves is that case's folder; one in a case folder named by a
    /// document type holds documents of that type.
    async fn learn_folder(
        &self,
        c: &Connector,
        root: &str,
        dir: &Entry,
        folders: &mut HashMap<String, DriveFolder>,
    ) -> Result<(), Stop> {
        if folders.contains_key(&dir.id) {
            return Ok(());
        }
        let Some(parent) = dir.parent.as_deref() else {
            return Ok(());
        };
        let learned = if parent == root {
            self.drives
                .case_by_number(c, &dir.name)
                .await?
                .map(|case_id| DriveFolder {
                    case_id,
                    document_type: None,
                })
        } else {
            match (
                folders.get(parent),
                DocumentType::parse(&dir.name.to_lowercase()),
            ) {
                (
                    Some(DriveFolder {
                        case_id,
                        document_type: None,
                    }),
                    Ok(kind),
                ) => Some(DriveFolder {
                    case_id: *case_id,
                    document_type: Some(kind),
                }),
                _ => None,
            }
        };
        if let Some(folder) = learned {
            self.drives.keep_folder(&c.id, &dir.id, folder).await?;
            folders.insert(dir.id.clone(), folder);
        }
        Ok(())
    }

    /// Takes in a file of a case folder, unless the connector mirrored or took it before
    /// (or is about to: a name kept for a file being uploaded). `true` when it was taken.
    async fn take_file(
        &self,
        c: &Connector,
        drive: Drive<'_>,
        file: &Entry,
        folder: DriveFolder,
    ) -> Result<bool, Stop> {
        if self.drives.knows_remote(&c.id, &file.id).await? {
            return Ok(false);
        }
        // A file parley is uploading right now (its name kept, its id not yet).
        let uploading = self
            .drives
            .names_in_case(&c.id, &folder.case_id, true)
            .await?;
        if uploading
            .iter()
            .any(|n| n.to_lowercase() == file.name.to_lowercase())
        {
            return Ok(false);
        }
        // A Google document, sheet or shortcut has no bytes of its own to take.
        if file
            .content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("application/vnd.google-apps."))
        {
            return Ok(false);
        }
        if file
            .size
            .is_some_and(|s| u64::try_from(s).unwrap_or(0) > self.drives.max_bytes())
        {
            tracing::warn!(connector = %c.id, "a file in a case folder is larger than documents may be; left where it is");
            return Ok(false);
        }
        let response = match drive.download(&file.id).await {
            Ok(response) => response,
            // Gone since it was listed: nothing to take.
            Err(f) if gone(&f) => return Ok(false),
            Err(f) => return Err(f.into()),
        };
        if response.status() != reqwest::StatusCode::OK {
            // Box's 202: not ready yet; the round stops here and comes back.
            return Err(Failure::Transient(format!(
                "a file's bytes answered HTTP {}",
                response.status()
            ))
            .into());
        }
        let bytes = response
            .bytes_stream()
            .map_err(std::io::Error::other)
            .boxed();
        let content_type = file
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into());
        let found = Found {
            case_id: folder.case_id,
            document_type: folder.document_type.unwrap_or(DocumentType::Other),
            file_name: &file.name,
            content_type: &content_type,
            remote_id: &file.id,
        };
        match self.drives.take_in(c, found, bytes).await {
            Ok(taken) => Ok(taken),
            Err(AppError::TooLarge(_)) => {
                tracing::warn!(connector = %c.id, "a file in a case folder is larger than documents may be; left where it is");
                Ok(false)
            }
            // The download broke off: the round stops before its cursor moves past the file.
            Err(AppError::Malformed(reason)) => Err(Failure::Transient(reason).into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the case folders of erased cases.
    async fn erase_cases(&self, cases: &[CaseId]) -> Vec<RemoteCopy> {
        let folders = match self.drives.case_folders(cases).await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "reading the erased cases' remote folders failed");
                return Vec::new();
            }
        };
        let connectors = self.drives.drive_connectors().await.unwrap_or_default();
        let mut out = Vec::new();
        for (connector, case, folder) in folders {
            let Some(c) = connectors.iter().find(|c| c.id == connector) else {
                continue;
            };
            let Some(client) = self.client(c) else {
                continue;
            };
            let Some(drive) = Drive::of(&client) else {
                continue;
            };
            let deleted = match tokio::time::timeout(ERASE_WAIT, drive.delete(&folder)).await {
                Ok(done) => done,
                Err(_) => Err(Failure::Transient("deleting took too long".into())),
            };
            let outcome = match deleted {
                Ok(()) => self
                    .drives
                    .forget_case(&connector, &case)
                    .await
                    .map(|_| RemoteCopyStatus::Deleted),
                Err(failure) => {
                    let started = self.clock.now();
                    let _ = self.failed(c, started, &failure).await;
                    self.drives
                        .erasure_failed(&connector, (&case, &folder), &failure.describe())
                        .await
                        .map(|_| RemoteCopyStatus::Failed)
                }
            };
            let status = outcome.unwrap_or_else(|e| {
                tracing::error!(error = %e, "recording a remote erasure failed");
                RemoteCopyStatus::Failed
            });
            out.push(RemoteCopy {
                connector_id: connector,
                kind: c.kind,
                case_id: case,
                status,
            });
        }
        out
    }
}

/// A service's "not found" (the item was deleted there).
fn gone(f: &Failure) -> bool {
    let text = f.describe();
    matches!(f, Failure::Permanent(_) | Failure::Credentials(_))
        && ["(HTTP 404", "itemNotFound", "not_found", "NOT_FOUND"]
            .iter()
            .any(|m| text.contains(m))
}

pub fn store(e: anyhow::Error) -> Stop {
    Stop::App(AppError::Store(e.into()))
}

impl DocumentSystems for Runtime {
    fn mirror<'a>(&'a self, document: &'a DocumentId) -> BoxFuture<'a, AppResult<()>> {
        Box::pin(Runtime::mirror(self, document))
    }

    fn erase<'a>(&'a self, cases: &'a [CaseId]) -> BoxFuture<'a, Vec<RemoteCopy>> {
        Box::pin(async move {
            let mut copies = self.erase_cases(cases).await;
            copies.extend(self.crms.erase(cases).await);
            copies
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_services_refuse_are_made_safe() {
        assert_eq!(safe_name("a/b:c?.pdf", "x"), "a_b_c_.pdf");
        assert_eq!(safe_name(" report. ", "x"), "report");
        assert_eq!(safe_name("...", "x"), "x");
        assert_eq!(safe_name("", "document"), "document");
    }

    #[test]
    fn a_taken_name_gets_a_number_before_its_extension() {
        let taken: HashSet<String> = ["invoice.pdf", "invoice 1.pdf", "notes"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(free_name("Invoice.PDF", &taken), "Invoice 2.PDF");
        assert_eq!(free_name("notes", &taken), "notes 1");
        assert_eq!(free_name("letter.pdf", &taken), "letter.pdf");
        assert_eq!(free_name(".env", &["env".into()].into()), ".env");
    }
}
