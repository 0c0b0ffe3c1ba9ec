//! Routes held statements by the tables they touch (read or write), with rules from the
//! manifest:
//!
//! ```toml
//! [config]
//! rules = """
//! billing.* -> ask groups=dba approvals=2 timeout=30m
//! public.audit_log -> deny the audit log is written by the application only
//! scratch.* -> approve scratch tables need no human
//! """
//! search_path = "public"   # where unqualified table names may live (default "public")
//! ```
//!
//! Rules are separated by newlines or `;`. Each table takes the first rule that matches it;
//! the request then takes the strictest of its tables' rules: a `deny` anywhere denies; else
//! the first-listed `ask` routes it; else, when every table matched an `approve`, it is
//! approved without a human; otherwise (a table no rule names, or a statement that names no
//! table) the gateway's `[approvals]` default route decides. So `approve` never covers a
//! statement that also reads or writes a table it does not name.
use sluice_sdk::{
    ApprovalRequest, ApprovalRoute, PluginError, Router, Routing, TablePattern, TableRef,
};

struct RouteByTable;

#[derive(Debug)]
enum Action {
    Ask {
        groups: Vec<String>,
        approvals: u32,
        timeout_ms: Option<u64>,
    },
    Approve(String),
    Deny(String),
}

#[derive(Debug)]
struct Rule {
    text: String,
    patterns: Vec<TablePattern>,
    action: Action,
}

fn invalid(message: String) -> PluginError {
    PluginError::InvalidConfig(message)
}

fn parse_rules(text: &str) -> Result<Vec<Rule>, PluginError> {
    let mut rules = Vec::new();
    for line in text.split(['\n', ';']) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (patterns, action) = line
            .split_once("->")
            .ok_or_else(|| invalid(format!("rule \"{line}\" has no `->`")))?;
        let patterns = TablePattern::parse_list(patterns).map_err(invalid)?;
        if patterns.is_empty() {
            return Err(invalid(format!("rule \"{line}\" names no table")));
        }
        let action = action.trim();
        let (verb, rest) = action.split_once(' ').unwrap_or((action, ""));
        let rest = rest.trim();
        let action = match verb {
            "approve" => Action::Approve(reason_or(rest, line)),
            "deny" => Action::Deny(reason_or(rest, line)),
            "ask" => parse_ask(rest, line)?,
            _ => {
                return Err(invalid(format!(
                    "rule \"{line}\": the action is `ask ...`, `approve [reason]` or `deny [reason]`"
                )));
            }
        };
        rules.push(Rule {
            text: line.to_owned(),
            patterns,
            action,
        });
    }
    if rules.is_empty() {
        return Err(invalid("no rules (set `rules` in [config])".into()));
    }
    Ok(rules)
}

fn reason_or(reason: &str, rule: &str) -> String {
    if reason.is_empty() {
        format!("rule \"{rule}\"")
    } else {
        reason.to_owned()
    }
}

fn parse_ask(options: &str, line: &str) -> Result<Action, PluginError> {
    let (mut groups, mut approvals, mut timeout_ms) = (Vec::new(), 1, None);
    for option in options.split_whitespace() {
        let bad = || invalid(format!("rule \"{line}\": cannot read `{option}`"));
        let (key, value) = option.split_once('=').ok_or_else(bad)?;
        match key {
            "groups" | "group" => {
                groups = value
                    .split(['|', ','])
                    .filter(|g| !g.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "approvals" => approvals = value.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?,
            "timeout" => {
                let d = humantime::parse_duration(value).map_err(|_| bad())?;
                timeout_ms = Some(d.as_millis() as u64);
            }
            _ => return Err(bad()),
        }
    }
    if groups.is_empty() {
        return Err(invalid(format!("rule \"{line}\": `ask` needs groups=...")));
    }
    Ok(Action::Ask {
        groups,
        approvals,
        timeout_ms,
    })
}

impl Router for RouteByTable {
    fn route(request: ApprovalRequest) -> Result<Routing, PluginError> {
        let rules = parse_rules(&sluice_sdk::config("rules").unwrap_or_default())?;
        let search_path = match sluice_sdk::config_list("search_path") {
            path if path.is_empty() => vec!["public".to_owned()],
            path => path,
        };
        let tables: Vec<&TableRef> = request
            .statements
            .iter()
            .flat_map(|s| s.tables_read.iter().chain(&s.tables_written))
            .collect();
        // The first matching rule of each table, as an index into `rules`.
        let matched: Vec<(&TableRef, Option<usize>)> = tables
            .iter()
            .map(|t| {
                let rule = rules
                    .iter()
                    .position(|r| r.patterns.iter().any(|p| p.matches(t, &search_path)));
                (*t, rule)
            })
            .collect();
        let rule_of = |wanted: fn(&Action) -> bool| {
            let mut hits: Vec<(usize, &TableRef)> = matched
                .iter()
                .filter_map(|(t, r)| r.filter(|r| wanted(&rules[*r].action)).map(|r| (r, *t)))
                .collect();
            hits.sort_by_key(|(r, _)| *r);
            hits.into_iter().next()
        };
        if let Some((index, table)) = rule_of(|a| matches!(a, Action::Deny(_))) {
            let Action::Deny(reason) = &rules[index].action else {
                unreachable!()
            };
            return Ok(Routing::AutoDeny(format!("{table}: {reason}")));
        }
        if let Some((index, table)) = rule_of(|a| matches!(a, Action::Ask { .. })) {
            let Action::Ask {
                groups,
                approvals,
                timeout_ms,
            } = &rules[index].action
            else {
                unreachable!()
            };
            let s = &request.session;
            let notification = format!(
                "sluice: approval {id}: {subject} on {database} touches {table}; needs {approvals} of {groups} (rule \"{rule}\"; {plugin}: {reason})",
                id = request.id,
                subject = s.subject,
                database = s.database,
                groups = groups.join(" | "),
                rule = rules[index].text,
                plugin = request.plugin,
                reason = request.reason,
            );
            return Ok(Routing::Ask(ApprovalRoute {
                approver_groups: groups.clone(),
                approvals_needed: *approvals,
                timeout_ms: *timeout_ms,
                notification: Some(notification),
            }));
        }
        let all_approved = !matched.is_empty()
            && matched
                .iter()
                .all(|(_, r)| r.is_some_and(|r| matches!(rules[r].action, Action::Approve(_))));
        if all_approved {
            let reasons: Vec<String> = matched
                .iter()
                .filter_map(|(t, r)| match &rules[r.unwrap_or_default()].action {
                    Action::Approve(reason) => Some(format!("{t}: {reason}")),
                    _ => None,
                })
                .collect();
            return Ok(Routing::AutoApprove(reasons.join("; ")));
        }
        Ok(Routing::Pass)
    }
}

sluice_sdk::export_router!(RouteByTable);
