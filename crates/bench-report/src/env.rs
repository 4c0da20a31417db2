//! Where the figures were taken: the machine, the kernel, the tools, the commit and
//! the date. `scripts/bench.sh` writes what takes a process to learn (tool versions,
//! `git rev-parse`) and what should describe the run rather than the report (machine,
//! kernel, date) to `env.txt` beside the records; what it lacks is read here from
//! `/proc` and `.git`, without starting anything.

use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Keys of `env.txt` the report shows in its own places rather than in the tool table.
const SPECIAL: [&str; 7] = ["cpu", "cores", "memory", "kernel", "git", "date", "command"];

/// What the report says about the run's environment. `None`: unknown.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunEnv {
    /// CPU model.
    pub cpu: Option<String>,
    /// Logical CPUs.
    pub cores: Option<String>,
    /// Memory, e.g. `7.7 GiB`.
    pub memory: Option<String>,
    /// Kernel release (and architecture).
    pub kernel: Option<String>,
    /// Git commit the benches were built from.
    pub git: Option<String>,
    /// When the benches ran (UTC).
    pub date: Option<String>,
    /// The command that ran them.
    pub command: Option<String>,
    /// Tool versions, by tool, in `env.txt`'s order.
    pub tools: Vec<(String, String)>,
}

/// Parses `env.txt`: `key=value` lines; blank lines and `#` comments are skipped.
pub fn parse(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

impl RunEnv {
    /// The environment from `env.txt`'s entries alone.
    pub fn from_entries(entries: &[(String, String)]) -> Self {
        let get = |k: &str| {
            entries
                .iter()
                .rev()
                .find(|(n, v)| n == k && !v.is_empty())
                .map(|(_, v)| v.clone())
        };
        Self {
            cpu: get("cpu"),
            cores: get("cores"),
            memory: get("memory"),
            kernel: get("kernel"),
            git: get("git"),
            date: get("date"),
            command: get("command"),
            tools: entries
                .iter()
                .filter(|(k, _)| !SPECIAL.contains(&k.as_str()))
                .cloned()
                .collect(),
        }
    }

    /// Fills what `env.txt` didn't say from this machine (`/proc`), the repository at
    /// `root` (`.git`) and `fallback_date` (e.g. the records' age).
    pub fn fill_from_host(&mut self, root: &Path, fallback_date: Option<SystemTime>) {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        if self.cpu.is_none() {
            self.cpu = cpu_model(&cpuinfo);
        }
        if self.cores.is_none() {
            self.cores = std::thread::available_parallelism()
                .ok()
                .map(|n| n.to_string());
        }
        if self.memory.is_none() {
            self.memory = fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| mem_total_bytes(&m))
                .map(gib);
        }
        if self.kernel.is_none() {
            self.kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|r| format!("Linux {} {}", r.trim(), std::env::consts::ARCH));
        }
        if self.git.is_none() {
            self.git = git_head(&root.join(".git"));
        }
        if self.date.is_none() {
            self.date = fallback_date.map(utc);
        }
    }
}

/// The first `model name` in `/proc/cpuinfo`.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == "model name")
        .map(|(_, v)| v.trim().to_owned())
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes as GiB with one decimal.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// The commit `HEAD` names in the git directory `git` (a branch's ref, loose or
/// packed, or a detached hash). Reading the files keeps the binary from running git.
pub fn git_head(git: &Path) -> Option<String> {
    let head = fs::read_to_string(git.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(r) = head.strip_prefix("ref:") else {
        return Some(head.to_owned());
    };
    let r = r.trim();
    if let Ok(h) = fs::read_to_string(git.join(r)) {
        return Some(h.trim().to_owned());
    }
    let packed = fs::read_to_string(git.join("packed-refs")).ok()?;
    packed
        .lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(_, name)| *name == r)
        .map(|(h, _)| h.to_owned())
}

/// A time as `YYYY-MM-DD HH:MM UTC`.
pub fn utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        s / 3600,
        s / 60 % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01, counted in 400-year eras
/// (146,097 days each) that start on a 1 March so that leap days fall last.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn env_txt_special_keys_and_tools() {
        let e = parse(
            "# written by scripts/bench.sh\n\
             git=0123abcd\n\
             kernel=Linux 6.1.0 x86_64\n\
             iptables-nft=iptables v1.8.9 (nf_tables)\n\
             \n\
             nft=nftables v1.0.6 (Lester Gooch #5)\n\
             date=\n",
        );
        let r = RunEnv::from_entries(&e);
        assert_eq!(r.git.as_deref(), Some("0123abcd"));
        assert_eq!(r.kernel.as_deref(), Some("Linux 6.1.0 x86_64"));
        // An empty value is unknown, not an empty string in the report.
        assert_eq!(r.date, None);
        assert_eq!(
            r.tools,
            [
                (
                    "iptables-nft".to_owned(),
                    "iptables v1.8.9 (nf_tables)".to_owned()
                ),
                (
                    "nft".to_owned(),
                    "nftables v1.0.6 (Lester Gooch #5)".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn proc_files() {
        let cpu = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(
            cpu_model(cpu).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(cpu_model("processor : 0\n"), None);
        let mem = "MemTotal:        8048576 kB\nMemFree: 1 kB\n";
        assert_eq!(mem_total_bytes(mem), Some(8_048_576 * 1024));
        assert_eq!(gib(8 << 30), "8.0 GiB");
    }

    #[test]
    fn dates() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00 UTC");
        // 2024-02-29 12:34 UTC: a leap day.
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_040);
        assert_eq!(utc(t), "2024-02-29 12:34 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(19_723 * 86_400);
        assert_eq!(utc(t), "2024-01-01 00:00 UTC");
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn git_head_loose_packed_and_detached() {
        let dir = std::env::temp_dir().join(format!("bench-report-git-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("refs/heads")).unwrap();
        fs::write(dir.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        fs::write(
            dir.join("packed-refs"),
            "# pack-refs\naaaa refs/heads/main\n",
        )
        .unwrap();
        assert_eq!(git_head(&dir).as_deref(), Some("aaaa"));
        fs::write(dir.join("refs/heads/main"), "bbbb\n").unwrap();
        assert_eq!(git_head(&dir).as_deref(), Some("bbbb"));
        fs::write(dir.join("HEAD"), "cccc\n").unwrap();
        assert_eq!(git_head(&dir).as_deref(), Some("cccc"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
