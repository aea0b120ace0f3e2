//! Text normalisation for the list search: names folded so that `sian` finds `Siân`, postcodes
//! and NHS numbers without spaces, dates of birth in UK order, and the reading of a search box
//! into one of those.

use chrono::NaiveDate;

/// Lower-case `s` and fold Latin diacritics and ligatures to plain ASCII letters (`Siân` →
/// `sian`, `Zoë` → `zoe`, `Ó Briain` → `o briain`, `Øyvind` → `oyvind`, `Straße` → `strasse`).
/// Apostrophes and hyphens vanish (`O'Neill` → `oneill`), other punctuation becomes a space, and
/// runs of spaces become one.
pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            // Combining marks of decomposed input (U+0300..U+036F) carry only the accent.
            '\u{300}'..='\u{36f}' => {}
            '\'' | '\u{2019}' | '\u{2018}' | '`' | '-' | '\u{2010}' | '\u{2011}' => {}
            c if c.is_alphanumeric() => {
                if c.is_ascii() {
                    out.push(c.to_ascii_lowercase());
                } else if let Some(folded) = fold_char(c) {
                    out.push_str(folded);
                } else {
                    out.extend(c.to_lowercase());
                }
            }
            _ => {
                if !out.ends_with(' ') && !out.is_empty() {
                    out.push(' ');
                }
            }
        }
    }
    while out.ends_with(' ') {
        out.pop();
    }
    out
}

/// The folded ASCII form of a non-ASCII Latin letter (Latin-1 Supplement and Latin Extended-A,
/// which cover the names of the British Isles and most of Europe).
fn fold_char(c: char) -> Option<&'static str> {
    Some(match c {
        'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' | 'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'Ā' | 'ā' | 'Ă'
        | 'ă' | 'Ą' | 'ą' => "a",
        'Æ' | 'æ' => "ae",
        'Ç' | 'ç' | 'Ć' | 'ć' | 'Ĉ' | 'ĉ' | 'Ċ' | 'ċ' | 'Č' | 'č' => "c",
        'Ð' | 'ð' | 'Ď' | 'ď' | 'Đ' | 'đ' => "d",
        'È' | 'É' | 'Ê' | 'Ë' | 'è' | 'é' | 'ê' | 'ë' | 'Ē' | 'ē' | 'Ĕ' | 'ĕ' | 'Ė' | 'ė' | 'Ę'
        | 'ę' | 'Ě' | 'ě' => "e",
        'Ĝ' | 'ĝ' | 'Ğ' | 'ğ' | 'Ġ' | 'ġ' | 'Ģ' | 'ģ' => "g",
        'Ĥ' | 'ĥ' | 'Ħ' | 'ħ' => "h",
        'Ì' | 'Í' | 'Î' | 'Ï' | 'ì' | 'í' | 'î' | 'ï' | 'Ĩ' | 'ĩ' | 'Ī' | 'ī' | 'Ĭ' | 'ĭ' | 'Į'
        | 'į' | 'İ' | 'ı' => "i",
        'Ĳ' | 'ĳ' => "ij",
        'Ĵ' | 'ĵ' => "j",
        'Ķ' | 'ķ' | 'ĸ' => "k",
        'Ĺ' | 'ĺ' | 'Ļ' | 'ļ' | 'Ľ' | 'ľ' | 'Ŀ' | 'ŀ' | 'Ł' | 'ł' => "l",
        'Ñ' | 'ñ' | 'Ń' | 'ń' | 'Ņ' | 'ņ' | 'Ň' | 'ň' | 'ŉ' | 'Ŋ' | 'ŋ' => "n",
        'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø' | 'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'Ō' | 'ō' | 'Ŏ'
        | 'ŏ' | 'Ő' | 'ő' => "o",
        'Œ' | 'œ' => "oe",
        'Ŕ' | 'ŕ' | 'Ŗ' | 'ŗ' | 'Ř' | 'ř' => "r",
        'Ś' | 'ś' | 'Ŝ' | 'ŝ' | 'Ş' | 'ş' | 'Š' | 'š' | 'ſ' => "s",
        'ß' => "ss",
        'Ţ' | 'ţ' | 'Ť' | 'ť' | 'Ŧ' | 'ŧ' => "t",
        'Þ' | 'þ' => "th",
        'Ù' | 'Ú' | 'Û' | 'Ü' | 'ù' | 'ú' | 'û' | 'ü' | 'Ũ' | 'ũ' | 'Ū' | 'ū' | 'Ŭ' | 'ŭ' | 'Ů'
        | 'ů' | 'Ű' | 'ű' | 'Ų' | 'ų' => "u",
        'Ŵ' | 'ŵ' => "w",
        'Ý' | 'ý' | 'ÿ' | 'Ŷ' | 'ŷ' | 'Ÿ' => "y",
        'Ź' | 'ź' | 'Ż' | 'ż' | 'Ž' | 'ž' => "z",
        _ => return None,
    })
}

