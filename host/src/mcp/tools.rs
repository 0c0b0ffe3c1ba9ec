//! The tools an agent sees: `query`, `list_tables`, `describe_table`, `explain`. Each call is
//! one statement in the caller's upstream session (`sessions.rs`), so the gateway decides it
//! as it decides psql's: a refusal is a tool error with the gateway's words, a held statement
//! waits with the approval id sent as progress, masked values arrive masked.

use std::sync::Arc;

use rmcp::ErrorData as McpError;
use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use serde_json::{Value, json};

use super::answer;
use super::call::{self, Statement};
use super::client::{Answer, ClientError, Report};
use super::progress::Progress;
use super::sessions::{Caller, Key};
use super::state::McpState;

/// One MCP session's handler (or one request's, where the protocol has no sessions). The
/// sessions behind it end with the MCP session: its DELETE, or the reaper when it idles out.
pub struct Tools {
    state: Arc<McpState>,
}

impl Tools {
    pub fn new(state: Arc<McpState>) -> Tools {
        Tools { state }
    }
}

fn schema(value: Value) -> Arc<serde_json::Map<String, Value>> {
    Arc::new(value.as_object().cloned().unwrap_or_default())
}

fn annotations(read_only: bool) -> ToolAnnotations {
    let mut annotations = ToolAnnotations::new();
    annotations.read_only_hint = Some(read_only);
    annotations.destructive_hint = Some(!read_only);
    annotations.open_world_hint = Some(false);
    annotations
}

/// The tools, described for the caller's grant: a read-only grant's `query` neither says nor
/// hints that it can write.
fn definitions(read_only: bool) -> Vec<Tool> {
    let query = if read_only {
        "Run one read-only SQL statement (this token's grant is read-only) in your database session through Sluice's guard (policy, masking, approvals, audit). Returns the columns with their types and the rows as JSON objects, at most the row limit (truncated says whether there were more). A transaction opened with BEGIN stays open across calls until COMMIT or ROLLBACK."
    } else {
        "Run one SQL statement in your database session through Sluice's guard (policy, masking, approvals, audit). Returns the columns with their types and the rows as JSON objects, at most the row limit (truncated says whether there were more). A statement a policy holds for approval waits until people decide; progress notifications carry the approval id. A transaction opened with BEGIN stays open across calls until COMMIT or ROLLBACK."
    };
    vec![
        Tool::new(
            "query",
            query,
            schema(json!({
                "type": "object",
                "properties": {
                    "sql": {"type": "string", "description": "One SQL statement; $1, $2... for parameters."},
                    "params": {
                        "type": "array",
                        "description": "Values for $1, $2...: strings, numbers, booleans or null.",
                        "items": {"type": ["string", "number", "boolean", "null"]},
                    },
                },
                "required": ["sql"],
            })),
        )
        .with_annotations(annotations(read_only)),
        Tool::new(
            "list_tables",
            "List the tables and views this session can see, by schema (system schemas left out).",
            schema(json!({
                "type": "object",
                "properties": {"schema": {"type": "string", "description": "Only this schema."}},
            })),
        )
        .with_annotations(annotations(true)),
        Tool::new(
            "describe_table",
            "Describe a table's columns: name, type, nullable, default.",
            schema(json!({
                "type": "object",
                "properties": {
                    "table": {"type": "string"},
                    "schema": {"type": "string", "description": "Default: the first schema on the search path that has the table."},
                },
                "required": ["table"],
            })),
        )
        .with_annotations(annotations(true)),
        Tool::new(
            "explain",
            "Show the plan Postgres would use for a statement, without running it (EXPLAIN, FORMAT JSON).",
            schema(json!({
                "type": "object",
                "properties": {"sql": {"type": "string"}},
                "required": ["sql"],
            })),
        )
        .with_annotations(annotations(true)),
    ]
}

const LIST_TABLES: &str = "SELECT table_schema AS schema, table_name AS name, table_type AS type \
     FROM information_schema.tables \
     WHERE table_schema NOT IN ('pg_catalog', 'information_schema') \
     AND ($1::text IS NULL OR table_schema = $1) ORDER BY 1, 2";

const DESCRIBE_TABLE: &str = "SELECT c.column_name AS name, c.data_type AS type, \
     c.is_nullable = 'YES' AS nullable, c.column_default AS default \
     FROM information_schema.columns c \
     WHERE c.table_name = $1 AND c.table_schema = coalesce($2, \
       (SELECT s FROM unnest(current_schemas(false)) WITH ORDINALITY AS p(s, n) \
        WHERE EXISTS (SELECT 1 FROM information_schema.tables t \
                      WHERE t.table_schema = p.s AND t.table_name = $1) \
        ORDER BY n LIMIT 1)) \
     ORDER BY c.ordinal_position";

