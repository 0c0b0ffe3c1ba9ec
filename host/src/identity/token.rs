//! Minting and checking gateway tokens: EdDSA JWTs signed by the configured key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use super::grant::{Act, Grant, Minted};
use super::keys::{KeyError, SigningKey};

/// The claims of a gateway token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    /// The database the token grants access to.
    pub db: String,
    #[serde(default)]
    pub groups: Vec<String>,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
    /// For a token issued in exchange for an external one: that token's issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
    /// And that token's `jti`, when it had one: revoking it revokes this one too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp_jti: Option<String>,
    /// A read-only grant: its sessions run with `default_transaction_read_only` on, and may not
    /// change it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Who acts for the subject (RFC 8693 `act`): an agent acting for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Act>,
    /// An operator's break-glass mint: who and why (recorded with every session it opens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minted: Option<Minted>,
}

/// A token to be issued in exchange for an external one.
#[derive(Debug, Clone)]
pub struct Exchanged<'a> {
    pub subject: &'a str,
    pub database: &'a str,
    pub groups: &'a [String],
    pub ttl: Duration,
    /// The external token's issuer (`iss`) and `jti`.
    pub idp: &'a str,
    pub idp_jti: Option<&'a str>,
    pub read_only: bool,
    pub actor: Option<Act>,
}

/// 9999-12-31T23:59:59Z: the latest `exp` a token may carry, ours or an external issuer's,
/// and the latest time Sluice writes down (RFC 3339 has four-digit years).
pub(crate) const LATEST_EXP: u64 = 253_402_300_799;

/// `lasts`, cut so that a period starting at `from` ends by [`LATEST_EXP`]: a longer one (a
/// revocation or an approval's scope "for good") means the same, and its end stays a time
/// that can be added, stored and shown.
pub(crate) fn within_latest(from: SystemTime, lasts: Duration) -> Duration {
    let latest = UNIX_EPOCH + Duration::from_secs(LATEST_EXP);
    lasts.min(latest.duration_since(from).unwrap_or_default())
}

/// Why a token was not accepted. The client only ever sees a generic message; this is for logs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token ttl {requested:?} exceeds identity.max_ttl {max:?}")]
    TtlTooLong { requested: Duration, max: Duration },
    #[error("token ttl must be longer than zero")]
    TtlZero,
    #[error("subject and database must not be empty")]
    EmptyField,
    #[error("token is expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token signature or algorithm is not accepted")]
    BadSignature,
    #[error("token issuer or audience does not match")]
    WrongIssuerOrAudience,
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("token subject does not match the startup user")]
    WrongUser,
    #[error("token database does not match the startup database")]
    WrongDatabase,
    #[error("signing failed")]
    Signing,
}

impl TokenError {
    /// A short, stable name of the failure class for logs and (later) audit records.
    pub fn class(&self) -> &'static str {
        match self {
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::BadSignature => "bad_signature",
            TokenError::WrongIssuerOrAudience => "wrong_issuer_or_audience",
            TokenError::Malformed(_) => "malformed",
            TokenError::WrongUser => "wrong_user",
            TokenError::WrongDatabase => "wrong_database",
            TokenError::TtlTooLong { .. } | TokenError::TtlZero | TokenError::EmptyField => {
                "mint_refused"
            }
            TokenError::Signing => "signing",
        }
    }
}

/// Mints and verifies tokens with one key, issuer and audience.
pub struct TokenAuthority {
    encoding: jsonwebtoken::EncodingKey,
    decoding: jsonwebtoken::DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    max_ttl: Duration,
    leeway: Duration,
}

impl TokenAuthority {
    pub fn new(
        key: &SigningKey,
        issuer: &str,
        audience: &str,
        max_ttl: Duration,
        leeway: Duration,
    ) -> TokenAuthority {
        // The algorithm is pinned here; jsonwebtoken refuses any token whose header names
        // another one (including "none"), so the header never chooses how it is checked.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        // Expiry is exact (the gateway ends sessions at `exp` too); only `nbf` gets leeway,
        // and it is checked below because jsonwebtoken applies one leeway to both.
        validation.leeway = 0;
        validation.validate_nbf = false;
        TokenAuthority {
            encoding: key.encoding_key(),
            decoding: key.decoding_key(),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            max_ttl,
            leeway,
        }
    }

    /// Builds from the `[identity]` config section, loading the key it names.
    pub fn from_config(config: &crate::config::IdentityConfig) -> Result<TokenAuthority, KeyError> {
        let key = SigningKey::load(&config.signing_key)?;
        Ok(TokenAuthority::new(
            &key,
            &config.issuer,
            &config.audience,
            config.max_ttl,
            config.leeway,
        ))
    }

