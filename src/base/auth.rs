//! Secret comparison for the admin token.

use std::hint::black_box;

/// True when `a` and `b` are the same bytes, in time that depends only on the longer length:
/// neither where the first difference is nor a length mismatch ends the comparison early, so
/// the answer's timing does not tell a caller how much of a guessed token was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let len = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff = black_box(diff | (x ^ y));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn equal_only_when_same_bytes_and_length() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"nope", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret-and-more"));
        assert!(!constant_time_eq(b"s3cret-and-more", b"s3cret"));
        // A shorter side is not padded into a match.
        assert!(!constant_time_eq(b"ab", b"ab\0"));
        assert!(!constant_time_eq(b"", b"\0"));
    }
}
