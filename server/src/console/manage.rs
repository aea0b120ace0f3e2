//! A service manager's pages: the service's sessions (publish), users (add, disable,
//! enable), devices (revoke), and the figures (SVG charts beside their tables, CSV).

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{Duration, NaiveDate, NaiveTime, Utc};

use super::html::Html;
use super::{
    Console, Done, Errors, Fields, Input, Posted, form, input, page, see_other, select,
    staff_errors, table_close, table_open, when,
};
use crate::accounts::{self, NewAccount};
use crate::admin::AdminFailure;
use crate::api::AppState;
use crate::auth;
use crate::bookings::{self, NewSession, StaffFailure};
use crate::figures::{self, FigureRow, FiguresFailure};

const ROLE: &str = bookings::SERVICE_MANAGER;

fn problem_page(
    who: &Console,
    title: &str,
    current: &str,
    status: StatusCode,
    m: &str,
) -> Response {
    page(
        status,
        Some(who),
        title,
        current,
        None,
        Html::new().element("p", &[("class", "problem"), ("id", "problem")], m),
    )
}

fn admin_errors(f: &AdminFailure) -> Errors {
    match f {
        AdminFailure::Invalid(list) => {
            let mut e = Errors::none();
            for fe in list {
                e.fields.push((fe.field.clone(), fe.problem.clone()));
            }
            e
        }
        other => Errors::general(format!("Nothing was changed: {other}")),
    }
}

