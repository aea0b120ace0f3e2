//! A patient's record: the banner (always visible), section tabs, "record as of" and source on
//! every section, and the count of items withheld under the sharing agreements.

use chrono::{DateTime, Utc};
use doorstep_ipc::{IpcErrorKind, PatientRecord, Withheld};
use doorstep_record::trend;
use doorstep_record::views::{
    AlertItem, AlertKind, AllergyItem, DocumentItem, EncounterItem, ImmunisationItem,
    MedicationItem, ObservationSeries, PatientDetails, ProblemItem, ProcedureItem, Provenance,
};
use leptos::ev;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::{Ctx, Load, Screen, focus, format};

/// The record's tabs, in order. `key` is the `data-section` attribute and the section name the
/// shell uses in withheld counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Summary,
    Problems,
    Medications,
    Allergies,
    Encounters,
    Observations,
    Immunisations,
    Procedures,
    Documents,
    Alerts,
}

impl Tab {
    pub const ALL: [Tab; 10] = [
        Tab::Summary,
        Tab::Problems,
        Tab::Medications,
        Tab::Allergies,
        Tab::Encounters,
        Tab::Observations,
        Tab::Immunisations,
        Tab::Procedures,
        Tab::Documents,
        Tab::Alerts,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Tab::Summary => "summary",
            Tab::Problems => "problems",
            Tab::Medications => "medications",
            Tab::Allergies => "allergies",
            Tab::Encounters => "encounters",
            Tab::Observations => "observations",
            Tab::Immunisations => "immunisations",
            Tab::Procedures => "procedures",
            Tab::Documents => "documents",
            Tab::Alerts => "alerts",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Tab::Summary => "Summary",
            Tab::Problems => "Problems",
            Tab::Medications => "Medications",
            Tab::Allergies => "Allergies",
            Tab::Encounters => "Encounters",
            Tab::Observations => "Observations",
            Tab::Immunisations => "Immunisations",
            Tab::Procedures => "Procedures",
            Tab::Documents => "Documents",
            Tab::Alerts => "Alerts",
        }
    }

    fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }
}

/// Items withheld from what `tab` shows: its own section, or every section for the summary.
pub fn withheld_for(tab: Tab, withheld: &[Withheld]) -> u32 {
    withheld
        .iter()
        .filter(|w| tab == Tab::Summary || w.section == tab.key())
        .map(|w| w.count)
        .sum()
}

pub fn alert_label(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::Dnacpr => "DNACPR",
        AlertKind::Respect => "ReSPECT",
        AlertKind::Safeguarding => "Safeguarding",
        AlertKind::Other => "Alert",
    }
}

/// What an alert badge in the banner says: the kind for the well-known ones, else its text.
fn banner_alert_text(a: &AlertItem) -> String {
    match a.kind {
        AlertKind::Other => {
            let text = a.text.trim();
            if text.chars().count() > 48 {
                let cut: String = text.chars().take(47).collect();
                format!("{}…", cut.trim_end())
            } else if text.is_empty() {
                "Alert".to_owned()
            } else {
                text.to_owned()
            }
        }
        kind => alert_label(kind).to_owned(),
    }
}

fn alert_class(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::Dnacpr => "badge badge-dnacpr",
        AlertKind::Respect => "badge badge-respect",
        AlertKind::Safeguarding => "badge badge-safeguarding",
        AlertKind::Other => "badge badge-other",
    }
}

fn allergy_text(a: &AllergyItem) -> String {
    let mut text = a.substance.clone();
    if !a.reactions.is_empty() {
        text.push_str(&format!(" ({})", a.reactions.join(", ")));
    }
    text
}

fn back_to_list(ctx: Ctx) {
    ctx.screen.set(Screen::List);
}

