//! What a benchmark reports: figures, each against its budget where the issue set one, and
//! the samples they come from.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

/// A budget: the figure must not exceed `max` (in the figure's unit).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Budget {
    pub max: f64,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// The table it belongs to ("Device sync", "Search over 10,000 patients").
    pub group: String,
    pub what: String,
    pub value: f64,
    pub unit: &'static str,
    pub budget: Option<Budget>,
    /// How it was measured, or what else to read beside it.
    pub note: String,
}

impl Figure {
    pub fn met(&self) -> Option<bool> {
        self.budget.map(|b| self.value <= b.max)
    }
}

/// Every figure of a run, in the order measured.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub figures: Vec<Figure>,
    /// Curves (how a figure grows with the caseload): name, unit, points (patients, value).
    pub curves: Vec<Curve>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    pub name: String,
    pub unit: &'static str,
    pub points: Vec<(f64, f64)>,
}

impl Report {
    /// Records a figure and prints it as it comes.
    pub fn add(
        &mut self,
        group: &str,
        what: &str,
        value: f64,
        unit: &'static str,
        budget: Option<f64>,
        note: impl Into<String>,
    ) {
        let figure = Figure {
            group: group.into(),
            what: what.into(),
            value,
            unit,
            budget: budget.map(|max| Budget { max }),
            note: note.into(),
        };
        let verdict = match figure.met() {
            Some(true) => format!(" (budget {} {unit}: met)", fmt_value(budget.unwrap())),
            Some(false) => format!(" (budget {} {unit}: MISSED)", fmt_value(budget.unwrap())),
            None => String::new(),
        };
        println!("  {group} / {what}: {} {unit}{verdict}", fmt_value(value));
        self.figures.push(figure);
    }

    pub fn curve(&mut self, name: &str, unit: &'static str, points: Vec<(f64, f64)>) {
        self.curves.push(Curve {
            name: name.into(),
            unit,
            points,
        });
    }

    /// The figures as Markdown tables, one per group.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let mut groups: Vec<&str> = Vec::new();
        for f in &self.figures {
            if !groups.contains(&f.group.as_str()) {
                groups.push(&f.group);
            }
        }
        for group in groups {
            let _ = writeln!(out, "### {group}\n");
            let _ = writeln!(out, "| what | figure | budget | |");
            let _ = writeln!(out, "|---|---|---|---|");
            for f in self.figures.iter().filter(|f| f.group == group) {
                let budget = f.budget.map_or("-".to_string(), |b| {
                    format!("≤ {} {}", fmt_value(b.max), f.unit)
                });
                let verdict = match f.met() {
                    Some(true) => "met",
                    Some(false) => "**missed**",
                    None => "",
                };
                let note = if f.note.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", f.note)
                };
                let _ = writeln!(
                    out,
                    "| {}{note} | **{} {}** | {budget} | {verdict} |",
                    f.what,
                    fmt_value(f.value),
                    f.unit
                );
            }
            out.push('\n');
        }
        for c in &self.curves {
            let _ = writeln!(out, "### {} ({})\n", c.name, c.unit);
            let _ = writeln!(out, "| patients | {} |", c.unit);
            let _ = writeln!(out, "|---|---|");
            for (x, y) in &c.points {
                let _ = writeln!(out, "| {x} | {} |", fmt_value(*y));
            }
            out.push('\n');
        }
        out
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_string_pretty(self)?)?;
        Ok(())
    }
}

/// Three significant figures, no trailing noise.
pub fn fmt_value(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let digits = (3 - 1 - v.abs().log10().floor() as i32).max(0) as usize;
    format!("{v:.digits$}")
}

/// Timings of one operation repeated.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<f64>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1000.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `q` quantile (0.5: median, 0.95: p95), in milliseconds, nearest rank.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let mut v = self.0.clone();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(f64::total_cmp);
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    }

    pub fn median_ms(&self) -> f64 {
        self.quantile_ms(0.5)
    }

    pub fn extend(&mut self, other: &Samples) {
        self.0.extend_from_slice(&other.0);
    }
}

/// Resident set size of a process, from /proc (bytes).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut s = Samples::default();
        for ms in 1..=100 {
            s.push(Duration::from_millis(ms));
        }
        assert_eq!(s.quantile_ms(0.5), 50.0);
        assert_eq!(s.quantile_ms(0.95), 95.0);
        assert_eq!(s.quantile_ms(0.99), 99.0);
        assert_eq!(s.quantile_ms(1.0), 100.0);
    }

    #[test]
    fn values_keep_three_significant_figures() {
        assert_eq!(fmt_value(4.123456), "4.12");
        assert_eq!(fmt_value(0.0712), "0.0712");
        assert_eq!(fmt_value(1234.5), "1234");
        assert_eq!(fmt_value(12.0), "12.0");
    }
}
