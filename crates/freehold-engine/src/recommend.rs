//! Which catalog model this machine should run.
//!
//! A model fits when its file plus room for its KV cache and the runtime
//! fits in the memory available (GPU memory when there is a GPU, else RAM).
//! Decoding one token reads every weight once, so decode speed is bounded
//! by memory bandwidth divided by the model's size: the estimate measures
//! the bandwidth and divides.

use std::time::Instant;

use serde::Serialize;

use crate::hardware::Hardware;
use crate::store::Catalog;

/// Memory kept free for the KV cache, compute buffers and the rest of the
/// system, as a share of the model's size plus a fixed amount.
const HEADROOM_SHARE: f64 = 0.25;
const HEADROOM_FIXED: u64 = 1024 * 1024 * 1024;

/// One model's fit on this machine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fit {
    /// The catalog name.
    pub name: String,
    /// The model file's size in bytes.
    pub size: u64,
    /// Memory it needs with headroom, in bytes.
    pub needs: u64,
    /// Whether it fits.
    pub fits: bool,
    /// Estimated decode speed in tokens per second (bandwidth ÷ size).
    pub estimated_decode_tok_s: f64,
}

/// The recommendation: every catalog model's fit, and the largest that fits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// The memory the estimate is based on, in bytes.
    pub memory: u64,
    /// Where that memory is (`RAM`, or the GPU's name).
    pub memory_kind: String,
    /// Measured memory bandwidth in bytes per second.
    pub bandwidth: f64,
    /// Every catalog model, smallest first.
    pub fits: Vec<Fit>,
    /// The largest model that fits, if any.
    pub best: Option<String>,
}

/// Memory a model of `size` bytes needs with its headroom.
pub fn memory_needed(size: u64) -> u64 {
    size + (size as f64 * HEADROOM_SHARE) as u64 + HEADROOM_FIXED
}

/// The memory models must fit in, in bytes (0 when unknown), and where it
/// is (`RAM`, or the GPU's name). `gpu_offload` says whether the engine can
/// put weights in GPU memory; without it a GPU does not count.
pub fn model_memory(hardware: &Hardware, gpu_offload: bool) -> (u64, String) {
    // With offload the weights live in GPU memory, but llama.cpp still maps
    // the file in RAM: a model must fit both.
    let gpu = hardware
        .gpus
        .iter()
        .max_by_key(|gpu| gpu.memory_free)
        .filter(|_| gpu_offload);
    match gpu {
        Some(gpu) => (
            gpu.memory_free.min(hardware.memory_available),
            gpu.name.clone(),
        ),
        None => (hardware.memory_available, "RAM".to_owned()),
    }
}

/// The slowest estimated decode speed, in tokens per second, at which a
/// model is recommended. The estimate errs low (it measures one thread's
/// bandwidth), so this keeps models that are pleasant to use.
pub const MIN_USABLE_TOK_S: f64 = 8.0;

/// Ranks the catalog's models for this machine, given a measured
/// `bandwidth` (bytes per second). `gpu_offload` says whether the engine
/// can put weights in GPU memory; without it a GPU does not count.
pub fn recommend(
    catalog: &Catalog,
    hardware: &Hardware,
    bandwidth: f64,
    gpu_offload: bool,
) -> Recommendation {
    let (memory, memory_kind) = model_memory(hardware, gpu_offload);
    let mut fits: Vec<Fit> = catalog
        .entries()
        .iter()
        .map(|entry| {
            let size = entry.size.unwrap_or(entry.approx_size);
            let needs = memory_needed(size);
            Fit {
                name: entry.name.clone(),
                size,
                needs,
                fits: needs <= memory,
                estimated_decode_tok_s: if size > 0 {
                    bandwidth / size as f64
                } else {
                    0.0
                },
            }
        })
        .collect();
    fits.sort_by_key(|fit| fit.size);
    // The largest that fits and decodes fast enough to work with (when the
    // bandwidth is known): a 12 GB model that fits a CPU-only laptop's RAM
    // but writes one token a second is not a recommendation.
    let usable = |fit: &&Fit| bandwidth <= 0.0 || fit.estimated_decode_tok_s >= MIN_USABLE_TOK_S;
    let best = fits
        .iter()
        .rev()
        .filter(|fit| fit.fits)
        .find(usable)
        .or_else(|| fits.iter().find(|fit| fit.fits))
        .map(|fit| fit.name.clone());
    Recommendation {
        memory,
        memory_kind,
        bandwidth,
        fits,
        best,
    }
}

