//! NDJSON source: files (resumed from their stored byte offset) and standard input
//! -> batches of raw records with the position after each batch. A reading thread of
//! its own feeds a bounded channel; lines longer than the limit are cut to a bounded
//! prefix and flagged (they become dead letters), so one huge line cannot exhaust
//! memory; a last line without its line end is left for later while its file may
//! still be written. Fails only on I/O.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Acknowledge, Pulled, RawBatch, Source, SourceError, Start};
use crate::batch::{LaneMark, SourcePosition};
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

/// A file's first bytes (at most [`FINGERPRINT_BYTES`]).
pub fn head(path: &Path) -> Result<Vec<u8>, std::io::Error> {
    let mut head = Vec::with_capacity(FINGERPRINT_BYTES);
    super::open_for_reading(path)?
        .take(FINGERPRINT_BYTES as u64)
        .read_to_end(&mut head)?;
    Ok(head)
}

/// Digest (hex) of the bytes of a file's `head` that lie before `position`: what a
/// position stored at `position` was read from. A file appended to keeps the
/// fingerprint of its positions; a file replaced under its name does not.
pub fn fingerprint(head: &[u8], position: u64) -> String {
    let read = &head[..head.len().min(position as usize)];
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(read))
}

/// How [`read_input`] treats the end of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending<'a> {
    /// The input is complete (closed for good): a last line without its line end is
    /// read. Otherwise it is left unread, and the position stays before it.
    pub complete: bool,
    /// The input's key: its last batch says it no longer holds the watermark.
    pub lane: Option<&'a str>,
    /// The input's first bytes, when its positions carry a fingerprint
    /// ([`fingerprint`]).
    pub head: Option<&'a [u8]>,
}

/// Reads one input from `start`, calling `emit` with each full batch and with the
/// final partial one. `emit` returns false to stop early (shutdown).
pub fn read_input(
    reader: impl BufRead,
    origin: &dyn Fn(u64, u64) -> Origin,
    start: SourcePosition,
    limits: ReadLimits,
    ending: Ending<'_>,
    emit: &mut dyn FnMut(RawBatch) -> bool,
    progress: &dyn Fn(u64),
) -> Result<SourcePosition, std::io::Error> {
    let mut reader = reader;
    let mut position = start.clone();
    let mut batch = RawBatch::default();
    let mut line = Vec::new();
    loop {
        let line_start = position.position;
        let (consumed, original_len, terminated) = read_line(&mut reader, &mut line, limits)?;
        if consumed == 0 {
            break;
        }
        if !terminated && !ending.complete {
            // Perhaps half written: read again, whole, by a later run.
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
            if let Some(head) = ending.head {
                position.fingerprint = Some(fingerprint(head, position.position));
            }
            batch.positions = vec![position.clone()];
            if !emit(std::mem::take(&mut batch)) {
                return Ok(position);
            }
        }
    }
    // The last batch, also when only blank lines moved the position or the input's
    // end is news for its lane.
    if !batch.records.is_empty() || position != start || ending.lane.is_some() {
        if let Some(head) = ending.head {
            position.fingerprint = Some(fingerprint(head, position.position));
        }
        batch.positions = vec![position.clone()];
        batch.lanes = ending
            .lane
            .map(|lane| LaneMark {
                lane: lane.to_string(),
                holding: false,
            })
            .into_iter()
            .collect();
        emit(batch);
    }
    Ok(position)
}

/// Reads one line (without `\n` or `\r\n`) into `line`. Returns the bytes consumed
/// from the input (0 at end), for a line longer than the limit its full length
/// (then `line` holds only its first `max_dead_letter_bytes`), and whether the line
/// ended with its line end (else the input ended within it).
fn read_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    limits: ReadLimits,
) -> Result<(usize, Option<u64>, bool), std::io::Error> {
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
        // Enough of the line to hold any accepted line (and its `\r`), or a dead
        // letter's share of a longer one.
        let keep = limits.max_line_bytes.max(limits.max_dead_letter_bytes) + 1;
        let room = keep.saturating_sub(line.len());
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
    Ok((consumed, original_len, ended))
}

