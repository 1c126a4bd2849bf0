//! NDJSON source: files (resumed from their stored byte offset) and standard input
//! -> batches of raw records with the position after each batch. Runs on a blocking
//! thread; lines longer than the limit are cut to a bounded prefix and flagged (they
//! become dead letters), so one huge line cannot exhaust memory. Fails only on I/O.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::batch::SourcePosition;
use crate::domain::record::{Origin, RawRecord};

/// Bytes hashed to recognise a file when resuming.
const FINGERPRINT_BYTES: usize = 4096;

/// One input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A file.
    File(PathBuf),
    /// Standard input (not resumable).
    Stdin,
}

impl Input {
    /// `-` is standard input, anything else a path.
    pub fn parse(text: &str) -> Input {
        if text == "-" {
            Input::Stdin
        } else {
            Input::File(PathBuf::from(text))
        }
    }
}

/// Why reading failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Could not open or read a file.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A batch and where its input stands after it.
#[derive(Debug, Default)]
pub struct RawBatch {
    /// Records, in input order.
    pub records: Vec<RawRecord>,
    /// The input's position after the last record.
    pub positions: Vec<SourcePosition>,
}

/// Limits for reading.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Records per batch.
    pub batch_size: usize,
    /// Longest record accepted.
    pub max_line_bytes: usize,
    /// Bytes of an over-long record kept.
    pub max_dead_letter_bytes: usize,
}

/// The key a file's position is stored under.
pub fn file_key(path: &Path) -> String {
    format!("file:{}", path.display())
}

/// Digest of a file's first bytes (hex), to notice a file replaced under its name.
pub fn fingerprint(path: &Path) -> Result<String, std::io::Error> {
    let mut head = Vec::with_capacity(FINGERPRINT_BYTES);
    File::open(path)?
        .take(FINGERPRINT_BYTES as u64)
        .read_to_end(&mut head)?;
    Ok(format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&head)))
}

/// Reads one input from `start`, calling `emit` with each full batch and with the
/// final partial one. `emit` returns false to stop early (shutdown).
pub fn read_input(
    reader: impl BufRead,
    origin: &dyn Fn(u64, u64) -> Origin,
    start: SourcePosition,
    limits: ReadLimits,
    emit: &mut dyn FnMut(RawBatch) -> bool,
    progress: &dyn Fn(u64),
) -> Result<SourcePosition, std::io::Error> {
    let mut reader = reader;
    let mut position = start.clone();
    let mut batch = RawBatch::default();
    let mut line = Vec::new();
    loop {
        let line_start = position.position;
        let (consumed, original_len) = read_line(&mut reader, &mut line, limits)?;
        if consumed == 0 {
            break;
        }
        position.position += consumed as u64;
        position.line += 1;
        progress(consumed as u64);
        // A UTF-8 byte order mark on the first line is an encoding artefact.
        if line_start == 0 && line.starts_with(b"\xEF\xBB\xBF") {
            line.drain(..3);
        }
        if line.iter().all(u8::is_ascii_whitespace) && original_len.is_none() {
            continue;
        }
        batch.records.push(RawRecord {
            bytes: std::mem::take(&mut line),
            origin: origin(position.line, line_start),
            original_len,
        });
        if batch.records.len() >= limits.batch_size {
            batch.positions = vec![position.clone()];
            if !emit(std::mem::take(&mut batch)) {
                return Ok(position);
            }
        }
    }
    if !batch.records.is_empty() {
        batch.positions = vec![position.clone()];
        emit(batch);
    } else if position != start {
        // Only blank lines since the last batch: still move the position.
        emit(RawBatch {
            records: Vec::new(),
            positions: vec![position.clone()],
        });
    }
    Ok(position)
}

/// Reads one line (without `\n` or `\r\n`) into `line`. Returns the bytes consumed
/// from the input (0 at end) and, for a line longer than the limit, its full
/// length (then `line` holds only its first `max_dead_letter_bytes`).
fn read_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    limits: ReadLimits,
) -> Result<(usize, Option<u64>), std::io::Error> {
    line.clear();
    let mut consumed = 0usize;
    let mut total = 0u64;
    let mut ended = false;
    while !ended {
        let available = match reader.fill_buf() {
            Ok(buffer) => buffer,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            break;
        }
        let (chunk, used) = match memchr::memchr(b'\n', available) {
            Some(i) => {
                ended = true;
                (&available[..i], i + 1)
            }
            None => (available, available.len()),
        };
        total += chunk.len() as u64;
        let room = limits.max_dead_letter_bytes.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(used);
        consumed += used;
    }
    if line.last() == Some(&b'\r') && total as usize <= limits.max_line_bytes + 1 {
        line.pop();
        total -= 1;
    }
    let original_len = (total as usize > limits.max_line_bytes).then_some(total);
    if original_len.is_some() {
        line.truncate(limits.max_dead_letter_bytes);
    }
    Ok((consumed, original_len))
}

