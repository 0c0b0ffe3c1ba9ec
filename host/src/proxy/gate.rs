//! The per-statement check on the client → upstream path: analysis, the policy pipeline, and
//! the substitute sent in place of a refused message.

use std::sync::Arc;

use bytes::Bytes;
use tracing::Instrument;

use super::Shared;
use super::frame::Frame;
use super::messages::sqlstate;
use super::refusal::Refusals;
use crate::plugins::SessionPlugins;
use crate::policy::{self, SessionInfo, Verdict};

/// What goes upstream for one client message.
pub enum Forward {
    AsIs,
    Instead(Bytes),
}

pub struct Gate {
    shared: Arc<Shared>,
    info: SessionInfo,
    instances: Option<SessionPlugins>,
    refusals: Arc<Refusals>,
    /// ReadyForQuery-producing messages forwarded so far (Query, Sync, FunctionCall).
    cycles: u64,
    statements: u64,
}

impl Gate {
    pub fn new(shared: Arc<Shared>, info: SessionInfo, refusals: Arc<Refusals>) -> Gate {
        let instances = shared.plugins.clone().map(SessionPlugins::new);
        Gate {
            shared,
            info,
            instances,
            refusals,
            cycles: 0,
            statements: 0,
        }
    }

    /// Decides what to forward for `frame`.
    pub async fn inspect(&mut self, frame: &Frame) -> Forward {
        let forward = match frame.tag() {
            b'Q' => {
                let sql = cstr(frame.body()).0;
                match self.check_text(sql).await {
                    None => Forward::AsIs,
                    Some((code, message)) => {
                        Forward::Instead(self.refusals.query(self.cycles, code, &message).message)
                    }
                }
            }
            b'P' => {
                let (name, rest) = cstr(frame.body());
                let sql = cstr(rest).0;
                match self.check_text(sql).await {
                    None => Forward::AsIs,
                    Some((code, message)) => Forward::Instead(
                        self.refusals
                            .parse(self.cycles, name.unwrap_or(""), code, &message)
                            .message,
                    ),
                }
            }
            // The fast-path function call bypasses SQL entirely, so nothing can check it.
            b'F' => Forward::Instead(
                self.refusals
                    .query(
                        self.cycles,
                        sqlstate::INSUFFICIENT_PRIVILEGE,
                        "sluice: the FunctionCall protocol message is not allowed",
                    )
                    .message,
            ),
            _ => Forward::AsIs,
        };
        if matches!(frame.tag(), b'Q' | b'S' | b'F') {
            self.cycles += 1;
        }
        forward
    }

    /// `None` to let the statement text through, or the SQLSTATE and message refusing it.
    async fn check_text(&mut self, sql: Option<&str>) -> Option<(&'static str, String)> {
        let plugins = self.shared.plugins.as_ref()?.current();
        if plugins.policies.is_empty() {
            return None;
        }
        self.statements += 1;
        let span = tracing::debug_span!("statement", sluice.statement = self.statements);
        let Some(sql) = sql else {
            return Some((
                sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
                "sluice: statement text is not valid UTF-8 (use client_encoding UTF8)".into(),
            ));
        };
        let statements = match self.shared.analyzer.analyze(sql) {
            Ok(statements) => statements,
            Err(e) => {
                span.in_scope(|| tracing::info!(error = %e, "unparsable statement refused"));
                return Some((sqlstate::SYNTAX_ERROR, format!("sluice: {e}")));
            }
        };
        let instances = self.instances.as_mut()?;
        let verdict = policy::decide(&plugins, instances, &self.info, &statements, &[])
            .instrument(span.clone())
            .await;
        let _enter = span.enter();
        match verdict {
            Verdict::Allow => None,
            Verdict::Deny(d) => {
                tracing::info!(plugin = %d.plugin, reason = %d.reason, "statement denied");
                Some((
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                    format!("sluice: refused by policy \"{}\": {}", d.plugin, d.reason),
                ))
            }
            Verdict::RequireApproval(d) => {
                tracing::info!(plugin = %d.plugin, reason = %d.reason, "statement needs approval; approvals are not configured");
                Some((
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                    format!(
                        "sluice: policy \"{}\" requires approval ({}), but approvals are not configured on this gateway",
                        d.plugin, d.reason
                    ),
                ))
            }
        }
    }
}

/// The NUL-terminated string at the start of `bytes` (`None` if not UTF-8) and what follows.
fn cstr(bytes: &[u8]) -> (Option<&str>, &[u8]) {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let s = std::str::from_utf8(&bytes[..end]).ok();
    (s, bytes.get(end + 1..).unwrap_or_default())
}