/// A file opened at its start: the reader, the position it starts from, the bytes
/// left to read, and its first bytes (for the fingerprints of its positions).
pub struct OpenedFile {
    /// Positioned at `start`.
    pub reader: BufReader<File>,
    /// Where reading starts.
    pub start: SourcePosition,
    /// Bytes after `start`.
    pub remaining: u64,
    /// The file's first bytes.
    pub head: Vec<u8>,
}

/// Opens a file at its stored position: resumes when the bytes before it are the
/// ones it was read from (the fingerprint matches; appended files resume) and the
/// file is at least as long, else starts over (the file was replaced; events already
/// seen are deduplicated by id).
pub fn open_file(path: &Path, stored: Option<SourcePosition>) -> Result<OpenedFile, SourceError> {
    let io = |source| SourceError::Io {
        path: path.display().to_string(),
        source,
    };
    let head = head(path).map_err(io)?;
    let mut file = File::open(path).map_err(io)?;
    let length = file.metadata().map_err(io)?.len();
    let key = file_key(path);
    let start = match stored {
        Some(position)
            if position.position <= length
                && position.fingerprint.as_deref()
                    == Some(fingerprint(&head, position.position).as_str()) =>
        {
            position
        }
        Some(_) => {
            tracing::warn!(input = %path.display(), "file changed since its stored position; reading it from the start");
            SourcePosition {
                source_key: key,
                fingerprint: Some(fingerprint(&head, 0)),
                ..SourcePosition::default()
            }
        }
        None => SourcePosition {
            source_key: key,
            fingerprint: Some(fingerprint(&head, 0)),
            ..SourcePosition::default()
        },
    };
    file.seek(SeekFrom::Start(start.position)).map_err(io)?;
    Ok(OpenedFile {
        reader: BufReader::with_capacity(1 << 20, file),
        remaining: length.saturating_sub(start.position),
        start,
        head,
    })
}

/// Whether a file has not changed for `settle`: a last line without its line end is
/// then complete, not a line still being written.
pub fn settled(path: &Path, settle: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .ok()
        .and_then(|modified| modified.elapsed().ok())
        .is_some_and(|age| age >= settle)
}

/// One input of an NDJSON run, opened at its start.
enum Opened {
    File {
        path: PathBuf,
        key: String,
        file: Box<OpenedFile>,
        complete: bool,
    },
    Stdin,
}

/// NDJSON files and standard input, read in the order given on a thread of their own
/// into a bounded channel. Each file is an input (lane) of its own: it holds the
/// regional watermark until it has been read to its end, so events of a file read
/// later are not late for the days an earlier file reached.
pub struct NdjsonSource {
    inputs: Vec<Input>,
    keys: Vec<String>,
    limits: ReadLimits,
    settle: Duration,
    capacity: usize,
    bar: Option<indicatif::ProgressBar>,
    cancel: CancellationToken,
    batches: Option<mpsc::Receiver<RawBatch>>,
    reader: Option<tokio::task::JoinHandle<Result<(), SourceError>>>,
}

impl NdjsonSource {
    /// The inputs, their paths made absolute (so a file's stored position is found
    /// from any working directory). Fails when a file does not exist.
    pub fn open(
        inputs: Vec<Input>,
        settings: &crate::config::InputSettings,
        progress: bool,
    ) -> Result<NdjsonSource, SourceError> {
        let mut canonical = Vec::with_capacity(inputs.len());
        let mut keys = Vec::with_capacity(inputs.len());
        for input in inputs {
            match input {
                Input::File(path) => {
                    let path = std::fs::canonicalize(&path).map_err(|source| SourceError::Io {
                        path: path.display().to_string(),
                        source,
                    })?;
                    keys.push(file_key(&path));
                    canonical.push(Input::File(path));
                }
                Input::Stdin => {
                    keys.push("stdin".to_string());
                    canonical.push(Input::Stdin);
                }
            }
        }
        Ok(NdjsonSource {
            inputs: canonical,
            keys,
            limits: ReadLimits {
                batch_size: settings.batch_size,
                max_line_bytes: settings.max_line_bytes,
                max_dead_letter_bytes: settings.max_dead_letter_bytes,
            },
            settle: Duration::from_secs(settings.settle_seconds),
            capacity: settings.channel_capacity,
            bar: progress.then(|| crate::pipeline::progress_bar(0)),
            cancel: CancellationToken::new(),
            batches: None,
            reader: None,
        })
    }
}

