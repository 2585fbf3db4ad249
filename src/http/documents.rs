//! Documents: upload (multipart, sealed as it streams in), versions, metadata, download.

use crate::domain::CaseId;
use crate::domain::code::Code;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::cases::case_id;
use super::extract::{Auth, Path};
use super::problem::{ApiError, ApiResult, ProblemBody};
use crate::app::documents::Described;
use crate::domain::DocumentId;
use crate::domain::document::clean_file_name;
use crate::domain::time::rfc3339;
use crate::store::DocumentView;
use futures_util::TryStreamExt;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DocumentResponse {
    pub document_id: String,
    #[schema(value_type = String)]
    pub case_id: CaseId,
    pub file_name: String,
    pub document_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    pub version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces_document_id: Option<String>,
    pub latest: bool,
    pub uploaded_at: String,
    pub uploaded_by: String,
    /// The document systems it is mirrored to, with a link to the file where the service
    /// gives one (in the answers that read one document or a case's list).
    pub mirrors: Vec<MirrorResponse>,
}

/// A document's copy on a document system.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MirrorResponse {
    pub connector_id: String,
    #[serde(rename = "type")]
    #[schema(value_type = String, schema_with = super::openapi::connector_type)]
    pub kind: crate::domain::connector::ConnectorType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl From<DocumentView> for DocumentResponse {
    fn from(d: DocumentView) -> Self {
        Self {
            document_id: d.id.into(),
            case_id: d.case_id,
            file_name: d.file_name,
            document_type: d.document_type.as_str().to_string(),
            description: d.description,
            content_type: d.content_type,
            size: d.size,
            sha256: d.sha256,
            version: d.version,
            replaces_document_id: d.replaces_document_id,
            latest: d.is_latest,
            uploaded_at: rfc3339(d.uploaded_at),
            uploaded_by: d.uploaded_by,
            mirrors: d
                .mirrors
                .into_iter()
                .map(|m| MirrorResponse {
                    connector_id: m.connector_id.to_string(),
                    kind: m.kind,
                    url: m.link,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentList {
    pub documents: Vec<DocumentResponse>,
}

fn invalid(code: Code, detail: impl Into<String>) -> ApiError {
    ApiError::unprocessable(code, detail)
}

/// The parts of an upload; other parts are not read.
#[derive(serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The file; its part's `Content-Type` and file name are kept.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    #[schema(schema_with = super::openapi::document_type)]
    document_type: String,
    /// At most 2000 bytes; blank counts as absent.
    #[schema(max_length = 2000, nullable = false, pattern = "^[^\\x00]*$")]
    description: Option<String>,
    /// A `documentId` of this case, the latest version of its document: this upload becomes
    /// its next version.
    #[schema(nullable = false, pattern = "^[^\\x00]*$")]
    replaces_document_id: Option<String>,
}

/// The small text fields of an upload.
async fn text_field(field: multer::Field<'_>) -> ApiResult<String> {
    let text = field
        .text()
        .await
        .map_err(|_| ApiError::bad_request(Code::InvalidBody, "unreadable multipart field"))?;
    if text.len() > 2000 {
        return Err(invalid(
            Code::ValidationFailed,
            "a text field is longer than 2000 bytes",
        ));
    }
    if text.contains('\0') {
        return Err(invalid(
            Code::ValidationFailed,
            "a text field holds a NUL character",
        ));
    }
    Ok(text.trim().to_string())
}

/// `multipart/form-data` with `file`, `documentType`, and optionally `description` and
/// `replacesDocumentId` (a new version of that document).
#[utoipa::path(post, path = "/api/cases/{caseId}/documents", tag = "documents", params(("caseId" = uuid::Uuid, Path)),
    request_body(content_type = "multipart/form-data", content = UploadForm),
    responses((status = 201, body = DocumentResponse), (status = 404, body = ProblemBody), (status = 413, body = ProblemBody),
        (status = 415, body = ProblemBody), (status = 422, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn upload(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, axum::Json<DocumentResponse>)> {
    let case = super::cases::case_id(&raw)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::UnsupportedMediaType,
            "expected Content-Type: multipart/form-data",
        )
    })?;
    let documents = &state.app.documents;
    let mut upload = documents.begin(&actor, &case).await?;
    let limits = multer::SizeLimit::new()
        .whole_stream(documents.max_bytes().saturating_add(64 * 1024))
        .for_field("documentType", 2048)
        .for_field("description", 4096)
        .for_field("replacesDocumentId", 256);
    let constraints = multer::Constraints::new().size_limit(limits);
    let mut multipart =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let mut described = Described::default();
    let read: ApiResult<()> = async {
        while let Some(field) = multipart.next_field().await.map_err(|e| {
            ApiError::bad_request(Code::InvalidBody, format!("malformed multipart body: {e}"))
        })? {
            match field.name().unwrap_or_default() {
                "file" if !upload.has_file() => {
                    let file_name = clean_file_name(field.file_name().unwrap_or("document"));
                    let file_type = field
                        .content_type()
                        .map_or("application/octet-stream".into(), |m| m.to_string());
                    // multer may give up on the body's size before the store counts the
                    // file's bytes: that is the upload being too large, not broken.
                    let bytes = field.map_err(|e| match e {
                        multer::Error::StreamSizeExceeded { .. }
                        | multer::Error::FieldSizeExceeded { .. } => {
                            std::io::Error::new(std::io::ErrorKind::FileTooLarge, e)
                        }
                        other => std::io::Error::other(other),
                    });
                    documents
                        .write_file(&mut upload, file_name, file_type, bytes)
                        .await?;
                }
                "documentType" => described.document_type = Some(text_field(field).await?),
                "description" => {
                    described.description = Some(text_field(field).await?).filter(|d| !d.is_empty())
                }
                "replacesDocumentId" => {
                    described.replaces = Some(text_field(field).await?).filter(|r| !r.is_empty())
                }
                // A second file is not read.
                "file" => {}
                other => {
                    return Err(invalid(
                        Code::ValidationFailed,
                        format!(
                            "unknown part {other:?}: expected file, documentType, description, \
                             replacesDocumentId"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = read {
        documents.abandon(upload).await;
        return Err(e);
    }
    let doc = documents.finish(&actor, upload, described).await?;
    Ok((StatusCode::CREATED, axum::Json(doc.into())))
}

#[utoipa::path(get, path = "/api/cases/{caseId}/documents", tag = "documents", params(("caseId" = uuid::Uuid, Path)),
    responses((status = 200, body = DocumentList), (status = 404, body = ProblemBody)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(raw): Path<String>,
) -> ApiResult<axum::Json<DocumentList>> {
    let case = case_id(&raw)?;
    let docs = state.app.documents.list(&actor, &case).await?;
    Ok(axum::Json(DocumentList {
        documents: docs.into_iter().map(Into::into).collect(),
    }))
}

#[utoipa::path(get, path = "/api/documents/{documentId}", tag = "documents", params(("documentId" = String, Path)),
    responses((status = 200, body = DocumentResponse), (status = 404, body = ProblemBody)), security(("bearer" = [])))]
pub async fn metadata(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<DocumentResponse>> {
    let id = DocumentId::parse(&id).ok_or_else(|| ApiError::not_found("document"))?;
    let doc = state.app.documents.metadata(&actor, &id).await?;
    Ok(axum::Json(doc.into()))
}

/// `attachment; filename="…"; filename*=UTF-8''…` (RFC 6266).
fn disposition(name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() || c == ' ') && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

#[utoipa::path(get, path = "/api/documents/{documentId}/download", tag = "documents", params(("documentId" = String, Path)),
    responses((status = 200, description = "the document's bytes, as the `Content-Type` it was uploaded with", content_type = "*/*"), (status = 404, body = ProblemBody)),
    security(("bearer" = [])))]
pub async fn download(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id =
        crate::domain::DocumentId::parse(&id).ok_or_else(|| ApiError::not_found("document"))?;
    let (doc, reader) = state.app.documents.open(&actor, &id).await?;
    let stream = futures_util::stream::unfold(reader, |mut r| async move {
        match r.next_chunk().await {
            Ok(Some(bytes)) => Some((Ok(bytes), r)),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "reading a stored document failed");
                Some((Err(std::io::Error::other("document unreadable")), r))
            }
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&doc.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(doc.size));
    // The type is the uploader's word: a browser must not sniff it into something it runs.
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CONTENT_DISPOSITION, disposition(&doc.file_name));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    Ok(response)
}
