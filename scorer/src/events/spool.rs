//! The disk spool: every event is appended here before `Report` returns, and the writer ships
//! it to Postgres from here. Append-only segment files of NDJSON records with a CRC-32 each.
//!
//! # Format
//! `dir/seg-<20-digit id>.ndjson`, one record per line: `{"c":"<crc32 hex>","e":<event>}`, the
//! checksum taken over the `<event>` bytes. A line is written whole by one `write(2)` of the
//! batch, so after a crash only the tail of the last segment can be torn; a reader skips a
//! torn or corrupt record and counts it. Appends always go to a fresh segment after a restart.
//! `dir/cursor` holds the writer's committed position (`<segment> <offset>`), replaced by
//! rename; losing it only means replaying events Postgres already has (they are skipped).
//!
//! # Durability
//! A `write(2)` that returned survives the scorer being killed (the data is in the kernel).
//! Surviving a host crash needs `fsync`: [`FsyncPolicy::Always`] after every append,
//! [`FsyncPolicy::Interval`] (default, every second), or [`FsyncPolicy::Never`] (the
//! kernel's own writeback); segments are always synced when they are closed and at shutdown.
//!
//! # Size cap
//! When an append would take the spool past its cap, [`SpoolFull::Reject`] refuses the batch
//! (the caller counts it dropped and `Report` fails, so the filter counts it too) and
//! [`SpoolFull::DropOldest`] deletes the oldest whole segments nobody is reading, counting
//! their records as dropped.

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use parking_lot::Mutex;
use serde::Deserialize;

use super::event::Event;

/// What to do when the spool reaches its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoolFull {
    /// Refuse new events (counted as dropped, `Report` answers RESOURCE_EXHAUSTED).
    Reject,
    /// Delete the oldest segments (their events counted as dropped) to make room.
    DropOldest,
}

/// When the spool calls `fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// After every append: nothing acknowledged is lost even on power failure. Slow.
    Always,
    /// Every `fsync_interval_ms` when something was written.
    #[default]
    Interval,
    /// Never explicitly (segment close and shutdown still sync).
    Never,
}

/// How a spool is laid out and bounded.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// Segment size at which a new segment starts, bytes.
    pub segment_bytes: u64,
    /// Cap on all segments together, bytes.
    pub max_bytes: u64,
    /// What to do at the cap.
    pub on_full: SpoolFull,
    /// When to fsync.
    pub fsync: FsyncPolicy,
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The cap is reached and the policy is to reject.
    #[error("spool full ({bytes} of {max} bytes)")]
    Full {
        /// Bytes spooled.
        bytes: u64,
        /// The cap.
        max: u64,
    },
    /// The file system failed.
    #[error("spool i/o: {0}")]
    Io(#[from] io::Error),
    /// Another process holds the spool directory.
    #[error("spool directory {0} is locked by another process")]
    Locked(String),
}

/// A place in the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// Segment id.
    pub segment: u64,
    /// Byte offset in it.
    pub offset: u64,
}

/// What an append did besides appending.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Bytes written.
    pub bytes: u64,
    /// Events deleted with old segments to make room ([`SpoolFull::DropOldest`]).
    pub rotated_events: u64,
}

#[derive(Debug)]
struct Writer {
    segment: u64,
    file: File,
    offset: u64,
    dirty: bool,
    /// Every segment on disk and its size (the current one included).
    sizes: BTreeMap<u64, u64>,
    total: u64,
}

/// The spool of one scorer. Appends are serialised; reading is done by [`SpoolReader`]s.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    opts: SpoolOptions,
    writer: Mutex<Writer>,
    /// The segment the writer task reads; never deleted to make room.
    reading: AtomicU64,
    _lock: File,
}

const PREFIX: &[u8] = b"{\"c\":\"";
const MIDDLE: &[u8] = b"\",\"e\":";
const HEADER: usize = 20;