fn admin_status(f: &AdminFailure) -> StatusCode {
    match f {
        AdminFailure::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        AdminFailure::NotFound(_) => StatusCode::NOT_FOUND,
        AdminFailure::Conflict(_) => StatusCode::CONFLICT,
        AdminFailure::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

// ---------- sessions ----------

async fn sessions_page(
    state: &AppState,
    who: &Console,
    status: StatusCode,
    fields: &Fields,
    errors: &Errors,
    notice: Option<&str>,
) -> Response {
    let now = Utc::now();
    let start = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc();
    let sessions = match bookings::service_sessions(
        state.store.as_ref(),
        &who.user,
        start,
        start + Duration::days(15),
        now,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            return problem_page(
                who,
                "Sessions",
                "/console/manage/sessions",
                StatusCode::FORBIDDEN,
                &e.to_string(),
            );
        }
    };
    let clinicians: Vec<(String, String)> =
        match accounts::service_users(state.store.as_ref(), &who.user).await {
            Ok(users) => std::iter::once((String::new(), "Choose a clinician".to_string()))
                .chain(
                    users
                        .into_iter()
                        .filter(|u| !auth::is_staff_role(&u.role) && !u.disabled)
                        .map(|u| {
                            (
                                u.username.clone(),
                                format!("{} ({}, {})", u.display_name, u.username, u.role),
                            )
                        }),
                )
                .collect(),
            Err(e) => return super::internal(&e.to_string()),
        };
    let mut h = Html::new();
    h.element("h2", &[("id", "publish-heading")], "Publish a session");
    form(
        &mut h,
        who,
        "/console/manage/sessions",
        "publish-form",
        |h| {
            errors.general_into(h, "publish-error");
            input(
                h,
                Input::new("date", "date", "Date", fields.get("date"))
                    .kind("date")
                    .required(),
                errors,
            );
            input(
                h,
                Input::new("start", "start", "Starts (UTC)", fields.get("start"))
                    .kind("time")
                    .required(),
                errors,
            );
            input(
                h,
                Input::new("end", "end", "Ends (UTC)", fields.get("end"))
                    .kind("time")
                    .required(),
                errors,
            );
            select(
                h,
                "clinician",
                "clinician",
                "Clinician",
                &clinicians,
                fields.get("clinician"),
                errors,
            );
            input(
                h,
                Input::new("slots", "slots", "Number of slots", fields.get("slots"))
                    .kind("number")
                    .hint("1 to 48 equal slots")
                    .required()
                    .extra(&[("min", "1"), ("max", "48")]),
                errors,
            );
            input(
                h,
                Input::new(
                    "publish-reason",
                    "reason",
                    "Why (for the audit log)",
                    fields.get("reason"),
                )
                .required(),
                errors,
            );
            h.raw("<button type=\"submit\" id=\"publish\">Publish the session</button>");
        },
    );
    h.element("h2", &[("id", "sessions-heading")], "The next two weeks");
    if sessions.is_empty() {
        h.element("p", &[("id", "no-sessions")], "No sessions published.");
    } else {
        table_open(
            &mut h,
            "sessions",
            "The service's sessions",
            &["When (UTC)", "Clinician", "Slots", "Booked", "Free"],
        );
        for s in &sessions {
            h.open("tr", &[("data-session", &s.id)])
                .element(
                    "td",
                    &[],
                    &format!("{}–{}", when(s.starts_at), s.ends_at.format("%H:%M")),
                )
                .element("td", &[], &s.clinician_name)
                .element("td", &[("class", "num")], &s.slots.to_string())
                .element("td", &[("class", "num")], &s.booked.to_string())
                .element("td", &[("class", "num")], &s.free.len().to_string())
                .raw("</tr>");
        }
        table_close(&mut h);
    }
    page(
        status,
        Some(who),
        "Sessions",
        "/console/manage/sessions",
        notice,
        &h,
    )
}

pub async fn sessions(
    State(state): State<AppState>,
    who: Console,
    done: Query<Done>,
) -> Result<Response, Response> {
    who.require(ROLE)?;
    Ok(sessions_page(
        &state,
        &who,
        StatusCode::OK,
        &Fields::default(),
        &Errors::none(),
        done.notice(),
    )
    .await)
}

fn new_session(f: &Fields) -> Result<NewSession, Errors> {
    if f.get("clinician").trim().is_empty() {
        return Err(Errors::field(
            "clinician",
            "choose the clinician who takes the session",
        ));
    }
    let date = f.get("date").trim();
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map_err(|_| Errors::field("date", format!("{date:?} is not a date (YYYY-MM-DD)")))?;
    let time = |name: &str| {
        let t = f.get(name).trim();
        NaiveTime::parse_from_str(t, "%H:%M")
            .or_else(|_| NaiveTime::parse_from_str(t, "%H:%M:%S"))
            .map_err(|_| Errors::field(name, format!("{t:?} is not a time (HH:MM)")))
    };
    let start = time("start")?;
    let end = time("end")?;
    let slots = f.get("slots").trim();
    let slots: u32 = slots
        .parse()
        .map_err(|_| Errors::field("slots", format!("{slots:?} is not a whole number")))?;
    Ok(NewSession {
        date,
        start,
        end,
        clinician: f.get("clinician").to_string(),
        slots,
        reason: f.get("reason").to_string(),
    })
}

pub async fn publish(State(state): State<AppState>, posted: Posted) -> Result<Response, Response> {
    let who = &posted.who;
    who.require(ROLE)?;
    let errors = match new_session(&posted.fields) {
        Err(e) => e,
        Ok(new) => {
            match bookings::publish_session(state.store.as_ref(), &who.user, new, Utc::now()).await
            {
                Ok(_) => return Ok(see_other("/console/manage/sessions?done=published")),
                Err(StaffFailure::Store(e)) => return Err(super::internal(&e.to_string())),
                Err(e) => staff_errors(
                    &e,
                    &["date", "start", "end", "clinician", "slots", "reason"],
                ),
            }
        }
    };
    Ok(sessions_page(
        &state,
        who,
        StatusCode::UNPROCESSABLE_ENTITY,
        &posted.fields,
        &errors,
        None,
    )
    .await)
}

// ---------- users ----------

/// Roles a manager can give, in the form's order.
const ROLES: &[(&str, &str)] = &[
    // No role is chosen for the manager: a wrong default would be added unseen.
    ("", "Choose a role"),
    ("gp", "GP"),
    ("nurse", "Nurse"),
    ("paramedic", "Paramedic"),
    ("podiatrist", "Podiatrist"),
    ("receptionist", "Receptionist (of a member practice)"),
    ("team_leader", "Team leader"),
    ("service_manager", "Service manager"),
];

#[derive(Default)]
struct UserForms {
    add: Fields,
    add_errors: Errors,
    status: Fields,
    status_errors: Errors,
}

async fn users_page(
    state: &AppState,
    who: &Console,
    status: StatusCode,
    forms: &UserForms,
    issued: Option<&accounts::Issued>,
    notice: Option<&str>,
) -> Response {
    let users = match accounts::service_users(state.store.as_ref(), &who.user).await {
        Ok(u) => u,
        Err(e) => {
            return problem_page(
                who,
                "Users",
                "/console/users",
                admin_status(&e),
                &e.to_string(),
            );
        }
    };
    let mut h = Html::new();
    if let Some(issued) = issued {
        h.open("section", &[("class", "notice"), ("id", "issued"), ("aria-labelledby", "issued-heading")])
            .element("h2", &[("id", "issued-heading")], "User added: give them these once")
            .element("p", &[], "They are shown only now and are not stored in the clear. Give them to the user in person.")
            .raw("<dl class=\"identity\"><dt>Username</dt>")
            .element("dd", &[("class", "secret")], &issued.username)
            .raw("<dt>Password</dt>")
            .element("dd", &[("class", "secret"), ("id", "issued-password")], &issued.password)
            .raw("<dt>TOTP secret (for their authenticator)</dt>")
            .element("dd", &[("class", "secret"), ("id", "issued-totp")], &issued.totp_secret)
            .raw("</dl></section>");
    }
    let roles: Vec<(String, String)> = ROLES
        .iter()
        .map(|(v, l)| (v.to_string(), l.to_string()))
        .collect();
    h.element("h2", &[("id", "add-heading")], "Add a user to your service");
    let (f, e) = (&forms.add, &forms.add_errors);
    form(&mut h, who, "/console/users", "add-user-form", |h| {
        e.general_into(h, "add-user-error");
        input(
            h,
            Input::new("username", "username", "Username", f.get("username"))
                .hint("Lowercase letters, digits, '.', '-', '_'")
                .required()
                .extra(&[("autocomplete", "off"), ("autocapitalize", "none")]),
            e,
        );
        input(
            h,
            Input::new(
                "display_name",
                "display_name",
                "Full name",
                f.get("display_name"),
            )
            .required()
            .extra(&[("autocomplete", "off")]),
            e,
        );
        select(h, "role", "role", "Role", &roles, f.get("role"), e);
        input(
            h,
            Input::new(
                "practice",
                "practice",
                "Practice ODS code (receptionists only)",
                f.get("practice"),
            )
            .extra(&[("autocomplete", "off")]),
            e,
        );
        input(
            h,
            Input::new(
                "add-reason",
                "reason",
                "Why (for the audit log)",
                f.get("reason"),
            )
            .required(),
            e,
        );
        h.raw("<button type=\"submit\" id=\"add-user\">Add the user</button>");
    });
    h.element(
        "h2",
        &[("id", "status-heading")],
        "Disable or enable a user",
    );
    let (f, e) = (&forms.status, &forms.status_errors);
    let names: Vec<(String, String)> = users
        .iter()
        .filter(|u| u.id != who.user.id)
        .map(|u| {
            (
                u.username.clone(),
                format!("{} ({})", u.display_name, u.username),
            )
        })
        .collect();
    form(&mut h, who, "/console/users/status", "status-form", |h| {
        e.general_into(h, "status-error");
        select(
            h,
            "status-user",
            "username",
            "User",
            &names,
            f.get("username"),
            e,
        );
        input(
            h,
            Input::new(
                "status-reason",
                "reason",
                "Why (for the audit log)",
                f.get("reason"),
            )
            .required(),
            e,
        );
        h.raw("<div class=\"inline\"><button type=\"submit\" name=\"action\" value=\"disable\" class=\"danger\" id=\"disable\">Disable</button>")
            .raw("<button type=\"submit\" name=\"action\" value=\"enable\" class=\"secondary\" id=\"enable\">Enable</button></div>");
    });
    h.element("h2", &[("id", "users-heading")], "Users of your service");
    table_open(
        &mut h,
        "users",
        "Users",
        &["Username", "Name", "Role", "Practice", "Status"],
    );
    for u in &users {
        h.open("tr", &[("data-user", &u.username)])
            .element("td", &[], &u.username)
            .element("td", &[], &u.display_name)
            .element("td", &[], &u.role)
            .element("td", &[], u.practice_ods.as_deref().unwrap_or(""))
            .element("td", &[], if u.disabled { "disabled" } else { "active" })
            .raw("</tr>");
    }
    table_close(&mut h);
    page(status, Some(who), "Users", "/console/users", notice, &h)
}

pub async fn users(
    State(state): State<AppState>,
    who: Console,
    done: Query<Done>,
) -> Result<Response, Response> {
    who.require(ROLE)?;
    Ok(users_page(
        &state,
        &who,
        StatusCode::OK,
        &UserForms::default(),
        None,
        done.notice(),
    )
    .await)
}

pub async fn add_user(State(state): State<AppState>, posted: Posted) -> Result<Response, Response> {
    let who = &posted.who;
    who.require(ROLE)?;
    let f = &posted.fields;
    let practice = f.get("practice").trim();
    if f.get("role").trim().is_empty() {
        let forms = UserForms {
            add: f.clone(),
            add_errors: Errors::field("role", "choose the user's role"),
            ..UserForms::default()
        };
        return Ok(users_page(
            &state,
            who,
            StatusCode::UNPROCESSABLE_ENTITY,
            &forms,
            None,
            None,
        )
        .await);
    }
    let outcome = accounts::add_service_user(
        state.store.as_ref(),
        &state.sign_in.totp_key,
        &who.user,
        NewAccount {
            username: f.get("username").to_string(),
            display_name: f.get("display_name").to_string(),
            role: f.get("role").to_string(),
            service_id: who.user.service_id.clone(),
            practice_ods: (!practice.is_empty()).then(|| practice.to_string()),
        },
        f.get("reason"),
        Utc::now(),
    )
    .await;
    match outcome {
        // The secrets are shown once, on this answer, never in a URL.
        Ok(issued) => Ok(users_page(
            &state,
            who,
            StatusCode::CREATED,
            &UserForms::default(),
            Some(&issued),
            Some("User added."),
        )
        .await),
        Err(AdminFailure::Store(e)) => Err(super::internal(&e.to_string())),
        Err(e) => {
            let forms = UserForms {
                add: f.clone(),
                add_errors: admin_errors(&e),
                ..UserForms::default()
            };
            Ok(users_page(&state, who, admin_status(&e), &forms, None, None).await)
        }
    }
}

pub async fn user_status(
    State(state): State<AppState>,
    posted: Posted,
) -> Result<Response, Response> {
    let who = &posted.who;
    who.require(ROLE)?;
    let f = &posted.fields;
    let disabled = match f.get("action") {
        "disable" => Ok(true),
        "enable" => Ok(false),
        _ => Err(AdminFailure::Invalid(vec![
            doorstep_record::agreement::FieldError {
                field: "username".into(),
                problem: "choose Disable or Enable".into(),
            },
        ])),
    };
    let outcome = match disabled {
        Ok(d) => accounts::set_service_user_disabled(
            state.store.as_ref(),
            &who.user,
            f.get("username"),
            d,
            f.get("reason"),
            Utc::now(),
        )
        .await
        .map(|()| d),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(true) => Ok(see_other("/console/users?done=disabled")),
        Ok(false) => Ok(see_other("/console/users?done=enabled")),
        Err(AdminFailure::Store(e)) => Err(super::internal(&e.to_string())),
        Err(e) => {
            let forms = UserForms {
                status: f.clone(),
                status_errors: admin_errors(&e),
                ..UserForms::default()
            };
            Ok(users_page(&state, who, admin_status(&e), &forms, None, None).await)
        }
    }
}

// ---------- devices ----------

async fn devices_page(
    state: &AppState,
    who: &Console,
    status: StatusCode,
    failed: Option<(&Fields, &Errors)>,
    notice: Option<&str>,
) -> Response {
    let devices = match accounts::service_devices(state.store.as_ref(), &who.user).await {
        Ok(d) => d,
        Err(e) => {
            return problem_page(
                who,
                "Devices",
                "/console/devices",
                admin_status(&e),
                &e.to_string(),
            );
        }
    };
    let mut h = Html::new();
    h.element(
        "p",
        &[],
        "The devices of your service's users. Revoke a lost or stolen one: its tokens stop at \
         once and it wipes its cache at its next contact. Revoking is final.",
    );
    if devices.is_empty() {
        h.element("p", &[("id", "no-devices")], "No devices are enrolled.");
    } else {
        table_open(
            &mut h,
            "devices",
            "Devices",
            &["Device", "User", "Enrolled (UTC)", "Status"],
        );
        for d in &devices {
            h.open("tr", &[("data-device", &d.id)])
                .element("td", &[("class", "device-name")], &d.name)
                .element("td", &[], &d.user)
                .element("td", &[], &when(d.enrolled_at))
                .element(
                    "td",
                    &[("class", "device-status")],
                    &match d.revoked_at {
                        Some(at) => format!("revoked {}", when(at)),
                        None => "active".into(),
                    },
                )
                .raw("</tr>");
        }
        table_close(&mut h);
        let active: Vec<(String, String)> = devices
            .iter()
            .filter(|d| d.revoked_at.is_none())
            .map(|d| {
                (
                    d.id.clone(),
                    format!("{} ({}, enrolled {})", d.name, d.user, when(d.enrolled_at)),
                )
            })
            .collect();
        if !active.is_empty() {
            let (fields, errors) = match failed {
                Some((f, e)) => (f.clone(), e.clone()),
                None => (Fields::default(), Errors::none()),
            };
            h.element("h2", &[("id", "revoke-heading")], "Revoke a device");
            form(
                &mut h,
                who,
                "/console/devices/revoke#revoke-heading",
                "revoke-form",
                |h| {
                    errors.general_into(h, "revoke-error");
                    select(
                        h,
                        "revoke-device",
                        "device_id",
                        "Device",
                        &active,
                        fields.get("device_id"),
                        &errors,
                    );
                    input(
                        h,
                        Input::new(
                            "revoke-reason",
                            "reason",
                            "Why revoke",
                            fields.get("reason"),
                        )
                        .required(),
                        &errors,
                    );
                    h.raw("<button type=\"submit\" class=\"danger\" id=\"revoke\">Revoke the device</button>");
                },
            );
        }
    }
    page(status, Some(who), "Devices", "/console/devices", notice, &h)
}

pub async fn devices(
    State(state): State<AppState>,
    who: Console,
    done: Query<Done>,
) -> Result<Response, Response> {
    who.require(ROLE)?;
    Ok(devices_page(&state, &who, StatusCode::OK, None, done.notice()).await)
}

pub async fn revoke(State(state): State<AppState>, posted: Posted) -> Result<Response, Response> {
    let who = &posted.who;
    who.require(ROLE)?;
    match accounts::revoke_service_device(
        state.store.as_ref(),
        &who.user,
        posted.fields.get("device_id"),
        posted.fields.get("reason"),
        Utc::now(),
    )
    .await
    {
        Ok(()) => Ok(see_other("/console/devices?done=revoked")),
        Err(AdminFailure::Store(e)) => Err(super::internal(&e.to_string())),
        Err(e) => {
            // A device not of the service is named by the form's field.
            let errors = match &e {
                AdminFailure::NotFound(m) => Errors::field("device_id", m.clone()),
                _ => admin_errors(&e),
            };
            Ok(devices_page(
                &state,
                who,
                admin_status(&e),
                Some((&posted.fields, &errors)),
                None,
            )
            .await)
        }
    }
}

// ---------- figures ----------

#[derive(Debug, serde::Deserialize)]
pub struct Range {
    from: Option<String>,
    to: Option<String>,
}

/// The range asked for, or the field error.
fn range_of(r: &Range) -> Result<(Option<NaiveDate>, Option<NaiveDate>), Errors> {
    let parse = |name: &str, v: &Option<String>| match v
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => Ok(None),
        Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| Errors::field(name, format!("{s:?} is not a date (YYYY-MM-DD)"))),
    };
    Ok((parse("from", &r.from)?, parse("to", &r.to)?))
}

