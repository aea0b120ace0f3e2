//! The web console: server-rendered pages under `/console` for the people who run a service
//! (receptionists, team leaders, service managers, privacy officers).
//!
//! # Pages and roles
//!
//! Each page has a title, a nav of what the signed-in role can do, the signed-in name and
//! role, and Sign out. A page of another role answers 403 with a page saying whose it is.
//!
//! | role | pages |
//! |---|---|
//! | `receptionist` | `/console/sessions` (tonight's and the coming week's sessions with free slots), `/console/sessions/{id}` (her practice's bookings on it, cancel; search her practice's patients exactly, then book one into a slot with a reason after seeing name, date of birth and NHS number) |
//! | `team_leader` | `/console/caseload` (the team's caseload; add with reason and expected end, discharge, transfer to another team) |
//! | `service_manager` | `/console/manage/sessions` (the service's sessions, publish one), `/console/users` (the service's users, add one with a role, disable or enable), `/console/devices` (the service's devices, revoke one with a reason), `/console/figures` (per practice and ISO week: SVG charts beside their tables, CSV download) |
//! | `privacy_officer` | `/console/alerts` (break-glass alerts, acknowledge with a note), `/console/access` (who accessed a patient, by NHS number) |
//!
//! The pages call the same functions the API calls ([`crate::bookings`], [`crate::caseloads`],
//! [`crate::accounts`], [`crate::figures`], [`crate::breakglass`], [`crate::access`],
//! [`crate::auth`]): every rule and every audit event is theirs, none is the console's, and
//! the console holds no SQL. Bad input re-renders the form with what was typed and the
//! message next to its field (`aria-invalid`, `aria-describedby`); nothing is changed.
//! A change answers 303 to the page it belongs to (post, redirect, get) with a fixed notice.
//!
//! # Session
//!
//! Sign-in is username, password and the 6-digit code, through [`crate::auth::staff_sign_in`]
//! (its lockout, its refusal of clinicians, its audit). The staff token it issues is the
//! session: it is set in the cookie [`SESSION_COOKIE`] (`__Host-` prefixed: `Secure`, `Path=/`,
//! no `Domain`; `HttpOnly`; `SameSite=Strict`; `Max-Age` the token's lifetime), and every page
//! checks it with [`crate::auth::authenticate_staff`] as the API does a bearer token: an
//! expired, revoked or unknown token, or a disabled user, goes back to the sign-in page. Sign
//! out revokes the token ([`crate::auth::staff_sign_out`], audited) and clears the cookie.
//!
//! # CSRF
//!
//! Every form that changes anything is a POST with a hidden `csrf` field: the HMAC-SHA256 of
//! a fixed label keyed by the session token ([`csrf_token`]), so it cannot be made without
//! the cookie and is checked (constant time) on every POST; a missing or wrong one answers a
//! 403 page and changes nothing. The sign-in form, before any session, uses a double-submit
//! token: a random value in the cookie [`SIGN_IN_COOKIE`] (same attributes) and the same
//! value in the form. Every POST is also refused when `Sec-Fetch-Site` says another site or
//! `Origin` names another host than the request's (`Origin: null`, what a browser sends under
//! `Referrer-Policy: no-referrer`, is no answer either way). `SameSite=Strict` is a further
//! layer.
//!
//! # Headers
//!
//! Every console answer carries `Content-Security-Policy: default-src 'none'; style-src
//! 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'` (no script, no
//! inline style: the one stylesheet is `/console/static/console.css`), `X-Content-Type-Options:
//! nosniff`, `Referrer-Policy: no-referrer` and `Cache-Control: no-store`. Values on the pages
//! are escaped by [`html::Html`], which takes markup only as `&'static str`.
//!
//! Routes here are pages, not API: they are not in `api::ROUTES` or `openapi.json`, but every
//! one is in [`PAGES`] with the role it serves (a test walks it).

// A page refused (403, a form's errors, the sign-in page) is the handler's answer, as axum's
// own rejections are: `Result<Response, Response>` throughout, not a boxed error.
#![allow(clippy::result_large_err)]

