//! Deciding a request for access with the access plugins (`sluice:plugin/access-plugin`). Every
//! serving access plugin is asked, in priority order; `deny` from any denies (and stops), else
//! `require-approval` from any sends the request to people, else `issue` from any issues. When
//! every plugin passes, or none is loaded, the issuer's configuration alone decides. A plugin
//! that fails refuses the request: a failing plugin must never fall through to a laxer answer.

use std::time::Duration;

use serde_json::{Map, Value};
use tracing::Instrument;

use crate::identity::external::ExternalIdentity;
use crate::plugins::access::{self as wit, AccessDecision};
use crate::plugins::{PluginHost, PluginSet};

/// What the plugins decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No plugin had an opinion: the issuer's configuration decides.
    Unanswered,
    Issue(Grant),
    /// Issue once people approve.
    Approval(Approval),
    Deny {
        by: String,
        reason: String,
    },
}

/// What a token will grant, as the plugins shaped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The plugin whose answer gave it.
    pub by: String,
    /// The shortest lifetime any answering plugin allowed (`None`: as asked).
    pub lifetime: Option<Duration>,
    /// `None`: the groups asked for.
    pub groups: Option<Vec<String>>,
    /// Any answering plugin asked for read-only.
    pub read_only: bool,
}

/// What a grant comes to for one request: the groups, the lifetime and read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shaped {
    pub groups: Vec<String>,
    pub lifetime: Duration,
    pub read_only: bool,
}

impl Grant {
    /// Applies the grant to a request that asked for `groups` for `lifetime` from `issuer`:
    /// never longer than asked, read-only when either says so, and no group outside the
    /// issuer's `allowed_groups` (an error naming it: the plugin granted what it may not).
    pub fn shape(
        &self,
        groups: &[String],
        lifetime: Duration,
        issuer: &crate::config::IssuerConfig,
    ) -> Result<Shaped, String> {
        let groups = self.groups.clone().unwrap_or_else(|| groups.to_vec());
        if let Some(foreign) = groups.iter().find(|g| !issuer.allowed_groups.contains(g)) {
            return Err(format!(
                "access plugin \"{}\" granted group \"{foreign}\", which is not among issuer \"{}\"'s allowed_groups",
                self.by, issuer.name
            ));
        }
        Ok(Shaped {
            groups,
            lifetime: self.lifetime.map_or(lifetime, |l| l.min(lifetime)),
            read_only: self.read_only || issuer.read_only,
        })
    }
}

/// Who must approve, as the plugin asking for approval said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub grant: Grant,
    pub reason: String,
    /// Empty: the `[approvals]` default route.
    pub approver_groups: Vec<String>,
    /// 0: the default route's number.
    pub approvals_needed: u32,
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("access plugin \"{plugin}\" failed: {failure}")]
pub struct AccessFailure {
    pub plugin: String,
    pub failure: String,
}

/// The request as plugins see it.
pub fn request(
    subject: &ExternalIdentity,
    actor: Option<&ExternalIdentity>,
    database: &str,
    scope: &[String],
    lifetime: Duration,
    reason: &str,
    read_only: bool,
) -> wit::AccessRequest {
    wit::AccessRequest {
        subject: identity(subject),
        actor: actor.map(identity),
        database: database.to_owned(),
        scope: scope.to_vec(),
        lifetime_ms: lifetime.as_millis() as u64,
        reason: reason.to_owned(),
        read_only,
    }
}

fn identity(who: &ExternalIdentity) -> wit::Identity {
    wit::Identity {
        issuer: who.issuer_name.clone(),
        issuer_url: who.issuer.clone(),
        principal: who.principal.clone(),
        groups: who.groups.clone(),
        claims: flatten(&who.claims),
    }
}

