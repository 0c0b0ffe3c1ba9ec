//! Decides requests for access with rules from the manifest: who may get which database, for
//! how long, with which groups, and when people must approve first.
//!
//! ```toml
//! [config]
//! rules = """
//! issuer=github repository=acme/app ref=refs/heads/main db=app -> issue ttl=15m read-only
//! issuer=github repository=acme/app environment=production db=app -> ask approvers=dba ttl=30m groups=writers production writes
//! issuer=kubernetes kubernetes.io.namespace=batch db=reports -> issue ttl=10m groups=readers
//! agent=system:serviceaccount:agents:* agent_issuer=cluster db=app -> ask approvers=dba approvals=2 an agent acting for someone
//! """
//! otherwise = "deny"   # when no rule matches: "deny" (the default) or "pass"
//! ```
//!
//! One rule per line (`#` starts a comment). The conditions before `->` must all hold; the
//! first rule whose conditions hold decides. A condition is `key=value`, where the value may
//! hold `*` (any run of characters) and list alternatives with `|`:
//! - `issuer`: the trusted issuer's name in the gateway's config; `principal`; `db` (or
//!   `database`); `reason` (the requester's own words: never let it alone grant anything);
//! - `group`: one of the subject's groups matches;
//! - `agent`: the principal of whoever acts for the subject (the exchange's actor token);
//!   `agent=none` holds only when nobody does, and a rule without an `agent` condition never
//!   matches a request with one; `agent_issuer`: the trusted issuer that vouches for the agent;
//! - `claim.NAME`, or any other key: a claim of the subject's token, by its flattened path
//!   (`repository`, `ref`, `environment`, `actor` — GitHub's — `kubernetes.io.namespace`); an
//!   array claim holds when any element matches. A claim the token lacks never matches.
//!   `claim.` reaches claims named like the keys above (`claim.issuer`).
//!
//! A lone `*` before `->` matches every request without an actor. Actions: `issue`, `ask` (people approve first:
//! `approvers=g1|g2`, default the gateway's `[approvals]` route; `approvals=N`; `timeout=30m`),
//! `deny [reason]`, `pass` (leave it to the next plugin or the gateway's configuration). `issue`
//! and `ask` take `ttl=D` (at most this long), `groups=a|b` (the token's groups; each must be
//! among the issuer's `allowed_groups`) and `read-only`; words that are not options are the
//! reason approvers are shown.

use sluice_sdk::{
    Access, AccessApproval, AccessDecision, AccessRequest, Grant, Identity, PluginError,
};

struct AccessRules;

#[derive(Debug)]
struct Condition {
    key: String,
    alternatives: Vec<String>,
}

#[derive(Debug)]
enum Action {
    Issue(Grant),
    Ask {
        grant: Grant,
        approvers: Vec<String>,
        approvals: u32,
        timeout_ms: Option<u64>,
        reason: String,
    },
    Deny(String),
    Pass,
}

#[derive(Debug)]
struct Rule {
    text: String,
    conditions: Vec<Condition>,
    action: Action,
}

fn invalid(message: String) -> PluginError {
    PluginError::InvalidConfig(message)
}

fn parse_rules(text: &str) -> Result<Vec<Rule>, PluginError> {
    let mut rules = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let (conditions, action) = line
            .split_once("->")
            .ok_or_else(|| invalid(format!("rule \"{line}\" has no `->`")))?;
        let mut parsed = Vec::new();
        for condition in conditions.split_whitespace() {
            if condition == "*" {
                continue;
            }
            let (key, value) = condition.split_once('=').ok_or_else(|| {
                invalid(format!(
                    "rule \"{line}\": condition `{condition}` is not key=value"
                ))
            })?;
            let key = if key == "database" { "db" } else { key };
            parsed.push(Condition {
                key: key.to_owned(),
                alternatives: value.split('|').map(str::to_owned).collect(),
            });
        }
        if parsed.is_empty() && conditions.trim() != "*" {
            return Err(invalid(format!(
                "rule \"{line}\" has no condition (write `*` to match every request)"
            )));
        }
        rules.push(Rule {
            text: line.to_owned(),
            conditions: parsed,
            action: parse_action(action.trim(), line)?,
        });
    }
    if rules.is_empty() {
        return Err(invalid("no rules (set `rules` in [config])".into()));
    }
    Ok(rules)
}

