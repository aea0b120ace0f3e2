//! The HTTP API (axum): routes, the bearer-token extractor, error answers.
//!
//! Every route is listed once in [`ROUTES`]; the router is built from that table and a test
//! checks it against the OpenAPI document served at `/api/v1/openapi.json` (the hand-written
//! `server/openapi.json`). Responses are gzip-compressed when the client accepts it.
//!
//! Errors answer [`ApiError`] JSON with a stable `code`; a pull that needs a rebuild answers
//! 410 with [`ResyncRequired`]. Logs carry user names, device ids and counts, never patient data.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use axum::{Json, Router};
use chrono::{NaiveDate, Utc};
use doorstep_protocol::{
    ApiError, EnrolRequest, ImportProblem, ImportSummary, PullPage, PushRequest, ReauthRequest,
    RefreshRequest, ResyncReason, ResyncRequired,
};
use serde::Deserialize;
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

use crate::access::{self, AccessFailure};
use crate::accounts;
use crate::admin::{self, AdminFailure, Change, ServerSets};
use crate::audit;
use crate::auth::{self, AuthFailure};
use crate::bookings::{self, StaffFailure};
use crate::breakglass::{self, BreakGlassFailure};
use crate::caseloads;
use crate::cursor::{self, CursorKey};
use crate::figures::{self, FiguresFailure};
use crate::import::{self, ImportFailure};
use crate::limits::{Limited, SignInLimits, retry_after_secs};
use crate::notes::{self, AckFailure, PushFailure};
use crate::pull::{self, PullOutcome, PullRequest, user_scope};
use crate::store::{AuditEvent, DeviceRow, Store, StoreError, UserRow};

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Default byte budget of a pull page (uncompressed JSON; about 350 KB on the wire, gzipped).
/// 4 MiB rather than 1: each page costs the server a fixed few milliseconds (auth, scope,
/// cursor, audit) and the device one commit, which writes the b-tree pages it touched again;
/// a quarter as many pages took a 1,000-patient initial sync from 2.7 to 2.0-2.2 s and
/// SQLCipher's overhead on applying them from 16-20% to 8-14% (BENCHMARKS.md, item 19). A page
/// cut off on a poor signal is fetched again whole, so it is not made larger still (8 MiB
/// gained nothing more).
pub const DEFAULT_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Default largest bundle `POST /api/v1/import` accepts.
pub const DEFAULT_IMPORT_MAX_BYTES: usize = 32 * 1024 * 1024;

/// Who may call a route. Clinicians, practice systems, administrators, three staff roles and
/// any staff member,
/// never interchangeable (a valid credential of one kind is refused on another's routes, 403,
/// or 401 where the route does not tell kinds apart), and the public routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// Anyone: health, this API's document, and sign-in (its body carries the credentials).
    Public,
    /// A clinician's device: `Authorization: Bearer` access token ([`Authenticated`]).
    Clinician,
    /// A member practice's source system: HTTP Basic `ODS:SECRET`
    /// ([`auth::authenticate_source`]).
    Practice,
    /// A federation administrator: HTTP Basic `NAME:SECRET` ([`Administrator`]).
    Administrator,
    /// A practice's receptionist: a staff sign-in's bearer token ([`Receptionist`]).
    Receptionist,
    /// A district nursing team leader: a staff sign-in's bearer token ([`TeamLeader`]).
    TeamLeader,
    /// A service's manager: a staff sign-in's bearer token ([`ServiceManager`]).
    ServiceManager,
    /// Any staff member signed in (any of [`auth::STAFF_ROLES`]): a staff sign-in's bearer
    /// token ([`AnyStaff`]).
    Staff,
}

impl Caller {
    /// Whether a credential of kind `kind` is one this route's caller accepts: its own kind,
    /// and for [`Caller::Staff`] each staff role's.
    pub fn accepts(self, kind: Caller) -> bool {
        self == kind
            || (self == Caller::Staff
                && matches!(
                    kind,
                    Caller::Receptionist | Caller::TeamLeader | Caller::ServiceManager
                ))
    }
}

/// Every route the server answers: (method, path, who may call it). A test calls each with
/// every other kind of caller and with none, and expects 401 or 403.
pub const ROUTES: &[(&str, &str, Caller)] = &[
    ("GET", "/healthz", Caller::Public),
    ("GET", "/api/v1/openapi.json", Caller::Public),
    ("POST", "/api/v1/auth/enrol", Caller::Public),
    ("POST", "/api/v1/auth/refresh", Caller::Public),
    ("POST", "/api/v1/auth/reauth", Caller::Public),
    ("GET", "/api/v1/sync/pull", Caller::Clinician),
    ("POST", "/api/v1/sync/push", Caller::Clinician),
    ("POST", "/api/v1/import", Caller::Practice),
    ("GET", "/api/v1/practice/inbox", Caller::Practice),
    ("POST", "/api/v1/practice/inbox/ack", Caller::Practice),
    (
        "PUT",
        "/api/v1/practice/patients/{nhs_number}/dissent",
        Caller::Practice,
    ),
    ("GET", "/api/v1/admin/agreements", Caller::Administrator),
    ("POST", "/api/v1/admin/agreements", Caller::Administrator),
    (
        "GET",
        "/api/v1/admin/agreements/compare",
        Caller::Administrator,
    ),
    (
        "GET",
        "/api/v1/admin/agreements/{id}",
        Caller::Administrator,
    ),
    (
        "PUT",
        "/api/v1/admin/agreements/{id}",
        Caller::Administrator,
    ),
    (
        "POST",
        "/api/v1/admin/agreements/{id}/retire",
        Caller::Administrator,
    ),
    (
        "PUT",
        "/api/v1/admin/patients/{nhs_number}/dissent",
        Caller::Administrator,
    ),
    ("POST", "/api/v1/admin/valuesets", Caller::Administrator),
    ("GET", "/api/v1/admin/devices", Caller::Administrator),
    (
        "POST",
        "/api/v1/admin/devices/{id}/revoke",
        Caller::Administrator,
    ),
    ("POST", "/api/v1/admin/users", Caller::Administrator),
    (
        "POST",
        "/api/v1/admin/users/{username}/disable",
        Caller::Administrator,
    ),
    (
        "POST",
        "/api/v1/admin/users/{username}/enable",
        Caller::Administrator,
    ),
    (
        "POST",
        "/api/v1/admin/users/{username}/unlock",
        Caller::Administrator,
    ),
    (
        "POST",
        "/api/v1/admin/users/{username}/reset-totp",
        Caller::Administrator,
    ),
    ("POST", "/api/v1/break-glass/search", Caller::Clinician),
    ("POST", "/api/v1/break-glass", Caller::Clinician),
    (
        "GET",
        "/api/v1/admin/audit/patients/{nhs_number}",
        Caller::Administrator,
    ),
    ("GET", "/api/v1/admin/alerts", Caller::Administrator),
    (
        "POST",
        "/api/v1/admin/alerts/{id}/ack",
        Caller::Administrator,
    ),
    ("POST", "/api/v1/staff/sign-in", Caller::Public),
    ("POST", "/api/v1/staff/sign-out", Caller::Staff),
    ("POST", "/api/v1/sessions", Caller::ServiceManager),
    ("GET", "/api/v1/sessions", Caller::Receptionist),
    (
        "POST",
        "/api/v1/sessions/{id}/bookings",
        Caller::Receptionist,
    ),
    ("POST", "/api/v1/bookings/search", Caller::Receptionist),
    ("POST", "/api/v1/bookings/{id}/cancel", Caller::Receptionist),
    ("GET", "/api/v1/caseload", Caller::TeamLeader),
    ("POST", "/api/v1/caseload/patients", Caller::TeamLeader),
    (
        "POST",
        "/api/v1/caseload/patients/{nhs_number}/discharge",
        Caller::TeamLeader,
    ),
    (
        "POST",
        "/api/v1/caseload/patients/{nhs_number}/transfer",
        Caller::TeamLeader,
    ),
    ("GET", "/api/v1/figures", Caller::ServiceManager),
    ("GET", "/api/v1/admin/figures", Caller::Administrator),
];

