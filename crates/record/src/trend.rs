//! Trend charts of observation series: which series get one, and where each point goes.
//!
//! The UI draws the chart as SVG from a [`TrendChart`]; everything that could be wrong about
//! it (which values, in what order, against which scale, inside or outside which range) is
//! decided here, without IO, and tested without a window.
//!
//! Rules:
//! - A chart shows one [`ObservationSeries`], and a series never mixes units (the views key a
//!   series by code and unit), so a chart never joins values of different units: HbA1c in
//!   mmol/mol and in % are two charts.
//! - Charted: the series clinicians follow over time (HbA1c, eGFR, blood pressure, weight,
//!   INR) once they have two numeric values, and any other series with three or more.
//! - Only numeric values are plotted; a text value or a comparator (`<5`) stays in the table
//!   beside the chart, which lists every point.
//! - Time runs left to right in proportion to the dates (a gap of a year looks like one);
//!   points on one date share an x. The value scale is linear, padded, with round ticks, and
//!   always includes the source's reference range when it gave one, so the band is drawn.
//! - A point flagged abnormal (by the source, or outside its range) is marked as such; the
//!   UI draws it with a different shape as well as a colour, and the table says it in words.

use chrono::{Datelike, NaiveDateTime};

use crate::coding::{LOINC, SNOMED};
use crate::views::ObservationSeries;

/// Series charted from two numeric values: (system, code) pairs, LOINC and SNOMED CT.
const FOLLOWED: &[(&str, &str)] = &[
    // HbA1c (IFCC mmol/mol and DCCT %).
    (LOINC, "4548-4"),
    (LOINC, "59261-8"),
    (LOINC, "17856-6"),
    (SNOMED, "999791000000106"),
    (SNOMED, "1019431000000105"),
    // eGFR.
    (LOINC, "33914-3"),
    (LOINC, "62238-1"),
    (LOINC, "69405-9"),
    (LOINC, "98979-8"),
    (SNOMED, "1011481000000105"),
    (SNOMED, "1020291000000106"),
    // Blood pressure, as its systolic and diastolic series.
    (LOINC, "8480-6"),
    (LOINC, "8462-4"),
    (SNOMED, "72313002"),
    (SNOMED, "271649006"),
    (SNOMED, "1091811000000102"),
    (SNOMED, "271650006"),
    // Body weight.
    (LOINC, "29463-7"),
    (SNOMED, "27113001"),
    // INR.
    (LOINC, "6301-6"),
    (LOINC, "34714-6"),
    (SNOMED, "440685005"),
];

/// Is `series` one of those followed over time (HbA1c, eGFR, blood pressure, weight, INR)?
pub fn is_followed(series: &ObservationSeries) -> bool {
    FOLLOWED
        .iter()
        .any(|(system, code)| series.code.system == *system && series.code.code == *code)
}

/// The numeric values of a series, oldest first.
fn numeric(series: &ObservationSeries) -> Vec<(NaiveDateTime, f64, bool)> {
    let mut points: Vec<_> = series
        .points
        .iter()
        .filter_map(|p| {
            p.value
                .filter(|v| v.is_finite())
                .map(|v| (p.when, v, p.abnormal))
        })
        .collect();
    points.sort_by_key(|p| p.0);
    points
}

/// Does `series` get a chart beside its table?
pub fn wants_chart(series: &ObservationSeries) -> bool {
    let n = numeric(series).len();
    n >= 3 || (n >= 2 && is_followed(series))
}

/// The drawing area, in the SVG's own units (the UI scales the whole picture).
pub const WIDTH: f64 = 560.0;
pub const HEIGHT: f64 = 220.0;
/// Room for the value labels on the left and the dates below.
pub const LEFT: f64 = 56.0;
pub const RIGHT: f64 = WIDTH - 16.0;
pub const TOP: f64 = 12.0;
pub const BOTTOM: f64 = HEIGHT - 30.0;

/// One plotted value.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartPoint {
    pub x: f64,
    pub y: f64,
    pub when: NaiveDateTime,
    pub value: f64,
    pub abnormal: bool,
}

