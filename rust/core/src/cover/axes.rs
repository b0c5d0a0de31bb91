//! Which coordinates a net hashes its grid on and copies into each centre's sketch.

use super::cells::GRID_AXES;
use super::sketch::{Real, SKETCH};

/// The coordinates a net looks at before a full comparison: `grid` (at most `GRID_AXES`) hash the
/// cells, `sketch` (at most `SKETCH`, beginning with `grid`) are copied per centre for a first test.
#[derive(Clone, Debug)]
pub(super) struct Axes {
    pub(super) grid: Vec<usize>,
    pub(super) sketch: [usize; SKETCH],
}

/// Picks coordinates one at a time, each the one with the most variance left once those already
/// picked are regressed out (a pivoted Cholesky factorisation of the sample covariance; ties to the
/// lower index), until nothing is left; then, while the sketch has room, the widest remaining ones.
/// Outputs of a model are strongly correlated, and the coordinates with the largest spread often
/// carry the same direction twice: a grid on those prunes little. Any choice gives the same nets;
/// this only decides how many candidate centres a query compares in full.
pub(super) fn choose_axes<T: Real>(points: &[T], dim: usize) -> Axes {
    // A sample of rows: at most 1024, and at most 2^22 values, whatever the dimension.
    let rows = (points.len() / dim).min(1024).min((1 << 22) / dim).max(1);
    // Column-major and centred: column j is coordinate j over the sample.
    let mut columns: Vec<Vec<f64>> = (0..dim)
        .map(|j| {
            let column: Vec<f64> = (0..rows).map(|i| points[i * dim + j].to_f64()).collect();
            let mean = column.iter().sum::<f64>() / rows as f64;
            column.into_iter().map(|v| v - mean).collect()
        })
        .collect();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let variances: Vec<f64> = columns.iter().map(|c| dot(c, c)).collect();
    let widest_first = |candidates: &mut dyn Iterator<Item = (f64, usize)>| {
        candidates.fold((0.0, usize::MAX), |best, c| if c.0 > best.0 { c } else { best })
    };
    let wanted = SKETCH.min(dim);
    let mut picked: Vec<usize> = Vec::with_capacity(wanted);
    while picked.len() < wanted {
        let (variance, pivot) = widest_first(&mut columns.iter().enumerate().map(|(j, c)| (dot(c, c), j)));
        // Nothing left, or only the rounding noise of the directions already picked.
        if pivot == usize::MAX || variance <= 1e-12 * variances[picked.first().copied().unwrap_or(pivot)] {
            break;
        }
        picked.push(pivot);
        let column = std::mem::replace(&mut columns[pivot], vec![0.0; rows]);
        for other in columns.iter_mut() {
            let coefficient = dot(&column, other) / variance;
            other.iter_mut().zip(&column).for_each(|(v, p)| *v -= coefficient * p);
        }
    }
    let grid = picked[..picked.len().min(GRID_AXES)].to_vec();
    while picked.len() < wanted {
        let pivot = widest_first(&mut (0..dim).filter(|j| !picked.contains(j)).map(|j| (variances[j], j))).1;
        // All the rest are constant: any of them will do.
        picked.push(if pivot == usize::MAX {
            (0..dim).find(|j| !picked.contains(j)).unwrap_or(0)
        } else {
            pivot
        });
    }
    // Fewer than `SKETCH` coordinates: repeat the first (the test is the same, and a sketch of
    // fixed width compiles to straight-line code).
    let sketch = std::array::from_fn(|i| picked.get(i).copied().unwrap_or(picked[0]));
    Axes { grid, sketch }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cover::tests::correlated_points;

    #[test]
    fn grid_axes_follow_the_independent_directions() {
        let points = correlated_points(2000);
        let axes = choose_axes(&points, 12);
        // Three independent directions: three grid axes, never the duplicate pair 0/1 together,
        // never the constant coordinate 4; the sketch holds 8 distinct coordinates.
        assert_eq!(axes.grid.len(), 3, "{axes:?}");
        assert!(!(axes.grid.contains(&0) && axes.grid.contains(&1)), "{axes:?}");
        assert!(!axes.grid.contains(&4), "{axes:?}");
        assert_eq!(&axes.sketch[..3], &axes.grid[..]);
        let mut distinct = axes.sketch.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 8, "{axes:?}");
        // Constant points: no grid axis, a sketch all the same.
        let constant = vec![1.5; 12 * 100];
        let axes = choose_axes(&constant, 12);
        assert!(axes.grid.is_empty());
        assert_eq!(axes.sketch.len(), 8);
    }
}
