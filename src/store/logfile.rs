//! The SQLite store's log of commits, as files of its own beside the database.
//!
//! Every acknowledged batch is first made durable here: one `write` and one `fdatasync` per
//! group commit, into a file whose blocks are already allocated, so that the sync carries no
//! metadata. Compaction later moves the records into the database's chunks; once that is
//! durable too, the files that held them are recycled. Kept as a table, each batch cost a
//! B-tree insert, a WAL frame write per page (two system calls each), and the same bytes again
//! when the checkpoint copied them into the database file, only to be freed moments later.
//!
//! The log is a sequence of segments, `<db>-log.<n>` with `n` counting up. A segment is
//! written from its start; each group commit is one frame:
//!
//! ```text
//! frame  := magic:u32 segment:u64 len:u32 crc:u32 data[len]
//! data   := (entry_len:u32 entry)*          (log entries, see codec)
//! ```
//!
//! `crc` is CRC-32 of `segment`, `len` and `data`. Reading a segment stops at the first frame
//! that is not whole and valid: the zeros of a fresh segment, a frame torn by a crash (never
//! acknowledged: the acknowledgement waits for the sync), or a frame left by the segment's
//! previous life, which names another segment number.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: u32 = 0x4d57_4c47; // "MWLG"
const HEAD: usize = 4 + 8 + 4 + 4;

/// Bytes of a segment, allocated up front by writing zeros (a recycled segment keeps its
/// blocks). A group larger than what is left of a segment starts the next one; one larger
/// than a whole segment grows it.
pub const SEGMENT_BYTES: u64 = 16 << 20;
/// Finished segments kept for reuse rather than deleted.
const SPARES: usize = 2;
/// How long [`LogFile::start`] waits for another holder of the log to let go (a store of this
/// process being dropped, say) before it gives up.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The log's segments and the one being written.
#[derive(Debug)]
pub struct LogFile {
    /// The database file's path; segments are named after it.
    base: PathBuf,
    file: File,
    segment: u64,
    at: u64,
    /// Whether a write is followed by `fdatasync`.
    sync: bool,
    /// Finished segments' files, renamed `<db>-log.spare.<k>`, ready to be written again.
    spares: Vec<PathBuf>,
    /// Segments before the current one that still hold records not yet durable in chunks.
    older: Vec<u64>,
    /// Held for as long as this log is written.
    _lock: LogLock,
}

/// `<db>-log.lock`, locked by the process that writes the log: a second process on the same
/// database would otherwise compact this one's records a second time and reuse its segments
/// under it. Taken before anything reads the log.
#[derive(Debug)]
pub struct LogLock(#[allow(dead_code, reason = "held, never read: dropping it unlocks")] File);

impl LogLock {
    /// Takes the lock, waiting a little for another holder to let go.
    pub fn take(base: &Path) -> io::Result<LogLock> {
        lock(base).map(LogLock)
    }
}

fn segment_path(base: &Path, segment: u64) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(format!("-log.{segment}"));
    PathBuf::from(name)
}

fn spare_path(base: &Path, k: usize) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(format!("-log.spare.{k}"));
    PathBuf::from(name)
}

/// Takes `<db>-log.lock` for this process, waiting a little for another holder to let go.
fn lock(base: &Path) -> io::Result<File> {
    let mut name = base.as_os_str().to_owned();
    name.push("-log.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(PathBuf::from(name))?;
    let started = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "another millwatch is writing to this database (its log is locked)",
                ));
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// The directory holding the database (for syncing new names into it).
fn parent(base: &Path) -> PathBuf {
    match base.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(base: &Path) -> io::Result<()> {
    File::open(parent(base))?.sync_all()
}

/// The segment numbers and spare files beside `base`.
fn list(base: &Path) -> io::Result<(Vec<u64>, Vec<PathBuf>)> {
    let prefix = format!(
        "{}-log.",
        base.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let (mut segments, mut spares) = (Vec::new(), Vec::new());
    for entry in fs::read_dir(parent(base))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        if rest.starts_with("spare.") {
            spares.push(entry.path());
        } else if let Ok(n) = rest.parse::<u64>() {
            segments.push(n);
        }
    }
    segments.sort_unstable();
    spares.sort();
    Ok((segments, spares))
}

/// The file of a new segment: a spare renamed, or a new file of zeros; its name synced.
fn segment_file(base: &Path, spares: &mut Vec<PathBuf>, segment: u64) -> io::Result<File> {
    let path = segment_path(base, segment);
    // Left by an attempt that failed half-way (segment numbers above the current one never
    // held anything acknowledged).
    if path.exists() {
        fs::remove_file(&path)?;
    }
    let file = match spares.pop() {
        Some(spare) => {
            fs::rename(&spare, &path)?;
            OpenOptions::new().write(true).open(&path)?
        }
        None => {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..SEGMENT_BYTES >> 20 {
                file.write_all(&zeros)?;
            }
            file.sync_all()?;
            file
        }
    };
    // The new name must survive a crash before anything acknowledged depends on it.
    sync_dir(base)?;
    Ok(file)
}

/// The log entries of one segment's file, in order, up to its first frame that is not whole
/// and valid.
pub fn read_segment(path: &Path, segment: u64) -> io::Result<Vec<Vec<u8>>> {
    // Frame by frame, up to the first that is not whole: a segment is allocated in advance
    // (16 MiB of zeros), and a start should read only what was written in it.
    let mut file = io::BufReader::with_capacity(1 << 16, File::open(path)?);
    let size = file.get_ref().metadata()?.len();
    let mut entries = Vec::new();
    let mut at: u64 = 0;
    let mut head = [0u8; HEAD];
    let mut data = Vec::new();
    while at + HEAD as u64 <= size && file.read_exact(&mut head).is_ok() {
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let mut number = [0u8; 8];
        number.copy_from_slice(&head[4..12]);
        let len = word(12) as usize;
        if word(0) != MAGIC || u64::from_le_bytes(number) != segment {
            break;
        }
        if at + (HEAD + len) as u64 > size {
            break;
        }
        data.resize(len, 0);
        if file.read_exact(&mut data).is_err() {
            break;
        }
        let data = &data[..];
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head[4..16]);
        crc.update(data);
        if crc.finalize() != word(16) {
            break;
        }
        let mut rest = data;
        while let Some(len) = rest.get(..4) {
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let Some(entry) = rest.get(4..4 + len) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: a frame's entries do not add up", path.display()),
                ));
            };
            entries.push(entry.to_vec());
            rest = &rest[4 + len..];
        }
        at += (HEAD + len) as u64;
    }
    Ok(entries)
}

