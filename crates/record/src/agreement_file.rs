//! An administrator's agreement file: reading it and checking an [`Agreement`] field by field.
//!
//! # Rules
//!
//! - [`parse_agreement_file`] reads JSON text into an [`Agreement`] and then
//!   [`Agreement::validate`]s it. Every error names the field by its path in the file
//!   (`sections[2].section`, `practices[0]`), never only "invalid": syntax errors give the
//!   line and column, type errors the path ([`serde_path_to_error`]), unknown fields are
//!   refused (a misspelt `exlude_codes` would otherwise be dropped silently and share more
//!   than meant).
//! - [`Agreement::validate`] answers **every** problem at once, in field order, so an
//!   administrator fixes a file in one pass.
//! - Checks: `id` (lowercase letters, digits, `-`), `name`, `service`, `purpose`, `legal_basis`
//!   required; at least one practice, each an ODS code (a letter then letters or digits, 3 to
//!   10 characters, upper case); at least one role; at least one section, none twice, look-back
//!   `1..=36500` days; include and exclude codes are SNOMED CT ids (digits, 6 to 18), an
//!   include list is not empty; `max_offline_hours` `1..=720`, `stale_after_hours` `1..=max_offline_hours` (default 24), `idle_lock_minutes` `1..=60`,
//!   `retention_days` `1..=365`; `version` at least 1; `retired` not before `valid_from`.
//! - Pure: no IO, no clock (a file's dates are checked against each other only).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::agreement::Agreement;
use crate::section::Section;

/// One problem of an agreement, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    /// The path in the file: `purpose`, `sections[2].section`, `practices[0]`.
    pub field: String,
    pub problem: String,
}

