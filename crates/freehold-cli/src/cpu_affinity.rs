//! CPU sets for `freehold bench gateway --gateway-cpus`: the gateway's
//! processes on some cores, the load generator and the mock on the others,
//! so that a many-core machine can measure a gateway given N cores without
//! the load competing for them.
//!
//! Linux only (`sched_setaffinity`); elsewhere asking for it is an error.

use anyhow::{Context, bail};

/// CPU numbers, parsed from a list such as `0,1`, `0-3` or `0-1,6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CpuList(Vec<usize>);

/// The most CPU numbers a list may name (Linux's own `CPU_SETSIZE`).
const MAX_CPU: usize = 1024;

impl CpuList {
    /// The CPU numbers, ascending, without repeats.
    pub(crate) fn cpus(&self) -> &[usize] {
        &self.0
    }
}

impl From<Vec<usize>> for CpuList {
    fn from(mut cpus: Vec<usize>) -> Self {
        cpus.sort_unstable();
        cpus.dedup();
        Self(cpus)
    }
}

impl std::str::FromStr for CpuList {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |part: &str| {
            format!(
                "`{part}` in `{text}` is not a CPU number or range (write `0,1`, `0-3` or `0-1,6`)"
            )
        };
        let mut cpus = Vec::new();
        for part in text.split(',').map(str::trim) {
            let (first, last) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let first: usize = first.parse().map_err(|_| bad(part))?;
            let last: usize = last.parse().map_err(|_| bad(part))?;
            if first > last || last >= MAX_CPU {
                return Err(bad(part));
            }
            cpus.extend(first..=last);
        }
        cpus.sort_unstable();
        cpus.dedup();
        Ok(Self(cpus))
    }
}

