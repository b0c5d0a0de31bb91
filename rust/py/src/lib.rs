//! Thin PyO3 glue: argument conversion, GIL release, interrupts, errors → exceptions.
//! No numerics here: every function calls the core function of the same name.
//! Shapes, dtypes and finiteness are checked in `python/moecover` before these are called; the
//! core re-checks lengths and returns errors (never panics) if a caller gets them wrong.

use moecover_core::cover::{GroupedNets, MultiNet, Real};
use moecover_core::parallel::Interrupt;
use moecover_core::sampling::{Pinned, Sampler};
use moecover_core::{evaluate, exact, jacobian, patterns, routing, sampling, Error, MoeSpec, SpecOptions};
use numpy::{Element, IntoPyArray, PyArray1, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

// `moecover.TooLargeError`, a ValueError and a MemoryError (as the Python-side size checks raise):
// its class is imported once, on first use, and cached.
pyo3::import_exception!(moecover._checks, TooLargeError);

fn to_pyerr(error: Error) -> PyErr {
    match error {
        Error::InvalidArgument { .. } => PyValueError::new_err(error.to_string()),
        Error::TooLarge { .. } => TooLargeError::new_err(error.to_string()),
        Error::Interrupted => PyKeyboardInterrupt::new_err("interrupted"),
        Error::ThreadPool(_) => PyRuntimeError::new_err(error.to_string()),
    }
}

/// Why a detached call failed: the core's error, or the exception a signal handler raised.
enum Failure {
    Core(Error),
    Signal(PyErr),
}

impl From<Failure> for PyErr {
    fn from(failure: Failure) -> PyErr {
        match failure {
            Failure::Core(error) => to_pyerr(error),
            Failure::Signal(error) => error,
        }
    }
}

/// Runs `work` with the GIL released. Between chunks the core asks the interrupt check, which
/// briefly retakes the GIL on this (the calling) thread to run Python's signal handlers: Ctrl-C
/// raises KeyboardInterrupt there, and the core stops at the next chunk boundary.
fn detach_core<T: Send>(
    py: Python<'_>,
    work: impl FnOnce(Interrupt) -> moecover_core::Result<T> + Send,
) -> Result<T, Failure> {
    let mut pending: Option<PyErr> = None;
    let result = py.detach(|| {
        let mut check = || match Python::attach(|py| py.check_signals()) {
            Ok(()) => false,
            Err(err) => {
                pending = Some(err);
                true
            }
        };
        work(&mut check)
    });
    match (result, pending.take()) {
        // A signal handler raised during the call: that exception is the call's outcome, also if
        // the core finished before it saw the request to stop (the signal must not be lost).
        (_, Some(signal_error)) => Err(Failure::Signal(signal_error)),
        (Ok(value), None) => Ok(value),
        (Err(error), None) => Err(Failure::Core(error)),
    }
}

/// [`detach_core`], with its failure as a Python exception.
fn detach_interruptible<T: Send>(
    py: Python<'_>,
    work: impl FnOnce(Interrupt) -> moecover_core::Result<T> + Send,
) -> PyResult<T> {
    Ok(detach_core(py, work)?)
}

/// The data of a C-contiguous array; the Python side makes arrays contiguous first, so an error
/// here names the argument of a caller that did not.
fn contiguous<'a, T: Element, D: numpy::ndarray::Dimension>(
    array: &'a numpy::PyReadonlyArray<'_, T, D>,
    argument: &str,
) -> PyResult<&'a [T]> {
    array
        .as_slice()
        .map_err(|e| PyValueError::new_err(format!("{argument}: {e}")))
}

/// A validated MoE class; `moecover.MoESpec` holds one.
#[pyclass(frozen, name = "CoreSpec", module = "moecover._core")]
struct CoreSpec {
    inner: MoeSpec,
}

#[pymethods]
impl CoreSpec {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        layers: i64,
        experts: i64,
        top_k: i64,
        d_model: i64,
        seq_len: i64,
        heads: i64,
        expert: &str,
        expert_hidden: i64,
        gate: &str,
        block: &str,
        readout: &str,
        param_bound: f64,
    ) -> PyResult<Self> {
        let options = SpecOptions {
            layers,
            experts,
            top_k,
            d_model,
            seq_len,
            heads,
            expert,
            expert_hidden,
            gate,
            block,
            readout,
            param_bound,
        };
        MoeSpec::new(&options).map(|inner| CoreSpec { inner }).map_err(to_pyerr)
    }

    #[getter]
    fn active_params(&self) -> usize {
        self.inner.active_params()
    }

    #[getter]
    fn total_params(&self) -> usize {
        self.inner.total_params()
    }

    #[getter]
    fn output_dim(&self) -> usize {
        self.inner.output_dim()
    }

    #[getter]
    fn patterns_per_token(&self) -> u64 {
        self.inner.patterns_per_token()
    }

    /// `[(name, layer, kind, expert, tensor, shape, offset, size), ...]` in flat order.
    fn layout(&self) -> Vec<LayoutRow> {
        self.inner
            .layout()
            .into_iter()
            .map(|b| (b.name, b.layer, b.kind, b.expert, b.tensor, b.shape, b.offset, b.size))
            .collect()
    }
}

