//! What this machine has: memory, cores, CPU features and NVIDIA GPUs.
//!
//! Used to pick thread counts (llama.cpp is fastest with one thread per
//! physical core; more threads than cores cut decode speed by ~4× on a
//! 2-core machine) and to recommend the largest model that fits.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// A snapshot of the machine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hardware {
    /// Total memory in bytes (0 when unknown).
    pub memory_total: u64,
    /// Memory available for new allocations in bytes (0 when unknown).
    pub memory_available: u64,
    /// Logical CPUs this process may use.
    pub logical_cores: usize,
    /// Physical cores (hyper-threads counted once).
    pub physical_cores: usize,
    /// SIMD features llama.cpp uses, as detected.
    pub cpu_features: Vec<&'static str>,
    /// NVIDIA GPUs, from `nvidia-smi` when it is installed.
    pub gpus: Vec<Gpu>,
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gpu {
    /// The product name.
    pub name: String,
    /// Total memory in bytes.
    pub memory_total: u64,
    /// Free memory in bytes.
    pub memory_free: u64,
}

impl Hardware {
    /// Probes this machine. Never fails: what cannot be read is reported as
    /// zero or empty.
    pub fn probe() -> Self {
        let (memory_total, mut memory_available) = std::fs::read_to_string("/proc/meminfo")
            .map(|text| parse_meminfo(&text))
            .unwrap_or((0, 0));
        // In a container, /proc/meminfo shows the host: the cgroup's limit
        // is what this process may really use.
        if let Some(room) = cgroup_room(Path::new("/sys/fs/cgroup")) {
            memory_available = memory_available.min(room);
        }
        let logical_cores = std::thread::available_parallelism().map_or(1, usize::from);
        let allowed = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
                    .map(parse_cpu_list)
            });
        let physical_cores = physical_cores(Path::new("/sys/devices/system/cpu"), allowed.as_ref())
            .filter(|&cores| cores > 0)
            .unwrap_or(logical_cores)
            .min(logical_cores);
        Self {
            memory_total,
            memory_available,
            logical_cores,
            physical_cores,
            cpu_features: cpu_features(),
            gpus: nvidia_gpus(),
        }
    }

    /// The thread count for inference: one per physical core.
    pub fn default_threads(&self) -> usize {
        self.physical_cores.max(1)
    }
}

/// `MemTotal` and `MemAvailable` of `/proc/meminfo`, in bytes.
pub fn parse_meminfo(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib.saturating_mul(1024))
    };
    (field("MemTotal"), field("MemAvailable"))
}

/// Memory left under a cgroup v2 limit (`memory.max - memory.current`), or
/// `None` without a limit.
fn cgroup_room(cgroup: &Path) -> Option<u64> {
    let read = |file: &str| std::fs::read_to_string(cgroup.join(file)).ok();
    let max: u64 = read("memory.max")?.trim().parse().ok()?; // "max" means no limit
    let current: u64 = read("memory.current")?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

/// Parses a CPU list such as `0-3,8,10-11`.
pub fn parse_cpu_list(text: &str) -> BTreeSet<usize> {
    let mut cpus = BTreeSet::new();
    for range in text.trim().split(',').filter(|r| !r.is_empty()) {
        let mut ends = range.splitn(2, '-').map(|n| n.trim().parse::<usize>());
        match (ends.next(), ends.next()) {
            (Some(Ok(first)), None) => {
                cpus.insert(first);
            }
            // Bounded: a CPU list never names more than a few thousand CPUs.
            (Some(Ok(first)), Some(Ok(last))) if last >= first && last - first < 65_536 => {
                cpus.extend(first..=last);
            }
            _ => {}
        }
    }
    cpus
}

/// Counts distinct (package, core) pairs under `/sys/devices/system/cpu`,
/// among the CPUs this process may run on (`allowed`; all when `None`), so
/// that two hyper-threads of one core, all a container was given, count once.
fn physical_cores(cpu_dir: &Path, allowed: Option<&BTreeSet<usize>>) -> Option<usize> {
    let mut cores = BTreeSet::new();
    for entry in std::fs::read_dir(cpu_dir).ok()?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(id) = name
            .strip_prefix("cpu")
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if allowed.is_some_and(|allowed| !allowed.contains(&id)) {
            continue;
        }
        let topology = entry.path().join("topology");
        let read = |file: &str| {
            std::fs::read_to_string(topology.join(file))
                .ok()
                .map(|s| s.trim().to_owned())
        };
        if let (Some(package), Some(core)) = (read("physical_package_id"), read("core_id")) {
            cores.insert((package, core));
        }
    }
    Some(cores.len())
}

#[cfg(target_arch = "x86_64")]
fn cpu_features() -> Vec<&'static str> {
    let mut features = Vec::new();
    macro_rules! detect {
        ($($name:tt),*) => {
            $(if std::arch::is_x86_feature_detected!($name) { features.push($name); })*
        };
    }
    detect!(
        "sse4.2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vnni"
    );
    features
}

#[cfg(target_arch = "aarch64")]
fn cpu_features() -> Vec<&'static str> {
    let mut features = Vec::new();
    macro_rules! detect {
        ($($name:tt),*) => {
            $(if std::arch::is_aarch64_feature_detected!($name) { features.push($name); })*
        };
    }
    detect!("neon", "dotprod", "fp16", "i8mm", "sve");
    features
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn cpu_features() -> Vec<&'static str> {
    Vec::new()
}

/// NVIDIA GPUs as `nvidia-smi` reports them; none when it is absent.
fn nvidia_gpus() -> Vec<Gpu> {
    let output = Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total,memory.free",
            "--format=csv,noheader,nounits",
        ])
        .output();
    match output {
        Ok(output) if output.status.success() => {
            parse_nvidia_smi(&String::from_utf8_lossy(&output.stdout))
        }
        _ => Vec::new(),
    }
}

/// Parses `name, total MiB, free MiB` lines.
pub fn parse_nvidia_smi(text: &str) -> Vec<Gpu> {
    const MIB: u64 = 1024 * 1024;
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(',').map(str::trim);
            let name = fields.next()?.to_owned();
            let total: u64 = fields.next()?.parse().ok()?;
            let free: u64 = fields.next()?.parse().ok()?;
            Some(Gpu {
                name,
                memory_total: total * MIB,
                memory_free: free * MIB,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_meminfo() {
        let text =
            "MemTotal:       24576000 kB\nMemFree:         1000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(parse_meminfo(text), (24_576_000 * 1024, 20_000_000 * 1024));
        assert_eq!(parse_meminfo("garbage"), (0, 0));
    }

    #[test]
    fn reads_cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            BTreeSet::from([0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("5"), BTreeSet::from([5]));
        assert!(parse_cpu_list("garbage,3-1").is_empty());
    }

    #[test]
    fn reads_nvidia_smi() {
        let gpus = parse_nvidia_smi("NVIDIA H100 80GB HBM3, 81559, 80000\nbad line\n");
        assert_eq!(
            gpus,
            vec![Gpu {
                name: "NVIDIA H100 80GB HBM3".into(),
                memory_total: 81559 * 1024 * 1024,
                memory_free: 80000 * 1024 * 1024,
            }]
        );
    }

    #[test]
    fn probe_sees_this_machine() {
        let hardware = Hardware::probe();
        assert!(hardware.logical_cores >= 1);
        assert!(hardware.physical_cores >= 1 && hardware.physical_cores <= hardware.logical_cores);
        assert!(hardware.memory_total > 0, "Linux always has /proc/meminfo");
        assert!(hardware.memory_available <= hardware.memory_total);
    }
}