/// The searchable name column: folded given and family names between spaces. A family name of
/// several words is also kept squashed, so that `obriain` finds `Ó Briain` as `oneill` finds
/// `O'Neill`.
pub fn name_search_key(given: &str, family: &str) -> String {
    let family = fold(family);
    let mut key = format!(" {} {} ", fold(given), family);
    if family.contains(' ') {
        key.push_str(&family.replace(' ', ""));
        key.push(' ');
    }
    key
}

/// The key the list sorts names by: folded family name, then given name.
pub fn name_sort_key(given: &str, family: &str) -> String {
    format!("{} {}", fold(family), fold(given))
}

/// A UK postcode as stored: upper case, no spaces (`ls1 4ab` → `LS14AB`).
pub fn normalise_postcode(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// What a search box asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchQuery {
    /// Nothing: the whole list.
    All,
    /// Digits only (spaces and hyphens ignored): an NHS number or its beginning.
    NhsNumberPrefix(String),
    /// A date of birth.
    BirthDate(NaiveDate),
    /// A postcode or its beginning, normalised. `outward` is set when the user typed a space,
    /// which fixes the outward code (`LS1 4` must not find `LS14 …`).
    Postcode {
        prefix: String,
        outward: Option<String>,
    },
    /// Name words, folded; every word must occur in the name.
    Name(Vec<String>),
    /// One or two letters: part of a name, or a postcode area (`LS`, `m`).
    NameOrArea { word: String, area: String },
}

impl SearchQuery {
    /// Read what the user typed.
    pub fn parse(input: &str) -> SearchQuery {
        let t = input.trim();
        if t.is_empty() {
            return SearchQuery::All;
        }
        if let Some(d) = parse_birth_date(t) {
            return SearchQuery::BirthDate(d);
        }
        let compact: String = t.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        if compact.chars().all(|c| c.is_ascii_digit()) {
            return SearchQuery::NhsNumberPrefix(compact);
        }
        if looks_like_postcode(t) {
            let prefix = normalise_postcode(t);
            let outward = t
                .split_once(' ')
                .map(|(o, _)| normalise_postcode(o))
                .filter(|o| !o.is_empty());
            return SearchQuery::Postcode { prefix, outward };
        }
        if t.len() <= 2 && t.chars().all(|c| c.is_ascii_alphabetic()) {
            return SearchQuery::NameOrArea {
                word: fold(t),
                area: t.to_ascii_uppercase(),
            };
        }
        let words: Vec<String> = fold(t).split(' ').map(str::to_owned).collect();
        SearchQuery::Name(words.into_iter().filter(|w| !w.is_empty()).collect())
    }
}