impl LogFile {
    /// Reads the log a previous run left beside `base` (its entries, oldest first) without
    /// changing it. The caller moves them into chunks, makes that durable, then calls
    /// [`LogFile::start`], which recycles those segments.
    pub fn recover(base: &Path) -> io::Result<Vec<Vec<u8>>> {
        let (segments, _) = list(base)?;
        let mut entries = Vec::new();
        for segment in segments {
            entries.extend(read_segment(&segment_path(base, segment), segment)?);
        }
        Ok(entries)
    }

    /// Starts the log beside `base` afresh: every segment found there is recycled (its records
    /// must be durable elsewhere by now) and a new one is begun after the highest.
    pub fn start(base: &Path, sync: bool, lock: LogLock) -> io::Result<LogFile> {
        let (segments, spares) = list(base)?;
        let next = segments.last().map_or(1, |n| n + 1);
        let mut spares = spares;
        for segment in segments {
            recycle(base, &mut spares, segment)?;
        }
        Ok(LogFile {
            base: base.to_path_buf(),
            file: segment_file(base, &mut spares, next)?,
            segment: next,
            at: 0,
            sync,
            spares,
            older: Vec::new(),
            _lock: lock,
        })
    }

    /// The segment being written.
    #[cfg(test)]
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// Makes `segment` the one written: a spare file renamed, or a new file of zeros.
    fn open_segment(&mut self, segment: u64) -> io::Result<()> {
        self.file = segment_file(&self.base, &mut self.spares, segment)?;
        self.segment = segment;
        self.at = 0;
        Ok(())
    }

