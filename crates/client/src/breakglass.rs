//! Break-glass from the device: find a patient who is not on the list and, with a reason,
//! bring them onto it for 24 hours (online only; the rules are the server's, in
//! `doorstep_server::breakglass`).
//!
//! The device checks what it can before asking: a reason is chosen first, the NHS number
//! passes Modulus 11, a family name comes with a date of birth. The server checks again,
//! refuses a service whose agreements forbid emergency access, audits every search and
//! raises an alert for the privacy officer when the glass is broken. After a grant the device
//! syncs at once, so the record is on the screen (and readable offline) a moment later,
//! marked as emergency access until the access ends; the first sync after that purges it.

use chrono::NaiveDate;
use doorstep_ipc::{BreakGlassForm, BreakGlassGrant, BreakGlassMatch};
use doorstep_protocol::{
    BreakGlassGranted, BreakGlassMatches, BreakGlassReason, BreakGlassRequest, BreakGlassSearch,
};
use doorstep_record::NhsNumber;

use crate::error::{ClientError, Result};
use crate::{Device, queries};

/// The reason a form names.
pub fn parse_reason(code: &str) -> Result<BreakGlassReason> {
    Ok(match code {
        "emergency_treatment" => BreakGlassReason::EmergencyTreatment,
        "patient_unconscious" => BreakGlassReason::PatientUnconscious,
        "patient_consented" => BreakGlassReason::PatientConsented,
        "other" => BreakGlassReason::Other,
        "" => {
            return Err(ClientError::Invalid(
                "Choose the reason for emergency access first.".into(),
            ));
        }
        other => {
            return Err(ClientError::Invalid(format!(
                "Unknown reason {other:?}: choose emergency treatment, patient unconscious, \
                 patient consented, or other (with your words)."
            )));
        }
    })
}

/// The reason and the clinician's words, checked: "other" needs words.
fn reason_with_words<'a>(
    code: &str,
    text: Option<&'a str>,
) -> Result<(BreakGlassReason, Option<&'a str>)> {
    let reason = parse_reason(code.trim())?;
    let text = text.map(str::trim).filter(|t| !t.is_empty());
    if reason == BreakGlassReason::Other && text.is_none() {
        return Err(ClientError::Invalid(
            "Say in your own words why you need emergency access.".into(),
        ));
    }
    Ok((reason, text))
}

fn parse_birth_date(text: &str) -> Result<NaiveDate> {
    let t = text.trim();
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(t, "%d/%m/%Y"))
        .map_err(|_| {
            ClientError::Invalid(format!(
                "Date of birth {t:?}: write it as DD/MM/YYYY (for example 03/07/1948)."
            ))
        })
}

/// The search the server is asked, from the window's form.
pub fn search_of(form: &BreakGlassForm) -> Result<BreakGlassSearch> {
    let (reason, text) = reason_with_words(&form.reason, form.reason_text.as_deref())?;
    let nhs = form
        .nhs_number
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let family = form
        .family
        .as_deref()
        .map(str::trim)
        .filter(|f| !f.is_empty());
    let born = form
        .birth_date
        .as_deref()
        .map(str::trim)
        .filter(|b| !b.is_empty());
    let (nhs_number, family, birth_date) = match (nhs, family, born) {
        (Some(n), None, None) => {
            let n = NhsNumber::parse(n)
                .map_err(|e| ClientError::Invalid(format!("NHS number: {e}")))?;
            (Some(n.digits().to_owned()), None, None)
        }
        (None, Some(f), Some(b)) => (None, Some(f.to_owned()), Some(parse_birth_date(b)?)),
        (None, Some(_), None) | (None, None, Some(_)) => {
            return Err(ClientError::Invalid(
                "Give the family name and the date of birth together (or the NHS number).".into(),
            ));
        }
        (None, None, None) => {
            return Err(ClientError::Invalid(
                "Give the NHS number, or the family name and date of birth.".into(),
            ));
        }
        _ => {
            return Err(ClientError::Invalid(
                "Search by NHS number alone, or by family name and date of birth.".into(),
            ));
        }
    };
    Ok(BreakGlassSearch {
        nhs_number,
        family,
        birth_date,
        reason,
        reason_text: text.map(str::to_owned),
    })
}

