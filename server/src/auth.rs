//! Passwords (argon2) and session tokens (HMAC-SHA256 signed, with an expiry).
//!
//! A token is `base64url(payload) "." base64url(hmac(secret, payload))`, the payload being
//! `{"sub": user id, "name": username, "exp": unix seconds}`.

use std::path::Path;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use persona_chat_protocol::User;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::clock::unix_now;

pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password with a fresh salt")
        .to_string()
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        .unwrap_or(false)
}

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    name: String,
    exp: i64,
}

/// Signs and checks tokens with the server's secret.
pub struct Tokens {
    secret: Vec<u8>,
    ttl_secs: i64,
}

impl Tokens {
    pub fn new(secret: Vec<u8>, ttl_secs: i64) -> Self {
        Tokens { secret, ttl_secs }
    }

    /// The secret from `PERSONA_SECRET` if set, else the one kept in the data dir, made at
    /// first start.
    pub fn load_secret(env_secret: Option<&str>, data_dir: &Path) -> std::io::Result<Vec<u8>> {
        if let Some(s) = env_secret.filter(|s| !s.is_empty()) {
            return Ok(s.as_bytes().to_vec());
        }
        let path = data_dir.join("secret.key");
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() >= 32 => Ok(bytes),
            _ => {
                std::fs::create_dir_all(data_dir)?;
                let mut bytes = vec![0u8; 32];
                rand::thread_rng().fill_bytes(&mut bytes);
                write_private(&path, &bytes)?;
                Ok(bytes)
            }
        }
    }

    pub fn issue(&self, user: &User) -> String {
        let claims = Claims {
            sub: user.id.clone(),
            name: user.username.clone(),
            exp: unix_now() + self.ttl_secs,
        };
        let payload = B64.encode(serde_json::to_vec(&claims).expect("claims serialize"));
        let sig = B64.encode(self.mac(payload.as_bytes()));
        format!("{payload}.{sig}")
    }

    /// The user a token names, if it is signed by this server and not expired.
    pub fn verify(&self, token: &str) -> Option<User> {
        let (payload, sig) = token.split_once('.')?;
        let sig = B64.decode(sig).ok()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(payload.as_bytes());
        mac.verify_slice(&sig).ok()?; // constant-time comparison
        let claims: Claims = serde_json::from_slice(&B64.decode(payload).ok()?).ok()?;
        (claims.exp > unix_now()).then_some(User { id: claims.sub, username: claims.name })
    }

    fn mac(&self, data: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User { id: "u1".into(), username: "ada".into() }
    }

    #[test]
    fn issued_tokens_verify_and_forged_ones_do_not() {
        let tokens = Tokens::new(b"0123456789abcdef0123456789abcdef".to_vec(), 60);
        let t = tokens.issue(&user());
        assert_eq!(tokens.verify(&t), Some(user()));
        let other = Tokens::new(b"another secret, another server!!".to_vec(), 60);
        assert_eq!(other.verify(&t), None, "signed by another secret");
        let (payload, sig) = t.split_once('.').unwrap();
        let forged_payload = B64.encode(br#"{"sub":"admin","name":"admin","exp":9999999999}"#);
        assert_eq!(tokens.verify(&format!("{forged_payload}.{sig}")), None);
        assert_eq!(tokens.verify(payload), None);
        assert_eq!(tokens.verify("garbage"), None);
    }

    #[test]
    fn expired_tokens_are_refused() {
        let tokens = Tokens::new(b"0123456789abcdef0123456789abcdef".to_vec(), -1);
        assert_eq!(tokens.verify(&tokens.issue(&user())), None);
    }

    #[test]
    fn passwords_verify() {
        let h = hash_password("correct horse");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
    }
}
