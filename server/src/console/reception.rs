//! A receptionist's pages: sessions with free slots, a session's bookings of her practice,
//! the exact search of her practice's patients, booking after seeing who it is, cancelling.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{Duration, NaiveDate, Utc};

use super::html::Html;
use super::{
    Console, Done, Errors, Fields, Input, Posted, day, form, input, nhs, page, see_other, select,
    staff_errors, table_close, table_open, when,
};
use crate::api::AppState;
use crate::bookings::{self, BookRequest, PatientMatch, PatientSearch, SessionView, StaffFailure};

const ROLE: &str = bookings::RECEPTIONIST;

/// The sessions she can book into from the start of today to a week ahead (and the one
/// asked for, up to the API's longest range).
async fn sessions_ahead(
    state: &AppState,
    who: &Console,
    days: i64,
) -> Result<Vec<SessionView>, Response> {
    let now = Utc::now();
    let start = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc();
    bookings::sessions_for(
        state.store.as_ref(),
        &who.user,
        start,
        start + Duration::days(days),
        now,
    )
    .await
    .map_err(|e| failure_page(who, &e))
}

fn failure_page(who: &Console, e: &StaffFailure) -> Response {
    let status = match e {
        StaffFailure::Refused(_) => StatusCode::FORBIDDEN,
        StaffFailure::NotFound(_) => StatusCode::NOT_FOUND,
        StaffFailure::Store(_) => return super::internal(&e.to_string()),
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    page(
        status,
        Some(who),
        "Could not do this",
        "",
        None,
        Html::new().element(
            "p",
            &[("class", "problem"), ("id", "problem")],
            &e.to_string(),
        ),
    )
}

pub async fn sessions(
    State(state): State<AppState>,
    who: Console,
    done: Query<Done>,
) -> Result<Response, Response> {
    who.require(ROLE)?;
    // Only sessions still to come: an ended one cannot be booked (tonight's, after 20:30,
    // was listed first and opened on a page with nothing to do).
    let now = Utc::now();
    let sessions: Vec<SessionView> = sessions_ahead(&state, &who, 8)
        .await?
        .into_iter()
        .filter(|s| s.ends_at > now)
        .collect();
    let mut h = Html::new();
    h.element(
        "p",
        &[],
        "Sessions still to come of services your practice shares records with, for a week. \
         Open one to see your practice's bookings and to book a patient.",
    );
    if sessions.is_empty() {
        h.element(
            "p",
            &[("id", "no-sessions")],
            "No sessions are published for the coming week.",
        );
    } else {
        table_open(
            &mut h,
            "sessions",
            "Sessions",
            &[
                "When (UTC)",
                "Clinician",
                "Service",
                "Free slots",
                "Your bookings",
                "Open",
            ],
        );
        for s in &sessions {
            h.open("tr", &[("data-session", &s.id)])
                .element(
                    "td",
                    &[],
                    &format!("{}–{}", when(s.starts_at), s.ends_at.format("%H:%M")),
                )
                .element("td", &[], &s.clinician_name)
                .element("td", &[], &s.service_id)
                .element(
                    "td",
                    &[("class", "num")],
                    &format!("{} of {}", s.free.len(), s.slots),
                )
                .element(
                    "td",
                    &[("class", "num")],
                    &s.bookings
                        .iter()
                        .filter(|b| b.cancelled_at.is_none())
                        .count()
                        .to_string(),
                )
                .raw("<td>")
                .open(
                    "a",
                    &[
                        ("href", &format!("/console/sessions/{}", s.id)),
                        ("class", "open-session"),
                    ],
                )
                .text(&format!("Open session {}", when(s.starts_at)))
                .raw("</a></td></tr>");
        }
        table_close(&mut h);
    }
    Ok(page(
        StatusCode::OK,
        Some(&who),
        "Sessions and bookings",
        "/console/sessions",
        done.notice(),
        &h,
    ))
}

async fn find_session(state: &AppState, who: &Console, id: &str) -> Result<SessionView, Response> {
    sessions_ahead(state, who, 62)
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| {
            failure_page(
                who,
                &StaffFailure::NotFound(
                    "no session of the coming weeks that your practice can book into has this id"
                        .into(),
                ),
            )
        })
}

/// What the session page shows below the session: the search form (with what was typed and
/// its errors), the matches to confirm, and cancel errors.
#[derive(Default)]
struct SessionForms {
    search: Fields,
    search_errors: Errors,
    matches: Option<Vec<PatientMatch>>,
    book: Fields,
    book_errors: Errors,
    /// The cancel form as sent, and what was wrong.
    cancel: Fields,
    cancel_errors: Errors,
}

