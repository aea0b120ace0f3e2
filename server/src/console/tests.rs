//! The console in process: the router over a seeded small demo federation, requests sent as
//! a browser would (cookies, form bodies), answers read as the browser would.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::Utc;
use tower::ServiceExt;

use super::*;
use crate::admin::ServerSets;
use crate::api::{self, AppState};
use crate::cursor::CursorKey;
use crate::demo::{self, DemoSpec, DemoUser};
use crate::limits::SignInLimits;
use crate::store::{self, DatabaseUrl, Store};
use crate::totp_key::TotpKey;

struct Fixture {
    app: Router,
    store: Arc<dyn Store>,
    users: Vec<DemoUser>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let database = DatabaseUrl::in_data_dir(dir.path());
    {
        let (data, database) = (dir.path().to_path_buf(), database.clone());
        let spec = DemoSpec::small(5, Utc::now().date_naive());
        tokio::task::spawn_blocking(move || demo::seed_with_database(&data, &database, &spec))
            .await
            .unwrap()
            .unwrap();
    }
    let store = store::open(&database).await.unwrap();
    let state = AppState {
        store: store.clone(),
        cursor_key: CursorKey::from_bytes([1; 32]),
        page_bytes: api::DEFAULT_PAGE_BYTES,
        import_max_bytes: api::DEFAULT_IMPORT_MAX_BYTES,
        sets: Arc::new(ServerSets::new()),
        decisions: Arc::new(crate::decisions::DecisionMemo::new()),
        audit_group: Arc::default(),
        limits: Arc::new(SignInLimits::new(Default::default())),
        sign_in: Arc::new(auth::SignIn {
            gate: crate::limits::Argon2Gate::of(&Default::default()),
            lifetimes: Default::default(),
            totp_key: Arc::new(TotpKey::load_or_create(dir.path()).unwrap()),
        }),
    };
    Fixture {
        app: api::router(state.clone()).merge(router(state)),
        store,
        users: demo::read_demo_users(dir.path()).unwrap(),
        _dir: dir,
    }
}

/// Name-value pairs: a form's fields or a request's headers.
type Pairs<'a> = &'a [(&'a str, &'a str)];

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Answer {
    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .map_or("", |v| v.to_str().unwrap())
    }

    /// The value of the hidden `csrf` field of the page.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a form with a csrf field");
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

