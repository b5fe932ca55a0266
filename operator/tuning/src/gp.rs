//! A Gaussian process on the unit cube: Matérn 5/2 kernel with one length
//! scale per dimension (ARD), a signal variance and a noise variance, fitted
//! by maximizing the marginal likelihood times weak priors (MAP), exact
//! inference by Cholesky.

use crate::linalg::Cholesky;
use crate::optimize;

const SQRT5: f64 = 2.236_067_977_499_79;
/// The smallest noise variance (standardized units): keeps K well conditioned.
const MIN_NOISE: f64 = 1e-6;

/// The kernel's hyperparameters, in log space.
#[derive(Clone, Debug, PartialEq)]
pub struct GpParams {
    /// log length scale of each dimension.
    pub log_lengthscales: Vec<f64>,
    /// log signal variance.
    pub log_signal: f64,
    /// log of the noise variance above its floor of 1e-6.
    pub log_noise: f64,
}

impl GpParams {
    fn to_vec(&self) -> Vec<f64> {
        let mut v = self.log_lengthscales.clone();
        v.extend([self.log_signal, self.log_noise]);
        v
    }

    fn from_vec(v: &[f64]) -> Self {
        let d = v.len() - 2;
        Self {
            log_lengthscales: v[..d].to_vec(),
            log_signal: v[d],
            log_noise: v[d + 1],
        }
    }

    /// The noise variance.
    pub fn noise(&self) -> f64 {
        MIN_NOISE + self.log_noise.exp()
    }
}

/// A GP conditioned on observations (targets should be standardized: the
/// prior mean is zero).
#[derive(Clone, Debug)]
pub struct Gp {
    dims: usize,
    x: Vec<f64>,
    y: Vec<f64>,
    params: GpParams,
    inv_ls2: Vec<f64>,
    signal: f64,
    chol: Cholesky,
    alpha: Vec<f64>,
}

/// The log-normal prior of the length scales, scaled with the dimension so
/// that more dimensions favour smoother functions (Hvarfner et al. 2024):
/// mean and standard deviation of log l.
fn lengthscale_prior(dims: usize) -> (f64, f64) {
    (
        std::f64::consts::SQRT_2 + 0.5 * (dims as f64).ln(),
        3f64.sqrt(),
    )
}
const SIGNAL_PRIOR: (f64, f64) = (0.0, 1.0);
const NOISE_PRIOR: (f64, f64) = (-7.0, 3.0);

/// Matérn 5/2 of the scaled distance r, without the signal variance.
fn matern(r: f64) -> f64 {
    (1.0 + SQRT5 * r + 5.0 / 3.0 * r * r) * (-SQRT5 * r).exp()
}

fn scaled_sq_dist(a: &[f64], b: &[f64], inv_ls2: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .zip(inv_ls2)
        .map(|((a, b), w)| (a - b) * (a - b) * w)
        .sum()
}

fn inv_ls2(params: &GpParams) -> Vec<f64> {
    params
        .log_lengthscales
        .iter()
        .map(|l| (-2.0 * l).exp())
        .collect()
}

