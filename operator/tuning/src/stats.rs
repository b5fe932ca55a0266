//! Small statistics: the normal density and distribution, expected
//! improvement, medians.

use std::f64::consts::{PI, SQRT_2};

/// The standard normal density.
pub fn normal_pdf(z: f64) -> f64 {
    (-0.5 * z * z).exp() / (2.0 * PI).sqrt()
}

/// The log of the standard normal density.
pub fn normal_log_pdf(z: f64) -> f64 {
    -0.5 * z * z - 0.5 * (2.0 * PI).ln()
}

/// The complementary error function (Chebyshev fit in exponential form,
/// relative error below 1.2e-7 everywhere, tails included).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * (-z * z + poly).exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// The standard normal distribution function.
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / SQRT_2)
}

/// The log of the expected improvement below `best` of a normal posterior
/// (mean `mu`, standard deviation `sigma`), exact in the far tail where the
/// improvement itself underflows. Minimization.
pub fn log_expected_improvement(mu: f64, sigma: f64, best: f64) -> f64 {
    if sigma <= 1e-12 {
        return if mu < best {
            (best - mu).ln()
        } else {
            f64::NEG_INFINITY
        };
    }
    let z = (best - mu) / sigma;
    if z > -6.0 {
        let h = z * normal_cdf(z) + normal_pdf(z);
        return sigma.ln() + h.max(1e-300).ln();
    }
    // z Phi(z) + phi(z) = phi(z) (1 - t R(t)) with t = -z and Mills' ratio
    // R(t); its asymptotic series to the fourth term.
    let t2 = z * z;
    let series = 1.0 / t2 - 3.0 / (t2 * t2) + 15.0 / (t2 * t2 * t2) - 105.0 / (t2 * t2 * t2 * t2);
    sigma.ln() + normal_log_pdf(z) + series.ln()
}

/// The expected improvement below `best`. Minimization.
pub fn expected_improvement(mu: f64, sigma: f64, best: f64) -> f64 {
    log_expected_improvement(mu, sigma, best).exp()
}

/// The median (the mean of the two middle values for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    })
}

/// The mean and standard deviation (1 when the values are all equal).
pub fn standardization(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let sd = var.sqrt();
    (mean, if sd > 1e-12 { sd } else { 1.0 })
}

fn yeo_johnson(y: f64, lambda: f64) -> f64 {
    if y >= 0.0 {
        if lambda.abs() < 1e-9 {
            y.ln_1p()
        } else {
            ((y + 1.0).powf(lambda) - 1.0) / lambda
        }
    } else if (lambda - 2.0).abs() < 1e-9 {
        -(-y).ln_1p()
    } else {
        -((1.0 - y).powf(2.0 - lambda) - 1.0) / (2.0 - lambda)
    }
}

/// `values` standardized, Yeo-Johnson transformed with the maximum-likelihood
/// λ, and standardized again: a heavy tail of bad values (Rosenbrock's) no
/// longer flattens the differences among the good ones. Monotone, so the
/// best value stays the best.
pub fn power_transform(values: &[f64]) -> Vec<f64> {
    let (m, s) = standardization(values);
    let z: Vec<f64> = values.iter().map(|v| (v - m) / s).collect();
    let log_terms: f64 = z.iter().map(|y| y.signum() * y.abs().ln_1p()).sum();
    let n = z.len() as f64;
    let likelihood = |lambda: f64| {
        let t: Vec<f64> = z.iter().map(|y| yeo_johnson(*y, lambda)).collect();
        let (_, sd) = standardization(&t);
        -0.5 * n * (sd * sd).ln() + (lambda - 1.0) * log_terms
    };
    let lambda = (0..=80)
        .map(|i| -2.0 + 0.05 * i as f64)
        .max_by(|a, b| likelihood(*a).total_cmp(&likelihood(*b)))
        .unwrap_or(1.0);
    let t: Vec<f64> = z.iter().map(|y| yeo_johnson(*y, lambda)).collect();
    let (tm, ts) = standardization(&t);
    t.iter().map(|v| (v - tm) / ts).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_cdf_matches_tables() {
        for (z, p) in [
            (0.0, 0.5),
            (1.0, 0.841_344_746),
            (-1.96, 0.024_997_895),
            (3.0, 0.998_650_102),
        ] {
            assert!((normal_cdf(z) - p).abs() < 1e-7, "{z}");
        }
        // Relative accuracy deep in the tail: Phi(-8) = 6.22096e-16.
        assert!((normal_cdf(-8.0) / 6.220_960_574e-16 - 1.0).abs() < 1e-6);
    }

    #[test]
    fn expected_improvement_closed_form() {
        // At mu = best: sigma * phi(0).
        assert!((expected_improvement(1.0, 2.0, 1.0) - 2.0 * normal_pdf(0.0)).abs() < 1e-9);
        // Far below the best the improvement is the distance.
        assert!((expected_improvement(-10.0, 0.1, 0.0) - 10.0).abs() < 1e-9);
        // Far above the best with little uncertainty: zero, and its log smooth
        // across the switch to the tail series.
        assert!(expected_improvement(10.0, 0.1, 0.0) < 1e-300);
        let a = log_expected_improvement(6.0 - 1e-9, 1.0, 0.0);
        let b = log_expected_improvement(6.0 + 1e-9, 1.0, 0.0);
        assert!((a - b).abs() < 1e-3, "{a} {b}");
        assert!(log_expected_improvement(50.0, 1.0, 0.0) < -1000.0);
        assert_eq!(log_expected_improvement(1.0, 0.0, 0.0), f64::NEG_INFINITY);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn power_transform_keeps_order_and_shrinks_the_tail() {
        let y = [0.1, 0.5, 1.0, 2.0, 5.0, 1000.0];
        let t = power_transform(&y);
        assert!(t.windows(2).all(|w| w[0] < w[1]));
        let (m, s) = standardization(&t);
        assert!(m.abs() < 1e-9 && (s - 1.0).abs() < 1e-9);
        // Standardized, the outlier sits 2.2 sd out and the rest within 0.02
        // of each other; transformed, the good values spread apart.
        let (ym, ys) = standardization(&y);
        let z: Vec<f64> = y.iter().map(|v| (v - ym) / ys).collect();
        assert!(t[1] - t[0] > 4.0 * (z[1] - z[0]), "{t:?} {z:?}");
    }
}