/// Measures memory read bandwidth in bytes per second: sums a buffer much
/// larger than the CPU caches a few times and keeps the best pass. Takes
/// about a tenth of a second.
pub fn measure_bandwidth() -> f64 {
    const BYTES: usize = 256 * 1024 * 1024;
    let words = vec![1u64; BYTES / 8];
    let mut best = f64::MAX;
    let mut total = 0u64;
    for _ in 0..3 {
        let started = Instant::now();
        // Four independent sums so the loop is bound by memory, not by the
        // latency of one dependency chain.
        let mut sums = [0u64; 4];
        for chunk in words.chunks_exact(4) {
            for (sum, word) in sums.iter_mut().zip(chunk) {
                *sum = sum.wrapping_add(*word);
            }
        }
        total = total.wrapping_add(sums.iter().fold(0, |a, b| a.wrapping_add(*b)));
        best = best.min(started.elapsed().as_secs_f64());
    }
    std::hint::black_box(total);
    if best > 0.0 { BYTES as f64 / best } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware::Gpu;

    fn machine(ram_gib: u64, gpus: Vec<Gpu>) -> Hardware {
        Hardware {
            memory_total: ram_gib << 30,
            memory_available: ram_gib << 30,
            logical_cores: 2,
            physical_cores: 2,
            cpu_features: vec![],
            gpus,
        }
    }

    #[test]
    fn picks_the_largest_model_that_fits_with_headroom() {
        let catalog = Catalog::builtin().unwrap();
        let small = recommend(&catalog, &machine(2, vec![]), 10e9, false);
        assert_eq!(
            small.best.as_deref(),
            Some("qwen2.5-coder-0.5b"),
            "{small:#?}"
        );
        // Bandwidth unknown: the largest that fits.
        let laptop = recommend(&catalog, &machine(16, vec![]), 0.0, false);
        let best = laptop.best.clone().unwrap();
        let best_fit = laptop.fits.iter().find(|fit| fit.name == best).unwrap();
        assert!(best_fit.needs <= 16 << 30);
        assert!(
            laptop
                .fits
                .iter()
                .filter(|fit| fit.size > best_fit.size)
                .all(|fit| !fit.fits)
        );
        // Decode estimate: bandwidth over size.
        let laptop = recommend(&catalog, &machine(16, vec![]), 10e9, false);
        let smol = laptop
            .fits
            .iter()
            .find(|fit| fit.name == "smollm2-135m")
            .unwrap();
        assert!((smol.estimated_decode_tok_s - 10e9 / smol.size as f64).abs() < 1e-6);
    }

    #[test]
    fn a_model_too_slow_to_use_is_not_recommended() {
        let catalog = Catalog::builtin().unwrap();
        // 64 GiB of RAM but the bandwidth of a small CPU (11 GB/s measured
        // here): the 1.1 GB Qwen2.5-Coder-1.5B decodes ≈ 10 tok/s by the
        // estimate, anything larger under 8.
        let cpu = recommend(&catalog, &machine(64, vec![]), 11.1e9, false);
        assert_eq!(cpu.best.as_deref(), Some("qwen2.5-coder-1.5b"), "{cpu:#?}");
        // When nothing is fast enough, the smallest that fits.
        let crawl = recommend(&catalog, &machine(64, vec![]), 1e8, false);
        assert_eq!(crawl.best.as_deref(), Some("smollm2-135m"));
    }

    #[test]
    fn a_gpu_counts_only_with_offload_and_ram_still_bounds() {
        let catalog = Catalog::builtin().unwrap();
        let gpu = Gpu {
            name: "NVIDIA H100".into(),
            memory_total: 80 << 30,
            memory_free: 80 << 30,
        };
        // Without offload in the engine, the GPU does not count.
        let cpu_only = recommend(&catalog, &machine(64, vec![gpu.clone()]), 10e9, false);
        assert_eq!(cpu_only.memory_kind, "RAM");
        // With offload its memory counts, but the file must fit RAM too.
        let offload = recommend(&catalog, &machine(8, vec![gpu.clone()]), 10e9, true);
        assert_eq!(offload.memory_kind, "NVIDIA H100");
        assert_eq!(offload.memory, 8 << 30);
        let big_ram = recommend(&catalog, &machine(256, vec![gpu]), 10e9, true);
        assert_eq!(big_ram.memory, 80 << 30);
    }

    #[test]
    fn unknown_memory_recommends_nothing() {
        let catalog = Catalog::builtin().unwrap();
        let recommendation = recommend(&catalog, &machine(0, vec![]), 10e9, false);
        assert_eq!(recommendation.memory, 0);
        assert_eq!(recommendation.best, None);
    }

    #[test]
    fn bandwidth_is_measured() {
        let bandwidth = measure_bandwidth();
        assert!(bandwidth > 1e8, "{bandwidth} B/s is below any real machine");
    }
}
