//! Errors and notices while masking is active: values Postgres echoes in them (a failing
//! cast's input, a constraint's key) are removed unless the client wrote them itself.

use super::*;

impl Masker {
    /// An ErrorResponse or NoticeResponse while masking is active, without echoed values.
    pub(super) async fn scrub(&mut self, frame: &Frame) -> Relay {
        if !self.scrubbing().await {
            return Relay::Pass;
        }
        let fields = messages::error_fields(frame.body());
        let snapshot = self.catalog.as_ref().map(|c| c.peek());
        let texts: Vec<Arc<str>> = self
            .common
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let known = |quoted: &str| {
            snapshot.as_ref().is_some_and(|s| s.knows_name(quoted))
                || texts.iter().any(|t| has_token(t, quoted))
        };
        match masking::scrub_message(frame.tag(), &fields, &known) {
            Some(scrubbed) => Relay::Replace(scrubbed),
            None => Relay::Pass,
        }
    }

    /// Whether any masking plugin masks something in this session (a plugin that fails to
    /// open counts: fail closed).
    pub(super) async fn scrubbing(&mut self) -> bool {
        let set = self.set();
        if let Some((generation, on)) = self.scrubbing
            && generation == set.generation
        {
            return on;
        }
        self.maskers.retain(&set);
        let on = self.maskers.any_active(&set, &self.info).await;
        self.scrubbing = Some((set.generation, on));
        on
    }
}

/// Whether `word` stands in `text` as a whole token (not inside a longer name or number).
fn has_token(text: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    let part_of_name = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    text.match_indices(word).any(|(at, _)| {
        !part_of_name(text[..at].chars().next_back())
            && !part_of_name(text[at + word.len()..].chars().next())
    })
}

#[cfg(test)]
mod tests {
    use super::has_token;

    #[test]
    pub(super) fn quoted_text_counts_as_sent_only_as_a_whole_token() {
        assert!(has_token("SELECT nope FROM t", "nope"));
        assert!(has_token("SELECT \"Mixed Case\" FROM t", "Mixed Case"));
        assert!(!has_token("SELECT nopenope FROM t", "nope"));
        assert!(!has_token("SELECT a FROM t WHERE id = 12", "1"));
        assert!(!has_token("SELECT 1", ""));
    }
}