/// Opens a file at its stored position: resumes when the fingerprint matches and
/// the file is at least as long as the stored offset, else starts over (the file
/// was replaced; events already seen are deduplicated by id).
pub fn open_file(
    path: &Path,
    stored: Option<SourcePosition>,
) -> Result<(BufReader<File>, SourcePosition, u64), SourceError> {
    let io = |source| SourceError::Io {
        path: path.display().to_string(),
        source,
    };
    let fingerprint = fingerprint(path).map_err(io)?;
    let mut file = File::open(path).map_err(io)?;
    let length = file.metadata().map_err(io)?.len();
    let key = file_key(path);
    let start = match stored {
        Some(position)
            if position.fingerprint.as_deref() == Some(fingerprint.as_str())
                && position.position <= length =>
        {
            position
        }
        Some(_) => {
            tracing::warn!(input = %path.display(), "file changed since its stored position; reading it from the start");
            SourcePosition {
                source_key: key,
                position: 0,
                line: 0,
                fingerprint: Some(fingerprint),
            }
        }
        None => SourcePosition {
            source_key: key,
            position: 0,
            line: 0,
            fingerprint: Some(fingerprint),
        },
    };
    file.seek(SeekFrom::Start(start.position)).map_err(io)?;
    Ok((
        BufReader::with_capacity(1 << 20, file),
        start.clone(),
        length.saturating_sub(start.position),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ReadLimits = ReadLimits {
        batch_size: 2,
        max_line_bytes: 16,
        max_dead_letter_bytes: 8,
    };

    fn read_all(text: &[u8], start: u64) -> (Vec<RawBatch>, SourcePosition) {
        let mut batches = Vec::new();
        let position = read_input(
            &text[start as usize..],
            &|line, byte_offset| Origin::Stdin { line, byte_offset },
            SourcePosition {
                source_key: "stdin".into(),
                position: start,
                line: 0,
                fingerprint: None,
            },
            LIMITS,
            &mut |batch| {
                batches.push(batch);
                true
            },
            &|_| {},
        )
        .unwrap();
        (batches, position)
    }

    #[test]
    fn batches_lines_with_positions() {
        let (batches, end) = read_all(b"a\nbb\r\n\nccc\n", 0);
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].records[0].bytes, b"a");
        assert_eq!(batches[0].records[1].bytes, b"bb", "CRLF is stripped");
        assert_eq!(batches[0].positions[0].position, 6);
        assert_eq!(batches[1].records[0].bytes, b"ccc");
        assert_eq!(
            batches[1].records[0].origin,
            Origin::Stdin {
                line: 4,
                byte_offset: 7
            }
        );
        assert_eq!(end.position, 11);
        assert_eq!(end.line, 4);
    }

    #[test]
    fn a_last_line_without_newline_is_read() {
        let (batches, end) = read_all(b"a\nb", 0);
        assert_eq!(batches[0].records.len(), 2);
        assert_eq!(end.position, 3);
    }

    #[test]
    fn over_long_lines_are_cut_and_flagged() {
        let long = [b'x'; 40];
        let mut text = long.to_vec();
        text.extend_from_slice(b"\nok\n");
        let (batches, _) = read_all(&text, 0);
        let record = &batches[0].records[0];
        assert_eq!(record.original_len, Some(40));
        assert_eq!(record.bytes.len(), 8);
        assert_eq!(batches[0].records[1].bytes, b"ok");
        assert_eq!(batches[0].records[1].original_len, None);
    }

    #[test]
    fn strips_a_byte_order_mark() {
        let (batches, _) = read_all(b"\xEF\xBB\xBF{}\n", 0);
        assert_eq!(batches[0].records[0].bytes, b"{}");
    }

    #[test]
    fn resumes_from_an_offset() {
        let (batches, _) = read_all(b"a\nbb\nccc\n", 5);
        assert_eq!(batches[0].records[0].bytes, b"ccc");
    }
}
