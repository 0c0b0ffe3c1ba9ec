//! The data path: the listener (`listener.rs`, with its workers, connection limits and cancel
//! keys), the client's login (`login/`), and each session (`session/`) with its two
//! directions: the client → upstream check (`gate/`) and the upstream → client relay, which
//! matches answers to requests (`pipeline/`), masks rows (`masker/`) and records results
//! (`trail.rs`).

mod cancel;
pub mod fuzzing;
mod gate;
mod limits;
mod listener;
mod login;
mod masker;
mod pipeline;
mod session;
mod shared;
mod trail;
mod workers;

pub use crate::upstream::{Upstream, UpstreamError};
pub use cancel::CancelRegistry;
pub use listener::{Gateway, LocalDoor, StartError};
pub use session::SessionEnd;
pub use shared::Shared;