type LayoutRow = (
    String,
    usize,
    &'static str,
    Option<usize>,
    &'static str,
    Vec<usize>,
    usize,
    usize,
);

/// Flat `(m * P,)` parameters of samples `start .. start + m`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn sample_params<'py>(
    py: Python<'py>,
    spec: &CoreSpec,
    seed: u64,
    start: u64,
    m: usize,
    sampler: &str,
    pinned: Pinned,
    n_threads: usize,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let spec = &spec.inner;
    let sampler = Sampler::from_name(sampler).map_err(to_pyerr)?;
    let params = detach_interruptible(py, |interrupt| {
        sampling::sample_params(spec, seed, start, m, sampler, &pinned, n_threads, interrupt)
    })?;
    Ok(params.into_pyarray(py))
}

type FlatEvaluation<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<u32>>);

fn into_arrays(py: Python<'_>, evaluation: evaluate::Evaluation) -> FlatEvaluation<'_> {
    (evaluation.values.into_pyarray(py), evaluation.routes.into_pyarray(py))
}

/// Flat values and routes of `params` (C-contiguous, flattened `(m, P)`) on `inputs` (flattened).
#[pyfunction(name = "evaluate")]
fn evaluate_py<'py>(
    py: Python<'py>,
    spec: &CoreSpec,
    params: PyReadonlyArray1<'py, f64>,
    inputs: PyReadonlyArray1<'py, f64>,
    n_threads: usize,
) -> PyResult<FlatEvaluation<'py>> {
    let spec = &spec.inner;
    let params = contiguous(&params, "params")?;
    let inputs = contiguous(&inputs, "inputs")?;
    let evaluation = detach_interruptible(py, |interrupt| {
        evaluate::evaluate(spec, params, inputs, n_threads, interrupt)
    })?;
    Ok(into_arrays(py, evaluation))
}

/// Flat values and routes of samples `start .. start + m` of `seed` on `inputs` (flattened).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn evaluate_sampled<'py>(
    py: Python<'py>,
    spec: &CoreSpec,
    inputs: PyReadonlyArray1<'py, f64>,
    seed: u64,
    start: u64,
    m: usize,
    sampler: &str,
    pinned: Pinned,
    n_threads: usize,
) -> PyResult<FlatEvaluation<'py>> {
    let spec = &spec.inner;
    let inputs = contiguous(&inputs, "inputs")?;
    let sampler = Sampler::from_name(sampler).map_err(to_pyerr)?;
    let evaluation = detach_interruptible(py, |interrupt| {
        evaluate::evaluate_sampled(spec, inputs, seed, start, m, sampler, &pinned, n_threads, interrupt)
    })?;
    Ok(into_arrays(py, evaluation))
}

type FlatJacobians<'py> = (
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<u32>>,
    Bound<'py, PyArray1<f64>>,
    Vec<bool>,
);

/// Flat values, routes, Jacobians and boundary flags of `params` (flattened `(m, P)`) on `inputs`.
#[pyfunction(name = "jacobian")]
fn jacobian_py<'py>(
    py: Python<'py>,
    spec: &CoreSpec,
    params: PyReadonlyArray1<'py, f64>,
    inputs: PyReadonlyArray1<'py, f64>,
    n_threads: usize,
) -> PyResult<FlatJacobians<'py>> {
    let spec = &spec.inner;
    let params = contiguous(&params, "params")?;
    let inputs = contiguous(&inputs, "inputs")?;
    let found = detach_interruptible(py, |interrupt| {
        jacobian::jacobian(spec, params, inputs, n_threads, interrupt)
    })?;
    Ok((
        found.values.into_pyarray(py),
        found.routes.into_pyarray(py),
        found.matrix.into_pyarray(py),
        found.on_boundary,
    ))
}

/// Flat routes, boundary flags and full-row-rank certificates.
type Certificates<'py> = (Bound<'py, PyArray1<u32>>, Vec<bool>, Vec<bool>);