#[component]
pub fn RecordScreen(patient_id: String) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let compose_for = StoredValue::new(patient_id.clone());
    let record = RwSignal::new(Load::<PatientRecord>::Loading);
    let tab = RwSignal::new(Tab::Summary);
    let latest = StoredValue::new(0u64);
    let switched_from = RwSignal::new(None::<String>);

    Effect::new(move |_| {
        ctx.data_version.track();
        let ticket = latest.get_value() + 1;
        latest.set_value(ticket);
        let id = patient_id.clone();
        spawn_local(async move {
            let answer = ctx.backend.patient_record(&id).await;
            if latest.get_value() != ticket {
                return;
            }
            match answer {
                Ok(r) => {
                    let first = matches!(record.get_untracked(), Load::Loading);
                    if first {
                        // Opening another patient than the one shown last says so (H2).
                        let name = r.view.patient.name_display.clone();
                        let previous = ctx.shown_patient.get_untracked();
                        switched_from.set(previous.filter(|(pid, _)| *pid != id).map(|(_, n)| n));
                        ctx.shown_patient.set(Some((id.clone(), name)));
                    }
                    record.set(Load::Ready(r));
                    if first {
                        request_animation_frame(|| focus(".tab[aria-selected=\"true\"]"));
                    }
                }
                Err(e) => {
                    ctx.note_error(&e);
                    record.set(Load::Failed(e));
                }
            }
        });
    });

    // Every section the clinician opens is audited (offline too, through the outbox): once
    // per opening, not again when a sync refreshes the record on screen.
    let logged = StoredValue::new(None::<Tab>);
    let viewed_id = StoredValue::new(compose_for.get_value());
    Effect::new(move |_| {
        let t = tab.get();
        let ready = record.with(|r| matches!(r, Load::Ready(_)));
        if !ready || logged.get_value() == Some(t) {
            return;
        }
        logged.set_value(Some(t));
        let id = viewed_id.get_value();
        spawn_local(async move {
            if let Err(e) = ctx.backend.record_viewed(&id, t.key()).await {
                ctx.note_error(&e);
            }
        });
    });

    // Escape returns to the list from anywhere on this screen.
    let esc = window_event_listener(ev::keydown, move |e| {
        if e.key() == "Escape" && !e.default_prevented() {
            e.prevent_default();
            back_to_list(ctx);
        }
    });
    on_cleanup(move || esc.remove());

    view! {
        <section class="screen record" aria-label="Patient record">
            <div class="record-nav">
                <button
                    id="back-to-list"
                    class="button secondary"
                    type="button"
                    on:click=move |_| back_to_list(ctx)
                >
                    "← My list"
                    <span class="key-hint">"Esc"</span>
                </button>
                <button
                    id="write-note"
                    class="button"
                    type="button"
                    on:click=move |_| {
                        ctx.screen.set(Screen::Compose {
                            patient_id: compose_for.get_value(),
                        })
                    }
                >
                    "Write note"
                </button>
            </div>
            {move || match record.get() {
                Load::Loading => {
                    view! {
                        <div class="state-box" role="status">
                            <span class="spinner" aria-hidden="true"></span>
                            <p class="state-title">"Opening the record…"</p>
                        </div>
                    }
                        .into_any()
                }
                Load::Failed(e) if e.kind == IpcErrorKind::OfflineTooLong => {
                    view! { <crate::screens::list::OfflineTooLong message=e.message /> }
                        .into_any()
                }
                Load::Failed(e) if e.kind == IpcErrorKind::NotFound => {
                    view! {
                        <div class="state-box" role="alert" id="record-missing">
                            <p class="state-title">"This patient is no longer on your list"</p>
                            <p>
                                "Their record has been removed from this device. "
                                "Patients leave the device when their list entry ends."
                            </p>
                        </div>
                    }
                        .into_any()
                }
                Load::Failed(e) => {
                    view! {
                        <div class="state-box error" role="alert">
                            <p class="state-title">"The record could not be opened"</p>
                            <p>{e.message}</p>
                            <button
                                class="button"
                                type="button"
                                on:click=move |_| ctx.data_version.update(|v| *v += 1)
                            >
                                "Try again"
                            </button>
                        </div>
                    }
                        .into_any()
                }
                Load::Ready(r) => {
                    let now_showing = r.view.patient.name_display.clone();
                    view! {
                        {move || switched_from.get().map(|before| view! {
                            <p class="notice switch" id="patient-switch" role="status">
                                {format!("Now showing {now_showing}, not {before}: a different patient from the record you had open.")}
                            </p>
                        })}
                        <Record record=r tab=tab />
                    }
                    .into_any()
                }
            }}
        </section>
    }
}