/// A parameter as Postgres reads it in text: JSON's own text for numbers, `true`/`false`,
/// strings as they are, arrays and objects as JSON.
fn param(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn text_argument(arguments: &serde_json::Map<String, Value>, name: &str) -> Option<String> {
    arguments
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn statement(request: &CallToolRequestParams) -> Result<Statement, String> {
    let empty = serde_json::Map::new();
    let arguments = request.arguments.as_ref().unwrap_or(&empty);
    let required = |name: &str| {
        text_argument(arguments, name).ok_or_else(|| format!("argument \"{name}\" is required"))
    };
    match request.name.as_ref() {
        "query" => Ok(Statement {
            sql: required("sql")?,
            params: match arguments.get("params") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(values)) => values.iter().map(param).collect(),
                Some(_) => return Err("argument \"params\" must be an array".into()),
            },
        }),
        "list_tables" => Ok(Statement {
            sql: LIST_TABLES.into(),
            params: vec![text_argument(arguments, "schema")],
        }),
        "describe_table" => Ok(Statement {
            sql: DESCRIBE_TABLE.into(),
            params: vec![Some(required("table")?), text_argument(arguments, "schema")],
        }),
        "explain" => Ok(Statement {
            sql: format!("EXPLAIN (FORMAT JSON) {}", required("sql")?),
            params: Vec::new(),
        }),
        other => Err(format!("no tool named \"{other}\"")),
    }
}

fn failed(text: String, details: Value) -> CallToolResponse {
    let mut result = CallToolResult::error(vec![ContentBlock::text(text)]);
    result.structured_content = Some(details);
    result.into()
}

/// A statement Postgres or the gateway refused: the tool error says who and why.
fn refused(error: &Report, answer: &Answer) -> CallToolResponse {
    let mut text = format!("{} (SQLSTATE {})", error.message, error.code);
    if let Some(detail) = &error.detail {
        text.push_str(&format!("\nDETAIL: {detail}"));
    }
    if let Some(hint) = &error.hint {
        text.push_str(&format!("\nHINT: {hint}"));
    }
    text.push_str(&format!(
        "\ntransaction: {}",
        answer::transaction(answer.status)
    ));
    failed(
        text,
        json!({"error": error, "transaction": answer::transaction(answer.status), "notices": answer.notices}),
    )
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("sluice", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Tools run SQL in your own database session through Sluice: policies may refuse a statement (the error says which and why) or hold it for a person's approval, masked columns arrive masked, and every statement is audited.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let read_only = caller(&context).is_none_or(|c| c.read_only);
        Ok(ListToolsResult::with_all_items(definitions(read_only)))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let Some(caller) = caller(&context) else {
            return Err(McpError::internal_error("no authenticated caller", None));
        };
        let statement = match statement(&request) {
            Ok(statement) => statement,
            Err(why) => return Err(McpError::invalid_params(why, None)),
        };
        let key = Key {
            token: caller.token_digest.clone(),
            database: caller.database.clone(),
            mcp_session: mcp_session_id(&context),
        };
        let sessions = &self.state.sessions;
        let slot = sessions.slot(key);
        let progress = Progress::new(
            &context,
            request.meta.as_ref().and_then(|m| m.get_progress_token()),
        );
        let answer = call::run(
            &self.state.sessions,
            &slot,
            &caller,
            &statement,
            self.state.limits,
            &progress,
            &context.ct,
        )
        .await;
        Ok(match answer {
            Ok(answer) => match &answer.error {
                Some(error) => refused(error, &answer),
                None => CallToolResult::structured(answer::to_json(&answer)).into(),
            },
            Err(ClientError::Ended { code, message }) => failed(
                format!("the database session ended: {message} (SQLSTATE {code})"),
                json!({"error": {"code": code, "message": message}}),
            ),
            Err(ClientError::Unsendable(why)) => return Err(McpError::invalid_params(why, None)),
            Err(ClientError::TransactionLost(why)) => failed(
                format!("{why}: nothing was run; the next call starts a new session"),
                json!({"error": {"message": why}}),
            ),
            Err(ClientError::Cancelled) => failed(
                "cancelled before the statement was sent".into(),
                json!({"error": {"message": "cancelled"}}),
            ),
            Err(e) => failed(
                format!("the database session failed: {e}"),
                json!({"error": {"message": e.to_string()}}),
            ),
        })
    }
}

fn caller(context: &RequestContext<RoleServer>) -> Option<Caller> {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Caller>())
        .cloned()
}

fn mcp_session_id(context: &RequestContext<RoleServer>) -> Option<String> {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.headers.get("mcp-session-id"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