/// Per θ of `params` (flattened `(m, P)`): routes, boundary flags, and whether its Jacobian on
/// `inputs`, restricted to the `free` column blocks `(start, end)`, is certified full row rank.
#[pyfunction(name = "certify_full_row_rank")]
fn certify_full_row_rank_py<'py>(
    py: Python<'py>,
    spec: &CoreSpec,
    params: PyReadonlyArray1<'py, f64>,
    inputs: PyReadonlyArray1<'py, f64>,
    free: Vec<(usize, usize)>,
    rtol: f64,
    n_threads: usize,
) -> PyResult<Certificates<'py>> {
    let spec = &spec.inner;
    let params = contiguous(&params, "params")?;
    let inputs = contiguous(&inputs, "inputs")?;
    let free: Vec<std::ops::Range<usize>> = free.into_iter().map(|(a, b)| a..b).collect();
    let found = detach_interruptible(py, |interrupt| {
        jacobian::certify_full_row_rank(spec, params, inputs, &free, rtol, n_threads, interrupt)
    })?;
    Ok((found.routes.into_pyarray(py), found.on_boundary, found.full_row_rank))
}

/// Whether each of the `m` dense `rows × width` matrices in `matrices` (flattened) is certified
/// full row rank at `rtol` by the Gram test `certify_full_row_rank` applies.
#[pyfunction(name = "gram_full_row_rank")]
fn gram_full_row_rank_py(
    matrices: PyReadonlyArray1<'_, f64>,
    rows: usize,
    width: usize,
    rtol: f64,
) -> PyResult<Vec<bool>> {
    let matrices = contiguous(&matrices, "matrices")?;
    if rows == 0 || width == 0 || !matrices.len().is_multiple_of(rows * width) {
        return Err(PyValueError::new_err(format!(
            "matrices: length {} is not a whole number of {rows} x {width} matrices",
            matrices.len()
        )));
    }
    let mut scratch = moecover_core::rank::GramScratch::new(rows);
    let all_columns = 0..width;
    Ok(matrices
        .chunks_exact(rows * width)
        .map(|m| {
            moecover_core::rank::full_row_rank(m, rows, width, std::slice::from_ref(&all_columns), rtol, &mut scratch)
        })
        .collect())
}

/// The multi-scale net engine in the input's precision.
enum Nets {
    F32(MultiNet<f32>),
    F64(MultiNet<f64>),
}

/// Greedy ℓ∞ nets at several scales, fed in chunks; `moecover.CoverStream` and `cover` wrap it.
#[pyclass(name = "CoverEngine", module = "moecover._core")]
struct CoverEngine {
    nets: Nets,
}

fn add_points<T: Real + Element>(
    py: Python<'_>,
    nets: &mut MultiNet<T>,
    points: &Bound<'_, PyAny>,
    n_threads: usize,
    argument: &str,
) -> PyResult<()> {
    let array: PyReadonlyArray2<T> = points.extract()?;
    let slice = contiguous(&array, argument)?;
    // The core names its input `points`; the caller's name for it may differ (`chunk`).
    detach_core(py, |interrupt| nets.add(slice, n_threads, interrupt)).map_err(|failure| match failure {
        Failure::Core(Error::InvalidArgument {
            argument: "points",
            message,
        }) => PyValueError::new_err(format!("{argument}: {message}")),
        other => other.into(),
    })
}

#[pymethods]
impl CoverEngine {
    #[new]
    fn new(deltas: Vec<f64>, dim: usize, double: bool, keep_assignment: bool, memory_limit: usize) -> PyResult<Self> {
        let nets = if double {
            Nets::F64(
                MultiNet::new(&deltas, dim, keep_assignment)
                    .map_err(to_pyerr)?
                    .with_memory_limit(memory_limit),
            )
        } else {
            Nets::F32(
                MultiNet::new(&deltas, dim, keep_assignment)
                    .map_err(to_pyerr)?
                    .with_memory_limit(memory_limit),
            )
        };
        Ok(CoverEngine { nets })
    }

    /// Scans a C-contiguous (rows, dim) array of the engine's dtype.
    fn add(&mut self, py: Python<'_>, points: &Bound<'_, PyAny>, n_threads: usize, argument: &str) -> PyResult<()> {
        match &mut self.nets {
            Nets::F32(nets) => add_points(py, nets, points, n_threads, argument),
            Nets::F64(nets) => add_points(py, nets, points, n_threads, argument),
        }
    }

