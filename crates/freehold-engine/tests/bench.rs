//! The engine benchmark against SmolLM2-135M (skipped unless
//! `FREEHOLD_TEST_MODELS` names the directory holding its GGUF).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use freehold_engine::bench::{self, BenchError, BenchOptions, BenchProgress, TestKind};

const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn model_path() -> Option<PathBuf> {
    freehold_test_support::test_model(MODEL_FILE)
}

#[test]
fn a_tiny_bench_measures_both_tests() {
    let Some(path) = model_path() else { return };
    let options = BenchOptions {
        pp: 16,
        tg: 4,
        reps: 2,
        threads: Some(2),
        gpu_layers: None,
    };
    let seen = Mutex::new(Vec::new());
    let report = bench::run(&path, &options, &|progress| {
        seen.lock().unwrap().push(progress);
    })
    .unwrap();

    assert_eq!(report.threads, 2);
    assert_eq!(report.reps, 2);
    assert_eq!((report.n_batch, report.n_ubatch), (2048, 512));
    assert_eq!(report.model.file_name, MODEL_FILE);
    assert_eq!(report.model.path, path);
    assert!(
        report.model.description.starts_with("llama ")
            && report.model.description.ends_with("Q4_1"),
        "{}",
        report.model.description
    );
    // SmolLM2-135M: 134.5 M parameters, about 86 MiB of tensors.
    assert!(
        (130_000_000..140_000_000).contains(&report.model.params),
        "{}",
        report.model.params
    );
    assert!(report.model.size > 50_000_000 && report.model.size <= report.model.file_size);

    let tests: Vec<(&str, TestKind, u32)> = report
        .tests
        .iter()
        .map(|t| (t.name.as_str(), t.kind, t.tokens))
        .collect();
    assert_eq!(
        tests,
        [("pp16", TestKind::Pp, 16), ("tg4", TestKind::Tg, 4)]
    );
    for test in &report.tests {
        assert_eq!(test.samples_ts.len(), 2, "{}", test.name);
        assert_eq!(test.samples_ns.len(), 2, "{}", test.name);
        for (&ts, &ns) in test.samples_ts.iter().zip(&test.samples_ns) {
            assert!(ts.is_finite() && ts > 0.0, "{}: {ts}", test.name);
            assert!(ns > 0);
            // Each speed is the token count over that repetition's time.
            let expected = f64::from(test.tokens) / (ns as f64 / 1e9);
            assert!(
                (ts - expected).abs() <= expected * 1e-6,
                "{ts} vs {expected}"
            );
        }
        assert!(test.median_ts.is_finite() && test.median_ts > 0.0);
        assert!(test.mean_ts.is_finite() && test.mean_ts > 0.0);
        assert!(test.stddev_ts.is_finite() && test.stddev_ts >= 0.0);
        let lowest = test
            .samples_ts
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let highest = test.samples_ts.iter().copied().fold(0.0, f64::max);
        assert!(lowest <= test.median_ts && test.median_ts <= highest);
    }

    let seen = seen.into_inner().unwrap();
    assert!(matches!(&seen[0], BenchProgress::Loading { path: p } if p == &path));
    let steps: Vec<String> = seen[1..]
        .iter()
        .map(|p| match p {
            BenchProgress::Warmup { test } => format!("{test} warm-up"),
            BenchProgress::Repetition { test, rep, reps } => format!("{test} {rep}/{reps}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        steps,
        [
            "pp16 warm-up",
            "pp16 1/2",
            "pp16 2/2",
            "tg4 warm-up",
            "tg4 1/2",
            "tg4 2/2"
        ]
    );

    // JSON carries the same figures, with the kinds in lower case.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["tests"][0]["kind"], "pp");
    assert_eq!(json["tests"][1]["tokens"], 4);
    assert!(
        report.devices.iter().any(|d| d.starts_with("CPU")),
        "llama.cpp lists the CPU among its devices: {:?}",
        report.devices
    );
}

#[test]
fn a_skipped_test_is_left_out() {
    let Some(path) = model_path() else { return };
    let options = BenchOptions {
        pp: 0,
        tg: 2,
        reps: 1,
        threads: Some(1),
        gpu_layers: None,
    };
    let report = bench::run(&path, &options, &|_| {}).unwrap();
    let names: Vec<&str> = report.tests.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["tg2"]);
    assert_eq!(report.tests[0].samples_ts.len(), 1);
    assert_eq!(report.tests[0].stddev_ts, 0.0);
}

#[test]
fn bad_options_and_missing_files_fail_before_loading() {
    let loaded = Mutex::new(false);
    let progress = |_: BenchProgress| *loaded.lock().unwrap() = true;
    let options = BenchOptions {
        reps: 0,
        ..BenchOptions::default()
    };
    let error = bench::run(Path::new("whatever.gguf"), &options, &progress).unwrap_err();
    assert!(matches!(error, BenchError::InvalidOptions(_)), "{error:?}");
    assert!(error.to_string().contains("--reps 0"), "{error}");

    let missing = Path::new("/nonexistent/model.gguf");
    let error = bench::run(missing, &BenchOptions::default(), &progress).unwrap_err();
    assert!(
        matches!(&error, BenchError::ModelNotFound { path } if path == missing),
        "{error:?}"
    );
    assert!(error.to_string().contains("/nonexistent/model.gguf"));
    assert!(!*loaded.lock().unwrap(), "nothing should have started");
}

#[test]
fn a_file_that_is_not_a_model_fails_to_load() {
    let dir = std::env::temp_dir().join(format!("freehold-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("not-a-model.gguf");
    std::fs::write(&path, b"this is not a GGUF file").unwrap();
    let options = BenchOptions {
        pp: 4,
        tg: 1,
        reps: 1,
        threads: Some(1),
        gpu_layers: None,
    };
    let error = bench::run(&path, &options, &|_| {}).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        matches!(&error, BenchError::Load { path: p, .. } if p == &path),
        "{error:?}"
    );
    assert!(error.to_string().contains("cannot load"), "{error}");
}