pub mod html;
mod manage;
mod privacy;
mod reception;
mod teams;
#[cfg(test)]
mod tests;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::api::AppState;
use crate::auth::{self, AuthFailure};
use crate::bookings::StaffFailure;
use crate::store::UserRow;

use html::Html;

/// The session cookie: the staff token.
pub const SESSION_COOKIE: &str = "__Host-doorstep_console";
/// The sign-in form's double-submit token.
pub const SIGN_IN_COOKIE: &str = "__Host-doorstep_signin";
/// The stylesheet's path.
pub const STYLESHEET: &str = "/console/static/console.css";
/// Largest form body.
pub const FORM_MAX_BYTES: usize = 64 * 1024;

const CSS: &str = include_str!("console.css");

/// Who may open a page: anyone (sign-in), any staff member, or one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Anyone,
    AnyStaff,
    Role(&'static str),
}

const RECEPTIONIST: Audience = Audience::Role(crate::bookings::RECEPTIONIST);
const TEAM_LEADER: Audience = Audience::Role(crate::caseloads::TEAM_LEADER);
const SERVICE_MANAGER: Audience = Audience::Role(crate::bookings::SERVICE_MANAGER);
const PRIVACY_OFFICER: Audience = Audience::Role(auth::PRIVACY_OFFICER);

/// Every console route: (method, path, who may open it).
pub const PAGES: &[(&str, &str, Audience)] = &[
    ("GET", "/console", Audience::AnyStaff),
    ("GET", "/console/sign-in", Audience::Anyone),
    ("POST", "/console/sign-in", Audience::Anyone),
    ("POST", "/console/sign-out", Audience::AnyStaff),
    ("GET", STYLESHEET, Audience::Anyone),
    ("GET", "/console/sessions", RECEPTIONIST),
    ("GET", "/console/sessions/{id}", RECEPTIONIST),
    ("POST", "/console/sessions/{id}/search", RECEPTIONIST),
    ("POST", "/console/sessions/{id}/book", RECEPTIONIST),
    ("POST", "/console/sessions/{id}/cancel", RECEPTIONIST),
    ("GET", "/console/caseload", TEAM_LEADER),
    ("POST", "/console/caseload/add", TEAM_LEADER),
    ("POST", "/console/caseload/discharge", TEAM_LEADER),
    ("POST", "/console/caseload/transfer", TEAM_LEADER),
    ("GET", "/console/manage/sessions", SERVICE_MANAGER),
    ("POST", "/console/manage/sessions", SERVICE_MANAGER),
    ("GET", "/console/users", SERVICE_MANAGER),
    ("POST", "/console/users", SERVICE_MANAGER),
    ("POST", "/console/users/status", SERVICE_MANAGER),
    ("GET", "/console/devices", SERVICE_MANAGER),
    ("POST", "/console/devices/revoke", SERVICE_MANAGER),
    ("GET", "/console/figures", SERVICE_MANAGER),
    ("GET", "/console/figures.csv", SERVICE_MANAGER),
    ("GET", "/console/alerts", PRIVACY_OFFICER),
    ("POST", "/console/alerts/{id}/ack", PRIVACY_OFFICER),
    ("GET", "/console/access", PRIVACY_OFFICER),
    ("POST", "/console/access", PRIVACY_OFFICER),
];