    #[getter]
    fn n_points(&self) -> u64 {
        match &self.nets {
            Nets::F32(nets) => nets.n_points(),
            Nets::F64(nets) => nets.n_points(),
        }
    }

    fn net_sizes(&self) -> Vec<usize> {
        match &self.nets {
            Nets::F32(nets) => nets.net_sizes(),
            Nets::F64(nets) => nets.net_sizes(),
        }
    }

    /// Bytes the nets hold (what the memory limit is compared with).
    fn memory_bytes(&self) -> usize {
        match &self.nets {
            Nets::F32(nets) => nets.memory_bytes(),
            Nets::F64(nets) => nets.memory_bytes(),
        }
    }

    fn tail_discovery(&self) -> Vec<f64> {
        match &self.nets {
            Nets::F32(nets) => nets.tail_discovery(),
            Nets::F64(nets) => nets.tail_discovery(),
        }
    }

    fn net_sizes_at(&self, points: u64) -> Vec<usize> {
        match &self.nets {
            Nets::F32(nets) => nets.net_sizes_at(points),
            Nets::F64(nets) => nets.net_sizes_at(points),
        }
    }

    fn singletons(&self) -> Vec<usize> {
        match &self.nets {
            Nets::F32(nets) => nets.singletons(),
            Nets::F64(nets) => nets.singletons(),
        }
    }

    /// Point indices of the centres of scale `scale`, in opening order.
    fn centres<'py>(&self, py: Python<'py>, scale: usize) -> Bound<'py, PyArray1<u64>> {
        let centres = match &self.nets {
            Nets::F32(nets) => nets.centres(scale).to_vec(),
            Nets::F64(nets) => nets.centres(scale).to_vec(),
        };
        centres.into_pyarray(py)
    }

    /// Each point's centre at scale `scale` (engines built with `keep_assignment`).
    fn assignment<'py>(&self, py: Python<'py>, scale: usize) -> Option<Bound<'py, PyArray1<i64>>> {
        let assignment = match &self.nets {
            Nets::F32(nets) => nets.assignment(scale).map(<[i64]>::to_vec),
            Nets::F64(nets) => nets.assignment(scale).map(<[i64]>::to_vec),
        };
        assignment.map(|a| a.into_pyarray(py))
    }
}

/// One greedy net per routing pattern, fed values and routes together; `moecover.GroupedCoverStream`
/// wraps it.
#[pyclass(name = "GroupedEngine", module = "moecover._core")]
struct GroupedEngine {
    nets: GroupedNets,
}

#[pymethods]
impl GroupedEngine {
    #[new]
    fn new(deltas: Vec<f64>, dim: usize, pattern_len: usize, memory_limit: usize) -> PyResult<Self> {
        let nets = GroupedNets::new(&deltas, dim, pattern_len)
            .map_err(to_pyerr)?
            .with_memory_limit(memory_limit);
        Ok(GroupedEngine { nets })
    }

    /// Scans C-contiguous float64 (rows, dim) values with their uint32 (rows, pattern_len) routes.
    fn add(
        &mut self,
        py: Python<'_>,
        points: PyReadonlyArray2<'_, f64>,
        routes: PyReadonlyArray2<'_, u32>,
        n_threads: usize,
    ) -> PyResult<()> {
        let points = contiguous(&points, "values")?;
        let routes = contiguous(&routes, "routes")?;
        let nets = &mut self.nets;
        Ok(detach_core(py, |interrupt| {
            nets.add(points, routes, n_threads, interrupt)
        })?)
    }

    #[getter]
    fn n_points(&self) -> u64 {
        self.nets.n_points()
    }

    fn memory_bytes(&self) -> usize {
        self.nets.memory_bytes()
    }

    /// (groups × pattern_len) patterns, (groups,) members, (groups × scales) net sizes, flat.
    fn result<'py>(&self, py: Python<'py>) -> GroupedArrays<'py> {
        let sizes: Vec<u64> = self.nets.net_sizes().into_iter().map(|s| s as u64).collect();
        (
            self.nets.patterns().to_vec().into_pyarray(py),
            self.nets.members().to_vec().into_pyarray(py),
            sizes.into_pyarray(py),
        )
    }
}

/// `GroupedEngine::result`: patterns, members, net sizes.
type GroupedArrays<'py> = (
    Bound<'py, PyArray1<u32>>,
    Bound<'py, PyArray1<u64>>,
    Bound<'py, PyArray1<u64>>,
);

