//! Token generation and the token file.
//!
//! **Generation.** Random tokens balance poorly (with 128 random tokens
//! per instance, three instances commonly differ by 10-20% in ownership).
//! [`generate_tokens`] places tokens deliberately instead:
//!
//! - The first instance of a ring (or zone) gets `n` evenly spaced tokens
//!   from a random offset: exactly `1/n` of the ring between neighbours.
//! - A joining instance, when `k` instances will exist afterwards, must end
//!   up owning `1/k`. Each new token is placed inside the largest range of
//!   the instance that currently owns the most, so that the new token
//!   takes (about) `1/(k·n)` of the ring from it: a token owns the range
//!   from its predecessor (exclusive) to itself, so a token at
//!   `prev + take` takes exactly `take`. The amount per token is
//!   recomputed from what is still missing, so small ranges are
//!   compensated by later tokens, and is shaved by a random 0-1% so two
//!   instances joining at once do not pick identical tokens.
//!
//! The result: after every join each instance of the zone owns `1/k` of
//! the ring to within about `1/(k·n)` (under 1% with 128 tokens). An
//! instance leaving returns each range to the instance it was taken from,
//! so leaving in reverse join order restores the previous balance exactly;
//! arbitrary departures leave a small imbalance until the next join.
//!
//! **Token file.** A JSON document `{"format":1,"tokens":[...]}` written
//! atomically (temporary file, fsync, rename, fsync of the directory), so a
//! restarted instance — also after `kill -9` — keeps its tokens and the
//! series it owned.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use snafu::ResultExt;

use crate::error::{Error, Result, TokenFileIoSnafu};

const RING_SIZE: u64 = 1 << 32;

fn random_u64() -> Result<u64> {
    getrandom::u64().map_err(|e| Error::Random {
        message: e.to_string(),
    })
}

/// Generates `n` tokens for a new instance given the tokens of the other
/// instances it shares a ring (or zone) with, one slice per instance.
/// Returns sorted, unique tokens that collide with none of `peers`.
pub fn generate_tokens(n: usize, peers: &[&[u32]]) -> Result<Vec<u32>> {
    generate_tokens_seeded(n, peers, random_u64()?)
}