/// The console's routes, with its security headers.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/console", get(home))
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route(STYLESHEET, get(stylesheet))
        .route("/console/sessions", get(reception::sessions))
        .route("/console/sessions/{id}", get(reception::session))
        .route("/console/sessions/{id}/search", post(reception::search))
        .route("/console/sessions/{id}/book", post(reception::book))
        .route("/console/sessions/{id}/cancel", post(reception::cancel))
        .route("/console/caseload", get(teams::caseload))
        .route("/console/caseload/add", post(teams::add))
        .route("/console/caseload/discharge", post(teams::discharge))
        .route("/console/caseload/transfer", post(teams::transfer))
        .route(
            "/console/manage/sessions",
            get(manage::sessions).post(manage::publish),
        )
        .route("/console/users", get(manage::users).post(manage::add_user))
        .route("/console/users/status", post(manage::user_status))
        .route("/console/devices", get(manage::devices))
        .route("/console/devices/revoke", post(manage::revoke))
        .route("/console/figures", get(manage::figures))
        .route("/console/figures.csv", get(manage::figures_csv))
        .route("/console/alerts", get(privacy::alerts))
        .route("/console/alerts/{id}/ack", post(privacy::ack))
        .route(
            "/console/access",
            get(privacy::access).post(privacy::report),
        )
        .layer(DefaultBodyLimit::max(FORM_MAX_BYTES))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

// ---------- cookies and tokens ----------

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for `name=value` with the console's attributes, for `max_age` seconds
/// (0 clears it).
pub fn set_cookie(name: &str, value: &str, max_age: i64) -> String {
    format!("{name}={value}; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}")
}

/// The CSRF token of a session: HMAC-SHA256 keyed by the session token (hex).
pub fn csrf_token(session_token: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(session_token.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(b"doorstep console csrf v1");
    hex::encode(mac.finalize().into_bytes())
}

fn same_bytes(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the system's random source");
    hex::encode(bytes)
}

/// Why a POST is refused before its form is looked at: it came from another site.
fn cross_site(headers: &HeaderMap, uri: &axum::http::Uri) -> Option<&'static str> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Some("the form was sent from another site");
    }
    // Under `Referrer-Policy: no-referrer` a browser sends `Origin: null` with a form of
    // the page itself: it says nothing, and `Sec-Fetch-Site` (above) and the token decide.
    if let Some(origin) = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| *o != "null")
    {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| uri.authority().map(|a| a.to_string()));
        let origin_host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        if origin_host.is_none() || origin_host.map(str::to_owned) != host {
            return Some("the form was sent from another origin");
        }
    }
    None
}

// ---------- who is signed in ----------

/// The staff member signed in to the console.
pub struct Console {
    pub user: UserRow,
    token: String,
    pub csrf: String,
}

impl Console {
    /// Continue only for `role`; else the 403 page saying whose page it is.
    fn require(&self, role: &str) -> Result<(), Response> {
        if self.user.role == role {
            return Ok(());
        }
        let mut body = Html::new();
        body.open("p", &[("class", "problem"), ("id", "forbidden")])
            .text(&format!(
                "This page is for {}. You are signed in as {}, {}: your pages are in the menu above.",
                role_words(role),
                self.user.display_name,
                role_words(&self.user.role)
            ))
            .close("p");
        Err(page(
            StatusCode::FORBIDDEN,
            Some(self),
            "Not your page",
            "",
            None,
            &body,
        ))
    }

    /// The hidden field every POST form carries.
    fn csrf_field(&self, h: &mut Html) {
        h.open(
            "input",
            &[("type", "hidden"), ("name", "csrf"), ("value", &self.csrf)],
        );
    }
}

fn to_sign_in() -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/console/sign-in".to_string()),
            (header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", 0)),
        ],
    )
        .into_response()
}

impl FromRequestParts<AppState> for Console {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(to_sign_in());
        };
        if !token.starts_with("dst_") {
            return Err(to_sign_in());
        }
        let bearer = format!("Bearer {token}");
        match auth::authenticate_staff(state.store.as_ref(), Some(&bearer), Utc::now()).await {
            Ok(auth::StaffCaller::Staff(user)) => Ok(Console {
                user: *user,
                csrf: csrf_token(&token),
                token,
            }),
            Ok(auth::StaffCaller::OtherKind(_)) | Err(AuthFailure::Unauthorized) => {
                Err(to_sign_in())
            }
            Err(AuthFailure::AccountDisabled) => Err(to_sign_in()),
            Err(e) => Err(internal(&e.to_string())),
        }
    }
}

/// A form's fields as sent.
#[derive(Debug, Default, Clone)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// A POST from a signed-in staff member, its origin and CSRF token checked.
pub struct Posted {
    pub who: Console,
    pub fields: Fields,
}

