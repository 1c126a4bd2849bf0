//! A one-pass reader for the usual shape of a `medical_settlement` payload, the
//! feed that makes up most records: its five keys, each at most once, amounts in
//! plain decimals of up to 15 digits, a `true`/`false` flag and a diagnosis group
//! without escapes. It gives exactly what serde gives for such text (the amounts
//! computed as serde_json computes them: the digits as an integer, divided by a
//! power of ten, both exact, so the one division rounds correctly). Anything else
//! — exponents, signs, long numbers, escapes, `null`, unknown or repeated keys —
//! it leaves to serde (`None`).

use super::scan::{Cursor, once};
use crate::domain::event::MedicalSettlement;

/// Reads a settlement object from the start of `text`: the payload and its
/// length in bytes, or `None` when serde must decide.
pub(super) fn settlement(text: &str) -> Option<(MedicalSettlement, usize)> {
    let mut reader = Cursor::new(text);
    let mut total = None;
    let mut reimbursed = None;
    let mut out_of_pocket = None;
    let mut serious = None;
    let mut group = None;
    reader.take(b'{')?;
    reader.blank();
    if reader.peek()? == b'}' {
        return None;
    }
    loop {
        let key = reader.string()?;
        reader.blank();
        reader.take(b':')?;
        reader.blank();
        match key {
            "total_cost_yuan" => once(&mut total, reader.amount()?)?,
            "reimbursed_yuan" => once(&mut reimbursed, reader.amount()?)?,
            "out_of_pocket_yuan" => once(&mut out_of_pocket, reader.amount()?)?,
            "serious_illness" => once(&mut serious, reader.flag()?)?,
            "diagnosis_group" => once(&mut group, reader.string()?)?,
            _ => return None,
        }
        reader.blank();
        match reader.next()? {
            b',' => reader.blank(),
            b'}' => break,
            _ => return None,
        }
    }
    let settlement = MedicalSettlement {
        total_cost_yuan: total?,
        reimbursed_yuan: reimbursed?,
        out_of_pocket_yuan: out_of_pocket?,
        serious_illness: serious?,
        diagnosis_group: group.map(str::to_string),
    };
    Some((settlement, reader.at))
}

