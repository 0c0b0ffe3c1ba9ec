//! The tools an agent sees: `query`, `list_tables`, `describe_table`, `explain`.

use std::sync::Arc;

use rmcp::ErrorData as McpError;
use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};

#[derive(Clone, Default)]
pub struct Tools;

fn schema(value: serde_json::Value) -> Arc<serde_json::Map<String, serde_json::Value>> {
    Arc::new(value.as_object().cloned().unwrap_or_default())
}

fn read_only() -> ToolAnnotations {
    let mut annotations = ToolAnnotations::new();
    annotations.read_only_hint = Some(true);
    annotations
}

fn definitions() -> Vec<Tool> {
    vec![
        Tool::new(
            "query",
            "Run one SQL statement through Sluice's guard (policy, masking, approvals, audit) and return its rows as JSON.",
            schema(serde_json::json!({
                "type": "object",
                "properties": {
                    "sql": {"type": "string"},
                    "params": {"type": "array", "items": {"type": ["string", "number", "boolean", "null"]}},
                },
                "required": ["sql"],
            })),
        ),
        Tool::new(
            "list_tables",
            "List the tables this token's database session can see.",
            schema(
                serde_json::json!({"type": "object", "properties": {"schema": {"type": "string"}}}),
            ),
        )
        .with_annotations(read_only()),
        Tool::new(
            "describe_table",
            "Describe a table's columns and types.",
            schema(serde_json::json!({
                "type": "object",
                "properties": {"table": {"type": "string"}},
                "required": ["table"],
            })),
        )
        .with_annotations(read_only()),
        Tool::new(
            "explain",
            "Show the plan of a statement without running it.",
            schema(serde_json::json!({
                "type": "object",
                "properties": {"sql": {"type": "string"}},
                "required": ["sql"],
            })),
        )
        .with_annotations(read_only()),
    ]
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("sluice", env!("CARGO_PKG_VERSION")))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(definitions()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        Ok(CallToolResult::error(vec![ContentBlock::text(format!(
            "{}: not built yet (work in progress)",
            request.name
        ))])
        .into())
    }
}