#[component]
fn Record(record: PatientRecord, tab: RwSignal<Tab>) -> impl IntoView {
    let PatientRecord {
        view,
        as_of,
        withheld,
        list_reason,
        break_glass_until,
        stale_after_hours,
        same_name,
    } = record;
    let allergies_withheld = withheld_for(Tab::Allergies, &withheld);
    let view = StoredValue::new(view);
    let withheld = StoredValue::new(withheld);

    let on_tab_key = move |e: ev::KeyboardEvent| {
        let i = tab.get_untracked().index();
        let n = Tab::ALL.len();
        let next = match e.key().as_str() {
            "ArrowRight" => Some((i + 1) % n),
            "ArrowLeft" => Some((i + n - 1) % n),
            "Home" => Some(0),
            "End" => Some(n - 1),
            _ => None,
        };
        if let Some(next) = next {
            e.prevent_default();
            let t = Tab::ALL[next];
            tab.set(t);
            focus(&format!(".tab[data-section=\"{}\"]", t.key()));
        }
    };

    // On a phone the whole banner cannot stay in view without hiding the record: a strip with
    // who this is stays instead (the banner, above, has the same facts for screen readers).
    let strip = view.with_value(|v| {
        let p = &v.patient;
        format!(
            "{} · born {} · NHS {}",
            p.name_display,
            p.birth_date
                .map(format::date)
                .unwrap_or_else(|| "not recorded".to_owned()),
            p.nhs_number_display
                .clone()
                .unwrap_or_else(|| "not recorded".to_owned())
        )
    });
    view! {
        <div class="identity-strip" id="identity-strip" aria-hidden="true">{strip}</div>
        <div class="record-head">
            {view.with_value(|v| {
                view! {
                    {break_glass_until.map(|until| view! {
                        <p class="break-glass-banner" id="break-glass-banner" role="alert">
                            <strong>"EMERGENCY ACCESS (break-glass)"</strong>
                            {format!(
                                ": this patient is not on your list. The access is recorded and \
                                 your privacy officer was alerted. It ends {}.",
                                format::instant(until)
                            )}
                        </p>
                    })}
                    <Banner
                        list_reason=list_reason.clone()
                        patient=v.patient.clone()
                        allergies=v.allergies.clone()
                        allergies_withheld=allergies_withheld
                        alerts=v.alerts.clone()
                        as_of=as_of
                        stale_after_hours=stale_after_hours
                        same_name=same_name
                    />
                }
            })}
            <div class="tabs" role="tablist" aria-label="Record sections" on:keydown=on_tab_key>
                {Tab::ALL
                    .into_iter()
                    .map(|t| {
                        let count = view.with_value(|v| section_count(v, t));
                        view! {
                            <button
                                type="button"
                                role="tab"
                                class="tab"
                                id=format!("tab-{}", t.key())
                                data-section=t.key()
                                aria-controls="section-panel"
                                aria-selected=move || if tab.get() == t { "true" } else { "false" }
                                on:click=move |_| tab.set(t)
                            >
                                {t.label()}
                                {count.map(|c| view! { <span class="tab-count">{c}</span> })}
                            </button>
                        }
                    })
                    .collect_view()}
            </div>
        </div>
        <div
            id="section-panel"
            class="section-panel"
            role="tabpanel"
            aria-labelledby=move || format!("tab-{}", tab.get().key())
            data-section=move || tab.get().key()
        >
            {move || {
                let t = tab.get();
                let hidden = withheld.get_value();
                view! {
                    <SectionHead as_of=as_of withheld=hidden tab=t />
                    {view.with_value(|v| section_body(t, v))}
                }
            }}
        </div>
    }
}

/// The number shown on a tab, for sections that list items.
fn section_count(v: &doorstep_ipc::RecordView, tab: Tab) -> Option<usize> {
    let n = match tab {
        Tab::Summary => return None,
        Tab::Problems => v.problems.active.len() + v.problems.past.len(),
        Tab::Medications => {
            v.medications.current.len() + v.medications.repeat.len() + v.medications.past.len()
        }
        Tab::Allergies => v.allergies.len(),
        Tab::Encounters => v.encounters.len(),
        Tab::Observations => v.observations.len(),
        Tab::Immunisations => v.immunisations.len(),
        Tab::Procedures => v.procedures.len(),
        Tab::Documents => v.documents.len(),
        Tab::Alerts => v.alerts.len(),
    };
    Some(n)
}