fn encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            let enc = |s: &str| {
                s.bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                            (b as char).to_string()
                        }
                        b' ' => "+".into(),
                        _ => format!("%{b:02X}"),
                    })
                    .collect::<String>()
            };
            format!("{}={}", enc(k), enc(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

async fn send(
    app: &Router,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&[(&str, &str)]>,
    extra: &[(&str, &str)],
) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(c) = cookie {
        request = request.header(header::COOKIE, c);
    }
    for (k, v) in extra {
        request = request.header(*k, *v);
    }
    let body = match form {
        Some(f) => {
            request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            Body::from(encode(f))
        }
        None => Body::empty(),
    };
    let response = app
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn cookie_value(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap()
}

impl Fixture {
    fn user(&self, name: &str) -> &DemoUser {
        self.users.iter().find(|u| u.username == name).unwrap()
    }

    /// Sign `name` in through the form: the answer and the session cookie (`name=value`).
    async fn sign_in_answer(&self, name: &str) -> (Answer, Option<String>) {
        let form_page = send(&self.app, "GET", "/console/sign-in", None, None, &[]).await;
        assert_eq!(form_page.status, StatusCode::OK);
        let pre = form_page
            .set_cookies()
            .into_iter()
            .find(|c| c.starts_with(SIGN_IN_COOKIE))
            .expect("the sign-in cookie");
        let user = self.user(name);
        let code = auth::totp_code(&user.totp_secret, Utc::now().timestamp() as u64).unwrap();
        let csrf = form_page.csrf();
        let answer = send(
            &self.app,
            "POST",
            "/console/sign-in",
            Some(cookie_value(&pre)),
            Some(&[
                ("csrf", &csrf),
                ("username", name),
                ("password", &user.password),
                ("totp", &code),
            ]),
            &[],
        )
        .await;
        let session = answer
            .set_cookies()
            .into_iter()
            .find(|c| c.starts_with(&format!("{SESSION_COOKIE}=dst_")))
            .map(|c| cookie_value(&c).to_string());
        (answer, session)
    }

    async fn sign_in(&self, name: &str) -> String {
        let (answer, session) = self.sign_in_answer(name).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        session.expect("a session cookie")
    }

    async fn audit_len(&self) -> usize {
        self.store.audit_rows().await.unwrap().len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_sets_an_exact_session_cookie_and_sign_out_revokes_the_token() {
    let f = fixture().await;
    let (answer, session) = f.sign_in_answer("manager.demo").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.location(), "/console");
    let set = answer
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with(&format!("{SESSION_COOKIE}=dst_")))
        .unwrap();
    let (value, attributes) = set.split_once("; ").unwrap();
    // The token's lifetime, give or take the second the request took.
    let max_age = auth::STAFF_TTL.num_seconds();
    assert!(
        attributes == format!("Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}")
            || attributes
                == format!(
                    "Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
                    max_age - 1
                ),
        "{set}"
    );
    assert!(!set.contains("Domain"), "a __Host- cookie names no domain");
    let session = session.unwrap();
    assert_eq!(session, value);

    let home = send(&f.app, "GET", "/console", Some(&session), None, &[]).await;
    assert_eq!(home.status, StatusCode::SEE_OTHER);
    assert_eq!(home.location(), "/console/manage/sessions");
    let page = send(&f.app, "GET", "/console/devices", Some(&session), None, &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Tomasz Wójcik"), "{}", page.body);
    assert!(page.body.contains("Hub laptop (demo history)"));
    for (name, value) in [
        (
            "content-security-policy",
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(page.headers[name], value, "{name}");
    }

    // Sign out: the cookie is cleared and the token stops, for the console and the API.
    let token = session.split_once('=').unwrap().1.to_string();
    let before = f.audit_len().await;
    let out = send(
        &f.app,
        "POST",
        "/console/sign-out",
        Some(&session),
        Some(&[("csrf", &page.csrf())]),
        &[],
    )
    .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);
    assert_eq!(out.location(), "/console/sign-in?signed_out=1");
    assert!(out.set_cookies().contains(&format!(
        "{SESSION_COOKIE}=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
    )));
    let rows = f.store.audit_rows().await.unwrap();
    assert_eq!(rows.len(), before + 1);
    assert_eq!(rows.last().unwrap().event.action, "staff_sign_out");
    let again = send(&f.app, "GET", "/console/devices", Some(&session), None, &[]).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    assert_eq!(again.location(), "/console/sign-in");
    let api = send(
        &f.app,
        "GET",
        "/api/v1/figures",
        None,
        None,
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_sign_out_revokes_the_staff_token() {
    let f = fixture().await;
    let session = f.sign_in("reception.demo").await;
    let token = session.split_once('=').unwrap().1.to_string();
    let bearer = format!("Bearer {token}");
    let sessions = send(
        &f.app,
        "GET",
        "/api/v1/sessions",
        None,
        None,
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(sessions.status, StatusCode::OK);
    let out = send(
        &f.app,
        "POST",
        "/api/v1/staff/sign-out",
        None,
        None,
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.body);
    assert!(out.body.contains("\"signed_out\":true"));
    for (method, path) in [
        ("GET", "/api/v1/sessions"),
        ("POST", "/api/v1/staff/sign-out"),
    ] {
        let after = send(
            &f.app,
            method,
            path,
            None,
            None,
            &[("authorization", &bearer)],
        )
        .await;
        assert_eq!(after.status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    // And the console's session with it.
    let page = send(
        &f.app,
        "GET",
        "/console/sessions",
        Some(&session),
        None,
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_without_or_with_a_wrong_csrf_token_or_from_another_site_is_refused_and_changes_nothing()
 {
    let f = fixture().await;
    let session = f.sign_in("manager.demo").await;
    let page = send(&f.app, "GET", "/console/devices", Some(&session), None, &[]).await;
    let device = f
        .store
        .devices()
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.name == "Hub laptop (demo history)")
        .unwrap();
    let path = "/console/devices/revoke";
    let id = device.id.as_str();
    let before = f.audit_len().await;
    let good = page.csrf();
    let wrong = csrf_token("dst_someone_else");
    // (the form's fields, the request's headers)
    let cases: [(Pairs, Pairs); 5] = [
        (&[("device_id", id), ("reason", "lost on a visit")], &[]),
        (
            &[
                ("csrf", ""),
                ("device_id", id),
                ("reason", "lost on a visit"),
            ],
            &[],
        ),
        (
            &[
                ("csrf", &wrong),
                ("device_id", id),
                ("reason", "lost on a visit"),
            ],
            &[],
        ),
        (
            &[
                ("csrf", &good),
                ("device_id", id),
                ("reason", "lost on a visit"),
            ],
            &[("sec-fetch-site", "cross-site")],
        ),
        (
            &[
                ("csrf", &good),
                ("device_id", id),
                ("reason", "lost on a visit"),
            ],
            &[
                ("origin", "https://evil.example"),
                ("host", "doorstep.example"),
            ],
        ),
    ];
    for (form, headers) in cases {
        let answer = send(&f.app, "POST", path, Some(&session), Some(form), headers).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{form:?} {headers:?}");
        assert!(
            answer.body.contains("Nothing was changed"),
            "{}",
            answer.body
        );
    }
    assert_eq!(
        f.audit_len().await,
        before,
        "a refused post changed something"
    );
    assert!(
        f.store
            .device(&device.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );

    // The sign-in form too: a token not matching its cookie is refused.
    let answer = send(
        &f.app,
        "POST",
        "/console/sign-in",
        Some(&format!("{SIGN_IN_COOKIE}=aaaa")),
        Some(&[
            ("csrf", "bbbb"),
            ("username", "lead.demo"),
            ("password", "x"),
            ("totp", "123456"),
        ]),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);

    // A device that is not one of the service's users': named by its field, nothing changed.
    let answer = send(
        &f.app,
        "POST",
        path,
        Some(&session),
        Some(&[
            ("csrf", &good),
            ("device_id", "not-ours"),
            ("reason", "lost"),
        ]),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(
        answer.body.contains("id=\"revoke-device-error\""),
        "{}",
        answer.body
    );
    assert_eq!(f.audit_len().await, before);

    // The same post, from the page, with its token: revoked, audited.
    let answer = send(
        &f.app,
        "POST",
        path,
        Some(&session),
        Some(&[
            ("csrf", &good),
            ("device_id", id),
            ("reason", "lost on a visit"),
        ]),
        &[
            ("sec-fetch-site", "same-origin"),
            ("origin", "https://doorstep.example"),
            ("host", "doorstep.example"),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(answer.location(), "/console/devices?done=revoked");
    assert!(
        f.store
            .device(&device.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    let rows = f.store.audit_rows().await.unwrap();
    let last = &rows.last().unwrap().event;
    assert_eq!(last.action, "device_revoked");
    assert_eq!(last.actor, "user:manager.demo");
    assert_eq!(last.detail["reason"], "lost on a visit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinician_cannot_sign_in_to_the_console() {
    let f = fixture().await;
    let (answer, session) = f.sign_in_answer("nurse.demo").await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(session.is_none());
    assert!(
        answer.body.contains("signs in on their device"),
        "{}",
        answer.body
    );
    assert!(answer.body.contains("id=\"sign-in-error\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receptionist_cannot_open_a_managers_page() {
    let f = fixture().await;
    let session = f.sign_in("reception.demo").await;
    for path in [
        "/console/figures",
        "/console/devices",
        "/console/users",
        "/console/caseload",
        "/console/alerts",
    ] {
        let answer = send(&f.app, "GET", path, Some(&session), None, &[]).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{path}");
        assert!(
            answer
                .body
                .contains("You are signed in as Grace Adeyemi, a practice&#39;s receptionist"),
            "{}",
            answer.body
        );
    }
    let own = send(
        &f.app,
        "GET",
        "/console/sessions",
        Some(&session),
        None,
        &[],
    )
    .await;
    assert_eq!(own.status, StatusCode::OK);
    // Not signed in at all: the sign-in page.
    let none = send(&f.app, "GET", "/console/figures", None, None, &[]).await;
    assert_eq!(none.status, StatusCode::SEE_OTHER);
    assert_eq!(none.location(), "/console/sign-in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_re_renders_the_form_with_the_error_by_its_field_and_changes_nothing() {
    let f = fixture().await;
    let session = f.sign_in("lead.demo").await;
    let page = send(
        &f.app,
        "GET",
        "/console/caseload",
        Some(&session),
        None,
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    let before = f.audit_len().await;
    let answer = send(
        &f.app,
        "POST",
        "/console/caseload/add",
        Some(&session),
        Some(&[
            ("csrf", &page.csrf()),
            ("nhs_number", "123 456 7890"),
            ("reason", "leg ulcer dressings"),
            ("expected_end", "2099-01-31"),
        ]),
        &[],
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.body
    );
    // The error by the field, the field marked and described by it, what was typed kept.
    assert!(
        answer
            .body
            .contains("<p class=\"error\" id=\"add-nhs-error\">Error: "),
        "{}",
        answer.body
    );
    assert!(answer.body.contains(
        "<input id=\"add-nhs\" name=\"nhs_number\" type=\"text\" value=\"123 456 7890\" aria-describedby=\"add-nhs-hint add-nhs-error\" aria-invalid=\"true\""
    ), "{}", answer.body);
    assert!(answer.body.contains("value=\"leg ulcer dressings\""));
    assert_eq!(f.audit_len().await, before, "bad input changed something");

    // A missing reason, by its field.
    let answer = send(
        &f.app,
        "POST",
        "/console/caseload/discharge",
        Some(&session),
        Some(&[
            ("csrf", &page.csrf()),
            ("nhs_number", "9434765919"),
            ("reason", " "),
        ]),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        answer.body.contains("id=\"discharge-reason-error\""),
        "{}",
        answer.body
    );
    assert_eq!(f.audit_len().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markup_typed_into_a_form_or_held_in_a_name_is_shown_as_text() {
    let f = fixture().await;
    let session = f.sign_in("manager.demo").await;
    let page = send(&f.app, "GET", "/console/users", Some(&session), None, &[]).await;
    let evil = "<script>alert('x')</script>";
    let answer = send(
        &f.app,
        "POST",
        "/console/users",
        Some(&session),
        Some(&[
            ("csrf", &page.csrf()),
            ("username", "locum.gp"),
            ("display_name", evil),
            ("role", "gp"),
            ("practice", ""),
            ("reason", "locum for December"),
        ]),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert!(answer.body.contains("id=\"issued-password\""));
    let users = send(&f.app, "GET", "/console/users", Some(&session), None, &[]).await;
    assert!(!users.body.contains("<script>"), "markup reached the page");
    assert!(
        users
            .body
            .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;")
    );
    // A bad value typed back into a field is escaped too.
    let answer = send(
        &f.app,
        "POST",
        "/console/users",
        Some(&session),
        Some(&[
            ("csrf", &page.csrf()),
            ("username", "\"><script>x</script>"),
            ("display_name", "A"),
            ("role", "gp"),
            ("reason", "r"),
        ]),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!answer.body.contains("<script>"));
    assert!(
        answer.body.contains("id=\"username-error\""),
        "{}",
        answer.body
    );

    // No role chosen: named by its field, nothing added.
    let before = f.audit_len().await;
    let answer = send(
        &f.app,
        "POST",
        "/console/users",
        Some(&session),
        Some(&[
            ("csrf", &page.csrf()),
            ("username", "locum.two"),
            ("display_name", "Locum Two"),
            ("role", ""),
            ("reason", "locum"),
        ]),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(answer.body.contains("id=\"role-error\""), "{}", answer.body);
    assert!(answer.body.contains("value=\"locum.two\""));
    assert_eq!(f.audit_len().await, before);

    // A patient whose name (from a practice's record) is markup: the receptionist's search
    // shows it as text.
    let ods = f.user("reception.demo").practice.clone().unwrap();
    let bundle = serde_json::json!({"resourceType": "Bundle", "entry": [{"resource": {
        "resourceType": "Patient", "id": "markup-patient",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000026"}],
        "name": [{"family": "<script>alert(1)</script>", "given": ["<img src=x onerror=alert(2)>"]}],
        "birthDate": "1950-01-01",
        "generalPractitioner": [{"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": ods}}]
    }}]});
    crate::import::import_bundle(f.store.as_ref(), &bundle.to_string(), None)
        .await
        .unwrap();
    let reception = f.sign_in("reception.demo").await;
    let list = send(
        &f.app,
        "GET",
        "/console/sessions",
        Some(&reception),
        None,
        &[],
    )
    .await;
    let at = list.body.find("href=\"/console/sessions/").unwrap();
    let rest = &list.body[at + "href=\"".len()..];
    let path = rest[..rest.find('"').unwrap()].to_string();
    let page = send(&f.app, "GET", &path, Some(&reception), None, &[]).await;
    let found = send(
        &f.app,
        "POST",
        &format!("{path}/search"),
        Some(&reception),
        Some(&[("csrf", &page.csrf()), ("nhs_number", "999 000 0026")]),
        &[],
    )
    .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert!(found.body.contains("999 000 0026"), "{}", found.body);
    assert!(!found.body.contains("<script>") && !found.body.contains("<img"));
    assert!(
        // The family name in capitals, as every name is shown.
        found.body.contains(
            "<dd class=\"match-name\">&lt;SCRIPT&gt;ALERT(1)&lt;/SCRIPT&gt;, &lt;img src=x onerror=alert(2)&gt;</dd>"
        ),
        "{}",
        found.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receptionist_books_a_patient_after_seeing_who_it_is() {
    let f = fixture().await;
    let session = f.sign_in("reception.demo").await;
    let list = send(
        &f.app,
        "GET",
        "/console/sessions",
        Some(&session),
        None,
        &[],
    )
    .await;
    assert_eq!(list.status, StatusCode::OK);
    let at = list
        .body
        .find("href=\"/console/sessions/")
        .expect("a session to open");
    let rest = &list.body[at + "href=\"".len()..];
    let path = rest[..rest.find('"').unwrap()].to_string();
    let page = send(&f.app, "GET", &path, Some(&session), None, &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    // A patient of her practice, by NHS number.
    let reception = f.user("reception.demo");
    let ods = reception.practice.clone().unwrap();
    let patient = f
        .store
        .patients()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.practice_ods == ods)
        .unwrap();
    let answer = send(
        &f.app,
        "POST",
        &format!("{path}/search"),
        Some(&session),
        Some(&[("csrf", &page.csrf()), ("nhs_number", &patient.nhs_number)]),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(answer.body.contains("Check it is the right patient"));
    assert!(answer.body.contains(&patient.nhs_number));
    // Without a reason: by its field, nothing booked.
    let before = f.audit_len().await;
    let slot_at = answer.body.find("<option value=\"").unwrap();
    let rest = &answer.body[slot_at + "<option value=\"".len()..];
    let slot = rest[..rest.find('"').unwrap()].to_string();
    let booking = |reason: &'static str| {
        let (app, session, path, csrf, id, nhs, slot) = (
            f.app.clone(),
            session.clone(),
            path.clone(),
            page.csrf(),
            patient.id.clone(),
            patient.nhs_number.clone(),
            slot.clone(),
        );
        async move {
            send(
                &app,
                "POST",
                &format!("{path}/book"),
                Some(&session),
                Some(&[
                    ("csrf", &csrf),
                    ("patient_id", &id),
                    ("nhs_number", &nhs),
                    ("slot", &slot),
                    ("reason", reason),
                ]),
                &[],
            )
            .await
        }
    };
    let refused = booking("").await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    assert!(
        refused.body.contains("id=\"reason-0-error\""),
        "{}",
        refused.body
    );
    // The booking_search of the re-render is the only row added.
    let rows = f.store.audit_rows().await.unwrap();
    assert!(
        rows[before..]
            .iter()
            .all(|r| r.event.action == "booking_search")
    );
    let done = booking("review of <b>bloods</b>").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), format!("{path}?done=booked"));
    let shown = send(&f.app, "GET", done.location(), Some(&session), None, &[]).await;
    assert!(shown.body.contains("id=\"notice\""));
    assert!(
        shown.body.contains("review of &lt;b&gt;bloods&lt;/b&gt;"),
        "{}",
        shown.body
    );
    assert!(shown.body.contains(&nhs(&patient.nhs_number)));
    let rows = f.store.audit_rows().await.unwrap();
    assert_eq!(rows.last().unwrap().event.action, "booking_made");

    // Cancelling: a reason by its field first, then back to the session (whose id holds a
    // '.', the clinician's username).
    let session_id = path.rsplit('/').next().unwrap();
    assert!(session_id.contains('.'), "{session_id}");
    let booking = f
        .store
        .session_bookings(session_id)
        .await
        .unwrap()
        .into_iter()
        .find(|b| b.patient_id == patient.id)
        .unwrap();
    let cancel = |reason: &'static str| {
        let (app, session, csrf) = (f.app.clone(), session.clone(), shown.csrf());
        let (action, id) = (format!("{path}/cancel"), booking.id.to_string());
        async move {
            send(
                &app,
                "POST",
                &action,
                Some(&session),
                Some(&[("csrf", &csrf), ("booking_id", &id), ("reason", reason)]),
                &[],
            )
            .await
        }
    };
    let refused = cancel("").await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.body.contains("id=\"cancel-reason-error\""),
        "{}",
        refused.body
    );
    let done = cancel("patient rang").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(done.location(), format!("{path}?done=cancelled"));
    let rows = f.store.audit_rows().await.unwrap();
    assert_eq!(rows.last().unwrap().event.action, "booking_cancelled");
}

/// Every page of the table is served, and every page but sign-in and the stylesheet needs a
/// session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_is_served_and_needs_a_session() {
    let f = fixture().await;
    for (method, path, audience) in PAGES {
        let path = path.replace("{id}", "1");
        let answer = send(&f.app, method, &path, None, Some(&[]), &[]).await;
        assert_ne!(answer.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_ne!(
            answer.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        if *audience != Audience::Anyone {
            assert_eq!(answer.status, StatusCode::SEE_OTHER, "{method} {path}");
            assert_eq!(answer.location(), "/console/sign-in", "{method} {path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_publishes_a_session_after_a_field_error_and_a_leader_adds_to_the_caseload() {
    let f = fixture().await;
    let manager = f.sign_in("manager.demo").await;
    let page = send(
        &f.app,
        "GET",
        "/console/manage/sessions",
        Some(&manager),
        None,
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = page.csrf();
    let day = (Utc::now() + chrono::Duration::days(20))
        .date_naive()
        .to_string();
    let publish = |slots: &'static str| {
        let (app, manager, csrf, day) = (f.app.clone(), manager.clone(), csrf.clone(), day.clone());
        async move {
            send(
                &app,
                "POST",
                "/console/manage/sessions",
                Some(&manager),
                Some(&[
                    ("csrf", &csrf),
                    ("date", &day),
                    ("start", "18:30"),
                    ("end", "20:30"),
                    ("clinician", "gp.demo"),
                    ("slots", slots),
                    ("reason", "winter pressures"),
                ]),
                &[],
            )
            .await
        }
    };
    let before = f.audit_len().await;
    let refused = publish("99").await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.body.contains("id=\"slots-error\""),
        "{}",
        refused.body
    );
    assert!(refused.body.contains("value=\"winter pressures\""));
    assert_eq!(f.audit_len().await, before);
    let done = publish("8").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), "/console/manage/sessions?done=published");
    let rows = f.store.audit_rows().await.unwrap();
    let last = &rows.last().unwrap().event;
    assert_eq!(last.action, "session_published");
    assert_eq!(last.actor, "user:manager.demo");

    let lead = f.sign_in("lead.demo").await;
    let page = send(&f.app, "GET", "/console/caseload", Some(&lead), None, &[]).await;
    let caseload = crate::caseloads::caseload(
        f.store.as_ref(),
        &f.store
            .user_by_username("lead.demo")
            .await
            .unwrap()
            .unwrap(),
        Utc::now(),
    )
    .await
    .unwrap();
    let on: Vec<&str> = caseload
        .entries
        .iter()
        .map(|e| e.patient.nhs_number.as_str())
        .collect();
    // A patient the nursing agreement covers, not on the caseload yet, who has not dissented.
    let patient = f
        .store
        .patients()
        .await
        .unwrap()
        .into_iter()
        .find(|p| !p.dissent && !on.contains(&p.nhs_number.as_str()))
        .unwrap();
    let end = (Utc::now() + chrono::Duration::days(30))
        .date_naive()
        .to_string();
    let added = send(
        &f.app,
        "POST",
        "/console/caseload/add",
        Some(&lead),
        Some(&[
            ("csrf", &page.csrf()),
            ("nhs_number", &patient.nhs_number),
            ("reason", "wound care"),
            ("expected_end", &end),
        ]),
        &[],
    )
    .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    let shown = send(&f.app, "GET", added.location(), Some(&lead), None, &[]).await;
    assert!(shown.body.contains("Added to the caseload."));
    assert!(shown.body.contains(&nhs(&patient.nhs_number)));
    let rows = f.store.audit_rows().await.unwrap();
    assert_eq!(rows.last().unwrap().event.action, "caseload_added");
}
