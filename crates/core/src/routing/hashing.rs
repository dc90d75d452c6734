//! Sticky bucketing: a subject's place in an experiment's hash space.
//!
//! The hash must give the same value on every machine, release and restart, so it is
//! spelled out here (FNV-1a over the bytes, then the MurmurHash3 64-bit finaliser to spread
//! FNV's weak low bits) instead of relying on `std`'s hasher, whose output may change.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The subject's bucket in `[0, 2^32)` for an experiment salted with `salt`.
pub fn bucket(salt: &str, subject: &str) -> u32 {
    let hash = fnv1a(FNV_OFFSET, salt.as_bytes());
    let hash = fnv1a(hash, b":");
    let hash = fmix64(fnv1a(hash, subject.as_bytes()));
    // The high half is the best-mixed part of the finalised value.
    (hash >> 32) as u32
}

/// Upper bounds of consecutive ranges over `[0, 2^32)`, one per weight, laid out from zero.
/// The last bound is exactly 2^32, so every bucket falls in some range.
pub fn range_bounds(weights: &[f64]) -> Vec<u64> {
    let total: f64 = weights.iter().sum();
    let space = (1u64 << 32) as f64;
    let mut cumulative = 0.0;
    let mut bounds: Vec<u64> = weights
        .iter()
        .map(|w| {
            cumulative += w;
            (cumulative / total * space).floor() as u64
        })
        .collect();
    if let Some(last) = bounds.last_mut() {
        *last = 1u64 << 32;
    }
    bounds
}

/// Index of the range holding `bucket`.
pub fn pick(bounds: &[u64], bucket: u32) -> usize {
    let bucket = u64::from(bucket);
    bounds
        .iter()
        .position(|&bound| bucket < bound)
        .unwrap_or(bounds.len().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_is_a_fixed_function_of_salt_and_subject() {
        // Golden values: changing them reassigns every subject of every experiment.
        assert_eq!(bucket("exp", "alice"), bucket("exp", "alice"));
        assert_eq!(bucket("", ""), 0x6fb5_654d);
        assert_eq!(bucket("canary", "user-42"), 0x8cc0_f4eb);
    }

    #[test]
    fn salt_separates_experiments() {
        let same = (0..1000)
            .filter(|i| {
                let subject = format!("user-{i}");
                bucket("a", &subject) >> 31 == bucket("b", &subject) >> 31
            })
            .count();
        // Independent halves agree about half the time.
        assert!((400..600).contains(&same), "{same}");
    }

    #[test]
    fn bounds_cover_the_whole_space_in_order() {
        let bounds = range_bounds(&[5.0, 95.0]);
        assert_eq!(bounds.len(), 2);
        assert_eq!(bounds[1], 1u64 << 32);
        assert_eq!(pick(&bounds, 0), 0);
        assert_eq!(pick(&bounds, u32::MAX), 1);
        assert_eq!(pick(&bounds, (bounds[0] - 1) as u32), 0);
        assert_eq!(pick(&bounds, bounds[0] as u32), 1);
    }

    #[test]
    fn growing_the_first_range_keeps_its_subjects() {
        let small = range_bounds(&[5.0, 95.0]);
        let large = range_bounds(&[10.0, 90.0]);
        for i in 0..2000 {
            let b = bucket("ramp", &format!("s{i}"));
            if pick(&small, b) == 0 {
                assert_eq!(pick(&large, b), 0);
            }
        }
    }
}
