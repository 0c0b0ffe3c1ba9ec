//! A local identity provider for tests: serves OIDC discovery and a JWKS over real HTTP on a
//! free port, signs tokens with the keys it publishes (ES256 generated with ring, RS256 with
//! the openssl command), counts JWKS fetches, rotates keys and goes down on request; signs
//! people in with the authorization code flow and PKCE (S256 checked at its token endpoint). What
//! stands in for GitHub's, a cluster's or a SPIFFE trust domain's provider, which tests cannot
//! reach.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key and its public JWK.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub algorithm: Algorithm,
    encoding: EncodingKey,
    pub jwk: Value,
    /// The public key as PEM (RSA only): what an attacker would use as an HMAC secret.
    pub public_pem: Option<String>,
}

impl TestKey {
    /// A fresh P-256 key for ES256.
    pub fn es256(kid: &str) -> TestKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate a P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("read it back");
        let point = pair.public_key().as_ref();
        TestKey {
            kid: kid.to_owned(),
            algorithm: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": b64(&point[1..33]), "y": b64(&point[33..65]),
            }),
            public_pem: None,
        }
    }

    /// A fresh 2048-bit RSA key for RS256, made by the openssl command.
    pub fn rs256(kid: &str) -> TestKey {
        let openssl = |args: &[&str], input: Option<&[u8]>| -> Vec<u8> {
            use std::io::Write;
            let mut child = std::process::Command::new("openssl")
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("the openssl command (apt-get install openssl) makes the test's RSA keys");
            if let Some(input) = input {
                child.stdin.take().unwrap().write_all(input).unwrap();
            }
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "openssl {args:?} failed");
            out.stdout
        };
        let private = openssl(&["genrsa", "2048"], None);
        let modulus =
            String::from_utf8(openssl(&["rsa", "-noout", "-modulus"], Some(&private))).unwrap();
        let hex = modulus.trim().trim_start_matches("Modulus=");
        let n: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let public = openssl(&["rsa", "-pubout"], Some(&private));
        TestKey {
            kid: kid.to_owned(),
            algorithm: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_pem(&private).expect("an RSA PEM"),
            jwk: json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": b64(&n), "e": "AQAB",
            }),
            public_pem: Some(String::from_utf8(public).unwrap()),
        }
    }

    /// `claims` signed with this key, the header naming `kid` (or another kid, or none).
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(claims, Some(&self.kid))
    }

    pub fn sign_as(&self, claims: &Value, kid: Option<&str>) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

struct Published {
    keys: Vec<TestKey>,
    down: bool,
    /// What `<issuer>/actions-token` hands out, as GitHub Actions' OIDC endpoint does, to a
    /// request bearing [`ACTIONS_REQUEST_TOKEN`].
    actions_token: Option<String>,
    /// The person whose browser signs in at `<issuer>/authorize` (their claims), if anyone.
    signed_in: Option<Value>,
    /// Authorization codes handed out and not yet redeemed.
    codes: HashMap<String, CodeGrant>,
}

/// What an authorization code was issued for (RFC 6749 4.1, RFC 7636).
struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
}

/// Reads one HTTP request: its head and its body (by Content-Length).
async fn read_request(tcp: &mut tokio::net::TcpStream) -> Option<(String, String)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buffer.len() < end + 4 + length {
                let n = tcp.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buffer.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).into_owned();
            return Some((head, body));
        }
        let n = tcp.read(&mut chunk).await.ok()?;
        if n == 0 || buffer.len() > 1 << 20 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

