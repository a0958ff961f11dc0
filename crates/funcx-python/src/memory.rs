//! How much memory this machine offers tasks, as a manager advertises it by default: the
//! machine's memory, or the limit of the cgroup the manager runs in when that is lower (a
//! batch job or a container is usually given less than the whole node).

use std::path::Path;

/// The bytes of memory tasks here may reserve: `MemTotal` of `/proc/meminfo`, or the cgroup
/// v2 limit `/sys/fs/cgroup/memory.max` when it is lower; `None` where neither can be read
/// (not Linux), which leaves memory unlimited.
pub fn machine_memory() -> Option<u64> {
    memory_from(
        Path::new("/proc/meminfo"),
        Path::new("/sys/fs/cgroup/memory.max"),
    )
}

/// [`machine_memory`] from the files at `meminfo` and `cgroup_max`.
fn memory_from(meminfo: &Path, cgroup_max: &Path) -> Option<u64> {
    let total = std::fs::read_to_string(meminfo)
        .ok()
        .and_then(|text| mem_total(&text));
    // "max" (no limit), a missing file (cgroup v1, no memory controller) or anything else
    // unreadable leaves the machine's total.
    let limit = std::fs::read_to_string(cgroup_max)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    match (total, limit) {
        (Some(total), Some(limit)) => Some(total.min(limit)),
        (total, limit) => total.or(limit),
    }
}

/// The `MemTotal:` line of `/proc/meminfo` (in kB), in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?;
    let mut words = line.split_whitespace();
    let number: u64 = words.next()?.parse().ok()?;
    let scale = match words.next() {
        Some("kB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    number.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       24683584 kB\nMemFree:         1000000 kB\n";

    #[test]
    fn the_machine_total_unless_the_cgroup_allows_less() {
        let dir = std::env::temp_dir().join(format!("funcx-memory-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (meminfo, max) = (dir.join("meminfo"), dir.join("memory.max"));
        let with = |info: &str, limit: Option<&str>| {
            std::fs::write(&meminfo, info).unwrap();
            match limit {
                Some(limit) => std::fs::write(&max, limit).unwrap(),
                None => {
                    let _ = std::fs::remove_file(&max);
                }
            }
            memory_from(&meminfo, &max)
        };
        let total = 24_683_584 * 1024;
        assert_eq!(with(MEMINFO, None), Some(total), "no cgroup v2 file");
        assert_eq!(with(MEMINFO, Some("max\n")), Some(total), "no limit");
        assert_eq!(
            with(MEMINFO, Some("1073741824\n")),
            Some(1 << 30),
            "a lower limit"
        );
        let higher = format!("{}\n", total * 2);
        assert_eq!(with(MEMINFO, Some(&higher)), Some(total), "a higher limit");
        assert_eq!(with("garbage", Some("max")), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn this_machine_has_some() {
        // Linux is what the managers run on; the test machine has /proc/meminfo.
        assert!(machine_memory().is_some_and(|bytes| bytes > 0));
    }
}
