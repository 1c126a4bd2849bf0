//! A one-pass reader for the usual shape of an event envelope: one JSON object with
//! the envelope's keys, each at most once, string values without escapes, an
//! optional `schema_version` written as plain digits, and an object as payload. It
//! borrows every value and skips serde's per-field machinery. Anything else —
//! escapes, unknown or repeated keys, `null`, other numbers, broken JSON — it
//! leaves to serde (`None`), so what it reads is exactly what serde would read and
//! everything else is decided by serde as before.
//!
//! When `kind` comes before `payload` (as in records written with sorted keys) the
//! payload is read as its kind's typed payload right where it is, in the same
//! pass. Otherwise it is only delimited here and the typed parse that follows
//! reads and checks all of it, so a payload that is not JSON fails there and the
//! record takes the slow path, as it did when serde refused the whole envelope.

use std::borrow::Cow;

use super::{Fast, InPlace, PayloadText, WireEnvelope, payload};
use crate::domain::event::{Kind, Payload};

/// An envelope read in one pass.
pub(super) struct Scanned<'a> {
    /// The envelope.
    pub(super) wire: WireEnvelope<'a>,
    /// The typed payload, when it was read in place (what reading
    /// `wire.payload` as its kind gives).
    pub(super) payload: Option<Fast<Payload>>,
}

/// Reads `text` when it has the usual shape; `None` when serde must decide.
pub(super) fn scan(text: &str) -> Option<Scanned<'_>> {
    let mut cursor = Cursor::new(text);
    let mut fields = Fields::default();
    cursor.blank();
    cursor.take(b'{')?;
    cursor.blank();
    if cursor.peek()? != b'}' {
        loop {
            let key = cursor.string()?;
            cursor.blank();
            cursor.take(b':')?;
            cursor.blank();
            fields.read(key, &mut cursor)?;
            cursor.blank();
            match cursor.next()? {
                b',' => cursor.blank(),
                b'}' => break,
                _ => return None,
            }
        }
    } else {
        cursor.at += 1;
    }
    cursor.blank();
    if cursor.at != cursor.bytes.len() {
        return None;
    }
    fields.envelope()
}

/// The values read so far.
#[derive(Default)]
struct Fields<'a> {
    event_id: Option<&'a str>,
    source: Option<&'a str>,
    kind: Option<&'a str>,
    occurred_at: Option<&'a str>,
    reported_at: Option<&'a str>,
    person_id: Option<&'a str>,
    household_id: Option<&'a str>,
    region_code: Option<&'a str>,
    payload: Option<&'a str>,
    typed: Option<Fast<Payload>>,
    schema_version: Option<u64>,
}

impl<'a> Fields<'a> {
    /// Reads the value of `key`; `None` for an unknown or repeated key or a value
    /// of another shape.
    fn read(&mut self, key: &str, cursor: &mut Cursor<'a>) -> Option<()> {
        let slot = match key {
            "event_id" => &mut self.event_id,
            "source" => &mut self.source,
            "kind" => &mut self.kind,
            "occurred_at" => &mut self.occurred_at,
            "reported_at" => &mut self.reported_at,
            "person_id" => &mut self.person_id,
            "household_id" => &mut self.household_id,
            "region_code" => &mut self.region_code,
            "payload" => {
                if self.payload.is_some() {
                    return None;
                }
                let kind = self.kind.and_then(Kind::parse);
                return match kind {
                    Some(kind) if cursor.peek() == Some(b'{') => {
                        let start = cursor.at;
                        let mut input = InPlace {
                            text: &cursor.text[start..],
                            read: None,
                        };
                        let typed = payload(kind, &mut input);
                        // A payload its kind cannot read: serde decides.
                        cursor.at = start + input.read?;
                        self.typed = Some(typed);
                        once(&mut self.payload, cursor.text.get(start..cursor.at)?)
                    }
                    _ => once(&mut self.payload, cursor.object()?),
                };
            }
            "schema_version" => {
                return once(&mut self.schema_version, cursor.digits()?);
            }
            _ => return None,
        };
        once(slot, cursor.string()?)
    }

