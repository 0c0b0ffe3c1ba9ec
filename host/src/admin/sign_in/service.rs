//! The sign-in service: the configured provider, sign-ins in progress and live sessions, and
//! how a request's session cookie is checked.

use std::sync::Arc;

use axum::http::HeaderMap;
use tokio_rustls::TlsConnector;

use super::provider::Provider;
use super::sessions::{CSRF_HEADER, SESSION_COOKIE, Session, Sessions, cookie, same};
use crate::audit::{Audit, Event};
use crate::config::{Config, SignInConfig};
use crate::identity::external::TrustedIssuers;

/// Why a session cookie did not authenticate a request.
#[derive(Debug, thiserror::Error)]
pub enum SessionRefused {
    #[error("the sign-in has ended: sign in again")]
    Ended,
    #[error("a change needs the page's x-sluice-csrf header")]
    NoCsrf,
}

pub struct SignIn {
    pub(super) config: SignInConfig,
    /// The provider's `iss` and this gateway's client id there (the issuer's `audience`).
    pub(super) issuer_url: String,
    pub(super) client_id: String,
    pub(super) secret: Option<String>,
    pub(super) issuers: Arc<TrustedIssuers>,
    pub(super) tls: TlsConnector,
    /// Discovered at the first sign-in (and again after a failure).
    provider: tokio::sync::Mutex<Option<Arc<Provider>>>,
    pub(super) sessions: Sessions,
    audit: Arc<Audit>,
}

impl SignIn {
    /// From `[admin.sign_in]`, if configured; reads the client secret file.
    pub fn from_config(
        config: &Config,
        issuers: Arc<TrustedIssuers>,
        audit: Arc<Audit>,
    ) -> Result<Option<SignIn>, String> {
        let Some(sign_in) = &config.admin.sign_in else {
            return Ok(None);
        };
        let issuer = config
            .identity
            .issuers
            .iter()
            .find(|i| i.name == sign_in.issuer)
            .ok_or_else(|| format!("admin.sign_in.issuer {} is not configured", sign_in.issuer))?;
        let secret = match &sign_in.client_secret_file {
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| {
                        format!("admin.sign_in.client_secret_file {}: {e}", file.display())
                    })?
                    .trim_end()
                    .to_owned(),
            ),
            None => None,
        };
        Ok(Some(SignIn {
            config: sign_in.clone(),
            issuer_url: issuer.issuer().unwrap_or_default().to_owned(),
            client_id: issuer.audience.clone(),
            secret,
            issuers,
            tls: crate::web::client_tls(issuer.ca_file.as_deref()).map_err(|e| e.to_string())?,
            provider: tokio::sync::Mutex::new(None),
            sessions: Sessions::default(),
            audit,
        }))
    }

    pub(super) async fn provider(&self) -> Result<Arc<Provider>, String> {
        let mut cached = self.provider.lock().await;
        if let Some(provider) = cached.as_ref() {
            return Ok(provider.clone());
        }
        let provider = Arc::new(Provider::discover(&self.issuer_url, &self.tls).await?);
        *cached = Some(provider.clone());
        Ok(provider)
    }

    /// The signed-in approver of this request, if its session cookie is live. A change
    /// (`writes`) also needs the session's CSRF token in its header.
    pub fn session(
        &self,
        headers: &HeaderMap,
        writes: bool,
    ) -> Result<Option<Session>, SessionRefused> {
        let Some(id) = cookie(headers, SESSION_COOKIE) else {
            return Ok(None);
        };
        let Some(session) = self.sessions.get(id) else {
            return Err(SessionRefused::Ended);
        };
        if writes {
            let sent = headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !same(sent, &session.csrf) {
                return Err(SessionRefused::NoCsrf);
            }
        }
        Ok(Some(session))
    }

    pub(super) fn record(
        &self,
        subject: Option<&str>,
        groups: &[String],
        outcome: &'static str,
        why: Option<String>,
    ) {
        self.audit.record(Event::ApproverSignIn {
            issuer: self.config.issuer.clone(),
            subject: subject.map(str::to_owned),
            groups: groups.to_vec(),
            outcome,
            why,
        });
    }
}
