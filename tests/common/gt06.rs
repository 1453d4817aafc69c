//! GT06 frames built from the protocol document, independent of `src/gps`, for the tests and
//! the soak bench.

/// CRC-16/X-25 (GT06 "CRC-ITU"), bit by bit.
pub fn crc_itu(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for b in data {
        crc ^= u16::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x8408
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A short-form frame (`78 78`): length, protocol, `content`, serial, CRC, `0D 0A`.
pub fn gt06_frame(protocol: u8, content: &[u8], serial: u16) -> Vec<u8> {
    let mut f = vec![0x78, 0x78, (content.len() + 5) as u8, protocol];
    f.extend_from_slice(content);
    f.extend_from_slice(&serial.to_be_bytes());
    let crc = crc_itu(&f[2..]);
    f.extend_from_slice(&crc.to_be_bytes());
    f.extend_from_slice(&[0x0D, 0x0A]);
    f
}
