//! The policy pipeline: every policy plugin, in priority order, on every statement. Deny beats
//! require-approval beats allow; the deciding plugin, its content hash and its reason travel
//! with the verdict. A plugin that fails in any way denies (fail closed).

use std::sync::Arc;

use tracing::Instrument;

use crate::analysis::Statement;
use crate::identity::SessionInfo;
use crate::plugins::{CallCatalog, PluginSet, ReuseKey, SessionPlugins, wit};

/// The outcome for a statement (or for all statements of one query string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny(Decider),
    RequireApproval(Decider),
}

/// Which plugin decided, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decider {
    pub plugin: Arc<str>,
    pub hash: Arc<str>,
    pub reason: String,
}

/// Decides `statements` together: the first denial (in statement order, then plugin order)
/// refuses all of them; otherwise the first approval requirement holds them; otherwise allow.
/// A plugin whose instance remembers a reusable verdict for a statement is not called again.
pub async fn decide(
    set: &PluginSet,
    instances: &mut SessionPlugins,
    session: &SessionInfo,
    statements: &[Statement],
    params: &[Option<String>],
) -> Verdict {
    // A required plugin that is not serving refuses everything: the guard it is must never
    // be silently absent.
    if let Some(name) = set.missing.first() {
        return Verdict::Deny(Decider {
            plugin: name.clone(),
            hash: Arc::from(""),
            reason: "this required plugin is not serving (missing, disabled or failing to load); every statement is refused until it is".into(),
        });
    }
    if set.policies.is_empty() {
        return Verdict::Allow;
    }
    instances.retain(set);
    let mut verdict = Verdict::Allow;
    for statement in statements {
        let key = ReuseKey::new(
            statement.shape,
            &statement.text,
            params,
            // What the catalog says about a user-defined function (its volatility, whether
            // it exists yet) may change under the same text: never reused.
            statement.user_functions.is_empty(),
        );
        // Built only when some plugin has to be called.
        let mut lowered: Option<(wit::Statement, CallCatalog)> = None;
        for plugin in &set.policies {
            // A plugin's reason reaches the client, the audit log and approvers: one line,
            // bounded.
            let decider = |reason: String| Decider {
                plugin: plugin.name.clone(),
                hash: plugin.hash.clone(),
                reason: crate::display::reason(&reason),
            };
            let decision = match instances.remembered(plugin, &key) {
                Some(decision) => Ok(decision),
                None => {
                    let (lowered, catalog) = lowered.get_or_insert_with(|| {
                        (
                            crate::plugins::convert::statement(statement, params),
                            CallCatalog::of([statement]),
                        )
                    });
                    let span = tracing::debug_span!("plugin", sluice.plugin = %plugin.name);
                    instances
                        .evaluate(plugin, session, lowered, catalog, &key)
                        .instrument(span)
                        .await
                }
            };
            match decision {
                Ok(wit::Decision::Allow) => {}
                Ok(wit::Decision::Deny(reason)) => return Verdict::Deny(decider(reason)),
                Ok(wit::Decision::RequireApproval(reason)) => {
                    if verdict == Verdict::Allow {
                        verdict = Verdict::RequireApproval(decider(reason));
                    }
                }
                Err(failure) => {
                    tracing::warn!(plugin = %plugin.name, %failure, "plugin failed; refusing the statement");
                    return Verdict::Deny(decider(failure.to_string()));
                }
            }
        }
    }
    verdict
}
