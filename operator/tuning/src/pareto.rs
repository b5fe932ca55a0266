//! Pareto dominance, non-dominated sorting and the hypervolume indicator of
//! a set of loss vectors (every objective minimized).

use crate::trial::{Direction, Trial};

/// Whether `a` dominates `b`: no worse anywhere and better somewhere.
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x <= y) && a.iter().zip(b).any(|(x, y)| x < y)
}

/// The fronts of `points`, best first (Deb et al.'s fast non-dominated sort):
/// front 0 is the Pareto front, front k what is left dominated only by
/// earlier fronts. Each front lists indices in increasing order.
pub fn non_dominated_sort(points: &[Vec<f64>]) -> Vec<Vec<usize>> {
    let n = points.len();
    let mut dominated_by = vec![0usize; n];
    let mut dominates_list = vec![Vec::new(); n];
    for i in 0..n {
        for j in 0..n {
            if i != j && dominates(&points[i], &points[j]) {
                dominates_list[i].push(j);
                dominated_by[j] += 1;
            }
        }
    }
    let mut fronts = Vec::new();
    let mut current: Vec<usize> = (0..n).filter(|i| dominated_by[*i] == 0).collect();
    while !current.is_empty() {
        let mut next = Vec::new();
        for &i in &current {
            for &j in &dominates_list[i] {
                dominated_by[j] -= 1;
                if dominated_by[j] == 0 {
                    next.push(j);
                }
            }
        }
        next.sort_unstable();
        fronts.push(std::mem::replace(&mut current, next));
    }
    fronts
}

/// The history indices of the observed trials on the Pareto front of the
/// objectives in `directions` (the TuningJob status's best trials).
pub fn pareto_front(history: &[Trial], directions: &[Direction]) -> Vec<usize> {
    let observed: Vec<usize> = (0..history.len())
        .filter(|i| history[*i].is_observed(directions.len()))
        .collect();
    let losses: Vec<Vec<f64>> = observed
        .iter()
        .map(|i| {
            directions
                .iter()
                .zip(&history[*i].values)
                .map(|(d, v)| d.loss(*v))
                .collect()
        })
        .collect();
    let fronts = non_dominated_sort(&losses);
    fronts
        .first()
        .map(|f| f.iter().map(|k| observed[*k]).collect())
        .unwrap_or_default()
}

/// The hypervolume dominated by `points` and bounded by `reference` (every
/// coordinate minimized; points not strictly below the reference add
/// nothing). Exact, by slicing along the last objective: fast for two
/// objectives (a sort and a sweep), fine for a few more on small sets.
pub fn hypervolume(points: &[Vec<f64>], reference: &[f64]) -> f64 {
    let inside: Vec<&Vec<f64>> = points
        .iter()
        .filter(|p| p.iter().zip(reference).all(|(x, r)| x < r))
        .collect();
    slice_volume(&inside, reference)
}

fn slice_volume(points: &[&Vec<f64>], reference: &[f64]) -> f64 {
    let d = reference.len();
    if points.is_empty() {
        return 0.0;
    }
    if d == 1 {
        return reference[0] - points.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min);
    }
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| a[d - 1].total_cmp(&b[d - 1]));
    let mut volume = 0.0;
    for i in 0..sorted.len() {
        let top = if i + 1 < sorted.len() {
            sorted[i + 1][d - 1]
        } else {
            reference[d - 1]
        };
        let height = top - sorted[i][d - 1];
        if height > 0.0 {
            let projected: Vec<Vec<f64>> =
                sorted[..=i].iter().map(|p| p[..d - 1].to_vec()).collect();
            let refs: Vec<&Vec<f64>> = projected.iter().collect();
            volume += height * slice_volume(&refs, &reference[..d - 1]);
        }
    }
    volume
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Value;

    #[test]
    fn sorts_into_fronts() {
        let points = vec![
            vec![1.0, 3.0],
            vec![2.0, 2.0],
            vec![3.0, 1.0],
            vec![3.0, 3.0],
            vec![2.0, 2.0],
            vec![4.0, 4.0],
        ];
        // The duplicate (2, 2) does not dominate its twin: both are on front 0.
        assert_eq!(
            non_dominated_sort(&points),
            vec![vec![0, 1, 2, 4], vec![3], vec![5]]
        );
        assert!(dominates(&[1.0, 1.0], &[1.0, 2.0]) && !dominates(&[1.0, 2.0], &[1.0, 2.0]));
    }

    #[test]
    fn hypervolume_of_hand_computed_sets() {
        // Columns of widths 1 with heights 1, 2, 3.
        let staircase = vec![vec![1.0, 3.0], vec![2.0, 2.0], vec![3.0, 1.0]];
        assert!((hypervolume(&staircase, &[4.0, 4.0]) - 6.0).abs() < 1e-12);
        // A dominated point and one outside the reference change nothing.
        let mut more = staircase.clone();
        more.extend([vec![3.5, 3.5], vec![0.5, 5.0]]);
        assert!((hypervolume(&more, &[4.0, 4.0]) - 6.0).abs() < 1e-12);
        // Three objectives: two unit-cornered boxes, 2x2x1 and 1x1x2, overlapping in 1x1x1.
        let three = vec![vec![0.0, 0.0, 1.0], vec![1.0, 1.0, 0.0]];
        assert!((hypervolume(&three, &[2.0, 2.0, 2.0]) - (4.0 + 2.0 - 1.0)).abs() < 1e-12);
        assert_eq!(hypervolume(&[], &[1.0, 1.0]), 0.0);
    }

    #[test]
    fn front_of_a_history_respects_directions() {
        let t = |a: f64, b: f64| Trial::completed(vec![Value::Float(0.0)], vec![a, b]);
        let history = vec![
            t(1.0, 1.0),
            t(2.0, 2.0),
            t(0.5, 0.5),
            Trial::pending(vec![Value::Float(0.0)]),
        ];
        // Minimize the first, maximize the second: each trial is better than
        // the others on one objective and worse on the other.
        let front = pareto_front(&history, &[Direction::Minimize, Direction::Maximize]);
        assert_eq!(front, vec![0, 1, 2]);
        let front = pareto_front(&history, &[Direction::Minimize, Direction::Minimize]);
        assert_eq!(front, vec![2]);
    }
}
