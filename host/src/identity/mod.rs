//! Who a client is: gateway-minted tokens, the keys that sign them, and the grant a valid token
//! carries into a session.

pub mod external;
mod grant;
mod keys;
pub mod principal;
mod session;
mod token;

pub use grant::{Act, Grant, Minted};
pub use keys::{KeyError, SigningKey, verify_signature};
pub use principal::{PrincipalTemplate, matches_pattern};
pub use session::SessionInfo;
pub use token::{Claims, Exchanged, TokenAuthority, TokenError};
pub(crate) use token::{LATEST_EXP, unix_now, within_latest};
