//! Random streams keyed by (seed, purpose, index): the k-th trial of a search
//! draws from its own stream, so its value does not depend on how earlier
//! trials were batched or on anything but the seed.

use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a stream is for; each purpose gets streams of its own.
#[derive(Clone, Copy)]
pub(crate) enum Purpose {
    Random = 1,
    InitialDesign = 2,
    Acquisition = 3,
    Tpe = 4,
    Hyperband = 5,
    Scalarization = 6,
}

/// The stream of `index` for `purpose` under `seed`.
pub(crate) fn stream(seed: u64, purpose: Purpose, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(purpose as u64).to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// A standard normal draw (Box-Muller).
pub(crate) fn normal(rng: &mut impl Rng) -> f64 {
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// A point of the unit cube.
pub(crate) fn uniform(rng: &mut impl Rng, dims: usize) -> Vec<f64> {
    (0..dims).map(|_| rng.random()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let draw = |s, p, i| stream(s, p, i).random::<u64>();
        assert_eq!(draw(7, Purpose::Random, 3), draw(7, Purpose::Random, 3));
        assert_ne!(draw(7, Purpose::Random, 3), draw(7, Purpose::Random, 4));
        assert_ne!(draw(7, Purpose::Random, 3), draw(8, Purpose::Random, 3));
        assert_ne!(
            draw(7, Purpose::Random, 3),
            draw(7, Purpose::Acquisition, 3)
        );
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut rng = stream(1, Purpose::Random, 0);
        let xs: Vec<f64> = (0..20000).map(|_| normal(&mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