impl FromRequest<AppState> for Posted {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let who = Console::from_request_parts(&mut parts, state).await?;
        if let Some(why) = cross_site(&parts.headers, &parts.uri) {
            return Err(refused(Some(&who), why));
        }
        let request = Request::from_parts(parts, body);
        let fields = match axum::Form::<Vec<(String, String)>>::from_request(request, state).await {
            Ok(axum::Form(f)) => Fields(f),
            Err(e) => {
                return Err(page(
                    StatusCode::BAD_REQUEST,
                    Some(&who),
                    "The form could not be read",
                    "",
                    None,
                    Html::new().element("p", &[("class", "problem")], &e.body_text()),
                ));
            }
        };
        let sent = fields.get("csrf");
        if sent.is_empty() || !same_bytes(sent, &who.csrf) {
            return Err(refused(
                Some(&who),
                "the form's security token is missing or wrong",
            ));
        }
        Ok(Posted { who, fields })
    }
}

/// The 403 page of a refused POST: nothing was changed.
fn refused(who: Option<&Console>, why: &str) -> Response {
    let mut body = Html::new();
    body.open("p", &[("class", "problem"), ("id", "refused")])
        .text(&format!(
            "Nothing was changed: {why}. Open the page again from the menu and send the form from there."
        ))
        .close("p");
    page(
        StatusCode::FORBIDDEN,
        who,
        "Request refused",
        "",
        None,
        &body,
    )
}

fn internal(why: &str) -> Response {
    tracing::error!(error = %why, "console: internal error");
    page(
        StatusCode::INTERNAL_SERVER_ERROR,
        None,
        "Something went wrong",
        "",
        None,
        Html::new().element(
            "p",
            &[("class", "problem")],
            "The server could not complete this. Nothing was changed; try again.",
        ),
    )
}

// ---------- pages ----------

pub fn role_words(role: &str) -> &'static str {
    match role {
        crate::bookings::RECEPTIONIST => "a practice's receptionist",
        crate::caseloads::TEAM_LEADER => "a team leader",
        crate::bookings::SERVICE_MANAGER => "a service manager",
        auth::PRIVACY_OFFICER => "the privacy officer",
        _ => "a clinician",
    }
}

fn role_title(role: &str) -> &'static str {
    match role {
        crate::bookings::RECEPTIONIST => "Receptionist",
        crate::caseloads::TEAM_LEADER => "Team leader",
        crate::bookings::SERVICE_MANAGER => "Service manager",
        auth::PRIVACY_OFFICER => "Privacy officer",
        _ => "Clinician",
    }
}

/// What a role's nav holds: (path, label).
fn nav_of(role: &str) -> &'static [(&'static str, &'static str)] {
    match role {
        crate::bookings::RECEPTIONIST => &[("/console/sessions", "Sessions and bookings")],
        crate::caseloads::TEAM_LEADER => &[("/console/caseload", "Caseload")],
        crate::bookings::SERVICE_MANAGER => &[
            ("/console/manage/sessions", "Sessions"),
            ("/console/users", "Users"),
            ("/console/devices", "Devices"),
            ("/console/figures", "Figures"),
        ],
        auth::PRIVACY_OFFICER => &[
            ("/console/alerts", "Alerts"),
            ("/console/access", "Access report"),
        ],
        _ => &[],
    }
}

