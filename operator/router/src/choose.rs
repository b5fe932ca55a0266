//! Which production variant answers a request, and whether a request is
//! sampled (for a shadow copy or a capture record).

use kiln_api::router::RoutedVariant;
use rand::RngExt;

/// Why no variant could be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoVariant {
    /// The target-variant header names no production variant.
    Unknown(String),
    /// Every weight is 0 and no variant was named.
    NoWeight,
}

/// The index of the variant a request goes to: the one `target` names
/// (whatever its weight), else one drawn by weight. `draw(total)` returns a
/// uniform integer in `0..total`.
pub fn pick(
    variants: &[RoutedVariant],
    target: Option<&str>,
    draw: impl FnOnce(u64) -> u64,
) -> Result<usize, NoVariant> {
    if let Some(name) = target {
        return variants
            .iter()
            .position(|v| v.name == name)
            .ok_or_else(|| NoVariant::Unknown(name.to_string()));
    }
    let total: u64 = variants.iter().map(|v| u64::from(v.weight)).sum();
    if total == 0 {
        return Err(NoVariant::NoWeight);
    }
    let mut point = draw(total);
    for (i, v) in variants.iter().enumerate() {
        let w = u64::from(v.weight);
        if point < w {
            return Ok(i);
        }
        point -= w;
    }
    // Unreachable with a draw below `total`; the last weighted variant then.
    Ok(variants.iter().rposition(|v| v.weight > 0).unwrap_or(0))
}

/// [`pick`] with the thread's random generator.
pub fn pick_random(variants: &[RoutedVariant], target: Option<&str>) -> Result<usize, NoVariant> {
    pick(variants, target, |total| rand::rng().random_range(0..total))
}

/// Whether an event of probability `percent`/100 happens.
pub fn sampled(percent: u32) -> bool {
    match percent {
        0 => false,
        p if p >= 100 => true,
        p => rand::rng().random_range(0..100u32) < p,
    }
}

/// A random id of 32 lowercase hex digits (128 bits, like a UUID's).
pub fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A random suffix of 16 lowercase hex digits.
pub fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variants(weights: &[u32]) -> Vec<RoutedVariant> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| RoutedVariant {
                name: format!("v{i}"),
                url: format!("http://v{i}:8080"),
                weight,
            })
            .collect()
    }

    #[test]
    fn draws_by_cumulative_weight() {
        let vs = variants(&[9, 0, 1]);
        let at = |point: u64| {
            pick(&vs, None, |total| {
                assert_eq!(total, 10);
                point
            })
        };
        for p in 0..9 {
            assert_eq!(at(p), Ok(0));
        }
        assert_eq!(at(9), Ok(2));
    }

    #[test]
    fn the_header_wins_even_at_weight_zero() {
        let vs = variants(&[1, 0]);
        assert_eq!(pick(&vs, Some("v1"), |_| unreachable!()), Ok(1));
        assert_eq!(
            pick(&vs, Some("nope"), |_| unreachable!()),
            Err(NoVariant::Unknown("nope".into()))
        );
    }

    #[test]
    fn no_weight_no_choice() {
        assert_eq!(
            pick(&variants(&[0, 0]), None, |_| 0),
            Err(NoVariant::NoWeight)
        );
        assert_eq!(pick(&variants(&[]), None, |_| 0), Err(NoVariant::NoWeight));
    }

    #[test]
    fn random_draws_follow_the_weights() {
        let vs = variants(&[3, 1]);
        let n = 20_000;
        let first = (0..n).filter(|_| pick_random(&vs, None) == Ok(0)).count();
        let share = first as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.02, "{share}");
    }

    #[test]
    fn sampling_edges_and_ids() {
        assert!((0..1000).all(|_| sampled(100)));
        assert!((0..1000).all(|_| !sampled(0)));
        let hits = (0..10_000).filter(|_| sampled(25)).count();
        assert!((2_200..2_800).contains(&hits), "{hits}");
        let id = random_id();
        assert_eq!(id.len(), 32);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(random_id(), id);
        assert_eq!(random_suffix().len(), 16);
    }
}
