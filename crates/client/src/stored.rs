//! Resources as the cache stores them: the JSON the server sent, deflated against a fixed
//! dictionary of FHIR R4's element names and the code-system URLs UK records use.
//!
//! A resource is about 1 KB of JSON, too little for deflate to find much repetition in it
//! alone (about half its size); against the dictionary it takes about a third, which keeps a
//! cache of 1,000 patients near 50 KB a patient and halves what SQLCipher encrypts and writes
//! at a sync. The stored value is a BLOB: [`FORMAT_DEFLATE_V1`] then raw deflate. A value
//! stored as TEXT (a cache migrated from schema 3, written before this) is read as it is.
//!
//! The dictionary is part of the format: changing it needs a new format byte, and the reader
//! keeps the old dictionary for the old byte.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use rusqlite::types::ValueRef;

use crate::error::{ClientError, Result};

/// The first byte of a stored resource deflated against [`DICTIONARY_V1`].
pub(crate) const FORMAT_DEFLATE_V1: u8 = 1;

/// FHIR R4 names and UK code systems, as compact JSON writes them (written from the FHIR R4
/// and UK Core specifications, not from any record). Deflate finds matches anywhere in its
/// 32 KiB window; the commonest fragments go last, nearest the data.
const DICTIONARY_V1: &str = concat!(
    r#""resourceType":"AllergyIntolerance","resourceType":"Immunization","resourceType":"Procedure","#,
    r#""resourceType":"MedicationStatement","resourceType":"MedicationRequest","resourceType":"Flag","#,
    r#""resourceType":"DocumentReference","resourceType":"Composition","resourceType":"CarePlan","#,
    r#""resourceType":"Organization","resourceType":"Practitioner","resourceType":"Patient","#,
    r#""identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":""#,
    r#""identifier":[{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":""#,
    r#""name":[{"use":"official","family":"","given":["","prefix":["Mrs"]}],"gender":"female","#,
    r#""gender":"male","birthDate":"","address":[{"line":["","city":"","postalCode":""}],"#,
    r#""telecom":[{"system":"phone","value":"","use":"home"}],"generalPractitioner":[{"reference":"Organization/"#,
    r#""meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"R"}]},"#,
    r#""clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical","code":"active"}]},"#,
    r#""verificationStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/allergyintolerance-verification","code":"confirmed"}]},"#,
    r#""criticality":"high","reaction":[{"manifestation":[{"coding":[{"#,
    r#""clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"active"}]},"#,
    r#""verificationStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-ver-status","code":"confirmed"}]},"#,
    r#""category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-category","code":"problem-list-item"}]}],"#,
    r#""onsetDateTime":"","recordedDate":"","abatementDateTime":"","#,
    r#""medicationCodeableConcept":{"coding":[{"system":"https://dmd.nhs.uk","code":""#,
    r#""dosageInstruction":[{"text":"","status":"active","intent":"order","authoredOn":"","requester":{"reference":"Practitioner/"#,
    r#""vaccineCode":{"coding":[{"system":"http://snomed.info/sct","code":"","occurrenceDateTime":"","status":"completed","#,
    r#""class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB","display":"ambulatory"},"#,
    r#""status":"finished","period":{"start":"","end":""},"serviceProvider":{"reference":"Organization/"#,
    r#""participant":[{"individual":{"reference":"Practitioner/","reasonCode":[{"coding":[{"#,
    r#""interpretation":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation","code":"H"}]}],"#,
    r#""referenceRange":[{"low":{"value":,"high":{"value":,"unit":"","#,
    r#""category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}],"#,
    r#""category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"#,
    r#""component":[{"code":{"coding":[{"system":"http://loinc.org","code":"","valueQuantity":{"value":"#,
    r#","unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}},"#,
    r#""resourceType":"Condition","resourceType":"Encounter","resourceType":"Observation","status":"final","#,
    r#""code":{"coding":[{"system":"http://snomed.info/sct","code":"","display":""}],"text":""},"#,
    r#"{"system":"http://loinc.org","code":"","display":"","#,
    r#""subject":{"reference":"Patient/","encounter":{"reference":"Encounter/","#,
    r#""performer":[{"reference":"Practitioner/","display":"","effectiveDateTime":"","#,
    r#""valueQuantity":{"value":,"unit":"","system":"http://unitsofmeasure.org","code":""},"#,
    r#"T00:00:00+00:00","id":"","meta":{"tag":[{"system":"https://doorstep.example/fhir/source-organisation","code":"","display":""}]}}"#,
);