/// A whole page: head, skip link, header with who is signed in and Sign out, the role's nav
/// (`current` marked), the title and `notice` above the body.
fn page(
    status: StatusCode,
    who: Option<&Console>,
    title: &str,
    current: &str,
    notice: Option<&str>,
    body: &Html,
) -> Response {
    let mut h = Html::new();
    h.raw("<!doctype html><html lang=\"en-GB\"><head><meta charset=\"utf-8\">")
        .raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
        .open("title", &[])
        .text(&format!("{title} – Doorstep console"))
        .close("title")
        .open("link", &[("rel", "stylesheet"), ("href", STYLESHEET)])
        .raw("</head><body><a class=\"skip\" href=\"#main\">Skip to content</a>")
        .raw("<header class=\"top\"><p class=\"brand\">Doorstep console</p>");
    if let Some(who) = who {
        h.open("p", &[("class", "who"), ("id", "signed-in")])
            .text("Signed in as ")
            .element("strong", &[], &who.user.display_name)
            .text(&format!(" ({}", role_title(&who.user.role)));
        if let Some(ods) = &who.user.practice_ods {
            h.text(&format!(", practice {ods}"));
        }
        h.text(&format!(", {})", who.user.service_id)).close("p");
        h.open(
            "form",
            &[("method", "post"), ("action", "/console/sign-out")],
        );
        who.csrf_field(&mut h);
        h.raw(
            "<button type=\"submit\" class=\"secondary\" id=\"sign-out\">Sign out</button></form>",
        );
    }
    h.raw("</header>");
    if let Some(who) = who {
        h.raw("<nav aria-label=\"Console\"><ul>");
        for (path, label) in nav_of(&who.user.role) {
            h.raw("<li>");
            if *path == current {
                h.open("a", &[("href", path), ("aria-current", "page")]);
            } else {
                h.open("a", &[("href", path)]);
            }
            h.text(label).raw("</a></li>");
        }
        h.raw("</ul></nav>");
    }
    h.raw("<main id=\"main\" tabindex=\"-1\">")
        .element("h1", &[("id", "page-title")], title);
    if let Some(notice) = notice {
        h.open(
            "p",
            &[("class", "notice"), ("id", "notice"), ("role", "status")],
        )
        .text(notice)
        .close("p");
    }
    h.append(body).raw("</main></body></html>");
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        h.into_string(),
    )
        .into_response()
}

/// 303 to `path` (a fixed console path, with `?done=KEY` for its notice).
fn see_other(path: &str) -> Response {
    Redirect::to(path).into_response()
}

/// Field errors of a form: (field name, message).
#[derive(Debug, Default, Clone)]
pub struct Errors {
    fields: Vec<(String, String)>,
    /// A problem of the whole form (not one field's).
    general: Option<String>,
}

impl Errors {
    pub fn none() -> Errors {
        Errors::default()
    }

    pub fn field(name: &str, message: impl Into<String>) -> Errors {
        Errors {
            fields: vec![(name.to_string(), message.into())],
            general: None,
        }
    }

    pub fn general(message: impl Into<String>) -> Errors {
        Errors {
            fields: Vec::new(),
            general: Some(message.into()),
        }
    }

    /// A domain message `field: problem` placed by its field when the form has it.
    pub fn from_message(message: &str, known: &[&str]) -> Errors {
        if let Some((field, problem)) = message.split_once(": ")
            && known.contains(&field)
        {
            return Errors::field(field, problem.to_string());
        }
        Errors::general(message.to_string())
    }

    pub fn of(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.general.is_none()
    }

    /// The whole form's problem, above it.
    fn general_into(&self, h: &mut Html, id: &str) {
        if let Some(m) = &self.general {
            h.open("p", &[("class", "problem"), ("id", id), ("role", "alert")])
                .text(m)
                .close("p");
        }
    }
}

/// Staff failures as field errors (the domain words each `field: problem`).
fn staff_errors(f: &StaffFailure, known: &[&str]) -> Errors {
    match f {
        StaffFailure::Invalid(m) => Errors::from_message(m, known),
        other => Errors::general(format!("Nothing was changed: {other}")),
    }
}

/// One labelled input: its hint and error (if any) described by id, `aria-invalid` when
/// wrong; the value as typed.
pub struct Input<'a> {
    pub id: &'a str,
    pub name: &'static str,
    pub label: &'static str,
    pub kind: &'static str,
    pub value: &'a str,
    pub hint: Option<&'static str>,
    pub required: bool,
    pub extra: &'a [(&'static str, &'a str)],
}

