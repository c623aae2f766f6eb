//! One owner per directory: an exclusive OS lock on a file inside it, held while a process
//! works there (`train`, `train --resume`, each run of `reproduce`; the results files of a
//! protocol's folder while one is rewritten).
//!
//! The lock is std's [`File::try_lock`]: `flock(2)` on Linux, macOS and the BSDs,
//! `LockFileEx` on Windows. The kernel drops it when its process ends, however it ends
//! (SIGKILL included), so no lock ever goes stale and none needs cleaning; the file itself
//! stays and is reused. It holds across machines where the filesystem passes locks on:
//! local filesystems, NFSv4 (Linux maps `flock` onto whole-file POSIX locks there; NFSv3
//! needs `lockd`), Lustre only when mounted with `-o flock`. A filesystem that refuses the
//! lock is an error that says so: nothing runs unprotected. (An NFS mount with `nolock`
//! grants locks that only its own machine sees; that cannot be detected from here.) There a
//! lock belongs to the process rather than the open file, so no process opens a lock file
//! it holds a second time (only the unit tests here do, on a local filesystem).
//!
//! The holder writes its pid and host into the file, so whoever finds the lock taken can
//! say who holds it.

use anyhow::{anyhow, Context, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file of a run directory.
pub const RUN_LOCK: &str = ".uvae.lock";
/// The lock file of a protocol's folder, held while its results files are rewritten.
pub const RESULTS_LOCK: &str = ".results.lock";

/// A held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DirLock {
    // Held for its lock; closing it releases the lock.
    _file: File,
    dir: PathBuf,
}

/// What [`DirLock::try_claim`] found.
#[derive(Debug)]
pub enum Claim {
    Held(DirLock),
    /// Another process holds it: who (`pid N on host H`, as far as the file says).
    Busy(String),
}

impl DirLock {
    /// The directory this lock owns.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates `dir` if needed and takes its lock file `name` without waiting. `what` names
    /// the directory in errors (`--out runs/x`).
    pub fn try_claim(dir: &Path, name: &str, what: &str) -> Result<Claim> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {what} ({})", dir.display()))?;
        let path = dir.join(name);
        let mut file = open_lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Claim::Held(Self::held(dir, &path, file)?)),
            Err(TryLockError::WouldBlock) => Ok(Claim::Busy(read_holder(&mut file))),
            Err(TryLockError::Error(e)) => Err(refused(&path, &e)),
        }
    }

    /// [`Self::try_claim`] on a run directory, a lock held elsewhere being an error that names
    /// `what`, the directory and the holder.
    pub fn claim_run(dir: &Path, what: &str) -> Result<DirLock> {
        match Self::try_claim(dir, RUN_LOCK, what)? {
            Claim::Held(lock) => Ok(lock),
            Claim::Busy(holder) => Err(busy(dir, what, &holder)),
        }
    }

    /// Waits for the lock file `name` in `dir` (an existing directory): for short critical
    /// sections, such as rewriting a protocol's results files.
    pub fn wait(dir: &Path, name: &str) -> Result<DirLock> {
        let path = dir.join(name);
        let file = open_lock_file(&path)?;
        file.lock().map_err(|e| refused(&path, &e))?;
        Self::held(dir, &path, file)
    }

    /// The lock just taken on `file` (at `path`), once it names its holder.
    fn held(dir: &Path, path: &Path, mut file: File) -> Result<DirLock> {
        write_holder(&mut file)
            .with_context(|| format!("cannot write the lock file {}", path.display()))?;
        Ok(DirLock {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }

    /// Who holds the run lock of `dir` now (None: nobody, or no lock file yet), without
    /// creating or changing anything. A shared lock taken and dropped at once tells.
    pub fn holder(dir: &Path) -> Result<Option<String>> {
        let path = dir.join(RUN_LOCK);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(None),
            Err(TryLockError::WouldBlock) => Ok(Some(read_holder(&mut file))),
            Err(TryLockError::Error(e)) => Err(refused(&path, &e)),
        }
    }

    /// Fails with the busy error when another process holds the run lock of `dir`: a check
    /// before the work of starting a run, which [`Self::claim_run`] makes binding.
    pub fn check_free(dir: &Path, what: &str) -> Result<()> {
        match Self::holder(dir)? {
            Some(holder) => Err(busy(dir, what, &holder)),
            None => Ok(()),
        }
    }
}