/// Tiny deterministic generator (SplitMix64) seeded once from the OS; the
/// randomness only breaks ties between simultaneous joins.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// [`generate_tokens`] with an explicit seed (deterministic, for tests).
pub fn generate_tokens_seeded(n: usize, peers: &[&[u32]], seed: u64) -> Result<Vec<u32>> {
    if n == 0 {
        return Err(Error::Config {
            message: "num_tokens must be at least 1".into(),
        });
    }
    let mut rng = SplitMix(seed);
    // (token, owner); owner = index into peers, NEW for the new instance.
    const NEW: usize = usize::MAX;
    let mut ring: Vec<(u32, usize)> = peers
        .iter()
        .enumerate()
        .flat_map(|(i, toks)| toks.iter().map(move |&t| (t, i)))
        .collect();
    ring.sort_unstable();
    ring.dedup_by_key(|e| e.0);
    let active_peers = peers.iter().filter(|p| !p.is_empty()).count();

    if ring.is_empty() {
        let offset = rng.next() as u32;
        let mut toks: Vec<u32> = (0..n as u64)
            .map(|i| offset.wrapping_add((i * RING_SIZE / n as u64) as u32))
            .collect();
        toks.sort_unstable();
        toks.dedup();
        return Ok(toks);
    }

    // Ownership per peer: the range (prev, t] belongs to t's owner.
    let range_len = |ring: &[(u32, usize)], i: usize| -> u64 {
        if ring.len() == 1 {
            return RING_SIZE;
        }
        let prev = if i == 0 {
            ring[ring.len() - 1].0
        } else {
            ring[i - 1].0
        };
        u64::from(ring[i].0.wrapping_sub(prev))
    };
    let mut owned = vec![0u64; peers.len()];
    for i in 0..ring.len() {
        owned[ring[i].1] += range_len(&ring, i);
    }

    let target_total = RING_SIZE / (active_peers as u64 + 1);
    let mut taken = 0u64;
    let mut out = Vec::with_capacity(n);
    for placed in 0..n {
        // The peer owning the most.
        let Some((victim, _)) = owned
            .iter()
            .enumerate()
            .max_by_key(|(i, o)| (**o, std::cmp::Reverse(*i)))
        else {
            break;
        };
        // Its largest range.
        let mut best: Option<(usize, u64)> = None;
        for i in 0..ring.len() {
            if ring[i].1 != victim {
                continue;
            }
            let len = range_len(&ring, i);
            if best.is_none_or(|(_, l)| len > l) {
                best = Some((i, len));
            }
        }
        let Some((idx, len)) = best else { break };
        if len < 2 {
            break; // saturated ring; cannot place more tokens
        }
        let remaining = target_total.saturating_sub(taken);
        let per = remaining / (n - placed) as u64;
        // Shave up to 1% at random so simultaneous joins differ.
        let shave = if per >= 100 {
            rng.next() % (per / 100)
        } else {
            0
        };
        let take = (per - shave).clamp(1, len - 1);
        let prev = if idx == 0 {
            ring[ring.len() - 1].0
        } else {
            ring[idx - 1].0
        };
        let tok = prev.wrapping_add(take as u32);
        owned[victim] -= take;
        taken += take;
        // Insert keeping the ring sorted.
        let pos = ring.partition_point(|e| e.0 < tok);
        ring.insert(pos, (tok, NEW));
        out.push(tok);
    }
    // A pathological (saturated) ring: fill up with any free tokens.
    let mut guard = 0;
    while out.len() < n && guard < 1_000_000 {
        guard += 1;
        let t = rng.next() as u32;
        if ring.binary_search_by_key(&t, |e| e.0).is_err() {
            let pos = ring.partition_point(|e| e.0 < t);
            ring.insert(pos, (t, NEW));
            out.push(t);
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[derive(Serialize, Deserialize)]
struct TokenFile {
    format: u32,
    tokens: Vec<u32>,
}

/// Reads a token file. `Ok(None)` when it does not exist; an error when
/// it cannot be read or is not a valid token file.
pub fn load_tokens(path: &Path) -> Result<Option<Vec<u32>>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::TokenFileIo {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let corrupt = |message: String| Error::TokenFileCorrupt {
        path: path.to_path_buf(),
        message,
    };
    let f: TokenFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if f.format != 1 {
        return Err(corrupt(format!("unsupported format {}", f.format)));
    }
    let mut t = f.tokens;
    t.sort_unstable();
    t.dedup();
    if t.is_empty() {
        return Err(corrupt("no tokens".into()));
    }
    Ok(Some(t))
}

/// Writes a token file atomically (tmp + fsync + rename + directory fsync).
pub fn store_tokens(path: &Path, tokens: &[u32]) -> Result<()> {
    let ctx = |p: &Path| TokenFileIoSnafu {
        path: p.to_path_buf(),
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).context(ctx(&dir))?;
    let body = serde_json::to_vec(&TokenFile {
        format: 1,
        tokens: tokens.to_vec(),
    })
    .unwrap_or_default();
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp).context(ctx(&tmp))?;
        f.write_all(&body).context(ctx(&tmp))?;
        f.sync_all().context(ctx(&tmp))?;
    }
    std::fs::rename(&tmp, path).context(ctx(path))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        // Best effort: some filesystems refuse fsync on directories.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Primary ownership of each token list as a fraction of the ring, for
/// tests and diagnostics (same rule as the ring: a token owns
/// `(previous token, token]`).
pub fn ownership(instances: &[&[u32]]) -> Vec<f64> {
    let mut ring: Vec<(u32, usize)> = instances
        .iter()
        .enumerate()
        .flat_map(|(i, t)| t.iter().map(move |&x| (x, i)))
        .collect();
    ring.sort_unstable();
    ring.dedup_by_key(|e| e.0);
    let mut owned = vec![0u64; instances.len()];
    for i in 0..ring.len() {
        let len = if ring.len() == 1 {
            RING_SIZE
        } else {
            let prev = if i == 0 {
                ring[ring.len() - 1].0
            } else {
                ring[i - 1].0
            };
            u64::from(ring[i].0.wrapping_sub(prev))
        };
        owned[ring[i].1] += len;
    }
    owned.iter().map(|&o| o as f64 / RING_SIZE as f64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join_all(k: usize, n: usize, seed: u64) -> Vec<Vec<u32>> {
        let mut all: Vec<Vec<u32>> = Vec::new();
        for i in 0..k {
            let peers: Vec<&[u32]> = all.iter().map(|v| v.as_slice()).collect();
            let t = generate_tokens_seeded(n, &peers, seed + i as u64).unwrap();
            assert_eq!(t.len(), n);
            for p in &all {
                assert!(t.iter().all(|x| p.binary_search(x).is_err()), "collision");
            }
            all.push(t);
        }
        all
    }

    #[test]
    fn balanced_after_each_join() {
        for n in [16usize, 128, 512] {
            let mut all: Vec<Vec<u32>> = Vec::new();
            for k in 1..=8 {
                let peers: Vec<&[u32]> = all.iter().map(|v| v.as_slice()).collect();
                all.push(generate_tokens_seeded(n, &peers, 42 + k as u64).unwrap());
                let refs: Vec<&[u32]> = all.iter().map(|v| v.as_slice()).collect();
                let own = ownership(&refs);
                let sum: f64 = own.iter().sum();
                assert!((sum - 1.0).abs() < 1e-9);
                let max = own.iter().cloned().fold(0.0, f64::max);
                let min = own.iter().cloned().fold(1.0, f64::min);
                assert!(
                    max / min < 1.0 + 2.5 / n as f64 + 0.02,
                    "n={n} k={k}: {own:?}"
                );
            }
        }
    }

    #[test]
    fn leaving_last_restores_balance() {
        let all = join_all(4, 128, 7);
        let refs: Vec<&[u32]> = all[..3].iter().map(|v| v.as_slice()).collect();
        let own = ownership(&refs);
        for o in own {
            assert!((o - 1.0 / 3.0).abs() < 0.01, "{o}");
        }
    }

    #[test]
    fn token_file_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/tokens.json");
        assert_eq!(load_tokens(&p).unwrap(), None);
        store_tokens(&p, &[3, 1, 2]).unwrap();
        assert_eq!(load_tokens(&p).unwrap(), Some(vec![1, 2, 3]));
        std::fs::write(&p, b"{\"format\":1,\"tok").unwrap();
        assert!(matches!(
            load_tokens(&p),
            Err(Error::TokenFileCorrupt { .. })
        ));
        std::fs::write(&p, b"{\"format\":1,\"tokens\":[]}").unwrap();
        assert!(load_tokens(&p).is_err());
    }
}
