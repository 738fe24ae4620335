//! The hub's rollout signature (ed25519, ADR 0019): key files, signing a [`Rollout`] into a
//! [`SignedRollout`], and the box's verification against its configured hub key. No I/O
//! beyond reading and writing the key files.
//!
//! Key files (written by `casegraph rollout keygen --out DIR`):
//! - `hub.key`: the secret key, 64 hex digits (the 32-byte ed25519 seed) and a line end,
//!   mode 0600. Whoever holds it can make every box of the fleet run a workflow.
//! - `hub.pub`: the public key, 64 hex digits and a line end; it goes into each box's
//!   `fleet.hub_key`.
//!
//! The signature covers exactly the payload's bytes (the [`Rollout`]'s JSON), so a box
//! verifies before it parses anything the hub sent.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::Digest as _;

use super::wire::{Rollout, SignedRollout};

/// File name of the secret key in the keygen directory.
pub const SECRET_FILE: &str = "hub.key";
/// File name of the public key in the keygen directory.
pub const PUBLIC_FILE: &str = "hub.pub";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{what} must be 64 hex digits (32 bytes), got {len} character(s)")]
    KeyFormat { what: &'static str, len: usize },
    #[error("{what} is not a valid ed25519 key")]
    KeyInvalid { what: &'static str },
    #[error("reading the key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing the key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; a hub key is never overwritten (move it away first)")]
    Exists { path: PathBuf },
    #[error("no randomness for a new key: {0}")]
    Random(String),
    #[error("the rollout's {field} is not valid base64: {message}")]
    Base64 {
        field: &'static str,
        message: String,
    },
    #[error("the rollout's signature is {len} bytes, an ed25519 signature is 64")]
    SignatureLength { len: usize },
    #[error("the rollout was signed by key {key_id}, not by this box's hub key {expected}")]
    WrongKey { key_id: String, expected: String },
    #[error("the rollout's signature does not verify with the hub key {key_id}")]
    BadSignature { key_id: String },
    #[error("the signed rollout is not a rollout: {0}")]
    Payload(String),
}

/// The hub's secret key.
pub struct SecretKey(SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.public().key_id())
    }
}

/// The hub's public key, as a box holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

fn from_hex(what: &'static str, text: &str) -> Result<[u8; 32], Error> {
    let text = text.trim();
    let bad = || Error::KeyFormat {
        what,
        len: text.chars().count(),
    };
    let bytes = hex::decode(text).map_err(|_| bad())?;
    bytes.try_into().map_err(|_| bad())
}

impl SecretKey {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Result<SecretKey, Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| Error::Random(e.to_string()))?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    pub fn from_hex(text: &str) -> Result<SecretKey, Error> {
        Ok(SecretKey(SigningKey::from_bytes(&from_hex(
            "the hub's secret key",
            text,
        )?)))
    }

    /// Reads a `hub.key` file.
    pub fn read(path: &Path) -> Result<SecretKey, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        SecretKey::from_hex(&text)
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `rollout`: its JSON is the payload, the signature covers exactly those bytes.
    pub fn sign(&self, rollout: &Rollout) -> SignedRollout {
        let payload = serde_json::to_vec(rollout).unwrap_or_default();
        let signature = self.0.sign(&payload);
        SignedRollout {
            key_id: self.public().key_id(),
            payload: B64.encode(&payload),
            signature: B64.encode(signature.to_bytes()),
        }
    }

    /// Writes `hub.key` (0600) and `hub.pub` into `dir` (created if missing); refuses to
    /// replace an existing key.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf), Error> {
        let secret = dir.join(SECRET_FILE);
        let public = dir.join(PUBLIC_FILE);
        for path in [&secret, &public] {
            if path.exists() {
                return Err(Error::Exists { path: path.clone() });
            }
        }
        let write = |path: &Path, result: std::io::Result<()>| {
            result.map_err(|source| Error::Write {
                path: path.to_path_buf(),
                source,
            })
        };
        write(dir, std::fs::create_dir_all(dir))?;
        write(
            &secret,
            crate::auth::write_secret(&secret, &hex::encode(self.0.to_bytes())),
        )?;
        write(
            &public,
            std::fs::write(&public, format!("{}\n", self.public().to_hex())),
        )?;
        Ok((secret, public))
    }
}

