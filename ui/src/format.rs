//! How dates, times, ages and provenance read on screen (UK conventions: `3 Mar 2026`,
//! 24-hour clock, local time of the device). Pure functions, tested on the host.

use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, Utc};
use doorstep_record::views::Provenance;

/// `3 Mar 2026`.
pub fn date(d: NaiveDate) -> String {
    d.format("%-d %b %Y").to_string()
}

pub fn opt_date(d: Option<NaiveDate>) -> String {
    d.map(date)
        .unwrap_or_else(|| "date not recorded".to_owned())
}

/// `3 Mar 2026 14:02` for a clinical timestamp (recorded in local time, as FHIR sends it).
pub fn date_time(d: NaiveDateTime) -> String {
    d.format("%-d %b %Y %H:%M").to_string()
}

/// An instant shown in the device's local time: `3 Mar 2026 14:02`.
pub fn instant(t: DateTime<Utc>) -> String {
    t.with_timezone(&Local)
        .format("%-d %b %Y %H:%M")
        .to_string()
}

/// The local time of day of an instant: `14:02`.
pub fn time_of_day(t: DateTime<Utc>) -> String {
    t.with_timezone(&Local).format("%H:%M").to_string()
}

/// `just now`, `4 min ago`, `3 h ago`, `2 days ago` (or `in 5 min` for a future instant).
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let (future, secs) = if secs < 0 {
        (true, -secs)
    } else {
        (false, secs)
    };
    let text = if secs < 60 {
        return "just now".to_owned();
    } else if secs < 3600 {
        format!("{} min", secs / 60)
    } else if secs < 86_400 {
        format!("{} h", secs / 3600)
    } else {
        let days = secs / 86_400;
        if days == 1 {
            "1 day".to_owned()
        } else {
            format!("{days} days")
        }
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// `born 3 Mar 1941 (85 y)`.
pub fn birth_and_age(birth: Option<NaiveDate>, age: Option<u32>) -> String {
    match (birth, age) {
        (Some(b), Some(a)) => format!("{} ({a} y)", date(b)),
        (Some(b), None) => date(b),
        (None, Some(a)) => format!("date of birth not recorded ({a} y)"),
        (None, None) => "date of birth not recorded".to_owned(),
    }
}

/// `Riverside Surgery (A81001) · recorded 3 Mar 2024 · Dr A Khan`.
pub fn provenance(p: &Provenance) -> String {
    let mut parts = vec![source(p)];
    if let Some(d) = p.recorded {
        parts.push(format!("recorded {}", date(d)));
    }
    if let Some(a) = &p.author {
        parts.push(a.clone());
    }
    parts.join(" · ")
}

/// Only where an item came from (for tables that show the date in a column of their own):
/// `Riverside Surgery (A81001)`.
pub fn source(p: &Provenance) -> String {
    match (&p.source_name, &p.source_ods) {
        (Some(name), Some(ods)) => format!("{name} ({ods})"),
        (Some(name), None) => name.clone(),
        (None, Some(ods)) => ods.clone(),
        (None, None) => "source not recorded".to_owned(),
    }
}

/// A number as clinicians read it: no trailing `.0`, at most two decimals.
pub fn value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e12 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// A role code as people say it: `gp` -> `GP`, `mental_health_practitioner` ->
/// `Mental health practitioner`.
pub fn role(code: &str) -> String {
    match code.to_ascii_lowercase().as_str() {
        "gp" => "GP".to_owned(),
        "ahp" => "AHP".to_owned(),
        _ => status(code),
    }
}

/// Capitalise a code-ish status for display: `active` -> `Active`, `on-hold` -> `On hold`.
pub fn status(s: &str) -> String {
    let s = s.replace(['-', '_'], " ");
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn dates_read_the_uk_way() {
        let d = NaiveDate::from_ymd_opt(2026, 3, 3).unwrap();
        assert_eq!(date(d), "3 Mar 2026");
        assert_eq!(
            birth_and_age(
                Some(NaiveDate::from_ymd_opt(1941, 11, 20).unwrap()),
                Some(84)
            ),
            "20 Nov 1941 (84 y)"
        );
        assert_eq!(
            date_time(d.and_hms_opt(9, 5, 0).unwrap()),
            "3 Mar 2026 09:05"
        );
    }

    #[test]
    fn relative_times() {
        let now = Utc.with_ymd_and_hms(2026, 3, 3, 12, 0, 0).unwrap();
        assert_eq!(relative(now, now), "just now");
        assert_eq!(
            relative(now - chrono::Duration::minutes(4), now),
            "4 min ago"
        );
        assert_eq!(relative(now - chrono::Duration::hours(3), now), "3 h ago");
        assert_eq!(relative(now - chrono::Duration::days(1), now), "1 day ago");
        assert_eq!(relative(now - chrono::Duration::days(9), now), "9 days ago");
        assert_eq!(
            relative(now + chrono::Duration::minutes(5), now),
            "in 5 min"
        );
    }

    #[test]
    fn values_and_statuses() {
        assert_eq!(value(72.0), "72");
        assert_eq!(value(36.75), "36.75");
        assert_eq!(value(5.1), "5.1");
        assert_eq!(status("on-hold"), "On hold");
        assert_eq!(status(""), "");
        assert_eq!(role("gp"), "GP");
        assert_eq!(role("nurse"), "Nurse");
        assert_eq!(
            role("mental_health_practitioner"),
            "Mental health practitioner"
        );
    }

    #[test]
    fn provenance_lists_what_is_known() {
        let p = Provenance {
            source_ods: Some("A81001".into()),
            source_name: Some("Riverside Surgery".into()),
            recorded: NaiveDate::from_ymd_opt(2024, 3, 3),
            author: None,
        };
        assert_eq!(
            provenance(&p),
            "Riverside Surgery (A81001) · recorded 3 Mar 2024"
        );
        assert_eq!(provenance(&Provenance::default()), "source not recorded");
    }
}