/// The error for a run directory another process holds.
fn busy(dir: &Path, what: &str, holder: &str) -> anyhow::Error {
    anyhow!(
        "{what} is in use: another uvae process ({holder}) is running in {} and holds its lock {}; wait for it to finish or stop it, or choose another directory (--force does not override a running process)",
        dir.display(),
        dir.join(RUN_LOCK).display()
    )
}

/// The error for a filesystem that refuses the lock.
fn refused(path: &Path, e: &std::io::Error) -> anyhow::Error {
    anyhow!(
        "cannot lock {}: {e}. The filesystem refuses file locks, so uvae cannot make sure that only one process writes there, and will not run unprotected. Local filesystems and NFSv4 lock; NFSv3 needs lockd, and Lustre needs mounting with -o flock. Choose a directory on such a filesystem",
        path.display()
    )
}

/// Opens (or creates) a lock file, never truncating it: a holder's pid stays readable to
/// whoever finds it taken.
fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))
}

/// `pid N on host H`, what a holder writes into its lock file.
fn holder_line() -> String {
    format!("pid {} on host {}", std::process::id(), host_name())
}

fn write_holder(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(format!("{}\n", holder_line()).as_bytes())?;
    file.flush()
}

/// What a lock file says of its holder; it may not have written it yet.
fn read_holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_string(&mut text));
    match text.lines().next().map(str::trim) {
        Some(line) if line.starts_with("pid ") => line.to_string(),
        _ => "a process that has not written its pid yet".to_string(),
    }
}

/// This machine's name: the kernel's on Linux, else the usual environment variables.
fn host_name() -> String {
    let from_proc = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    from_proc
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "(unknown)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_naming_the_holder_until_the_first_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let first = DirLock::claim_run(&dir, "--out run").unwrap();
        assert_eq!(first.dir(), dir);
        let me = format!("pid {}", std::process::id());
        // A second open file description conflicts even within one process.
        let e = DirLock::claim_run(&dir, "--out run")
            .unwrap_err()
            .to_string();
        for part in ["--out run is in use", &me, "on host", RUN_LOCK, "--force"] {
            assert!(e.contains(part), "{part:?} not in {e}");
        }
        assert!(DirLock::holder(&dir).unwrap().unwrap().starts_with(&me));
        assert!(DirLock::check_free(&dir, "--out run").is_err());
        drop(first);
        assert_eq!(DirLock::holder(&dir).unwrap(), None);
        DirLock::check_free(&dir, "--out run").unwrap();
        let again = DirLock::claim_run(&dir, "--out run").unwrap();
        // The file names its holder once, however often it was claimed.
        let text = std::fs::read_to_string(dir.join(RUN_LOCK)).unwrap();
        assert_eq!(text, format!("{}\n", holder_line()));
        drop(again);
    }

    #[test]
    fn holder_creates_nothing_and_the_results_lock_waits() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(DirLock::holder(tmp.path()).unwrap(), None);
        assert!(!tmp.path().join(RUN_LOCK).exists());
        let held = DirLock::wait(tmp.path(), RESULTS_LOCK).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = tmp.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            let lock = DirLock::wait(&dir, RESULTS_LOCK).unwrap();
            tx.send(()).unwrap();
            drop(lock);
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(rx.try_recv().is_err(), "the waiter got a held lock");
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the waiter gets the lock once it is released");
        waiter.join().unwrap();
    }

    #[test]
    fn a_refused_lock_says_the_filesystem_refuses_it() {
        // What Lustre without -o flock answers (ENOSYS).
        let e = std::io::Error::other("Function not implemented");
        let msg = refused(Path::new("/lustre/x/.uvae.lock"), &e).to_string();
        for part in [
            "/lustre/x/.uvae.lock",
            "refuses file locks",
            "-o flock",
            "NFSv4",
        ] {
            assert!(msg.contains(part), "{part:?} not in {msg}");
        }
    }
}
