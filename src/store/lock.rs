//! One run at a time: an exclusive lock on `<state file>.lock`, held for the whole run. The lock
//! file records the holder's pid and start time so that a second run can say who holds it.

use std::fs::{File, OpenOptions, Permissions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};

use crate::store::state;

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
    state::create_dir(state_file)?;
    let path = lock_path(state_file);
    // Not following a link: root would otherwise truncate and write whatever it points at.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => anyhow!(
                "lock file {} is a symbolic link, which guerite does not follow; remove it",
                path.display()
            ),
            _ => anyhow!(e).context(format!("cannot open the lock file {}", path.display())),
        })?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot inspect the lock file {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "lock file {} is not a regular file; remove it",
            path.display()
        );
    }
    // An older guerite left 0644 lock files, and a umask can narrow a new one below 0600.
    if meta.permissions().mode() & 0o7777 != 0o600 {
        file.set_permissions(Permissions::from_mode(0o600))
            .with_context(|| format!("cannot set mode 0600 on the lock file {}", path.display()))?;
    }
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

    #[test]
    fn a_planted_link_is_refused_and_a_wide_lock_file_is_narrowed() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("guerite-lock-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let state = dir.join("state.json");
        let victim = dir.join("victim");
        std::fs::write(&victim, "keep me\n").unwrap();
        std::os::unix::fs::symlink(&victim, lock_path(&state)).unwrap();
        let err = match acquire(&state, Utc::now()) {
            Err(e) => format!("{e:#}"),
            Ok(_) => panic!("locked through a link"),
        };
        assert_eq!(
            err,
            format!(
                "lock file {}/state.json.lock is a symbolic link, which guerite does not \
                 follow; remove it",
                dir.display()
            )
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");

        std::fs::remove_file(lock_path(&state)).unwrap();
        std::fs::write(lock_path(&state), "").unwrap();
        std::fs::set_permissions(lock_path(&state), Permissions::from_mode(0o666)).unwrap();
        let Acquired::Yes(_held) = acquire(&state, Utc::now()).unwrap() else {
            panic!("lock")
        };
        let mode = std::fs::metadata(lock_path(&state)).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        let _ = std::fs::remove_dir_all(dir);
    }
}
