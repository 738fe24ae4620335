//! The archive file: JSON lines in one zstd stream, readable with `zstd -d < F | jq`.
//!
//! Line 1 is the [`Header`] (format, box, the audit chain segment the file covers), then one
//! line per archived case, then the audit records of the segment in chain order, then the
//! [`Manifest`]: how many lines came before it and the sha256 of their bytes. A file is
//! accepted only whole: the header first, every line parsed, the segment's records chained
//! from `from` to `to`, the manifest last and matching. Every refusal names the file and
//! the line.
//!
//! A file is written as `<file>.partial`, synced, then renamed into place and the directory
//! synced: a file under its own name is complete and on disk.

use std::io::{BufRead, BufReader, BufWriter, Read as _, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Error;
use crate::audit;
use crate::store::{CaseRecord, OutboxEntry, PersonalRecord};

/// The format this build writes and reads.
pub const FORMAT: &str = "casegraph-archive/1";

/// Longest line a reader accepts: a case with its personal data and back-office answers is
/// far smaller; anything longer is refused before it is held in memory.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// zstd level: 3 is zstd's default, fast enough for an idle job on a small box.
const LEVEL: i32 = 3;

/// One line of an archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "line", rename_all = "snake_case")]
pub enum Line {
    Header(Header),
    Case(Box<ArchivedCase>),
    Audit(audit::Record),
    Manifest(Manifest),
}

/// What a file is and which part of the audit chain it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// [`FORMAT`].
    pub format: String,
    /// The box whose store this came from ([`crate::store::Store::box_id`]).
    #[serde(rename = "box")]
    pub box_id: String,
    pub created_at: jiff::Timestamp,
    /// The live anchor before this cut: the file's records start right after it.
    pub from: audit::Head,
    /// The anchor this cut set: the file's last record.
    pub to: audit::Head,
}

/// A case as it left the live store: everything the store held for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchivedCase {
    pub case: CaseRecord,
    /// Personal data (request, case data, reply text, failure message); `None` once erased.
    pub personal: Option<PersonalRecord>,
    /// The case's back-office calls and their answers (personal data; erasable).
    #[serde(default)]
    pub outbox: Vec<OutboxEntry>,
    /// Idempotency keys that pointed at the case (a submitter may build them from
    /// personal data; erasable).
    #[serde(default)]
    pub idempotency_keys: Vec<String>,
    /// The seqs of the case's audit records: in this file's segment or in earlier archives.
    pub audit: Vec<u64>,
}

/// The last line: what came before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Lines before the manifest (the header included).
    pub lines: u64,
    pub cases: u64,
    pub audit_records: u64,
    /// sha256 of the bytes of every line before the manifest, newlines included.
    pub sha256: String,
}

/// Writes an archive file (see the module documentation for the steps).
pub struct Writer {
    path: PathBuf,
    partial: PathBuf,
    out: zstd::Encoder<'static, BufWriter<std::fs::File>>,
    hash: Sha256,
    lines: u64,
    cases: u64,
    audit_records: u64,
}

fn io(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("path", &self.path)
            .field("lines", &self.lines)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts `path` (as `<path>.partial`, `0600`); refuses a `path` that exists.
    pub fn create(path: &Path, header: &Header) -> Result<Writer, Error> {
        if path.exists() {
            return Err(io(path, "exists; an archive is never overwritten"));
        }
        let partial = partial_path(path);
        // A partial file is what a crash left of an earlier attempt: never complete.
        match std::fs::remove_file(&partial) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&partial, e)),
            _ => {}
        }
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let file = o.open(&partial).map_err(|e| io(&partial, e))?;
        let out = zstd::Encoder::new(BufWriter::new(file), LEVEL).map_err(|e| io(&partial, e))?;
        let mut w = Writer {
            path: path.to_path_buf(),
            partial,
            out,
            hash: Sha256::new(),
            lines: 0,
            cases: 0,
            audit_records: 0,
        };
        w.line(&Line::Header(header.clone()))?;
        Ok(w)
    }

    pub fn case(&mut self, case: ArchivedCase) -> Result<(), Error> {
        self.cases += 1;
        self.line(&Line::Case(Box::new(case)))
    }

    pub fn audit(&mut self, record: audit::Record) -> Result<(), Error> {
        self.audit_records += 1;
        self.line(&Line::Audit(record))
    }

    fn line(&mut self, line: &Line) -> Result<(), Error> {
        let mut bytes = serde_json::to_vec(line).expect("archive lines serialize");
        bytes.push(b'\n');
        self.hash.update(&bytes);
        self.lines += 1;
        self.out.write_all(&bytes).map_err(|e| io(&self.partial, e))
    }

    /// Writes the manifest, syncs the file, renames it into place and syncs the directory.
    pub fn finish(mut self) -> Result<Manifest, Error> {
        let manifest = Manifest {
            lines: self.lines,
            cases: self.cases,
            audit_records: self.audit_records,
            sha256: hex::encode(self.hash.clone().finalize()),
        };
        let mut bytes =
            serde_json::to_vec(&Line::Manifest(manifest.clone())).expect("archive lines serialize");
        bytes.push(b'\n');
        self.out
            .write_all(&bytes)
            .map_err(|e| io(&self.partial, e))?;
        let file = self
            .out
            .finish()
            .map_err(|e| io(&self.partial, e))?
            .into_inner()
            .map_err(|e| io(&self.partial, e.error()))?;
        file.sync_all().map_err(|e| io(&self.partial, e))?;
        drop(file);
        std::fs::rename(&self.partial, &self.path).map_err(|e| io(&self.path, e))?;
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(&dir, e))?;
        Ok(manifest)
    }
}

