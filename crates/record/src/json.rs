//! Small readers over `serde_json::Value` for the FHIR elements we use, and FHIR dates.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};
use serde_json::Value;

pub(crate) fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)?
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

pub(crate) fn string_at(v: &Value, key: &str) -> Option<String> {
    str_at(v, key).map(str::to_owned)
}

/// `v[key]` as an array (a missing element is an empty array).
pub(crate) fn array_at<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Reads a FHIR `date` or `dateTime` as a calendar date: `2024`, `2024-03`, `2024-03-05`,
/// `2024-03-05T10:00:00+01:00` (the date as written, in the sender's time zone).
pub(crate) fn parse_date(s: &str) -> Option<NaiveDate> {
    let s = s.trim();
    match s.len() {
        4 => NaiveDate::from_ymd_opt(s.parse().ok()?, 1, 1),
        7 => NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").ok(),
        n if n >= 10 => NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok(),
        _ => None,
    }
}

/// Reads a FHIR `dateTime` (or `date`, `instant`) as the wall-clock time the sender wrote;
/// a date alone is midnight. The offset is dropped on purpose: a clinician reads times as
/// they were recorded locally.
pub(crate) fn parse_datetime(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    if s.len() > 10 {
        if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
            return Some(dt.naive_local());
        }
        for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
            if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
                return Some(dt);
            }
        }
    }
    parse_date(s).map(|d| d.and_time(NaiveTime::MIN))
}

pub(crate) fn date_at(v: &Value, key: &str) -> Option<NaiveDate> {
    str_at(v, key).and_then(parse_date)
}

pub(crate) fn datetime_at(v: &Value, key: &str) -> Option<NaiveDateTime> {
    str_at(v, key).and_then(parse_datetime)
}

/// The first of `keys` that holds a date; `"xPeriod"` keys read `.start`.
pub(crate) fn first_datetime(v: &Value, keys: &[&str]) -> Option<NaiveDateTime> {
    keys.iter().find_map(|k| {
        if k.ends_with("Period") || *k == "period" {
            v.get(*k).and_then(|p| datetime_at(p, "start"))
        } else {
            datetime_at(v, k)
        }
    })
}

/// The id a FHIR reference points at, when it points at a resource of `resource_type`:
/// `Patient/123`, `https://x/fhir/Patient/123/_history/2` and `urn:uuid:123` (any type) all
/// give `123`.
pub(crate) fn reference_id(reference: &str, resource_type: &str) -> Option<String> {
    let r = reference.trim();
    if let Some(id) = r.strip_prefix("urn:uuid:") {
        return (!id.is_empty()).then(|| id.to_owned());
    }
    let r = match r.find("/_history/") {
        Some(i) => &r[..i],
        None => r,
    };
    let mut parts = r.rsplit('/');
    let id = parts.next()?;
    let ty = parts.next()?;
    (ty == resource_type && !id.is_empty() && !id.contains('?')).then(|| id.to_owned())
}

/// Strips XHTML to plain text: block ends become line breaks, entities are decoded, runs of
/// blank lines collapse.
pub(crate) fn xhtml_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        out.push_str(&decode_entities(&rest[..lt]));
        let Some(gt) = rest[lt..].find('>') else {
            rest = "";
            break;
        };
        let tag = rest[lt + 1..lt + gt]
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let closing = rest[lt + 1..].starts_with('/');
        match tag.as_str() {
            "br" => out.push('\n'),
            "p" | "div" | "tr" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "table" | "ul"
            | "ol" => out.push('\n'),
            "li" if !closing => out.push_str("\n• "),
            "td" | "th" if closing => out.push('\t'),
            _ => {}
        }
        rest = &rest[lt + gt + 1..];
    }
    out.push_str(&decode_entities(rest));
    tidy_lines(&out)
}

fn tidy_lines(s: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    for line in s.lines() {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() && lines.last().is_none_or(|l| l.is_empty()) {
            continue;
        }
        lines.push(line);
    }
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines.join("\n")
}

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let decoded = after.find(';').filter(|&i| i <= 10).and_then(|semi| {
            let name = &after[..semi];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ => {
                    if let Some(hex) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                        u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)
                    } else if let Some(dec) = name.strip_prefix('#') {
                        dec.parse().ok().and_then(char::from_u32)
                    } else {
                        None
                    }
                }
            }?;
            Some((c, semi))
        });
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Decodes standard base64 (whitespace ignored); `None` on a malformed input.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    }
    let clean: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let body = clean
        .iter()
        .rposition(|&b| b != b'=')
        .map_or(&clean[..0], |i| &clean[..=i]);
    if clean.len() - body.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for &c in body {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 6 {
        return None; // one stray character cannot encode a byte
    }
    Some(out)
}

/// Encodes standard base64 with padding.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fhir_partial_dates() {
        assert_eq!(parse_date("2024"), NaiveDate::from_ymd_opt(2024, 1, 1));
        assert_eq!(parse_date("2024-03"), NaiveDate::from_ymd_opt(2024, 3, 1));
        assert_eq!(
            parse_date("2021-10-27T14:52:10-04:00"),
            NaiveDate::from_ymd_opt(2021, 10, 27)
        );
        assert_eq!(parse_date("27/10/2021"), None);
    }

    #[test]
    fn datetime_keeps_wall_clock_time() {
        let dt = parse_datetime("2021-10-27T14:52:10-04:00").unwrap();
        assert_eq!(dt.to_string(), "2021-10-27 14:52:10");
        let dt = parse_datetime("2021-10-27T14:52:10.163+01:00").unwrap();
        assert_eq!(dt.format("%H:%M").to_string(), "14:52");
        let dt = parse_datetime("2021-10-27").unwrap();
        assert_eq!(dt.to_string(), "2021-10-27 00:00:00");
    }

    #[test]
    fn references_by_type_and_urn() {
        assert_eq!(reference_id("Patient/p1", "Patient").as_deref(), Some("p1"));
        assert_eq!(
            reference_id("https://x.nhs.uk/fhir/Patient/p1/_history/3", "Patient").as_deref(),
            Some("p1")
        );
        assert_eq!(
            reference_id("urn:uuid:abc", "Patient").as_deref(),
            Some("abc")
        );
        assert_eq!(reference_id("Group/g1", "Patient"), None);
        assert_eq!(
            reference_id("Practitioner?identifier=x|1", "Practitioner"),
            None
        );
    }

    #[test]
    fn xhtml_is_stripped_to_text() {
        let html = r#"<div xmlns="http://www.w3.org/1999/xhtml"><p>Admitted with <b>chest pain</b> &amp; breathlessness.</p><ul><li>Troponin &lt; 5</li><li>ECG normal</li></ul>Seen by Dr&#160;Evans&#x2e;</div>"#;
        let text = xhtml_to_text(html);
        assert_eq!(
            text,
            "Admitted with chest pain & breathlessness.\n\n• Troponin < 5\n• ECG normal\nSeen by Dr Evans."
        );
    }

    #[test]
    fn base64_round_trip_and_rejects_garbage() {
        for s in ["", "a", "ab", "abc", "Siân – discharge letter\n"] {
            let enc = base64_encode(s.as_bytes());
            assert_eq!(base64_decode(&enc).unwrap(), s.as_bytes(), "{s}");
        }
        assert_eq!(base64_decode("SGVs\nbG8=").unwrap(), b"Hello");
        assert!(base64_decode("SGVsbG8*").is_none());
        assert!(base64_decode("SGVsbG8====").is_none());
    }
}
