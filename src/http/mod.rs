//! The HTTP API: router, extractors, problem responses, one module per resource.

mod archive;
mod cases;
mod connectors;
mod console;
mod documents;
mod extract;
mod inbound;
mod inbox;
mod messages;
mod metrics;
mod notes;
mod openapi;
mod operators;
mod ops;
mod preferences;
pub mod problem;
mod providers;
mod rate_limit;
pub mod server;
mod subjects;
mod suppressions;
mod templates;
mod threads;
mod tracking;
mod webhooks;

use crate::domain::code::Code;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Config;
pub use metrics::Metrics;
use problem::problem_response;
pub use rate_limit::RateLimiter;

/// Opens and clicks recorded per client address and minute; more are served, not recorded.
const TRACKING_PER_ADDRESS: u32 = 120;

/// What every handler is given: one reference count to clone per request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    /// The application's services: the only way from a request to the store.
    pub app: crate::app::Services,
    pub config: Arc<Config>,
    pub limiter: Arc<RateLimiter>,
    /// Failed authentications per client address: past the limit, 429 before any token is
    /// looked at.
    pub auth_failures: Arc<RateLimiter>,
    /// Limits and de-duplicates what the tracking links record.
    pub tracking: Arc<tracking::TrackingGuard>,
    pub metrics: Arc<Metrics>,
    pub openapi: axum::body::Bytes,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "parley",
        description = "Communication Center for debt-collection cases."
    ),
    components(schemas(problem::ProblemBody, subjects::ExportQuery))
)]
struct ApiDoc;

/// The API's routes and their OpenAPI description, built from the same handler list so the
/// document can not fall behind the code.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(cases::create_case, cases::list_cases))
        .routes(routes!(cases::get_case, cases::update_case))
        .routes(routes!(cases::create_payment, cases::list_payments))
        .routes(routes!(cases::create_deadline, cases::list_deadlines))
        .routes(routes!(notes::create_note, notes::list_notes))
        .routes(routes!(notes::audit_log))
        .routes(routes!(messages::send_message, messages::list_messages))
        .routes(routes!(messages::preview_message))
        .routes(routes!(archive::export_messages))
        .routes(routes!(messages::get_message))
        .routes(routes!(messages::delivery_report))
        .routes(routes!(
            templates::list_templates,
            templates::create_template
        ))
        .routes(routes!(
            templates::get_template,
            templates::replace_template,
            templates::delete_template
        ))
        .routes(routes!(
            preferences::get_preferences,
            preferences::put_preferences
        ))
        .routes(routes!(connectors::create, connectors::list))
        .routes(routes!(
            connectors::get,
            connectors::update,
            connectors::delete
        ))
        .routes(routes!(connectors::sync))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::delete))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(operators::resend))
        .routes(routes!(operators::recover))
        .routes(routes!(subjects::export))
        .routes(routes!(subjects::erase))
        .routes(routes!(operators::list_jobs))
        .routes(routes!(operators::retry))
        .routes(routes!(operators::cancel))
        .routes(routes!(operators::accept))
        .routes(routes!(operators::reject))
        .routes(routes!(operators::awaiting_review))
        .routes(routes!(inbox::inbox))
        .routes(routes!(inbox::done))
        .routes(routes!(inbox::correct))
        .routes(routes!(documents::upload, documents::list))
        .routes(routes!(documents::metadata))
        .routes(routes!(documents::download))
        .routes(routes!(threads::list_threads))
        .routes(routes!(threads::thread_messages))
        .routes(routes!(inbound::receive_email))
        .routes(routes!(inbound::unmatched))
        .routes(routes!(inbound::assign))
        .routes(routes!(inbound::dismiss))
        .routes(routes!(inbound::dismiss_many))
        .routes(routes!(inbound::receive_sms))
        .routes(routes!(suppressions::list))
        .routes(routes!(suppressions::lift))
        .routes(routes!(providers::sms_status))
        .routes(routes!(providers::email_events))
        .routes(routes!(tracking::open))
        .routes(routes!(tracking::click))
        .routes(routes!(tracking::unsubscribe_page, tracking::unsubscribe))
}

/// The routes and the finished document: what applies to every operation (the problem
/// responses, the security schemes) is added once all operations are in it.
fn api_parts() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (routes, mut api) = api_routes().split_for_parts();
    openapi::ProblemResponses.modify(&mut api);
    openapi::OperationIds.modify(&mut api);
    openapi::SharedSchemas.modify(&mut api);
    openapi::RequestRules.modify(&mut api);
    (routes, api)
}

/// The OpenAPI document, as served at `/openapi.json`.
pub fn openapi_json() -> String {
    let (_, api) = api_parts();
    api.to_pretty_json().unwrap_or_default()
}

pub fn router(config: Arc<Config>, services: crate::app::Services) -> Router {
    let (api, openapi) = api_parts();
    let state = AppState(Arc::new(Shared {
        app: services,
        limiter: Arc::new(RateLimiter::new(config.http.rate_limit_per_minute)),
        tracking: Arc::new(tracking::TrackingGuard::new(TRACKING_PER_ADDRESS)),
        auth_failures: Arc::new(RateLimiter::new(config.http.auth_failures_per_minute)),
        metrics: Arc::new(Metrics::default()),
        openapi: openapi.to_pretty_json().unwrap_or_default().into(),
        config: config.clone(),
    }));
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/docs", get(ops::docs))
        .route("/docs/swagger-ui-bundle.js", get(ops::docs_js))
        .route("/docs/swagger-ui.css", get(ops::docs_css))
        .route("/console", get(console::page))
        .route("/console/", get(console::page))
        .route("/console/{name}", get(console::asset))
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(config.http.max_json_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::observe,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            problem_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::InternalError,
                "the server failed to handle this request",
                Default::default(),
            )
        }))
        .with_state(state)
}

async fn not_found() -> Response {
    problem_response(
        StatusCode::NOT_FOUND,
        Code::NotFound,
        "no such resource",
        Default::default(),
    )
    .into_response()
}

async fn method_not_allowed() -> Response {
    problem_response(
        StatusCode::METHOD_NOT_ALLOWED,
        Code::MethodNotAllowed,
        "this resource does not accept that method",
        Default::default(),
    )
}
