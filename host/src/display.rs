//! Text from agents and plugins, made safe to show to people. A statement, a reason or a table
//! name can carry characters that make a terminal, a browser or a chat client show something
//! other than what runs: control characters and ANSI escapes (rewriting a terminal line),
//! bidirectional overrides (`DELETE` shown backwards as harmless text), zero-width and other
//! invisible format characters (two different names shown alike). Each is shown as a visible
//! `\u{...}` escape instead, everywhere approvers and operators read: the CLI, the API's
//! display fields, the approver page, webhooks, client messages and the gateway's log.

use std::borrow::Cow;
use std::fmt::Write as _;

/// The most characters of a plugin's reason (or note) kept: past it the text is cut with a
/// marker. A policy's reason reaches the client, the audit log and approvers.
pub const MAX_REASON_CHARS: usize = 1000;

/// Whether `c` must never reach a reader as itself. Newlines and tabs are decided by the
/// caller.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}'                    // soft hyphen
            | '\u{034F}'                  // combining grapheme joiner
            | '\u{0600}'..='\u{0605}'     // Arabic number signs (format characters)
            | '\u{061C}'                  // Arabic letter mark
            | '\u{06DD}' | '\u{070F}' | '\u{0890}' | '\u{0891}' | '\u{08E2}'
            | '\u{110BD}' | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'   // Egyptian hieroglyph format controls
            | '\u{1BCA0}'..='\u{1BCA3}'   // shorthand format controls
            | '\u{1D173}'..='\u{1D17A}'   // musical symbol format controls
            | '\u{2800}'                  // blank Braille pattern
            | '\u{115F}' | '\u{1160}'     // Hangul fillers
            | '\u{17B4}' | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'     // Mongolian variation selectors and vowel separator
            | '\u{200B}'..='\u{200F}'     // zero-width space, (non-)joiner, LRM, RLM
            | '\u{2028}'..='\u{202E}'     // line and paragraph separators, bidi embeddings
            | '\u{2060}'..='\u{206F}'     // word joiner, invisible operators, bidi isolates
            | '\u{3164}'                  // Hangul filler
            | '\u{FE00}'..='\u{FE0F}'     // variation selectors
            | '\u{FEFF}'                  // zero-width no-break space
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFB}'     // interlinear annotations
            | '\u{E0000}'..='\u{E0FFF}'   // tags and variation selectors supplement
        )
}

fn escape(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(|c| hidden(c) && !keep(c)) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if hidden(c) && !keep(c) {
            let _ = write!(shown, "\\u{{{:04X}}}", c as u32);
        } else {
            shown.push(c);
        }
    }
    Cow::Owned(shown)
}

/// `text` on one line: every control character (newline included) and invisible format
/// character escaped. For names, reasons, subjects.
pub fn line(text: &str) -> Cow<'_, str> {
    escape(text, |_| false)
}

/// `text` keeping its newlines and tabs: for statements, which are read as written.
pub fn block(text: &str) -> Cow<'_, str> {
    escape(text, |c| c == '\n' || c == '\t')
}

/// A plugin's reason as the gateway keeps and passes it on: on one line, escaped, and at most
/// [`MAX_REASON_CHARS`] characters.
pub fn reason(text: &str) -> String {
    let mut chars = text.chars();
    let kept: String = chars.by_ref().take(MAX_REASON_CHARS).collect();
    let cut = chars.next().is_some();
    let mut shown = line(&kept).into_owned();
    if cut {
        shown.push_str(" [cut]");
    }
    shown
}

/// A routing plugin's note for approvers: bounded like a reason, its lines kept.
pub fn note(text: &str) -> String {
    let mut chars = text.chars();
    let kept: String = chars.by_ref().take(MAX_REASON_CHARS).collect();
    let mut shown = block(&kept).into_owned();
    if chars.next().is_some() {
        shown.push_str(" [cut]");
    }
    shown
}

/// `text` for Slack's `mrkdwn` (and the chat tools that share it): escaped as [`block`] or
/// [`line`], then `&`, `<` and `>` as Slack requires, so that `<!channel>` or
/// `<https://...|label>` in an agent's text is shown, not acted on; and backticks escaped, so
/// that a statement cannot close its code block.
pub fn slack(text: &str, multiline: bool) -> String {
    let escaped = if multiline { block(text) } else { line(text) };
    let mut shown = String::with_capacity(escaped.len());
    for c in escaped.chars() {
        match c {
            '&' => shown.push_str("&amp;"),
            '<' => shown.push_str("&lt;"),
            '>' => shown.push_str("&gt;"),
            '`' => shown.push_str("\\u{0060}"),
            c => shown.push(c),
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_would_deceive_a_reader_is_shown_escaped() {
        assert_eq!(line("plain text"), "plain text");
        assert!(matches!(line("plain"), Cow::Borrowed(_)));
        assert_eq!(line("a\u{1b}[2Kb"), "a\\u{001B}[2Kb");
        assert_eq!(
            block("SELECT 1 -- \u{202E}DELETE\nFROM t"),
            "SELECT 1 -- \\u{202E}DELETE\nFROM t"
        );
        assert_eq!(line("two\nlines\r"), "two\\u{000A}lines\\u{000D}");
        assert_eq!(line("acc\u{200B}ounts"), "acc\\u{200B}ounts");
        assert_eq!(line("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
        assert_eq!(line("\u{9b}31m"), "\\u{009B}31m");
        assert_eq!(line("tag\u{E0041}"), "tag\\u{E0041}");
        // Ordinary text of any script stays as it is.
        assert_eq!(line("données ключ 表 🙂"), "données ключ 表 🙂");
    }

    #[test]
    fn a_reason_is_one_bounded_line() {
        let long = "x".repeat(MAX_REASON_CHARS * 10);
        let shown = reason(&long);
        assert!(shown.ends_with(" [cut]"));
        assert_eq!(shown.chars().count(), MAX_REASON_CHARS + " [cut]".len());
        assert_eq!(reason("no\ndeletes"), "no\\u{000A}deletes");
        assert_eq!(
            reason(&"y".repeat(MAX_REASON_CHARS)).len(),
            MAX_REASON_CHARS
        );
    }

    #[test]
    fn chat_markup_in_agent_text_is_shown_not_acted_on() {
        assert_eq!(
            slack("<!channel> <https://evil|docs> & ```", false),
            "&lt;!channel&gt; &lt;https://evil|docs&gt; &amp; \\u{0060}\\u{0060}\\u{0060}"
        );
        assert_eq!(slack("a\nb", true), "a\nb");
    }
}
