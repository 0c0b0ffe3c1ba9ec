//! A local identity provider for tests: serves OIDC discovery and a JWKS over real HTTP on a
//! free port, signs tokens with the keys it publishes (ES256 generated with ring, RS256 with
//! the openssl command), counts JWKS fetches, rotates keys and goes down on request. What
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
                    let mut request = vec![0; 4096];
                    let n = tcp.read(&mut request).await.unwrap_or(0);
                    let request = String::from_utf8_lossy(&request[..n]);
                    let target = request.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let (status, body) = {
                        let published = served.lock().unwrap();
                        if published.down {
                            (503, json!({"error": "down"}))
                        } else if target.ends_with("/.well-known/openid-configuration") {
                            (
                                200,
                                json!({"issuer": iss, "jwks_uri": format!("{iss}/jwks")}),
                            )
                        } else if target.contains("/actions-token?") {
                            let authorized = request.lines().any(|l| {
                                l.to_ascii_lowercase()
                                    == format!("authorization: bearer {ACTIONS_REQUEST_TOKEN}")
                            });
                            match (
                                &published.actions_token,
                                authorized,
                                target.contains("audience="),
                            ) {
                                (Some(token), true, true) => (200, json!({ "value": token })),
                                _ => (401, json!({"message": "bad request token or audience"})),
                            }
                        } else if target.ends_with("/jwks") {
                            fetches.fetch_add(1, Ordering::AcqRel);
                            let keys: Vec<&Value> = published.keys.iter().map(|k| &k.jwk).collect();
                            (200, json!({ "keys": keys }))
                        } else {
                            (404, json!({}))
                        }
                    };
                    let body = body.to_string();
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
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
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut claims: HashMap<String, Value> = HashMap::from([
            ("iss".into(), json!(self.issuer)),
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
}