/// Encodes one event as a spool line (with its newline).
pub fn encode(event: &Event, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(b"00000000");
    out.extend_from_slice(MIDDLE);
    let body = out.len();
    // Serialising a plain struct into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, event);
    let crc = crc32fast::hash(&out[body..]);
    out[start + PREFIX.len()..start + PREFIX.len() + 8]
        .copy_from_slice(format!("{crc:08x}").as_bytes());
    out.extend_from_slice(b"}\n");
}

/// Decodes one spool line (with or without its newline); `None` when torn or corrupt.
pub fn decode(line: &[u8]) -> Option<Event> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if line.len() < HEADER + 1
        || !line.starts_with(PREFIX)
        || &line[14..HEADER] != MIDDLE
        || !line.ends_with(b"}")
    {
        return None;
    }
    let crc = u32::from_str_radix(std::str::from_utf8(&line[6..14]).ok()?, 16).ok()?;
    let body = &line[HEADER..line.len() - 1];
    if crc32fast::hash(body) != crc {
        return None;
    }
    serde_json::from_slice(body).ok()
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("seg-{id:020}.ndjson"))
}

/// The ids and sizes of the segments in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> io::Result<BTreeMap<u64, u64>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix("seg-"))
            .and_then(|n| n.strip_suffix(".ndjson"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.insert(id, entry.metadata()?.len());
    }
    Ok(out)
}

/// Counts the complete records in a segment.
fn count_records(path: &Path) -> u64 {
    fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64)
        .unwrap_or(0)
}

