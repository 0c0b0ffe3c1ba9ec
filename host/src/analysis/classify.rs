//! Which statement runs (a wrapper's inner one), what kind it is, and what it does to named
//! prepared statements: read from the parse tree's node types.

use serde_json::Value;

use super::kind::StatementKind;
use super::statement::{PreparedOp, Wrapper};

/// The node inside a `{"node": {"<NodeType>": {...}}}` wrapper, with its type.
pub(super) fn node_of(tree: &Value) -> Option<(&str, &Value)> {
    tree.get("node")
        .and_then(Value::as_object)
        .and_then(|m| m.iter().next())
        .map(|(k, v)| (k.as_str(), v))
}

/// The statement that runs when the client's statement does (see [`Wrapper`]), with its type.
pub(super) fn executed<'a>(
    node_type: &'a str,
    node: &'a Value,
) -> (&'a str, &'a Value, Option<Wrapper>) {
    let wrapper = match node_type {
        "ExplainStmt" if explain_has_analyze(node) => Wrapper::ExplainAnalyze,
        "PrepareStmt" => Wrapper::Prepare,
        "DeclareCursorStmt" => Wrapper::DeclareCursor,
        _ => return (node_type, node, None),
    };
    match node.get("query").and_then(node_of) {
        Some((inner_type, inner)) => (inner_type, inner, Some(wrapper)),
        None => (node_type, node, None),
    }
}

/// What the statement does to named prepared statements: `sent` is the client's statement,
/// `run` the one that runs.
pub(super) fn prepared_op(
    sent_type: &str,
    sent: &Value,
    run_type: &str,
    run: &Value,
) -> Option<PreparedOp> {
    let name = |node: &Value| node.get("name").and_then(Value::as_str).map(str::to_owned);
    match (sent_type, run_type) {
        ("PrepareStmt", _) => name(sent).map(PreparedOp::Prepare),
        (_, "ExecuteStmt") => name(run).map(PreparedOp::Execute),
        (_, "CreateTableAsStmt") => match run.get("query").and_then(node_of) {
            Some(("ExecuteStmt", execute)) => name(execute).map(PreparedOp::Execute),
            _ => None,
        },
        ("DeallocateStmt", _) if sent.get("isall").and_then(Value::as_bool) == Some(true) => {
            Some(PreparedOp::DeallocateAll)
        }
        ("DeallocateStmt", _) => name(sent).map(PreparedOp::Deallocate),
        // DiscardMode: 1 DISCARD ALL.
        ("DiscardStmt", _) if sent.get("target").and_then(Value::as_i64) == Some(1) => {
            Some(PreparedOp::DeallocateAll)
        }
        _ => None,
    }
}

pub(super) fn classify(node_type: &str, node: &Value, select_into: bool) -> StatementKind {
    use StatementKind::*;
    match node_type {
        "SelectStmt" if select_into => Ddl,
        "SelectStmt" => Select,
        "InsertStmt" => Insert,
        "UpdateStmt" => Update,
        "DeleteStmt" => Delete,
        "MergeStmt" => Merge,
        "CopyStmt" if node.get("is_from").and_then(Value::as_bool) == Some(true) => CopyIn,
        "CopyStmt" => CopyOut,
        "TransactionStmt" => Transaction,
        "VariableSetStmt" => match node.get("kind").and_then(Value::as_i64) {
            // VAR_RESET, VAR_RESET_ALL
            Some(5 | 6) => Reset,
            _ => Set,
        },
        "VariableShowStmt" => Show,
        "CallStmt" => Call,
        "DoStmt" => DoBlock,
        "ExplainStmt" => Explain,
        "PrepareStmt" | "ExecuteStmt" | "DeallocateStmt" => Prepared,
        "DeclareCursorStmt" | "FetchStmt" | "ClosePortalStmt" => Cursor,
        "ListenStmt" | "NotifyStmt" | "UnlistenStmt" => Notify,
        "LockStmt" | "VacuumStmt" | "CheckPointStmt" | "DiscardStmt" | "LoadStmt"
        | "ClusterStmt" | "ReindexStmt" | "ConstraintsSetStmt" => Utility,
        t if t.starts_with("Create")
            || t.starts_with("Alter")
            || t.starts_with("Drop")
            || t.starts_with("Grant")
            || t.starts_with("Reassign")
            || t.starts_with("Import")
            || t.starts_with("Sec")
            || matches!(
                t,
                "TruncateStmt"
                    | "CommentStmt"
                    | "RenameStmt"
                    | "DefineStmt"
                    | "RuleStmt"
                    | "IndexStmt"
                    | "ViewStmt"
                    | "RefreshMatViewStmt"
                    | "CompositeTypeStmt"
                    | "CreatedbStmt"
                    | "DropdbStmt"
            ) =>
        {
            Ddl
        }
        _ => Other,
    }
}

fn explain_has_analyze(node: &Value) -> bool {
    node.get("options")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| o.pointer("/node/DefElem"))
        .any(|d| {
            d.get("defname").and_then(Value::as_str) == Some("analyze")
                && !matches!(
                    d.pointer("/arg/node/String/sval")
                        .or(d.pointer("/arg/node/Boolean/boolval"))
                        .map(|v| v.to_string().to_ascii_lowercase())
                        .as_deref(),
                    Some("\"false\"" | "\"off\"" | "\"0\"" | "false")
                )
        })
}