fn session_page(
    status: StatusCode,
    who: &Console,
    s: &SessionView,
    forms: &SessionForms,
    notice: Option<&str>,
) -> Response {
    let mut h = Html::new();
    h.open(
        "section",
        &[("class", "card"), ("aria-labelledby", "session-heading")],
    )
    .element("h2", &[("id", "session-heading")], "This session")
    .open("p", &[("id", "session-summary")])
    .text(&format!(
        "{}–{} UTC with {} ({}), {} slots, {} booked, {} free.",
        when(s.starts_at),
        s.ends_at.format("%H:%M"),
        s.clinician_name,
        s.service_id,
        s.slots,
        s.booked,
        s.free.len()
    ))
    .close("p")
    .close("section");

    // Her practice's bookings.
    h.element(
        "h2",
        &[("id", "bookings-heading")],
        "Your practice's bookings",
    );
    let live: Vec<_> = s
        .bookings
        .iter()
        .filter(|b| b.cancelled_at.is_none())
        .collect();
    if live.is_empty() {
        h.element("p", &[("id", "no-bookings")], "None yet.");
    } else {
        table_open(
            &mut h,
            "bookings",
            "Bookings of your practice's patients",
            &["Slot (UTC)", "Patient", "Born", "NHS number", "Reason"],
        );
        for b in &live {
            h.open("tr", &[("data-booking", &b.booking_id.to_string())])
                .element("td", &[], &b.starts_at.format("%H:%M").to_string())
                .element("td", &[("class", "patient-name")], &b.patient.name)
                .element(
                    "td",
                    &[],
                    &b.patient.birth_date.map(day).unwrap_or_default(),
                )
                .element("td", &[("class", "nhs")], &nhs(&b.patient.nhs_number))
                .element("td", &[], &b.reason)
                .raw("</tr>");
        }
        table_close(&mut h);
        // One form below the table (a form in a cell would hide its error on a phone).
        let options: Vec<(String, String)> = live
            .iter()
            .map(|b| {
                (
                    b.booking_id.to_string(),
                    format!(
                        "{} {}, born {}, NHS {}",
                        b.starts_at.format("%H:%M"),
                        b.patient.name,
                        b.patient.birth_date.map(day).unwrap_or_default(),
                        nhs(&b.patient.nhs_number)
                    ),
                )
            })
            .collect();
        let (fields, errors) = (&forms.cancel, &forms.cancel_errors);
        h.element("h3", &[("id", "cancel-heading")], "Cancel a booking");
        form(
            &mut h,
            who,
            &format!("/console/sessions/{}/cancel#cancel-heading", s.id),
            "cancel-form",
            |h| {
                errors.general_into(h, "cancel-error");
                select(
                    h,
                    "cancel-booking",
                    "booking_id",
                    "Booking",
                    &options,
                    fields.get("booking_id"),
                    errors,
                );
                input(
                    h,
                    Input::new(
                        "cancel-reason",
                        "reason",
                        "Why cancel",
                        fields.get("reason"),
                    )
                    .required(),
                    errors,
                );
                h.raw("<button type=\"submit\" class=\"danger\" id=\"cancel\">Cancel the booking</button>");
            },
        );
    }

    // Book a patient: search first.
    h.element("h2", &[("id", "book-heading")], "Book a patient");
    if s.free.is_empty() {
        h.element(
            "p",
            &[("id", "session-full")],
            "No free slots: this session is full.",
        );
    } else {
        h.element(
            "p",
            &[("id", "search-hint")],
            "Find a patient registered at your practice: the NHS number alone, or the family \
             name and date of birth together. The search is exact.",
        );
        form(
            &mut h,
            who,
            &format!("/console/sessions/{}/search#book-heading", s.id),
            "search-form",
            |h| {
                forms.search_errors.general_into(h, "search-error");
                input(
                    h,
                    Input::new(
                        "nhs_number",
                        "nhs_number",
                        "NHS number",
                        forms.search.get("nhs_number"),
                    )
                    .hint("10 digits, spaces allowed")
                    .extra(&[("inputmode", "numeric"), ("autocomplete", "off")]),
                    &forms.search_errors,
                );
                input(
                    h,
                    Input::new(
                        "family",
                        "family",
                        "Family name",
                        forms.search.get("family"),
                    )
                    .extra(&[("autocomplete", "off")]),
                    &forms.search_errors,
                );
                input(
                    h,
                    Input::new(
                        "birth_date",
                        "birth_date",
                        "Date of birth",
                        forms.search.get("birth_date"),
                    )
                    .kind("date"),
                    &forms.search_errors,
                );
                h.raw("<button type=\"submit\" id=\"search\">Search</button>");
            },
        );
    }
    if let Some(matches) = &forms.matches {
        h.element(
            "h2",
            &[("id", "matches-heading")],
            "Check it is the right patient",
        );
        if matches.is_empty() {
            h.element(
                "p",
                &[("id", "no-match"), ("class", "problem")],
                "No patient registered at your practice matches exactly. Check the NHS number, \
                 or the family name and date of birth.",
            );
        }
        let slots: Vec<(String, String)> = s
            .free
            .iter()
            .map(|f| {
                (
                    f.slot.to_string(),
                    format!("{} UTC", f.starts_at.format("%H:%M")),
                )
            })
            .collect();
        for (i, m) in matches.iter().enumerate() {
            let chosen = forms.book.get("patient_id") == m.patient_id;
            let errors = if chosen {
                forms.book_errors.clone()
            } else {
                Errors::none()
            };
            h.open(
                "section",
                &[
                    ("class", "card match"),
                    ("aria-label", &format!("Patient {}", m.name)),
                ],
            )
            .raw("<dl class=\"identity\">")
            .raw("<dt>Name</dt>")
            .element("dd", &[("class", "match-name")], &m.name)
            .raw("<dt>Date of birth</dt>")
            .element(
                "dd",
                &[("class", "match-born")],
                &m.birth_date
                    .map(day)
                    .unwrap_or_else(|| "not recorded".into()),
            )
            .raw("<dt>NHS number</dt>")
            .element("dd", &[("class", "nhs match-nhs")], &nhs(&m.nhs_number))
            .raw("</dl>");
            form(
                h_mut(&mut h),
                who,
                &format!("/console/sessions/{}/book#matches-heading", s.id),
                &format!("book-form-{i}"),
                |h| {
                    h.open(
                        "input",
                        &[
                            ("type", "hidden"),
                            ("name", "patient_id"),
                            ("value", &m.patient_id),
                        ],
                    )
                    .open(
                        "input",
                        &[
                            ("type", "hidden"),
                            ("name", "nhs_number"),
                            ("value", &m.nhs_number),
                        ],
                    );
                    errors.general_into(h, &format!("book-error-{i}"));
                    select(
                        h,
                        &format!("slot-{i}"),
                        "slot",
                        "Slot",
                        &slots,
                        if chosen { forms.book.get("slot") } else { "" },
                        &errors,
                    );
                    input(
                        h,
                        Input::new(
                            &format!("reason-{i}"),
                            "reason",
                            "Reason for the appointment",
                            if chosen { forms.book.get("reason") } else { "" },
                        )
                        .hint("The clinician sees this on their list")
                        .required(),
                        &errors,
                    );
                    h.open("button", &[("type", "submit"), ("class", "book")])
                        .text(&format!("Book {} into this session", m.name))
                        .close("button");
                },
            );
            h.close("section");
        }
    }
    page(
        status,
        Some(who),
        "Session",
        "/console/sessions",
        notice,
        &h,
    )
}