    fn envelope(self) -> Option<Scanned<'a>> {
        let wire = WireEnvelope {
            event_id: Cow::Borrowed(self.event_id?),
            source: Cow::Borrowed(self.source?),
            kind: Cow::Borrowed(self.kind?),
            occurred_at: Cow::Borrowed(self.occurred_at?),
            reported_at: Cow::Borrowed(self.reported_at?),
            person_id: self.person_id.map(Cow::Borrowed),
            household_id: self.household_id.map(Cow::Borrowed),
            region_code: self.region_code.map(Cow::Borrowed),
            payload: PayloadText(self.payload?),
            schema_version: self.schema_version,
        };
        Some(Scanned {
            wire,
            payload: self.typed,
        })
    }
}

/// Fills an empty slot; `None` if it was filled before (serde refuses a repeated
/// field).
pub(super) fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

/// The position of the first quote, backslash or control character in `bytes`,
/// eight bytes at a time.
fn special(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // A byte of `word` is zero: its high bit is set in the result (and no lower
    // byte is marked falsely; a higher one may be, hence the first bit decides).
    let zero = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(chunk);
        let word = u64::from_le_bytes(eight);
        let found = zero(word ^ (ONES * u64::from(b'"')))
            | zero(word ^ (ONES * u64::from(b'\\')))
            // Below 0x20: subtracting 0x20 borrows into the high bit of a byte that
            // had it clear.
            | (word.wrapping_sub(ONES * 0x20) & !word & HIGHS);
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|at| offset + at)
}