impl<'a> Input<'a> {
    pub fn new(id: &'a str, name: &'static str, label: &'static str, value: &'a str) -> Self {
        Input {
            id,
            name,
            label,
            kind: "text",
            value,
            hint: None,
            required: false,
            extra: &[],
        }
    }
    pub fn kind(mut self, kind: &'static str) -> Self {
        self.kind = kind;
        self
    }
    pub fn hint(mut self, hint: &'static str) -> Self {
        self.hint = Some(hint);
        self
    }
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
    pub fn extra(mut self, extra: &'a [(&'static str, &'a str)]) -> Self {
        self.extra = extra;
        self
    }
}

fn field_frame(
    h: &mut Html,
    id: &str,
    label: &str,
    hint: Option<&str>,
    error: Option<&str>,
) -> String {
    h.raw("<div class=\"field\">")
        .open("label", &[("for", id)])
        .text(label)
        .close("label");
    let mut described = Vec::new();
    if let Some(hint) = hint {
        let hint_id = format!("{id}-hint");
        h.open("p", &[("class", "hint"), ("id", &hint_id)])
            .text(hint)
            .close("p");
        described.push(hint_id);
    }
    if let Some(error) = error {
        let error_id = format!("{id}-error");
        h.open("p", &[("class", "error"), ("id", &error_id)])
            .text(&format!("Error: {error}"))
            .close("p");
        described.push(error_id);
    }
    described.join(" ")
}

/// Write `input` with its label, hint and error.
pub fn input(h: &mut Html, input: Input<'_>, errors: &Errors) {
    let error = errors.of(input.name);
    let described = field_frame(h, input.id, input.label, input.hint, error);
    let mut attrs: Vec<(&'static str, &str)> = vec![
        ("id", input.id),
        ("name", input.name),
        ("type", input.kind),
        ("value", input.value),
    ];
    if !described.is_empty() {
        attrs.push(("aria-describedby", &described));
    }
    if error.is_some() {
        attrs.push(("aria-invalid", "true"));
    }
    if input.required {
        attrs.push(("required", ""));
    }
    attrs.extend_from_slice(input.extra);
    h.open("input", &attrs).raw("</div>");
}

/// A labelled `<select>` of (value, label) options, `chosen` selected.
pub fn select(
    h: &mut Html,
    id: &str,
    name: &'static str,
    label: &'static str,
    options: &[(String, String)],
    chosen: &str,
    errors: &Errors,
) {
    let error = errors.of(name);
    let described = field_frame(h, id, label, None, error);
    let mut attrs: Vec<(&'static str, &str)> = vec![("id", id), ("name", name)];
    if !described.is_empty() {
        attrs.push(("aria-describedby", &described));
    }
    if error.is_some() {
        attrs.push(("aria-invalid", "true"));
    }
    h.open("select", &attrs);
    for (value, text) in options {
        if value == chosen {
            h.open("option", &[("value", value), ("selected", "")]);
        } else {
            h.open("option", &[("value", value)]);
        }
        h.text(text).close("option");
    }
    h.raw("</select></div>");
}

/// A POST form to `action` with the CSRF field; `build` writes its fields and button.
pub fn form(h: &mut Html, who: &Console, action: &str, id: &str, build: impl FnOnce(&mut Html)) {
    h.open(
        "form",
        &[
            ("method", "post"),
            ("action", action),
            ("id", id),
            ("novalidate", ""),
        ],
    );
    who.csrf_field(h);
    build(h);
    h.close("form");
}

/// A table in a region that scrolls by itself on a narrow screen (keyboard-focusable).
pub fn table_open(h: &mut Html, id: &str, caption: &str, headers: &[&'static str]) {
    let label = format!("{caption} (table)");
    h.open(
        "div",
        &[
            ("class", "table-wrap"),
            ("role", "region"),
            ("aria-label", &label),
            ("tabindex", "0"),
        ],
    )
    .open("table", &[("id", id)])
    .element("caption", &[], caption)
    .raw("<thead><tr>");
    for head in headers {
        h.open("th", &[("scope", "col")]).text(head).close("th");
    }
    h.raw("</tr></thead><tbody>");
}

pub fn table_close(h: &mut Html) {
    h.raw("</tbody></table></div>");
}

/// The notice of a finished change, from its fixed key.
fn done_notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "booked" => "Booked. The patient is on the session clinician's list at their next sync.",
        "cancelled" => {
            "Booking cancelled. The patient leaves the clinician's list at their next sync."
        }
        "added" => "Added to the caseload.",
        "discharged" => "Discharged from the caseload.",
        "transferred" => "Transferred to the other team's caseload.",
        "published" => "Session published.",
        "disabled" => "User disabled: they can no longer sign in or sync.",
        "enabled" => "User enabled.",
        "revoked" => {
            "Device revoked: it loses its tokens now and wipes its cache at its next contact."
        }
        "acknowledged" => "Alert acknowledged.",
        _ => return None,
    })
}