#[component]
pub(crate) fn Banner(
    list_reason: String,
    patient: PatientDetails,
    allergies: Vec<AllergyItem>,
    allergies_withheld: u32,
    alerts: Vec<AlertItem>,
    /// When the device last had this record from the server, and the agreements' threshold
    /// past which it is out of date.
    as_of: DateTime<Utc>,
    stale_after_hours: u32,
    /// Another patient on the list has the same name.
    same_name: bool,
) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let stale = move || stale_text(as_of, ctx.now.get(), stale_after_hours);
    let same_name_text = same_name.then(|| {
        format!(
            "Another patient on your list is also called {}: check the date of birth and NHS \
             number before you act on this record.",
            patient.name_display
        )
    });
    let practice = match (&patient.practice_name, &patient.practice_ods) {
        (Some(n), Some(o)) => format!("{n} ({o})"),
        (Some(n), None) => n.clone(),
        (None, Some(o)) => o.clone(),
        (None, None) => "not recorded".to_owned(),
    };
    // A patient confidential at source reaches the device without address and phone: say so,
    // rather than "not recorded", so nobody goes looking for an address that was never lost.
    let address = if patient.address_withheld {
        "Withheld: the patient's details are confidential".to_owned()
    } else if patient.address_display.trim().is_empty() {
        "not recorded".to_owned()
    } else {
        patient.address_display.clone()
    };
    let address_withheld = patient.address_withheld;
    let gender = patient
        .gender
        .as_deref()
        .map(format::status)
        .unwrap_or_else(|| "not recorded".to_owned());
    let nhs = patient
        .nhs_number_display
        .clone()
        .unwrap_or_else(|| "not recorded".to_owned());
    let allergy_text = if allergies.is_empty() {
        "None recorded in the shared record".to_owned()
    } else {
        allergies
            .iter()
            .map(allergy_text)
            .collect::<Vec<_>>()
            .join(" · ")
    };
    let has_allergies = !allergies.is_empty();
    view! {
        <section id="banner" class="banner" class:stale=move || stale().is_some() aria-label="Patient banner">
            {move || stale().map(|t| view! {
                <p class="banner-stale" id="banner-stale" role="status">
                    <strong>"OUT OF DATE. "</strong>{t}
                </p>
            })}
            {same_name_text.map(|t| view! {
                <p class="banner-same-name" id="banner-same-name" role="note">
                    <strong>"SAME NAME. "</strong>{t}
                </p>
            })}
            <div class="banner-main">
                <h1 class="banner-name" id="banner-name">{patient.name_display.clone()}</h1>
                <dl class="banner-facts">
                    <div>
                        <dt>"Born"</dt>
                        <dd id="banner-dob">{format::birth_and_age(patient.birth_date, patient.age)}</dd>
                    </div>
                    <div>
                        <dt>"Gender"</dt>
                        <dd>{gender}</dd>
                    </div>
                    <div>
                        <dt>"NHS number"</dt>
                        <dd class="mono" id="banner-nhs">{nhs}</dd>
                    </div>
                    <div>
                        <dt>"Registered practice"</dt>
                        <dd id="banner-practice">{practice}</dd>
                    </div>
                    <div>
                        <dt>"Address"</dt>
                        <dd id="banner-address" class:withheld=address_withheld data-withheld=address_withheld.to_string()>
                            {address}
                        </dd>
                    </div>
                </dl>
                {(!list_reason.trim().is_empty())
                    .then(|| {
                        view! { <p class="list-reason">"On your list for: " {list_reason}</p> }
                    })}
            </div>
            <div class="banner-flags">
                <div
                    id="banner-allergies"
                    class="banner-allergies"
                    class:none=!has_allergies
                    role="group"
                    aria-label="Allergies"
                >
                    <span class="flag-title">"Allergies"</span>
                    <span class="flag-text">{allergy_text}</span>
                    {(allergies_withheld > 0)
                        .then(|| {
                            view! {
                                <span class="flag-note">
                                    {format!("+{allergies_withheld} withheld")}
                                </span>
                            }
                        })}
                </div>
                {(!alerts.is_empty())
                    .then(|| {
                        view! {
                            <div id="banner-alerts" class="banner-alerts" role="group" aria-label="Alerts">
                                {alerts
                                    .iter()
                                    .map(|a| {
                                        view! {
                                            <span class=alert_class(a.kind) title=a.text.clone()>
                                                {banner_alert_text(a)}
                                            </span>
                                        }
                                    })
                                    .collect_view()}
                            </div>
                        }
                    })}
            </div>
        </section>
    }
}

