//! Dense Cholesky factorization and triangular solves, all the GP needs.
//! Matrices are row-major `Vec<f64>`s of n x n.

/// The lower-triangular factor L of a symmetric positive-definite A = L Lᵀ.
#[derive(Clone, Debug)]
pub struct Cholesky {
    n: usize,
    l: Vec<f64>,
}

impl Cholesky {
    /// The factor of `a` (n x n), or `None` when `a` is not positive definite.
    pub fn new(a: &[f64], n: usize) -> Option<Self> {
        let mut l = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let dot: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
                let v = a[i * n + j] - dot;
                if i == j {
                    if v.is_nan() || v <= 0.0 {
                        return None;
                    }
                    l[i * n + i] = v.sqrt();
                } else {
                    l[i * n + j] = v / l[j * n + j];
                }
            }
        }
        Some(Self { n, l })
    }

    /// The order n.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The factor grown by one row and column of A: `column` holds A's new
    /// off-diagonal entries, `diagonal` its new corner. `None` when the
    /// grown matrix is not positive definite.
    pub fn extend(&self, column: &[f64], diagonal: f64) -> Option<Self> {
        let n = self.n;
        let row = self.solve_lower(column);
        let d = diagonal - row.iter().map(|v| v * v).sum::<f64>();
        if d.is_nan() || d <= 0.0 {
            return None;
        }
        let m = n + 1;
        let mut l = vec![0.0; m * m];
        for i in 0..n {
            l[i * m..i * m + n].copy_from_slice(&self.l[i * n..i * n + n]);
        }
        l[n * m..n * m + n].copy_from_slice(&row);
        l[n * m + n] = d.sqrt();
        Some(Self { n: m, l })
    }

    /// x with L x = b.
    pub fn solve_lower(&self, b: &[f64]) -> Vec<f64> {
        let n = self.n;
        let mut x = b.to_vec();
        for i in 0..n {
            let row = &self.l[i * n..i * n + i];
            let dot: f64 = row.iter().zip(&x[..i]).map(|(a, b)| a * b).sum();
            x[i] = (x[i] - dot) / self.l[i * n + i];
        }
        x
    }

    /// x with Lᵀ x = b.
    pub fn solve_upper(&self, b: &[f64]) -> Vec<f64> {
        let n = self.n;
        let mut x = b.to_vec();
        for i in (0..n).rev() {
            x[i] /= self.l[i * n + i];
            let xi = x[i];
            for (k, xk) in x[..i].iter_mut().enumerate() {
                *xk -= self.l[i * n + k] * xi;
            }
        }
        x
    }

    /// x with A x = b.
    pub fn solve(&self, b: &[f64]) -> Vec<f64> {
        self.solve_upper(&self.solve_lower(b))
    }

    /// log det A.
    pub fn log_det(&self) -> f64 {
        2.0 * (0..self.n)
            .map(|i| self.l[i * self.n + i].ln())
            .sum::<f64>()
    }

    /// A⁻¹, row-major.
    pub fn inverse(&self) -> Vec<f64> {
        let n = self.n;
        let mut inv = vec![0.0; n * n];
        let mut e = vec![0.0; n];
        for j in 0..n {
            e.iter_mut().for_each(|v| *v = 0.0);
            e[j] = 1.0;
            let col = self.solve(&e);
            for i in 0..n {
                inv[i * n + j] = col[i];
            }
        }
        inv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spd() -> Vec<f64> {
        vec![4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0]
    }

    #[test]
    fn factor_solve_and_determinant() {
        let a = spd();
        let c = Cholesky::new(&a, 3).unwrap();
        let b = [1.0, -2.0, 0.5];
        let x = c.solve(&b);
        for i in 0..3 {
            let ax: f64 = (0..3).map(|j| a[i * 3 + j] * x[j]).sum();
            assert!((ax - b[i]).abs() < 1e-12);
        }
        // det by cofactors: 4(15-1) - 2(6-0.6) + 0.6(2-3) = 44.6
        assert!((c.log_det() - 44.6f64.ln()).abs() < 1e-12);
        let inv = c.inverse();
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| a[i * 3 + k] * inv[k * 3 + j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        assert!(Cholesky::new(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }

    #[test]
    fn extending_matches_factoring_the_grown_matrix() {
        let a = spd();
        let top = [a[0], a[1], a[3], a[4]];
        let grown = Cholesky::new(&top, 2)
            .unwrap()
            .extend(&[0.6, 1.0], 3.0)
            .unwrap();
        let direct = Cholesky::new(&a, 3).unwrap();
        for (x, y) in grown.l.iter().zip(&direct.l) {
            assert!((x - y).abs() < 1e-12);
        }
    }
}
