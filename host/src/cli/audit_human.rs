//! The audit log for a person at a terminal: one short line per record — time, who, what, the
//! decision and why — instead of ~300 characters of JSON. `sluice audit tail` prints this on a
//! terminal and the records as they are (JSON Lines) with `--json` or into a pipe.

use serde_json::Value;

/// Statement texts longer than this are cut (with `…`).
const TEXT_WIDTH: usize = 100;

/// One record as a line.
pub fn line(record: &Value) -> String {
    let field = |name: &str| -> String {
        match &record[name] {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        }
    };
    let when = field("ts")
        .replacen('T', " ", 1)
        .trim_end_matches('Z')
        .to_owned();
    let subject = field("subject");
    let what = match field("type").as_str() {
        "session_start" => format!(
            "{subject} logged in to {} from {} (session {})",
            field("database"),
            field("client_addr"),
            field("session")
        ),
        "session_end" => format!(
            "{subject} left: {} after {} statement(s), {} ms (session {})",
            field("reason"),
            field("statements"),
            field("duration_ms"),
            field("session")
        ),
        "login_failure" => format!(
            "login refused for {} to {} from {}: {}",
            field("user"),
            field("database"),
            field("client_addr"),
            field("reason")
        ),
        "statement" => {
            let text = match field("text").as_str() {
                "" => format!("execute of #{}", field("prepared")),
                text => shortened(text),
            };
            let mut line = format!(
                "{subject} #{} {:<16} {:<10} {text}",
                field("statement"),
                field("decision"),
                field("kinds")
            );
            let plugin = field("plugin");
            if !plugin.is_empty() {
                line.push_str(&format!("  [{plugin}: {}]", field("reason")));
            }
            let approval = field("approval");
            if !approval.is_empty() {
                line.push_str(&format!("  [approval {approval} {}]", field("approvers")));
            }
            line
        }
        "result" => {
            let mut line = format!(
                "  #{} {} {}",
                field("statement"),
                field("outcome"),
                field("tag")
            );
            let sqlstate = field("sqlstate");
            if !sqlstate.is_empty() {
                line.push_str(&format!(" SQLSTATE {sqlstate}"));
            }
            line.push_str(&format!(" ({} µs)", field("duration_us")));
            line
        }
        "approval_requested" => format!(
            "{subject} approval {} requested by {} ({}), for {}",
            field("id"),
            field("plugin"),
            field("reason"),
            field("approver_groups")
        ),
        "approval_decided" => {
            let votes: Vec<String> = record["votes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    format!(
                        "{} {}",
                        if v["approve"].as_bool() == Some(true) {
                            "approved by"
                        } else {
                            "denied by"
                        },
                        v["approver"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            format!(
                "approval {} {}: {}",
                field("id"),
                field("status"),
                votes.join(", ")
            )
        }
        "masking" => {
            let columns: Vec<String> = record["columns"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    format!(
                        "{} {}",
                        c["name"].as_str().unwrap_or("?"),
                        c["mask"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            format!("  #{} masked: {}", field("statement"), columns.join(", "))
        }
        kind @ ("plugin_loaded" | "plugin_load_failed" | "plugin_unloaded") => {
            let detail = match kind {
                "plugin_load_failed" => field("error"),
                _ => field("kind"),
            };
            format!(
                "plugin {} {}: {detail}",
                field("plugin"),
                kind.trim_start_matches("plugin_").replace('_', " ")
            )
        }
        other => other.replace('_', " "),
    };
    format!("{when}  {what}")
}

fn shortened(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= TEXT_WIDTH {
        return flat;
    }
    let cut: String = flat.chars().take(TEXT_WIDTH).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::line;
    use serde_json::json;

    #[test]
    fn a_statement_reads_as_who_what_decision_and_why() {
        let record = json!({"v":1,"seq":7,"ts":"2026-12-04T10:11:12.345Z","prev":"x","type":"statement",
            "session":3,"subject":"agent-7","database":"app","statement":4,"protocol":"query",
            "text":"DROP   TABLE\n orders","kinds":["ddl"],"decision":"deny","plugin":"no-ddl",
            "reason":"schema changes (DDL) are not allowed"});
        assert_eq!(
            line(&record),
            "2026-12-04 10:11:12.345  agent-7 #4 deny             ddl        DROP TABLE orders  [no-ddl: schema changes (DDL) are not allowed]"
        );
    }

    #[test]
    fn long_texts_are_cut_and_every_type_has_a_line() {
        let text = "SELECT ".to_owned() + &"x, ".repeat(100);
        let record = json!({"ts":"2026-12-04T10:11:12.345Z","type":"statement","subject":"a",
            "statement":1,"decision":"allow","kinds":["select"],"text":text});
        let shown = line(&record);
        assert!(
            shown.ends_with('…') && shown.chars().count() < 180,
            "{shown}"
        );
        for kind in [
            "session_start",
            "session_end",
            "login_failure",
            "result",
            "approval_requested",
            "approval_decided",
            "masking",
            "plugin_loaded",
            "checkpoint",
        ] {
            let shown = line(&json!({"ts":"2026-12-04T10:11:12.345Z","type":kind}));
            assert!(shown.starts_with("2026-12-04 10:11:12.345  "), "{shown}");
        }
    }
}