#[component]
fn SectionHead(as_of: DateTime<Utc>, withheld: Vec<Withheld>, tab: Tab) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let as_of_text = move || {
        format!(
            "Record as of {} ({}), copy held on this device",
            format::instant(as_of),
            format::relative(as_of, ctx.now.get())
        )
    };
    let notice = withheld_notice(tab, &withheld).map(|text| {
        view! {
            <p id="withheld-notice" class="notice withheld" role="note">
                {text}
            </p>
        }
    });
    view! {
        <div class="section-head">
            <h2 class="section-title">{tab.label()}</h2>
            <p id="record-as-of" class="as-of">{as_of_text}</p>
        </div>
        {notice}
    }
}

/// The banner's words when the record is older than the agreements' threshold: `None` while
/// it is not.
pub fn stale_text(
    as_of: DateTime<Utc>,
    now: DateTime<Utc>,
    stale_after_hours: u32,
) -> Option<String> {
    if !doorstep_record::agreement::is_out_of_date(as_of, now, stale_after_hours) {
        return None;
    }
    Some(format!(
        "This record was last updated from the server {} ({}); your agreement treats records \
         older than {} hours as out of date. It may have changed since: sync when you have \
         signal.",
        format::relative(as_of, now),
        format::instant(as_of),
        stale_after_hours
    ))
}

/// "2 items in this section withheld under your sharing agreements. ...", or for the summary
/// the total with the sections they are in. `None` when nothing is withheld.
pub fn withheld_notice(tab: Tab, withheld: &[Withheld]) -> Option<String> {
    let n = withheld_for(tab, withheld);
    if n == 0 {
        return None;
    }
    let (items, them) = if n == 1 {
        ("item", "it")
    } else {
        ("items", "them")
    };
    let place = if tab == Tab::Summary {
        let sections: Vec<String> = withheld
            .iter()
            .filter(|w| w.count > 0)
            .map(|w| format!("{} {}", w.section, w.count))
            .collect();
        format!("in this record ({})", sections.join(", "))
    } else {
        "in this section".to_owned()
    };
    Some(format!(
        "{n} {items} {place} withheld under your sharing agreements. \
         Ask the patient's registered practice if you need {them} for their care."
    ))
}

fn section_body(tab: Tab, v: &doorstep_ipc::RecordView) -> AnyView {
    match tab {
        Tab::Summary => {
            let active = problems(&v.summary.active_problems, "No active problems recorded");
            let meds = medications(
                &v.summary.current_medications,
                "No current medications recorded",
            );
            let allergy_list = allergies(&v.summary.allergies);
            let alert_list = alerts(&v.summary.alerts);
            let recent = encounters(&v.summary.recent_encounters);
            view! {
                <div class="summary-grid">
                    <SubSection title="Active problems">{active}</SubSection>
                    <SubSection title="Current medications">{meds}</SubSection>
                    <SubSection title="Allergies">{allergy_list}</SubSection>
                    <SubSection title="Alerts">{alert_list}</SubSection>
                    <SubSection title="Recent encounters">{recent}</SubSection>
                </div>
            }
            .into_any()
        }
        Tab::Problems => {
            let active = problems(&v.problems.active, "No active problems recorded");
            let past = problems(&v.problems.past, "No past problems recorded");
            view! {
                <SubSection title="Active">{active}</SubSection>
                <SubSection title="Past">{past}</SubSection>
            }
            .into_any()
        }
        Tab::Medications => {
            let current = medications(&v.medications.current, "No current acute medications");
            let repeat = medications(&v.medications.repeat, "No repeat medications");
            let past = medications(&v.medications.past, "No past medications recorded");
            view! {
                <SubSection title="Current (acute)">{current}</SubSection>
                <SubSection title="Repeat">{repeat}</SubSection>
                <SubSection title="Past">{past}</SubSection>
            }
            .into_any()
        }
        Tab::Allergies => allergies(&v.allergies),
        Tab::Encounters => encounters(&v.encounters),
        Tab::Observations => observations(&v.observations),
        Tab::Immunisations => immunisations(&v.immunisations),
        Tab::Procedures => procedures(&v.procedures),
        Tab::Documents => documents(&v.documents),
        Tab::Alerts => alerts(&v.alerts),
    }
}

#[component]
fn SubSection(title: &'static str, children: Children) -> impl IntoView {
    view! {
        <section class="subsection">
            <h3>{title}</h3>
            {children()}
        </section>
    }
}

fn empty(text: &'static str) -> AnyView {
    view! { <p class="empty">{text}</p> }.into_any()
}