impl Gp {
    /// The GP with these hyperparameters; `None` when K is singular even
    /// with the noise floor.
    pub fn new(dims: usize, x: Vec<f64>, y: Vec<f64>, params: GpParams) -> Option<Self> {
        let n = y.len();
        let inv_ls2 = inv_ls2(&params);
        let signal = params.log_signal.exp();
        let mut k = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let r =
                    scaled_sq_dist(&x[i * dims..][..dims], &x[j * dims..][..dims], &inv_ls2).sqrt();
                let v = signal * matern(r);
                k[i * n + j] = v;
                k[j * n + i] = v;
            }
            k[i * n + i] += params.noise();
        }
        let chol = Cholesky::new(&k, n)?;
        let alpha = chol.solve(&y);
        Some(Self {
            dims,
            x,
            y,
            params,
            inv_ls2,
            signal,
            chol,
            alpha,
        })
    }

    /// The GP with MAP hyperparameters for `x` (n rows of `dims`) and `y`.
    pub fn fit(dims: usize, x: Vec<f64>, y: Vec<f64>) -> Option<Self> {
        let (mu, _) = lengthscale_prior(dims);
        let mut best: Option<(Vec<f64>, f64)> = None;
        // Two starts: the prior's mode region and much shorter scales, which
        // the likelihood sometimes needs and a local search from long scales
        // does not reach.
        for start in [mu - 1.5, mu - 3.0] {
            let theta0 = GpParams {
                log_lengthscales: vec![start; dims],
                log_signal: SIGNAL_PRIOR.0,
                log_noise: NOISE_PRIOR.0,
            }
            .to_vec();
            let objective = |t: &[f64]| neg_log_posterior(dims, &x, &y, t);
            let (theta, value) = optimize::minimize(objective, &theta0, 40);
            if value.is_finite() && best.as_ref().is_none_or(|(_, b)| value < *b) {
                best = Some((theta, value));
            }
        }
        let mut theta = best.map(|(t, _)| t).unwrap_or_else(|| {
            let mut t = vec![mu; dims];
            t.extend([SIGNAL_PRIOR.0, NOISE_PRIOR.0]);
            t
        });
        for (i, t) in theta.iter_mut().enumerate() {
            *t = if i < dims {
                t.clamp(-7.0, 7.0)
            } else {
                t.clamp(-20.0, 5.0)
            };
        }
        Self::new(dims, x, y, GpParams::from_vec(&theta))
    }

    /// The fitted hyperparameters.
    pub fn params(&self) -> &GpParams {
        &self.params
    }

    /// The number of observations.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// Whether the GP has no observations.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// The posterior mean and variance of the latent function at `q`.
    pub fn predict(&self, q: &[f64]) -> (f64, f64) {
        let k = self.cross(q);
        let mean = k.iter().zip(&self.alpha).map(|(a, b)| a * b).sum();
        let v = self.chol.solve_lower(&k);
        let var = self.signal - v.iter().map(|v| v * v).sum::<f64>();
        (mean, var.max(1e-12))
    }

    /// The same GP with one more observation (same hyperparameters): the
    /// kriging believer's fantasies.
    pub fn with_observation(&self, q: &[f64], y: f64) -> Option<Self> {
        let k = self.cross(q);
        let chol = self.chol.extend(&k, self.signal + self.params.noise())?;
        let mut x = self.x.clone();
        x.extend_from_slice(q);
        let mut ys = self.y.clone();
        ys.push(y);
        let alpha = chol.solve(&ys);
        Some(Self {
            x,
            y: ys,
            chol,
            alpha,
            ..self.clone()
        })
    }

    fn cross(&self, q: &[f64]) -> Vec<f64> {
        (0..self.len())
            .map(|i| {
                let xi = &self.x[i * self.dims..][..self.dims];
                self.signal * matern(scaled_sq_dist(xi, q, &self.inv_ls2).sqrt())
            })
            .collect()
    }

    /// log p(y | x, hyperparameters).
    pub fn log_marginal_likelihood(&self) -> f64 {
        let fit: f64 = self.y.iter().zip(&self.alpha).map(|(a, b)| a * b).sum();
        let n = self.len() as f64;
        -0.5 * fit - 0.5 * self.chol.log_det() - 0.5 * n * (2.0 * std::f64::consts::PI).ln()
    }
}