/// Per week: the sum over practices of each count.
#[derive(Default, Clone)]
struct Week {
    seen: usize,
    written: usize,
    filed: usize,
    rejected: usize,
    made: usize,
    used: usize,
    cancelled: usize,
}

fn by_week(rows: &[FigureRow]) -> BTreeMap<String, Week> {
    let mut weeks: BTreeMap<String, Week> = BTreeMap::new();
    for r in rows {
        let w = weeks.entry(r.week.clone()).or_default();
        w.seen += r.patients_seen;
        w.written += r.notes_written;
        w.filed += r.notes_filed;
        w.rejected += r.notes_rejected;
        w.made += r.bookings_made;
        w.used += r.bookings_used;
        w.cancelled += r.bookings_cancelled;
    }
    weeks
}

/// A bar chart of `series` (label, class, values by week), grouped by week, with its title
/// and description for assistive technology and the same numbers in the table beside it.
fn bar_chart(
    h: &mut Html,
    id: &str,
    title: &str,
    desc: &str,
    weeks: &[String],
    series: &[(&'static str, &'static str, Vec<usize>)],
) {
    const W: usize = 560;
    const H: usize = 240;
    const LEFT: usize = 40;
    const BOTTOM: usize = 40;
    const TOP: usize = 16;
    let max = series
        .iter()
        .flat_map(|s| s.2.iter())
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    let plot_h = H - BOTTOM - TOP;
    let group_w = (W - LEFT - 8) / weeks.len().max(1);
    let bar_w = (group_w.saturating_sub(8) / series.len().max(1)).max(2);
    let title_id = format!("{id}-title");
    let desc_id = format!("{id}-desc");
    let labelled = format!("{title_id} {desc_id}");
    h.open("figure", &[("aria-labelledby", &format!("{id}-caption"))])
        .element("figcaption", &[("id", &format!("{id}-caption"))], title);
    h.open(
        "svg",
        &[
            ("xmlns", "http://www.w3.org/2000/svg"),
            ("class", "chart"),
            ("id", id),
            ("viewBox", &format!("0 0 {W} {H}")),
            ("role", "img"),
            ("aria-labelledby", &labelled),
        ],
    )
    .element("title", &[("id", &title_id)], title)
    .element("desc", &[("id", &desc_id)], desc);
    let base = H - BOTTOM;
    h.open(
        "line",
        &[
            ("class", "axis"),
            ("x1", &LEFT.to_string()),
            ("y1", &base.to_string()),
            ("x2", &W.to_string()),
            ("y2", &base.to_string()),
        ],
    )
    .raw("</line>");
    h.open(
        "line",
        &[
            ("class", "axis"),
            ("x1", &LEFT.to_string()),
            ("y1", &TOP.to_string()),
            ("x2", &LEFT.to_string()),
            ("y2", &base.to_string()),
        ],
    )
    .raw("</line>");
    h.open(
        "text",
        &[
            ("x", &(LEFT - 6).to_string()),
            ("y", &(TOP + 4).to_string()),
            ("text-anchor", "end"),
        ],
    )
    .text(&max.to_string())
    .close("text");
    h.open(
        "text",
        &[
            ("x", &(LEFT - 6).to_string()),
            ("y", &base.to_string()),
            ("text-anchor", "end"),
        ],
    )
    .text("0")
    .close("text");
    for (wi, week) in weeks.iter().enumerate() {
        let gx = LEFT + 8 + wi * group_w;
        for (si, (label, class, values)) in series.iter().enumerate() {
            let v = values.get(wi).copied().unwrap_or(0);
            let bh = v * plot_h / max;
            let x = gx + si * bar_w;
            h.open(
                "rect",
                &[
                    ("class", &format!("bar {class}")),
                    ("x", &x.to_string()),
                    ("y", &(base - bh).to_string()),
                    ("width", &bar_w.saturating_sub(2).max(1).to_string()),
                    ("height", &bh.to_string()),
                    ("data-value", &v.to_string()),
                ],
            )
            .element("title", &[], &format!("{week}: {label} {v}"))
            .close("rect");
        }
        h.open(
            "text",
            &[
                ("x", &(gx + group_w / 2).to_string()),
                ("y", &(base + 16).to_string()),
                ("text-anchor", "middle"),
            ],
        )
        .text(week.split_once('-').map_or(week.as_str(), |(_, w)| w))
        .close("text");
    }
    h.close("svg");
    if series.len() > 1 {
        h.raw("<ul class=\"legend\">");
        for (label, class, _) in series {
            h.raw("<li>")
                .open(
                    "span",
                    &[
                        ("class", &format!("swatch {class}")),
                        ("aria-hidden", "true"),
                    ],
                )
                .raw("</span>")
                .text(label)
                .raw("</li>");
        }
        h.raw("</ul>");
    }
    h.close("figure");
}

