//! A team leader's page: the team's caseload; add, discharge, transfer.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{NaiveDate, Utc};

use super::html::Html;
use super::{
    Console, Done, Errors, Fields, Input, Posted, day, form, input, nhs, page, see_other,
    staff_errors, table_close, table_open, when,
};
use crate::api::AppState;
use crate::bookings::StaffFailure;
use crate::caseloads::{self, Addition};

const ROLE: &str = caseloads::TEAM_LEADER;

/// Which of the page's three forms was sent, with what and what was wrong.
#[derive(Default)]
struct Sent {
    form: &'static str,
    fields: Fields,
    errors: Errors,
}

async fn caseload_page(
    state: &AppState,
    who: &Console,
    status: StatusCode,
    sent: &Sent,
    notice: Option<&str>,
) -> Response {
    let caseload = match caseloads::caseload(state.store.as_ref(), &who.user, Utc::now()).await {
        Ok(c) => c,
        Err(StaffFailure::Store(e)) => return super::internal(&e.to_string()),
        Err(e) => {
            return page(
                StatusCode::FORBIDDEN,
                Some(who),
                "Caseload",
                "/console/caseload",
                None,
                Html::new().element("p", &[("class", "problem")], &e.to_string()),
            );
        }
    };
    let of = |form: &str| {
        if sent.form == form {
            (sent.fields.clone(), sent.errors.clone())
        } else {
            (Fields::default(), Errors::none())
        }
    };
    let mut h = Html::new();
    h.open("p", &[("id", "caseload-summary")])
        .text(&format!(
            "Team {} of {}: {} patients on the caseload.",
            caseload.team,
            caseload.service_id,
            caseload.entries.len()
        ))
        .close("p");

    let (fields, errors) = of("add");
    h.element("h2", &[("id", "add-heading")], "Add a patient");
    form(&mut h, who, "/console/caseload/add", "add-form", |h| {
        errors.general_into(h, "add-error");
        input(
            h,
            Input::new(
                "add-nhs",
                "nhs_number",
                "NHS number",
                fields.get("nhs_number"),
            )
            .hint("10 digits, spaces allowed")
            .required()
            .extra(&[("inputmode", "numeric"), ("autocomplete", "off")]),
            &errors,
        );
        input(
            h,
            Input::new(
                "add-reason",
                "reason",
                "Reason for visits",
                fields.get("reason"),
            )
            .required(),
            &errors,
        );
        input(
            h,
            Input::new(
                "add-end",
                "expected_end",
                "Expected end (a review date)",
                fields.get("expected_end"),
            )
            .kind("date")
            .required(),
            &errors,
        );
        h.raw("<button type=\"submit\" id=\"add\">Add to the caseload</button>");
    });

    let (fields, errors) = of("discharge");
    h.element("h2", &[("id", "discharge-heading")], "Discharge a patient");
    form(
        &mut h,
        who,
        "/console/caseload/discharge",
        "discharge-form",
        |h| {
            errors.general_into(h, "discharge-error");
            input(
                h,
                Input::new(
                    "discharge-nhs",
                    "nhs_number",
                    "NHS number",
                    fields.get("nhs_number"),
                )
                .required()
                .extra(&[("inputmode", "numeric"), ("autocomplete", "off")]),
                &errors,
            );
            input(
                h,
                Input::new(
                    "discharge-reason",
                    "reason",
                    "Why discharge",
                    fields.get("reason"),
                )
                .required(),
                &errors,
            );
            h.raw("<button type=\"submit\" class=\"danger\" id=\"discharge\">Discharge</button>");
        },
    );

    let (fields, errors) = of("transfer");
    h.element(
        "h2",
        &[("id", "transfer-heading")],
        "Transfer a patient to another team",
    );
    form(
        &mut h,
        who,
        "/console/caseload/transfer",
        "transfer-form",
        |h| {
            errors.general_into(h, "transfer-error");
            input(
                h,
                Input::new(
                    "transfer-nhs",
                    "nhs_number",
                    "NHS number",
                    fields.get("nhs_number"),
                )
                .required()
                .extra(&[("inputmode", "numeric"), ("autocomplete", "off")]),
                &errors,
            );
            input(
                h,
                Input::new("transfer-team", "to_team", "To team", fields.get("to_team"))
                    .hint("Another team of your service")
                    .required(),
                &errors,
            );
            input(
                h,
                Input::new(
                    "transfer-reason",
                    "reason",
                    "Why transfer",
                    fields.get("reason"),
                )
                .required(),
                &errors,
            );
            h.raw("<button type=\"submit\" id=\"transfer\">Transfer</button>");
        },
    );

    h.element("h2", &[("id", "caseload-heading")], "On the caseload");
    if caseload.entries.is_empty() {
        h.element("p", &[("id", "caseload-empty")], "No patients yet.");
    } else {
        table_open(
            &mut h,
            "caseload",
            "The team's caseload",
            &["Patient", "Born", "NHS number", "Reason", "Since (UTC)"],
        );
        for e in &caseload.entries {
            h.raw("<tr>")
                .element("td", &[("class", "patient-name")], &e.patient.name)
                .element(
                    "td",
                    &[],
                    &e.patient.birth_date.map(day).unwrap_or_default(),
                )
                .element("td", &[("class", "nhs")], &nhs(&e.patient.nhs_number))
                .element("td", &[], &e.reason)
                .element("td", &[], &when(e.since))
                .raw("</tr>");
        }
        table_close(&mut h);
    }
    page(
        status,
        Some(who),
        "Caseload",
        "/console/caseload",
        notice,
        &h,
    )
}