impl std::fmt::Display for CpuList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;

    fn set_of(cpus: &[usize]) -> anyhow::Result<CpuSet> {
        let mut set = CpuSet::new();
        for &cpu in cpus {
            set.set(cpu)
                .with_context(|| format!("CPU {cpu} is beyond what this system can name"))?;
        }
        Ok(set)
    }

    /// The CPUs this thread may run on.
    pub(crate) fn allowed() -> anyhow::Result<Vec<usize>> {
        let set = sched_getaffinity(Pid::from_raw(0)).context("reading this process's CPU set")?;
        Ok((0..CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .collect())
    }

    /// Runs `spawn` with this thread confined to `cpus`, so that the child
    /// it forks starts (and its threads stay) there; restores the thread's
    /// own set afterwards.
    pub(crate) fn spawn_on<T>(
        cpus: &CpuList,
        spawn: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let own = sched_getaffinity(Pid::from_raw(0)).context("reading this thread's CPU set")?;
        sched_setaffinity(Pid::from_raw(0), &set_of(cpus.cpus())?)
            .with_context(|| format!("confining a child process to CPUs {cpus}"))?;
        let spawned = spawn();
        sched_setaffinity(Pid::from_raw(0), &own).context("restoring this thread's CPU set")?;
        spawned
    }

    /// Confines every thread of this process to `cpus`; threads started
    /// later inherit it from the thread that starts them. The threads are
    /// listed again until a listing shows none left out, since one may start
    /// another, from a set not confined yet, while the first listing is read.
    pub(crate) fn confine_this_process(cpus: &[usize]) -> anyhow::Result<()> {
        let set = set_of(cpus)?;
        let mut confined = std::collections::HashSet::new();
        loop {
            let mut found_new = false;
            let tasks =
                std::fs::read_dir("/proc/self/task").context("listing this process's threads")?;
            for task in tasks {
                let task = task.context("listing this process's threads")?;
                let Some(tid) = task
                    .file_name()
                    .to_str()
                    .and_then(|t| t.parse::<i32>().ok())
                else {
                    continue;
                };
                if !confined.insert(tid) {
                    continue;
                }
                found_new = true;
                // A thread may have ended since the listing: not an error.
                match sched_setaffinity(Pid::from_raw(tid), &set) {
                    Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                    Err(e) => {
                        return Err(e).context(format!("confining thread {tid} to its CPUs"));
                    }
                }
            }
            if !found_new {
                return Ok(());
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    pub(crate) fn allowed() -> anyhow::Result<Vec<usize>> {
        bail!("choosing CPUs (--gateway-cpus) works on Linux only")
    }

    pub(crate) fn spawn_on<T>(
        _cpus: &CpuList,
        _spawn: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        bail!("choosing CPUs (--gateway-cpus) works on Linux only")
    }

    pub(crate) fn confine_this_process(_cpus: &[usize]) -> anyhow::Result<()> {
        bail!("choosing CPUs (--gateway-cpus) works on Linux only")
    }
}

pub(crate) use imp::{confine_this_process, spawn_on};

/// Splits the CPUs this process may use into `gateway` and the rest, for
/// the load; an error names what is wrong with the choice.
pub(crate) fn split(gateway: &CpuList) -> anyhow::Result<Vec<usize>> {
    let allowed = imp::allowed()?;
    if let Some(cpu) = gateway.cpus().iter().find(|c| !allowed.contains(c)) {
        bail!(
            "CPU {cpu} of --gateway-cpus {gateway} is not one this process may use ({})",
            CpuList::from(allowed)
        );
    }
    let rest: Vec<usize> = allowed
        .into_iter()
        .filter(|c| !gateway.cpus().contains(c))
        .collect();
    if rest.is_empty() {
        bail!(
            "--gateway-cpus {gateway} leaves no CPU for the load generator and the mock upstream; \
             name fewer CPUs"
        );
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_ranges_and_repeats() {
        let list: CpuList = "3, 0-1,1".parse().unwrap();
        assert_eq!(list.cpus(), &[0, 1, 3]);
        assert_eq!(list.to_string(), "0,1,3");
    }

    #[test]
    fn bad_lists_name_the_bad_part() {
        for bad in ["", "a", "2-1", "0-", "4096", "1,,2"] {
            let err = bad.parse::<CpuList>().unwrap_err();
            assert!(err.contains("is not a CPU number or range"), "{bad}: {err}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_child_spawned_on_a_cpu_runs_there_and_this_thread_keeps_its_set() {
        let before = imp::allowed().unwrap();
        let first: CpuList = before[0].to_string().parse().unwrap();
        let output = spawn_on(&first, || {
            Ok(std::process::Command::new("grep")
                .args(["Cpus_allowed_list", "/proc/self/status"])
                .output()?)
        })
        .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            text.trim().ends_with(&format!("\t{}", before[0])),
            "the child's CPU set: {text}"
        );
        assert_eq!(imp::allowed().unwrap(), before);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn confining_the_process_reaches_threads_started_before_and_after() {
        // Confining a process confines every test running in it: the checks
        // run in a child process of this test binary, this test alone.
        const CHILD: &str = "FREEHOLD_TEST_CONFINE_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let output = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "cpu_affinity::tests::confining_the_process_reaches_threads_started_before_and_after",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "{text}{}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(text.contains("1 passed"), "the child ran no test: {text}");
            return;
        }
        let first = imp::allowed().unwrap()[0];
        let (started, ready) = std::sync::mpsc::channel();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let earlier = std::thread::spawn(move || {
            started.send(()).unwrap();
            wait.recv().unwrap();
            imp::allowed().unwrap()
        });
        ready.recv().unwrap();
        confine_this_process(&[first]).unwrap();
        let later = std::thread::spawn(|| imp::allowed().unwrap());
        release.send(()).unwrap();
        assert_eq!(earlier.join().unwrap(), [first]);
        assert_eq!(later.join().unwrap(), [first]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn taking_every_cpu_for_the_gateway_is_refused() {
        let all = CpuList(imp::allowed().unwrap());
        let err = split(&all).unwrap_err().to_string();
        assert!(err.contains("leaves no CPU"), "{err}");
        let err = split(&"1023".parse().unwrap()).unwrap_err().to_string();
        assert!(
            err.contains("is not one this process may use") || err.contains("beyond"),
            "{err}"
        );
    }
}
