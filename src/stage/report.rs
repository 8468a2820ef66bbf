//! The per-step duration report printed at the end of a build (also after a failure).

use std::fmt::Write as _;
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Report {
    rows: Vec<(String, Duration, String)>,
}

impl Report {
    pub fn add(&mut self, step: impl Into<String>, elapsed: Duration, status: impl Into<String>) {
        self.rows.push((step.into(), elapsed, status.into()));
    }

    pub fn render(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|r| r.0.len())
            .max()
            .unwrap_or(4)
            .max(5);
        let total: Duration = self.rows.iter().map(|r| r.1).sum();
        let mut out = String::from("duration report\n");
        for (step, elapsed, status) in &self.rows {
            let _ = writeln!(out, "  {step:<width$}  {:>9}  {status}", human(*elapsed));
        }
        let _ = writeln!(out, "  {:<width$}  {:>9}", "total", human(total));
        out
    }
}

pub fn human(elapsed: Duration) -> String {
    // Round to tenths first, then split: splitting first prints 119.96 s as `1m60.0s`.
    let tenths = (elapsed.as_secs_f64() * 10.0).round() as u64;
    if tenths >= 600 {
        format!("{}m{:02}.{}s", tenths / 600, tenths % 600 / 10, tenths % 10)
    } else {
        format!("{}.{}s", tenths / 10, tenths % 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_row_and_a_total() {
        let mut report = Report::default();
        report.add("01-base_apt", Duration::from_millis(1500), "ok");
        report.add("02-users", Duration::from_secs(61), "failed");
        let text = report.render();
        assert!(
            text.contains("01-base_apt") && text.contains("1.5s"),
            "{text}"
        );
        assert!(
            text.contains("1m01.0s") && text.contains("failed"),
            "{text}"
        );
        assert!(text.contains("total") && text.contains("1m02.5s"), "{text}");
    }

    #[test]
    fn seconds_never_read_sixty() {
        assert_eq!(human(Duration::from_secs_f64(119.96)), "2m00.0s");
        assert_eq!(human(Duration::from_secs_f64(59.96)), "1m00.0s");
        assert_eq!(human(Duration::from_secs_f64(59.94)), "59.9s");
        assert_eq!(human(Duration::from_secs_f64(3599.99)), "60m00.0s");
        assert_eq!(human(Duration::from_millis(60)), "0.1s");
    }
}
