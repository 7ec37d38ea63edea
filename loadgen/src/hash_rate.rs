//! `surge-loadgen hash-rate`: the raw Argon2id rate of this machine, the ceiling any
//! signup path that hashes passwords can reach. The end-to-end script compares the API's
//! signups/s with it.

use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use serde::{Deserialize, Serialize};

use crate::duration::parse_duration;

/// Flags of `surge-loadgen hash-rate`.
#[derive(Debug, Clone, clap::Args)]
pub struct HashRateArgs {
    /// Hashing threads (default: the number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// How long to hash.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Argon2 memory in KiB (OWASP: 19 MiB).
    #[arg(long, default_value_t = 19 * 1024)]
    pub m_kib: u32,
    /// Argon2 passes.
    #[arg(long, default_value_t = 2)]
    pub t: u32,
}

/// What `hash-rate` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HashRate {
    pub threads: usize,
    pub m_kib: u32,
    pub t: u32,
    pub hashes: u64,
    pub secs: f64,
    pub hashes_per_s: f64,
    /// Mean CPU time of one hash on one thread.
    pub ms_per_hash: f64,
}

/// Errors of the hash-rate measurement.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HashRateError {
    #[error("invalid Argon2 parameters: {0}")]
    Params(String),
    #[error("a hashing thread failed: {0}")]
    Hash(String),
}

/// Hashes on `threads` threads for `duration`, each thread reusing its Argon2 memory the
/// way the API's pool does.
pub fn measure(args: &HashRateArgs) -> Result<HashRate, HashRateError> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let params = Params::new(args.m_kib, args.t, 1, Some(32))
        .map_err(|e| HashRateError::Params(e.to_string()))?;
    let start = Instant::now();
    let deadline = start + args.duration;
    let counts = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let params = params.clone();
                scope.spawn(move || -> Result<u64, String> {
                    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
                    let mut blocks = vec![Block::new(); params.block_count()];
                    let mut out = [0u8; 32];
                    let salt = [i as u8; 16];
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        argon
                            .hash_password_into_with_memory(
                                b"correct horse battery staple",
                                &salt,
                                &mut out,
                                &mut blocks,
                            )
                            .map_err(|e| e.to_string())?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("thread panicked".to_owned()))
            })
            .collect::<Result<Vec<u64>, String>>()
    })
    .map_err(HashRateError::Hash)?;
    let secs = start.elapsed().as_secs_f64();
    let hashes: u64 = counts.iter().sum();
    Ok(HashRate {
        threads,
        m_kib: args.m_kib,
        t: args.t,
        hashes,
        secs,
        hashes_per_s: hashes as f64 / secs,
        ms_per_hash: if hashes == 0 {
            0.0
        } else {
            secs * 1000.0 * threads as f64 / hashes as f64
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_something_with_cheap_parameters() {
        let r = measure(&HashRateArgs {
            threads: Some(1),
            duration: Duration::from_millis(200),
            m_kib: 64,
            t: 1,
        })
        .unwrap();
        assert!(r.hashes > 0 && r.hashes_per_s > 0.0);
    }
}
