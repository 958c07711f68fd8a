//! ONNX Runtime, loaded from its shared library at start-up (the `ort`
//! crate's `load-dynamic`), and pools of inference sessions. A session runs
//! one batch at a time (`Session::run` takes `&mut self`), so each model
//! keeps a few and a batch takes whichever is free.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorRef, ValueType};

use super::features::{ANOMALY_FEATURES, FORECAST_FEATURES};
use crate::config::PredictionsConfig;

/// The library's file name in the PyPI wheel.
const LIBRARY: &str = "libonnxruntime.so";

/// Where the library was looked for, in order.
pub fn candidates(config: &PredictionsConfig) -> Vec<PathBuf> {
    if let Some(p) = &config.ort_library {
        return vec![p.clone()];
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(p)];
    }
    let mut out = vec![Path::new(".ort").join(LIBRARY)];
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(dir.join(LIBRARY));
    }
    out
}

/// Loads ONNX Runtime once per process (the library is global to it).
pub fn environment(config: &PredictionsConfig) -> Result<Environment, String> {
    static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let tried = candidates(config);
        let Some(path) = tried.iter().find(|p| p.is_file()) else {
            return Err(format!(
                "ONNX Runtime library not found (tried {}); run scripts/setup-python.sh or set \
                 predictions.ort_library / ORT_DYLIB_PATH",
                tried
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        ort::init_from(path)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?
            .with_name("trackingbms")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
    })
    .clone()
}

/// What a model must take and give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Forecast,
    Anomaly,
    /// The built-in forecast's median remaining life alone, a ninth of its
    /// trees, for the factor rows (not uploadable: it is derived from the
    /// built-in forecast by the training script).
    RemainingLife,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Forecast => "FORECAST",
            Kind::Anomaly => "ANOMALY",
            Kind::RemainingLife => "REMAINING_LIFE",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "FORECAST" => Some(Kind::Forecast),
            "ANOMALY" => Some(Kind::Anomaly),
            _ => None,
        }
    }

    /// Input width and (output name, width) of the signature.
    pub fn signature(self) -> (usize, &'static [(&'static str, usize)]) {
        match self {
            Kind::Forecast => (
                FORECAST_FEATURES.len(),
                &[
                    ("soh_delta", 3),
                    ("rul_log1p", 3),
                    ("failure_probability", 1),
                ],
            ),
            Kind::Anomaly => (ANOMALY_FEATURES.len(), &[("anomaly_score", 1)]),
            Kind::RemainingLife => (FORECAST_FEATURES.len(), &[("rul_log1p_median", 1)]),
        }
    }
}

/// The last dimension of a float tensor, if it is one (`-1` when dynamic).
fn float_width(t: &ValueType) -> Option<i64> {
    match t {
        ValueType::Tensor { ty, shape, .. }
            if *ty == ort::value::TensorElementType::Float32 && shape.len() == 2 =>
        {
            shape.last().copied()
        }
        _ => None,
    }
}

/// Checks that `session` has the signature of `kind`; says what differs.
fn check_signature(session: &Session, kind: Kind) -> Result<(), String> {
    let (width, outputs) = kind.signature();
    let inputs = session.inputs();
    let [input] = inputs else {
        return Err(format!(
            "a {} model takes one input, `features`; this one takes {}",
            kind.as_str(),
            inputs.len()
        ));
    };
    if input.name() != "features" || float_width(input.dtype()) != Some(width as i64) {
        return Err(format!(
            "input must be `features`, float32 [N, {width}]; found `{}` {:?}",
            input.name(),
            input.dtype()
        ));
    }
    for (name, w) in outputs {
        let found = session.outputs().iter().find(|o| o.name() == *name);
        match found.map(|o| float_width(o.dtype())) {
            Some(Some(d)) if d == *w as i64 || d < 0 => {}
            Some(_) => return Err(format!("output `{name}` must be float32 [N, {w}]")),
            None => return Err(format!("output `{name}` is missing")),
        }
    }
    Ok(())
}

/// A few sessions of one model.
pub struct Pool {
    kind: Kind,
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({:?}, {} sessions)", self.kind, self.sessions.len())
    }
}

impl Pool {
    /// Loads `bytes` as a `kind` model, checking its signature.
    pub fn load(
        env: &Environment,
        kind: Kind,
        bytes: &[u8],
        sessions: usize,
    ) -> Result<Self, String> {
        let mut out = Vec::new();
        for _ in 0..sessions.max(1) {
            let not_loadable =
                |e: &dyn std::fmt::Display| format!("not a loadable ONNX model: {e}");
            let builder = Session::builder(env).map_err(|e| not_loadable(&e))?;
            let builder = builder
                .with_optimization_level(GraphOptimizationLevel::Level3)
                .map_err(|e| not_loadable(&e))?;
            let mut builder = builder
                .with_intra_threads(1)
                .map_err(|e| not_loadable(&e))?;
            let session = builder
                .commit_from_memory(bytes)
                .map_err(|e| not_loadable(&e))?;
            check_signature(&session, kind)?;
            out.push(Mutex::new(session));
        }
        Ok(Self {
            kind,
            sessions: out,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `rows` (row-major, the kind's input width) and returns each
    /// output's rows, in signature order.
    pub fn run(&self, rows: &[f32]) -> Result<Vec<Vec<f32>>, String> {
        let (width, outputs) = self.kind.signature();
        let n = rows.len() / width;
        if n == 0 {
            return Ok(outputs.iter().map(|_| Vec::new()).collect());
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let count = self.sessions.len();
        // A free session if there is one, else wait for ours.
        let mut guard = None;
        for i in 0..count {
            if let Ok(g) = self.sessions[(start + i) % count].try_lock() {
                guard = Some(g);
                break;
            }
        }
        let mut session = match guard {
            Some(g) => g,
            None => self.sessions[start % count]
                .lock()
                .map_err(|_| "an inference session panicked".to_string())?,
        };
        let input = TensorRef::from_array_view(([n, width], rows))
            .map_err(|e| format!("input tensor: {e}"))?;
        let result = session
            .run(ort::inputs!["features" => input])
            .map_err(|e| format!("inference failed: {e}"))?;
        let mut out = Vec::with_capacity(outputs.len());
        for (name, w) in outputs {
            let (_, data) = result[*name]
                .try_extract_tensor::<f32>()
                .map_err(|e| format!("output `{name}`: {e}"))?;
            if data.len() != n * w {
                return Err(format!(
                    "output `{name}` has {} values, expected {}",
                    data.len(),
                    n * w
                ));
            }
            out.push(data.to_vec());
        }
        Ok(out)
    }
}
