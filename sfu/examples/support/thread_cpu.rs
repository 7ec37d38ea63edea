//! CPU time of threads, from `/proc` (Linux), for the examples that measure per-core cost.
// Each example that includes this file uses part of it.
#![allow(dead_code)]

/// User + system CPU seconds of this process's threads whose name contains `name`.
pub fn threads_named(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter(|stat| {
            stat.split_once(") ")
                .is_some_and(|(comm, _)| comm.contains(name))
        })
        .map(|stat| cpu_seconds(&stat))
        .sum()
}

/// User + system CPU seconds of the calling thread.
pub fn this_thread() -> f64 {
    std::fs::read_to_string("/proc/thread-self/stat").map_or(0.0, |stat| cpu_seconds(&stat))
}

/// utime + stime of one `stat` line, in seconds (clock ticks of 10 ms).
fn cpu_seconds(stat: &str) -> f64 {
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0.0;
    };
    // After "pid (comm) ": state is field 0, utime 11, stime 12.
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    ticks as f64 / 100.0
}
