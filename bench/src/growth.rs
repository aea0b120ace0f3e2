//! How the initial sync and search grow with the caseload: 100, 1,000 and 10,000 patients of
//! about 20 resources each (so that 10,000 fit in a benchmark run), as a table and an SVG plot.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};
use doorstep_ipc::LIST_FIRST_ROWS;

use crate::Scale;
use crate::figures::{Report, Samples, fmt_value};
use crate::fixture::Federation;

const GROUP: &str = "Growth (about 20 resources a patient)";

pub async fn run(scale: Scale, report: &mut Report, plot: Option<&Path>) -> Result<()> {
    let sizes: &[usize] = if scale.quick {
        &[10, 30]
    } else {
        &[100, 1_000, 10_000]
    };
    let mut sync_points = Vec::new();
    let mut search_points = Vec::new();
    let mut list_points = Vec::new();
    for &patients in sizes {
        let fed = Federation::start(patients, 20).await?;
        let dir = tempfile::tempdir()?;
        let device = fed.enrol(dir.path()).await?;
        let t = Instant::now();
        let synced = device.sync().await?;
        let secs = t.elapsed().as_secs_f64();
        if synced.patients as usize != patients {
            bail!(
                "the sync brought {} patients, not {patients}",
                synced.patients
            );
        }
        let rows = device.list(None, fed.today)?;
        let mut search = Samples::default();
        for row in rows.iter().cycle().take(scale.runs(200)) {
            let prefix: String = row.name.chars().take(3).collect::<String>().to_lowercase();
            let t = Instant::now();
            device.list_page(Some(&prefix), fed.today, Some(LIST_FIRST_ROWS as usize))?;
            search.push(t.elapsed());
        }
        let mut list = Samples::default();
        for _ in 0..scale.runs(50) {
            let t = Instant::now();
            device.list_page(None, fed.today, Some(LIST_FIRST_ROWS as usize))?;
            list.push(t.elapsed());
        }
        report.add(
            GROUP,
            &format!("{patients} patients: initial sync"),
            secs,
            "s",
            None,
            format!("{} pages", synced.pages),
        );
        report.add(
            GROUP,
            &format!("{patients} patients: name prefix search, p95"),
            search.quantile_ms(0.95),
            "ms",
            None,
            "",
        );
        report.add(
            GROUP,
            &format!("{patients} patients: the list's first rows, p95"),
            list.quantile_ms(0.95),
            "ms",
            None,
            "",
        );
        sync_points.push((patients as f64, secs));
        search_points.push((patients as f64, search.quantile_ms(0.95)));
        list_points.push((patients as f64, list.quantile_ms(0.95)));
        drop(device);
        fed.stop().await;
    }
    if let Some(path) = plot {
        std::fs::write(
            path,
            svg(&[
                ("Initial sync", "s", &sync_points),
                ("Name prefix search, p95", "ms", &search_points),
                ("List's first rows, p95", "ms", &list_points),
            ]),
        )?;
        println!("  plot written to {}", path.display());
    }
    report.curve("Initial sync", "s", sync_points);
    report.curve("Name prefix search, p95", "ms", search_points);
    report.curve("List's first rows, p95", "ms", list_points);
    Ok(())
}

/// One panel of the plot: its title, unit and points (patients, figure).
type Panel<'a> = (&'a str, &'a str, &'a [(f64, f64)]);

/// Panels side by side, one a curve: patients on a log scale, the figure on a linear one
/// from zero.
fn svg(panels: &[Panel<'_>]) -> String {
    let (w, h, pad) = (300.0, 220.0, 44.0);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{h}" viewBox="0 0 {} {h}" font-family="sans-serif" font-size="11" role="img" aria-labelledby="t"><title id="t">How Doorstep's initial sync and search grow with the caseload</title><rect width="100%" height="100%" fill="white"/>"#,
        w * panels.len() as f64,
        w * panels.len() as f64
    );
    for (i, (name, unit, points)) in panels.iter().enumerate() {
        let x0 = i as f64 * w;
        let max_y = points.iter().map(|p| p.1).fold(0.0_f64, f64::max).max(1e-9) * 1.15;
        let (lo, hi) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p.0), hi.max(p.0))
        });
        let span = (hi.log10() - lo.log10()).max(1e-9);
        let px = |x: f64| x0 + pad + (x.log10() - lo.log10()) / span * (w - 2.0 * pad);
        let py = |y: f64| h - pad - y / max_y * (h - 2.0 * pad);
        let _ = write!(
            out,
            r#"<text x="{}" y="18" text-anchor="middle" font-weight="bold">{name} ({unit})</text><line x1="{}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
            x0 + w / 2.0,
            x0 + pad,
            h - pad,
            x0 + w - pad,
            h - pad,
            x0 + pad,
            pad,
            x0 + pad,
            h - pad
        );
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = write!(
            out,
            r##"<polyline points="{}" fill="none" stroke="#1f5fa8" stroke-width="2"/>"##,
            path.join(" ")
        );
        for (x, y) in points.iter() {
            let _ = write!(
                out,
                r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#1f5fa8"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="{:.1}" y="{}" text-anchor="middle">{x}</text>"##,
                px(*x),
                py(*y),
                px(*x),
                py(*y) - 7.0,
                fmt_value(*y),
                px(*x),
                h - pad + 14.0
            );
        }
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">patients (log scale)</text>"#,
            x0 + w / 2.0,
            h - 8.0
        );
    }
    out.push_str("</svg>\n");
    out
}
