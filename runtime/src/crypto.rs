//! Secrets at rest: ChaCha20-Poly1305 under a key the operator can keep outside the data
//! directory, identified by a key id so it can be rotated.
//!
//! Each secret is sealed with a fresh random nonce and its `tenant/name` as associated data,
//! so a ciphertext copied to another tenant's row does not decrypt. Its row records the id of
//! the key that sealed it (the first 16 hex digits of the key's SHA-256: the id reveals
//! nothing about the key, and tells which configured key opens a row).
//!
//! Where the key comes from, first match wins: the environment variable
//! `SOTP_SECRETS_KEY` (64 hex digits), `runtime.secrets.key_file`, or `secrets.key` in the
//! data dir (created on first start, 0600). A backup of the data dir then holds no key when
//! the operator keeps it elsewhere. Rotation: configure the new key and list the old one in
//! `runtime.secrets.previous_key_files`; at start every secret sealed with an old key is
//! sealed again with the new one (`StateStore::reseal_secrets`), after which the old key can
//! go.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The environment variable that can carry the key itself.
pub const KEY_ENV: &str = "SOTP_SECRETS_KEY";

/// Where the secrets key comes from (`[runtime.secrets]`).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsConfig {
    /// A 32-byte key file (raw bytes, or 64 hex digits). Unset: `secrets.key` in the data
    /// dir, created on first start. `SOTP_SECRETS_KEY` (64 hex digits) overrides both.
    pub key_file: Option<PathBuf>,
    /// Keys secrets may still be sealed with: at start they are sealed again with the
    /// current key.
    pub previous_key_files: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0} is not a 32-byte key (raw, or 64 hex digits)")]
    Malformed(String),
}

struct SealingKey {
    id: String,
    cipher: ChaCha20Poly1305,
}

impl SealingKey {
    fn new(bytes: &[u8; 32]) -> SealingKey {
        SealingKey {
            id: hex::encode(&Sha256::digest(bytes)[..8]),
            cipher: ChaCha20Poly1305::new(Key::from_slice(bytes)),
        }
    }
}

/// The current key, which seals, and older ones, which only open.
pub struct SecretBox {
    current: SealingKey,
    previous: HashMap<String, SealingKey>,
}

/// A sealed secret.
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub key_id: String,
}

impl SecretBox {
    /// The keyring `config` describes; the default key file is `default_key` (created 0600
    /// in `data` if absent).
    pub fn load(
        config: &SecretsConfig,
        data: &crate::datadir::DataDir,
    ) -> Result<SecretBox, KeyError> {
        let current = match std::env::var(KEY_ENV) {
            Ok(text) if !text.trim().is_empty() => {
                parse_key(text.trim().as_bytes()).ok_or(KeyError::Malformed(KEY_ENV.into()))?
            }
            _ => match &config.key_file {
                Some(path) => read_key(path)?,
                None => data_dir_key(data)?,
            },
        };
        let mut previous = HashMap::new();
        for path in &config.previous_key_files {
            let key = SealingKey::new(&read_key(path)?);
            previous.insert(key.id.clone(), key);
        }
        Ok(SecretBox {
            current: SealingKey::new(&current),
            previous,
        })
    }

    /// A keyring of one key (tests, benchmarks).
    pub fn from_key(key: [u8; 32]) -> SecretBox {
        SecretBox {
            current: SealingKey::new(&key),
            previous: HashMap::new(),
        }
    }

    pub fn current_key_id(&self) -> &str {
        &self.current.id
    }

    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Sealed, String> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .current
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
            .map_err(|e| e.to_string())?;
        Ok(Sealed {
            nonce: nonce.to_vec(),
            ciphertext: ct,
            key_id: self.current.id.clone(),
        })
    }

    /// Open a secret sealed with the key `key_id` (`None`: sealed before key ids, by the
    /// current key or a previous one).
    pub fn open(
        &self,
        nonce: &[u8],
        ciphertext: &[u8],
        aad: &[u8],
        key_id: Option<&str>,
    ) -> Result<Vec<u8>, String> {
        if nonce.len() != 12 {
            return Err("corrupt nonce".into());
        }
        let candidates: Vec<&SealingKey> = match key_id {
            Some(id) if id == self.current.id => vec![&self.current],
            Some(id) => match self.previous.get(id) {
                Some(k) => vec![k],
                None => {
                    return Err(format!(
                        "sealed with key {id}, which is not configured (runtime.secrets.previous_key_files)"
                    ));
                }
            },
            None => std::iter::once(&self.current)
                .chain(self.previous.values())
                .collect(),
        };
        for key in candidates {
            let payload = Payload {
                msg: ciphertext,
                aad,
            };
            if let Ok(plain) = key.cipher.decrypt(Nonce::from_slice(nonce), payload) {
                return Ok(plain);
            }
        }
        Err("secret could not be decrypted (wrong key or tampered)".to_string())
    }
}

