//! The Ed25519 key that signs gateway tokens, stored as PKCS#8 PEM.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ring::signature::{Ed25519KeyPair, KeyPair};

const PEM_TAG: &str = "PRIVATE KEY";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read signing key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write signing key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signing key {path} is not an Ed25519 PKCS#8 PEM key ({reason})")]
    Malformed { path: PathBuf, reason: String },
    #[error("key generation failed")]
    Generate,
}

/// An Ed25519 signing key with its public half.
pub struct SigningKey {
    pkcs8_der: Vec<u8>,
    public: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key from the system's secure random source.
    pub fn generate() -> Result<SigningKey, KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let der = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Generate)?;
        SigningKey::from_pkcs8_der(der.as_ref().to_vec()).map_err(|_| KeyError::Generate)
    }

    fn from_pkcs8_der(pkcs8_der: Vec<u8>) -> Result<SigningKey, ring::error::KeyRejected> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8_der)?;
        let public = pair.public_key().as_ref().to_vec();
        Ok(SigningKey { pkcs8_der, public })
    }

    /// Reads a PKCS#8 PEM key (as written by [`SigningKey::write_new`] or `openssl genpkey
    /// -algorithm ed25519`).
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let text = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let malformed = |reason: String| KeyError::Malformed {
            path: path.to_owned(),
            reason,
        };
        let block = pem::parse(text).map_err(|e| malformed(e.to_string()))?;
        if block.tag() != PEM_TAG {
            return Err(malformed(format!(
                "PEM block is {:?}, expected {PEM_TAG:?}",
                block.tag()
            )));
        }
        SigningKey::from_pkcs8_der(block.into_contents()).map_err(|e| malformed(e.to_string()))
    }

    /// Writes the key as PEM to a file that did not exist, readable by its owner only.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        let write_err = |source| KeyError::Write {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(write_err)?;
        file.write_all(self.to_pem().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(write_err)
    }

    fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new(PEM_TAG, self.pkcs8_der.clone()))
    }

    pub(crate) fn encoding_key(&self) -> jsonwebtoken::EncodingKey {
        jsonwebtoken::EncodingKey::from_ed_der(&self.pkcs8_der)
    }

    pub(crate) fn decoding_key(&self) -> jsonwebtoken::DecodingKey {
        jsonwebtoken::DecodingKey::from_ed_der(&self.public)
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// An Ed25519 signature of `message` (audit checkpoints).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(&self.pkcs8_der)
            .map(|pair| pair.sign(message).as_ref().to_vec())
            .unwrap_or_default()
    }
}

/// Whether `signature` is `public_key`'s Ed25519 signature of `message`.
pub fn verify_signature(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn written_key_is_owner_only_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let key = SigningKey::generate().unwrap();
        key.write_new(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = SigningKey::load(&path).unwrap();
        assert_eq!(loaded.public, key.public);
    }

    #[test]
    fn existing_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, "keep me").unwrap();
        assert!(SigningKey::generate().unwrap().write_new(&path).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    }

    #[test]
    fn non_key_pem_is_reported_as_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(
            &path,
            pem::encode(&pem::Pem::new("CERTIFICATE", vec![1, 2])),
        )
        .unwrap();
        let err = SigningKey::load(&path).unwrap_err().to_string();
        assert!(err.contains("CERTIFICATE"), "{err}");
    }
}