fn form(text: &str) -> HashMap<String, String> {
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// application/x-www-form-urlencoded decoding.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The provider's answer: status, a redirect's location, JSON body.
fn answer(
    published: &mut Published,
    fetches: &AtomicUsize,
    iss: &str,
    head: &str,
    body: &str,
) -> (u16, Option<String>, Value) {
    let request_line = head.lines().next().unwrap_or_default();
    let target = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    if published.down {
        return (503, None, json!({"error": "down"}));
    }
    if path.ends_with("/.well-known/openid-configuration") {
        return (
            200,
            None,
            json!({
                "issuer": iss,
                "jwks_uri": format!("{iss}/jwks"),
                "authorization_endpoint": format!("{iss}/authorize"),
                "token_endpoint": format!("{iss}/token"),
                "code_challenge_methods_supported": ["S256"],
            }),
        );
    }
    if path.ends_with("/actions-token") {
        let authorized = head.lines().any(|l| {
            l.to_ascii_lowercase() == format!("authorization: bearer {ACTIONS_REQUEST_TOKEN}")
        });
        return match (
            &published.actions_token,
            authorized,
            query.contains("audience="),
        ) {
            (Some(token), true, true) => (200, None, json!({ "value": token })),
            _ => (
                401,
                None,
                json!({"message": "bad request token or audience"}),
            ),
        };
    }
    if path.ends_with("/jwks") {
        fetches.fetch_add(1, Ordering::AcqRel);
        let keys: Vec<&Value> = published.keys.iter().map(|k| &k.jwk).collect();
        return (200, None, json!({ "keys": keys }));
    }
    if path.ends_with("/authorize") {
        let q = form(query);
        let Some(_) = &published.signed_in else {
            return (401, None, json!({"error": "nobody signs in"}));
        };
        let ok = q.get("response_type").map(String::as_str) == Some("code")
            && q.get("code_challenge_method").map(String::as_str) == Some("S256")
            && q.contains_key("state")
            && q.contains_key("code_challenge");
        let (Some(client_id), Some(redirect_uri)) = (q.get("client_id"), q.get("redirect_uri"))
        else {
            return (400, None, json!({"error": "invalid_request"}));
        };
        if !ok {
            return (400, None, json!({"error": "invalid_request"}));
        }
        let code = uuid::Uuid::new_v4().simple().to_string();
        published.codes.insert(
            code.clone(),
            CodeGrant {
                client_id: client_id.clone(),
                redirect_uri: redirect_uri.clone(),
                challenge: q["code_challenge"].clone(),
                nonce: q.get("nonce").cloned(),
            },
        );
        let location = format!("{redirect_uri}?code={code}&state={}", encode(&q["state"]));
        return (302, Some(location), json!({}));
    }
    if path.ends_with("/token") && request_line.starts_with("POST") {
        let f = form(body);
        let Some(grant) = f.get("code").and_then(|c| published.codes.remove(c)) else {
            return (400, None, json!({"error": "invalid_grant"}));
        };
        let verifier = f.get("code_verifier").cloned().unwrap_or_default();
        let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
        if b64(digest.as_ref()) != grant.challenge
            || f.get("redirect_uri") != Some(&grant.redirect_uri)
            || f.get("client_id") != Some(&grant.client_id)
        {
            return (400, None, json!({"error": "invalid_grant"}));
        }
        let mut extra = published.signed_in.clone().unwrap_or(json!({}));
        if let Some(nonce) = grant.nonce {
            extra["nonce"] = json!(nonce);
        }
        let claims = claims_for(iss, &grant.client_id, 300, extra);
        let id_token = published.keys[0].sign(&claims);
        return (
            200,
            None,
            json!({"id_token": id_token, "access_token": "opaque", "token_type": "Bearer", "expires_in": 300}),
        );
    }
    (404, None, json!({}))
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Claims of `iss` for `aud`, valid from now for `ttl` seconds, with `extra`.
fn claims_for(iss: &str, aud: &str, ttl: i64, extra: Value) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut claims: HashMap<String, Value> = HashMap::from([
        ("iss".into(), json!(iss)),
        ("aud".into(), json!(aud)),
        ("iat".into(), json!(now)),
        ("nbf".into(), json!(now)),
        ("exp".into(), json!(now + ttl)),
        ("jti".into(), json!(uuid::Uuid::new_v4().to_string())),
    ]);
    if let Value::Object(extra) = extra {
        claims.extend(extra);
    }
    json!(claims)
}

/// The bearer token the Actions-style endpoint requires.
pub const ACTIONS_REQUEST_TOKEN: &str = "gha-request-token";

/// The provider: its URL is its issuer.
pub struct TestIdp {
    pub issuer: String,
    published: Arc<Mutex<Published>>,
    jwks_fetches: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl TestIdp {
    /// Starts serving `keys` at `http://127.0.0.1:<port>/<path>`.
    pub async fn start(path: &str, keys: Vec<TestKey>) -> TestIdp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let issuer = format!("http://127.0.0.1:{port}/{path}");
        let published = Arc::new(Mutex::new(Published {
            keys,
            down: false,
            actions_token: None,
            signed_in: None,
            codes: HashMap::new(),
        }));
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (served, fetches, stopped, iss) = (
            published.clone(),
            jwks_fetches.clone(),
            stop.clone(),
            issuer.clone(),
        );
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                if stopped.load(Ordering::Acquire) {
                    return;
                }
                let (served, fetches, iss) = (served.clone(), fetches.clone(), iss.clone());
                tokio::spawn(async move {
                    let Some((head, body)) = read_request(&mut tcp).await else {
                        return;
                    };
                    let (status, location, body) = {
                        let mut published = served.lock().unwrap();
                        answer(&mut published, &fetches, &iss, &head, &body)
                    };
                    let body = body.to_string();
                    let location = location
                        .map(|l| format!("Location: {l}\r\n"))
                        .unwrap_or_default();
                    let head = format!(
                        "HTTP/1.1 {status} X\r\n{location}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tcp.write_all(head.as_bytes()).await;
                    let _ = tcp.write_all(body.as_bytes()).await;
                });
            }
        });
        TestIdp {
            issuer,
            published,
            jwks_fetches,
            stop,
        }
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::Acquire)
    }

    /// Publishes `keys` instead of the ones published so far.
    pub fn rotate(&self, keys: Vec<TestKey>) {
        self.published.lock().unwrap().keys = keys;
    }

    /// Hands out `token` at `<issuer>/actions-token`, as GitHub Actions' OIDC endpoint does.
    pub fn set_actions_token(&self, token: &str) {
        self.published.lock().unwrap().actions_token = Some(token.to_owned());
    }

    /// Answers 503 to everything (or serves again).
    pub fn set_down(&self, down: bool) {
        self.published.lock().unwrap().down = down;
    }

    /// Claims with this issuer, `aud`, and a validity window around now (`exp` in `ttl` s).
    pub fn claims(&self, aud: &str, ttl: i64, extra: Value) -> Value {
        claims_for(&self.issuer, aud, ttl, extra)
    }

    /// The person whose browser signs in at `<issuer>/authorize` from now on: the claims of
    /// their ID tokens (`sub`, `groups`...).
    pub fn sign_in_as(&self, claims: Value) {
        self.published.lock().unwrap().signed_in = Some(claims);
    }
}
