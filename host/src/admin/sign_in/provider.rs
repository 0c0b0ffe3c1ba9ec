//! The OpenID Connect provider approvers sign in with: its endpoints from discovery (the
//! document must be the issuer's own, and its endpoints https or loopback http), and the code
//! redeemed for an ID token at its token endpoint with the PKCE verifier.

use std::time::Duration;

use tokio_rustls::TlsConnector;

/// Largest discovery document or token answer read.
const MAX_ANSWER: usize = 256 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Provider {
    pub authorization: url::Url,
    token: url::Url,
}

/// https, or plain http only to a loopback address (a provider on the same machine).
fn secure(url: &url::Url) -> bool {
    url.scheme() == "https"
        || url.scheme() == "http"
            && url.host().is_some_and(|h| match h {
                url::Host::Ipv4(ip) => ip.is_loopback(),
                url::Host::Ipv6(ip) => ip.is_loopback(),
                url::Host::Domain(d) => d == "localhost",
            })
}

impl Provider {
    /// Reads `issuer`'s discovery document.
    pub async fn discover(issuer: &str, tls: &TlsConnector) -> Result<Provider, String> {
        let url = url::Url::parse(&format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ))
        .map_err(|e| format!("issuer {issuer}: {e}"))?;
        if !secure(&url) {
            return Err(format!(
                "{url} needs https (plain http only on a loopback address)"
            ));
        }
        let body = crate::web::get(&url, None, tls, MAX_ANSWER, TIMEOUT)
            .await
            .map_err(|e| format!("discovery at {url}: {e}"))?;
        let document: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("discovery document: {e}"))?;
        if document["issuer"] != issuer {
            return Err(format!(
                "the discovery document names issuer {} instead of {issuer}",
                document["issuer"]
            ));
        }
        let endpoint = |name: &str| -> Result<url::Url, String> {
            let text = document[name]
                .as_str()
                .ok_or_else(|| format!("the discovery document has no {name}"))?;
            let url = url::Url::parse(text).map_err(|e| format!("{name} {text}: {e}"))?;
            if !secure(&url) {
                return Err(format!(
                    "{name} {url} needs https (plain http only on a loopback address)"
                ));
            }
            Ok(url)
        };
        Ok(Provider {
            authorization: endpoint("authorization_endpoint")?,
            token: endpoint("token_endpoint")?,
        })
    }

    /// Redeems an authorization code; returns the ID token.
    pub async fn redeem(
        &self,
        code: &str,
        verifier: &str,
        redirect: &url::Url,
        client: (&str, Option<&str>),
        tls: &TlsConnector,
    ) -> Result<String, String> {
        let (client_id, secret) = client;
        let form = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", redirect.as_str())
                .append_pair("client_id", client_id)
                .append_pair("code_verifier", verifier);
            if let Some(secret) = secret {
                form.append_pair("client_secret", secret);
            }
            form.finish()
        };
        let body = crate::web::post_form(&self.token, form, tls, MAX_ANSWER, TIMEOUT)
            .await
            .map_err(|e| format!("token endpoint {}: {e}", self.token))?;
        let answer: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("token answer: {e}"))?;
        answer["id_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "the token answer has no id_token".into())
    }
}
