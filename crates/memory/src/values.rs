//! The value log: records' bytes, appended to segment files; the row table holds only where each
//! record is. A B-tree holding ~500-byte values directly sits about half full (its pages split in
//! two as records are appended), which doubled the store's size; appended bytes take their own
//! size. A rewritten or purged record leaves its old bytes behind until its segment is compacted
//! (its live records copied to the current segment, then the file removed).
//!
//! Durability: bytes are synced before the row-table transaction that points at them commits, so
//! a crash can leave unreferenced bytes at a segment's end (garbage, counted at the next open) but
//! never a pointer to bytes that are not on disk.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use crate::error::MemoryError;

/// Where a record's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ptr {
    pub segment: u32,
    pub offset: u64,
    pub len: u32,
}

struct Segments {
    files: BTreeMap<u32, Arc<File>>,
    /// The segment appended to.
    current: u32,
    /// Its length (appends go here, at the end).
    end: u64,
    /// Files written to since the last sync.
    unsynced: Vec<Arc<File>>,
    /// Bytes of each segment that some row points at.
    live: HashMap<u32, u64>,
}

pub struct ValueLog {
    dir: PathBuf,
    segment_bytes: u64,
    segments: Mutex<Segments>,
    /// Held (shared) by a reader from before it looks a pointer up until it has read the bytes;
    /// held (exclusive) to remove a compacted segment, so a reader never finds its file gone.
    removal: RwLock<()>,
}

fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.seg"))
}

fn open_segment(path: &Path) -> Result<File, MemoryError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| MemoryError::Storage(format!("opening {}: {e}", path.display())))
}

impl ValueLog {
    /// Opens (or starts) the log in `dir`; a segment is sealed (and the next one started) once
    /// the next value would take it past `segment_bytes`.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<ValueLog, MemoryError> {
        std::fs::create_dir_all(dir)?;
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(n) = name.to_str().and_then(|s| s.strip_suffix(".seg")).and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            files.insert(n, Arc::new(open_segment(&entry.path())?));
        }
        let current = files.keys().next_back().copied().unwrap_or(1);
        if files.is_empty() {
            files.insert(current, Arc::new(open_segment(&segment_path(dir, current))?));
        }
        let end = files[&current].metadata()?.len();
        Ok(ValueLog {
            dir: dir.to_owned(),
            segment_bytes,
            segments: Mutex::new(Segments { files, current, end, unsynced: Vec::new(), live: HashMap::new() }),
            removal: RwLock::new(()),
        })
    }

    /// Appends `bytes` (the caller is the store's only writer) and counts them live.
    pub fn append(&self, bytes: &[u8]) -> Result<Ptr, MemoryError> {
        let mut s = self.segments.lock().unwrap();
        if s.end > 0 && s.end + bytes.len() as u64 > self.segment_bytes {
            let next = s.current + 1;
            let file = Arc::new(open_segment(&segment_path(&self.dir, next))?);
            s.files.insert(next, file);
            s.current = next;
            s.end = 0;
        }
        let file = s.files[&s.current].clone();
        file.write_all_at(bytes, s.end)?;
        let ptr = Ptr { segment: s.current, offset: s.end, len: bytes.len() as u32 };
        s.end += bytes.len() as u64;
        if !s.unsynced.iter().any(|f| Arc::ptr_eq(f, &file)) {
            s.unsynced.push(file);
        }
        *s.live.entry(ptr.segment).or_default() += ptr.len as u64;
        Ok(ptr)
    }

    /// Makes every append so far durable; called before the transaction that points at them.
    pub fn sync(&self) -> Result<(), MemoryError> {
        let files = std::mem::take(&mut self.segments.lock().unwrap().unsynced);
        for f in files {
            f.sync_data()?;
        }
        Ok(())
    }

    /// Counts bytes that a row points at (when loading the row table).
    pub fn note_live(&self, ptr: Ptr) {
        *self.segments.lock().unwrap().live.entry(ptr.segment).or_default() += ptr.len as u64;
    }

    /// Counts bytes that no row points at any more (a rewritten or purged record).
    pub fn note_dead(&self, ptr: Ptr) {
        let mut s = self.segments.lock().unwrap();
        if let Some(l) = s.live.get_mut(&ptr.segment) {
            *l = l.saturating_sub(ptr.len as u64);
        }
    }

    /// A read guard: pointers looked up while it is held stay readable.
    pub fn reader(&self) -> LogReader<'_> {
        LogReader { log: self, _guard: self.removal.read().unwrap() }
    }

    /// Sealed segments at most half live: worth copying their live records out.
    pub fn sparse_segments(&self) -> Vec<u32> {
        let s = self.segments.lock().unwrap();
        s.files
            .iter()
            .filter(|(&n, _)| n != s.current)
            .filter_map(|(&n, f)| {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                let live = s.live.get(&n).copied().unwrap_or(0);
                (live * 2 <= len).then_some(n)
            })
            .collect()
    }

    /// Removes a segment no row points at any more (after the commit that moved its records).
    pub fn remove_segment(&self, n: u32) -> Result<(), MemoryError> {
        let _exclusive = self.removal.write().unwrap();
        let mut s = self.segments.lock().unwrap();
        if n == s.current {
            return Ok(());
        }
        s.files.remove(&n);
        s.live.remove(&n);
        drop(s);
        match std::fs::remove_file(segment_path(&self.dir, n)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Bytes on disk over every segment, and how many of them rows point at.
    pub fn sizes(&self) -> (u64, u64) {
        let s = self.segments.lock().unwrap();
        let total = s.files.values().map(|f| f.metadata().map(|m| m.len()).unwrap_or(0)).sum();
        (total, s.live.values().sum())
    }
}

pub struct LogReader<'a> {
    log: &'a ValueLog,
    _guard: RwLockReadGuard<'a, ()>,
}

