//! `GET /api/cases/{caseId}/messages/export?format=mbox|eml`: a case's messages as one MBOX
//! file, or a ZIP of `.eml` files with a SHA-256 manifest, streamed a message at a time.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::cases::case_id;
use super::extract::{Auth, Path, Query};
use super::problem::{ApiError, ApiResult, ProblemBody};
use crate::domain::code::Code;
use crate::domain::mailfile::{Zip, mbox_entry};

/// How a case's messages are exported.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportFormat {
    /// `mbox` (one MBOX file, the default) or `eml` (a ZIP of `.eml` files with
    /// `manifest.sha256`).
    #[param(pattern = "^(mbox|eml)$")]
    pub format: Option<String>,
}

type Chunk = Result<Bytes, std::io::Error>;

/// A case's emails and text messages, oldest first: the exact bytes of each email parley
/// kept (every received one; a sent one while an archive connector served the case), else a
/// plain rendition of what is stored (`X-Parley-Export: rebuilt`). Audited as
/// `messages.exported`.
#[utoipa::path(get, path = "/api/cases/{caseId}/messages/export", tag = "messages",
    params(("caseId" = uuid::Uuid, Path), ExportFormat),
    responses(
        (status = 200, description = "the MBOX file (`application/mbox`) or the ZIP (`application/zip`), streamed",
            content(("application/mbox"), ("application/zip"))),
        (status = 400, body = ProblemBody, description = "`invalid_query`"),
        (status = 404, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn export_messages(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(raw): Path<String>,
    Query(q): Query<ExportFormat>,
) -> ApiResult<Response> {
    let zip = match q.format.as_deref() {
        None | Some("mbox") => false,
        Some("eml") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                Code::InvalidQuery,
                "format must be mbox or eml",
            ));
        }
    };
    let case = case_id(&raw)?;
    let listed = state
        .app
        .archive
        .export_list(&state.app.messaging, &actor, &case)
        .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(4);
    tokio::spawn(async move {
        let mut archive = if zip { Some(Zip::default()) } else { None };
        let mut last = 0;
        for (n, view) in listed.iter().enumerate() {
            let app = &state.app;
            let one = match app.archive.export_one(&app.messaging, &actor, view).await {
                Ok(Some(one)) => one,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(error = format!("{e}"), "a message export broke off");
                    let _ = tx
                        .send(Err(std::io::Error::other("the export broke off")))
                        .await;
                    return;
                }
            };
            last = last.max(one.at);
            let bytes = match &mut archive {
                Some(zip) => {
                    let name = format!("{:05}-{}.eml", n + 1, view.id);
                    zip.file(&name, &one.bytes, one.at)
                        .map_err(std::io::Error::other)
                }
                None => Ok(mbox_entry(&one.bytes, one.at)),
            };
            let failed = bytes.is_err();
            if tx.send(bytes.map(Bytes::from)).await.is_err() || failed {
                return;
            }
        }
        if let Some(zip) = archive {
            let end = zip
                .finish(last)
                .map(Bytes::from)
                .map_err(std::io::Error::other);
            let _ = tx.send(end).await;
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    let (kind, file) = if zip {
        ("application/zip", format!("messages-{case}.zip"))
    } else {
        ("application/mbox", format!("messages-{case}.mbox"))
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, kind.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        body,
    )
        .into_response())
}