fn parse_action(action: &str, line: &str) -> Result<Action, PluginError> {
    let (verb, rest) = action.split_once(' ').unwrap_or((action, ""));
    let rest = rest.trim();
    match verb {
        "deny" => Ok(Action::Deny(if rest.is_empty() {
            format!("rule \"{line}\"")
        } else {
            rest.to_owned()
        })),
        "pass" if rest.is_empty() => Ok(Action::Pass),
        "issue" | "ask" => {
            let mut grant = Grant {
                lifetime_ms: None,
                groups: None,
                read_only: false,
            };
            let (mut approvers, mut approvals, mut timeout_ms) = (Vec::new(), 1, None);
            let mut words = Vec::new();
            for option in rest.split_whitespace() {
                let bad = || invalid(format!("rule \"{line}\": cannot read `{option}`"));
                let duration = |value: &str| {
                    humantime::parse_duration(value)
                        .map(|d| d.as_millis() as u64)
                        .map_err(|_| bad())
                };
                let list = |value: &str| -> Vec<String> {
                    value
                        .split(['|', ','])
                        .filter(|g| !g.is_empty())
                        .map(str::to_owned)
                        .collect()
                };
                match option.split_once('=') {
                    None if option == "read-only" => grant.read_only = true,
                    Some(("ttl", value)) => grant.lifetime_ms = Some(duration(value)?),
                    Some(("groups", value)) => grant.groups = Some(list(value)),
                    Some(("approvers", value)) if verb == "ask" => approvers = list(value),
                    Some(("approvals", value)) if verb == "ask" => {
                        approvals = value.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
                    }
                    Some(("timeout", value)) if verb == "ask" => {
                        timeout_ms = Some(duration(value)?)
                    }
                    Some(_) => return Err(bad()),
                    None if verb == "ask" => words.push(option),
                    None => return Err(bad()),
                }
            }
            if verb == "issue" {
                return Ok(Action::Issue(grant));
            }
            let reason = if words.is_empty() {
                format!("rule \"{line}\"")
            } else {
                words.join(" ")
            };
            Ok(Action::Ask {
                grant,
                approvers,
                approvals,
                timeout_ms,
                reason,
            })
        }
        _ => Err(invalid(format!(
            "rule \"{line}\": the action is `issue ...`, `ask ...`, `deny [reason]` or `pass`"
        ))),
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

fn any_matches(alternatives: &[String], values: &[&str]) -> bool {
    alternatives
        .iter()
        .any(|pattern| values.iter().any(|value| glob(pattern, value)))
}

fn claims<'a>(who: &'a Identity, key: &str) -> Vec<&'a str> {
    who.claims
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

impl Condition {
    fn holds(&self, request: &AccessRequest) -> bool {
        let who = &request.subject;
        let values: Vec<&str> = match self.key.as_str() {
            "issuer" => vec![&who.issuer],
            "principal" => vec![&who.principal],
            "db" => vec![&request.database],
            "reason" => vec![&request.reason],
            "group" => who.groups.iter().map(String::as_str).collect(),
            "agent" => {
                return match &request.actor {
                    None => self.alternatives.iter().any(|a| a == "none"),
                    Some(agent) => any_matches(&self.alternatives, &[&agent.principal]),
                };
            }
            "agent_issuer" => {
                return request
                    .actor
                    .as_ref()
                    .is_some_and(|agent| any_matches(&self.alternatives, &[&agent.issuer]));
            }
            key => claims(who, key.strip_prefix("claim.").unwrap_or(key)),
        };
        any_matches(&self.alternatives, &values)
    }
}

impl Rule {
    fn matches(&self, request: &AccessRequest) -> bool {
        // An agent acting for someone is matched only by rules written for it.
        let about_agent = self.conditions.iter().any(|c| c.key == "agent");
        if request.actor.is_some() && !about_agent {
            return false;
        }
        self.conditions.iter().all(|c| c.holds(request))
    }
}

impl Access for AccessRules {
    fn decide(request: AccessRequest) -> Result<AccessDecision, PluginError> {
        let rules = parse_rules(&sluice_sdk::config("rules").unwrap_or_default())?;
        let Some(rule) = rules.iter().find(|r| r.matches(&request)) else {
            return match sluice_sdk::config("otherwise").as_deref() {
                None | Some("deny") => Ok(AccessDecision::Deny(format!(
                    "no access rule lets {} ({}) have {}",
                    request.subject.principal, request.subject.issuer, request.database
                ))),
                Some("pass") => Ok(AccessDecision::Pass),
                Some(other) => Err(invalid(format!(
                    "otherwise = \"{other}\": expected \"deny\" or \"pass\""
                ))),
            };
        };
        sluice_sdk::log(
            sluice_sdk::LogLevel::Info,
            &format!("{} matched rule \"{}\"", request.subject.principal, rule.text),
        );
        Ok(match &rule.action {
            Action::Issue(grant) => AccessDecision::Issue(grant.clone()),
            Action::Ask {
                grant,
                approvers,
                approvals,
                timeout_ms,
                reason,
            } => AccessDecision::RequireApproval(AccessApproval {
                grant: grant.clone(),
                reason: reason.clone(),
                approver_groups: approvers.clone(),
                approvals_needed: *approvals,
                timeout_ms: *timeout_ms,
            }),
            Action::Deny(reason) => AccessDecision::Deny(reason.clone()),
            Action::Pass => AccessDecision::Pass,
        })
    }
}

sluice_sdk::export_access!(AccessRules);
