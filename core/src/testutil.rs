//! Helpers shared by the unit tests of several modules.

/// Fixed-seed xorshift64*: reproducible pseudo-random inputs without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A codec stream (hot or cold: both end with the CRC-32 of every byte before it) with that CRC
/// made right again after a test edited the stream, so that the decoder's other checks are what
/// the test reaches.
pub fn recrc(mut stored: Vec<u8>) -> Vec<u8> {
    let body = stored.len() - 4;
    let crc = crc32fast::hash(&stored[..body]);
    stored[body..].copy_from_slice(&crc.to_le_bytes());
    stored
}