impl PublicKey {
    /// The 64 hex digits of `fleet.hub_key` or `hub.pub`.
    pub fn from_hex(text: &str) -> Result<PublicKey, Error> {
        let what = "the hub's public key";
        VerifyingKey::from_bytes(&from_hex(what, text)?)
            .map(PublicKey)
            .map_err(|_| Error::KeyInvalid { what })
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// First 16 hex digits of the key's sha256: names the key in reports and logs.
    pub fn key_id(&self) -> String {
        hex::encode(sha2::Sha256::digest(self.0.as_bytes()))[..16].to_string()
    }

    /// Checks the signature over the payload's bytes, then parses the payload. Nothing of
    /// the payload is looked at before the signature verified.
    pub fn verify(&self, signed: &SignedRollout) -> Result<Rollout, Error> {
        let expected = self.key_id();
        if signed.key_id != expected {
            return Err(Error::WrongKey {
                key_id: signed.key_id.clone(),
                expected,
            });
        }
        let decode = |field: &'static str, text: &str| {
            B64.decode(text).map_err(|e| Error::Base64 {
                field,
                message: e.to_string(),
            })
        };
        let payload = decode("payload", &signed.payload)?;
        let signature = decode("signature", &signed.signature)?;
        let signature: [u8; 64] =
            signature
                .as_slice()
                .try_into()
                .map_err(|_| Error::SignatureLength {
                    len: signature.len(),
                })?;
        self.0
            .verify(&payload, &Signature::from_bytes(&signature))
            .map_err(|_| Error::BadSignature {
                key_id: expected.clone(),
            })?;
        serde_json::from_slice(&payload).map_err(|e| Error::Payload(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::fleet::wire::Bundle;

    fn rollout() -> Rollout {
        Rollout {
            id: "r-1".into(),
            created_at: "2026-12-06T12:00:00Z".parse().expect("time"),
            branches: vec!["berlin".into()],
            bundle: Bundle::Workflow {
                id: "request_refund".into(),
                files: BTreeMap::from([("workflow.yaml".into(), "id: request_refund\n".into())]),
            },
        }
    }

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_hex(&hex::encode([seed; 32])).expect("key")
    }

    #[test]
    fn a_signed_rollout_verifies_with_the_hub_key_only() {
        let hub = key(1);
        let signed = hub.sign(&rollout());
        assert_eq!(hub.public().verify(&signed).expect("verifies"), rollout());
        // Another key: named as the wrong key, whatever key id the message claims.
        let other = key(2).public();
        assert!(matches!(other.verify(&signed), Err(Error::WrongKey { .. })));
        let mut claimed = signed.clone();
        claimed.key_id = other.key_id();
        assert!(matches!(
            other.verify(&claimed),
            Err(Error::BadSignature { .. })
        ));
    }

    #[test]
    fn altered_or_malformed_parts_are_typed_errors() {
        let hub = key(1);
        let public = hub.public();
        let signed = hub.sign(&rollout());

        let mut altered = rollout();
        altered.branches.push("paris".into());
        let mut payload = signed.clone();
        payload.payload = hub.sign(&altered).payload;
        assert!(matches!(
            public.verify(&payload),
            Err(Error::BadSignature { .. })
        ));

        let mut signature = signed.clone();
        let mut bytes = B64.decode(&signature.signature).expect("b64");
        bytes[0] ^= 1;
        signature.signature = B64.encode(bytes);
        assert!(matches!(
            public.verify(&signature),
            Err(Error::BadSignature { .. })
        ));

        let mut short = signed.clone();
        short.signature = B64.encode([0u8; 10]);
        assert!(matches!(
            public.verify(&short),
            Err(Error::SignatureLength { len: 10 })
        ));

        let mut garbage = signed.clone();
        garbage.payload = "not base64!".into();
        assert!(matches!(
            public.verify(&garbage),
            Err(Error::Base64 {
                field: "payload",
                ..
            })
        ));

        // A well-signed payload that is not a rollout is refused after verification.
        let raw = b"{\"hello\":1}";
        let not_a_rollout = SignedRollout {
            key_id: public.key_id(),
            payload: B64.encode(raw),
            signature: B64.encode(hub.0.sign(raw).to_bytes()),
        };
        assert!(matches!(
            public.verify(&not_a_rollout),
            Err(Error::Payload(_))
        ));
    }

    #[test]
    fn key_files_are_written_once_and_read_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tmp");
        let hub = SecretKey::generate().expect("key");
        let (secret, public) = hub.write(dir.path()).expect("written");
        let mode = std::fs::metadata(&secret)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let read = SecretKey::read(&secret).expect("reads");
        assert_eq!(read.public(), hub.public());
        let text = std::fs::read_to_string(&public).expect("pub");
        assert_eq!(PublicKey::from_hex(&text).expect("parses"), hub.public());
        assert_eq!(text.trim().len(), 64);
        assert!(matches!(hub.write(dir.path()), Err(Error::Exists { .. })));
        assert!(matches!(
            PublicKey::from_hex("abcd"),
            Err(Error::KeyFormat { len: 4, .. })
        ));
    }

    proptest! {
        #[test]
        fn any_change_of_the_payload_bytes_fails(index in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let hub = key(7);
            let signed = hub.sign(&rollout());
            let mut bytes = B64.decode(&signed.payload).expect("b64");
            let i = index.index(bytes.len());
            bytes[i] ^= flip;
            let mut altered = signed.clone();
            altered.payload = B64.encode(&bytes);
            let refused = matches!(hub.public().verify(&altered), Err(Error::BadSignature { .. }));
            prop_assert!(refused, "byte {} changed and the rollout still verified", i);
        }
    }
}