/// A tick on an axis: where, and its label.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub at: f64,
    pub label: String,
}

/// The source's reference range as a band across the plot.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeBand {
    pub low: f64,
    pub high: f64,
    /// y of `high` (the top of the band) and of `low`.
    pub y_high: f64,
    pub y_low: f64,
}

/// A series laid out for drawing.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendChart {
    pub name: String,
    pub unit: Option<String>,
    /// Oldest first; the line joins them in this order.
    pub points: Vec<ChartPoint>,
    pub band: Option<RangeBand>,
    pub y_ticks: Vec<Tick>,
    pub x_ticks: Vec<Tick>,
}

impl TrendChart {
    /// The SVG path joining the points (`M x y L x y ...`).
    pub fn line(&self) -> String {
        self.points
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}{:.1} {:.1}", if i == 0 { "M" } else { "L" }, p.x, p.y))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A sentence for screen readers: what the chart shows, its span and its latest value.
    pub fn summary(&self) -> String {
        let unit = self
            .unit
            .as_deref()
            .map(|u| format!(" {u}"))
            .unwrap_or_default();
        let (Some(first), Some(last)) = (self.points.first(), self.points.last()) else {
            return format!("{}: no numeric values", self.name);
        };
        let abnormal = self.points.iter().filter(|p| p.abnormal).count();
        let range = self
            .band
            .as_ref()
            .map(|b| format!(", reference range {}–{}", number(b.low), number(b.high)))
            .unwrap_or_default();
        format!(
            "{} trend: {} values from {} to {}; latest {}{unit}{}{range}; {} abnormal",
            self.name,
            self.points.len(),
            first.when.format("%-d %b %Y"),
            last.when.format("%-d %b %Y"),
            number(last.value),
            if last.abnormal { " (abnormal)" } else { "" },
            abnormal,
        )
    }
}