/// Largest administration body (an agreement, a value set).
pub const ADMIN_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Largest push body (a full push of long notes fits).
pub const PUSH_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Largest acknowledgement body.
pub const ACK_MAX_BYTES: usize = 1024 * 1024;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub cursor_key: CursorKey,
    pub page_bytes: usize,
    /// Largest bundle accepted by `POST /api/v1/import` (413 above it).
    pub import_max_bytes: usize,
    /// This node's copy of the server's exclusion sets (checked against the stored
    /// value-set version at every pull).
    pub sets: Arc<ServerSets>,
    /// This node's sign-in rate limits.
    pub limits: Arc<SignInLimits>,
    /// What sign-ins are checked with (Argon2 gate, token lifetimes, TOTP key).
    pub sign_in: Arc<auth::SignIn>,
    /// This node's memo of the agreements' decisions (`crate::decisions`).
    pub decisions: Arc<crate::decisions::DecisionMemo>,
    /// This node's queue of pulls' audit events, appended together (`crate::audit::GroupAppend`).
    pub audit_group: Arc<audit::GroupAppend>,
}

/// Build the router from [`ROUTES`].
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for (method, path, _) in ROUTES {
        let mut route = handler(method, path);
        // The password routes. A refresh carries a 256-bit token and costs one SHA-256, so
        // it is not guessable and needs no quota (a device retrying through a cutting network
        // must not be turned away).
        if matches!(
            *path,
            "/api/v1/auth/enrol" | "/api/v1/auth/reauth" | "/api/v1/staff/sign-in"
        ) {
            route = route.layer(axum::middleware::from_fn_with_state(
                state.clone(),
                limit_by_address,
            ));
        }
        router = router.route(path, route);
    }
    router
        // Fast gzip: pages are large and mostly repetitive JSON, so level 1 already shrinks
        // them several times while costing a fraction of the default level's CPU.
        .layer(CompressionLayer::new().quality(CompressionLevel::Fastest))
        // Requests are traced by their route pattern, never their URI: a path can hold an NHS
        // number (`/api/v1/admin/patients/{nhs_number}/dissent`), and logs carry no patient data.
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<Body>| {
                let route = request
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map_or("(no route)", |m| m.as_str());
                tracing::debug_span!("request", method = %request.method(), route)
            }),
        )
        .with_state(state)
}

