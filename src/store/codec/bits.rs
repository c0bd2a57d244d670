//! Bit and varint streams for the compressed chunk format ([`super::columnar`]).
//!
//! Readers check every length: damaged bytes are an error, never a panic.

use super::CodecError;

/// Writes bits most significant first.
#[derive(Default)]
pub(super) struct BitWriter {
    pub out: Vec<u8>,
    acc: u64,
    len: u32,
}

impl BitWriter {
    /// Appends the low `n` (≤ 64) bits of `v`.
    pub fn bits(&mut self, v: u64, n: u32) {
        let v = if n >= 64 { v } else { v & ((1u64 << n) - 1) };
        let mut acc = (u128::from(self.acc) << n) | u128::from(v);
        let mut len = self.len + n;
        while len >= 8 {
            len -= 8;
            self.out.push((acc >> len) as u8);
        }
        acc &= (1u128 << len) - 1;
        self.acc = acc as u64;
        self.len = len;
    }

    pub fn bit(&mut self, b: bool) {
        self.bits(u64::from(b), 1);
    }

    /// The bytes, the last one padded with zeros.
    pub fn finish(mut self) -> Vec<u8> {
        if self.len > 0 {
            self.out.push((self.acc << (8 - self.len)) as u8);
        }
        self.out
    }
}

/// Reads what [`BitWriter`] wrote.
pub(super) struct BitReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// The next `n` (≤ 64) bits.
    pub fn bits(&mut self, n: u32) -> Result<u64, CodecError> {
        let mut n = n as usize;
        if self.pos + n > self.buf.len() * 8 {
            return Err(CodecError("bit stream truncated"));
        }
        let mut v = 0u64;
        while n > 0 {
            let byte = self.buf[self.pos / 8];
            let avail = 8 - self.pos % 8;
            let take = avail.min(n);
            let b = (u64::from(byte) >> (avail - take)) & ((1u64 << take) - 1);
            v = (v << take) | b;
            self.pos += take;
            n -= take;
        }
        Ok(v)
    }

    pub fn bit(&mut self) -> Result<bool, CodecError> {
        Ok(self.bits(1)? == 1)
    }
}

/// Appends `v` as LEB128.
pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 number from the front of `buf`.
pub(super) fn varint(buf: &mut &[u8]) -> Result<u64, CodecError> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().ok_or(CodecError("varint truncated"))?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(CodecError("varint too long"))
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends `items` as run-length pairs (value, run) of varints.
pub(super) fn put_runs(out: &mut Vec<u8>, items: impl IntoIterator<Item = u64>) {
    let mut run: Option<(u64, u64)> = None;
    for x in items {
        run = match run {
            Some((v, n)) if v == x => Some((v, n + 1)),
            Some((v, n)) => {
                put_varint(out, v);
                put_varint(out, n);
                Some((x, 1))
            }
            None => Some((x, 1)),
        };
    }
    if let Some((v, n)) = run {
        put_varint(out, v);
        put_varint(out, n);
    }
}

/// Reads exactly `count` items written by [`put_runs`].
pub(super) fn runs(buf: &mut &[u8], count: usize) -> Result<Vec<u64>, CodecError> {
    let mut out = Vec::with_capacity(count.min(buf.len() * 64));
    while out.len() < count {
        let v = varint(buf)?;
        let n = varint(buf)?;
        if n == 0 || n > (count - out.len()) as u64 {
            return Err(CodecError("run length"));
        }
        out.extend(std::iter::repeat_n(v, n as usize));
    }
    Ok(out)
}

/// Delta-of-delta of a series (wrapping, so that any values round-trip), zigzagged: a
/// regular series is a run of zeros.
pub(super) fn delta_of_delta(xs: &[u64]) -> impl Iterator<Item = u64> + '_ {
    let mut prev = 0u64;
    let mut prev_delta = 0u64;
    xs.iter().enumerate().map(move |(i, &x)| {
        let delta = x.wrapping_sub(prev);
        let item = if i == 0 {
            x
        } else {
            zigzag(delta.wrapping_sub(prev_delta) as i64)
        };
        prev = x;
        if i > 0 {
            prev_delta = delta;
        }
        item
    })
}

/// The inverse of [`delta_of_delta`], in place.
pub(super) fn undo_delta_of_delta(items: &mut [u64]) {
    let mut prev = 0u64;
    let mut prev_delta = 0u64;
    for (i, item) in items.iter_mut().enumerate() {
        let x = if i == 0 {
            *item
        } else {
            let delta = prev_delta.wrapping_add(unzigzag(*item) as u64);
            prev_delta = delta;
            prev.wrapping_add(delta)
        };
        *item = x;
        prev = x;
    }
}

/// Gorilla's XOR coding of doubles (as their bits, so that every NaN payload and -0.0
/// comes back exactly): a repeat is one bit; otherwise the meaningful bits of the XOR with
/// the previous value, within the previous window when they fit.
pub(super) fn put_xor(values: &[u64]) -> Vec<u8> {
    let mut w = BitWriter::default();
    let Some((&first, rest)) = values.split_first() else {
        return w.finish();
    };
    w.bits(first, 64);
    let (mut prev, mut window) = (first, None::<(u32, u32)>);
    for &v in rest {
        let x = v ^ prev;
        prev = v;
        if x == 0 {
            w.bit(false);
            continue;
        }
        w.bit(true);
        let (lz, tz) = (x.leading_zeros().min(31), x.trailing_zeros());
        match window {
            Some((plz, ptz)) if lz >= plz && tz >= ptz => {
                w.bit(false);
                w.bits(x >> ptz, 64 - plz - ptz);
            }
            _ => {
                w.bit(true);
                let sig = 64 - lz - tz;
                w.bits(u64::from(lz), 5);
                w.bits(u64::from(sig - 1), 6);
                w.bits(x >> tz, sig);
                window = Some((lz, tz));
            }
        }
    }
    w.finish()
}

/// Reads `count` values written by [`put_xor`].
pub(super) fn xor(buf: &[u8], count: usize) -> Result<Vec<u64>, CodecError> {
    let mut r = BitReader::new(buf);
    let mut out = Vec::with_capacity(count.min(buf.len() * 8 + 1));
    if count == 0 {
        return Ok(out);
    }
    let mut prev = r.bits(64)?;
    out.push(prev);
    let mut window = None::<(u32, u32)>;
    while out.len() < count {
        if r.bit()? {
            let x = if !r.bit()? {
                let (plz, ptz) = window.ok_or(CodecError("xor window"))?;
                r.bits(64 - plz - ptz)? << ptz
            } else {
                let lz = r.bits(5)? as u32;
                let sig = r.bits(6)? as u32 + 1;
                if lz + sig > 64 {
                    return Err(CodecError("xor window"));
                }
                let tz = 64 - lz - sig;
                window = Some((lz, tz));
                r.bits(sig)? << tz
            };
            prev ^= x;
        }
        out.push(prev);
    }
    Ok(out)
}