/// Where a file is written before it is complete.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// Reads the archive at `path`, checking it whole, and hands every case and audit line
/// (with its line number) to `visit` in file order. Lines reach `visit` before the
/// manifest is checked: act on them only once this returns `Ok`.
pub fn read(
    path: &Path,
    mut visit: impl FnMut(u64, &Line) -> Result<(), Error>,
) -> Result<(Header, Manifest), Error> {
    let at = |line: u64, message: String| Error::Line {
        path: path.to_path_buf(),
        line,
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let decoder = zstd::Decoder::new(file).map_err(|e| io(path, e))?;
    let mut input = BufReader::new(decoder);
    let mut hash = Sha256::new();
    let mut header: Option<Header> = None;
    let mut chain: Option<audit::Head> = None;
    let mut cases = 0u64;
    let mut audit_records = 0u64;
    let mut n = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = (&mut input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| {
                at(
                    n + 1,
                    format!("not a complete zstd stream (truncated or damaged?): {e}"),
                )
            })?;
        if read == 0 {
            return Err(at(
                n + 1,
                "the file ends without its manifest (truncated?)".into(),
            ));
        }
        n += 1;
        if buf.len() > MAX_LINE {
            return Err(at(n, format!("longer than {MAX_LINE} bytes")));
        }
        if buf.last() != Some(&b'\n') {
            return Err(at(n, "the file ends inside this line (truncated?)".into()));
        }
        let line: Line =
            serde_json::from_slice(&buf).map_err(|e| at(n, format!("not an archive line: {e}")))?;
        match (&line, &header) {
            (Line::Header(h), None) if n == 1 => {
                if h.format != FORMAT {
                    return Err(at(
                        n,
                        format!("format `{}`; this build reads `{FORMAT}`", h.format),
                    ));
                }
                if h.to.seq < h.from.seq {
                    return Err(at(n, "the segment ends before it starts".into()));
                }
                chain = Some(h.from.clone());
                header = Some(h.clone());
            }
            (Line::Header(_), _) => {
                return Err(at(n, "a second header".into()));
            }
            (_, None) => return Err(at(n, "the first line is not the header".into())),
            (Line::Case(_), Some(_)) => {
                if audit_records > 0 {
                    return Err(at(n, "a case after the audit records".into()));
                }
                cases += 1;
                visit(n, &line)?;
            }
            (Line::Audit(record), Some(_)) => {
                let prev = chain.as_mut().expect("set with the header");
                link(prev, record).map_err(|p| at(n, p.to_string()))?;
                audit_records += 1;
                visit(n, &line)?;
            }
            (Line::Manifest(m), Some(h)) => {
                let digest = hex::encode(hash.finalize());
                let expected = Manifest {
                    lines: n - 1,
                    cases,
                    audit_records,
                    sha256: digest,
                };
                if *m != expected {
                    return Err(at(
                        n,
                        format!(
                            "the manifest does not match the file (it says {} line(s), {} case(s), {} audit record(s), sha256 {}; the file has {}, {}, {}, {}): altered or mixed up",
                            m.lines,
                            m.cases,
                            m.audit_records,
                            m.sha256,
                            expected.lines,
                            expected.cases,
                            expected.audit_records,
                            expected.sha256
                        ),
                    ));
                }
                let end = chain.expect("set with the header");
                if end != h.to {
                    return Err(at(
                        n,
                        format!(
                            "the audit records end at record {}, the header says {}",
                            end.seq, h.to.seq
                        ),
                    ));
                }
                let mut rest = [0u8; 1];
                let more = input
                    .read(&mut rest)
                    .map_err(|e| at(n + 1, format!("not a complete zstd stream: {e}")))?;
                if more != 0 {
                    return Err(at(n + 1, "content after the manifest".into()));
                }
                return Ok((h.clone(), m.clone()));
            }
        }
        hash.update(&buf);
    }
}

/// Checks that `record` is intact and follows `prev`, and moves `prev` to it.
fn link(prev: &mut audit::Head, record: &audit::Record) -> Result<(), audit::Problem> {
    if record.seq != prev.seq + 1 {
        return Err(audit::Problem::Missing {
            expected: prev.seq + 1,
            found: record.seq,
        });
    }
    if record.computed_hash() != record.hash {
        return Err(audit::Problem::Altered { seq: record.seq });
    }
    if record.prev != prev.hash {
        return Err(audit::Problem::Broken {
            seq: record.seq,
            prev_seq: prev.seq,
        });
    }
    *prev = audit::Head {
        seq: record.seq,
        hash: record.hash.clone(),
    };
    Ok(())
}

/// Only the header of the archive at `path` (its first line), unchecked: for planning which
/// records a full read must look at. [`read`] checks it with the rest.
pub fn header(path: &Path) -> Result<Header, Error> {
    let at = |message: String| Error::Line {
        path: path.to_path_buf(),
        line: 1,
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let decoder = zstd::Decoder::new(file).map_err(|e| io(path, e))?;
    let mut buf = Vec::new();
    BufReader::new(decoder)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buf)
        .map_err(|e| {
            at(format!(
                "not a complete zstd stream (truncated or damaged?): {e}"
            ))
        })?;
    match serde_json::from_slice::<Line>(&buf) {
        Ok(Line::Header(h)) => Ok(h),
        Ok(_) => Err(at("the first line is not the header".into())),
        Err(e) => Err(at(format!("not an archive line: {e}"))),
    }
}
