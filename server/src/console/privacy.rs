//! The privacy officer's pages: break-glass alerts (acknowledge with a note) and a patient's
//! access report by NHS number (the reading audited, as the API's).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{NaiveDate, Utc};

use super::html::Html;
use super::{
    Console, Errors, Fields, Input, Posted, form, input, nhs, page, see_other, table_close,
    table_open, when,
};
use crate::access::{self, AccessFailure};
use crate::api::AppState;
use crate::auth;
use crate::breakglass::{self, BreakGlassFailure};

const ROLE: &str = auth::PRIVACY_OFFICER;

#[derive(Debug, serde::Deserialize)]
pub struct AlertsQuery {
    all: Option<String>,
    done: Option<String>,
}

async fn alerts_page(
    state: &AppState,
    who: &Console,
    status: StatusCode,
    all: bool,
    failed: Option<(i64, &Fields, &Errors)>,
    notice: Option<&str>,
) -> Response {
    let alerts = match breakglass::alert_reports(state.store.as_ref(), !all).await {
        Ok(a) => a,
        Err(e) => return super::internal(&e.to_string()),
    };
    let mut h = Html::new();
    h.element(
        "p",
        &[],
        "Each alert is a clinician's emergency access to a patient not on their lists. Check \
         what was opened under it, then acknowledge it with what you checked.",
    );
    h.open("p", &[]);
    if all {
        h.open("a", &[("href", "/console/alerts")])
            .text("Show open alerts only")
            .raw("</a>");
    } else {
        h.open("a", &[("href", "/console/alerts?all=1")])
            .text("Show acknowledged alerts too")
            .raw("</a>");
    }
    h.close("p");
    if alerts.is_empty() {
        h.element(
            "p",
            &[("id", "no-alerts")],
            if all { "No alerts." } else { "No open alerts." },
        );
    }
    for a in &alerts {
        let id = a.id.to_string();
        h.open(
            "section",
            &[
                ("class", "card alert"),
                ("data-alert", &id),
                ("aria-labelledby", &format!("alert-{id}")),
            ],
        )
        .element(
            "h2",
            &[("id", &format!("alert-{id}"))],
            &format!("Alert {id}: {}", a.who),
        )
        .raw("<dl class=\"identity\"><dt>When (UTC)</dt>")
        .element("dd", &[], &when(a.at))
        .raw("<dt>Patient's NHS number</dt>")
        .element("dd", &[("class", "nhs")], &nhs(&a.nhs_number))
        .raw("<dt>Service</dt>")
        .element("dd", &[], &a.service_id)
        .raw("<dt>Reason given</dt>")
        .element("dd", &[], &a.why)
        .raw("<dt>Access until (UTC)</dt>")
        .element("dd", &[], &a.ends_at.map(when).unwrap_or_default())
        .raw("<dt>Opened under it</dt>")
        .element(
            "dd",
            &[],
            &if a.opened.is_empty() {
                "nothing yet".to_string()
            } else {
                a.opened
                    .iter()
                    .map(|o| {
                        format!(
                            "{} {}{}",
                            o.action,
                            when(o.at),
                            o.section
                                .as_deref()
                                .map(|s| format!(" ({s})"))
                                .unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        )
        .raw("</dl>");
        match &a.acknowledged {
            Some(ack) => {
                h.element(
                    "p",
                    &[("class", "notice")],
                    &format!("Acknowledged {} by {}: {}", when(ack.at), ack.by, ack.note),
                );
            }
            None => {
                let (fields, errors) = match failed {
                    Some((fid, f, e)) if fid == a.id => (f.clone(), e.clone()),
                    _ => (Fields::default(), Errors::none()),
                };
                form(
                    &mut h,
                    who,
                    &format!("/console/alerts/{id}/ack"),
                    &format!("ack-form-{id}"),
                    |h| {
                        errors.general_into(h, &format!("ack-error-{id}"));
                        input(
                            h,
                            Input::new(
                                &format!("note-{id}"),
                                "note",
                                "What you checked",
                                fields.get("note"),
                            )
                            .required(),
                            &errors,
                        );
                        h.raw("<button type=\"submit\" class=\"ack\">Acknowledge</button>");
                    },
                );
            }
        }
        h.close("section");
    }
    page(
        status,
        Some(who),
        "Break-glass alerts",
        "/console/alerts",
        notice,
        &h,
    )
}

pub async fn alerts(
    State(state): State<AppState>,
    who: Console,
    Query(q): Query<AlertsQuery>,
) -> Result<Response, Response> {
    who.require(ROLE)?;
    let notice = super::done_notice(q.done.as_deref());
    Ok(alerts_page(&state, &who, StatusCode::OK, q.all.is_some(), None, notice).await)
}

pub async fn ack(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    posted: Posted,
) -> Result<Response, Response> {
    let who = &posted.who;
    who.require(ROLE)?;
    match breakglass::ack(
        state.store.as_ref(),
        id,
        &format!("user:{}", who.user.username),
        posted.fields.get("note"),
        Utc::now(),
    )
    .await
    {
        Ok(()) => Ok(see_other("/console/alerts?done=acknowledged")),
        Err(BreakGlassFailure::Store(e)) => Err(super::internal(&e.to_string())),
        Err(e) => {
            let status = match e {
                BreakGlassFailure::NotFound(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let errors = Errors::from_message(&e.to_string(), &["note"]);
            Ok(alerts_page(
                &state,
                who,
                status,
                false,
                Some((id, &posted.fields, &errors)),
                None,
            )
            .await)
        }
    }
}

fn access_page(
    who: &Console,
    status: StatusCode,
    fields: &Fields,
    errors: &Errors,
    report: Option<&access::AccessReport>,
) -> Response {
    let mut h = Html::new();
    h.element(
        "p",
        &[],
        "Who accessed a patient's record through Doorstep: records sent to devices, records \
         opened (with the device's time and whether it was offline), emergency access, notes. \
         Reading this report is itself recorded.",
    );
    form(&mut h, who, "/console/access", "access-form", |h| {
        errors.general_into(h, "access-error");
        input(
            h,
            Input::new(
                "nhs_number",
                "nhs_number",
                "Patient's NHS number",
                fields.get("nhs_number"),
            )
            .hint("10 digits, spaces allowed")
            .required()
            .extra(&[("inputmode", "numeric"), ("autocomplete", "off")]),
            errors,
        );
        input(
            h,
            Input::new("from", "from", "From (optional)", fields.get("from")).kind("date"),
            errors,
        );
        h.raw("<button type=\"submit\" id=\"report\">Show who accessed the record</button>");
    });
    if let Some(r) = report {
        h.element("h2", &[("id", "report-heading")], "Accesses")
            .open("p", &[("id", "report-summary")])
            .text(&format!(
                "NHS number {} (practice {}): {} accesses{}.",
                nhs(&r.nhs_number),
                r.practice,
                r.accesses.len(),
                r.from.map(|d| format!(" since {d}")).unwrap_or_default()
            ))
            .close("p");
        if !r.accesses.is_empty() {
            table_open(
                &mut h,
                "accesses",
                "Accesses, in the order they happened",
                &["When (UTC)", "Who", "Service", "What", "Offline"],
            );
            for a in &r.accesses {
                h.raw("<tr>")
                    .element("td", &[], &when(a.at))
                    .element("td", &[], &a.who)
                    .element("td", &[], a.service.as_deref().unwrap_or(""))
                    .element("td", &[], &a.what)
                    .element(
                        "td",
                        &[],
                        match a.offline {
                            Some(true) => "yes",
                            Some(false) => "no",
                            None => "",
                        },
                    )
                    .raw("</tr>");
            }
            table_close(&mut h);
        }
    }
    page(
        status,
        Some(who),
        "Access report",
        "/console/access",
        None,
        &h,
    )
}

pub async fn access(who: Console) -> Result<Response, Response> {
    who.require(ROLE)?;
    Ok(access_page(
        &who,
        StatusCode::OK,
        &Fields::default(),
        &Errors::none(),
        None,
    ))
}

pub async fn report(State(state): State<AppState>, posted: Posted) -> Result<Response, Response> {
    let who = &posted.who;
    who.require(ROLE)?;
    let f = &posted.fields;
    let from = f.get("from").trim();
    let from = if from.is_empty() {
        None
    } else {
        match NaiveDate::parse_from_str(from, "%Y-%m-%d") {
            Ok(d) => Some(d),
            Err(_) => {
                let errors = Errors::field("from", format!("{from:?} is not a date (YYYY-MM-DD)"));
                return Ok(access_page(
                    who,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    f,
                    &errors,
                    None,
                ));
            }
        }
    };
    let nhs = f.get("nhs_number").replace(' ', "");
    match access::audited_report(
        state.store.as_ref(),
        &format!("user:{}", who.user.username),
        &nhs,
        from,
        Utc::now(),
    )
    .await
    {
        Ok(r) => Ok(access_page(
            who,
            StatusCode::OK,
            f,
            &Errors::none(),
            Some(&r),
        )),
        Err(AccessFailure::Store(e)) => Err(super::internal(&e.to_string())),
        Err(e @ AccessFailure::NotFound) => Ok(access_page(
            who,
            StatusCode::NOT_FOUND,
            f,
            &Errors::field("nhs_number", e.to_string()),
            None,
        )),
        Err(e) => Ok(access_page(
            who,
            StatusCode::UNPROCESSABLE_ENTITY,
            f,
            &Errors::from_message(&e.to_string(), &["nhs_number"]),
            None,
        )),
    }
}
