//! LEB128 varints and zigzag signed integers, the one implementation the
//! WAL records, chunk encodings, block files and in-memory postings
//! share. Readers that report positions or errors of their own (the WAL
//! and block decoders) wrap [`get_uvarint`]'s `None`.

/// Appends `v` as an unsigned LEB128 varint (1 to 10 bytes).
#[inline]
pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `v` zigzag-encoded as an unsigned varint.
#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, zigzag(v));
}

/// `v` with its sign in the low bit, so small magnitudes stay small.
#[inline]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
#[inline]
pub(crate) fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Reads an unsigned varint at `*pos`, advancing it; `None` when the
/// bytes end first or it overflows 64 bits (more than 10 bytes).
#[inline]
pub(crate) fn get_uvarint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut x = 0u64;
    let mut shift = 0u32;
    for i in 0..10 {
        let b = *data.get(pos.checked_add(i)?)?;
        if b < 0x80 {
            if i == 9 && b > 1 {
                return None;
            }
            *pos += i + 1;
            return Some(x | (u64::from(b) << shift));
        }
        x |= u64::from(b & 0x7f) << shift;
        shift += 7;
    }
    None
}

/// Reads a zigzag varint at `*pos`, advancing it (see [`get_uvarint`]).
#[inline]
pub(crate) fn get_varint(data: &[u8], pos: &mut usize) -> Option<i64> {
    get_uvarint(data, pos).map(unzigzag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_bad_bytes() {
        let vals = [0i64, 1, -1, 63, -64, 64, i64::MAX, i64::MIN, 1 << 40];
        let mut buf = Vec::new();
        for &v in &vals {
            put_varint(&mut buf, v);
            put_uvarint(&mut buf, v as u64);
        }
        let mut pos = 0;
        for &v in &vals {
            assert_eq!(get_varint(&buf, &mut pos), Some(v));
            assert_eq!(get_uvarint(&buf, &mut pos), Some(v as u64));
        }
        assert_eq!(pos, buf.len());
        // Truncated, and 11 continuation bytes.
        assert_eq!(get_uvarint(&[0x80], &mut 0), None);
        assert_eq!(get_uvarint(&[0xff; 11], &mut 0), None);
        assert_eq!(
            get_uvarint(
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                &mut 0
            ),
            None
        );
    }
}
