//! What a statement does, in the plugin contract's words.

/// What a statement does, as the plugin contract names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    CopyIn,
    CopyOut,
    Ddl,
    Transaction,
    Set,
    Reset,
    Show,
    Call,
    DoBlock,
    Explain,
    Prepared,
    Cursor,
    Notify,
    Utility,
    Other,
}

impl StatementKind {
    /// The contract's name for the kind (`copy-in`, `do-block`...), for metrics and the audit
    /// log.
    pub fn label(self) -> &'static str {
        use StatementKind as K;
        match self {
            K::Select => "select",
            K::Insert => "insert",
            K::Update => "update",
            K::Delete => "delete",
            K::Merge => "merge",
            K::CopyIn => "copy-in",
            K::CopyOut => "copy-out",
            K::Ddl => "ddl",
            K::Transaction => "transaction",
            K::Set => "set",
            K::Reset => "reset",
            K::Show => "show",
            K::Call => "call",
            K::DoBlock => "do-block",
            K::Explain => "explain",
            K::Prepared => "prepared",
            K::Cursor => "cursor",
            K::Notify => "notify",
            K::Utility => "utility",
            K::Other => "other",
        }
    }
}
