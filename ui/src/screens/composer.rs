//! The note composer: a consultation note for the patient whose record was open, with vital
//! signs scored by NEWS2 as they are typed, an optional coded problem, and a sign button.
//!
//! Rules (hazards H2 wrong patient, H5 lost note):
//! - The patient's identity (the banner: name, date of birth, NHS number, practice, allergies)
//!   and where the note goes ("to <practice> (<ODS>), when online") are on screen all the time.
//! - What is typed is kept as a draft on the device (encrypted with the cache) at every change,
//!   so a restart or a lock loses nothing; signing turns it into a note in the outbox.
//! - A signed note is never edited; the list below the form shows each with where it stands.
//!   Amending one starts a new note, pre-filled with the earlier text, that replaces it by
//!   reference; both stay listed, the earlier marked as replaced.
//! - The vital signs are read and checked by [`read_vitals`] (pure, tested on the host), the
//!   score by `doorstep_record::news2`.

use doorstep_ipc::{NoteForm, NoteState, NoteSummary, PatientRecord};
use doorstep_record::news2::{self, Acvpu, AirOrOxygen, SpO2Scale, Temperature, Vitals};
use doorstep_record::problems::PICK_LIST;
use leptos::ev;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::{Deserialize, Serialize};

use crate::screens::record::Banner;
use crate::{Ctx, Load, Screen, focus, format};

/// The composer's fields as typed (also the draft kept on the device).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Fields {
    pub text: String,
    pub rr: String,
    pub spo2: String,
    /// `"1"` or `"2"`.
    pub scale: String,
    /// `""`, `"air"` or `"oxygen"`.
    pub o2: String,
    pub sbp: String,
    pub pulse: String,
    /// `""` or one of A, C, V, P, U.
    pub acvpu: String,
    pub temp: String,
    /// A SNOMED CT code of the pick list, or `""`.
    pub problem: String,
    /// The id of the note this one amends, or `""` (kept in the draft, so an amendment
    /// interrupted by a restart is still an amendment).
    pub replaces: String,
}

/// What the list says of a note's place among amendments: "Replaced by the amendment signed
/// …" for a note a later one replaces, "Amends the note signed …" for an amendment.
pub fn amendment_line(note: &NoteSummary, all: &[NoteSummary]) -> Option<String> {
    if let Some(later) = all
        .iter()
        .find(|n| n.replaces.as_deref() == Some(note.id.as_str()))
    {
        return Some(format!(
            "Replaced by the amendment signed {}",
            format::instant(later.signed_at)
        ));
    }
    let earlier = note.replaces.as_deref()?;
    Some(match all.iter().find(|n| n.id == earlier) {
        Some(e) => format!("Amends the note signed {}", format::instant(e.signed_at)),
        None => "Amends an earlier note".to_owned(),
    })
}

/// A note can be amended unless a later note already replaces it or the federation refused it.
pub fn can_amend(note: &NoteSummary, all: &[NoteSummary]) -> bool {
    !matches!(note.state, NoteState::Rejected { .. })
        && !all
            .iter()
            .any(|n| n.replaces.as_deref() == Some(note.id.as_str()))
}

