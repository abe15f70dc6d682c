//! CPU time of the harness's own runtimes, from `/proc/self/task` (Linux;
//! `None` elsewhere). CPU per request does not depend on what else the
//! machine runs, unlike latency and saturation, so it is the steadiest way
//! to compare two servers on a shared machine.

/// USER_HZ, the unit of `utime`/`stime` in `/proc`: 100 on every Linux ABI.
const USER_HZ: f64 = 100.0;

/// Seconds of user + system CPU used so far by this process's threads whose
/// name starts with `prefix` (e.g. `bench-server`).
pub fn threads_cpu_seconds(prefix: &str) -> Option<f64> {
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        // Fields after the parenthesised name: state is field 3, so utime
        // (14) and stime (15) are at 11 and 12 counting from the state.
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        ticks += f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    }
    Some(ticks as f64 / USER_HZ)
}
