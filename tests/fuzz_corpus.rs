//! The fuzz targets on stable Rust, so they cannot rot when nightly is missing: every
//! seed of `fuzz/corpus/<target>/` (and every regression input in
//! `fuzz/regressions/<target>/`), then a few thousand mutations of them from a fixed
//! random seed. A panic anywhere is a finding. `scripts/fuzz` runs the real thing
//! (libFuzzer, coverage-guided) on nightly.

use std::path::{Path, PathBuf};

use hopcast::testkit::fuzz::{seed_datagrams, TARGETS};

fn inputs(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.sort();
    files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
}

/// xorshift64*: reproducible mutations without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation: flip, overwrite, insert, delete or duplicate bytes, or splice two seeds.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        let last = v.len().saturating_sub(1);
        match rng.below(6) {
            0 if !v.is_empty() => v[at.min(last)] ^= 1 << rng.below(8),
            1 if !v.is_empty() => v[at.min(last)] = rng.next() as u8,
            2 => v.insert(at, rng.next() as u8),
            3 if at < v.len() => {
                v.remove(at);
            }
            4 if !v.is_empty() => {
                let end = (at + rng.below(16)).min(v.len());
                let piece = v[at.min(end)..end].to_vec();
                v.splice(at..at, piece);
            }
            _ => {
                let cut = rng.below(other.len() + 1);
                v.truncate(at);
                v.extend_from_slice(&other[cut..]);
            }
        }
    }
    v
}

#[test]
fn every_fuzz_target_survives_its_corpus_and_mutations_of_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, target) in TARGETS {
        let mut seeds = inputs(&root.join("corpus").join(name));
        seeds.extend(inputs(&root.join("regressions").join(name)));
        if name == "router_datagrams" {
            seeds.extend(seed_datagrams());
        }
        assert!(!seeds.is_empty(), "no seeds for {name}");
        for seed in &seeds {
            target(seed);
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        let rounds = if name == "sdp_offer" { 500 } else { 20_000 };
        for _ in 0..rounds {
            let (a, b) = (&seeds[rng.below(seeds.len())], &seeds[rng.below(seeds.len())]);
            target(&mutate(&mut rng, a, b));
        }
    }
}

/// Writes the router target's seeds (real client datagrams) into its corpus folder:
/// `cargo test --test fuzz_corpus -- --ignored write_router_datagram_seeds`.
#[test]
#[ignore]
fn write_router_datagram_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/router_datagrams");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, seed) in seed_datagrams().iter().enumerate() {
        std::fs::write(dir.join(format!("{i:03}.bin")), seed).unwrap();
    }
}