/// The vital signs the fields hold: `Ok(None)` when none was entered, else the set (partial
/// sets allowed), or every problem in words, field by field.
pub fn read_vitals(f: &Fields) -> Result<Option<Vitals>, Vec<String>> {
    let mut errors = Vec::new();
    fn number<T: std::str::FromStr>(label: &str, s: &str, errors: &mut Vec<String>) -> Option<T> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        match s.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                errors.push(format!("{label}: “{s}” is not a whole number"));
                None
            }
        }
    }
    let temperature = match f.temp.trim() {
        "" => None,
        t => match t
            .replace(',', ".")
            .parse::<f64>()
            .ok()
            .and_then(Temperature::from_celsius)
        {
            Some(t) => Some(t),
            None => {
                errors.push(format!(
                    "Temperature: “{t}” is not a temperature in °C with at most one decimal"
                ));
                None
            }
        },
    };
    let vitals = Vitals {
        respiratory_rate: number("Respiratory rate", &f.rr, &mut errors),
        spo2: number("SpO₂", &f.spo2, &mut errors),
        spo2_scale: if f.scale == "2" {
            SpO2Scale::Scale2
        } else {
            SpO2Scale::Scale1
        },
        on_oxygen: match f.o2.as_str() {
            "air" => Some(AirOrOxygen::Air),
            "oxygen" => Some(AirOrOxygen::Oxygen),
            _ => None,
        },
        systolic_bp: number("Systolic blood pressure", &f.sbp, &mut errors),
        pulse: number("Pulse", &f.pulse, &mut errors),
        consciousness: Acvpu::from_letter(f.acvpu.trim()),
        temperature,
    };
    if let Err(problems) = vitals.check() {
        errors.extend(problems.iter().map(ToString::to_string));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let none = vitals.respiratory_rate.is_none()
        && vitals.spo2.is_none()
        && vitals.on_oxygen.is_none()
        && vitals.systolic_bp.is_none()
        && vitals.pulse.is_none()
        && vitals.consciousness.is_none()
        && vitals.temperature.is_none();
    Ok((!none).then_some(vitals))
}

/// "NEWS2 5 · Medium: Urgent response; minimum 1-hourly monitoring" (and "partial").
pub fn news2_line(v: &Vitals) -> String {
    let s = news2::score(v);
    format!(
        "NEWS2 {}{} · {}: {}",
        s.total,
        if s.complete {
            ""
        } else {
            " (partial: not every sign recorded)"
        },
        s.band.label(),
        s.response.summary()
    )
}

/// Where a signed note stands, in words.
pub fn state_line(state: &NoteState, practice: &str) -> String {
    match state {
        NoteState::Waiting => format!("Waiting to send: to {practice}, when online"),
        NoteState::Accepted { at } => {
            format!(
                "Accepted {}: on its way to {practice}",
                format::instant(*at)
            )
        }
        NoteState::Rejected { reason } => format!("Not accepted: {reason}"),
        NoteState::Received { practice, at } => {
            format!("Received by {practice} {}", format::instant(*at))
        }
        NoteState::Filed { practice, at } => {
            format!("Filed at {practice} {}", format::instant(*at))
        }
        NoteState::NotFiled {
            practice, reason, ..
        } => format!("Not filed by {practice}: {reason}"),
    }
}

