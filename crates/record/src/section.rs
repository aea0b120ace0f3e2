//! The sections of a record: what agreements share and what the app shows as tabs.

use serde::{Deserialize, Serialize};

/// A section of the record, as agreements share it and the app shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Section {
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
    Notes,
}

impl Section {
    pub const ALL: [Section; 11] = [
        Section::Summary,
        Section::Problems,
        Section::Medications,
        Section::Allergies,
        Section::Encounters,
        Section::Observations,
        Section::Immunisations,
        Section::Procedures,
        Section::Documents,
        Section::Alerts,
        Section::Notes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Section::Summary => "summary",
            Section::Problems => "problems",
            Section::Medications => "medications",
            Section::Allergies => "allergies",
            Section::Encounters => "encounters",
            Section::Observations => "observations",
            Section::Immunisations => "immunisations",
            Section::Procedures => "procedures",
            Section::Documents => "documents",
            Section::Alerts => "alerts",
            Section::Notes => "notes",
        }
    }

    pub fn parse(s: &str) -> Option<Section> {
        Section::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl std::fmt::Display for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_names_round_trip_and_match_serde() {
        for s in Section::ALL {
            assert_eq!(Section::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::String(s.as_str().to_owned())
            );
        }
        assert_eq!(Section::parse("Problems"), None);
        assert_eq!(Section::parse("immunizations"), None);
    }
}
