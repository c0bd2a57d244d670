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
//! previous life, which names another segment number. If valid frames of the same segment
//! follow that one, it is damage, not an end: the start is refused naming the file and the
//! offset (or, with `--recover-damaged`, every valid frame is kept and the loss logged).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
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

/// A frame that fails its check while whole, valid frames of the same segment follow it: not
/// the torn tail a crash leaves (nothing valid comes after that), but damage to commits that
/// were acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment's file.
    pub file: PathBuf,
    /// Where the first bad frame starts.
    pub offset: u64,
    /// Bytes from there to the next valid frame: what is lost.
    pub lost_bytes: u64,
    /// Valid commit frames after it in the segment.
    pub frames_after: usize,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: the commit frame at byte {} is damaged ({} bytes up to the next valid frame), \
             and {} acknowledged commit frames follow it",
            self.file.display(),
            self.offset,
            self.lost_bytes,
            self.frames_after
        )
    }
}

/// What a segment's file holds: the entries of its frames in order and, if a frame in the
/// middle is damaged, where.
#[derive(Debug, Default)]
pub struct SegmentRead {
    /// Log entries of the frames before any damage.
    pub entries: Vec<Vec<u8>>,
    /// Log entries of the valid frames after the damage, if any.
    pub after_damage: Vec<Vec<u8>>,
    /// The first damaged frame, when valid frames follow it.
    pub damage: Option<Damage>,
}

/// The frame of `segment` that starts at `at`, if it is whole and valid: its data and where
/// the next frame starts.
fn frame_at(bytes: &[u8], at: usize, segment: u64) -> Option<(&[u8], usize)> {
    let head = bytes.get(at..at.checked_add(HEAD)?)?;
    let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let mut number = [0u8; 8];
    number.copy_from_slice(&head[4..12]);
    if word(0) != MAGIC || u64::from_le_bytes(number) != segment {
        return None;
    }
    let end = (at + HEAD).checked_add(word(12) as usize)?;
    let data = bytes.get(at + HEAD..end)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head[4..16]);
    crc.update(data);
    (crc.finalize() == word(16)).then_some((data, end))
}

/// Appends the log entries of one frame's data.
fn split_entries(path: &Path, data: &[u8], out: &mut Vec<Vec<u8>>) -> io::Result<()> {
    let mut rest = data;
    while let Some(len) = rest.get(..4) {
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let Some(entry) = rest.get(4..4 + len) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: a frame's entries do not add up", path.display()),
            ));
        };
        out.push(entry.to_vec());
        rest = &rest[4 + len..];
    }
    Ok(())
}

/// The frames of one segment's file, in order, up to its first frame that is not whole and
/// valid; and, after that one, any valid frames of the same segment, which make it damage
/// rather than the end of what was written.
///
/// The whole file is read: only a search of the rest tells a damaged frame from the torn or
/// zero tail that ends every segment. The rest holds zeros or frames of the file's previous
/// life, which name an older segment (numbers only grow), so a frame of this segment there
/// was written after the bad one.
pub fn read_segment(path: &Path, segment: u64) -> io::Result<SegmentRead> {
    let bytes = fs::read(path)?;
    let mut out = SegmentRead::default();
    let mut at = 0;
    while let Some((data, next)) = frame_at(&bytes, at, segment) {
        split_entries(path, data, &mut out.entries)?;
        at = next;
    }
    let mut needle = [0u8; 12];
    needle[..4].copy_from_slice(&MAGIC.to_le_bytes());
    needle[4..].copy_from_slice(&segment.to_le_bytes());
    let finder = memchr::memmem::Finder::new(&needle);
    let mut probe = at + 1;
    while let Some(found) = bytes.get(probe..).and_then(|rest| finder.find(rest)) {
        let start = probe + found;
        if frame_at(&bytes, start, segment).is_none() {
            probe = start + 1;
            continue;
        }
        let damage = out.damage.get_or_insert_with(|| Damage {
            file: path.to_path_buf(),
            offset: at as u64,
            lost_bytes: (start - at) as u64,
            frames_after: 0,
        });
        let mut next = start;
        while let Some((data, end)) = frame_at(&bytes, next, segment) {
            split_entries(path, data, &mut out.after_damage)?;
            damage.frames_after += 1;
            next = end;
        }
        probe = next + 1;
    }
    Ok(out)
}

/// What to do at start with a log segment damaged in the middle (see [`Damage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDamage {
    /// Refuse to start, naming the file, the offset and what follows: an operator decides.
    #[default]
    Refuse,
    /// Keep every valid frame, before and after the damage, and log what was dropped
    /// (`--recover-damaged`).
    KeepIntact,
}

