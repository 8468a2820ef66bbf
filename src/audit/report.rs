//! What an audit found: a table for people (one line per check and a summary) and JSON for
//! machines. Nothing here decides anything; `failed()` is what the exit status follows.

use serde::Serialize;

use super::checks::TargetKind;
use super::eval::Status;

#[derive(Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub kind: TargetKind,
    pub iaas: Option<String>,
    pub results: Vec<CheckResult>,
}

#[derive(Debug, Serialize)]
pub struct CheckResult {
    pub id: String,
    pub tag: Option<String>,
    pub title: String,
    pub status: Status,
    /// Why it failed or was skipped; what was seen when it passed.
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub checks: usize,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Report {
    pub fn summary(&self) -> Summary {
        let count = |s: Status| self.results.iter().filter(|r| r.status == s).count();
        Summary {
            checks: self.results.len(),
            passed: count(Status::Pass),
            failed: count(Status::Fail),
            skipped: count(Status::Skip),
        }
    }

    pub fn failed(&self) -> usize {
        self.summary().failed
    }

    pub fn table(&self) -> String {
        let id_width = self
            .results
            .iter()
            .map(|r| r.id.len())
            .max()
            .unwrap_or(2)
            .max(2);
        let title_width = self
            .results
            .iter()
            .map(|r| title(r).chars().count())
            .max()
            .unwrap_or(5)
            .clamp(5, 72);
        let mut out = format!(
            "{:<6} {:<id_width$}  {:<title_width$}  WHY\n",
            "RESULT", "ID", "TITLE"
        );
        for r in &self.results {
            let status = match r.status {
                Status::Pass => "pass",
                Status::Fail => "FAIL",
                Status::Skip => "skip",
            };
            let mut t: String = title(r).chars().take(title_width).collect();
            if title(r).chars().count() > title_width {
                t.pop();
                t.push('…');
            }
            out.push_str(&format!(
                "{status:<6} {:<id_width$}  {t:<title_width$}  {}\n",
                r.id, r.detail
            ));
        }
        let s = self.summary();
        out.push_str(&format!(
            "{} checks on {} ({}{}): {} passed, {} failed, {} skipped\n",
            s.checks,
            self.target,
            self.kind.name(),
            self.iaas
                .as_deref()
                .map(|i| format!(", {i}"))
                .unwrap_or_default(),
            s.passed,
            s.failed,
            s.skipped
        ));
        out
    }

    pub fn json(&self) -> String {
        #[derive(Serialize)]
        struct Document<'a> {
            #[serde(flatten)]
            report: &'a Report,
            summary: Summary,
        }
        serde_json::to_string_pretty(&Document {
            report: self,
            summary: self.summary(),
        })
        .expect("a report serializes")
    }
}

fn title(r: &CheckResult) -> String {
    match &r.tag {
        Some(tag) => format!("{} ({tag})", r.title),
        None => r.title.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            target: "os-image.tgz".into(),
            kind: TargetKind::OsImage,
            iaas: None,
            results: vec![
                CheckResult {
                    id: "a".into(),
                    tag: Some("CIS-9.4".into()),
                    title: "first".into(),
                    status: Status::Pass,
                    detail: "ok".into(),
                },
                CheckResult {
                    id: "b".into(),
                    tag: None,
                    title: "second".into(),
                    status: Status::Fail,
                    detail: "broken".into(),
                },
            ],
        }
    }

    #[test]
    fn table_lists_each_check_and_a_summary() {
        let table = report().table();
        assert!(table.contains("pass   a   first (CIS-9.4)  ok"), "{table}");
        assert!(table.contains("FAIL   b   second"), "{table}");
        assert!(
            table.ends_with("2 checks on os-image.tgz (os-image): 1 passed, 1 failed, 0 skipped\n"),
            "{table}"
        );
    }

    #[test]
    fn json_carries_results_and_summary() {
        let value: serde_json::Value = serde_json::from_str(&report().json()).unwrap();
        assert_eq!(value["kind"], "os-image");
        assert_eq!(value["results"][1]["status"], "fail");
        assert_eq!(value["summary"]["failed"], 1);
    }
}
