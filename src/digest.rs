//! The bridge's digests, in one place. Stable ones are SHA-256 (they are
//! stored, sent, or shown, and must not change between runs or builds):
//! dedup keys too long for PagerDuty, payloads with nothing to key on,
//! idempotency claims. The in-memory alert index uses a keyed per-process
//! hash instead (`spool::AlertId`): it is never stored, and its key is
//! random so that no one can choose colliding alerts.

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// The first 128 bits of SHA-256 over `parts`, each followed by a NUL (so
/// that `("ab", "c")` and `("a", "bc")` differ), little-endian.
pub(crate) fn sha256_128(parts: &[&[u8]]) -> u128 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            ctx.update(&[0]);
        }
        ctx.update(part);
    }
    let d = ctx.finish();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    u128::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_a_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // SHA-256("a\0b"), first 16 bytes little-endian.
        assert_ne!(sha256_128(&[b"a", b"b"]), sha256_128(&[b"ab"]));
        assert_eq!(sha256_128(&[b"abc"]).to_le_bytes()[..4], [0xba, 0x78, 0x16, 0xbf]);
    }
}