impl LogFile {
    /// Reads the log a previous run left beside `base` (its entries, oldest first) without
    /// changing it. The caller moves them into chunks, makes that durable, then calls
    /// [`LogFile::start`], which recycles those segments. A segment damaged in the middle is
    /// an error with [`OnDamage::Refuse`] (of kind `InvalidData`, naming the file and the
    /// offset); with [`OnDamage::KeepIntact`] its valid frames are kept and the loss logged.
    pub fn recover(base: &Path, on_damage: OnDamage) -> io::Result<Vec<Vec<u8>>> {
        let (segments, _) = list(base)?;
        let mut entries = Vec::new();
        for segment in segments {
            let read = read_segment(&segment_path(base, segment), segment)?;
            entries.extend(read.entries);
            if let Some(damage) = read.damage {
                match on_damage {
                    OnDamage::Refuse => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "{damage}; start with --recover-damaged to keep the valid \
                                 frames and drop the damaged bytes"
                            ),
                        ));
                    }
                    OnDamage::KeepIntact => {
                        tracing::warn!(
                            file = %damage.file.display(),
                            offset = damage.offset,
                            lost_bytes = damage.lost_bytes,
                            frames_after = damage.frames_after,
                            "damaged commit frame dropped from the log; the valid frames after it are kept"
                        );
                        entries.extend(read.after_damage);
                    }
                }
            }
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
        let got = LogFile::recover(&base, OnDamage::Refuse).unwrap();
        assert_eq!(got, [&b"one"[..], b"two", b"three", b"", b"five"]);
    }

    /// Writes three frames and returns the log's base, the segment's path and where the
    /// second frame starts.
    fn three_frames() -> (tempfile_dir::Dir, PathBuf, PathBuf, u64) {
        let (dir, base) = base();
        let mut log = LogFile::start(&base, false, LogLock::take(&base).unwrap()).unwrap();
        log.append([b"kept".as_slice()]).unwrap();
        let second = log.at;
        log.append([b"middle".as_slice()]).unwrap();
        log.append([b"after".as_slice(), b"also".as_slice()])
            .unwrap();
        let path = segment_path(&base, log.segment());
        (dir, base, path, second)
    }

    #[test]
    fn a_torn_last_frame_ends_the_segment_quietly() {
        let (_dir, base, path, second) = three_frames();
        // The last frame cut short, as a crash in the middle of its write leaves it.
        let third = second + (HEAD + 4 + 6) as u64;
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0u8; 9], third + HEAD as u64 + 3)
            .unwrap();
        let got = LogFile::recover(&base, OnDamage::Refuse).unwrap();
        assert_eq!(got, [&b"kept"[..], b"middle"]);
    }

    #[test]
    fn a_damaged_frame_in_the_middle_is_refused_naming_file_and_offset() {
        let (_dir, base, path, second) = three_frames();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        // One byte of the second frame's data changed: its CRC no longer matches.
        file.write_all_at(b"X", second + HEAD as u64 + 5).unwrap();
        let e = LogFile::recover(&base, OnDamage::Refuse).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let message = e.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains(&format!("at byte {second} ")), "{message}");
        assert!(
            message.contains("1 acknowledged commit frames follow"),
            "{message}"
        );
        assert!(message.contains("--recover-damaged"), "{message}");
        let read = read_segment(&path, 1).unwrap();
        assert_eq!(read.damage.unwrap().lost_bytes, (HEAD + 4 + 6) as u64);
        // Recovering keeps the frames before and after the damaged one.
        let got = LogFile::recover(&base, OnDamage::KeepIntact).unwrap();
        assert_eq!(got, [&b"kept"[..], b"after", b"also"]);
    }

    #[test]
    fn a_damaged_header_is_found_too() {
        let (_dir, base, path, second) = three_frames();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        // The second frame's length made huge: it would run past the end of the file.
        file.write_all_at(&[0xff; 4], second + 12).unwrap();
        let e = LogFile::recover(&base, OnDamage::Refuse).unwrap_err();
        assert!(e.to_string().contains(&format!("at byte {second} ")), "{e}");
        let got = LogFile::recover(&base, OnDamage::KeepIntact).unwrap();
        assert_eq!(got, [&b"kept"[..], b"after", b"also"]);
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
        assert_eq!(
            LogFile::recover(&base, OnDamage::Refuse).unwrap(),
            [&b"x"[..]]
        );
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
        assert_eq!(
            LogFile::recover(&base, OnDamage::Refuse).unwrap(),
            [&b"a"[..]]
        );
        let log = LogFile::start(&base, false, LogLock::take(&base).unwrap()).unwrap();
        assert_eq!(log.segment(), 2);
        drop(log);
        assert!(
            LogFile::recover(&base, OnDamage::Refuse)
                .unwrap()
                .is_empty()
        );
        remove_all(&base).unwrap();
        assert_eq!(list(&base).unwrap(), (vec![], vec![]));
    }
}
