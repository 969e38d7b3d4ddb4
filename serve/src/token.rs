//! API tokens: generated at random, stored only as their SHA-256.
//!
//! A token is 32 random bytes from the operating system, written as
//! `dac_` and 64 hex digits. With that much entropy a plain SHA-256 is
//! enough to store it (no salt or slow hash is needed: there is nothing to
//! guess), and the tenants file never holds a usable secret. Presented
//! tokens are hashed and compared with every configured hash in constant
//! time, so response timing says nothing about how close a guess was.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A fresh token and the hash to put in the tenants file.
pub struct NewToken {
    pub token: String,
    pub sha256_hex: String,
}

/// Generates a token from the operating system's random source.
pub fn generate() -> Result<NewToken, getrandom::Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)?;
    let token = format!("dac_{}", hex::encode(secret));
    let sha256_hex = hex::encode(hash(&token));
    Ok(NewToken { token, sha256_hex })
}

/// The SHA-256 of a token as presented.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `presented` hashes to `stored`, in time independent of where
/// they differ.
pub fn matches(presented: &[u8; 32], stored: &[u8; 32]) -> bool {
    presented[..].ct_eq(&stored[..]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_matches_its_hash_and_nothing_else() {
        let new = generate().unwrap();
        assert!(new.token.starts_with("dac_") && new.token.len() == 68);
        let stored: [u8; 32] = hash(&new.token);
        assert_eq!(hex::encode(stored), new.sha256_hex);
        assert!(matches(&hash(&new.token), &stored));
        assert!(!matches(&hash(&format!("{}x", new.token)), &stored));
        assert_ne!(generate().unwrap().token, new.token);
    }
}