impl LogReader<'_> {
    pub fn read(&self, ptr: Ptr) -> Result<Vec<u8>, MemoryError> {
        let file = self.log.segments.lock().unwrap().files.get(&ptr.segment).cloned().ok_or_else(|| {
            MemoryError::Storage(format!("a record points into value segment {} which is missing", ptr.segment))
        })?;
        let mut buf = vec![0u8; ptr.len as usize];
        file.read_exact_at(&mut buf, ptr.offset).map_err(|e| {
            MemoryError::Storage(format!("reading a record from value segment {} at {}: {e}", ptr.segment, ptr.offset))
        })?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_read_back_roll_over_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = ValueLog::open(dir.path(), 4096).unwrap();
        let a = log.append(b"first").unwrap();
        let big = vec![7u8; 4094];
        let b = log.append(&big).unwrap();
        assert_eq!(b.segment, a.segment + 1, "a value that does not fit starts a new segment");
        let c = log.append(b"third").unwrap();
        assert_eq!(c.segment, b.segment + 1);
        log.sync().unwrap();
        {
            let r = log.reader();
            assert_eq!(r.read(a).unwrap(), b"first");
            assert_eq!(r.read(c).unwrap(), b"third");
        }
        drop(log);
        let log = ValueLog::open(dir.path(), 4096).unwrap();
        let d = log.append(b"fourth").unwrap();
        assert_eq!((d.segment, d.offset), (c.segment, 5), "appends continue the last segment");
        assert_eq!(log.reader().read(a).unwrap(), b"first");
    }

    #[test]
    fn sparse_sealed_segments_are_found_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let log = ValueLog::open(dir.path(), 4096).unwrap();
        let a = log.append(&[1u8; 1000]).unwrap();
        let b = log.append(&[2u8; 3596]).unwrap();
        assert!(log.sparse_segments().is_empty(), "the current segment is never compacted; the first is all live");
        log.append(&[3u8; 3596]).unwrap();
        log.note_dead(b);
        assert_eq!(log.sparse_segments(), vec![b.segment]);
        log.note_dead(a);
        log.remove_segment(a.segment).unwrap();
        assert!(log.reader().read(a).unwrap_err().to_string().contains("missing"));
        assert!(!segment_path(dir.path(), a.segment).exists());
    }
}
