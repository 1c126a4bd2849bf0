//! Dead letters (死信): records that failed reading, decoding or validation, kept
//! with their bytes, the reason (stage, rule, field) and their origin, so nothing is
//! lost and a data steward can fix and replay them. Resident ID numbers inside the
//! bytes are masked in place (same length) before anything is stored.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::wire_enum;
use super::ids::{mask_id_bytes, stable_id};
use super::record::{Origin, RawRecord};

wire_enum! {
    /// The stage that refused a record.
    Stage {
        /// Reading: the record was longer than the line limit.
        Read = "read",
        /// Decoding: not UTF-8, not JSON.
        Decode = "decode",
        /// The JSON Schema of the envelope or the kind.
        Schema = "schema",
        /// Checks no schema can make (check digit, sums, clocks).
        Semantic = "semantic",
    }
}

/// Why a record was refused: which stage, which rule, which field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stage.
    pub stage: Stage,
    /// Dotted rule code, e.g. `id.check_digit`, `schema.required`.
    pub rule: String,
    /// JSON pointer of the offending field, when there is one.
    pub field: Option<String>,
    /// Human-readable reason.
    pub reason: String,
}

impl Rejection {
    /// A rejection without a field.
    pub fn new(stage: Stage, rule: impl Into<String>, reason: impl Into<String>) -> Self {
        Rejection {
            stage,
            rule: rule.into(),
            field: None,
            reason: reason.into(),
        }
    }

    /// The same rejection, naming the field.
    pub fn at(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

/// What could be read of a record's envelope before it failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Salvage {
    /// `event_id`, if readable.
    pub event_id: Option<String>,
    /// `source`, if readable.
    pub source: Option<String>,
    /// `kind`, if readable.
    pub kind: Option<String>,
}

/// A dead letter, as stored and exported.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Deterministic id: hash of the origin and the bytes.
    pub dead_letter_id: String,
    /// Where the record came from.
    pub origin: Origin,
    /// Why it was refused.
    pub rejection: Rejection,
    /// The record's bytes (resident IDs masked in place), at most the cap.
    pub raw: Vec<u8>,
    /// Whether `raw` is shorter than the original record.
    pub raw_truncated: bool,
    /// The original record's length.
    pub raw_bytes: u64,
    /// What could be read of the envelope.
    pub salvage: Salvage,
    /// Processing time.
    pub received_at: DateTime<Utc>,
}

impl DeadLetter {
    /// Builds the dead letter for `record`, masking resident IDs in its bytes.
    pub fn new(
        record: &RawRecord,
        rejection: Rejection,
        salvage: Salvage,
        received_at: DateTime<Utc>,
    ) -> Self {
        let mut raw = record.bytes.clone();
        mask_resident_ids(&mut raw);
        // Validator and parser messages may quote the offending value; salvaged
        // fields are the sender's text: masked, and made storable (a NUL would stop
        // PostgreSQL, whose text cannot hold one).
        let mut rejection = rejection;
        rejection.reason = storable(&mask_text(&rejection.reason));
        rejection.field = rejection.field.map(|field| storable(&mask_text(&field)));
        let clean = |text: Option<String>| text.map(|text| storable(&mask_text(&text)));
        let salvage = Salvage {
            event_id: clean(salvage.event_id),
            source: clean(salvage.source),
            kind: clean(salvage.kind),
        };
        // The id digests the masked bytes: nothing derived from a clear resident ID
        // is published (the hidden digits are a birth date and a sequence number,
        // few enough to try them all against a digest of the clear bytes).
        let content = xxhash_rust::xxh3::xxh3_128(&raw).to_le_bytes();
        let dead_letter_id = stable_id(
            "dead_letter",
            &[record.origin.locator().as_bytes(), &content],
        );
        DeadLetter {
            dead_letter_id,
            origin: record.origin.clone(),
            rejection,
            raw_truncated: record
                .original_len
                .is_some_and(|full| full > record.bytes.len() as u64),
            raw_bytes: record.original_len.unwrap_or(record.bytes.len() as u64),
            raw,
            salvage,
            received_at,
        }
    }
}