/// One item: a title, detail lines and where it came from.
fn item(title: String, details: Vec<String>, provenance: &Provenance) -> impl IntoView + use<> {
    let source = format!("Source: {}", format::provenance(provenance));
    view! {
        <li class="item">
            <div class="item-title">{title}</div>
            {details
                .into_iter()
                .filter(|d| !d.is_empty())
                .map(|d| view! { <div class="item-detail">{d}</div> })
                .collect_view()}
            <div class="item-source">{source}</div>
        </li>
    }
}

/// A section's items as a list of cards (title, details, source), or its empty message.
fn item_list<T>(
    list: &[T],
    none: &'static str,
    class: &'static str,
    card: impl for<'a> Fn(&'a T) -> (String, Vec<String>, &'a Provenance),
) -> AnyView {
    if list.is_empty() {
        return empty(none);
    }
    view! {
        <ul class=class>
            {list
                .iter()
                .map(|x| {
                    let (title, details, provenance) = card(x);
                    item(title, details, provenance)
                })
                .collect_view()}
        </ul>
    }
    .into_any()
}

/// Present parts joined with " · ".
fn dotted(parts: impl IntoIterator<Item = Option<String>>) -> String {
    parts.into_iter().flatten().collect::<Vec<_>>().join(" · ")
}

fn problems(list: &[ProblemItem], none: &'static str) -> AnyView {
    item_list(list, none, "items", |p| {
        let when = dotted([
            p.onset.map(|o| format!("since {}", format::date(o))),
            p.abatement.map(|a| format!("resolved {}", format::date(a))),
            p.clinical_status.as_deref().map(format::status),
        ]);
        (p.text.clone(), vec![when], &p.provenance)
    })
}

fn medications(list: &[MedicationItem], none: &'static str) -> AnyView {
    item_list(list, none, "items", |m| {
        let when = dotted([
            m.start.map(|s| format!("started {}", format::date(s))),
            m.end.map(|e| format!("ended {}", format::date(e))),
            m.status.as_deref().map(format::status),
        ]);
        let details = vec![m.dosage.clone().unwrap_or_default(), when];
        (m.name.clone(), details, &m.provenance)
    })
}

fn allergies(list: &[AllergyItem]) -> AnyView {
    let none = "No allergies recorded in the shared record";
    item_list(list, none, "items allergies", |a| {
        let reaction = if a.reactions.is_empty() {
            String::new()
        } else {
            format!("Reaction: {}", a.reactions.join(", "))
        };
        let grade = dotted([
            a.severity.as_ref().map(|s| format!("severity {s}")),
            a.criticality.as_ref().map(|c| format!("criticality {c}")),
            a.clinical_status.as_deref().map(format::status),
        ]);
        (a.substance.clone(), vec![reaction, grade], &a.provenance)
    })
}

fn alerts(list: &[AlertItem]) -> AnyView {
    if list.is_empty() {
        return empty("No alerts recorded");
    }
    view! {
        <ul class="items">
            {list
                .iter()
                .map(|a| {
                    let source = format!("Source: {}", format::provenance(&a.provenance));
                    view! {
                        <li class="item">
                            <div class="item-title">
                                <span class=alert_class(a.kind)>{alert_label(a.kind)}</span>
                                " "
                                {a.text.clone()}
                            </div>
                            <div class="item-source">{source}</div>
                        </li>
                    }
                })
                .collect_view()}
        </ul>
    }
    .into_any()
}

fn encounters(list: &[EncounterItem]) -> AnyView {
    item_list(list, "No encounters recorded", "items", |e| {
        let when = e
            .start
            .map(format::date_time)
            .unwrap_or_else(|| "date not recorded".to_owned());
        let mut title = format!("{when}: {}", e.kind);
        if let Some(c) = &e.class {
            title.push_str(&format!(" ({c})"));
        }
        let details = vec![
            e.reason
                .clone()
                .map(|r| format!("Reason: {r}"))
                .unwrap_or_default(),
            dotted([e.location.clone(), e.status.as_deref().map(format::status)]),
        ];
        (title, details, &e.provenance)
    })
}

