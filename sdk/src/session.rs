//! The session an instance serves, handed to it once by `open`.

use crate::{PluginError, Session};

/// The session of this instance, set once by `open`.
pub(crate) static SESSION: std::sync::OnceLock<Session> = std::sync::OnceLock::new();

/// The session `open` set, or an error for a call before it.
pub(crate) fn opened() -> Result<&'static Session, PluginError> {
    SESSION
        .get()
        .ok_or_else(|| PluginError::Other("called before open".into()))
}