/// A value as a label: at most two decimals, no trailing zeros.
pub fn number(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// The reference range shared by the series' points, when they agree on one (the latest
/// point's, if they differ: the range the source applies now).
fn reference_range(series: &ObservationSeries) -> Option<(f64, f64)> {
    series
        .points
        .iter()
        .filter_map(|p| match (p.low, p.high) {
            (Some(l), Some(h)) if l.is_finite() && h.is_finite() && l <= h => Some((p.when, l, h)),
            _ => None,
        })
        .max_by_key(|r| r.0)
        .map(|(_, l, h)| (l, h))
}

/// A round step for about `target` intervals over `span`: 1, 2 or 5 times a power of ten.
fn nice_step(span: f64, target: f64) -> f64 {
    let raw = span / target;
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Lays `series` out for drawing, or `None` when it has no numeric value.
pub fn chart(series: &ObservationSeries) -> Option<TrendChart> {
    let values = numeric(series);
    if values.is_empty() {
        return None;
    }
    let range = reference_range(series);

    // Value scale: the values and the range, padded, rounded out to whole steps.
    let mut lo = values.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let mut hi = values.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    if let Some((l, h)) = range {
        lo = lo.min(l);
        hi = hi.max(h);
    }
    let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    let step = nice_step(span, 4.0);
    let lo = ((lo - span * 0.05) / step).floor() * step;
    let hi = ((hi + span * 0.05) / step).ceil() * step;
    let hi = if hi > lo { hi } else { lo + step };
    let y_of = |v: f64| BOTTOM - (v - lo) / (hi - lo) * (BOTTOM - TOP);

    // Time scale: in proportion to the dates.
    let t0 = values[0].0.and_utc().timestamp() as f64;
    let t1 = values[values.len() - 1].0.and_utc().timestamp() as f64;
    let x_of = |t: NaiveDateTime| {
        if t1 > t0 {
            LEFT + (t.and_utc().timestamp() as f64 - t0) / (t1 - t0) * (RIGHT - LEFT)
        } else {
            (LEFT + RIGHT) / 2.0
        }
    };

    let points = values
        .iter()
        .map(|&(when, value, abnormal)| ChartPoint {
            x: x_of(when),
            y: y_of(value),
            when,
            value,
            abnormal,
        })
        .collect();

    let mut y_ticks = Vec::new();
    let mut v = lo;
    while v <= hi + step * 1e-9 {
        y_ticks.push(Tick {
            at: y_of(v),
            label: number(v),
        });
        v += step;
    }

    // Dates: the first and the last, and one between when there is room.
    let first = values[0].0;
    let last = values[values.len() - 1].0;
    let label = |t: NaiveDateTime| {
        if first.year() == last.year() && first.month() == last.month() {
            t.format("%-d %b %Y").to_string()
        } else {
            t.format("%b %Y").to_string()
        }
    };
    let mut x_ticks = vec![Tick {
        at: x_of(first),
        label: label(first),
    }];
    if t1 > t0 {
        let middle = chrono::DateTime::from_timestamp(((t0 + t1) / 2.0) as i64, 0)
            .map(|d| d.naive_utc())
            .unwrap_or(first);
        let middle_label = label(middle);
        if middle_label != x_ticks[0].label && middle_label != label(last) {
            x_ticks.push(Tick {
                at: x_of(middle),
                label: middle_label,
            });
        }
        if label(last) != x_ticks[0].label {
            x_ticks.push(Tick {
                at: x_of(last),
                label: label(last),
            });
        }
    }

    Some(TrendChart {
        name: series.name.clone(),
        unit: series.unit.clone(),
        points,
        band: range.map(|(low, high)| RangeBand {
            low,
            high,
            y_high: y_of(high),
            y_low: y_of(low),
        }),
        y_ticks,
        x_ticks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coding::Coding;
    use crate::views::{ObservationPoint, Provenance};
    use chrono::NaiveDate;

    fn at(y: i32, m: u32, d: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(9, 30, 0)
            .unwrap()
    }

    fn point(when: NaiveDateTime, value: Option<f64>, text: Option<&str>) -> ObservationPoint {
        ObservationPoint {
            id: format!("obs-{when}"),
            when,
            value,
            text: text.map(str::to_owned),
            provenance: Provenance::default(),
            low: None,
            high: None,
            abnormal: false,
        }
    }

    fn series(
        system: &str,
        code: &str,
        unit: &str,
        points: Vec<ObservationPoint>,
    ) -> ObservationSeries {
        ObservationSeries {
            code: Coding::new(system, code, None),
            name: "Test series".into(),
            unit: Some(unit.into()),
            points,
        }
    }

    #[test]
    fn followed_series_chart_from_two_values_others_from_three() {
        let two = vec![
            point(at(2025, 1, 1), Some(50.0), None),
            point(at(2025, 6, 1), Some(48.0), None),
        ];
        assert!(wants_chart(&series(
            LOINC,
            "59261-8",
            "mmol/mol",
            two.clone()
        )));
        assert!(wants_chart(&series(SNOMED, "27113001", "kg", two.clone())));
        assert!(!wants_chart(&series(
            LOINC,
            "2823-3",
            "mmol/L",
            two.clone()
        )));
        let mut three = two;
        three.push(point(at(2025, 9, 1), Some(4.1), None));
        assert!(wants_chart(&series(LOINC, "2823-3", "mmol/L", three)));
        // Text values do not count towards a chart.
        let texts = vec![
            point(at(2025, 1, 1), None, Some("<5")),
            point(at(2025, 2, 1), None, Some("<5")),
            point(at(2025, 3, 1), Some(6.0), None),
        ];
        assert!(!wants_chart(&series(LOINC, "2823-3", "mmol/L", texts)));
    }

    #[test]
    fn points_run_oldest_to_newest_in_proportion_to_the_dates() {
        // Given newest first, with a text value among them.
        let s = series(
            LOINC,
            "29463-7",
            "kg",
            vec![
                point(at(2026, 1, 1), Some(80.0), None),
                point(at(2025, 1, 1), None, Some("refused")),
                point(at(2024, 1, 1), Some(90.0), None),
                point(at(2025, 12, 31), Some(85.0), None),
            ],
        );
        let c = chart(&s).unwrap();
        let values: Vec<f64> = c.points.iter().map(|p| p.value).collect();
        assert_eq!(values, vec![90.0, 85.0, 80.0]);
        assert_eq!(c.points[0].x, LEFT);
        assert_eq!(c.points[2].x, RIGHT);
        // 31 Dec 2025 is one day before the last point: almost at the right edge, not in the
        // middle as an evenly spaced chart would put it.
        assert!(c.points[1].x > RIGHT - 2.0, "{}", c.points[1].x);
        // Higher values are higher up (smaller y), all inside the plot.
        assert!(c.points[0].y < c.points[1].y && c.points[1].y < c.points[2].y);
        for p in &c.points {
            assert!((TOP..=BOTTOM).contains(&p.y), "{p:?}");
        }
        assert!(c.line().starts_with("M56.0 "), "{}", c.line());
        assert_eq!(c.line().matches('L').count(), 2);
    }

    #[test]
    fn the_reference_range_is_inside_the_scale_and_abnormal_points_stay_marked() {
        let mut points = vec![
            point(at(2025, 1, 1), Some(62.0), None),
            point(at(2025, 4, 1), Some(55.0), None),
            point(at(2025, 7, 1), Some(47.0), None),
        ];
        for p in &mut points {
            p.low = Some(20.0);
            p.high = Some(41.0);
            p.abnormal = p.value.unwrap() > 41.0;
        }
        let c = chart(&series(LOINC, "59261-8", "mmol/mol", points)).unwrap();
        let band = c.band.clone().unwrap();
        assert_eq!((band.low, band.high), (20.0, 41.0));
        assert!(band.y_high < band.y_low);
        assert!(band.y_low <= BOTTOM && band.y_high >= TOP);
        // Every value is above the band's top.
        assert!(c.points.iter().all(|p| p.y < band.y_high));
        assert!(c.points.iter().all(|p| p.abnormal));
        // Ticks cover the band and the values, lowest at the bottom, with round labels.
        let first: f64 = c.y_ticks.first().unwrap().label.parse().unwrap();
        let last: f64 = c.y_ticks.last().unwrap().label.parse().unwrap();
        assert!(first <= 20.0 && last >= 62.0, "{:?}", c.y_ticks);
        assert_eq!(c.y_ticks.first().unwrap().at, BOTTOM);
        assert!(
            c.summary()
                .contains("3 values from 1 Jan 2025 to 1 Jul 2025"),
            "{}",
            c.summary()
        );
        assert!(
            c.summary().contains("latest 47 mmol/mol (abnormal)"),
            "{}",
            c.summary()
        );
        assert!(
            c.summary().contains("reference range 20–41"),
            "{}",
            c.summary()
        );
    }

    #[test]
    fn one_value_or_equal_values_still_draw_inside_the_plot() {
        let c = chart(&series(
            LOINC,
            "6301-6",
            "{INR}",
            vec![point(at(2025, 1, 1), Some(2.5), None)],
        ))
        .unwrap();
        assert_eq!(c.points[0].x, (LEFT + RIGHT) / 2.0);
        assert!((TOP..=BOTTOM).contains(&c.points[0].y));
        let same = vec![
            point(at(2025, 1, 1), Some(0.0), None),
            point(at(2025, 2, 1), Some(0.0), None),
        ];
        let c = chart(&series(LOINC, "6301-6", "{INR}", same)).unwrap();
        assert!(
            c.points.iter().all(|p| (TOP..=BOTTOM).contains(&p.y)),
            "{:?}",
            c.points
        );
        assert!(c.y_ticks.len() >= 2);
        assert!(
            chart(&series(
                LOINC,
                "6301-6",
                "{INR}",
                vec![point(at(2025, 1, 1), None, Some("x"))]
            ))
            .is_none()
        );
    }

    #[test]
    fn numbers_lose_trailing_zeros() {
        assert_eq!(number(48.0), "48");
        assert_eq!(number(2.50), "2.5");
        assert_eq!(number(0.126), "0.13");
        assert_eq!(number(-0.0), "0");
    }
}