    /// Signs a token for `subject` on `database`, valid from now for `ttl`.
    pub fn mint(
        &self,
        subject: &str,
        database: &str,
        groups: &[String],
        ttl: Duration,
    ) -> Result<String, TokenError> {
        self.mint_claims(subject, database, groups, ttl, |_| {})
            .map(|(token, _)| token)
    }

    /// Signs a read-only grant: its sessions cannot write, whatever the plugins say.
    pub fn mint_read_only(
        &self,
        subject: &str,
        database: &str,
        groups: &[String],
        ttl: Duration,
    ) -> Result<String, TokenError> {
        self.mint_claims(subject, database, groups, ttl, |c| c.read_only = true)
            .map(|(token, _)| token)
    }

    /// Signs an operator's break-glass token (`sluice token mint`): the token names who minted
    /// it and why, and every session it opens is recorded with that.
    pub fn mint_break_glass(
        &self,
        subject: &str,
        database: &str,
        groups: &[String],
        ttl: Duration,
        read_only: bool,
        minted: Minted,
    ) -> Result<String, TokenError> {
        self.mint_claims(subject, database, groups, ttl, |c| {
            c.read_only = read_only;
            c.minted = Some(minted);
        })
        .map(|(token, _)| token)
    }

    /// Signs a token issued in exchange for an external one; returns it and its claims.
    pub fn mint_exchanged(&self, e: &Exchanged<'_>) -> Result<(String, Claims), TokenError> {
        self.mint_claims(e.subject, e.database, e.groups, e.ttl, |c| {
            c.idp = Some(e.idp.to_owned());
            c.idp_jti = e.idp_jti.map(str::to_owned);
            c.read_only = e.read_only;
            c.act = e.actor.clone();
        })
    }

