//! The one place where the gateway's own types become the contract's (`wit/`) and back: the
//! analysis of a statement as plugins see it. Everything else exchanges domain types.

use crate::analysis::{Statement, StatementKind, TableRef};
use crate::identity::SessionInfo;

use super::bindings::v0_1::sluice::plugin::types as wit;

/// The session as the contract's `session` record (given to each instance's `open`).
pub fn session(info: &SessionInfo) -> wit::Session {
    wit::Session {
        id: info.id,
        subject: info.subject.clone(),
        groups: info.groups.clone(),
        database: info.database.clone(),
        token_id: info.token_id.clone(),
        client_addr: info.client_addr.clone(),
        application_name: info.application_name.clone(),
    }
}

/// `s` as the contract's `statement`, with its Bind parameter values as text.
pub fn statement(s: &Statement, params: &[Option<String>]) -> wit::Statement {
    wit::Statement {
        text: s.text.clone(),
        fingerprint: s.fingerprint,
        kind: kind(s.kind),
        command: s.command.clone(),
        parameter: s.parameter.clone(),
        tables_read: s.tables_read.iter().map(table).collect(),
        tables_written: s.tables_written.iter().map(table).collect(),
        functions: s.functions.clone(),
        has_where: s.has_where,
        unfiltered_write: s.unfiltered_write,
        writes: s.writes,
        copy_program: s.copy_program,
        params: params.to_vec(),
    }
}

/// What a masking plugin is given for a result no statement text is known for.
pub fn no_statement() -> wit::Statement {
    wit::Statement {
        text: String::new(),
        fingerprint: 0,
        kind: wit::StatementKind::Other,
        command: String::new(),
        parameter: None,
        tables_read: Vec::new(),
        tables_written: Vec::new(),
        functions: Vec::new(),
        has_where: false,
        unfiltered_write: false,
        writes: false,
        copy_program: false,
        params: Vec::new(),
    }
}

fn table(t: &TableRef) -> wit::TableRef {
    wit::TableRef {
        schema: t.schema.clone(),
        name: t.name.clone(),
    }
}

fn kind(kind: StatementKind) -> wit::StatementKind {
    use StatementKind as K;
    use wit::StatementKind as W;
    match kind {
        K::Select => W::Select,
        K::Insert => W::Insert,
        K::Update => W::Update,
        K::Delete => W::Delete,
        K::Merge => W::Merge,
        K::CopyIn => W::CopyIn,
        K::CopyOut => W::CopyOut,
        K::Ddl => W::Ddl,
        K::Transaction => W::Transaction,
        K::Set => W::Set,
        K::Reset => W::Reset,
        K::Show => W::Show,
        K::Call => W::Call,
        K::DoBlock => W::DoBlock,
        K::Explain => W::Explain,
        K::Prepared => W::Prepared,
        K::Cursor => W::Cursor,
        K::Notify => W::Notify,
        K::Utility => W::Utility,
        K::Other => W::Other,
    }
}

/// The statement as plugins see it, lowered only if a plugin is asked (a remembered plan needs
/// none).
pub struct LazyStatement<'a> {
    source: Option<&'a Statement>,
    lowered: std::sync::OnceLock<wit::Statement>,
}

impl<'a> LazyStatement<'a> {
    /// `None`: the statement is not known.
    pub fn new(source: Option<&'a Statement>) -> LazyStatement<'a> {
        LazyStatement {
            source,
            lowered: std::sync::OnceLock::new(),
        }
    }

    pub(super) fn get(&self) -> &wit::Statement {
        self.lowered.get_or_init(|| match self.source {
            Some(s) => statement(s, &[]),
            None => no_statement(),
        })
    }
}