impl Spool {
    /// Opens (creating) the spool in `dir`, locks it against other processes, and starts a
    /// fresh segment after the ones already there.
    pub fn open(dir: &Path, opts: SpoolOptions) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))?;
        if lock.try_lock().is_err() {
            return Err(SpoolError::Locked(dir.display().to_string()));
        }
        let mut sizes = list_segments(dir)?;
        let segment = sizes.keys().next_back().map_or(1, |last| last + 1);
        let file = open_segment(dir, segment)?;
        sizes.insert(segment, 0);
        let total = sizes.values().sum();
        Ok(Self {
            dir: dir.to_owned(),
            opts,
            writer: Mutex::new(Writer {
                segment,
                file,
                offset: 0,
                dirty: false,
                sizes,
                total,
            }),
            reading: AtomicU64::new(0),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `events` with one write. Never blocks on anything but the disk.
    pub fn append(&self, events: &[Event]) -> Result<Appended, SpoolError> {
        let mut buf = Vec::with_capacity(events.len() * 512);
        for e in events {
            encode(e, &mut buf);
        }
        self.append_encoded(&buf)
    }

    /// Appends lines already encoded with [`encode`].
    pub fn append_encoded(&self, buf: &[u8]) -> Result<Appended, SpoolError> {
        let len = buf.len() as u64;
        let mut w = self.writer.lock();
        let mut rotated_events = 0;
        if w.total + len > self.opts.max_bytes {
            if self.opts.on_full == SpoolFull::DropOldest {
                rotated_events = self.make_room(&mut w, len)?;
            }
            if w.total + len > self.opts.max_bytes {
                return Err(SpoolError::Full {
                    bytes: w.total,
                    max: self.opts.max_bytes,
                });
            }
        }
        if w.offset > 0 && w.offset + len > self.opts.segment_bytes {
            self.roll(&mut w)?;
        }
        w.file.write_all(buf)?;
        w.offset += len;
        w.total += len;
        let (segment, offset) = (w.segment, w.offset);
        w.sizes.insert(segment, offset);
        if self.opts.fsync == FsyncPolicy::Always {
            w.file.sync_data()?;
        } else {
            w.dirty = true;
        }
        Ok(Appended {
            bytes: len,
            rotated_events,
        })
    }

    fn roll(&self, w: &mut Writer) -> io::Result<()> {
        w.file.sync_data()?;
        w.segment += 1;
        w.file = open_segment(&self.dir, w.segment)?;
        w.offset = 0;
        w.dirty = false;
        w.sizes.insert(w.segment, 0);
        Ok(())
    }

    /// Deletes the oldest closed segments nobody reads until `need` more bytes fit.
    fn make_room(&self, w: &mut Writer, need: u64) -> io::Result<u64> {
        let reading = self.reading.load(Ordering::Acquire);
        let mut dropped = 0;
        while w.total + need > self.opts.max_bytes {
            let Some((&id, &size)) = w
                .sizes
                .iter()
                .find(|&(&id, _)| id != w.segment && id != reading)
            else {
                break;
            };
            let path = segment_path(&self.dir, id);
            dropped += count_records(&path);
            fs::remove_file(&path)?;
            w.sizes.remove(&id);
            w.total -= size;
        }
        Ok(dropped)
    }

    /// Flushes written data to the disk if anything was written since the last sync.
    pub fn sync(&self) -> io::Result<()> {
        let mut w = self.writer.lock();
        if w.dirty {
            w.file.sync_data()?;
            w.dirty = false;
        }
        Ok(())
    }

    /// Where the next append goes: everything before it is complete.
    pub fn end(&self) -> Position {
        let w = self.writer.lock();
        Position {
            segment: w.segment,
            offset: w.offset,
        }
    }

    /// Bytes in all segments.
    pub fn bytes(&self) -> u64 {
        self.writer.lock().total
    }

    /// Bytes from `pos` to the end of the spool.
    pub fn bytes_after(&self, pos: Position) -> u64 {
        let w = self.writer.lock();
        w.sizes
            .range(pos.segment..)
            .map(|(_, &size)| size)
            .sum::<u64>()
            .saturating_sub(pos.offset)
    }

    /// The first segment after `id` still on disk.
    pub fn next_segment(&self, id: u64) -> Option<u64> {
        let w = self.writer.lock();
        w.sizes.range(id + 1..).next().map(|(&k, _)| k)
    }

    /// The oldest segment on disk.
    pub fn first_segment(&self) -> u64 {
        let w = self.writer.lock();
        w.sizes.keys().next().copied().unwrap_or(w.segment)
    }

    /// Records the committed position: stores the cursor and deletes the segments before it.
    pub fn commit(&self, pos: Position) -> io::Result<()> {
        let tmp = self.dir.join("cursor.tmp");
        fs::write(&tmp, format!("{} {}\n", pos.segment, pos.offset))?;
        fs::rename(&tmp, self.dir.join("cursor"))?;
        let mut w = self.writer.lock();
        let old: Vec<(u64, u64)> = w
            .sizes
            .range(..pos.segment)
            .map(|(&k, &v)| (k, v))
            .collect();
        for (id, size) in old {
            match fs::remove_file(segment_path(&self.dir, id)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            w.sizes.remove(&id);
            w.total -= size;
        }
        Ok(())
    }

    /// The committed position stored by [`Spool::commit`], else the start of the spool.
    pub fn committed(&self) -> Position {
        let stored = fs::read_to_string(self.dir.join("cursor"))
            .ok()
            .and_then(|t| {
                let (s, o) = t.trim().split_once(' ')?;
                Some(Position {
                    segment: s.parse().ok()?,
                    offset: o.parse().ok()?,
                })
            });
        let first = Position {
            segment: self.first_segment(),
            offset: 0,
        };
        match stored {
            Some(p) if p >= first => p,
            _ => first,
        }
    }

    fn set_reading(&self, segment: u64) {
        self.reading.store(segment, Ordering::Release);
    }
}

fn open_segment(dir: &Path, id: u64) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, id))
}

/// Reads events in order from a position, up to the spool's end.
#[derive(Debug)]
pub struct SpoolReader {
    pos: Position,
    file: Option<(u64, File)>,
    buf: Vec<u8>,
    /// Torn or corrupt records skipped so far.
    pub corrupt: u64,
}

/// Bytes read per call to the file.
const CHUNK: usize = 256 * 1024;

