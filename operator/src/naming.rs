//! Names made from `sha256:` digests and cache keys: their hex digits, the 63-character form
//! label keys and values allow, and the 12-character form people read. A leaf, so that the
//! artifact store and the function controller share one definition.

/// The hex digits of a digest or key, without the `sha256:` prefix.
pub fn digest_hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// The form used in label keys and values (63 characters at most).
pub fn label_form(digest: &str) -> &str {
    let hex = digest_hex(digest);
    &hex[..hex.len().min(63)]
}

/// The first 12 hex digits, for people (`kubectl get` columns, messages).
pub fn short_digest(digest: &str) -> String {
    let hex = digest_hex(digest);
    hex[..hex.len().min(12)].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn the_prefix_is_dropped_and_bare_hex_is_kept() {
        assert_eq!(digest_hex(DIGEST), &DIGEST[7..]);
        assert_eq!(digest_hex("abc"), "abc");
    }

    #[test]
    fn the_label_form_of_a_sha256_is_its_first_63_hex_digits() {
        assert_eq!(label_form(DIGEST), &DIGEST[7..70]);
        assert_eq!(label_form("sha256:ab"), "ab");
    }

    #[test]
    fn the_short_form_is_12_hex_digits() {
        assert_eq!(short_digest(DIGEST), "001122334455");
        assert_eq!(short_digest("sha256:abc"), "abc");
    }
}