fn handler(method: &str, path: &str) -> MethodRouter<AppState> {
    match (method, path) {
        ("GET", "/healthz") => get(healthz),
        ("GET", "/api/v1/openapi.json") => get(openapi),
        ("POST", "/api/v1/auth/enrol") => post(enrol),
        ("POST", "/api/v1/auth/refresh") => post(refresh),
        ("POST", "/api/v1/auth/reauth") => post(reauth),
        ("GET", "/api/v1/sync/pull") => get(pull),
        ("POST", "/api/v1/sync/push") => post(push).layer(DefaultBodyLimit::max(PUSH_MAX_BYTES)),
        ("GET", "/api/v1/practice/inbox") => get(practice_inbox),
        ("POST", "/api/v1/practice/inbox/ack") => {
            post(practice_ack).layer(DefaultBodyLimit::disable())
        }
        // The import reads its own body, up to `import_max_bytes`, after authenticating.
        ("POST", "/api/v1/import") => post(import).layer(DefaultBodyLimit::disable()),
        ("PUT", "/api/v1/practice/patients/{nhs_number}/dissent") => put(practice_dissent),
        ("GET", "/api/v1/admin/agreements") => get(admin_list),
        ("POST", "/api/v1/admin/agreements") => {
            post(admin_create).layer(DefaultBodyLimit::max(ADMIN_MAX_BYTES))
        }
        ("GET", "/api/v1/admin/agreements/compare") => get(admin_compare),
        ("GET", "/api/v1/admin/agreements/{id}") => get(admin_show),
        ("PUT", "/api/v1/admin/agreements/{id}") => {
            put(admin_update).layer(DefaultBodyLimit::max(ADMIN_MAX_BYTES))
        }
        ("POST", "/api/v1/admin/agreements/{id}/retire") => post(admin_retire),
        ("PUT", "/api/v1/admin/patients/{nhs_number}/dissent") => put(admin_dissent),
        ("POST", "/api/v1/admin/valuesets") => {
            post(admin_value_set).layer(DefaultBodyLimit::max(ADMIN_MAX_BYTES))
        }
        ("GET", "/api/v1/admin/devices") => get(admin_devices),
        ("POST", "/api/v1/admin/devices/{id}/revoke") => post(admin_revoke_device),
        ("POST", "/api/v1/admin/users") => post(admin_add_user),
        ("POST", "/api/v1/admin/users/{username}/disable") => post(admin_disable_user),
        ("POST", "/api/v1/admin/users/{username}/enable") => post(admin_enable_user),
        ("POST", "/api/v1/admin/users/{username}/unlock") => post(admin_unlock_user),
        ("POST", "/api/v1/admin/users/{username}/reset-totp") => post(admin_reset_totp),
        ("POST", "/api/v1/break-glass/search") => post(break_glass_search),
        ("POST", "/api/v1/break-glass") => post(break_glass),
        ("GET", "/api/v1/admin/audit/patients/{nhs_number}") => get(admin_access_report),
        ("GET", "/api/v1/admin/alerts") => get(admin_alerts),
        ("POST", "/api/v1/admin/alerts/{id}/ack") => post(admin_ack_alert),
        ("POST", "/api/v1/staff/sign-in") => post(staff_sign_in),
        ("POST", "/api/v1/staff/sign-out") => post(staff_sign_out),
        ("POST", "/api/v1/sessions") => post(publish_session),
        ("GET", "/api/v1/sessions") => get(sessions),
        ("POST", "/api/v1/sessions/{id}/bookings") => post(book),
        ("POST", "/api/v1/bookings/search") => post(booking_search),
        ("POST", "/api/v1/bookings/{id}/cancel") => post(cancel_booking),
        ("GET", "/api/v1/caseload") => get(caseload),
        ("POST", "/api/v1/caseload/patients") => post(caseload_add),
        ("POST", "/api/v1/caseload/patients/{nhs_number}/discharge") => post(caseload_discharge),
        ("POST", "/api/v1/caseload/patients/{nhs_number}/transfer") => post(caseload_transfer),
        ("GET", "/api/v1/figures") => get(service_figures),
        ("GET", "/api/v1/admin/figures") => get(admin_figures),
        _ => unreachable!("every entry of ROUTES has a handler: {method} {path}"),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

/// Counts an auth request against its source address before anything else is done with it.
async fn limit_by_address(
    State(state): State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    match state.limits.check_address(peer) {
        Ok(()) => next.run(request).await,
        Err(limited) => {
            tracing::info!(peer = ?peer.map(|p| p.ip()), "sign-in rate limit: address");
            Failure::from(limited).into_response()
        }
    }
}

/// An error answer.
#[derive(Debug)]
pub enum Failure {
    Api(StatusCode, ApiError),
    /// An error answer with `Retry-After` (seconds).
    Retry(StatusCode, ApiError, u64),
    Resync(ResyncReason),
}

impl Failure {
    fn api(status: StatusCode, code: &str, message: impl Into<String>) -> Failure {
        Failure::Api(
            status,
            ApiError {
                code: code.into(),
                message: message.into(),
            },
        )
    }
}

impl From<Limited> for Failure {
    fn from(l: Limited) -> Failure {
        let message = l.to_string();
        let api = |code: &str| ApiError {
            code: code.into(),
            message,
        };
        match l {
            Limited::TooMany(wait) => Failure::Retry(
                StatusCode::TOO_MANY_REQUESTS,
                api("rate_limited"),
                retry_after_secs(wait),
            ),
            Limited::Busy => Failure::Retry(StatusCode::SERVICE_UNAVAILABLE, api("busy"), 1),
            Limited::UsernameTooLong => Failure::Api(StatusCode::BAD_REQUEST, api("bad_request")),
        }
    }
}

impl From<AuthFailure> for Failure {
    fn from(f: AuthFailure) -> Failure {
        let message = f.to_string();
        match f {
            AuthFailure::BadCredentials => {
                Failure::api(StatusCode::UNAUTHORIZED, "bad_credentials", message)
            }
            AuthFailure::LockedOut(until) => Failure::Retry(
                StatusCode::TOO_MANY_REQUESTS,
                ApiError {
                    code: "locked_out".into(),
                    message,
                },
                (until - Utc::now()).num_seconds().max(1) as u64,
            ),
            AuthFailure::Limited(l) => l.into(),
            AuthFailure::Unauthorized => {
                Failure::api(StatusCode::UNAUTHORIZED, "unauthorized", message)
            }
            AuthFailure::TokenExpired => {
                Failure::api(StatusCode::UNAUTHORIZED, "token_expired", message)
            }
            AuthFailure::DeviceRevoked => {
                Failure::api(StatusCode::FORBIDDEN, "device_revoked", message)
            }
            AuthFailure::AccountDisabled => {
                Failure::api(StatusCode::FORBIDDEN, "account_disabled", message)
            }
            AuthFailure::WrongKindOfSignIn(_) => {
                Failure::api(StatusCode::FORBIDDEN, "wrong_kind_of_sign_in", message)
            }
            AuthFailure::BadRequest(m) => Failure::api(StatusCode::BAD_REQUEST, "bad_request", m),
            AuthFailure::Store(e) => e.into(),
            AuthFailure::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Failure::api(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        tracing::error!(error = %e, "store error");
        Failure::api(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server could not complete the request",
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::Api(status, body) => (status, Json(body)).into_response(),
            Failure::Retry(status, body, secs) => (
                status,
                [(header::RETRY_AFTER, secs.to_string())],
                Json(body),
            )
                .into_response(),
            Failure::Resync(reason) => {
                let message = match reason {
                    ResyncReason::CursorExpired => {
                        "the cursor is older than the change feed keeps: rebuild the cache"
                    }
                    ResyncReason::AccessChanged => {
                        "your role or sharing agreements changed: rebuild the cache"
                    }
                    ResyncReason::CursorInvalid => {
                        "the cursor was not issued by this server for this device: rebuild the cache"
                    }
                };
                (
                    StatusCode::GONE,
                    Json(ResyncRequired {
                        reason,
                        message: message.into(),
                    }),
                )
                    .into_response()
            }
        }
    }
}

/// The device and user behind a valid `Authorization: Bearer` access token.
pub struct Authenticated {
    pub device: DeviceRow,
    pub user: UserRow,
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Failure> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthFailure::Unauthorized)?;
        let (device, user) = auth::authenticate(state.store.as_ref(), token, Utc::now()).await?;
        Ok(Authenticated { device, user })
    }
}

fn json_body<T>(
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, Failure> {
    body.map(|Json(b)| b)
        .map_err(|e| Failure::api(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))
}

/// A member practice's source system sends a FHIR R4 Bundle (HTTP Basic: ODS code and the
/// secret `practice add` printed). Whole or nothing, and only its own patients
/// ([`import::check_practice_owns`]).
async fn import(State(state): State<AppState>, request: Request) -> Result<Response, Failure> {
    let (parts, body) = request.into_parts();
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let ods = auth::authenticate_source(state.store.as_ref(), authorization).await?;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !matches!(media, "application/fhir+json" | "application/json") {
        return Err(Failure::api(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send the bundle as application/fhir+json (Content-Type was {content_type:?})"),
        ));
    }
    let bytes = read_limited(body, state.import_max_bytes).await?;
    let text = String::from_utf8(bytes.to_vec()).map_err(|e| {
        Failure::api(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "the body is not UTF-8 (byte {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    match import::import_from_practice(state.store.as_ref(), &text, &ods).await {
        Ok(report) => {
            tracing::info!(
                practice = %ods,
                patients = report.patients,
                upserted = report.upserted,
                unchanged = report.unchanged,
                deleted = report.deleted,
                "import over https"
            );
            let note = report.registration_note();
            Ok(Json(ImportSummary {
                patients: report.patients,
                upserted: report.upserted,
                unchanged: report.unchanged,
                deleted: report.deleted,
                registered_with_sender: report.registered_with_sender,
                note,
            })
            .into_response())
        }
        Err(ImportFailure::Rejected(e)) => {
            tracing::info!(practice = %ods, entry = ?e.entry, element = %e.element, "import refused");
            Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(ImportProblem {
                    code: "bundle_rejected".into(),
                    message: format!("nothing was imported: {e}"),
                    entry: e.entry,
                    resource: e.resource,
                    element: e.element,
                }),
            )
                .into_response())
        }
        Err(ImportFailure::Store(e)) => Err(e.into()),
    }
}

/// A device pushes its outbox: each item answered on its own, in order
/// ([`notes::push`]); more than `PUSH_MAX_ITEMS` items is a 413 and nothing is looked at.
async fn push(
    State(state): State<AppState>,
    who: Authenticated,
    body: Result<Json<PushRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let request = json_body(body)?;
    match notes::push(
        state.store.as_ref(),
        &who.device,
        &who.user,
        request,
        Utc::now(),
    )
    .await
    {
        Ok(answer) => Ok(Json(answer).into_response()),
        Err(e @ PushFailure::TooManyItems(_)) => Err(Failure::api(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_items",
            e.to_string(),
        )),
        Err(PushFailure::Store(e)) => Err(e.into()),
    }
}

fn source_authorization(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// A practice's system fetches its open notes (HTTP Basic, as the import): a FHIR R4
/// searchset Bundle ([`notes::inbox`]).
async fn practice_inbox(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, Failure> {
    let (parts, _) = request.into_parts();
    let ods = auth::authenticate_source(state.store.as_ref(), source_authorization(&parts)).await?;
    let bundle = notes::inbox(state.store.as_ref(), &ods, Utc::now()).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/fhir+json")],
        bundle.to_string(),
    )
        .into_response())
}

/// A practice's system acknowledges notes of its inbox ([`notes::acknowledge`]): checked
/// whole (400 naming the ack and the field, 409 against a final state), then applied.
async fn practice_ack(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, Failure> {
    let (parts, body) = request.into_parts();
    let ods = auth::authenticate_source(state.store.as_ref(), source_authorization(&parts)).await?;
    let bytes = read_limited(body, ACK_MAX_BYTES).await?;
    match notes::acknowledge(state.store.as_ref(), &ods, &bytes, Utc::now()).await {
        Ok(answer) => Ok(Json(answer).into_response()),
        Err(AckFailure::Invalid(m)) => {
            tracing::info!(practice = %ods, "acknowledgement refused");
            Err(Failure::api(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("nothing was changed: {m}"),
            ))
        }
        Err(AckFailure::Conflict(m)) => Err(Failure::api(
            StatusCode::CONFLICT,
            "conflict",
            format!("nothing was changed: {m}"),
        )),
        Err(AckFailure::Store(e)) => Err(e.into()),
    }
}

/// The request body, or 413 once it passes `limit` bytes (without reading the rest).
async fn read_limited(body: Body, limit: usize) -> Result<axum::body::Bytes, Failure> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Failure::api(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than this server accepts ({limit} bytes); split it"),
        )),
        Err(e) => Err(Failure::api(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the body could not be read: {e}"),
        )),
    }
}

async fn enrol(
    State(state): State<AppState>,
    body: Result<Json<EnrolRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let request = json_body(body)?;
    state.limits.check_username(&request.username)?;
    let answer = auth::enrol(state.store.as_ref(), &state.sign_in, &request, Utc::now()).await?;
    Ok(Json(answer).into_response())
}

async fn reauth(
    State(state): State<AppState>,
    body: Result<Json<ReauthRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let request = json_body(body)?;
    state.limits.check_username(&request.username)?;
    let answer =
        auth::reauthenticate(state.store.as_ref(), &state.sign_in, &request, Utc::now()).await?;
    Ok(Json(answer).into_response())
}

async fn refresh(
    State(state): State<AppState>,
    body: Result<Json<RefreshRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let request = json_body(body)?;
    let answer = auth::refresh(
        state.store.as_ref(),
        &state.sign_in.lifetimes,
        &request,
        Utc::now(),
    )
    .await?;
    Ok(Json(answer).into_response())
}

#[derive(Debug, Deserialize)]
struct PullParams {
    cursor: Option<String>,
}

async fn pull(
    State(state): State<AppState>,
    who: Authenticated,
    params: Result<Query<PullParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    let Query(params) =
        params.map_err(|e| Failure::api(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let now = Utc::now();
    let cursor = match params.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => {
            Some(cursor::open(&state.cursor_key, c, &who.device.id).map_err(Failure::Resync)?)
        }
    };
    let sets = state.sets.current(state.store.as_ref()).await?;
    let scope = user_scope(state.store.as_ref(), &who.user)
        .await?
        .with_sets(sets)
        .with_decisions(state.decisions.clone());
    let no_agreement = scope.agreements.is_empty();
    // The device's offline limit is the strictest of the agreements that let it hold records.
    let max_offline_hours = scope.agreements.iter().map(|a| a.max_offline_hours).min();
    // And its idle lock the shortest of theirs.
    let idle_lock_minutes = scope.agreements.iter().map(|a| a.idle_lock_minutes).min();
    // A record is out of date at the earliest of their thresholds.
    let stale_after_hours = scope.agreements.iter().map(|a| a.stale_after_hours).min();
    let outcome = pull::pull(
        state.store.as_ref(),
        PullRequest {
            device_id: who.device.id.clone(),
            scope,
            cursor,
            now,
            page_bytes: state.page_bytes,
        },
    )
    .await?;
    let page = match outcome {
        PullOutcome::Resync(reason) => {
            tracing::info!(device_id = %who.device.id, ?reason, "pull needs a rebuild");
            return Err(Failure::Resync(reason));
        }
        PullOutcome::Page(page) => *page,
    };
    tracing::info!(
        user = %who.user.username,
        device_id = %who.device.id,
        changes = page.changes.len(),
        added = page.added.len(),
        removed = page.removed.len(),
        more = page.more,
        "pull"
    );
    let page_event = AuditEvent {
        at: now,
        actor: format!("user:{}", who.user.username),
        action: "pull".into(),
        patient_id: None,
        detail: serde_json::json!({
            "device_id": who.device.id,
            "changes": page.changes.len(),
            "added": page.added,
            "removed": page.removed,
            "seq": page.cursor.seq,
        }),
    };
    // Who accessed a patient is an indexed read: one event a patient the page carried, in one
    // transaction with the page's own event.
    let sent = page.carried.iter().map(|c| AuditEvent {
        at: now,
        actor: format!("user:{}", who.user.username),
        action: "record_sent".into(),
        patient_id: Some(c.patient_id.clone()),
        detail: serde_json::json!({
            "device_id": who.device.id,
            "service_id": who.user.service_id,
            "agreements": c.agreements,
            "break_glass": c.break_glass,
            "changes": c.changes,
        }),
    });
    let events: Vec<AuditEvent> = std::iter::once(page_event).chain(sent).collect();
    // Combined with other requests' appends: one transaction for all those queued at once.
    state
        .audit_group
        .append(state.store.clone(), events)
        .await?;
    if no_agreement {
        // Not an error for the device (it holds nothing, as it should), but a refusal the
        // privacy officer can see.
        tracing::info!(user = %who.user.username, "pull without an agreement in force");
        audit::append(
            state.store.as_ref(),
            AuditEvent {
                at: now,
                actor: format!("user:{}", who.user.username),
                action: "access_refused".into(),
                patient_id: None,
                detail: serde_json::json!({
                    "device_id": who.device.id,
                    "reason": format!(
                        "no agreement in force covers role {} of service {}",
                        who.user.role, who.user.service_id
                    ),
                }),
            },
        )
        .await?;
    }
    let body = PullPage {
        cursor: cursor::seal(&state.cursor_key, &page.cursor),
        more: page.more,
        server_time: now,
        changes: page.changes,
        max_offline_hours,
        idle_lock_minutes,
        stale_after_hours,
    };
    Ok(Json(body).into_response())
}

// ---------- administration ----------

/// A federation administrator (HTTP Basic `NAME:SECRET` from `doorstep-server admin add`).
/// A clinician's token or a practice's credential is refused with 403; none or a wrong one
/// with 401.
pub struct Administrator(pub String);

impl FromRequestParts<AppState> for Administrator {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Failure> {
        match auth::authenticate_admin(
            state.store.as_ref(),
            source_authorization(parts),
            Utc::now(),
        )
        .await?
        {
            auth::AdminCaller::Administrator(name) => Ok(Administrator(name)),
            auth::AdminCaller::OtherKind(kind) => Err(Failure::api(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "{kind} cannot administer the federation: use an administrator's \
                     credential (doorstep-server admin add NAME)"
                ),
            )),
        }
    }
}

impl From<AdminFailure> for Failure {
    fn from(f: AdminFailure) -> Failure {
        match f {
            AdminFailure::Invalid(_) => Failure::api(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("nothing was changed: {f}"),
            ),
            AdminFailure::NotFound(m) => Failure::api(StatusCode::NOT_FOUND, "not_found", m),
            AdminFailure::Conflict(m) => Failure::api(
                StatusCode::CONFLICT,
                "conflict",
                format!("nothing was changed: {m}"),
            ),
            AdminFailure::Store(e) => e.into(),
        }
    }
}

/// The body of an agreement change: the agreement (as in an agreement file) and why.
#[derive(Debug, Deserialize)]
struct AgreementChange {
    #[serde(default)]
    reason: String,
    agreement: serde_json::Value,
}

/// A retirement: why, and the day (default: today).
#[derive(Debug, Deserialize)]
struct Retirement {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    on: Option<NaiveDate>,
}

#[derive(Debug, Deserialize)]
struct DissentChange {
    #[serde(default)]
    reason: String,
    dissent: bool,
}

#[derive(Debug, Deserialize)]
struct ValueSetChange {
    #[serde(default)]
    reason: String,
    value_set: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct CompareParams {
    /// Comma-separated agreement ids (default: all).
    ids: Option<String>,
}

/// Parse the `agreement` of a body as an agreement file, naming fields under `agreement.`.
fn agreement_of(
    value: &serde_json::Value,
) -> Result<doorstep_record::agreement::Agreement, Failure> {
    use doorstep_record::agreement::{AgreementFileError, FieldError, parse_agreement_file};
    parse_agreement_file(&value.to_string()).map_err(|e| match e {
        AgreementFileError::Invalid(errors) => AdminFailure::Invalid(
            errors
                .into_iter()
                .map(|e| FieldError {
                    field: if e.field == "(file)" {
                        "agreement".into()
                    } else {
                        format!("agreement.{}", e.field)
                    },
                    problem: e.problem,
                })
                .collect(),
        )
        .into(),
        other => Failure::api(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("nothing was changed: agreement: {other}"),
        ),
    })
}

fn admin_change(who: &Administrator, reason: String) -> Change {
    Change {
        actor: format!("admin:{}", who.0),
        reason,
    }
}

async fn admin_list(
    State(state): State<AppState>,
    _who: Administrator,
) -> Result<Response, Failure> {
    Ok(Json(state.store.all_agreements().await?).into_response())
}

async fn admin_show(
    State(state): State<AppState>,
    _who: Administrator,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let agreement = state
        .store
        .agreement(&id)
        .await?
        .ok_or_else(|| AdminFailure::NotFound(format!("no agreement {id}")))?;
    let versions: Vec<serde_json::Value> = state
        .store
        .agreement_versions(&id)
        .await?
        .into_iter()
        .map(|v| {
            serde_json::json!({
                "version": v.agreement.version,
                "changed_at": v.changed_at,
                "actor": v.actor,
                "reason": v.reason,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "agreement": agreement,
        "in_force": agreement.in_force(Utc::now().date_naive()),
        "versions": versions,
    }))
    .into_response())
}

async fn admin_create(
    State(state): State<AppState>,
    who: Administrator,
    body: Result<Json<AgreementChange>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let body = json_body(body)?;
    let agreement = agreement_of(&body.agreement)?;
    let change = admin_change(&who, body.reason);
    let created =
        admin::create_agreement(state.store.as_ref(), agreement, &change, Utc::now()).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn admin_update(
    State(state): State<AppState>,
    who: Administrator,
    Path(id): Path<String>,
    body: Result<Json<AgreementChange>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let body = json_body(body)?;
    let agreement = agreement_of(&body.agreement)?;
    let change = admin_change(&who, body.reason);
    let updated =
        admin::update_agreement(state.store.as_ref(), &id, agreement, &change, Utc::now()).await?;
    Ok(Json(updated).into_response())
}

async fn admin_retire(
    State(state): State<AppState>,
    who: Administrator,
    Path(id): Path<String>,
    body: Result<Json<Retirement>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let body = json_body(body)?;
    let change = admin_change(&who, body.reason);
    let retired =
        admin::retire_agreement(state.store.as_ref(), &id, body.on, &change, Utc::now()).await?;
    Ok(Json(retired).into_response())
}

async fn admin_compare(
    State(state): State<AppState>,
    _who: Administrator,
    Query(params): Query<CompareParams>,
) -> Result<Response, Failure> {
    let ids: Vec<String> = params
        .ids
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let agreements = admin::agreements_to_compare(state.store.as_ref(), &ids).await?;
    Ok(Json(admin::compare(&agreements, Utc::now().date_naive())).into_response())
}

async fn admin_dissent(
    State(state): State<AppState>,
    who: Administrator,
    Path(nhs_number): Path<String>,
    body: Result<Json<DissentChange>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let body = json_body(body)?;
    let change = admin_change(&who, body.reason);
    admin::set_dissent(
        state.store.as_ref(),
        &nhs_number,
        body.dissent,
        None,
        &change,
        Utc::now(),
    )
    .await?;
    Ok(Json(serde_json::json!({ "dissent": body.dissent })).into_response())
}

// ---------- break-glass and accountability ----------

impl From<BreakGlassFailure> for Failure {
    fn from(f: BreakGlassFailure) -> Failure {
        let message = f.to_string();
        match f {
            BreakGlassFailure::NotAllowed(_) => Failure::api(
                StatusCode::FORBIDDEN,
                "emergency_access_not_allowed",
                message,
            ),
            BreakGlassFailure::Invalid(_) => {
                Failure::api(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
            }
            BreakGlassFailure::NotFound(_) => {
                Failure::api(StatusCode::NOT_FOUND, "not_found", message)
            }
            BreakGlassFailure::Store(e) => e.into(),
        }
    }
}

impl From<AccessFailure> for Failure {
    fn from(f: AccessFailure) -> Failure {
        let message = f.to_string();
        match f {
            AccessFailure::Invalid(_) => {
                Failure::api(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
            }
            AccessFailure::NotFound => Failure::api(StatusCode::NOT_FOUND, "not_found", message),
            AccessFailure::Store(e) => e.into(),
        }
    }
}

/// A clinician searches for a patient not on their list, giving the reason first.
async fn break_glass_search(
    State(state): State<AppState>,
    who: Authenticated,
    body: Result<
        Json<doorstep_protocol::BreakGlassSearch>,
        axum::extract::rejection::JsonRejection,
    >,
) -> Result<Response, Failure> {
    let query = json_body(body)?;
    let scope = user_scope(state.store.as_ref(), &who.user).await?;
    let matches =
        breakglass::search(state.store.as_ref(), &who.user, &scope, &query, Utc::now()).await?;
    Ok(Json(doorstep_protocol::BreakGlassMatches { matches }).into_response())
}

/// A clinician breaks the glass for one patient: on their list for 24 hours, in the open.
async fn break_glass(
    State(state): State<AppState>,
    who: Authenticated,
    body: Result<
        Json<doorstep_protocol::BreakGlassRequest>,
        axum::extract::rejection::JsonRejection,
    >,
) -> Result<Response, Failure> {
    let request = json_body(body)?;
    let scope = user_scope(state.store.as_ref(), &who.user).await?;
    let granted = breakglass::grant(
        state.store.as_ref(),
        &who.user,
        &scope,
        &request.patient_id,
        request.reason,
        request.reason_text.as_deref(),
        Utc::now(),
    )
    .await?;
    Ok(Json(granted).into_response())
}

#[derive(Debug, Deserialize)]
struct AccessReportParams {
    from: Option<NaiveDate>,
    /// `json` (the default) or `html` (the page for the patient).
    format: Option<String>,
}

/// A privacy officer's who-accessed report for one patient.
async fn admin_access_report(
    State(state): State<AppState>,
    who: Administrator,
    Path(nhs_number): Path<String>,
    params: Result<Query<AccessReportParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    let Query(params) =
        params.map_err(|e| Failure::api(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let report = access::audited_report(
        state.store.as_ref(),
        &format!("admin:{}", who.0),
        &nhs_number,
        params.from,
        Utc::now(),
    )
    .await?;
    match params.format.as_deref() {
        None | Some("json") => Ok(Json(report).into_response()),
        Some("html") => Ok((
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            access::to_html(&report, Utc::now()),
        )
            .into_response()),
        Some(other) => Err(Failure::api(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("format: {other:?} is not one of json, html"),
        )),
    }
}

#[derive(Debug, Deserialize)]
struct AlertParams {
    /// Acknowledged alerts too.
    #[serde(default)]
    all: bool,
}

async fn admin_alerts(
    State(state): State<AppState>,
    _who: Administrator,
    params: Result<Query<AlertParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    let Query(params) =
        params.map_err(|e| Failure::api(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let alerts = breakglass::alert_reports(state.store.as_ref(), !params.all).await?;
    Ok(Json(alerts).into_response())
}

#[derive(Debug, Deserialize)]
struct AckAlert {
    note: String,
}

async fn admin_ack_alert(
    State(state): State<AppState>,
    who: Administrator,
    Path(id): Path<i64>,
    body: Result<Json<AckAlert>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let body = json_body(body)?;
    breakglass::ack(
        state.store.as_ref(),
        id,
        &format!("admin:{}", who.0),
        &body.note,
        Utc::now(),
    )
    .await?;
    Ok(Json(serde_json::json!({ "acknowledged": id })).into_response())
}

/// Why an account or device change is made.
#[derive(Debug, Deserialize)]
struct Reason {
    #[serde(default)]
    reason: String,
}

/// A user to add, and why.
#[derive(Debug, Deserialize)]
struct NewUserBody {
    username: String,
    display_name: String,
    role: String,
    service: String,
    /// A receptionist's practice (ODS code).
    #[serde(default)]
    practice: Option<String>,
    #[serde(default)]
    reason: String,
}

async fn admin_devices(
    State(state): State<AppState>,
    _who: Administrator,
) -> Result<Response, Failure> {
    Ok(Json(accounts::devices(state.store.as_ref()).await?).into_response())
}

async fn admin_revoke_device(
    State(state): State<AppState>,
    who: Administrator,
    Path(id): Path<String>,
    body: Result<Json<Reason>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let change = admin_change(&who, json_body(body)?.reason);
    accounts::revoke_device(state.store.as_ref(), &id, &change, Utc::now()).await?;
    Ok(Json(serde_json::json!({ "device_id": id, "revoked": true })).into_response())
}

async fn admin_add_user(
    State(state): State<AppState>,
    who: Administrator,
    body: Result<Json<NewUserBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let body = json_body(body)?;
    let change = admin_change(&who, body.reason);
    let issued = accounts::add_user(
        state.store.as_ref(),
        &state.sign_in.totp_key,
        accounts::NewAccount {
            username: body.username,
            display_name: body.display_name,
            role: body.role,
            service_id: body.service,
            practice_ods: body.practice,
        },
        &change,
        Utc::now(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

async fn admin_disable_user(
    state: State<AppState>,
    who: Administrator,
    username: Path<String>,
    body: Result<Json<Reason>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    admin_set_disabled(state, who, username, body, true).await
}

async fn admin_enable_user(
    state: State<AppState>,
    who: Administrator,
    username: Path<String>,
    body: Result<Json<Reason>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    admin_set_disabled(state, who, username, body, false).await
}

async fn admin_set_disabled(
    State(state): State<AppState>,
    who: Administrator,
    Path(username): Path<String>,
    body: Result<Json<Reason>, axum::extract::rejection::JsonRejection>,
    disabled: bool,
) -> Result<Response, Failure> {
    let change = admin_change(&who, json_body(body)?.reason);
    accounts::set_disabled(
        state.store.as_ref(),
        &username,
        disabled,
        &change,
        Utc::now(),
    )
    .await?;
    Ok(Json(serde_json::json!({ "user": username, "disabled": disabled })).into_response())
}

async fn admin_unlock_user(
    State(state): State<AppState>,
    who: Administrator,
    Path(username): Path<String>,
    body: Result<Json<Reason>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let change = admin_change(&who, json_body(body)?.reason);
    accounts::unlock(state.store.as_ref(), &username, &change, Utc::now()).await?;
    Ok(Json(serde_json::json!({ "user": username, "unlocked": true })).into_response())
}

async fn admin_reset_totp(
    State(state): State<AppState>,
    who: Administrator,
    Path(username): Path<String>,
    body: Result<Json<Reason>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let change = admin_change(&who, json_body(body)?.reason);
    let secret = accounts::reset_totp(
        state.store.as_ref(),
        &state.sign_in.totp_key,
        &username,
        &change,
        Utc::now(),
    )
    .await?;
    Ok(Json(serde_json::json!({ "user": username, "totp_secret": secret })).into_response())
}

/// A practice's system sets dissent for one of its own patients (HTTP Basic, as the import).
async fn practice_dissent(
    State(state): State<AppState>,
    Path(nhs_number): Path<String>,
    request: Request,
) -> Result<Response, Failure> {
    let (parts, body) = request.into_parts();
    let ods = auth::authenticate_source(state.store.as_ref(), source_authorization(&parts)).await?;
    let bytes = read_limited(body, ACK_MAX_BYTES).await?;
    let body: DissentChange = serde_json::from_slice(&bytes).map_err(|e| {
        Failure::api(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("nothing was changed: the body is not a dissent change ({e})"),
        )
    })?;
    let change = Change {
        actor: format!("practice:{ods}"),
        reason: body.reason,
    };
    admin::set_dissent(
        state.store.as_ref(),
        &nhs_number,
        body.dissent,
        Some(&ods),
        &change,
        Utc::now(),
    )
    .await?;
    Ok(Json(serde_json::json!({ "dissent": body.dissent })).into_response())
}

async fn admin_value_set(
    State(state): State<AppState>,
    who: Administrator,
    body: Result<Json<ValueSetChange>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let body = json_body(body)?;
    let change = admin_change(&who, body.reason);
    let report = admin::load_value_set(
        state.store.as_ref(),
        &body.value_set.to_string(),
        &change,
        Utc::now(),
    )
    .await
    .map_err(|f| match f {
        // Fields of the set are named under `value_set.`, as the body holds it.
        AdminFailure::Invalid(errors) => AdminFailure::Invalid(
            errors
                .into_iter()
                .map(|mut e| {
                    if e.field != "reason" && e.field != "value_set" {
                        e.field = format!("value_set.{}", e.field);
                    }
                    e
                })
                .collect(),
        ),
        other => other,
    })?;
    Ok(Json(serde_json::json!({
        "url": report.url,
        "new_set": report.new_set,
        "added_codes": report.added_codes,
        "added_terms": report.added_terms,
        "kept": report.kept,
    }))
    .into_response())
}

// ---------- the people around the clinician: staff ----------

/// A staff member signed in with the role `R` names (a bearer token from
/// `POST /api/v1/staff/sign-in`). Another staff role, a clinician's token, a practice's or an
/// administrator's credential is refused with 403; none or a wrong one with 401.
pub struct StaffCaller<R> {
    pub user: UserRow,
    role: std::marker::PhantomData<R>,
}

/// A staff role a route serves.
pub trait StaffRole {
    /// The role code.
    const ROLE: &'static str;
    /// In words, for the refusal.
    const WORDS: &'static str;
}

pub struct ReceptionistRole;
pub struct TeamLeaderRole;
pub struct ServiceManagerRole;

impl StaffRole for ReceptionistRole {
    const ROLE: &'static str = bookings::RECEPTIONIST;
    const WORDS: &'static str = "a practice's receptionist";
}
impl StaffRole for TeamLeaderRole {
    const ROLE: &'static str = caseloads::TEAM_LEADER;
    const WORDS: &'static str = "a team leader";
}
impl StaffRole for ServiceManagerRole {
    const ROLE: &'static str = bookings::SERVICE_MANAGER;
    const WORDS: &'static str = "a service manager";
}

pub type Receptionist = StaffCaller<ReceptionistRole>;
pub type TeamLeader = StaffCaller<TeamLeaderRole>;
pub type ServiceManager = StaffCaller<ServiceManagerRole>;

impl<R: StaffRole + Send + Sync> FromRequestParts<AppState> for StaffCaller<R> {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Failure> {
        let refuse = |what: &str| {
            Failure::api(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{what} cannot do this: it needs {} signed in", R::WORDS),
            )
        };
        match auth::authenticate_staff(
            state.store.as_ref(),
            source_authorization(parts),
            Utc::now(),
        )
        .await?
        {
            auth::StaffCaller::Staff(user) if user.role == R::ROLE => Ok(StaffCaller {
                user: *user,
                role: std::marker::PhantomData,
            }),
            auth::StaffCaller::Staff(user) => Err(refuse(&format!("a {}", user.role))),
            auth::StaffCaller::OtherKind(kind) => Err(refuse(kind)),
        }
    }
}

/// Any staff member signed in, with the token they presented (so that it can be signed out).
/// A clinician's token, a practice's or an administrator's credential is refused with 403;
/// none or a wrong one with 401.
pub struct AnyStaff {
    pub user: UserRow,
    pub token: String,
}

impl FromRequestParts<AppState> for AnyStaff {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Failure> {
        let authorization = source_authorization(parts);
        match auth::authenticate_staff(state.store.as_ref(), authorization, Utc::now()).await? {
            auth::StaffCaller::Staff(user) => Ok(AnyStaff {
                user: *user,
                token: authorization
                    .and_then(|a| a.split_once(' '))
                    .map(|(_, t)| t.trim().to_string())
                    .unwrap_or_default(),
            }),
            auth::StaffCaller::OtherKind(kind) => Err(Failure::api(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{kind} cannot do this: it needs a staff member signed in"),
            )),
        }
    }
}

impl From<StaffFailure> for Failure {
    fn from(f: StaffFailure) -> Failure {
        let message = f.to_string();
        match f {
            StaffFailure::Invalid(_) => Failure::api(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("nothing was changed: {message}"),
            ),
            StaffFailure::Refused(_) => Failure::api(StatusCode::FORBIDDEN, "refused", message),
            StaffFailure::NotFound(_) => Failure::api(StatusCode::NOT_FOUND, "not_found", message),
            StaffFailure::Conflict(_) => Failure::api(
                StatusCode::CONFLICT,
                "conflict",
                format!("nothing was changed: {message}"),
            ),
            StaffFailure::Store(e) => e.into(),
        }
    }
}

impl From<FiguresFailure> for Failure {
    fn from(f: FiguresFailure) -> Failure {
        match f {
            FiguresFailure::Invalid(m) => {
                Failure::api(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m)
            }
            FiguresFailure::Store(e) => e.into(),
        }
    }
}

/// A JSON body, or 422 naming what is wrong with it (the console shows it by the field).
fn staff_body<T>(
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, Failure> {
    body.map(|Json(b)| b).map_err(|e| {
        let status = match e {
            axum::extract::rejection::JsonRejection::JsonDataError(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            _ => StatusCode::BAD_REQUEST,
        };
        Failure::api(
            status,
            "invalid",
            format!("nothing was changed: {}", e.body_text()),
        )
    })
}

#[derive(Debug, Deserialize)]
struct StaffSignInBody {
    username: String,
    password: String,
    totp: String,
}

async fn staff_sign_in(
    State(state): State<AppState>,
    body: Result<Json<StaffSignInBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let body = json_body(body)?;
    state.limits.check_username(&body.username)?;
    let signed_in = auth::staff_sign_in(
        state.store.as_ref(),
        &state.sign_in,
        &body.username,
        &body.password,
        &body.totp,
        Utc::now(),
    )
    .await?;
    Ok(Json(signed_in).into_response())
}

/// A staff member signs out: the token stops working at once ([`auth::staff_sign_out`]).
async fn staff_sign_out(State(state): State<AppState>, who: AnyStaff) -> Result<Response, Failure> {
    auth::staff_sign_out(state.store.as_ref(), &who.token, Utc::now()).await?;
    Ok(Json(serde_json::json!({ "signed_out": true })).into_response())
}

async fn publish_session(
    State(state): State<AppState>,
    who: ServiceManager,
    body: Result<Json<bookings::NewSession>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let body = staff_body(body)?;
    let session =
        bookings::publish_session(state.store.as_ref(), &who.user, body, Utc::now()).await?;
    Ok((StatusCode::CREATED, Json(session)).into_response())
}

#[derive(Debug, Deserialize)]
struct SessionsParams {
    /// First day (default today).
    from: Option<NaiveDate>,
    /// Last day, included (default a week after `from`).
    to: Option<NaiveDate>,
}

async fn sessions(
    State(state): State<AppState>,
    who: Receptionist,
    params: Result<Query<SessionsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    let Query(params) = params
        .map_err(|e| Failure::api(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.body_text()))?;
    let now = Utc::now();
    let from = params.from.unwrap_or(now.date_naive());
    let to = params.to.unwrap_or(from + chrono::Duration::days(7));
    if to < from || (to - from).num_days() > 62 {
        return Err(Failure::api(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "to: on or after from, and at most 62 days later",
        ));
    }
    let day = |d: NaiveDate| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let sessions = bookings::sessions_for(
        state.store.as_ref(),
        &who.user,
        day(from),
        day(to + chrono::Duration::days(1)),
        now,
    )
    .await?;
    Ok(Json(serde_json::json!({ "sessions": sessions })).into_response())
}

async fn booking_search(
    State(state): State<AppState>,
    who: Receptionist,
    body: Result<Json<bookings::PatientSearch>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let query = staff_body(body)?;
    let matches = bookings::search(state.store.as_ref(), &who.user, &query, Utc::now()).await?;
    Ok(Json(serde_json::json!({ "matches": matches })).into_response())
}

async fn book(
    State(state): State<AppState>,
    who: Receptionist,
    Path(id): Path<String>,
    body: Result<Json<bookings::BookRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let request = staff_body(body)?;
    let booking =
        bookings::book(state.store.as_ref(), &who.user, &id, &request, Utc::now()).await?;
    Ok((StatusCode::CREATED, Json(booking)).into_response())
}

async fn cancel_booking(
    State(state): State<AppState>,
    who: Receptionist,
    Path(id): Path<String>,
    body: Result<Json<Reason>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let body = staff_body(body)?;
    let id: i64 = id.parse().map_err(|_| {
        Failure::api(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no booking {id:?}"),
        )
    })?;
    bookings::cancel(
        state.store.as_ref(),
        &who.user,
        id,
        &body.reason,
        Utc::now(),
    )
    .await?;
    Ok(Json(serde_json::json!({ "booking_id": id, "cancelled": true })).into_response())
}

async fn caseload(State(state): State<AppState>, who: TeamLeader) -> Result<Response, Failure> {
    let caseload = caseloads::caseload(state.store.as_ref(), &who.user, Utc::now()).await?;
    Ok(Json(caseload).into_response())
}

async fn caseload_add(
    State(state): State<AppState>,
    who: TeamLeader,
    body: Result<Json<caseloads::Addition>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let addition = staff_body(body)?;
    let entry = caseloads::add(state.store.as_ref(), &who.user, &addition, Utc::now()).await?;
    Ok((StatusCode::CREATED, Json(entry)).into_response())
}

async fn caseload_discharge(
    State(state): State<AppState>,
    who: TeamLeader,
    Path(nhs_number): Path<String>,
    body: Result<Json<Reason>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let body = staff_body(body)?;
    caseloads::discharge(
        state.store.as_ref(),
        &who.user,
        &nhs_number,
        &body.reason,
        Utc::now(),
    )
    .await?;
    Ok(Json(serde_json::json!({ "discharged": true })).into_response())
}

#[derive(Debug, Deserialize)]
struct TransferBody {
    #[serde(default)]
    to_team: String,
    #[serde(default)]
    reason: String,
}

async fn caseload_transfer(
    State(state): State<AppState>,
    who: TeamLeader,
    Path(nhs_number): Path<String>,
    body: Result<Json<TransferBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    let body = staff_body(body)?;
    caseloads::transfer(
        state.store.as_ref(),
        &who.user,
        &nhs_number,
        &body.to_team,
        &body.reason,
        Utc::now(),
    )
    .await?;
    Ok(Json(serde_json::json!({ "transferred_to": body.to_team.trim() })).into_response())
}

#[derive(Debug, Deserialize)]
struct FiguresParams {
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    /// `json` (the default) or `csv`.
    format: Option<String>,
}

async fn figures_answer(
    state: &AppState,
    service: Option<&str>,
    params: Result<Query<FiguresParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    let Query(params) = params
        .map_err(|e| Failure::api(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.body_text()))?;
    let csv = match params.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(Failure::api(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("format: {other:?} is not one of json, csv"),
            ));
        }
    };
    let rows = figures::figures(
        state.store.as_ref(),
        service,
        params.from,
        params.to,
        Utc::now().date_naive(),
    )
    .await?;
    if csv {
        return Ok((
            [(
                header::CONTENT_TYPE,
                "text/csv; charset=utf-8; header=present",
            )],
            figures::to_csv(&rows),
        )
            .into_response());
    }
    Ok(Json(serde_json::json!({ "rows": rows })).into_response())
}

/// A service manager's figures: their own service's.
async fn service_figures(
    State(state): State<AppState>,
    who: ServiceManager,
    params: Result<Query<FiguresParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    figures_answer(&state, Some(&who.user.service_id), params).await
}

/// A federation administrator's figures: every service's.
async fn admin_figures(
    State(state): State<AppState>,
    _who: Administrator,
    params: Result<Query<FiguresParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    figures_answer(&state, None, params).await
}

/// The (method, path) pairs the OpenAPI document declares.
pub fn documented_routes() -> Vec<(String, String)> {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON");
    let mut out = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for method in ["get", "post", "put", "patch", "delete"] {
                if item.get(method).is_some() {
                    out.push((method.to_uppercase(), path.clone()));
                }
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::store::sqlite::SqliteStore;

    fn app() -> (Router, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let app = router(AppState {
            store,
            cursor_key: CursorKey::from_bytes([1; 32]),
            page_bytes: DEFAULT_PAGE_BYTES,
            import_max_bytes: DEFAULT_IMPORT_MAX_BYTES,
            sets: Arc::new(ServerSets::new()),
            decisions: Arc::new(crate::decisions::DecisionMemo::new()),
            audit_group: Arc::default(),
            limits: Arc::new(SignInLimits::new(Default::default())),
            sign_in: Arc::new(auth::SignIn {
                gate: crate::limits::Argon2Gate::of(&Default::default()),
                lifetimes: Default::default(),
                totp_key: Arc::new(crate::totp_key::TotpKey::from_bytes([2; 32], "test".into())),
            }),
        });
        (app, dir)
    }

    async fn call(app: &Router, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        app.clone()
            .oneshot(request.body(Body::from("{}")).unwrap())
            .await
            .unwrap()
    }

    async fn body_bytes(response: Response) -> Vec<u8> {
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec()
    }

    /// The caller each route checks is the one its document names: no security for public
    /// routes, `bearer`, `practiceSource` or `administrator` for the others.
    #[test]
    fn every_route_documents_the_caller_it_checks() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        for (method, path, caller) in ROUTES {
            let security = &doc["paths"][path][method.to_lowercase()]["security"];
            let named: Vec<&str> = security
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} documents no security"))
                .iter()
                .flat_map(|s| s.as_object().unwrap().keys().map(String::as_str))
                .collect();
            let expected: &[&str] = match caller {
                Caller::Public => &[],
                Caller::Clinician => &["bearer"],
                Caller::Practice => &["practiceSource"],
                Caller::Administrator => &["administrator"],
                Caller::Receptionist => &["receptionist"],
                Caller::TeamLeader => &["teamLeader"],
                Caller::ServiceManager => &["serviceManager"],
                Caller::Staff => &["staff"],
            };
            assert_eq!(named, expected, "{method} {path}");
        }
    }

    #[tokio::test]
    async fn every_route_is_documented_and_every_documented_route_is_served() {
        let mut table: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        table.sort();
        assert_eq!(documented_routes(), table);
        let (app, _dir) = app();
        for (method, path) in documented_routes() {
            let response = call(
                &app,
                &method,
                &path,
                &[("content-type", "application/json")],
            )
            .await;
            let status = response.status();
            assert!(
                status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} answered {status}"
            );
        }
        // The check can fail: a route outside the table is not served.
        assert_eq!(
            call(&app, "GET", "/api/v1/admin", &[]).await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(&app, "GET", "/api/v1/auth/enrol", &[]).await.status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    fn collect_refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    if k == "$ref" {
                        out.push(v.as_str().unwrap().to_string());
                    } else {
                        collect_refs(v, out);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn openapi_document_is_3_1_with_resolvable_refs_and_every_wire_type() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r.strip_prefix('#').expect("local ref");
            assert!(doc.pointer(pointer).is_some(), "unresolved {r}");
        }
        for name in [
            "EnrolRequest",
            "EnrolResponse",
            "UserInfo",
            "RefreshRequest",
            "TokenResponse",
            "PullPage",
            "Change",
            "ListEntry",
            "ListKind",
            "PatientHeader",
            "WithheldCount",
            "ResyncRequired",
            "ResyncReason",
            "ApiError",
            "ReauthRequest",
            "PushRequest",
            "PushItem",
            "NoteBody",
            "NoteProblem",
            "PushResponse",
            "PushResult",
            "PushOutcome",
            "FirstOutcome",
            "AckRequest",
            "Ack",
            "AckStatus",
            "AckResponse",
        ] {
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "no schema for {name}"
            );
        }
        // Every op of the Change enum is in the discriminator mapping.
        let mapping = doc["components"]["schemas"]["Change"]["discriminator"]["mapping"]
            .as_object()
            .unwrap();
        for change in [
            doorstep_protocol::Change::PatientRemoved {
                patient_id: "x".into(),
            },
            doorstep_protocol::Change::Withheld {
                patient_id: "x".into(),
                counts: vec![],
            },
            doorstep_protocol::Change::ListChanged {
                patient_id: "x".into(),
                entries: vec![],
            },
            doorstep_protocol::Change::Delete {
                patient_id: "x".into(),
                resource_type: "Condition".into(),
                resource_id: "c".into(),
            },
            doorstep_protocol::Change::Upsert {
                patient_id: "x".into(),
                resource: serde_json::json!({}),
            },
        ] {
            let op = serde_json::to_value(&change).unwrap()["op"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(mapping.contains_key(&op), "op {op} not documented");
        }
        assert!(mapping.contains_key("patient_added"));
    }

    #[tokio::test]
    async fn healthz_answers_ok() {
        let (app, _dir) = app();
        let response = call(&app, "GET", "/healthz", &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body_bytes(response).await, b"ok");
    }

    #[tokio::test]
    async fn pull_needs_a_valid_bearer_token() {
        let (app, _dir) = app();
        for headers in [
            vec![],
            vec![("authorization", "Bearer dsa_nonsense")],
            vec![("authorization", "Basic abc")],
        ] {
            let response = call(&app, "GET", "/api/v1/sync/pull", &headers).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            let body: ApiError = serde_json::from_slice(&body_bytes(response).await).unwrap();
            assert_eq!(body.code, "unauthorized");
        }
    }

    #[tokio::test]
    async fn malformed_enrol_is_a_bad_request() {
        let (app, _dir) = app();
        let response = call(
            &app,
            "POST",
            "/api/v1/auth/enrol",
            &[("content-type", "application/json")],
        )
        .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: ApiError = serde_json::from_slice(&body_bytes(response).await).unwrap();
        assert_eq!(body.code, "bad_request");
    }

    #[tokio::test]
    async fn responses_are_gzipped_when_accepted() {
        let (app, _dir) = app();
        let response = call(
            &app,
            "GET",
            "/api/v1/openapi.json",
            &[("accept-encoding", "gzip")],
        )
        .await;
        assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
        let compressed = body_bytes(response).await;
        let mut text = String::new();
        flate2::read::GzDecoder::new(compressed.as_slice())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, OPENAPI_JSON);
        let plain = call(&app, "GET", "/api/v1/openapi.json", &[]).await;
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
    }
}