/// A position in a record's text, for the one-pass readers.
pub(super) struct Cursor<'a> {
    pub(super) text: &'a str,
    pub(super) bytes: &'a [u8],
    pub(super) at: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Cursor {
            text,
            bytes: text.as_bytes(),
            at: 0,
        }
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    pub(super) fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    pub(super) fn take(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    /// Skips JSON whitespace.
    pub(super) fn blank(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// A string without escapes or control characters, borrowed.
    pub(super) fn string(&mut self) -> Option<&'a str> {
        self.take(b'"')?;
        let start = self.at;
        let length = special(&self.bytes[start..])?;
        if self.bytes[start + length] != b'"' {
            return None;
        }
        self.at = start + length + 1;
        // Both ends are ASCII quotes, so both are character boundaries.
        self.text.get(start..start + length)
    }

    /// A non-negative integer in plain digits (no sign, fraction, exponent or
    /// leading zero) that fits in 64 bits.
    fn digits(&mut self) -> Option<u64> {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        let digits = &self.text[start..self.at];
        if digits.is_empty() || digits.len() > 19 || (digits.len() > 1 && digits.starts_with('0')) {
            return None;
        }
        digits.parse().ok()
    }

    /// An object's text, delimited by matching brackets outside strings; its
    /// content is checked by whoever parses it.
    fn object(&mut self) -> Option<&'a str> {
        let start = self.at;
        if self.peek()? != b'{' {
            return None;
        }
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        for (offset, &byte) in self.bytes[start..].iter().enumerate() {
            if in_string {
                if escaped {
                    escaped = false;
                } else if byte == b'\\' {
                    escaped = true;
                } else if byte == b'"' {
                    in_string = false;
                }
                continue;
            }
            match byte {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        self.at = start + offset + 1;
                        return self.text.get(start..self.at);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::WireEnvelope;
    use super::scan;

    /// Envelopes of the usual shape, as departments send them.
    const USUAL: &[&str] = &[
        r#"{"event_id":"YB-20240301120502-003113","kind":"medical_settlement","occurred_at":"2024-03-01T09:41:02+08:00","payload":{"diagnosis_group":"injury","out_of_pocket_yuan":334.56,"reimbursed_yuan":368.34,"serious_illness":false,"total_cost_yuan":702.9},"person_id":"52242519671031737X","reported_at":"2024-03-01T12:05:02+08:00","source":"medical_insurance"}"#,
        r#"{"event_id":"NY-1","kind":"industry_project_failure","occurred_at":"2024-03-15T14:04:53+08:00","payload":{"household_ids":["522425101201-000061","522425101201-000065"],"loss_yuan":420000,"project_id":"P-1","project_name":"精品水果种植基地 [一期] {\"A\"}"},"region_code":"522425101201","reported_at":"2024-03-16T15:18:53+08:00","source":"agriculture","schema_version":1}"#,
        " {\n\t\"source\" : \"water\", \"kind\":\"water_outage\",\"event_id\":\"SL-2\",\"occurred_at\":\"2024-03-18T12:41:08Z\",\"reported_at\":\"2024-03-21T06:11:08Z\",\"region_code\":\"522425101207\",\"payload\":{ \"expected_days\" : 3 , \"households_affected\":163 }\r\n}\n",
        r#"{"household_id":"522425101203-000678","event_id":"ZJ-3","kind":"housing_safety","occurred_at":"2024-03-03T10:10:07+08:00","payload":{"rating":"A"},"reported_at":"2024-03-03T17:33:07+08:00","source":"housing","schema_version":1}"#,
    ];

    fn serde(text: &str) -> Option<WireEnvelope<'_>> {
        serde_json::from_str(text).ok()
    }

    #[test]
    fn reads_the_usual_shape_as_serde_does() {
        let decoder = super::super::Decoder::new(&crate::config::Settings::defaults().validation);
        for text in USUAL {
            let scanned = scan(text)
                .unwrap_or_else(|| panic!("not read: {text}"))
                .wire;
            assert_eq!(Some(scanned), serde(text), "{text}");
            let decoded = decoder.decode(text.as_bytes(), chrono::Utc::now());
            assert!(decoded.is_ok(), "{text}: {decoded:?}");
        }
    }

    #[test]
    fn leaves_other_shapes_to_serde() {
        let base = USUAL[0];
        let others = [
            // An escape in a value or a key (serde reads it; this reader does not).
            base.replace("medical_insurance", "medical\\u005finsurance"),
            base.replace("\"source\"", "\"sourc\\u0065\""),
            // Repeated, unknown and null fields, other numbers.
            base.replace("\"kind\"", "\"source\":\"health\",\"kind\""),
            base.replace("\"kind\"", "\"extra\":1,\"kind\""),
            base.replace("\"person_id\":\"52242519671031737X\"", "\"person_id\":null"),
            base.replace('}', ",\"schema_version\":1.0}"),
            base.replace("}\n", "}"),
            format!("{},\"schema_version\":01}}", &base[..base.len() - 1]),
            format!("{},\"schema_version\":-1}}", &base[..base.len() - 1]),
            format!(
                "{},\"schema_version\":18446744073709551616}}",
                &base[..base.len() - 1]
            ),
            // A payload that is not an object, broken JSON, trailing text, a control
            // character in a string, a missing field.
            base.replace("\"payload\":{", "\"payload\":[{")
                .replace("702.9}", "702.9}]"),
            base[..base.len() - 1].to_string(),
            format!("{base} x"),
            format!("{base}{{}}"),
            base.replace("medical_insurance", "medical\tinsurance"),
            base.replace("\"event_id\":\"YB-20240301120502-003113\",", ""),
            String::from("{}"),
            String::new(),
        ];
        for text in &others {
            if let Some(scanned) = scan(text) {
                assert_eq!(Some(scanned.wire), serde(text), "{text}");
            }
        }
        assert!(
            others[..2]
                .iter()
                .all(|t| scan(t).is_none() && serde(t).is_some())
        );
    }

    /// Text made of the envelope's own pieces: usual records with bytes dropped,
    /// doubled or replaced by characters that matter to JSON.
    fn mutated() -> impl Strategy<Value = String> {
        let pieces = prop::sample::select(vec![
            "\"",
            "\\",
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\n",
            "\t",
            "0",
            "1",
            "-",
            ".",
            "e",
            "null",
            "\\\"",
            "\"payload\":",
            "\"kind\":",
            "\"schema_version\":",
            "\u{1}",
            "é",
        ]);
        (
            prop::sample::select(USUAL.to_vec()),
            prop::collection::vec((any::<prop::sample::Index>(), 0usize..3, pieces), 1..4),
        )
            .prop_map(|(base, edits)| {
                let mut text = base.to_string();
                for (at, how, piece) in edits {
                    let mut i = at.index(text.len() + 1);
                    while !text.is_char_boundary(i) {
                        i -= 1;
                    }
                    match how {
                        0 => text.insert_str(i, piece),
                        1 => {
                            let end = (i + 1..=text.len())
                                .find(|&e| text.is_char_boundary(e))
                                .unwrap_or(i);
                            text.replace_range(i..end, piece);
                        }
                        _ => text.truncate(i),
                    }
                }
                text
            })
    }

    #[test]
    fn the_decoder_decides_these_as_with_serde_alone() {
        let decoder = super::super::Decoder::new(&crate::config::Settings::defaults().validation);
        let now = chrono::Utc::now();
        let illness = |payload: &str, order: bool| {
            let (kind, payload) = (
                r#""kind":"serious_illness""#,
                format!(r#""payload":{payload}"#),
            );
            let (first, second) = if order {
                (kind.to_string(), payload)
            } else {
                (payload, kind.to_string())
            };
            format!(
                r#"{{"event_id":"WJ-1",{first},"occurred_at":"2024-03-14T10:53:30+08:00",{second},"person_id":"52242519671031737X","reported_at":"2024-03-14T19:53:30+08:00","source":"health"}}"#
            )
        };
        let mut texts: Vec<String> = USUAL.iter().map(|t| t.to_string()).collect();
        for payload in [
            r#"{"diagnosed_on":"2024-03-14","disease_group":"leukaemia"}"#,
            // Not a real date (semantic), not a date's shape, a wrong type, an
            // unknown field, not an object.
            r#"{"diagnosed_on":"2024-02-30","disease_group":"leukaemia"}"#,
            r#"{"diagnosed_on":"14/03/2024","disease_group":"leukaemia"}"#,
            r#"{"diagnosed_on":"2024-03-14","disease_group":7}"#,
            r#"{"diagnosed_on":"2024-03-14","disease_group":"x","extra":[1,{"a":"}"}]}"#,
            r#"["2024-03-14","leukaemia"]"#,
        ] {
            texts.push(illness(payload, true));
            texts.push(illness(payload, false));
        }
        let mut read_in_place = 0;
        for text in &texts {
            if scan(text).is_some_and(|s| s.payload.is_some()) {
                read_in_place += 1;
            }
            let with = decoder.decode_with(text.as_bytes(), now, scan);
            let without = decoder.decode_with(text.as_bytes(), now, |_| None);
            assert_eq!(with, without, "{text}");
        }
        assert!(read_in_place >= 6, "{read_in_place}");
        assert!(
            decoder
                .decode(
                    illness(r#"{"diagnosed_on":"2024-02-30","disease_group":"x"}"#, true)
                        .as_bytes(),
                    now
                )
                .is_err_and(|refusal| refusal.rejection.rule == "time.invalid")
        );
    }

    proptest! {
        /// The eight-at-a-time search finds what a byte-by-byte one finds.
        #[test]
        fn special_finds_the_first_quote_backslash_or_control(
            bytes in prop::collection::vec(
                prop_oneof![
                    8 => 0x20u8..0x7f,
                    1 => Just(b'"'),
                    1 => Just(b'\\'),
                    1 => 0u8..0x20,
                    2 => 0x80u8..=0xff,
                ],
                0..40,
            )
        ) {
            let expected = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(super::special(&bytes), expected);
        }
    }

    /// A payload text that is one JSON value.
    fn json(text: &str) -> bool {
        serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// Whatever this reader reads, serde reads the same way, unless the payload
        /// is not JSON, which the typed payload parse refuses.
        #[test]
        fn reads_nothing_serde_reads_otherwise(text in mutated()) {
            if let Some(scanned) = scan(&text).map(|s| s.wire) {
                if json(scanned.payload.0) {
                    prop_assert_eq!(Some(scanned), serde(&text));
                } else {
                    prop_assert!(serde(&text).is_none());
                }
            }
        }

        /// The decoder gives the same event or the same refusal with this reader as
        /// with serde alone.
        #[test]
        fn the_decoder_decides_as_with_serde_alone(text in mutated()) {
            let decoder = super::super::Decoder::new(&crate::config::Settings::defaults().validation);
            let now = chrono::Utc::now();
            prop_assert_eq!(
                decoder.decode_with(text.as_bytes(), now, scan),
                decoder.decode_with(text.as_bytes(), now, |_| None)
            );
        }
    }
}
