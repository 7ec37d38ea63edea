//! What a process on this machine costs, from `/proc`: CPU seconds and resident memory, for
//! the figures over a run's steady window (the SFU's in `calls`, the API's in `presence`).

/// User + system CPU seconds of a process so far, from `/proc/PID/stat`.
pub fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_secs_from_stat(&stat)
}

/// Resident set size of a process now, in bytes, from `/proc/PID/status`.
pub fn process_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    rss_bytes_from_status(&status)
}

/// Fields 14 and 15 (utime, stime) after the `(comm)` field, which may hold spaces; in
/// clock ticks of USER_HZ, 100 on Linux whatever the kernel's HZ.
fn cpu_secs_from_stat(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The `VmRSS:` line, which the kernel writes in kB (KiB).
fn rss_bytes_from_status(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_come_from_utime_and_stime_after_the_command_name() {
        // A command name with spaces and a parenthesis must not shift the fields.
        let stat =
            "4242 (janus (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 40 0 100 0 0";
        assert_eq!(cpu_secs_from_stat(stat), Some(3.25));
        assert_eq!(cpu_secs_from_stat("4242 (janus) S 1"), None);
        assert_eq!(cpu_secs_from_stat("garbage"), None);
        assert!(process_cpu_secs(std::process::id()).is_some());
    }

    #[test]
    fn rss_comes_from_the_vmrss_line_in_kib() {
        let status = "Name:\tsurge\nVmPeak:\t  900 kB\nVmRSS:\t   2048 kB\nThreads:\t4\n";
        assert_eq!(rss_bytes_from_status(status), Some(2048 * 1024));
        assert_eq!(rss_bytes_from_status("Name:\tsurge\n"), None);
        assert!(process_rss_bytes(std::process::id()).is_some_and(|b| b > 0));
    }
}