impl Device {
    async fn break_glass_call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<Resp> {
        let access = self.access_token().await?;
        if let Some(answer) = self.api.break_glass(access.expose(), path, req).await? {
            return Ok(answer);
        }
        let access = self.refresh_tokens().await?;
        self.api
            .break_glass(access.expose(), path, req)
            .await?
            .ok_or_else(|| {
                ClientError::SignInFailed(
                    "The server refused this device's fresh access token.".into(),
                )
            })
    }

    /// Find a patient who is not on the list (online only): at most five, nothing of their
    /// record.
    pub async fn break_glass_search(&self, form: &BreakGlassForm) -> Result<Vec<BreakGlassMatch>> {
        let search = search_of(form)?;
        let found: BreakGlassMatches = self
            .break_glass_call("/break-glass/search", &search)
            .await?;
        Ok(found
            .matches
            .into_iter()
            .map(|m| BreakGlassMatch {
                patient_id: m.patient_id,
                name: m.name,
                birth_date: m.birth_date,
                nhs_number_display: queries::nhs_display(&m.nhs_number),
                practice_name: m.practice_name,
            })
            .collect())
    }

    /// Break the glass for `patient_id` with the reason, then sync so the record is here.
    pub async fn break_glass(
        &self,
        patient_id: &str,
        reason: &str,
        reason_text: Option<&str>,
    ) -> Result<BreakGlassGrant> {
        let (reason, reason_text) = reason_with_words(reason, reason_text)?;
        let granted: BreakGlassGranted = self
            .break_glass_call(
                "/break-glass",
                &BreakGlassRequest {
                    patient_id: patient_id.to_owned(),
                    reason,
                    reason_text: reason_text.map(str::to_owned),
                },
            )
            .await?;
        tracing::warn!("break-glass access granted; syncing");
        self.sync().await?;
        Ok(BreakGlassGrant {
            patient_id: granted.patient_id,
            ends_at: granted.ends_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(
        nhs: Option<&str>,
        family: Option<&str>,
        born: Option<&str>,
        reason: &str,
    ) -> BreakGlassForm {
        BreakGlassForm {
            nhs_number: nhs.map(str::to_owned),
            family: family.map(str::to_owned),
            birth_date: born.map(str::to_owned),
            reason: reason.into(),
            reason_text: None,
        }
    }

    #[test]
    fn the_reason_comes_first_and_a_search_is_one_of_two_exact_kinds() {
        let no_reason = search_of(&form(Some("999 000 0026"), None, None, "")).unwrap_err();
        assert!(no_reason.to_string().contains("reason"), "{no_reason}");
        let other = search_of(&form(Some("9990000026"), None, None, "other")).unwrap_err();
        assert!(other.to_string().contains("own words"), "{other}");
        let bad_nhs =
            search_of(&form(Some("9990000027"), None, None, "emergency_treatment")).unwrap_err();
        assert!(bad_nhs.to_string().starts_with("NHS number:"), "{bad_nhs}");
        let half = search_of(&form(None, Some("Evans"), None, "patient_consented")).unwrap_err();
        assert!(half.to_string().contains("together"), "{half}");
        let both = search_of(&form(
            Some("9990000026"),
            Some("Evans"),
            Some("01/02/1950"),
            "patient_consented",
        ));
        assert!(both.is_err());
        let bad_date = search_of(&form(
            None,
            Some("Evans"),
            Some("1950-13-40"),
            "patient_consented",
        ))
        .unwrap_err();
        assert!(bad_date.to_string().contains("DD/MM/YYYY"), "{bad_date}");

        let by_nhs = search_of(&form(
            Some("999 000 0026"),
            None,
            None,
            "patient_unconscious",
        ))
        .unwrap();
        assert_eq!(by_nhs.nhs_number.as_deref(), Some("9990000026"));
        assert_eq!(by_nhs.reason, BreakGlassReason::PatientUnconscious);
        let by_name = search_of(&form(
            None,
            Some(" Evans "),
            Some("01/02/1950"),
            "emergency_treatment",
        ))
        .unwrap();
        assert_eq!(by_name.family.as_deref(), Some("Evans"));
        assert_eq!(by_name.birth_date, NaiveDate::from_ymd_opt(1950, 2, 1));
    }
}