#[component]
pub fn ComposerScreen(patient_id: String) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let record = RwSignal::new(Load::<PatientRecord>::Loading);
    let fields = RwSignal::new(Fields {
        scale: "1".into(),
        ..Fields::default()
    });
    let draft_loaded = RwSignal::new(false);
    let notes = RwSignal::new(Vec::<NoteSummary>::new());
    let message = RwSignal::new(None::<(bool, String)>);
    let pid = StoredValue::new(patient_id);

    let reload_notes = move || {
        spawn_local(async move {
            let id = pid.get_value();
            match ctx.backend.notes(Some(&id)).await {
                Ok(list) => notes.set(list),
                Err(e) => {
                    ctx.note_error(&e);
                    message.set(Some((
                        false,
                        format!("The notes written here could not be read: {}", e.message),
                    )));
                }
            }
        });
    };
    spawn_local(async move {
        let id = pid.get_value();
        match ctx.backend.patient_record(&id).await {
            Ok(r) => record.set(Load::Ready(r)),
            Err(e) => {
                ctx.note_error(&e);
                record.set(Load::Failed(e));
            }
        }
        if let Ok(Some(text)) = ctx.backend.draft(&id).await
            && let Ok(saved) = serde_json::from_str::<Fields>(&text)
        {
            fields.set(saved);
        }
        draft_loaded.set(true);
        request_animation_frame(|| focus("#note-text"));
    });
    Effect::new(move |_| {
        ctx.data_version.track();
        reload_notes();
    });
    // Every change is kept as the draft (after the saved one has been read back).
    Effect::new(move |_| {
        let current = fields.get();
        if !draft_loaded.get() {
            return;
        }
        let text = serde_json::to_string(&current).unwrap_or_default();
        spawn_local(async move {
            let _ = ctx.backend.save_draft(&pid.get_value(), &text).await;
        });
    });

    let back = move || {
        ctx.screen.set(Screen::Record {
            patient_id: pid.get_value(),
        })
    };
    let esc = window_event_listener(ev::keydown, move |e| {
        if e.key() == "Escape" && !e.default_prevented() {
            e.prevent_default();
            back();
        }
    });
    on_cleanup(move || esc.remove());

    let vitals = Memo::new(move |_| fields.with(read_vitals));
    let sign = move |e: ev::SubmitEvent| {
        e.prevent_default();
        let f = fields.get_untracked();
        let vitals = match read_vitals(&f) {
            Ok(v) => v,
            Err(errors) => {
                message.set(Some((false, errors.join("; "))));
                return;
            }
        };
        let form = NoteForm {
            text: f.text.clone(),
            vitals,
            problem: (!f.problem.is_empty()).then(|| f.problem.clone()),
            replaces: (!f.replaces.is_empty()).then(|| f.replaces.clone()),
        };
        let amended = !f.replaces.is_empty();
        spawn_local(async move {
            match ctx.backend.write_note(&pid.get_value(), &form).await {
                Ok(_) => {
                    fields.set(Fields {
                        scale: "1".into(),
                        ..Fields::default()
                    });
                    message.set(Some((
                        true,
                        if amended {
                            "Signed: the amendment waits on this device and goes at the next \
                             sync; it replaces the earlier note."
                        } else {
                            "Signed: the note waits on this device and goes at the next sync."
                        }
                        .into(),
                    )));
                    reload_notes();
                    ctx.refresh_sync();
                    request_animation_frame(|| focus("#note-text"));
                }
                Err(e) => {
                    ctx.note_error(&e);
                    message.set(Some((false, e.message)));
                }
            }
        });
    };

    let field = move |id: &'static str,
                      label: &'static str,
                      unit: &'static str,
                      get: fn(&Fields) -> String,
                      set: fn(&mut Fields, String)| {
        view! {
            <label class="vital" for=id>
                <span class="vital-label">{label}</span>
                <input
                    id=id
                    type="text"
                    inputmode="decimal"
                    autocomplete="off"
                    prop:value=move || fields.with(get)
                    on:input=move |ev| {
                        let v = event_target_value(&ev);
                        fields.update(|f| set(f, v));
                    }
                />
                <span class="vital-unit muted">{unit}</span>
            </label>
        }
    };

    view! {
        <section class="screen composer" aria-label="Write a note">
            <div class="record-nav">
                <button id="composer-back" class="button secondary" type="button" on:click=move |_| back()>
                    "← Record"
                    <span class="key-hint">"Esc"</span>
                </button>
            </div>
            {move || match record.get() {
                Load::Loading => view! { <p class="state-title" role="status">"Opening…"</p> }.into_any(),
                Load::Failed(e) => view! {
                    <div class="state-box error" role="alert">
                        <p class="state-title">"The record could not be opened"</p>
                        <p>{e.message}</p>
                    </div>
                }.into_any(),
                Load::Ready(r) => {
                    let v = r.view;
                    let practice = match (&v.patient.practice_name, &v.patient.practice_ods) {
                        (Some(n), Some(o)) => format!("{n} ({o})"),
                        (Some(n), None) => n.clone(),
                        (None, Some(o)) => o.clone(),
                        (None, None) => "the registered practice".to_owned(),
                    };
                    let destination = format!("This note goes to {practice}, when online.");
                    let practice = StoredValue::new(practice);
                    view! {
                        <Banner
                            list_reason=r.list_reason.clone()
                            patient=v.patient.clone()
                            allergies=v.allergies.clone()
                            allergies_withheld=0
                            alerts=v.alerts.clone()
                            as_of=r.as_of
                            stale_after_hours=r.stale_after_hours
                            same_name=r.same_name
                        />
                        <p class="composer-destination" id="note-destination">{destination}</p>
                        {move || {
                            let replaces = fields.with(|f| f.replaces.clone());
                            (!replaces.is_empty()).then(|| {
                                let signed = notes.with(|all| {
                                    all.iter()
                                        .find(|n| n.id == replaces)
                                        .map(|n| format::instant(n.signed_at))
                                });
                                let what = match signed {
                                    Some(t) => format!("the note signed {t}"),
                                    None => "an earlier note".to_owned(),
                                };
                                view! {
                                    <div class="notice amending" id="amending" role="status">
                                        <p>{format!("Amending {what}. Signing makes a new note that replaces it; the earlier note stays in the record, marked as replaced.")}</p>
                                        <button id="amend-cancel" class="button secondary" type="button"
                                            on:click=move |_| fields.set(Fields { scale: "1".into(), ..Fields::default() })>
                                            "Cancel amendment"
                                        </button>
                                    </div>
                                }
                            })
                        }}
                        <form class="composer-form" on:submit=sign>
                            <label for="note-text" class="composer-label">"Note"</label>
                            <textarea
                                id="note-text"
                                rows="6"
                                prop:value=move || fields.with(|f| f.text.clone())
                                on:input=move |ev| {
                                    let v = event_target_value(&ev);
                                    fields.update(|f| f.text = v);
                                }
                            ></textarea>
                            <fieldset class="vitals">
                                <legend>"Vital signs (any you took)"</legend>
                                {field("v-rr", "Respiratory rate", "/min", |f| f.rr.clone(), |f, v| f.rr = v)}
                                {field("v-spo2", "SpO₂", "%", |f| f.spo2.clone(), |f, v| f.spo2 = v)}
                                <label class="vital" for="v-scale">
                                    <span class="vital-label">"SpO₂ scale"</span>
                                    <select id="v-scale" prop:value=move || fields.with(|f| f.scale.clone())
                                        on:change=move |ev| { let v = event_target_value(&ev); fields.update(|f| f.scale = v); }>
                                        <option value="1">"Scale 1"</option>
                                        <option value="2">"Scale 2 (target 88–92%)"</option>
                                    </select>
                                </label>
                                <label class="vital" for="v-o2">
                                    <span class="vital-label">"Air or oxygen"</span>
                                    <select id="v-o2" prop:value=move || fields.with(|f| f.o2.clone())
                                        on:change=move |ev| { let v = event_target_value(&ev); fields.update(|f| f.o2 = v); }>
                                        <option value="">"Not recorded"</option>
                                        <option value="air">"Air"</option>
                                        <option value="oxygen">"Supplemental oxygen"</option>
                                    </select>
                                </label>
                                {field("v-sbp", "Systolic BP", "mmHg", |f| f.sbp.clone(), |f, v| f.sbp = v)}
                                {field("v-pulse", "Pulse", "/min", |f| f.pulse.clone(), |f, v| f.pulse = v)}
                                <label class="vital" for="v-acvpu">
                                    <span class="vital-label">"Consciousness"</span>
                                    <select id="v-acvpu" prop:value=move || fields.with(|f| f.acvpu.clone())
                                        on:change=move |ev| { let v = event_target_value(&ev); fields.update(|f| f.acvpu = v); }>
                                        <option value="">"Not recorded"</option>
                                        <option value="A">"Alert"</option>
                                        <option value="C">"New confusion"</option>
                                        <option value="V">"Responds to voice"</option>
                                        <option value="P">"Responds to pain"</option>
                                        <option value="U">"Unresponsive"</option>
                                    </select>
                                </label>
                                {field("v-temp", "Temperature", "°C", |f| f.temp.clone(), |f, v| f.temp = v)}
                            </fieldset>
                            <p class="news2" id="news2" aria-live="polite">
                                {move || match vitals.get() {
                                    Ok(Some(v)) => news2_line(&v),
                                    Ok(None) => "NEWS2: enter vital signs to score them".to_owned(),
                                    Err(errors) => errors.join("; "),
                                }}
                            </p>
                            <label for="note-problem" class="composer-label">"Problem (optional)"</label>
                            <select id="note-problem" prop:value=move || fields.with(|f| f.problem.clone())
                                on:change=move |ev| { let v = event_target_value(&ev); fields.update(|f| f.problem = v); }>
                                <option value="">"None"</option>
                                {PICK_LIST.iter().map(|(code, display)| view! {
                                    <option value=*code>{format!("{display} ({code})")}</option>
                                }).collect_view()}
                            </select>
                            <div class="composer-actions">
                                <button id="note-sign" class="button" type="submit">
                                    {move || if fields.with(|f| f.replaces.is_empty()) { "Sign note" } else { "Sign amendment" }}
                                </button>
                            </div>
                            {move || message.get().map(|(ok, text)| view! {
                                <p id="note-message" class=if ok { "composer-ok" } else { "composer-error" }
                                   role=if ok { "status" } else { "alert" }>{text}</p>
                            })}
                        </form>
                        <h2 class="list-group-title">"Notes written on this device"</h2>
                        <ul class="notes" id="notes-list">
                            {move || { let all = notes.get(); all.clone().into_iter().map(|n| {
                                let line = state_line(&n.state, &practice.get_value());
                                let amendment = amendment_line(&n, &all);
                                let amendable = can_amend(&n, &all);
                                let replaced = all.iter().any(|o| o.replaces.as_deref() == Some(n.id.as_str()));
                                let (earlier_id, earlier_text) = (n.id.clone(), n.text.clone());
                                let amend = move |_| {
                                    fields.set(Fields {
                                        scale: "1".into(),
                                        text: earlier_text.clone(),
                                        replaces: earlier_id.clone(),
                                        ..Fields::default()
                                    });
                                    message.set(None);
                                    request_animation_frame(|| focus("#note-text"));
                                };
                                let state = match n.state {
                                    NoteState::Waiting => "waiting",
                                    NoteState::Accepted { .. } => "accepted",
                                    NoteState::Rejected { .. } => "rejected",
                                    NoteState::Received { .. } => "received",
                                    NoteState::Filed { .. } => "filed",
                                    NoteState::NotFiled { .. } => "not-filed",
                                };
                                view! {
                                    <li class=if replaced { "note replaced" } else { "note" } data-note=n.id.clone() data-state=state
                                        data-replaces=n.replaces.clone().unwrap_or_default()>
                                        <p class="note-meta">{format!("Signed {}", format::instant(n.signed_at))}
                                            {n.news2.clone().map(|s| format!(" · {s}"))}
                                            {n.problem.clone().map(|p| format!(" · {p}"))}</p>
                                        <p class="note-text">{n.text.clone()}</p>
                                        <p class="note-state">{line}</p>
                                        {amendment.map(|a| view! { <p class="note-amendment">{a}</p> })}
                                        {amendable.then(|| view! {
                                            <button class="button secondary note-amend" type="button" on:click=amend>"Amend"</button>
                                        })}
                                    </li>
                                }
                            }).collect_view() }}
                        </ul>
                    }.into_any()
                }
            }}
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        let mut f = Fields {
            scale: "1".into(),
            ..Fields::default()
        };
        for (k, v) in pairs {
            let v = v.to_string();
            match *k {
                "rr" => f.rr = v,
                "spo2" => f.spo2 = v,
                "scale" => f.scale = v,
                "o2" => f.o2 = v,
                "sbp" => f.sbp = v,
                "pulse" => f.pulse = v,
                "acvpu" => f.acvpu = v,
                "temp" => f.temp = v,
                other => panic!("no field {other}"),
            }
        }
        f
    }

    #[test]
    fn empty_fields_are_no_vitals_and_a_full_set_scores() {
        assert_eq!(read_vitals(&fields(&[])), Ok(None));
        let v = read_vitals(&fields(&[
            ("rr", "21"),
            ("spo2", "95"),
            ("o2", "air"),
            ("sbp", "118"),
            ("pulse", "92"),
            ("acvpu", "A"),
            ("temp", "37,4"),
        ]))
        .unwrap()
        .unwrap();
        // RR 21 → 2, SpO2 95 → 1, air 0, SBP 118 → 0, pulse 92 → 1, alert 0, 37.4 → 0.
        let line = news2_line(&v);
        assert!(line.starts_with("NEWS2 4 · "), "{line}");
        assert!(!line.contains("partial"), "{line}");
    }

    #[test]
    fn what_is_wrong_is_said_field_by_field() {
        let errors =
            read_vitals(&fields(&[("rr", "abc"), ("temp", "37.15"), ("pulse", "0")])).unwrap_err();
        let all = errors.join(" | ");
        assert!(all.contains("Respiratory rate: “abc”"), "{all}");
        assert!(all.contains("Temperature: “37.15”"), "{all}");
        assert!(all.to_lowercase().contains("pulse"), "{all}");
    }

    #[test]
    fn a_partial_set_says_so_and_a_single_three_is_low_medium() {
        let v = read_vitals(&fields(&[("pulse", "131")])).unwrap().unwrap();
        let line = news2_line(&v);
        assert!(line.starts_with("NEWS2 3 (partial"), "{line}");
    }

    fn note(id: &str, replaces: Option<&str>, state: NoteState) -> NoteSummary {
        NoteSummary {
            id: id.into(),
            patient_id: "p1".into(),
            signed_at: chrono::DateTime::from_timestamp(1_780_000_000, 0).unwrap(),
            text: format!("note {id}"),
            news2: None,
            problem: None,
            replaces: replaces.map(str::to_owned),
            state,
        }
    }

    #[test]
    fn an_amended_note_says_it_was_replaced_and_cannot_be_amended_again() {
        let at = chrono::DateTime::from_timestamp(1_780_000_000, 0).unwrap();
        let all = vec![
            note("a", None, NoteState::Accepted { at }),
            note("b", Some("a"), NoteState::Waiting),
        ];
        let first = amendment_line(&all[0], &all).unwrap();
        assert!(
            first.starts_with("Replaced by the amendment signed "),
            "{first}"
        );
        let second = amendment_line(&all[1], &all).unwrap();
        assert!(second.starts_with("Amends the note signed "), "{second}");
        assert!(!can_amend(&all[0], &all), "replaced already");
        assert!(
            can_amend(&all[1], &all),
            "the amendment itself can be amended"
        );
    }

    #[test]
    fn a_refused_note_is_not_amended_and_a_plain_note_has_no_amendment_line() {
        let all = vec![
            note(
                "r",
                None,
                NoteState::Rejected {
                    reason: "no".into(),
                },
            ),
            note("p", None, NoteState::Waiting),
        ];
        assert!(!can_amend(&all[0], &all));
        assert_eq!(amendment_line(&all[1], &all), None);
        // An amendment whose earlier note is not listed here still says what it is.
        let orphan = note("o", Some("gone"), NoteState::Waiting);
        assert_eq!(
            amendment_line(&orphan, std::slice::from_ref(&orphan)).as_deref(),
            Some("Amends an earlier note")
        );
    }

    #[test]
    fn a_draft_saved_before_amendments_existed_still_reads() {
        let old = r#"{"text":"t","rr":"","spo2":"","scale":"1","o2":"","sbp":"","pulse":"","acvpu":"","temp":"","problem":""}"#;
        let f: Fields = serde_json::from_str(old).unwrap();
        assert_eq!(f.text, "t");
        assert_eq!(f.replaces, "");
    }
}
