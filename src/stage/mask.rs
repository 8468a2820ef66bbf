//! Secrets out of everything a build prints: each occurrence of a secret value in a line of a
//! stage's output, a log, or a message is replaced by `***` before the text leaves the builder.

/// What is written in place of a secret.
pub const MASK: &str = "***";

/// Replaces every occurrence of each secret in `text` with `***`.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    secrets: Vec<String>,
}

impl Masker {
    pub fn new(mut secrets: Vec<String>) -> Self {
        secrets.retain(|s| !s.is_empty());
        // Longest first, so a secret that contains another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self { secrets }
    }

    pub fn mask<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        if !self.secrets.iter().any(|s| text.contains(s.as_str())) {
            return std::borrow::Cow::Borrowed(text);
        }
        let mut out = text.to_string();
        for secret in &self.secrets {
            out = out.replace(secret.as_str(), MASK);
        }
        std::borrow::Cow::Owned(out)
    }
}