/// `dd/mm/yyyy` (also with `-` or `.`, one- or two-digit day and month) or `yyyy-mm-dd`.
pub fn parse_birth_date(s: &str) -> Option<NaiveDate> {
    let s = s.trim();
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d);
    }
    let parts: Vec<&str> = s.split(['/', '-', '.']).collect();
    if parts.len() != 3 || parts[2].len() != 4 {
        return None;
    }
    let day: u32 = parts[0].parse().ok()?;
    let month: u32 = parts[1].parse().ok()?;
    let year: i32 = parts[2].parse().ok()?;
    NaiveDate::from_ymd_opt(year, month, day)
}

/// A postcode or its start: one or two letters, then a digit, then letters and digits, at most
/// one space, at most 8 characters (`LS1`, `ls1 4ab`, `SW1A1AA`).
fn looks_like_postcode(s: &str) -> bool {
    if s.len() > 8 || s.matches(' ').count() > 1 {
        return false;
    }
    let c: Vec<char> = s.chars().filter(|c| *c != ' ').collect();
    if !c.iter().all(|c| c.is_ascii_alphanumeric()) {
        return false;
    }
    let letters = c.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    (1..=2).contains(&letters) && c.len() > letters && c[letters].is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_welsh_irish_and_other_names() {
        assert_eq!(fold("Siân"), "sian");
        assert_eq!(fold("ZOË"), "zoe");
        assert_eq!(fold("Ó Briain"), "o briain");
        assert_eq!(fold("O'Neill"), "oneill");
        assert_eq!(fold("Smith-Jones"), "smithjones");
        assert_eq!(fold("Łukasz  Nowak"), "lukasz nowak");
        assert_eq!(fold("Straße"), "strasse");
        // Decomposed input: 'a' + combining circumflex.
        assert_eq!(fold("Sia\u{302}n"), "sian");
        assert_eq!(name_search_key("Siân", "Evans"), " sian evans ");
        assert_eq!(name_search_key("Zoë", "Ó Briain"), " zoe o briain obriain ");
    }

    #[test]
    fn postcodes_normalise() {
        assert_eq!(normalise_postcode("ls1 4ab"), "LS14AB");
        assert_eq!(normalise_postcode(" SW1A  1AA "), "SW1A1AA");
    }

    #[test]
    fn search_box_reads_each_kind() {
        assert_eq!(SearchQuery::parse("  "), SearchQuery::All);
        assert_eq!(
            SearchQuery::parse("999 000"),
            SearchQuery::NhsNumberPrefix("999000".into())
        );
        assert_eq!(
            SearchQuery::parse("999-000-0018"),
            SearchQuery::NhsNumberPrefix("9990000018".into())
        );
        let feb1 = NaiveDate::from_ymd_opt(1950, 2, 1).unwrap();
        assert_eq!(
            SearchQuery::parse("01/02/1950"),
            SearchQuery::BirthDate(feb1)
        );
        assert_eq!(SearchQuery::parse("1/2/1950"), SearchQuery::BirthDate(feb1));
        assert_eq!(
            SearchQuery::parse("1950-02-01"),
            SearchQuery::BirthDate(feb1)
        );
        assert_eq!(
            SearchQuery::parse("ls1"),
            SearchQuery::Postcode {
                prefix: "LS1".into(),
                outward: None
            }
        );
        assert_eq!(
            SearchQuery::parse("LS1 4A"),
            SearchQuery::Postcode {
                prefix: "LS14A".into(),
                outward: Some("LS1".into())
            }
        );
        assert_eq!(
            SearchQuery::parse("Siân Evans"),
            SearchQuery::Name(vec!["sian".into(), "evans".into()])
        );
        assert_eq!(
            SearchQuery::parse("sian"),
            SearchQuery::Name(vec!["sian".into()])
        );
        assert_eq!(
            SearchQuery::parse("ls"),
            SearchQuery::NameOrArea {
                word: "ls".into(),
                area: "LS".into()
            }
        );
        // Not a date (31 February), so a name search that finds nothing, not a crash.
        assert!(parse_birth_date("31/02/1950").is_none());
    }
}
