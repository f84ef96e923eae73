//! Who this run is, as another guerite would need to tell it apart: the host, the kernel boot,
//! the pid namespace and the process (pid and start time), read from /proc. A claim records
//! these so that a later run can prove its author dead instead of waiting for the claim to
//! expire.

use std::io::Read;

/// One process, identified across pid reuse: same boot, same pid namespace, same pid and the
/// same start time (in clock ticks since boot) mean the same process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub boot_id: String,
    pub pid_ns: String,
    pub pid: u32,
    pub start: u64,
}

impl Process {
    /// `boot/pidns/pid/start`: the form a claim label carries.
    pub fn encode(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.boot_id, self.pid_ns, self.pid, self.start
        )
    }

    pub fn decode(text: &str) -> Option<Process> {
        let mut parts = text.split('/');
        let p = Process {
            boot_id: parts.next()?.to_string(),
            pid_ns: parts.next()?.to_string(),
            pid: parts.next()?.parse().ok()?,
            start: parts.next()?.parse().ok()?,
        };
        (parts.next().is_none() && !p.boot_id.is_empty() && !p.pid_ns.is_empty()).then_some(p)
    }
}

/// This process, or `None` where /proc does not tell (then nobody can prove it dead, and its
/// claims only expire).
pub fn current() -> Option<Process> {
    let boot_id = read_small("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_string();
    let pid_ns = std::fs::read_link("/proc/self/ns/pid")
        .ok()?
        .to_string_lossy()
        .into_owned();
    let pid = std::process::id();
    let start = start_time(&read_small("/proc/self/stat")?)?;
    Some(Process {
        boot_id,
        pid_ns: pid_ns
            .trim_start_matches("pid:[")
            .trim_end_matches(']')
            .to_string(),
        pid,
        start,
    })
}

/// `Some(false)` only when `other` is provably gone: it ran on this boot of this kernel, in our
/// pid namespace, and no process with its pid and start time exists now. Anything else (another
/// host, another namespace such as a container's, /proc unreadable) is `None`: unknown.
pub fn alive(other: &Process, me: &Process) -> Option<bool> {
    if other.boot_id != me.boot_id || other.pid_ns != me.pid_ns {
        return None;
    }
    if other.pid == me.pid && other.start == me.start {
        return Some(true);
    }
    match read_small(&format!("/proc/{}/stat", other.pid)) {
        Some(stat) => Some(start_time(&stat) == Some(other.start)),
        // Absence proves nothing where /proc hides other users' processes (hidepid): only
        // trust it when pid 1 is visible.
        None if read_small("/proc/1/stat").is_some() => Some(false),
        None => None,
    }
}

pub fn hostname() -> String {
    read_small("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// 128 random bits as hex, from the kernel: names this guerite's state (its instance).
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // Not a secret, only distinct: time and pid keep two instances apart.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = (nanos ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_small(path: &str) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(4096)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// Field 22 of /proc/<pid>/stat. The command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so fields are counted after its last `)`.
fn start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat = "4242 (we (ird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 200 18446744073709551615";
        assert_eq!(start_time(stat), Some(987654));
        assert_eq!(start_time("garbage"), None);
    }

    #[test]
    fn encode_round_trips_and_rejects_garbage() {
        let p = Process {
            boot_id: "b0".into(),
            pid_ns: "4026531836".into(),
            pid: 7,
            start: 99,
        };
        assert_eq!(Process::decode(&p.encode()), Some(p));
        for bad in ["", "a/b/c", "a/b/x/1", "a/b/1/2/3", "/b/1/2"] {
            assert_eq!(Process::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn this_process_is_alive_and_a_dead_one_is_not() {
        let me = current().expect("/proc is readable in tests");
        assert_eq!(alive(&me, &me), Some(true));
        let reused = Process {
            start: me.start + 1,
            ..me.clone()
        };
        assert_eq!(alive(&reused, &me), Some(false), "same pid, other start");
        let elsewhere = Process {
            pid_ns: "other".into(),
            ..reused.clone()
        };
        assert_eq!(alive(&elsewhere, &me), None, "another namespace: unknown");
        assert_eq!(random_id().len(), 32);
        assert_ne!(random_id(), random_id());
    }
}