fn problem(field: impl Into<String>, problem: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Why an agreement file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgreementFileError {
    #[error("not JSON (line {line}, column {column}): {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// The JSON does not have the agreement's shape (a wrong type, an unknown field).
    #[error("{}", join(.0))]
    Invalid(Vec<FieldError>),
}

impl AgreementFileError {
    /// The field errors (empty for a syntax error).
    pub fn fields(&self) -> &[FieldError] {
        match self {
            AgreementFileError::Syntax { .. } => &[],
            AgreementFileError::Invalid(errors) => errors,
        }
    }
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The fields an agreement file may have.
const FIELDS: [&str; 19] = [
    "id",
    "name",
    "service",
    "practices",
    "roles",
    "sections",
    "include_codes",
    "exclude_codes",
    "max_offline_hours",
    "stale_after_hours",
    "idle_lock_minutes",
    "retention_days",
    "purpose",
    "legal_basis",
    "emergency_access",
    "lists",
    "version",
    "valid_from",
    "retired",
];

fn section_names() -> String {
    Section::ALL.map(Section::as_str).join(", ")
}

/// Reads an agreement file (JSON) and validates it (see the module doc).
pub fn parse_agreement_file(text: &str) -> Result<Agreement, AgreementFileError> {
    let value: Value = serde_json::from_str(text).map_err(|e| AgreementFileError::Syntax {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let Value::Object(map) = &value else {
        return Err(AgreementFileError::Invalid(vec![problem(
            "(file)",
            "an agreement is a JSON object",
        )]));
    };
    // Shape checks serde would report less plainly: unknown fields and section names.
    let mut shape = Vec::new();
    for key in map.keys() {
        if !FIELDS.contains(&key.as_str()) {
            shape.push(problem(
                key.as_str(),
                format!("unknown field (one of {})", FIELDS.join(", ")),
            ));
        }
    }
    if let Some(Value::Array(sections)) = map.get("sections") {
        for (i, share) in sections.iter().enumerate() {
            if let Some(Value::String(name)) = share.get("section")
                && Section::parse(name).is_none()
            {
                shape.push(problem(
                    format!("sections[{i}].section"),
                    format!("unknown section {name:?} (one of {})", section_names()),
                ));
            }
        }
    }
    if !shape.is_empty() {
        return Err(AgreementFileError::Invalid(shape));
    }
    let agreement: Agreement = serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "(file)".into() } else { path };
        AgreementFileError::Invalid(vec![problem(field, e.into_inner().to_string())])
    })?;
    agreement.validate().map_err(AgreementFileError::Invalid)?;
    Ok(agreement)
}

/// An ODS code: a letter, then letters or digits, 3 to 10 characters, upper case.
pub fn is_ods_code(s: &str) -> bool {
    (3..=10).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_uppercase())
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// A SNOMED CT id (concept, description or dm+d): digits, 6 to 18, no leading zero.
pub fn is_snomed_id(s: &str) -> bool {
    (6..=18).contains(&s.len()) && !s.starts_with('0') && s.chars().all(|c| c.is_ascii_digit())
}

fn is_agreement_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn required(out: &mut Vec<FieldError>, field: &str, value: &str) {
    if value.trim().is_empty() {
        out.push(problem(field, "required"));
    }
}

fn in_range(out: &mut Vec<FieldError>, field: &str, value: u32, min: u32, max: u32) {
    if !(min..=max).contains(&value) {
        out.push(problem(field, format!("must be {min}..={max}")));
    }
}

fn codes(out: &mut Vec<FieldError>, field: &str, codes: &[String]) {
    for (i, code) in codes.iter().enumerate() {
        if !is_snomed_id(code.trim()) {
            out.push(problem(
                format!("{field}[{i}]"),
                format!("{code:?} is not a SNOMED CT id (digits, 6 to 18)"),
            ));
        }
    }
}

impl Agreement {
    /// Every problem of this agreement, naming the field (see the module doc for the rules).
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut out = Vec::new();
        if self.id.trim().is_empty() {
            out.push(problem("id", "required"));
        } else if !is_agreement_id(&self.id) {
            out.push(problem(
                "id",
                format!(
                    "{:?} is not an agreement id (lowercase letters, digits and -, at most 64)",
                    self.id
                ),
            ));
        }
        required(&mut out, "name", &self.name);
        required(&mut out, "service", &self.service);
        if self.practices.is_empty() {
            out.push(problem("practices", "at least one practice"));
        }
        for (i, ods) in self.practices.iter().enumerate() {
            if !is_ods_code(ods) {
                out.push(problem(
                    format!("practices[{i}]"),
                    format!("{ods:?} is not an ODS code (for example A81001)"),
                ));
            }
        }
        if self.roles.is_empty() {
            out.push(problem("roles", "at least one role"));
        }
        for (i, role) in self.roles.iter().enumerate() {
            if role.trim().is_empty() {
                out.push(problem(format!("roles[{i}]"), "empty"));
            }
        }
        if self.sections.is_empty() {
            out.push(problem("sections", "at least one section"));
        }
        let mut seen = BTreeSet::new();
        for (i, share) in self.sections.iter().enumerate() {
            if !seen.insert(share.section) {
                out.push(problem(
                    format!("sections[{i}].section"),
                    format!("{} is shared twice", share.section),
                ));
            }
            if let Some(days) = share.lookback_days {
                in_range(
                    &mut out,
                    &format!("sections[{i}].lookback_days"),
                    days,
                    1,
                    36_500,
                );
            }
        }
        if let Some(include) = &self.include_codes {
            if include.is_empty() {
                out.push(problem(
                    "include_codes",
                    "empty (leave it out to include every code)",
                ));
            }
            codes(&mut out, "include_codes", include);
        }
        codes(&mut out, "exclude_codes", &self.exclude_codes);
        in_range(
            &mut out,
            "max_offline_hours",
            self.max_offline_hours,
            1,
            720,
        );
        // Out of date before it stops being shown, or the warning would never appear.
        in_range(
            &mut out,
            "stale_after_hours",
            self.stale_after_hours,
            1,
            if (1..=720).contains(&self.max_offline_hours) {
                self.max_offline_hours
            } else {
                720
            },
        );
        in_range(&mut out, "idle_lock_minutes", self.idle_lock_minutes, 1, 60);
        in_range(&mut out, "retention_days", self.retention_days, 1, 365);
        required(&mut out, "purpose", &self.purpose);
        required(&mut out, "legal_basis", &self.legal_basis);
        if self.version == 0 {
            out.push(problem("version", "at least 1"));
        }
        if let (Some(from), Some(retired)) = (self.valid_from, self.retired)
            && retired < from
        {
            out.push(problem(
                "retired",
                format!("before valid_from ({retired} is before {from})"),
            ));
        }
        if out.is_empty() { Ok(()) } else { Err(out) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({
            "id": "podiatry", "name": "Podiatry", "service": "riverside-podiatry",
            "practices": ["A81001", "B82002"], "roles": ["podiatrist"],
            "sections": [{"section": "problems"}, {"section": "encounters", "lookback_days": 730}],
            "include_codes": ["44054006"], "exclude_codes": [],
            "max_offline_hours": 72, "idle_lock_minutes": 5, "retention_days": 30,
            "purpose": "Direct care of feet", "legal_basis": "UK GDPR 6(1)(e), 9(2)(h)",
            "valid_from": "2026-01-01"
        })
    }

    fn messages(v: Value) -> Vec<String> {
        match parse_agreement_file(&v.to_string()) {
            Ok(a) => panic!("accepted {a:?}"),
            Err(e) => match e {
                AgreementFileError::Invalid(errors) => {
                    errors.iter().map(ToString::to_string).collect()
                }
                other => vec![other.to_string()],
            },
        }
    }

    fn with(f: impl FnOnce(&mut Value)) -> Value {
        let mut v = good();
        f(&mut v);
        v
    }

    #[test]
    fn a_good_file_reads_with_defaults() {
        let a = parse_agreement_file(&good().to_string()).unwrap();
        assert_eq!(a.id, "podiatry");
        assert_eq!(a.version, 1);
        assert!(!a.emergency_access);
        assert_eq!(a.sections[1].lookback_days, Some(730));
    }

    #[test]
    fn an_unknown_section_names_its_index_and_the_choices() {
        let v = with(|v| {
            v["sections"] =
                json!([{"section": "problems"}, {"section": "alerts"}, {"section": "feet"}])
        });
        assert_eq!(
            messages(v),
            vec![
                "sections[2].section: unknown section \"feet\" (one of summary, problems, \
                 medications, allergies, encounters, observations, immunisations, procedures, \
                 documents, alerts, notes)"
            ]
        );
    }

    #[test]
    fn a_record_is_out_of_date_before_it_stops_being_shown() {
        let v = with(|v| {
            v["max_offline_hours"] = json!(12);
            v["stale_after_hours"] = json!(13);
        });
        assert_eq!(messages(v), vec!["stale_after_hours: must be 1..=12"]);
        let v = with(|v| v["stale_after_hours"] = json!(0));
        assert_eq!(messages(v), vec!["stale_after_hours: must be 1..=72"]);
    }

    #[test]
    fn every_field_problem_is_named_at_once() {
        let v = with(|v| {
            v["practices"] = json!(["X1", "A81001"]);
            v["roles"] = json!([]);
            v["purpose"] = json!("");
            v["legal_basis"] = json!("  ");
            v["max_offline_hours"] = json!(0);
            v["idle_lock_minutes"] = json!(61);
            v["include_codes"] = json!(["44054006", "feet"]);
            v["exclude_codes"] = json!(["12"]);
            v["retired"] = json!("2025-12-31");
        });
        assert_eq!(
            messages(v),
            vec![
                "practices[0]: \"X1\" is not an ODS code (for example A81001)",
                "roles: at least one role",
                "include_codes[1]: \"feet\" is not a SNOMED CT id (digits, 6 to 18)",
                "exclude_codes[0]: \"12\" is not a SNOMED CT id (digits, 6 to 18)",
                "max_offline_hours: must be 1..=720",
                "idle_lock_minutes: must be 1..=60",
                "purpose: required",
                "legal_basis: required",
                "retired: before valid_from (2025-12-31 is before 2026-01-01)",
            ]
        );
    }

    #[test]
    fn missing_and_mistyped_fields_name_the_path() {
        let v = with(|v| {
            v.as_object_mut().unwrap().remove("purpose");
        });
        // serde defaults purpose to empty, and validation asks for it.
        assert_eq!(messages(v), vec!["purpose: required"]);
        let v = with(|v| v["sections"][1]["lookback_days"] = json!("two years"));
        assert_eq!(
            messages(v),
            vec!["sections[1].lookback_days: invalid type: string \"two years\", expected u32"]
        );
        let v = with(|v| {
            v.as_object_mut().unwrap().remove("service");
        });
        assert_eq!(messages(v), vec!["(file): missing field `service`"]);
        let v = with(|v| v["exlude_codes"] = json!(["1234567"]));
        let m = messages(v);
        assert_eq!(m.len(), 1);
        assert!(
            m[0].starts_with("exlude_codes: unknown field (one of id, name,"),
            "{m:?}"
        );
        let v = with(|v| v["valid_from"] = json!("1 January"));
        let m = messages(v);
        assert!(m[0].starts_with("valid_from: "), "{m:?}");
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let e = parse_agreement_file("{\n  \"id\": \"x\",\n  oops\n}").unwrap_err();
        assert!(
            matches!(
                e,
                AgreementFileError::Syntax {
                    line: 3,
                    column: 3,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().starts_with("not JSON (line 3, column 3)"));
        let e = parse_agreement_file("[1]").unwrap_err();
        assert_eq!(e.to_string(), "(file): an agreement is a JSON object");
    }

    #[test]
    fn sections_twice_lookbacks_and_ids() {
        let v = with(|v| {
            v["id"] = json!("Podiatry Team");
            v["sections"] =
                json!([{"section": "problems", "lookback_days": 0}, {"section": "problems"}]);
            v["include_codes"] = json!([]);
        });
        assert_eq!(
            messages(v),
            vec![
                "id: \"Podiatry Team\" is not an agreement id (lowercase letters, digits and -, at most 64)",
                "sections[0].lookback_days: must be 1..=36500",
                "sections[1].section: problems is shared twice",
                "include_codes: empty (leave it out to include every code)",
            ]
        );
    }

    #[test]
    fn the_default_agreement_is_not_valid_and_says_why() {
        let errors = Agreement::default().validate().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "id",
                "name",
                "service",
                "practices",
                "roles",
                "sections",
                "purpose",
                "legal_basis"
            ]
        );
    }

    #[test]
    fn ods_and_snomed_rules() {
        for ok in ["A81001", "Y01234", "RXH"] {
            assert!(is_ods_code(ok), "{ok}");
        }
        for bad in ["X1", "a81001", "181001", "A81 001", "ABCDEFGHIJK"] {
            assert!(!is_ods_code(bad), "{bad}");
        }
        for ok in ["44054006", "105629000", "10000006"] {
            assert!(is_snomed_id(ok), "{ok}");
        }
        for bad in ["12345", "0440540", "4405400x", "1234567890123456789"] {
            assert!(!is_snomed_id(bad), "{bad}");
        }
    }
}
