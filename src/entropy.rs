//! Randomness as an input: tags, branches, Call-IDs, SSRCs and nonce keys come from one
//! generator that call control owns. The daemon seeds it from the operating system; a test
//! seeds it with a number, so a scenario sends the same bytes every run.

use rand::{RngExt as _, SeedableRng as _, rngs::StdRng};

pub struct Entropy(StdRng);

/// The generator for secret keys (SRTP master keys and salts): the operating system's, read
/// for each key, never a seeded sequence. Key generation takes any cryptographic generator so
/// that a test can pass a seeded one; the daemon passes this.
pub fn key_rng() -> rand::rngs::SysRng {
    rand::rngs::SysRng
}

impl Entropy {
    /// Seeded from the operating system (the daemon).
    pub fn from_os() -> Entropy {
        Entropy(StdRng::from_rng(&mut rand::rng()))
    }

    /// Seeded with `seed` (tests): the same sequence every run.
    pub fn seeded(seed: u64) -> Entropy {
        Entropy(StdRng::seed_from_u64(seed))
    }

    /// 64 random bits in hex: tags, Call-IDs, cnonces.
    pub fn token(&mut self) -> String {
        format!("{:016x}", self.0.random::<u64>())
    }

    /// A Via branch with the RFC 3261 magic cookie.
    pub fn branch(&mut self) -> String {
        format!("z9hG4bK{:016x}", self.0.random::<u64>())
    }

    pub fn u16(&mut self) -> u16 {
        self.0.random()
    }

    pub fn u32(&mut self) -> u32 {
        self.0.random()
    }

    pub fn u64(&mut self) -> u64 {
        self.0.random()
    }

    /// A 256-bit key (the registrar's nonce HMAC key).
    pub fn key(&mut self) -> [u8; 32] {
        self.0.random()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_tokens_and_branches_have_the_cookie() {
        let (mut a, mut b) = (Entropy::seeded(7), Entropy::seeded(7));
        assert_eq!(a.token(), b.token());
        let br = a.branch();
        assert!(br.starts_with("z9hG4bK") && br.len() == 23, "{br}");
        assert_ne!(Entropy::seeded(8).token(), Entropy::seeded(7).token());
    }
}
