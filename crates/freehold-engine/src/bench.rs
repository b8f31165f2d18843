//! Throughput of the embedded engine, measured the way llama.cpp's own
//! `llama-bench` measures it, so that the two can be compared figure for
//! figure (`bench/llama-bench` in the repository runs both).
//!
//! [`run`] loads a GGUF file once, then runs up to two tests, each in a
//! fresh context sized for that test alone, as `llama-bench` does:
//!
//! - **pp** (prompt processing, `pp512`): [`BenchOptions::pp`] random token
//!   ids (the first one BOS when the model adds one) decoded as one batch
//!   into an empty KV cache, logits for the last token only.
//! - **tg** (text generation, `tg128`): [`BenchOptions::tg`] sequential
//!   single-token decodes, each waited for, starting from an empty KV cache.
//!
//! Each test first runs once unmeasured (a full prompt for pp, one token for
//! tg) to warm caches and allocate buffers, then [`BenchOptions::reps`]
//! measured repetitions, each after clearing the KV cache. A repetition's
//! speed is its token count over its wall time; [`TestResult`] gives the
//! median, mean and sample standard deviation over repetitions.
//!
//! The settings that decide speed are `llama-bench`'s defaults: a logical
//! batch of [`N_BATCH`] tokens and a physical batch of [`N_UBATCH`], the
//! same thread count for prompt batches and single tokens, an f16 KV cache,
//! flash attention left to llama.cpp (`auto`), the model memory-mapped with
//! llama.cpp's default weight repacking. Only the thread count differs by
//! default: `llama-bench` picks its own, this module one thread per physical
//! core ([`Hardware::default_threads`]); pass the same count to both.
//!
//! ```no_run
//! use std::path::Path;
//! use freehold_engine::bench::{self, BenchOptions};
//!
//! let report = bench::run(Path::new("model.gguf"), &BenchOptions::default(), &|_| {})?;
//! for test in &report.tests {
//!     println!("{}: {:.1} t/s", test.name, test.median_ts);
//! }
//! # Ok::<(), freehold_engine::bench::BenchError>(())
//! ```

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use serde::Serialize;

use crate::hardware::Hardware;

/// Prompt tokens per pp test when none are asked for (`llama-bench -p`).
pub const DEFAULT_PP: u32 = 512;
/// Generated tokens per tg test when none are asked for (`llama-bench -n`).
pub const DEFAULT_TG: u32 = 128;
/// Measured repetitions per test when none are asked for (`llama-bench -r`).
pub const DEFAULT_REPS: u32 = 5;
/// The logical batch: prompt tokens handed to llama.cpp per decode call
/// (`llama-bench -b`, default 2048).
pub const N_BATCH: u32 = 2048;
/// The physical batch: tokens llama.cpp computes at once
/// (`llama-bench -ub`, default 512).
pub const N_UBATCH: u32 = 512;
/// The most tokens one test may ask for.
pub const MAX_TOKENS: u32 = 65_536;
/// The most repetitions one test may ask for.
pub const MAX_REPS: u32 = 1_000;

