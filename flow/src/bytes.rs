//! A bounds-checked big-endian cursor over a datagram. Every read returns `Option`, so a
//! truncated or lying packet ends decoding with an error instead of a panic.

#[derive(Clone, Copy)]
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    pub fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
    }

    pub fn ipv4(&mut self) -> Option<std::net::Ipv4Addr> {
        self.take(4)
            .map(|b| std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }

    pub fn ipv6(&mut self) -> Option<std::net::Ipv6Addr> {
        let b: [u8; 16] = self.take(16)?.try_into().ok()?;
        Some(std::net::Ipv6Addr::from(b))
    }
}

/// A big-endian unsigned integer of 1..=8 bytes (NetFlow v9/IPFIX reduced-size encoding);
/// longer fields keep their low 8 bytes.
#[inline]
pub fn be_uint(b: &[u8]) -> u64 {
    // The common widths without a loop (this runs for nearly every field of every record).
    match *b {
        [x] => return x as u64,
        [x, y] => return u16::from_be_bytes([x, y]) as u64,
        [a, b, c, d] => return u32::from_be_bytes([a, b, c, d]) as u64,
        [a, b, c, d, e, f, g, h] => return u64::from_be_bytes([a, b, c, d, e, f, g, h]),
        _ => {}
    }
    let b = if b.len() > 8 { &b[b.len() - 8..] } else { b };
    let mut v = 0u64;
    for &x in b {
        v = (v << 8) | x as u64;
    }
    v
}