/// NDJSON inputs are read by this process alone: nothing to acknowledge.
struct Unacknowledged;

impl Acknowledge for Unacknowledged {
    fn committed(&self, _seq: u64, _positions: &[SourcePosition]) {}
    fn discarded(&self, _seq: u64) {}
}

impl Source for NdjsonSource {
    fn inputs(&self) -> Vec<String> {
        self.keys.clone()
    }

    fn claims_inputs(&self) -> bool {
        false
    }

    fn establish(&mut self, starts: Vec<Start>) -> Result<(), SourceError> {
        let mut opened = Vec::with_capacity(self.inputs.len());
        let mut total_bytes = 0;
        for (input, key) in self.inputs.iter().zip(&self.keys) {
            match input {
                Input::File(path) => {
                    let stored = starts
                        .iter()
                        .find(|start| &start.source_key == key)
                        .and_then(|start| start.position.clone());
                    let file = Box::new(open_file(path, stored)?);
                    total_bytes += file.remaining;
                    opened.push(Opened::File {
                        path: path.clone(),
                        key: key.clone(),
                        file,
                        complete: settled(path, self.settle),
                    });
                }
                Input::Stdin => opened.push(Opened::Stdin),
            }
        }
        if let Some(bar) = &self.bar {
            bar.set_length(total_bytes);
        }
        let (sender, receiver) = mpsc::channel(self.capacity.max(1));
        let limits = self.limits;
        let cancel = self.cancel.clone();
        let bar = self.bar.clone();
        self.batches = Some(receiver);
        self.reader = Some(tokio::task::spawn_blocking(move || {
            read_all(opened, limits, &sender, &cancel, bar.as_ref())
        }));
        Ok(())
    }

    async fn next(&mut self, cancel: &CancellationToken) -> Result<Pulled, SourceError> {
        let Some(batches) = self.batches.as_mut() else {
            return Ok(Pulled::Ended);
        };
        let received = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                // The reader stops at its next batch; what it already read is dropped
                // (it is read again from the stored positions).
                self.cancel.cancel();
                None
            }
            batch = batches.recv() => batch,
        };
        match received {
            Some(batch) => Ok(Pulled::Batch(batch)),
            None => {
                self.batches = None;
                if let Some(bar) = &self.bar {
                    bar.finish_and_clear();
                }
                if let Some(reader) = self.reader.take() {
                    reader
                        .await
                        .map_err(|error| SourceError::Thread(error.to_string()))??;
                }
                Ok(Pulled::Ended)
            }
        }
    }

    fn handed(&self, _seq: u64) {}

    fn acknowledger(&self) -> Arc<dyn Acknowledge> {
        Arc::new(Unacknowledged)
    }

    fn rejoin(&mut self) -> Result<(), SourceError> {
        Ok(())
    }

    fn close(self) {
        self.cancel.cancel();
    }
}