/// What to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchOptions {
    /// Prompt tokens for the pp test; 0 skips it.
    pub pp: u32,
    /// Generated tokens for the tg test; 0 skips it.
    pub tg: u32,
    /// Measured repetitions per test (at least 1).
    pub reps: u32,
    /// CPU threads for both tests; `None`: [`Hardware::default_threads`].
    pub threads: Option<usize>,
    /// Model layers offloaded to a GPU (`llama-bench -ngl`); `None`:
    /// llama.cpp's default, every layer where a GPU back end is built in.
    pub gpu_layers: Option<u32>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            pp: DEFAULT_PP,
            tg: DEFAULT_TG,
            reps: DEFAULT_REPS,
            threads: None,
            gpu_layers: None,
        }
    }
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The options ask for nothing, or for too much.
    #[error("invalid benchmark options: {0}")]
    InvalidOptions(String),
    /// No file at the model path.
    #[error(
        "no model file at {}; pass an installed model's name or a .gguf path",
        path.display()
    )]
    ModelNotFound {
        /// The path given.
        path: PathBuf,
    },
    /// llama.cpp's backend failed to initialise.
    #[error("llama.cpp failed to start: {0}")]
    Backend(String),
    /// llama.cpp could not load the model.
    #[error(
        "llama.cpp cannot load {}: {message} (is it a complete GGUF file of an architecture this llama.cpp supports? `freehold models info` reads its header)",
        path.display()
    )]
    Load {
        /// The model file.
        path: PathBuf,
        /// llama.cpp's reason.
        message: String,
    },
    /// llama.cpp could not create a context for a test.
    #[error(
        "cannot create a {n_ctx}-token context for {test}: {message} (out of memory? try smaller --pp/--tg)"
    )]
    Context {
        /// The test (`pp512`, `tg128`).
        test: String,
        /// The context size asked for.
        n_ctx: u32,
        /// llama.cpp's reason.
        message: String,
    },
    /// A decode call failed during a test.
    #[error("decoding failed during {test}: {message}")]
    Decode {
        /// The test (`pp512`, `tg128`).
        test: String,
        /// llama.cpp's reason.
        message: String,
    },
}

/// The result alias of this module.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;

/// Progress of [`run`], for a front end to show.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BenchProgress {
    /// Loading the model file.
    Loading {
        /// The model file.
        path: PathBuf,
    },
    /// Running a test's unmeasured warm-up.
    Warmup {
        /// The test (`pp512`, `tg128`).
        test: String,
    },
    /// Running a measured repetition.
    Repetition {
        /// The test (`pp512`, `tg128`).
        test: String,
        /// This repetition, from 1.
        rep: u32,
        /// Repetitions in all.
        reps: u32,
    },
}

/// Which kind of test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TestKind {
    /// Prompt processing: one batch of tokens.
    Pp,
    /// Text generation: one token at a time.
    Tg,
}

/// The model measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchModel {
    /// The file's path as given.
    pub path: PathBuf,
    /// The file's name.
    pub file_name: String,
    /// A short description, `llama-bench` style: architecture, parameter
    /// count and quantization (`llama 135M Q4_1`).
    pub description: String,
    /// The size of its tensors in bytes, as llama.cpp counts it
    /// (`llama-bench`'s `size`).
    pub size: u64,
    /// The file's size in bytes.
    pub file_size: u64,
    /// Its parameter count, as llama.cpp counts it.
    pub params: u64,
}

/// One test's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestResult {
    /// The test's name, `llama-bench` style: `pp512`, `tg128`.
    pub name: String,
    /// Its kind.
    pub kind: TestKind,
    /// Tokens per repetition.
    pub tokens: u32,
    /// Each repetition's wall time in nanoseconds.
    pub samples_ns: Vec<u64>,
    /// Each repetition's speed in tokens per second.
    pub samples_ts: Vec<f64>,
    /// The median speed in tokens per second.
    pub median_ts: f64,
    /// The mean speed in tokens per second (`llama-bench`'s `avg_ts`).
    pub mean_ts: f64,
    /// The sample standard deviation of the speed (0 for one repetition).
    pub stddev_ts: f64,
}

/// What [`run`] measured, and how.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    /// The model.
    pub model: BenchModel,
    /// CPU threads used for both prompt batches and single tokens.
    pub threads: usize,
    /// The compute devices llama.cpp found (the CPU, and each GPU when the
    /// binary has a GPU back end).
    pub devices: Vec<String>,
    /// Layers offloaded to a GPU as asked (`None`: llama.cpp's default).
    pub gpu_layers: Option<u32>,
    /// The logical batch ([`N_BATCH`]).
    pub n_batch: u32,
    /// The physical batch ([`N_UBATCH`]).
    pub n_ubatch: u32,
    /// The flash-attention policy (llama.cpp's default, `auto`).
    pub flash_attn: String,
    /// Measured repetitions per test.
    pub reps: u32,
    /// The tests run, pp first.
    pub tests: Vec<TestResult>,
}

