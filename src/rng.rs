//! Random streams derived from the run's seed and the position in the run (stage, epoch, step),
//! never from process history, so a resumed run draws exactly what an uninterrupted one would.
use sha2::{Digest, Sha256};

/// A 63-bit seed for `stream` at `index`, derived from `seed`.
pub fn derive(seed: u64, stream: &str, index: u64) -> i64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(stream.as_bytes());
    h.update([0]);
    h.update(index.to_le_bytes());
    let d = h.finalize();
    (u64::from_le_bytes(d[..8].try_into().expect("8 bytes")) >> 1) as i64
}

/// Seeds tch's global generators (CPU and CUDA) for `stream` at `index`.
pub fn reseed(seed: u64, stream: &str, index: u64) {
    tch::manual_seed(derive(seed, stream, index));
}
