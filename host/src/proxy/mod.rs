//! The data path: listener, client login, upstream login, relay, cancel keys.

mod cancel;
pub mod fuzzing;
mod gate;
mod limits;
mod listener;
mod login;
mod masker;
mod name_context;
mod opaque;
mod pipeline;
mod prepared;
mod progress;
mod reading;
mod refusal;
mod runaway;
mod session;
mod shared;
mod startup;
mod startup_params;
mod strict;
mod trail;
mod unnamed;
mod workers;

pub use crate::upstream::{Upstream, UpstreamError};
pub use cancel::CancelRegistry;
pub use listener::{Gateway, StartError};
pub use session::SessionEnd;
pub use shared::Shared;