/// Loads the GGUF at `path` and measures it as the [module docs](self)
/// describe, reporting each step to `progress`.
///
/// Blocks for as long as the benchmark runs (seconds to minutes): call it
/// from a thread that may block.
///
/// # Errors
/// Options that ask for nothing or for too much, a missing or unloadable
/// model, or a context or decode call llama.cpp refuses.
pub fn run(
    path: &Path,
    options: &BenchOptions,
    progress: &dyn Fn(BenchProgress),
) -> Result<BenchReport> {
    validate(options)?;
    let threads = options
        .threads
        .unwrap_or_else(|| Hardware::probe().default_threads());
    let n_threads = i32::try_from(threads)
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| {
            BenchError::InvalidOptions(format!(
                "{threads} threads: the thread count must be at least 1"
            ))
        })?;
    if !path.is_file() {
        return Err(BenchError::ModelNotFound {
            path: path.to_path_buf(),
        });
    }
    let backend = crate::local::backend().map_err(|e| BenchError::Backend(e.to_string()))?;
    progress(BenchProgress::Loading {
        path: path.to_path_buf(),
    });
    tracing::info!(path = %path.display(), threads, "loading model for the benchmark");
    let model = LlamaModel::load_from_file(
        backend,
        path,
        &crate::local::model_params(options.gpu_layers),
    )
    .map_err(|e| BenchError::Load {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let bench_model = describe(path, &model);

    let mut tokens = TokenSource::new(&model);
    let mut tests = Vec::new();
    for (kind, count) in [(TestKind::Pp, options.pp), (TestKind::Tg, options.tg)] {
        if count == 0 {
            continue;
        }
        let test = Test {
            kind,
            tokens: count,
            name: test_name(kind, count),
        };
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(count))
            .with_n_batch(N_BATCH)
            .with_n_ubatch(N_UBATCH)
            .with_n_threads(n_threads)
            .with_n_threads_batch(n_threads);
        let mut ctx = model
            .new_context(backend, params)
            .map_err(|e| BenchError::Context {
                test: test.name.clone(),
                n_ctx: count,
                message: e.to_string(),
            })?;
        tests.push(measure(
            &mut ctx,
            &test,
            options.reps,
            &mut tokens,
            progress,
        )?);
    }
    Ok(BenchReport {
        model: bench_model,
        threads,
        devices: crate::local::devices(),
        gpu_layers: options.gpu_layers,
        n_batch: N_BATCH,
        n_ubatch: N_UBATCH,
        flash_attn: "auto".to_owned(),
        reps: options.reps,
        tests,
    })
}

/// A test's name, `llama-bench` style (`pp512`, `tg128`).
pub fn test_name(kind: TestKind, tokens: u32) -> String {
    match kind {
        TestKind::Pp => format!("pp{tokens}"),
        TestKind::Tg => format!("tg{tokens}"),
    }
}

/// Checks that `options` ask for something measurable.
///
/// # Errors
/// [`BenchError::InvalidOptions`], saying which option is wrong.
pub fn validate(options: &BenchOptions) -> Result<()> {
    let invalid = |message: String| Err(BenchError::InvalidOptions(message));
    if options.reps == 0 || options.reps > MAX_REPS {
        return invalid(format!(
            "--reps {}: the repetitions must be between 1 and {MAX_REPS}",
            options.reps
        ));
    }
    if options.pp == 0 && options.tg == 0 {
        return invalid("--pp and --tg are both 0: nothing to measure".to_owned());
    }
    for (flag, value) in [("--pp", options.pp), ("--tg", options.tg)] {
        if value > MAX_TOKENS {
            return invalid(format!(
                "{flag} {value}: at most {MAX_TOKENS} tokens per test"
            ));
        }
    }
    if options.threads == Some(0) {
        return invalid("--threads 0: the thread count must be at least 1".to_owned());
    }
    Ok(())
}

