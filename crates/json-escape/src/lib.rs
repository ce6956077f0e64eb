//! JSON string escaping exactly as serde_json writes strings, for writers that build JSON by
//! hand (execd's event lines and grep matches). Its own crate so that this one loop can be built
//! at another optimisation level than the rest of the binary. Tested through execd's event
//! writer against serde_json for any text (`event::tests`, proptest).

#![forbid(unsafe_code)]

/// What serde_json writes for each byte of a string: 0 = as is, `u` = `\u00XX`, else `\<that>`.
/// (serde_json escapes only `"`, `\\` and controls below 0x20; not 0x7F, not U+2028/2029.)
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0A] = b'n';
    t[0x0C] = b'f';
    t[0x0D] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Appends `s` JSON-escaped exactly as serde_json does (without the quotes); runs of plain bytes
/// are copied at once.
pub fn escape(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc = ESCAPE[b as usize];
        if esc == 0 {
            continue;
        }
        buf.extend_from_slice(&bytes[start..i]);
        if esc == b'u' {
            buf.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xF) as usize]]);
        } else {
            buf.extend_from_slice(&[b'\\', esc]);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
}