/// Powers of ten a plain decimal of up to 15 digits can need.
const POWERS: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// The settlement's values, read at the envelope reader's cursor.
impl Cursor<'_> {
    fn flag(&mut self) -> Option<bool> {
        let rest = &self.bytes[self.at..];
        let (value, length) = if rest.starts_with(b"true") {
            (true, 4)
        } else if rest.starts_with(b"false") {
            (false, 5)
        } else {
            return None;
        };
        self.at += length;
        Some(value)
    }

    /// `0`, `12`, `0.5`, `334.56`: no sign, exponent or leading zero, at most 15
    /// digits in all.
    fn amount(&mut self) -> Option<f64> {
        let mut digits: u64 = 0;
        let mut count = 0usize;
        let start = self.at;
        while let Some(byte @ b'0'..=b'9') = self.peek() {
            digits = digits * 10 + u64::from(byte - b'0');
            count += 1;
            self.at += 1;
            if count > 15 {
                return None;
            }
        }
        let whole = self.at - start;
        if whole == 0 || (whole > 1 && self.bytes[start] == b'0') {
            return None;
        }
        let mut fraction = 0usize;
        if self.peek() == Some(b'.') {
            self.at += 1;
            while let Some(byte @ b'0'..=b'9') = self.peek() {
                digits = digits * 10 + u64::from(byte - b'0');
                count += 1;
                fraction += 1;
                self.at += 1;
                if count > 15 {
                    return None;
                }
            }
            if fraction == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E' | b'.' | b'-' | b'+') = self.peek() {
            return None;
        }
        // As serde_json computes it: exact integer, one correctly rounded division.
        Some(digits as f64 / POWERS[fraction])
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::settlement;
    use crate::domain::event::MedicalSettlement;

    /// What serde reads from the start of `text`, and how far.
    fn serde(text: &str) -> Option<(MedicalSettlement, usize)> {
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<MedicalSettlement>();
        match stream.next() {
            Some(Ok(value)) => Some((value, stream.byte_offset())),
            _ => None,
        }
    }

    const USUAL: &[&str] = &[
        r#"{"diagnosis_group":"injury","out_of_pocket_yuan":334.56,"reimbursed_yuan":368.34,"serious_illness":false,"total_cost_yuan":702.9},"person_id":"1"}"#,
        r#"{ "total_cost_yuan" : 120000 , "reimbursed_yuan":0.5,"out_of_pocket_yuan":119999.5,"serious_illness":true }"#,
        r#"{"out_of_pocket_yuan":0,"reimbursed_yuan":0.0,"serious_illness":false,"total_cost_yuan":999999999999.999,"diagnosis_group":"慢性病"}   "#,
    ];

    #[test]
    fn reads_the_usual_shape_as_serde_does() {
        for text in USUAL {
            let read = settlement(text);
            assert!(read.is_some(), "{text}");
            assert_eq!(read, serde(text), "{text}");
        }
    }

    #[test]
    fn leaves_other_shapes_to_serde() {
        let base = USUAL[0];
        for text in [
            base.replace("334.56", "3.3456e2"),
            base.replace("334.56", "-334.56"),
            base.replace("334.56", "0334.56"),
            base.replace("334.56", "334."),
            base.replace("702.9", "1234567890123.456"),
            base.replace("\"injury\"", "null"),
            base.replace("\"injury\"", "\"in\\u006aury\""),
            base.replace("\"serious_illness\":false", "\"serious_illness\":0"),
            base.replace("\"serious_illness\":false,", ""),
            base.replace(
                "\"diagnosis_group\"",
                "\"total_cost_yuan\":1,\"diagnosis_group\"",
            ),
            base.replace("\"diagnosis_group\"", "\"extra\":1,\"diagnosis_group\""),
            base.replace("702.9}", "702.9,}"),
        ] {
            assert_eq!(settlement(&text), None, "{text}");
        }
    }

    fn amount() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u64..1_000_000_000_000_000, 0u32..10).prop_map(|(n, k)| {
                let text = n.to_string();
                let k = (k as usize).min(text.len() - 1);
                if k == 0 {
                    text
                } else {
                    format!("{}.{}", &text[..text.len() - k], &text[text.len() - k..])
                }
            }),
            any::<f64>().prop_map(|f| f.abs().to_string()),
            Just("0".to_string()),
            Just("9007199254740993".to_string()),
            Just("0.1".to_string()),
            Just("1e3".to_string()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// Amounts of every length and spelling: read as serde reads them, or left.
        #[test]
        fn amounts_read_as_serde_reads_them(
            total in amount(),
            reimbursed in amount(),
            out in amount(),
            serious in any::<bool>(),
            space in prop::sample::select(vec!["", " ", "\n\t"]),
        ) {
            let text = format!(
                r#"{{"total_cost_yuan":{total},{space}"reimbursed_yuan"{space}:{reimbursed},"out_of_pocket_yuan":{out},"serious_illness":{serious}}}"#
            );
            if let Some(read) = settlement(&text) {
                prop_assert_eq!(Some(read), serde(&text));
            }
        }

        /// Usual payloads with pieces dropped, doubled or replaced.
        #[test]
        fn reads_nothing_serde_reads_otherwise(
            base in prop::sample::select(USUAL.to_vec()),
            edits in prop::collection::vec(
                (
                    any::<prop::sample::Index>(),
                    0usize..3,
                    prop::sample::select(vec![
                        "\"", "\\", "{", "}", ",", ":", " ", "0", "9", ".", "-", "e", "true",
                        "null", "\"serious_illness\":", "\u{1}",
                    ]),
                ),
                1..4,
            ),
        ) {
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
            if let Some(read) = settlement(&text) {
                prop_assert_eq!(Some(read), serde(&text));
            }
        }
    }
}