fn h_mut(h: &mut Html) -> &mut Html {
    h
}

pub async fn session(
    State(state): State<AppState>,
    who: Console,
    Path(id): Path<String>,
    done: Query<Done>,
) -> Result<Response, Response> {
    who.require(ROLE)?;
    let s = find_session(&state, &who, &id).await?;
    Ok(session_page(
        StatusCode::OK,
        &who,
        &s,
        &SessionForms::default(),
        done.notice(),
    ))
}

fn search_of(fields: &Fields) -> Result<PatientSearch, Errors> {
    let text = |name: &str| {
        let v = fields.get(name).trim();
        (!v.is_empty()).then(|| v.to_string())
    };
    let birth_date = match text("birth_date") {
        None => None,
        Some(d) => Some(NaiveDate::parse_from_str(&d, "%Y-%m-%d").map_err(|_| {
            Errors::field("birth_date", format!("{d:?} is not a date (YYYY-MM-DD)"))
        })?),
    };
    Ok(PatientSearch {
        nhs_number: text("nhs_number"),
        family: text("family"),
        birth_date,
    })
}

const SEARCH_FIELDS: &[&str] = &["nhs_number", "family", "birth_date"];

pub async fn search(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted,
) -> Result<Response, Response> {
    let who = &posted.who;
    who.require(ROLE)?;
    let s = find_session(&state, who, &id).await?;
    let mut forms = SessionForms {
        search: posted.fields.clone(),
        ..SessionForms::default()
    };
    let query = match search_of(&posted.fields) {
        Ok(q) => q,
        Err(errors) => {
            forms.search_errors = errors;
            return Ok(session_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                who,
                &s,
                &forms,
                None,
            ));
        }
    };
    match bookings::search(state.store.as_ref(), &who.user, &query, Utc::now()).await {
        Ok(matches) => {
            forms.matches = Some(matches);
            Ok(session_page(StatusCode::OK, who, &s, &forms, None))
        }
        Err(e @ StaffFailure::Invalid(_)) => {
            forms.search_errors = staff_errors(&e, SEARCH_FIELDS);
            Ok(session_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                who,
                &s,
                &forms,
                None,
            ))
        }
        Err(e) => Err(failure_page(who, &e)),
    }
}