/// Median, mean and sample standard deviation of `samples` (all 0 when
/// empty; the deviation is 0 for one sample).
pub fn statistics(samples: &[f64]) -> (f64, f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    };
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let stddev = if samples.len() < 2 {
        0.0
    } else {
        (samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    };
    (median, mean, stddev)
}

/// One test to run.
struct Test {
    kind: TestKind,
    tokens: u32,
    name: String,
}

/// Runs `test`'s warm-up and repetitions in `ctx`.
fn measure(
    ctx: &mut LlamaContext<'_>,
    test: &Test,
    reps: u32,
    tokens: &mut TokenSource,
    progress: &dyn Fn(BenchProgress),
) -> Result<TestResult> {
    let capacity = match test.kind {
        TestKind::Pp => test.tokens.min(N_BATCH),
        TestKind::Tg => 1,
    };
    // A u32 below N_BATCH always fits a usize.
    let mut batch = LlamaBatch::new(capacity as usize, 1);
    let decode_error = |message: String| BenchError::Decode {
        test: test.name.clone(),
        message,
    };

    progress(BenchProgress::Warmup {
        test: test.name.clone(),
    });
    ctx.clear_kv_cache();
    match test.kind {
        TestKind::Pp => prompt(ctx, &mut batch, test.tokens, tokens),
        TestKind::Tg => generate(ctx, &mut batch, 1, tokens),
    }
    .map_err(decode_error)?;

    let mut samples_ns = Vec::new();
    let mut samples_ts = Vec::new();
    for rep in 1..=reps {
        progress(BenchProgress::Repetition {
            test: test.name.clone(),
            rep,
            reps,
        });
        ctx.clear_kv_cache();
        let start = Instant::now();
        match test.kind {
            TestKind::Pp => prompt(ctx, &mut batch, test.tokens, tokens),
            TestKind::Tg => generate(ctx, &mut batch, test.tokens, tokens),
        }
        .map_err(decode_error)?;
        ctx.synchronize();
        let elapsed = start.elapsed();
        let seconds = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        samples_ns.push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
        samples_ts.push(f64::from(test.tokens) / seconds);
        tracing::debug!(test = %test.name, rep, tokens_per_second = f64::from(test.tokens) / seconds);
    }
    let (median_ts, mean_ts, stddev_ts) = statistics(&samples_ts);
    Ok(TestResult {
        name: test.name.clone(),
        kind: test.kind,
        tokens: test.tokens,
        samples_ns,
        samples_ts,
        median_ts,
        mean_ts,
        stddev_ts,
    })
}

/// Decodes `count` prompt tokens in batches of at most [`N_BATCH`] (one
/// batch for up to 2048), asking logits for each batch's last token only.
fn prompt(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    count: u32,
    tokens: &mut TokenSource,
) -> std::result::Result<(), String> {
    let mut done = 0;
    while done < count {
        let n = (count - done).min(N_BATCH);
        batch.clear();
        for i in 0..n {
            let pos = done + i;
            let token = if pos == 0 {
                tokens.first()
            } else {
                tokens.random()
            };
            let pos = i32::try_from(pos).map_err(|e| e.to_string())?;
            batch
                .add(token, pos, &[0], i + 1 == n)
                .map_err(|e| e.to_string())?;
        }
        ctx.decode(batch).map_err(|e| e.to_string())?;
        done += n;
    }
    ctx.synchronize();
    Ok(())
}

/// Decodes `count` tokens one at a time, waiting for each, as generation
/// does (sampling aside).
fn generate(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    count: u32,
    tokens: &mut TokenSource,
) -> std::result::Result<(), String> {
    let mut token = tokens.first();
    for pos in 0..count {
        batch.clear();
        let pos = i32::try_from(pos).map_err(|e| e.to_string())?;
        batch
            .add(token, pos, &[0], true)
            .map_err(|e| e.to_string())?;
        ctx.decode(batch).map_err(|e| e.to_string())?;
        ctx.synchronize();
        token = tokens.random();
    }
    Ok(())
}