/// The reading thread: every input in turn, each to its end.
fn read_all(
    opened: Vec<Opened>,
    limits: ReadLimits,
    sender: &mpsc::Sender<RawBatch>,
    cancel: &CancellationToken,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<(), SourceError> {
    let progress = |bytes: u64| {
        if let Some(bar) = bar {
            bar.inc(bytes);
        }
    };
    for input in opened {
        if cancel.is_cancelled() {
            break;
        }
        match input {
            Opened::File {
                path,
                key,
                file,
                complete,
            } => {
                let OpenedFile {
                    reader,
                    start,
                    head,
                    ..
                } = *file;
                let name = path.display().to_string();
                let shared: Arc<str> = Arc::from(name.as_str());
                let origin = |line, byte_offset| Origin::File {
                    path: shared.clone(),
                    line,
                    byte_offset,
                };
                let span = tracing::info_span!("read", input = %name, from_offset = start.position);
                let _entered = span.enter();
                let mut emit =
                    |batch: RawBatch| !cancel.is_cancelled() && sender.blocking_send(batch).is_ok();
                let ending = Ending {
                    complete,
                    lane: Some(&key),
                    head: Some(&head),
                };
                read_input(reader, &origin, start, limits, ending, &mut emit, &progress)
                    .map_err(|source| SourceError::Io { path: name, source })?;
            }
            Opened::Stdin => {
                let stdin = std::io::stdin();
                let origin = |line, byte_offset| Origin::Stdin { line, byte_offset };
                let start = SourcePosition {
                    source_key: "stdin".into(),
                    ..SourcePosition::default()
                };
                // Standard input cannot be resumed from a position: none is stored.
                let mut emit = |mut batch: RawBatch| {
                    batch.positions.clear();
                    !cancel.is_cancelled() && sender.blocking_send(batch).is_ok()
                };
                let ending = Ending {
                    complete: true,
                    lane: Some("stdin"),
                    head: None,
                };
                read_input(
                    stdin.lock(),
                    &origin,
                    start,
                    limits,
                    ending,
                    &mut emit,
                    &progress,
                )
                .map_err(|source| SourceError::Io {
                    path: "stdin".into(),
                    source,
                })?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ReadLimits = ReadLimits {
        batch_size: 2,
        max_line_bytes: 16,
        max_dead_letter_bytes: 8,
    };

    fn read_with(text: &[u8], start: u64, ending: Ending<'_>) -> (Vec<RawBatch>, SourcePosition) {
        let mut batches = Vec::new();
        let position = read_input(
            &text[start as usize..],
            &|line, byte_offset| Origin::Stdin { line, byte_offset },
            SourcePosition {
                source_key: "stdin".into(),
                position: start,
                ..SourcePosition::default()
            },
            LIMITS,
            ending,
            &mut |batch| {
                batches.push(batch);
                true
            },
            &|_| {},
        )
        .unwrap();
        (batches, position)
    }

    fn read_all(text: &[u8], start: u64) -> (Vec<RawBatch>, SourcePosition) {
        read_with(
            text,
            start,
            Ending {
                complete: true,
                lane: None,
                head: None,
            },
        )
    }

    #[test]
    fn a_last_line_without_its_end_waits_while_the_input_may_grow() {
        let growing = Ending {
            complete: false,
            lane: Some("file:/feeds/x.ndjson"),
            head: None,
        };
        let (batches, end) = read_with(b"a\nbb\n{\"half", 0, growing);
        let records: Vec<&[u8]> = batches
            .iter()
            .flat_map(|b| b.records.iter().map(|r| r.bytes.as_slice()))
            .collect();
        assert_eq!(records, [b"a".as_slice(), b"bb"]);
        assert_eq!(
            end.position, 5,
            "the position stays before the partial line"
        );
        assert_eq!(end.line, 2);
        let last = batches.last().unwrap();
        assert_eq!(last.positions[0].position, 5);
        assert_eq!(
            last.lanes,
            [LaneMark {
                lane: "file:/feeds/x.ndjson".into(),
                holding: false
            }]
        );
        // Once complete, the next run reads the line, whole, from there.
        let (batches, end) = read_with(b"a\nbb\n{\"half\": 1}\n", 5, growing);
        assert_eq!(batches[0].records[0].bytes, b"{\"half\": 1}");
        assert_eq!(end.position, 17);
    }

    #[test]
    fn positions_fingerprint_what_they_were_read_from() {
        let written = b"{\"a\":1}\n{\"b\":2}\n";
        let appended = b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n";
        let replaced = b"{\"x\":1}\n{\"b\":2}\n{\"c\":3}\n";
        let stored = fingerprint(written, written.len() as u64);
        assert_eq!(fingerprint(appended, written.len() as u64), stored);
        assert_ne!(fingerprint(replaced, written.len() as u64), stored);
        let long = vec![b'x'; 2 * FINGERPRINT_BYTES];
        assert_eq!(
            fingerprint(&long[..FINGERPRINT_BYTES], long.len() as u64),
            fingerprint(&long[..FINGERPRINT_BYTES], FINGERPRINT_BYTES as u64),
            "beyond the head, the head alone"
        );
    }

    #[test]
    fn an_input_at_its_end_still_says_so() {
        let ending = Ending {
            complete: true,
            lane: Some("stdin"),
            head: None,
        };
        let (batches, _) = read_with(b"a\n", 2, ending);
        assert_eq!(batches.len(), 1);
        assert!(batches[0].records.is_empty());
        assert!(!batches[0].lanes[0].holding);
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