#[derive(Debug, serde::Deserialize)]
pub struct Done {
    done: Option<String>,
}

impl Done {
    fn notice(&self) -> Option<&'static str> {
        done_notice(self.done.as_deref())
    }
}

// ---------- home, sign-in, sign-out ----------

async fn home(who: Console) -> Response {
    match nav_of(&who.user.role).first() {
        Some((path, _)) => see_other(path),
        None => to_sign_in(),
    }
}

#[derive(Debug, serde::Deserialize)]
struct SignInQuery {
    signed_out: Option<String>,
}

async fn sign_in_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: axum::extract::Query<SignInQuery>,
) -> Response {
    // Already signed in: home.
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        let bearer = format!("Bearer {token}");
        if let Ok(auth::StaffCaller::Staff(_)) =
            auth::authenticate_staff(state.store.as_ref(), Some(&bearer), Utc::now()).await
        {
            return see_other("/console");
        }
    }
    let notice = query.signed_out.is_some().then_some("You are signed out.");
    sign_in_form(StatusCode::OK, &headers, "", &Errors::none(), notice)
}

fn sign_in_form(
    status: StatusCode,
    headers: &HeaderMap,
    username: &str,
    errors: &Errors,
    notice: Option<&str>,
) -> Response {
    let token = cookie(headers, SIGN_IN_COOKIE).unwrap_or_else(random_hex);
    let mut h = Html::new();
    h.element(
        "p",
        &[],
        "For receptionists, team leaders, service managers and the privacy officer. \
         Clinicians sign in on their device.",
    );
    errors.general_into(&mut h, "sign-in-error");
    h.open(
        "form",
        &[
            ("method", "post"),
            ("action", "/console/sign-in"),
            ("class", "signin"),
            ("id", "sign-in-form"),
            ("novalidate", ""),
        ],
    )
    .open(
        "input",
        &[("type", "hidden"), ("name", "csrf"), ("value", &token)],
    );
    input(
        &mut h,
        Input::new("username", "username", "Username", username)
            .required()
            .extra(&[("autocomplete", "username"), ("autocapitalize", "none")]),
        errors,
    );
    input(
        &mut h,
        Input::new("password", "password", "Password", "")
            .kind("password")
            .required()
            .extra(&[("autocomplete", "current-password")]),
        errors,
    );
    input(
        &mut h,
        Input::new("totp", "totp", "Code from your authenticator", "")
            .hint("6 digits")
            .required()
            .extra(&[
                ("inputmode", "numeric"),
                ("autocomplete", "one-time-code"),
                ("maxlength", "6"),
            ]),
        errors,
    );
    h.raw("<button type=\"submit\" id=\"sign-in\">Sign in</button></form>");
    let mut response = page(status, None, "Sign in", "", notice, &h);
    if let Ok(v) = HeaderValue::from_str(&set_cookie(SIGN_IN_COOKIE, &token, 3600)) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

async fn sign_in(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers.clone();
    if let Some(why) = cross_site(&parts.headers, &parts.uri) {
        return refused(None, why);
    }
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let request = Request::from_parts(parts, body);
    let fields = match axum::Form::<Vec<(String, String)>>::from_request(request, &state).await {
        Ok(axum::Form(f)) => Fields(f),
        Err(_) => return refused(None, "the sign-in form could not be read"),
    };
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    let sent = fields.get("csrf");
    if expected.is_empty() || !same_bytes(sent, &expected) {
        return refused(
            None,
            "the sign-in form had expired or came from elsewhere (open the sign-in page again)",
        );
    }
    let username = fields.get("username").trim();
    let password = fields.get("password");
    let totp = fields.get("totp").trim();
    let mut errors = Errors::none();
    if username.is_empty() {
        errors
            .fields
            .push(("username".into(), "enter your username".into()));
    }
    if password.is_empty() {
        errors
            .fields
            .push(("password".into(), "enter your password".into()));
    }
    if totp.len() != 6 || !totp.bytes().all(|b| b.is_ascii_digit()) {
        errors.fields.push((
            "totp".into(),
            "enter the 6 digits your authenticator shows now".into(),
        ));
    }
    if !errors.is_empty() {
        return sign_in_form(
            StatusCode::UNPROCESSABLE_ENTITY,
            &headers,
            username,
            &errors,
            None,
        );
    }
    let limited = state
        .limits
        .check_address(peer)
        .and_then(|()| state.limits.check_username(username));
    if let Err(l) = limited {
        return sign_in_form(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            username,
            &Errors::general(l.to_string()),
            None,
        );
    }
    match auth::staff_sign_in(
        state.store.as_ref(),
        &state.sign_in,
        username,
        password,
        totp,
        Utc::now(),
    )
    .await
    {
        Ok(signed_in) => {
            let max_age = (signed_in.expires_at - Utc::now()).num_seconds().max(0);
            let mut response = see_other("/console");
            let h = response.headers_mut();
            for c in [
                set_cookie(SESSION_COOKIE, &signed_in.token, max_age),
                set_cookie(SIGN_IN_COOKIE, "", 0),
            ] {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    h.append(header::SET_COOKIE, v);
                }
            }
            response
        }
        Err(failure) => {
            let (status, message) = match &failure {
                AuthFailure::BadCredentials => (
                    StatusCode::UNAUTHORIZED,
                    "The username, password or code is not right. Check them and try again \
                     (the code changes every 30 seconds)."
                        .to_string(),
                ),
                AuthFailure::WrongKindOfSignIn(m) => (
                    StatusCode::FORBIDDEN,
                    format!("This console is not for you: {m}."),
                ),
                AuthFailure::LockedOut(_) | AuthFailure::Limited(_) => {
                    (StatusCode::TOO_MANY_REQUESTS, failure.to_string())
                }
                AuthFailure::AccountDisabled => (StatusCode::FORBIDDEN, failure.to_string()),
                _ => return internal(&failure.to_string()),
            };
            sign_in_form(status, &headers, username, &Errors::general(message), None)
        }
    }
}

async fn sign_out(State(state): State<AppState>, posted: Posted) -> Response {
    match auth::staff_sign_out(state.store.as_ref(), &posted.who.token, Utc::now()).await {
        Ok(()) | Err(AuthFailure::Unauthorized) => {}
        Err(e) => return internal(&e.to_string()),
    }
    let mut response = see_other("/console/sign-in?signed_out=1");
    if let Ok(v) = HeaderValue::from_str(&set_cookie(SESSION_COOKIE, "", 0)) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// Dates as the console shows them (UTC).
pub fn when(t: chrono::DateTime<Utc>) -> String {
    t.format("%a %-d %b %Y %H:%M").to_string()
}

/// An NHS number as it is read aloud and printed: 3, 3 and 4 digits.
pub fn nhs(number: &str) -> String {
    if number.len() == 10 && number.bytes().all(|b| b.is_ascii_digit()) {
        format!("{} {} {}", &number[..3], &number[3..6], &number[6..])
    } else {
        number.to_string()
    }
}

pub fn day(d: chrono::NaiveDate) -> String {
    d.format("%-d %b %Y").to_string()
}