fn weekly_table(
    h: &mut Html,
    id: &str,
    caption: &str,
    weeks: &[String],
    series: &[(&'static str, &'static str, Vec<usize>)],
) {
    let mut heads: Vec<&'static str> = vec!["Week"];
    heads.extend(series.iter().map(|(label, _, _)| *label));
    table_open(h, id, caption, &heads);
    for (wi, week) in weeks.iter().enumerate() {
        h.raw("<tr>").element("th", &[("scope", "row")], week);
        for (_, _, values) in series {
            h.element(
                "td",
                &[("class", "num")],
                &values.get(wi).copied().unwrap_or(0).to_string(),
            );
        }
        h.raw("</tr>");
    }
    table_close(h);
}

pub async fn figures(
    State(state): State<AppState>,
    who: Console,
    Query(range): Query<Range>,
) -> Result<Response, Response> {
    who.require(ROLE)?;
    let (from, to) = match range_of(&range) {
        Ok(r) => r,
        Err(errors) => {
            return Ok(figures_page(
                &who,
                StatusCode::UNPROCESSABLE_ENTITY,
                &range,
                &errors,
                &[],
            ));
        }
    };
    match figures::figures(
        state.store.as_ref(),
        Some(&who.user.service_id),
        from,
        to,
        Utc::now().date_naive(),
    )
    .await
    {
        Ok(rows) => Ok(figures_page(
            &who,
            StatusCode::OK,
            &range,
            &Errors::none(),
            &rows,
        )),
        Err(FiguresFailure::Invalid(m)) => Ok(figures_page(
            &who,
            StatusCode::UNPROCESSABLE_ENTITY,
            &range,
            &Errors::from_message(&m, &["from", "to"]),
            &[],
        )),
        Err(FiguresFailure::Store(e)) => Err(super::internal(&e.to_string())),
    }
}