/// `text` as every store can hold it: NUL, which PostgreSQL's text type refuses,
/// becomes U+FFFD. For text taken from input (the original bytes are kept as bytes).
pub fn storable(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// `text` with resident IDs masked (ASCII for ASCII, so still UTF-8).
pub fn mask_text(text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    mask_resident_ids(&mut bytes);
    String::from_utf8(bytes).unwrap_or_else(|_| text.to_string())
}

impl DeadLetter {
    /// The exported document (`schemas/outputs/dead_letter.json`): what
    /// `yujing export dead-letters` prints.
    pub fn to_document(&self) -> serde_json::Value {
        self.to_document_within(usize::MAX)
    }

    /// The document with at most `max_raw` of the record's bytes (then
    /// `raw_truncated`; `raw_bytes` keeps the original length): what
    /// `yujing.dead-letters` carries, so that a dead letter of a huge message stays
    /// below the producer's size limit. The store keeps the bytes it was given.
    pub fn to_document_within(&self, max_raw: usize) -> serde_json::Value {
        use base64::Engine;
        let raw = &self.raw[..self.raw.len().min(max_raw)];
        let raw_utf8 = match std::str::from_utf8(raw) {
            Ok(text) => Some(text),
            // Cut inside a character: the whole characters before it.
            Err(error) if error.error_len().is_none() && raw.len() < self.raw.len() => {
                std::str::from_utf8(&raw[..error.valid_up_to()]).ok()
            }
            Err(_) => None,
        };
        serde_json::json!({
            "dead_letter_id": self.dead_letter_id,
            "origin": self.origin,
            "stage": self.rejection.stage.as_str(),
            "rule": self.rejection.rule,
            "field": self.rejection.field,
            "reason": self.rejection.reason,
            "raw_base64": base64::engine::general_purpose::STANDARD.encode(raw),
            "raw_utf8": raw_utf8,
            "raw_truncated": self.raw_truncated || raw.len() < self.raw.len(),
            "raw_bytes": self.raw_bytes,
            "event_id": self.salvage.event_id,
            "source": self.salvage.source,
            "kind": self.salvage.kind,
            "received_at": self
                .received_at
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        })
    }
}

/// Masks, in place, every run of 17 ASCII digits followed by a digit or `X`/`x`
/// that is not part of a longer run of digits: the shape of a resident ID, valid
/// or not. Digits 7–14 become `*`, so lengths and offsets are unchanged.
pub fn mask_resident_ids(bytes: &mut [u8]) {
    let mut i = 0;
    while i + 18 <= bytes.len() {
        let starts_run = i == 0 || !bytes[i - 1].is_ascii_digit();
        if starts_run
            && bytes[i..i + 17].iter().all(u8::is_ascii_digit)
            && matches!(bytes[i + 17], b'0'..=b'9' | b'X' | b'x')
            && bytes.get(i + 18).is_none_or(|b| !b.is_ascii_digit())
        {
            let mut id = [0u8; 18];
            id.copy_from_slice(&bytes[i..i + 18]);
            bytes[i..i + 18].copy_from_slice(mask_id_bytes(&id).as_bytes());
            i += 18;
        } else {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_ids_in_place_and_keeps_other_numbers() {
        let mut text = br#"{"person_id":"11010519491231002X","n":12345678901234567890,"x":"110105194912310021"}"#.to_vec();
        let len = text.len();
        mask_resident_ids(&mut text);
        let text = String::from_utf8(text).unwrap();
        assert_eq!(text.len(), len);
        assert!(text.contains("110105********002X"));
        assert!(
            text.contains("110105********0021"),
            "invalid IDs are masked too"
        );
        assert!(
            text.contains("12345678901234567890"),
            "a 20-digit number is not an ID"
        );
    }

    #[test]
    fn masks_ids_in_non_utf8_bytes() {
        let mut bytes = b"\xff\xfe11010519491231002X\xff".to_vec();
        mask_resident_ids(&mut bytes);
        assert_eq!(&bytes[2..20], b"110105********002X");
        assert_eq!(bytes[0], 0xff);
    }

    #[test]
    fn ids_depend_on_origin_and_bytes() {
        let record = |line, bytes: &[u8]| RawRecord {
            bytes: bytes.to_vec(),
            origin: Origin::File {
                path: "/x".into(),
                line,
                byte_offset: 0,
            },
            original_len: None,
        };
        let now = chrono::Utc::now();
        let rejection = Rejection::new(Stage::Decode, "json.syntax", "bad");
        let a = DeadLetter::new(&record(1, b"{"), rejection.clone(), Salvage::default(), now);
        let b = DeadLetter::new(&record(1, b"{"), rejection.clone(), Salvage::default(), now);
        let c = DeadLetter::new(&record(2, b"{"), rejection.clone(), Salvage::default(), now);
        let d = DeadLetter::new(&record(1, b"["), rejection, Salvage::default(), now);
        assert_eq!(a.dead_letter_id, b.dead_letter_id);
        assert_ne!(a.dead_letter_id, c.dead_letter_id);
        assert_ne!(a.dead_letter_id, d.dead_letter_id);
    }
}
