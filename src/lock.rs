//! One run at a time: an exclusive lock on `<state file>.lock`, held for the whole run. The lock
//! file records the holder's pid and start time so that a second run can say who holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

/// Held until dropped; the kernel releases it if the process dies, so a `kill -9` never leaves
/// a lock behind.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

#[derive(Debug, PartialEq)]
pub struct Holder {
    pub pid: Option<u32>,
    pub since: Option<DateTime<Utc>>,
}

pub enum Acquired {
    Yes(Lock),
    HeldBy(Holder),
}

pub fn lock_path(state_file: &Path) -> PathBuf {
    let mut name = state_file.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    state_file.with_file_name(name)
}

pub fn acquire(state_file: &Path, now: DateTime<Utc>) -> Result<Acquired> {
    if let Some(dir) = state_file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    }
    let path = lock_path(state_file);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Ok(Acquired::HeldBy(parse_holder(&text)));
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    let record = format!("{} {}\n", std::process::id(), now.to_rfc3339());
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(record.as_bytes()))
        .with_context(|| format!("cannot write the lock file {}", path.display()))?;
    Ok(Acquired::Yes(Lock { _file: file }))
}

fn parse_holder(text: &str) -> Holder {
    let mut words = text.split_whitespace();
    Holder {
        pid: words.next().and_then(|w| w.parse().ok()),
        since: words
            .next()
            .and_then(|w| DateTime::parse_from_rfc3339(w).ok())
            .map(|t| t.with_timezone(&Utc)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_record_parses_or_degrades() {
        let t = DateTime::parse_from_rfc3339("2026-11-21T12:00:00+00:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_holder("4242 2026-11-21T12:00:00+00:00\n"),
            Holder {
                pid: Some(4242),
                since: Some(t)
            }
        );
        // A holder caught between truncating and writing its record.
        assert_eq!(
            parse_holder(""),
            Holder {
                pid: None,
                since: None
            }
        );
    }

    #[test]
    fn second_lock_in_the_same_process_is_refused_then_released() {
        let dir = std::env::temp_dir().join(format!("guerite-lock-{}", std::process::id()));
        let state = dir.join("sub/state.json");
        let now = Utc::now();
        let Acquired::Yes(first) = acquire(&state, now).unwrap() else {
            panic!("first lock")
        };
        match acquire(&state, now).unwrap() {
            Acquired::HeldBy(h) => assert_eq!(h.pid, Some(std::process::id())),
            Acquired::Yes(_) => panic!("two holders at once"),
        }
        drop(first);
        assert!(matches!(acquire(&state, now).unwrap(), Acquired::Yes(_)));
        let _ = std::fs::remove_dir_all(dir);
    }
}