/// Token ids as `llama-bench` makes them: BOS first when the model adds
/// one, then uniformly random ids (a fixed-seed xorshift, so runs repeat).
struct TokenSource {
    bos: Option<LlamaToken>,
    n_vocab: u64,
    state: u64,
}

impl TokenSource {
    fn new(model: &LlamaModel) -> Self {
        let vocab = model.vocab();
        Self {
            bos: vocab.should_add_bos().then(|| vocab.bos()),
            n_vocab: u64::try_from(model.n_vocab()).unwrap_or(0).max(1),
            state: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// The first token of a sequence.
    fn first(&mut self) -> LlamaToken {
        match self.bos {
            Some(bos) => bos,
            None => self.random(),
        }
    }

    /// A random token id below the vocabulary size.
    fn random(&mut self) -> LlamaToken {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let value = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32;
        // Below n_vocab, which came from an i32.
        LlamaToken::new(i32::try_from(value % self.n_vocab).unwrap_or(0))
    }
}

/// The model's description, size and parameter count.
fn describe(path: &Path, model: &LlamaModel) -> BenchModel {
    let file_name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let params = model.n_params();
    let summary = crate::gguf::read_metadata(path)
        .ok()
        .map(|file| file.summary());
    let description = match summary {
        Some(summary) => {
            let mut parts = vec![summary.architecture.unwrap_or_else(|| "?".to_owned())];
            parts.push(crate::gguf::human_count(params));
            parts.extend(summary.quantization);
            parts.join(" ")
        }
        None => file_name.clone(),
    };
    BenchModel {
        path: path.to_path_buf(),
        description,
        size: model.size(),
        file_size: std::fs::metadata(path).map_or(0, |m| m.len()),
        params,
        file_name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_of_samples() {
        assert_eq!(statistics(&[]), (0.0, 0.0, 0.0));
        assert_eq!(statistics(&[4.0]), (4.0, 4.0, 0.0));
        let (median, mean, stddev) = statistics(&[3.0, 1.0, 2.0]);
        assert_eq!((median, mean), (2.0, 2.0));
        assert!((stddev - 1.0).abs() < 1e-12);
        let (median, mean, _) = statistics(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((median, mean), (2.5, 2.5));
    }

    #[test]
    fn validation_names_the_wrong_option() {
        let ok = BenchOptions::default();
        assert!(validate(&ok).is_ok());
        let message = |options: BenchOptions| match validate(&options) {
            Err(BenchError::InvalidOptions(message)) => message,
            other => panic!("expected invalid options, got {other:?}"),
        };
        assert!(
            message(BenchOptions {
                reps: 0,
                ..ok.clone()
            })
            .contains("--reps 0")
        );
        assert!(
            message(BenchOptions {
                pp: 0,
                tg: 0,
                ..ok.clone()
            })
            .contains("nothing to measure")
        );
        assert!(
            message(BenchOptions {
                tg: MAX_TOKENS + 1,
                ..ok.clone()
            })
            .contains("--tg")
        );
        assert!(
            message(BenchOptions {
                threads: Some(0),
                ..ok
            })
            .contains("--threads 0")
        );
    }

    #[test]
    fn test_names() {
        assert_eq!(test_name(TestKind::Pp, 512), "pp512");
        assert_eq!(test_name(TestKind::Tg, 128), "tg128");
    }

    #[test]
    fn random_tokens_stay_in_the_vocabulary() {
        let mut source = TokenSource {
            bos: None,
            n_vocab: 49_152,
            state: 0x9E37_79B9_7F4A_7C15,
        };
        let ids: Vec<i32> = (0..10_000).map(|_| source.random().0).collect();
        assert!(ids.iter().all(|&id| (0..49_152).contains(&id)));
        let distinct: std::collections::BTreeSet<i32> = ids.iter().copied().collect();
        assert!(
            distinct.len() > 5_000,
            "ids should spread: {}",
            distinct.len()
        );
    }
}