pub async fn book(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted,
) -> Result<Response, Response> {
    let who = &posted.who;
    who.require(ROLE)?;
    let s = find_session(&state, who, &id).await?;
    let slot = posted.fields.get("slot").trim();
    let request = BookRequest {
        patient_id: posted.fields.get("patient_id").to_string(),
        slot: if slot.is_empty() {
            None
        } else {
            slot.parse().ok()
        },
        reason: posted.fields.get("reason").to_string(),
    };
    let outcome = if !slot.is_empty() && request.slot.is_none() {
        Err(StaffFailure::Invalid(format!(
            "slot: {slot:?} is not a slot of this session"
        )))
    } else {
        bookings::book(state.store.as_ref(), &who.user, &id, &request, Utc::now()).await
    };
    match outcome {
        Ok(_) => Ok(see_other(&format!("/console/sessions/{id}?done=booked"))),
        Err(e @ (StaffFailure::Invalid(_) | StaffFailure::Conflict(_))) => {
            // The same patient again (her search, by the NHS number the form carried), the
            // entered values kept and the message by its field.
            let again = PatientSearch {
                nhs_number: Some(posted.fields.get("nhs_number").to_string()),
                family: None,
                birth_date: None,
            };
            let matches = bookings::search(state.store.as_ref(), &who.user, &again, Utc::now())
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|m| m.patient_id == request.patient_id)
                .collect();
            let forms = SessionForms {
                matches: Some(matches),
                book: posted.fields.clone(),
                book_errors: staff_errors(&e, &["slot", "reason"]),
                ..SessionForms::default()
            };
            // The session as it is now (a slot may have gone meanwhile).
            let s = find_session(&state, who, &id).await.unwrap_or(s);
            Ok(session_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                who,
                &s,
                &forms,
                None,
            ))
        }
        Err(e) => Err(failure_page(who, &e)),
    }
}

pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: Posted,
) -> Result<Response, Response> {
    let who = &posted.who;
    who.require(ROLE)?;
    let s = find_session(&state, who, &id).await?;
    let chosen = posted.fields.get("booking_id").trim();
    // Only a booking the page offered (one of her practice's on this session).
    let booking = chosen
        .parse::<i64>()
        .ok()
        .filter(|b| s.bookings.iter().any(|v| v.booking_id == *b));
    let outcome = match booking {
        None => Err(StaffFailure::Invalid(
            "booking_id: choose one of the bookings listed".into(),
        )),
        Some(booking_id) => {
            bookings::cancel(
                state.store.as_ref(),
                &who.user,
                booking_id,
                posted.fields.get("reason"),
                Utc::now(),
            )
            .await
        }
    };
    match outcome {
        Ok(()) => Ok(see_other(&format!("/console/sessions/{id}?done=cancelled"))),
        Err(e @ (StaffFailure::Invalid(_) | StaffFailure::Conflict(_))) => {
            let forms = SessionForms {
                cancel: posted.fields.clone(),
                cancel_errors: staff_errors(&e, &["booking_id", "reason"]),
                ..SessionForms::default()
            };
            let s = find_session(&state, who, &id).await.unwrap_or(s);
            Ok(session_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                who,
                &s,
                &forms,
                None,
            ))
        }
        Err(e) => Err(failure_page(who, &e)),
    }
}