    fn mint_claims(
        &self,
        subject: &str,
        database: &str,
        groups: &[String],
        ttl: Duration,
        shape: impl FnOnce(&mut Claims),
    ) -> Result<(String, Claims), TokenError> {
        if ttl.is_zero() {
            return Err(TokenError::TtlZero);
        }
        if ttl > self.max_ttl {
            return Err(TokenError::TtlTooLong {
                requested: ttl,
                max: self.max_ttl,
            });
        }
        if subject.is_empty() || database.is_empty() {
            return Err(TokenError::EmptyField);
        }
        let now = unix_now();
        let mut claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: subject.to_owned(),
            db: database.to_owned(),
            groups: groups.to_vec(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl.as_secs().max(1)),
            jti: uuid::Uuid::new_v4().to_string(),
            idp: None,
            idp_jti: None,
            read_only: false,
            act: None,
            minted: None,
        };
        shape(&mut claims);
        let token = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.encoding)
            .map_err(|_| TokenError::Signing)?;
        Ok((token, claims))
    }

    /// Checks signature, issuer, audience and validity window; returns the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidAlgorithmName
                | ErrorKind::InvalidKeyFormat => TokenError::BadSignature,
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                    TokenError::WrongIssuerOrAudience
                }
                other => TokenError::Malformed(format!("{other:?}")),
            })?;
        let claims = data.claims;
        let now = unix_now();
        // jsonwebtoken accepts exp == now; a token is dead from its exp second on.
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now + self.leeway.as_secs() {
            return Err(TokenError::NotYetValid);
        }
        // An exp no clock reaches is no lifetime: refused here rather than overflowing the
        // time arithmetic of the session it would open.
        if claims.exp > LATEST_EXP {
            return Err(TokenError::Malformed("exp is after 9999-12-31".into()));
        }
        if claims.jti.is_empty() {
            return Err(TokenError::Malformed("empty jti".into()));
        }
        Ok(claims)
    }

    /// Verifies `token` for a login as `user` on `database` and returns the grant.
    pub fn authenticate(
        &self,
        token: &str,
        user: &str,
        database: &str,
    ) -> Result<Grant, TokenError> {
        let claims = self.verify(token)?;
        if claims.sub != user {
            return Err(TokenError::WrongUser);
        }
        if claims.db != database {
            return Err(TokenError::WrongDatabase);
        }
        Ok(Grant {
            subject: claims.sub,
            database: claims.db,
            groups: claims.groups,
            token_id: claims.jti,
            issuer: claims.iss,
            origin: claims.idp,
            origin_token_id: claims.idp_jti,
            read_only: claims.read_only,
            actor: claims.act,
            minted: claims.minted,
            expires_at: UNIX_EPOCH + Duration::from_secs(claims.exp),
        })
    }

    /// Signs arbitrary claims with this authority's key. For tests that need tokens the
    /// minting rules would refuse (already expired, not yet valid, foreign audience).
    pub fn sign_claims(&self, claims: &Claims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.encoding)
            .map_err(|_| TokenError::Signing)
    }

    /// Claims as [`TokenAuthority::mint`] would fill them, for tests to alter and sign.
    pub fn claims_for(&self, subject: &str, database: &str, ttl: Duration) -> Claims {
        let now = unix_now();
        Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: subject.to_owned(),
            db: database.to_owned(),
            groups: Vec::new(),
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs(),
            jti: uuid::Uuid::new_v4().to_string(),
            idp: None,
            idp_jti: None,
            act: None,
            minted: None,
            read_only: false,
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn authority() -> TokenAuthority {
        TokenAuthority::new(
            &SigningKey::generate().unwrap(),
            "sluice",
            "sluice",
            Duration::from_secs(3600),
            Duration::from_secs(5),
        )
    }

    #[test]
    fn minted_token_authenticates_its_subject_and_database() {
        let a = authority();
        let token = a
            .mint("agent-7", "app", &["ops".into()], Duration::from_secs(300))
            .unwrap();
        let grant = a.authenticate(&token, "agent-7", "app").unwrap();
        assert_eq!(grant.subject, "agent-7");
        assert_eq!(grant.groups, vec!["ops".to_string()]);
        assert_eq!(
            a.authenticate(&token, "agent-8", "app"),
            Err(TokenError::WrongUser)
        );
        assert_eq!(
            a.authenticate(&token, "agent-7", "other"),
            Err(TokenError::WrongDatabase)
        );
    }

    #[test]
    fn ttl_above_max_is_refused() {
        let err = authority()
            .mint("a", "app", &[], Duration::from_secs(7200))
            .unwrap_err();
        assert!(matches!(err, TokenError::TtlTooLong { .. }));
    }

    #[test]
    fn token_signed_by_another_key_is_refused() {
        let token = authority()
            .mint("a", "app", &[], Duration::from_secs(60))
            .unwrap();
        assert_eq!(authority().verify(&token), Err(TokenError::BadSignature));
    }

    #[test]
    fn alg_none_token_is_refused() {
        let a = authority();
        let claims = a.claims_for("a", "app", Duration::from_secs(60));
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let token = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(serde_json::to_vec(&claims).unwrap())
        );
        assert!(a.verify(&token).is_err());
    }

    #[test]
    fn expired_and_future_tokens_are_refused() {
        let a = authority();
        let mut claims = a.claims_for("a", "app", Duration::from_secs(60));
        claims.exp = unix_now() - 1;
        assert_eq!(
            a.verify(&a.sign_claims(&claims).unwrap()),
            Err(TokenError::Expired)
        );
        let mut claims = a.claims_for("a", "app", Duration::from_secs(600));
        claims.nbf = unix_now() + 120;
        assert_eq!(
            a.verify(&a.sign_claims(&claims).unwrap()),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn a_token_expiring_after_the_year_9999_is_refused_not_overflowed() {
        let a = authority();
        let mut claims = a.claims_for("a", "app", Duration::from_secs(60));
        for exp in [LATEST_EXP + 1, u64::MAX] {
            claims.exp = exp;
            let token = a.sign_claims(&claims).unwrap();
            assert!(matches!(a.verify(&token), Err(TokenError::Malformed(_))));
            assert!(matches!(
                a.authenticate(&token, "a", "app"),
                Err(TokenError::Malformed(_))
            ));
        }
        claims.exp = LATEST_EXP;
        let grant = a
            .authenticate(&a.sign_claims(&claims).unwrap(), "a", "app")
            .unwrap();
        assert_eq!(
            grant.expires_at,
            UNIX_EPOCH + Duration::from_secs(LATEST_EXP)
        );
    }

    #[test]
    fn a_period_is_cut_to_end_by_the_year_9999_and_a_shorter_one_is_kept() {
        let (now, hour) = (SystemTime::now(), Duration::from_secs(3600));
        assert_eq!(within_latest(now, hour), hour);
        assert_eq!(
            now + within_latest(now, Duration::MAX),
            UNIX_EPOCH + Duration::from_secs(LATEST_EXP)
        );
    }

    #[test]
    fn nbf_within_leeway_is_accepted() {
        let a = authority();
        let mut claims = a.claims_for("a", "app", Duration::from_secs(600));
        claims.nbf = unix_now() + 2;
        assert!(a.verify(&a.sign_claims(&claims).unwrap()).is_ok());
    }

    #[test]
    fn wrong_audience_is_refused() {
        let a = authority();
        let mut claims = a.claims_for("a", "app", Duration::from_secs(60));
        claims.aud = "someone-else".into();
        assert_eq!(
            a.verify(&a.sign_claims(&claims).unwrap()),
            Err(TokenError::WrongIssuerOrAudience)
        );
    }
}