thread_local! {
    static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
    static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// The stored form of a resource's JSON.
pub(crate) fn pack(json: &str) -> Result<Vec<u8>> {
    DEFLATE.with(|d| {
        let mut d = d.borrow_mut();
        d.reset();
        d.set_dictionary(DICTIONARY_V1.as_bytes())
            .map_err(|e| ClientError::Internal(format!("deflate dictionary: {e}")))?;
        let mut out = Vec::with_capacity(json.len() / 2 + 64);
        out.push(FORMAT_DEFLATE_V1);
        loop {
            let consumed = d.total_in() as usize;
            let status = d
                .compress_vec(
                    &json.as_bytes()[consumed..],
                    &mut out,
                    FlushCompress::Finish,
                )
                .map_err(|e| ClientError::Internal(format!("deflate: {e}")))?;
            match status {
                Status::StreamEnd => return Ok(out),
                _ => out.reserve(out.capacity().max(256)),
            }
        }
    })
}

/// A resource's JSON from its stored form (see the module doc).
pub(crate) fn unpack(stored: ValueRef<'_>) -> Result<String> {
    match stored {
        ValueRef::Text(text) => String::from_utf8(text.to_vec())
            .map_err(|_| ClientError::Internal("a stored resource is not UTF-8".into())),
        ValueRef::Blob([FORMAT_DEFLATE_V1, deflated @ ..]) => inflate(deflated),
        ValueRef::Blob(_) => Err(ClientError::Internal(
            "a stored resource is in a format this version does not know".into(),
        )),
        _ => Err(ClientError::Internal(
            "a stored resource is neither text nor a blob".into(),
        )),
    }
}

fn inflate(deflated: &[u8]) -> Result<String> {
    INFLATE.with(|i| {
        let mut i = i.borrow_mut();
        i.reset(false);
        // Raw deflate takes its dictionary before any input.
        i.set_dictionary(DICTIONARY_V1.as_bytes())
            .map_err(|e| ClientError::Internal(format!("inflate dictionary: {e}")))?;
        let mut out = Vec::with_capacity(deflated.len() * 3 + 64);
        loop {
            let consumed = i.total_in() as usize;
            let before = (i.total_in(), i.total_out());
            match i.decompress_vec(&deflated[consumed..], &mut out, FlushDecompress::Finish) {
                Ok(Status::StreamEnd) => break,
                Ok(_) if out.len() == out.capacity() => out.reserve(out.capacity().max(256)),
                // No progress with room to spare: the input ended before the stream did.
                Ok(_) if (i.total_in(), i.total_out()) == before => {
                    return Err(ClientError::Internal(
                        "a stored resource is cut short".into(),
                    ));
                }
                Ok(_) => {}
                Err(e) => return Err(ClientError::Internal(format!("inflate: {e}"))),
            }
        }
        String::from_utf8(out)
            .map_err(|_| ClientError::Internal("a stored resource is not UTF-8".into()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_comes_back_as_it_went_in_and_smaller() {
        let json = r#"{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}]},"subject":{"reference":"Patient/9a7c"},"effectiveDateTime":"2026-11-19T10:51:00+00:00","valueQuantity":{"value":72,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"},"id":"o1","note":[{"text":"Zoë, “seen” at home"}]}"#;
        let packed = pack(json).unwrap();
        assert_eq!(packed[0], FORMAT_DEFLATE_V1);
        assert!(
            packed.len() * 2 < json.len(),
            "{} bytes of {}",
            packed.len(),
            json.len()
        );
        assert_eq!(unpack(ValueRef::Blob(&packed)).unwrap(), json);
        // Many in turn through the same coder.
        for n in 0..50 {
            let text = json.replace("72", &n.to_string());
            assert_eq!(unpack(ValueRef::Blob(&pack(&text).unwrap())).unwrap(), text);
        }
    }

    #[test]
    fn text_from_an_older_cache_is_read_as_it_is_and_an_unknown_format_is_refused() {
        assert_eq!(
            unpack(ValueRef::Text(b"{\"id\":\"x\"}")).unwrap(),
            "{\"id\":\"x\"}"
        );
        assert!(unpack(ValueRef::Blob(&[9, 1, 2])).is_err());
        assert!(unpack(ValueRef::Blob(&[FORMAT_DEFLATE_V1, 0xff, 0xff])).is_err());
    }
}
