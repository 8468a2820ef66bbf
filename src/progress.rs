//! What a person sees: an indicatif spinner or bar per step on a terminal, plain timestamped
//! lines otherwise (CI logs). Details always go to the log files, not here.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone, Copy)]
pub struct Reporter {
    tty: bool,
}

pub fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format = time::macros::format_description!("[hour]:[minute]:[second]");
    now.format(&format).unwrap_or_default()
}

impl Reporter {
    pub fn detect() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
        }
    }

    pub fn plain() -> Self {
        Self { tty: false }
    }

    pub fn info(&self, message: &str) {
        if self.tty {
            eprintln!("{message}");
        } else {
            eprintln!("[{}] {message}", timestamp());
        }
    }

    /// A step whose output lines are shown as they come (spinner message or plain lines).
    pub fn step(&self, label: &str) -> Step {
        let bar = self.tty.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_msg}").unwrap(),
            );
            bar.set_prefix(label.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if !self.tty {
            self.info(&format!("{label}: started"));
        }
        Step {
            label: label.to_string(),
            bar,
            reporter: *self,
        }
    }

    /// A step that moves through a known number of bytes.
    pub fn bytes(&self, label: &str, total: u64) -> Step {
        let bar = self.tty.then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{elapsed}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .unwrap(),
            );
            bar.set_prefix(label.to_string());
            bar
        });
        if !self.tty {
            self.info(&format!("{label}: started"));
        }
        Step {
            label: label.to_string(),
            bar,
            reporter: *self,
        }
    }
}

pub struct Step {
    label: String,
    bar: Option<ProgressBar>,
    reporter: Reporter,
}

impl Step {
    pub fn line(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(line.to_string()),
            None => self.reporter.info(&format!("{}: {line}", self.label)),
        }
    }

    pub fn position(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
        }
    }

    pub fn finish(self, outcome: &str, elapsed: Duration) {
        let text = format!(
            "{}: {outcome} in {}",
            self.label,
            crate::stage::report::human(elapsed)
        );
        match self.bar {
            Some(bar) => {
                bar.finish_and_clear();
                eprintln!("{text}");
            }
            None => self.reporter.info(&text),
        }
    }
}