fn parse_key(text: &[u8]) -> Option<[u8; 32]> {
    if text.len() == 32 {
        return text.try_into().ok();
    }
    let trimmed = std::str::from_utf8(text).ok()?.trim();
    let bytes = hex::decode(trimmed).ok()?;
    bytes.try_into().ok()
}

fn read_key(path: &Path) -> Result<[u8; 32], KeyError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| KeyError::Io(shown.clone(), e))?;
    parse_key(&bytes).ok_or(KeyError::Malformed(shown))
}

/// `secrets.key` in the data dir, created on first start.
fn data_dir_key(data: &crate::datadir::DataDir) -> Result<[u8; 32], KeyError> {
    let name = "secrets.key";
    let shown = data.path().join(name).display().to_string();
    let io = |e| KeyError::Io(shown.clone(), e);
    match crate::datadir::read_optional(data.dir(), name).map_err(io)? {
        Some(bytes) => parse_key(&bytes).ok_or(KeyError::Malformed(shown.clone())),
        None => {
            let mut key = [0u8; 32];
            rand::rng().fill_bytes(&mut key);
            crate::datadir::write_atomic(data.dir(), name, &key, crate::datadir::FILE_MODE)
                .map_err(io)?;
            Ok(key)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_name_and_key() {
        let a = SecretBox::from_key([1; 32]);
        let s = a.seal(b"hunter2", b"acme/db").unwrap();
        assert_eq!(s.key_id, a.current_key_id());
        assert_eq!(
            a.open(&s.nonce, &s.ciphertext, b"acme/db", Some(&s.key_id))
                .unwrap(),
            b"hunter2"
        );
        assert!(
            a.open(&s.nonce, &s.ciphertext, b"evil/db", Some(&s.key_id))
                .is_err()
        );
        // Rotated: the new key opens nothing of the old one's by itself...
        let b = SecretBox::from_key([2; 32]);
        let err = b
            .open(&s.nonce, &s.ciphertext, b"acme/db", Some(&s.key_id))
            .unwrap_err();
        assert!(err.contains("not configured"), "{err}");
        // ... but does with the old key listed as previous.
        let mut rotated = SecretBox::from_key([2; 32]);
        let old = SealingKey::new(&[1; 32]);
        rotated.previous.insert(old.id.clone(), old);
        assert_eq!(
            rotated
                .open(&s.nonce, &s.ciphertext, b"acme/db", Some(&s.key_id))
                .unwrap(),
            b"hunter2"
        );
        assert_eq!(
            rotated
                .open(&s.nonce, &s.ciphertext, b"acme/db", None)
                .unwrap(),
            b"hunter2",
            "rows from before key ids are tried with every key"
        );
    }

    #[test]
    fn keys_come_from_a_file_outside_the_data_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let data = crate::datadir::DataDir::open(&tmp.path().join("data")).unwrap();
        let key_file = tmp.path().join("key.hex");
        std::fs::write(&key_file, format!("{}\n", hex::encode([7u8; 32]))).unwrap();
        let config = SecretsConfig {
            key_file: Some(key_file),
            previous_key_files: vec![],
        };
        let b = SecretBox::load(&config, &data).unwrap();
        assert_eq!(
            b.current_key_id(),
            SecretBox::from_key([7; 32]).current_key_id()
        );
        assert!(!tmp.path().join("data/secrets.key").exists());
        // Without a file configured, one is created in the data dir, 0600.
        let b = SecretBox::load(&SecretsConfig::default(), &data).unwrap();
        let path = tmp.path().join("data/secrets.key");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = SecretBox::load(&SecretsConfig::default(), &data).unwrap();
        assert_eq!(b.current_key_id(), again.current_key_id());
        std::fs::write(tmp.path().join("short"), b"abc").unwrap();
        let bad = SecretsConfig {
            key_file: Some(tmp.path().join("short")),
            previous_key_files: vec![],
        };
        assert!(matches!(
            SecretBox::load(&bad, &data),
            Err(KeyError::Malformed(_))
        ));
    }
}
