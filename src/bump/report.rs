//! How `bump` shows what changed: a readable text report, or one JSON document for tools.

use std::fmt::Write;

use anyhow::Result;

use super::diff::VersionChange;
use super::{BumpOutcome, BumpPlan};

pub fn text(plan: &BumpPlan, outcome: &BumpOutcome) -> String {
    let d = &outcome.diff;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "packages: {} -> {} ({} added, {} removed, {} upgraded, {} downgraded)",
        outcome.previous_count,
        outcome.current_count,
        d.added.len(),
        d.removed.len(),
        d.upgraded.len(),
        d.downgraded.len()
    );
    let section = |out: &mut String, title: &str, lines: Vec<String>| {
        if !lines.is_empty() {
            let _ = writeln!(out, "{title}:");
            for line in lines {
                let _ = writeln!(out, "  {line}");
            }
        }
    };
    let entry = |p: &super::diff::Package| format!("{} {} ({})", p.name, p.version, p.arch);
    let change = |c: &VersionChange| match &c.from_arch {
        Some(from) => format!("{} {} -> {} ({from} -> {})", c.name, c.from, c.to, c.arch),
        None => format!("{} {} -> {} ({})", c.name, c.from, c.to, c.arch),
    };
    section(&mut out, "added", d.added.iter().map(entry).collect());
    section(&mut out, "removed", d.removed.iter().map(entry).collect());
    section(
        &mut out,
        "upgraded",
        d.upgraded.iter().map(change).collect(),
    );
    section(
        &mut out,
        "downgraded",
        d.downgraded.iter().map(change).collect(),
    );
    let file = plan.version_file.display();
    match &outcome.new_version {
        Some(new) => {
            let _ = writeln!(
                out,
                "bumped {} -> {new} ({}) in {file}",
                outcome.old_version,
                plan.level.name()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "nothing changed: {} in {file} left as it was",
                outcome.old_version
            );
        }
    }
    out
}

pub fn json(plan: &BumpPlan, outcome: &BumpOutcome) -> Result<String> {
    let doc = serde_json::json!({
        "outcome": if outcome.new_version.is_some() { "bumped" } else { "unchanged" },
        "version_file": plan.version_file.display().to_string(),
        "previous_version": outcome.old_version.to_string(),
        "version": outcome.new_version.as_ref().unwrap_or(&outcome.old_version).to_string(),
        "level": plan.level,
        "packages": {
            "previous": outcome.previous_count,
            "current": outcome.current_count,
        },
        "added": outcome.diff.added,
        "removed": outcome.diff.removed,
        "upgraded": outcome.diff.upgraded,
        "downgraded": outcome.diff.downgraded,
    });
    Ok(format!("{}\n", serde_json::to_string_pretty(&doc)?))
}