/// Claims as `(path, text)` pairs: objects joined with `.`, one pair per array element,
/// strings unquoted, other scalars as JSON writes them, nulls left out.
pub fn flatten(claims: &Map<String, Value>) -> Vec<(String, String)> {
    fn walk(path: &str, value: &Value, out: &mut Vec<(String, String)>) {
        match value {
            Value::Null => {}
            Value::String(s) => out.push((path.to_owned(), s.clone())),
            Value::Bool(_) | Value::Number(_) => out.push((path.to_owned(), value.to_string())),
            Value::Array(items) => {
                for item in items {
                    walk(path, item, out);
                }
            }
            Value::Object(fields) => {
                for (key, value) in fields {
                    walk(&format!("{path}.{key}"), value, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    for (key, value) in claims {
        walk(key, value, &mut out);
    }
    out
}

/// Asks every serving access plugin about `request` and combines their answers.
pub async fn decide(
    host: &PluginHost,
    set: &PluginSet,
    request: &wit::AccessRequest,
) -> Result<Verdict, AccessFailure> {
    let mut answers = Vec::new();
    for plugin in &set.access {
        let span = tracing::debug_span!("access_plugin", sluice.plugin = %plugin.name);
        let answer = crate::plugins::access::decide(host, plugin, request)
            .instrument(span)
            .await
            .map_err(|e| AccessFailure {
                plugin: plugin.name.to_string(),
                failure: e.to_string(),
            })?;
        if let AccessDecision::Deny(reason) = answer {
            return Ok(Verdict::Deny {
                by: plugin.name.to_string(),
                reason,
            });
        }
        answers.push((plugin.name.to_string(), answer));
    }
    Ok(combine(answers))
}

/// Approval over issue; the first of the winning kind gives the grant; lifetimes take the
/// minimum and read-only the union of every answer that was not `pass`.
fn combine(answers: Vec<(String, AccessDecision)>) -> Verdict {
    let grants: Vec<&wit::Grant> = answers
        .iter()
        .filter_map(|(_, a)| match a {
            AccessDecision::Issue(g) => Some(g),
            AccessDecision::RequireApproval(r) => Some(&r.grant),
            _ => None,
        })
        .collect();
    let shortest = grants.iter().filter_map(|g| g.lifetime_ms).min();
    let read_only = grants.iter().any(|g| g.read_only);
    let shaped = |by: &str, g: &wit::Grant| Grant {
        by: by.to_owned(),
        lifetime: shortest.map(Duration::from_millis),
        groups: g.groups.clone(),
        read_only,
    };
    if let Some((by, AccessDecision::RequireApproval(r))) = answers
        .iter()
        .find(|(_, a)| matches!(a, AccessDecision::RequireApproval(_)))
    {
        return Verdict::Approval(Approval {
            grant: shaped(by, &r.grant),
            reason: r.reason.clone(),
            approver_groups: r
                .approver_groups
                .iter()
                .map(|g| g.trim().to_owned())
                .filter(|g| !g.is_empty())
                .collect(),
            approvals_needed: r.approvals_needed,
            timeout: r.timeout_ms.map(Duration::from_millis),
        });
    }
    match answers
        .iter()
        .find(|(_, a)| matches!(a, AccessDecision::Issue(_)))
    {
        Some((by, AccessDecision::Issue(g))) => Verdict::Issue(shaped(by, g)),
        _ => Verdict::Unanswered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(lifetime_ms: Option<u64>, read_only: bool) -> wit::Grant {
        wit::Grant {
            lifetime_ms,
            groups: None,
            read_only,
        }
    }

    #[test]
    fn claims_flatten_to_paths_with_one_pair_per_array_element() {
        let claims = serde_json::json!({
            "sub": "system:serviceaccount:batch:report",
            "kubernetes.io": {"namespace": "batch", "serviceaccount": {"name": "report"}},
            "groups": ["a", "b"],
            "exp": 17,
            "ok": true,
            "gone": null,
        });
        let mut flat = flatten(claims.as_object().unwrap());
        flat.sort();
        let pairs: Vec<(&str, &str)> = flat.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        assert_eq!(
            pairs,
            [
                ("exp", "17"),
                ("groups", "a"),
                ("groups", "b"),
                ("kubernetes.io.namespace", "batch"),
                ("kubernetes.io.serviceaccount.name", "report"),
                ("ok", "true"),
                ("sub", "system:serviceaccount:batch:report"),
            ]
        );
    }

    #[test]
    fn approval_wins_over_issue_and_every_answer_narrows_the_grant() {
        let verdict = combine(vec![
            (
                "a".into(),
                AccessDecision::Issue(grant(Some(60_000), false)),
            ),
            ("b".into(), AccessDecision::Pass),
            (
                "c".into(),
                AccessDecision::RequireApproval(wit::Approval {
                    grant: grant(Some(600_000), false),
                    reason: "production".into(),
                    approver_groups: vec![" dba ".into(), "".into()],
                    approvals_needed: 2,
                    timeout_ms: None,
                }),
            ),
            ("d".into(), AccessDecision::Issue(grant(None, true))),
        ]);
        let Verdict::Approval(approval) = verdict else {
            panic!("expected an approval, got {verdict:?}");
        };
        assert_eq!(approval.grant.by, "c");
        assert_eq!(approval.grant.lifetime, Some(Duration::from_secs(60)));
        assert!(approval.grant.read_only);
        assert_eq!(approval.approver_groups, ["dba"]);
    }

    #[test]
    fn only_passes_leave_the_decision_to_the_configuration() {
        assert_eq!(
            combine(vec![("a".into(), AccessDecision::Pass)]),
            Verdict::Unanswered
        );
        assert_eq!(combine(Vec::new()), Verdict::Unanswered);
        assert_eq!(
            combine(vec![
                ("a".into(), AccessDecision::Pass),
                ("b".into(), AccessDecision::Issue(grant(Some(5), false)))
            ]),
            Verdict::Issue(Grant {
                by: "b".into(),
                lifetime: Some(Duration::from_millis(5)),
                groups: None,
                read_only: false,
            })
        );
    }
}
