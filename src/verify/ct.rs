//! Constant-time comparison of secrets.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Compares two secrets in time independent of where they differ and of their lengths (both are
/// hashed to 32 bytes first).
pub fn eq(a: &[u8], b: &[u8]) -> bool {
    let (ha, hb) = (Sha256::digest(a), Sha256::digest(b));
    ha.ct_eq(&hb).into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn equal_and_unequal() {
        assert!(super::eq(b"s3cret", b"s3cret"));
        assert!(!super::eq(b"s3cret", b"s3cres"));
        assert!(!super::eq(b"s3cret", b"s3cret "));
        assert!(!super::eq(b"", b"x"));
    }
}
