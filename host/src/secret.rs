//! Secrets the gateway hands out (session ids, CSRF tokens, collection secrets of requests for
//! access) and comparing what comes back with them.

use ring::rand::SecureRandom as _;

/// 256 random bits from the system's source, hex.
pub fn random() -> String {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    crate::audit::record::hex(&bytes)
}

/// Equal strings, compared in time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_differ_and_compare_equal_only_to_themselves() {
        let (a, b) = (super::random(), super::random());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(super::same(&a, &a.clone()));
        assert!(!super::same(&a, &b));
        assert!(!super::same(&a, &a[..63]));
    }
}