/// The negative log marginal likelihood minus the log priors, and its
/// gradient in `theta` (log length scales, log signal, log noise).
fn neg_log_posterior(dims: usize, x: &[f64], y: &[f64], theta: &[f64]) -> (f64, Vec<f64>) {
    let params = GpParams::from_vec(theta);
    let Some(gp) = Gp::new(dims, x.to_vec(), y.to_vec(), params.clone()) else {
        return (f64::INFINITY, vec![0.0; theta.len()]);
    };
    let n = y.len();
    // W = alpha alphaᵀ - K⁻¹; d(-log p)/dθ = -½ tr(W dK/dθ).
    let mut w = gp.chol.inverse();
    for i in 0..n {
        for j in 0..n {
            w[i * n + j] = gp.alpha[i] * gp.alpha[j] - w[i * n + j];
        }
    }
    let mut grad = vec![0.0; dims + 2];
    for i in 0..n {
        let xi = &x[i * dims..][..dims];
        for j in 0..i {
            let xj = &x[j * dims..][..dims];
            let r = scaled_sq_dist(xi, xj, &gp.inv_ls2).sqrt();
            let e = (-SQRT5 * r).exp();
            // Both triangles: W is symmetric.
            let wij = 2.0 * w[i * n + j];
            grad[dims] -= 0.5 * wij * gp.signal * (1.0 + SQRT5 * r + 5.0 / 3.0 * r * r) * e;
            let base = wij * gp.signal * 5.0 / 3.0 * (1.0 + SQRT5 * r) * e;
            for d in 0..dims {
                grad[d] -= 0.5 * base * (xi[d] - xj[d]).powi(2) * gp.inv_ls2[d];
            }
        }
        grad[dims] -= 0.5 * w[i * n + i] * gp.signal;
        grad[dims + 1] -= 0.5 * w[i * n + i] * params.log_noise.exp();
    }
    let mut value = -gp.log_marginal_likelihood();
    let mut prior = |t: f64, (m, s): (f64, f64), g: &mut f64| {
        value += 0.5 * ((t - m) / s).powi(2);
        *g += (t - m) / (s * s);
    };
    let ls_prior = lengthscale_prior(dims);
    for d in 0..dims {
        prior(theta[d], ls_prior, &mut grad[d]);
    }
    prior(theta[dims], SIGNAL_PRIOR, &mut grad[dims]);
    prior(theta[dims + 1], NOISE_PRIOR, &mut grad[dims + 1]);
    (value, grad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> (Vec<f64>, Vec<f64>) {
        let xs: Vec<f64> = (0..12).map(|i| i as f64 / 11.0).collect();
        let ys = xs.iter().map(|x| (6.0 * x).sin()).collect();
        (xs, ys)
    }

    #[test]
    fn posterior_interpolates_training_points() {
        let (x, y) = data();
        let gp = Gp::fit(1, x.clone(), y.clone()).unwrap();
        for (xi, yi) in x.iter().zip(&y) {
            let (m, v) = gp.predict(&[*xi]);
            assert!((m - yi).abs() < 1e-2, "{xi}: {m} vs {yi}");
            assert!(v < 1e-3);
        }
        // Between points it still follows sin, and is unsure far outside.
        let (m, _) = gp.predict(&[0.5 / 11.0]);
        assert!((m - (6.0 * 0.5 / 11.0f64).sin()).abs() < 0.05);
        let (_, far) = gp.predict(&[3.0]);
        assert!(far > 0.5 * gp.params().log_signal.exp());
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let x = vec![0.1, 0.7, 0.4, 0.2, 0.9, 0.5, 0.3, 0.3];
        let y = vec![0.5, -1.0, 0.3, 1.2];
        let theta = [-1.0, 0.3, 0.2, -4.0];
        let (_, g) = neg_log_posterior(2, &x, &y, &theta);
        for k in 0..theta.len() {
            let mut up = theta;
            let mut down = theta;
            up[k] += 1e-5;
            down[k] -= 1e-5;
            let fd = (neg_log_posterior(2, &x, &y, &up).0 - neg_log_posterior(2, &x, &y, &down).0)
                / 2e-5;
            assert!(
                (fd - g[k]).abs() < 1e-4 * fd.abs().max(1.0),
                "{k}: {fd} vs {}",
                g[k]
            );
        }
    }

    #[test]
    fn fitting_beats_the_starting_hyperparameters() {
        let (x, y) = data();
        let start = GpParams {
            log_lengthscales: vec![1.0],
            log_signal: 0.0,
            log_noise: -7.0,
        };
        let before = Gp::new(1, x.clone(), y.clone(), start)
            .unwrap()
            .log_marginal_likelihood();
        let after = Gp::fit(1, x, y).unwrap().log_marginal_likelihood();
        assert!(after > before, "{after} <= {before}");
    }

    #[test]
    fn a_fantasy_is_the_same_as_refitting_with_it() {
        let (x, y) = data();
        let gp = Gp::fit(1, x.clone(), y.clone()).unwrap();
        let grown = gp.with_observation(&[0.55], 0.2).unwrap();
        let mut x2 = x;
        x2.push(0.55);
        let mut y2 = y;
        y2.push(0.2);
        let direct = Gp::new(1, x2, y2, gp.params().clone()).unwrap();
        let (a, b) = (grown.predict(&[0.3]), direct.predict(&[0.3]));
        assert!((a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9);
    }
}