    /// Appends one group commit's log entries as a frame and, unless the log was started
    /// without sync, waits until they are on disk.
    pub fn append<'a>(&mut self, entries: impl IntoIterator<Item = &'a [u8]>) -> io::Result<()> {
        let mut frame = vec![0u8; HEAD];
        for entry in entries {
            frame.extend_from_slice(&(entry.len() as u32).to_le_bytes());
            frame.extend_from_slice(entry);
        }
        let len = frame.len() - HEAD;
        if len == 0 {
            return Ok(());
        }
        let len32 = u32::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a group over 4 GiB"))?;
        if self.at > 0 && self.at + frame.len() as u64 > SEGMENT_BYTES {
            self.rotate()?;
        }
        frame[..4].copy_from_slice(&MAGIC.to_le_bytes());
        frame[4..12].copy_from_slice(&self.segment.to_le_bytes());
        frame[12..16].copy_from_slice(&len32.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&frame[4..16]);
        crc.update(&frame[HEAD..]);
        frame[16..20].copy_from_slice(&crc.finalize().to_le_bytes());
        self.file.write_all_at(&frame, self.at)?;
        if self.sync {
            self.file.sync_data()?;
        }
        self.at += frame.len() as u64;
        Ok(())
    }

    /// Starts the next segment; what was written so far is in segments before it. Returns
    /// the last of those.
    pub fn rotate(&mut self) -> io::Result<u64> {
        let done = self.segment;
        if self.at == 0 {
            // Nothing in it yet: it may stay the current one.
            return Ok(done - 1);
        }
        self.open_segment(done + 1)?;
        self.older.push(done);
        Ok(done)
    }

    /// Recycles the segments up to `upto`: their records are durable in chunks.
    pub fn release(&mut self, upto: u64) -> io::Result<()> {
        let (gone, kept): (Vec<u64>, Vec<u64>) = self.older.iter().partition(|&&s| s <= upto);
        self.older = kept;
        let mut first_error = None;
        for segment in gone {
            // One that cannot be recycled now is tried again with the next release.
            if let Err(e) = self.recycle(segment) {
                self.older.push(segment);
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn recycle(&mut self, segment: u64) -> io::Result<()> {
        recycle(&self.base, &mut self.spares, segment)
    }
}

/// Makes a finished segment a spare (or removes it when there are enough).
fn recycle(base: &Path, spares: &mut Vec<PathBuf>, segment: u64) -> io::Result<()> {
    let path = segment_path(base, segment);
    if spares.len() >= SPARES {
        return fs::remove_file(path);
    }
    let mut k = 0;
    while spares.contains(&spare_path(base, k)) || spare_path(base, k).exists() {
        k += 1;
    }
    let spare = spare_path(base, k);
    fs::rename(&path, &spare)?;
    spares.push(spare);
    Ok(())
}

/// Removes every segment and spare beside `base` (after the database file itself is gone).
#[cfg(test)]
fn remove_all(base: &Path) -> io::Result<()> {
    let (segments, spares) = list(base)?;
    for s in segments {
        fs::remove_file(segment_path(base, s))?;
    }
    for s in spares {
        fs::remove_file(s)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> (tempfile_dir::Dir, PathBuf) {
        let dir = tempfile_dir::Dir::new();
        let base = dir.path().join("m.db");
        (dir, base)
    }

    /// A temporary directory removed on drop (std only).
    mod tempfile_dir {
        use std::path::{Path, PathBuf};

        pub struct Dir(PathBuf);

        impl Dir {
            pub fn new() -> Dir {
                let p = std::env::temp_dir().join(format!(
                    "millwatch-logfile-{}-{}",
                    std::process::id(),
                    fastrand::u64(..)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }

            pub fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn entries_come_back_in_order_across_segments() {
        let (_dir, base) = base();
        let mut log = LogFile::start(&base, true, LogLock::take(&base).unwrap()).unwrap();
        log.append([b"one".as_slice(), b"two".as_slice()]).unwrap();
        log.rotate().unwrap();
        log.append([b"three".as_slice()]).unwrap();
        log.append([b"".as_slice(), b"five".as_slice()]).unwrap();
        drop(log);
        let got = LogFile::recover(&base).unwrap();
        assert_eq!(got, [&b"one"[..], b"two", b"three", b"", b"five"]);
    }

    #[test]
    fn a_torn_or_damaged_frame_ends_the_segment() {
        let (_dir, base) = base();
        let mut log = LogFile::start(&base, false, LogLock::take(&base).unwrap()).unwrap();
        log.append([b"kept".as_slice()]).unwrap();
        let torn_at = log.at;
        log.append([b"torn".as_slice()]).unwrap();
        log.append([b"after".as_slice()]).unwrap();
        let path = segment_path(&base, log.segment());
        drop(log);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        // One byte of the second frame's data flipped: its CRC no longer matches.
        file.write_all_at(b"X", torn_at + HEAD as u64 + 5).unwrap();
        assert_eq!(LogFile::recover(&base).unwrap(), [&b"kept"[..]]);
    }

    #[test]
    fn released_segments_are_reused_without_their_old_frames() {
        let (_dir, base) = base();
        let mut log = LogFile::start(&base, false, LogLock::take(&base).unwrap()).unwrap();
        log.append([b"old-1".as_slice()]).unwrap();
        log.append([b"old-2".as_slice()]).unwrap();
        let first = log.rotate().unwrap();
        log.release(first).unwrap();
        assert!(!segment_path(&base, first).exists());
        log.append([b"new".as_slice()]).unwrap();
        let second = log.rotate().unwrap();
        log.release(second).unwrap();
        // The third segment is the first one's file: its old frames name segment 1.
        log.append([b"x".as_slice()]).unwrap();
        assert_eq!(log.segment(), 3);
        drop(log);
        assert_eq!(LogFile::recover(&base).unwrap(), [&b"x"[..]]);
    }

    #[test]
    fn a_second_writer_of_the_same_log_is_refused() {
        let (_dir, base) = base();
        let log = LogFile::start(&base, false, LogLock::take(&base).unwrap()).unwrap();
        let second = LogLock::take(&base).unwrap_err();
        assert!(second.to_string().contains("another millwatch"), "{second}");
        drop(log);
        LogLock::take(&base).unwrap();
    }

    #[test]
    fn starting_again_recycles_what_was_recovered() {
        let (_dir, base) = base();
        let mut log = LogFile::start(&base, false, LogLock::take(&base).unwrap()).unwrap();
        log.append([b"a".as_slice()]).unwrap();
        drop(log);
        assert_eq!(LogFile::recover(&base).unwrap(), [&b"a"[..]]);
        let log = LogFile::start(&base, false, LogLock::take(&base).unwrap()).unwrap();
        assert_eq!(log.segment(), 2);
        drop(log);
        assert!(LogFile::recover(&base).unwrap().is_empty());
        remove_all(&base).unwrap();
        assert_eq!(list(&base).unwrap(), (vec![], vec![]));
    }
}