fn figures_page(
    who: &Console,
    status: StatusCode,
    range: &Range,
    errors: &Errors,
    rows: &[FigureRow],
) -> Response {
    let from = range.from.clone().unwrap_or_default();
    let to = range.to.clone().unwrap_or_default();
    let mut h = Html::new();
    h.element(
        "p",
        &[],
        "What your service did, per registered practice and ISO week (UTC): patients seen, \
         notes written and what the practices did with them, bookings. The last 8 weeks unless \
         you choose.",
    );
    h.open(
        "form",
        &[
            ("method", "get"),
            ("action", "/console/figures"),
            ("id", "range-form"),
        ],
    );
    errors.general_into(&mut h, "range-error");
    h.raw("<div class=\"inline\">");
    input(
        &mut h,
        Input::new("from", "from", "From", &from).kind("date"),
        errors,
    );
    input(
        &mut h,
        Input::new("to", "to", "To", &to).kind("date"),
        errors,
    );
    h.raw("<button type=\"submit\" id=\"show\">Show</button></div></form>");
    let csv = format!(
        "/console/figures.csv?from={}&to={}",
        if errors.is_empty() { from.as_str() } else { "" },
        if errors.is_empty() { to.as_str() } else { "" }
    );
    h.open("p", &[])
        .open(
            "a",
            &[("href", &csv), ("id", "csv"), ("download", "figures.csv")],
        )
        .text("Download these figures as CSV")
        .raw("</a></p>");

    let weeks_map = by_week(rows);
    let weeks: Vec<String> = weeks_map.keys().cloned().collect();
    let col = |f: fn(&Week) -> usize| weeks_map.values().map(f).collect::<Vec<_>>();
    if rows.is_empty() {
        h.element(
            "p",
            &[("id", "no-figures")],
            "Nothing to count in this range.",
        );
    } else {
        let seen = [("Patients seen", "bar1", col(|w| w.seen))];
        let notes = [
            ("Notes filed", "bar3", col(|w| w.filed)),
            ("Notes rejected", "bar2", col(|w| w.rejected)),
        ];
        let booked = [
            ("Bookings made", "bar1", col(|w| w.made)),
            ("Bookings used", "bar3", col(|w| w.used)),
        ];
        h.element("h2", &[("id", "charts-heading")], "Per week, all practices");
        h.raw("<div class=\"charts\"><div>");
        bar_chart(
            &mut h,
            "chart-seen",
            "Patients seen per week",
            &format!(
                "Bar chart of patients seen in each of {} weeks; the numbers are in the table below it.",
                weeks.len()
            ),
            &weeks,
            &seen,
        );
        weekly_table(
            &mut h,
            "table-seen",
            "Patients seen per week",
            &weeks,
            &seen,
        );
        h.raw("</div><div>");
        bar_chart(
            &mut h,
            "chart-notes",
            "Notes filed and rejected per week",
            "Grouped bar chart: notes the practices filed and rejected, by the week they were signed; the numbers are in the table below it.",
            &weeks,
            &notes,
        );
        weekly_table(
            &mut h,
            "table-notes",
            "Notes filed and rejected per week",
            &weeks,
            &notes,
        );
        h.raw("</div><div>");
        bar_chart(
            &mut h,
            "chart-bookings",
            "Bookings made and used per week",
            "Grouped bar chart: bookings made and those used (the clinician opened the record or wrote a note), by the slot's week; the numbers are in the table below it.",
            &weeks,
            &booked,
        );
        weekly_table(
            &mut h,
            "table-bookings",
            "Bookings made and used per week",
            &weeks,
            &booked,
        );
        h.raw("</div></div>");
        h.element("h2", &[("id", "detail-heading")], "Per practice and week");
        table_open(
            &mut h,
            "figures",
            "Figures per practice and week",
            &[
                "Week",
                "Practice",
                "Seen",
                "Notes",
                "Filed",
                "Rejected",
                "Median minutes to filed",
                "Booked",
                "Used",
                "Cancelled",
                "Break-glass",
            ],
        );
        for r in rows {
            h.raw("<tr>")
                .element("th", &[("scope", "row")], &r.week)
                .element(
                    "td",
                    &[],
                    &format!("{} ({})", r.practice_name, r.practice_ods),
                )
                .element("td", &[("class", "num")], &r.patients_seen.to_string())
                .element("td", &[("class", "num")], &r.notes_written.to_string())
                .element("td", &[("class", "num")], &r.notes_filed.to_string())
                .element("td", &[("class", "num")], &r.notes_rejected.to_string())
                .element(
                    "td",
                    &[("class", "num")],
                    &r.median_minutes_to_filed
                        .map(|m| format!("{m:.1}"))
                        .unwrap_or_else(|| "–".into()),
                )
                .element("td", &[("class", "num")], &r.bookings_made.to_string())
                .element("td", &[("class", "num")], &r.bookings_used.to_string())
                .element("td", &[("class", "num")], &r.bookings_cancelled.to_string())
                .element("td", &[("class", "num")], &r.break_glass_uses.to_string())
                .raw("</tr>");
        }
        table_close(&mut h);
    }
    page(status, Some(who), "Figures", "/console/figures", None, &h)
}

pub async fn figures_csv(
    State(state): State<AppState>,
    who: Console,
    Query(range): Query<Range>,
) -> Result<Response, Response> {
    who.require(ROLE)?;
    let (from, to) = range_of(&range).map_err(|_| {
        problem_page(
            &who,
            "Figures",
            "/console/figures",
            StatusCode::UNPROCESSABLE_ENTITY,
            "from and to are dates (YYYY-MM-DD)",
        )
    })?;
    match figures::figures(
        state.store.as_ref(),
        Some(&who.user.service_id),
        from,
        to,
        Utc::now().date_naive(),
    )
    .await
    {
        Ok(rows) => Ok((
            [
                (
                    header::CONTENT_TYPE,
                    "text/csv; charset=utf-8; header=present",
                ),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"figures.csv\"",
                ),
            ],
            figures::to_csv(&rows),
        )
            .into_response()),
        Err(FiguresFailure::Invalid(m)) => Err(problem_page(
            &who,
            "Figures",
            "/console/figures",
            StatusCode::UNPROCESSABLE_ENTITY,
            &m,
        )),
        Err(FiguresFailure::Store(e)) => Err(super::internal(&e.to_string())),
    }
}
