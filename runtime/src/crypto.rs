//! Secrets at rest: ChaCha20-Poly1305 with a per-installation key file in the data dir.
//!
//! The key file (`secrets.key`, mode 0600) is created on first start. Each secret is sealed
//! with a fresh random nonce and its `tenant/name` as associated data, so a ciphertext copied
//! to another tenant's row does not decrypt.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use std::path::Path;

pub struct SecretBox {
    cipher: ChaCha20Poly1305,
}

impl SecretBox {
    /// Load the key at `path`, creating it (0600) if absent.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        let key = match std::fs::read(path) {
            Ok(bytes) if bytes.len() == 32 => bytes,
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} is not a 32-byte key",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = vec![0u8; 32];
                rand::rng().fill_bytes(&mut key);
                crate::write_private_file(path, &key)?;
                key
            }
            Err(e) => return Err(e),
        };
        Ok(SecretBox {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        })
    }

    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
            .map_err(|e| e.to_string())?;
        Ok((nonce.to_vec(), ct))
    }

    pub fn open(&self, nonce: &[u8], ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>, String> {
        if nonce.len() != 12 {
            return Err("corrupt nonce".into());
        }
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| "secret could not be decrypted (wrong key or tampered)".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let b = SecretBox::load_or_create(&dir.path().join("k")).unwrap();
        let (n, c) = b.seal(b"hunter2", b"acme/db").unwrap();
        assert_eq!(b.open(&n, &c, b"acme/db").unwrap(), b"hunter2");
        assert!(b.open(&n, &c, b"evil/db").is_err());
        let again = SecretBox::load_or_create(&dir.path().join("k")).unwrap();
        assert_eq!(again.open(&n, &c, b"acme/db").unwrap(), b"hunter2");
    }
}
