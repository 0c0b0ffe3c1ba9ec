//! The Postgres wire protocol as the gateway reads and writes it: framing (`frame`), what it
//! reads in frontend messages (`frontend`), the backend messages it builds and the error fields
//! it reads (`backend`), the SQLSTATE codes it sends (`sqlstate`), and the watch on writes a client does not
//! read (`stall`). Nothing here knows about
//! sessions, policies or masking; they all depend on this module, never the reverse.

pub mod backend;
pub mod frame;
pub mod frontend;
pub mod sqlstate;
pub mod stall;