fn box_count_typed<T: Real + Element>(
    py: Python<'_>,
    points: &Bound<'_, PyAny>,
    deltas: &[f64],
    n_threads: usize,
) -> PyResult<Vec<usize>> {
    let array: PyReadonlyArray2<T> = points.extract()?;
    let dim = array.shape()[1];
    let slice = contiguous(&array, "points")?;
    detach_interruptible(py, |interrupt| {
        moecover_core::box_count::box_count(slice, dim, deltas, n_threads, interrupt)
    })
}

/// Occupied grid cells of side δ per δ; `points` is C-contiguous float32 or float64 (rows, dim).
#[pyfunction]
fn box_count(py: Python<'_>, points: &Bound<'_, PyAny>, deltas: Vec<f64>, n_threads: usize) -> PyResult<Vec<usize>> {
    if points.extract::<PyReadonlyArray2<f32>>().is_ok() {
        box_count_typed::<f32>(py, points, &deltas, n_threads)
    } else {
        box_count_typed::<f64>(py, points, &deltas, n_threads)
    }
}

/// Flat colex-ordered subsets, `C(experts, top_k) × top_k`.
#[pyfunction]
fn subsets<'py>(py: Python<'py>, experts: u32, top_k: usize) -> PyResult<Bound<'py, PyArray1<u32>>> {
    Ok(routing::subsets(experts, top_k).map_err(to_pyerr)?.into_pyarray(py))
}

/// Colex rank of a strictly increasing subset.
#[pyfunction]
fn rank(subset: Vec<u32>) -> PyResult<u64> {
    routing::rank(&subset).map_err(to_pyerr)
}

/// The `top_k`-subset with colex rank `rank`.
#[pyfunction]
fn unrank(rank: u64, top_k: usize) -> PyResult<Vec<u32>> {
    let mut out = vec![0u32; top_k];
    routing::unrank(rank, &mut out).map_err(to_pyerr)?;
    Ok(out)
}

type FlatPatternCounts<'py> = (Vec<u64>, Bound<'py, PyArray1<u32>>, Vec<u64>);

/// `(per_input, group, growth)` of flat `(m, n, width)` routes.
#[pyfunction]
fn count_patterns<'py>(
    py: Python<'py>,
    routes: PyReadonlyArray1<'py, u32>,
    m: usize,
    n: usize,
    width: usize,
    n_threads: usize,
) -> PyResult<FlatPatternCounts<'py>> {
    let routes = contiguous(&routes, "routes")?;
    let counts = detach_interruptible(py, |interrupt| {
        patterns::count_patterns(routes, m, n, width, n_threads, interrupt)
    })?;
    Ok((counts.per_input, counts.group.into_pyarray(py), counts.growth))
}

type FlatExactPatterns<'py> = (u64, Option<Bound<'py, PyArray1<u32>>>);

/// `(count, flat patterns or None)` for tokens `(N × d_model)` flattened.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn exact_patterns<'py>(
    py: Python<'py>,
    experts: usize,
    top_k: usize,
    d_model: usize,
    tokens: PyReadonlyArray1<'py, f64>,
    max_patterns: u64,
    return_patterns: bool,
    n_threads: usize,
) -> PyResult<FlatExactPatterns<'py>> {
    let tokens = contiguous(&tokens, "inputs")?;
    let found = detach_interruptible(py, |interrupt| {
        exact::exact_patterns(
            experts,
            top_k,
            d_model,
            tokens,
            max_patterns,
            return_patterns,
            n_threads,
            interrupt,
        )
    })?;
    Ok((found.count, found.patterns.map(|p| p.into_pyarray(py))))
}

#[pymodule]
fn _core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<CoreSpec>()?;
    module.add_function(wrap_pyfunction!(sample_params, module)?)?;
    module.add_function(wrap_pyfunction!(evaluate_py, module)?)?;
    module.add_function(wrap_pyfunction!(evaluate_sampled, module)?)?;
    module.add_function(wrap_pyfunction!(jacobian_py, module)?)?;
    module.add_function(wrap_pyfunction!(certify_full_row_rank_py, module)?)?;
    module.add_function(wrap_pyfunction!(gram_full_row_rank_py, module)?)?;
    module.add_class::<CoverEngine>()?;
    module.add_class::<GroupedEngine>()?;
    module.add_function(wrap_pyfunction!(box_count, module)?)?;
    module.add_function(wrap_pyfunction!(subsets, module)?)?;
    module.add_function(wrap_pyfunction!(rank, module)?)?;
    module.add_function(wrap_pyfunction!(unrank, module)?)?;
    module.add_function(wrap_pyfunction!(count_patterns, module)?)?;
    module.add_function(wrap_pyfunction!(exact_patterns, module)?)?;
    Ok(())
}