fn observations(list: &[ObservationSeries]) -> AnyView {
    if list.is_empty() {
        return empty("No observations recorded");
    }
    view! {
        <div class="series-list">
            {list
                .iter()
                .map(|s| {
                    let chart = trend::wants_chart(s).then(|| trend::chart(s)).flatten();
                    let charted = chart.is_some();
                    view! {
                        <div class="series-block" class:charted=charted data-code=s.code.code.clone()>
                            {chart.map(trend_chart)}
                            {series_table(s)}
                        </div>
                    }
                })
                .collect_view()}
        </div>
    }
    .into_any()
}

/// A series as an SVG line chart: dates along the bottom, values up the side in the series'
/// unit, the source's reference range as a band, abnormal values as larger diamonds.
fn trend_chart(c: trend::TrendChart) -> impl IntoView {
    let summary = c.summary();
    let line = c.line();
    let unit = c.unit.clone().unwrap_or_default();
    let caption = format!("{}: trend", series_name(&c.name, &unit));
    let view_box = format!("0 0 {} {}", trend::WIDTH, trend::HEIGHT);
    view! {
        <figure class="trend">
            <figcaption class="trend-caption">
                {caption}
                {c.band.as_ref().map(|_| view! {
                    <span class="trend-key"><span class="key-band" aria-hidden="true"></span>"reference range"</span>
                })}
                {c.points.iter().any(|p| p.abnormal).then(|| view! {
                    <span class="trend-key"><span class="key-abnormal" aria-hidden="true">"◆"</span>"abnormal"</span>
                })}
            </figcaption>
            <svg
                class="trend-chart"
                viewBox=view_box
                role="img"
                aria-label=summary
                preserveAspectRatio="xMidYMid meet"
            >
                {c.band.as_ref().map(|b| view! {
                    <rect
                        class="trend-band"
                        x=trend::LEFT
                        y=b.y_high
                        width=trend::RIGHT - trend::LEFT
                        height=(b.y_low - b.y_high).max(1.0)
                    />
                })}
                {c.y_ticks.iter().map(|t| view! {
                    <line class="trend-grid" x1=trend::LEFT x2=trend::RIGHT y1=t.at y2=t.at />
                    <text class="trend-label" x=trend::LEFT - 8.0 y=t.at + 5.0 text-anchor="end">
                        {t.label.clone()}
                    </text>
                }).collect_view()}
                {c.x_ticks.iter().enumerate().map(|(i, t)| {
                    let anchor = if i == 0 { "start" } else if t.at >= trend::RIGHT - 1.0 { "end" } else { "middle" };
                    view! {
                        <text class="trend-label" x=t.at y=trend::HEIGHT - 8.0 text-anchor=anchor>
                            {t.label.clone()}
                        </text>
                    }
                }).collect_view()}
                <path class="trend-line" d=line />
                {c.points.iter().map(|p| {
                    if p.abnormal {
                        let d = format!(
                            "M{:.1} {:.1} l7 7 l-7 7 l-7 -7 z",
                            p.x,
                            p.y - 7.0
                        );
                        view! { <path class="trend-point abnormal" d=d /> }.into_any()
                    } else {
                        view! { <circle class="trend-point" cx=p.x cy=p.y r=4.5 /> }.into_any()
                    }
                }).collect_view()}
            </svg>
        </figure>
    }
}

/// "HbA1c (mmol/mol)", or the name alone when the series has no unit.
fn series_name(name: &str, unit: &str) -> String {
    if unit.is_empty() {
        name.to_owned()
    } else {
        format!("{name} ({unit})")
    }
}