pub async fn caseload(
    State(state): State<AppState>,
    who: Console,
    done: Query<Done>,
) -> Result<Response, Response> {
    who.require(ROLE)?;
    Ok(caseload_page(
        &state,
        &who,
        StatusCode::OK,
        &Sent::default(),
        done.notice(),
    )
    .await)
}

async fn answer(
    state: &AppState,
    posted: &Posted,
    form: &'static str,
    outcome: Result<(), StaffFailure>,
    done: &str,
) -> Response {
    match outcome {
        Ok(()) => see_other(&format!("/console/caseload?done={done}")),
        Err(StaffFailure::Store(e)) => super::internal(&e.to_string()),
        Err(e) => {
            let status = match e {
                StaffFailure::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                StaffFailure::Refused(_) => StatusCode::FORBIDDEN,
                StaffFailure::NotFound(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::CONFLICT,
            };
            let sent = Sent {
                form,
                fields: posted.fields.clone(),
                errors: staff_errors(&e, &["nhs_number", "reason", "expected_end", "to_team"]),
            };
            caseload_page(state, &posted.who, status, &sent, None).await
        }
    }
}

pub async fn add(State(state): State<AppState>, posted: Posted) -> Result<Response, Response> {
    posted.who.require(ROLE)?;
    let end = posted.fields.get("expected_end").trim();
    let outcome = match (end.is_empty(), NaiveDate::parse_from_str(end, "%Y-%m-%d")) {
        (false, Err(_)) => Err(StaffFailure::Invalid(format!(
            "expected_end: {end:?} is not a date (YYYY-MM-DD)"
        ))),
        (_, parsed) => {
            let addition = Addition {
                nhs_number: posted.fields.get("nhs_number").to_string(),
                reason: posted.fields.get("reason").to_string(),
                expected_end: parsed.ok(),
            };
            caseloads::add(
                state.store.as_ref(),
                &posted.who.user,
                &addition,
                Utc::now(),
            )
            .await
            .map(|_| ())
        }
    };
    Ok(answer(&state, &posted, "add", outcome, "added").await)
}

pub async fn discharge(
    State(state): State<AppState>,
    posted: Posted,
) -> Result<Response, Response> {
    posted.who.require(ROLE)?;
    let outcome = caseloads::discharge(
        state.store.as_ref(),
        &posted.who.user,
        posted.fields.get("nhs_number"),
        posted.fields.get("reason"),
        Utc::now(),
    )
    .await;
    Ok(answer(&state, &posted, "discharge", outcome, "discharged").await)
}

pub async fn transfer(State(state): State<AppState>, posted: Posted) -> Result<Response, Response> {
    posted.who.require(ROLE)?;
    let outcome = caseloads::transfer(
        state.store.as_ref(),
        &posted.who.user,
        posted.fields.get("nhs_number"),
        posted.fields.get("to_team"),
        posted.fields.get("reason"),
        Utc::now(),
    )
    .await;
    Ok(answer(&state, &posted, "transfer", outcome, "transferred").await)
}