impl SpoolReader {
    /// A reader starting at `pos`.
    pub fn new(pos: Position) -> Self {
        Self {
            pos,
            file: None,
            buf: Vec::with_capacity(CHUNK),
            corrupt: 0,
        }
    }

    /// Where the next read starts.
    pub fn position(&self) -> Position {
        self.pos
    }

    /// Reads up to `max` events, advancing the position past what it returns.
    pub fn read(&mut self, spool: &Spool, max: usize) -> io::Result<Vec<Event>> {
        let mut out = Vec::new();
        while out.len() < max {
            let end = spool.end();
            spool.set_reading(self.pos.segment);
            if self.pos.segment > end.segment {
                break;
            }
            let closed = self.pos.segment < end.segment;
            if !self.open(spool)? {
                // The segment is gone (dropped to make room): go on with the next one.
                if !self.next_segment(spool) {
                    break;
                }
                continue;
            }
            let Some((_, file)) = &self.file else {
                break;
            };
            let limit = if closed {
                file.metadata()?.len()
            } else {
                end.offset
            };
            if self.pos.offset >= limit {
                if closed && self.next_segment(spool) {
                    continue;
                }
                break;
            }
            let want = ((limit - self.pos.offset) as usize).min(CHUNK);
            self.buf.resize(want, 0);
            let n = file.read_at(&mut self.buf, self.pos.offset)?;
            self.buf.truncate(n);
            let mut consumed = 0;
            while out.len() < max {
                let rest = &self.buf[consumed..];
                let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                    break;
                };
                match decode(&rest[..=nl]) {
                    Some(e) => out.push(e),
                    None => self.corrupt += 1,
                }
                consumed += nl + 1;
            }
            if consumed == 0 {
                // No whole line in what is left of a closed segment (a torn tail) or in a
                // whole chunk (no record is that long): skip the rest of the segment.
                self.corrupt += 1;
                if !closed || !self.next_segment(spool) {
                    self.pos.offset = limit;
                    break;
                }
                continue;
            }
            self.pos.offset += consumed as u64;
        }
        Ok(out)
    }

    /// Opens the current segment unless it is open; false when it no longer exists.
    fn open(&mut self, spool: &Spool) -> io::Result<bool> {
        let seg = self.pos.segment;
        if self.file.as_ref().map(|(id, _)| *id) != Some(seg) {
            match File::open(segment_path(spool.dir(), seg)) {
                Ok(f) => self.file = Some((seg, f)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.file = None;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn next_segment(&mut self, spool: &Spool) -> bool {
        match spool.next_segment(self.pos.segment) {
            Some(next) => {
                self.pos = Position {
                    segment: next,
                    offset: 0,
                };
                true
            }
            None => false,
        }
    }
}

/// Every event in the segments of `dir`, oldest first, without locking it (for
/// `events tail`); torn and corrupt records are skipped.
pub fn read_all(dir: &Path) -> io::Result<Vec<Event>> {
    let mut out = Vec::new();
    for id in list_segments(dir)?.keys() {
        let bytes = match fs::read(segment_path(dir, *id)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        out.extend(bytes.split_inclusive(|&b| b == b'\n').filter_map(decode));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::event::Sanitizer;
    use palisade_proto::v1::RequestOutcome;

    fn event(i: u64) -> Event {
        let o = RequestOutcome {
            request_id: format!("r-{i}"),
            method: "GET".into(),
            path: format!("/p/{i}"),
            timestamp_ms: 1_700_000_000_000 + i as i64,
            ..Default::default()
        };
        Sanitizer::default().event(&o, 1_700_000_000_000 + i as i64, u128::from(i))
    }

    fn opts(max_bytes: u64, on_full: SpoolFull) -> SpoolOptions {
        SpoolOptions {
            segment_bytes: 2_000,
            max_bytes,
            on_full,
            fsync: FsyncPolicy::Interval,
        }
    }

    fn ids(events: &[Event]) -> Vec<String> {
        events.iter().map(|e| e.request_id.clone()).collect()
    }

    #[test]
    fn a_record_round_trips_and_a_flipped_bit_is_caught() {
        let mut line = Vec::new();
        encode(&event(1), &mut line);
        assert_eq!(decode(&line), Some(event(1)));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["e"]["request_id"], "r-1", "a record is a JSON line");
        let at = line.len() / 2;
        line[at] ^= 1;
        assert_eq!(decode(&line), None);
        assert_eq!(decode(b"{\"c\":\"0000"), None);
    }

    #[test]
    fn reads_in_order_across_segments_and_resumes_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(1 << 20, SpoolFull::Reject)).unwrap();
        for i in 0..20 {
            spool.append(&[event(i)]).unwrap();
        }
        assert!(list_segments(dir.path()).unwrap().len() > 2, "rolled");
        let mut r = SpoolReader::new(spool.committed());
        let first = r.read(&spool, 7).unwrap();
        assert_eq!(
            ids(&first),
            (0..7).map(|i| format!("r-{i}")).collect::<Vec<_>>()
        );
        spool.commit(r.position()).unwrap();
        drop(r);
        drop(spool);

        let spool = Spool::open(dir.path(), opts(1 << 20, SpoolFull::Reject)).unwrap();
        spool.append(&[event(20)]).unwrap();
        let mut r = SpoolReader::new(spool.committed());
        let rest = r.read(&spool, 100).unwrap();
        assert_eq!(
            ids(&rest),
            (7..21).map(|i| format!("r-{i}")).collect::<Vec<_>>()
        );
        assert!(r.read(&spool, 100).unwrap().is_empty());
        assert!(
            spool.bytes_after(spool.committed()) > 0,
            "read, not yet committed"
        );
        spool.commit(r.position()).unwrap();
        assert_eq!(spool.bytes_after(spool.committed()), 0);
    }

    #[test]
    fn a_torn_tail_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spool = Spool::open(dir.path(), opts(1 << 20, SpoolFull::Reject)).unwrap();
            spool.append(&[event(1), event(2)]).unwrap();
            let mut torn = Vec::new();
            encode(&event(3), &mut torn);
            torn.truncate(torn.len() / 2);
            spool.append_encoded(&torn).unwrap();
        }
        let spool = Spool::open(dir.path(), opts(1 << 20, SpoolFull::Reject)).unwrap();
        spool.append(&[event(4)]).unwrap();
        let mut r = SpoolReader::new(spool.committed());
        assert_eq!(ids(&r.read(&spool, 100).unwrap()), ["r-1", "r-2", "r-4"]);
        assert_eq!(r.corrupt, 1);
        assert_eq!(ids(&read_all(dir.path()).unwrap()), ["r-1", "r-2", "r-4"]);
    }

    #[test]
    fn a_second_process_cannot_open_the_same_spool() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Spool::open(dir.path(), opts(1 << 20, SpoolFull::Reject)).unwrap();
        assert!(matches!(
            Spool::open(dir.path(), opts(1 << 20, SpoolFull::Reject)),
            Err(SpoolError::Locked(_))
        ));
    }

    #[test]
    fn the_cap_rejects_or_drops_the_oldest_and_says_how_many() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(3_000, SpoolFull::Reject)).unwrap();
        let mut accepted = 0;
        for i in 0..50 {
            match spool.append(&[event(i)]) {
                Ok(_) => accepted += 1,
                Err(SpoolError::Full { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert!(accepted < 50 && spool.bytes() <= 3_000);
        assert_eq!(read_all(dir.path()).unwrap().len(), accepted);

        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), opts(3_000, SpoolFull::DropOldest)).unwrap();
        let mut rotated = 0;
        for i in 0..50 {
            rotated += spool.append(&[event(i)]).unwrap().rotated_events;
        }
        let kept = read_all(dir.path()).unwrap();
        assert_eq!(kept.len() as u64 + rotated, 50);
        assert_eq!(kept.last().unwrap().request_id, "r-49");
        assert!(spool.bytes() <= 3_000);
    }
}