/// Every point of a series, newest first, with its range and abnormal flag in words.
fn series_table(s: &ObservationSeries) -> impl IntoView + use<> {
    let unit = s.unit.clone().unwrap_or_default();
    let caption = series_name(&s.name, &unit);
    let mut points = s.points.clone();
    points.sort_by_key(|p| std::cmp::Reverse(p.when));
    let region = format!("{caption}: values");
    view! {
        // A wide table scrolls within itself, never the page (reflow); the keyboard can
        // scroll it too.
        <div class="table-scroll" tabindex="0" role="region" aria-label=region>
        <table class="series">
            <caption>{caption}</caption>
            <thead>
                <tr>
                    <th scope="col">"Date"</th>
                    <th scope="col" class="num">"Value"</th>
                    <th scope="col">"Source"</th>
                </tr>
            </thead>
            <tbody>
                {points
                    .into_iter()
                    .map(|p| {
                        let value = match (p.value, &p.text) {
                            (Some(v), _) => format!("{} {unit}", format::value(v)).trim().to_owned(),
                            (None, Some(t)) => t.clone(),
                            (None, None) => "no value".to_owned(),
                        };
                        // Outside the source's range or flagged by it: said in words, not only
                        // by colour.
                        let range = match (p.low, p.high) {
                            (Some(l), Some(h)) => {
                                format!(" (range {}–{})", format::value(l), format::value(h))
                            }
                            _ => String::new(),
                        };
                        let abnormal = p.abnormal;
                        view! {
                            <tr class:abnormal=abnormal>
                                <td>{format::date_time(p.when)}</td>
                                <td class="num">
                                    {value}
                                    {abnormal.then(|| view! { <strong class="flag">" abnormal"</strong> })}
                                    <span class="muted">{range}</span>
                                </td>
                                <td class="muted">{format::source(&p.provenance)}</td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
        </div>
    }
}

fn immunisations(list: &[ImmunisationItem]) -> AnyView {
    item_list(list, "No immunisations recorded", "items", |i| {
        let when = dotted([
            Some(format::opt_date(i.date)),
            i.status.as_deref().map(format::status),
        ]);
        (i.vaccine.clone(), vec![when], &i.provenance)
    })
}

fn procedures(list: &[ProcedureItem]) -> AnyView {
    item_list(list, "No procedures recorded", "items", |p| {
        let when = dotted([
            Some(format::opt_date(p.date)),
            p.status.as_deref().map(format::status),
        ]);
        (p.name.clone(), vec![when], &p.provenance)
    })
}

fn documents(list: &[DocumentItem]) -> AnyView {
    if list.is_empty() {
        return empty("No documents or letters");
    }
    view! {
        <ul class="items documents">
            {list
                .iter()
                .map(|d| {
                    let source = format!("Source: {}", format::provenance(&d.provenance));
                    let head = format!("{} · {} · {}", format::opt_date(d.date), d.kind, d.title);
                    let text = d.text.clone();
                    let sections = d.sections.clone();
                    view! {
                        <li class="item">
                            <details>
                                <summary class="item-title">{head}</summary>
                                {(!text.trim().is_empty())
                                    .then(|| view! { <p class="doc-text">{text}</p> })}
                                {sections
                                    .into_iter()
                                    .map(|s| {
                                        view! {
                                            <h4 class="doc-section">{s.title}</h4>
                                            <p class="doc-text">{s.text}</p>
                                        }
                                    })
                                    .collect_view()}
                            </details>
                            <div class="item-source">{source}</div>
                        </li>
                    }
                })
                .collect_view()}
        </ul>
    }
    .into_any()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withheld_counts_per_tab_and_in_total() {
        let w = vec![
            Withheld {
                section: "problems".into(),
                count: 2,
            },
            Withheld {
                section: "medications".into(),
                count: 1,
            },
        ];
        assert_eq!(withheld_for(Tab::Problems, &w), 2);
        assert_eq!(withheld_for(Tab::Medications, &w), 1);
        assert_eq!(withheld_for(Tab::Allergies, &w), 0);
        assert_eq!(withheld_for(Tab::Summary, &w), 3);
        assert_eq!(withheld_notice(Tab::Allergies, &w), None);
        assert_eq!(
            withheld_notice(Tab::Medications, &w).unwrap(),
            "1 item in this section withheld under your sharing agreements. \
             Ask the patient's registered practice if you need it for their care."
        );
        assert!(
            withheld_notice(Tab::Summary, &w)
                .unwrap()
                .starts_with("3 items in this record (problems 2, medications 1) withheld")
        );
    }

    #[test]
    fn a_record_is_out_of_date_only_past_the_threshold() {
        use chrono::TimeZone;
        let as_of = Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap();
        let at = |h: i64| as_of + chrono::Duration::hours(h);
        assert_eq!(stale_text(as_of, at(12), 12), None);
        let text = stale_text(as_of, at(12) + chrono::Duration::minutes(1), 12).unwrap();
        assert!(
            text.starts_with("This record was last updated from the server 12 h ago"),
            "{text}"
        );
        assert!(text.contains("older than 12 hours"), "{text}");
        assert!(stale_text(as_of, at(30), 24).unwrap().contains("1 day ago"));
    }

    #[test]
    fn tab_keys_are_the_record_section_names() {
        for t in Tab::ALL {
            assert_eq!(
                doorstep_record::Section::parse(t.key()).map(|s| s.as_str()),
                Some(t.key())
            );
        }
    }
}
