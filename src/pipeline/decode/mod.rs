//! Decode + validate: record bytes -> [`Event`], or a [`Rejection`] for the dead
//! letters. The fast path deserialises straight into typed structs (records of the
//! usual shape in one pass, `scan` and `settlement`; all others through serde) and
//! enforces by hand every constraint the JSON Schemas state; only a failing record
//! pays for a full schema validation, which names the exact field and keyword. Then
//! come the checks no schema can make: GB 11643 check digits, province prefixes,
//! clocks, sums.

use std::borrow::Cow;
use std::collections::HashSet;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::ValidationSettings;
use crate::domain::dead_letter::{Rejection, Salvage, Stage};
use crate::domain::event::*;
use crate::domain::ids::{EventId, HouseholdId, IdError, RegionCode, ResidentId};
use crate::schemas::Schemas;

mod scan;
mod settlement;

/// Largest amount of money the schemas accept (1e10 yuan).
const MAX_YUAN: f64 = 1e10;

/// A refused record: why, and what could be read of its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub rejection: Rejection,
    /// What could be read.
    pub salvage: Salvage,
}

/// Turns record bytes into events. Cheap to clone; holds only settings.
#[derive(Debug, Clone)]
pub struct Decoder {
    skew: Duration,
    settlement_tolerance: f64,
    /// `validation.default_utc_offset` (`+08:00`), the zone of times sent without
    /// one; `None`: such times are refused.
    default_offset: Option<String>,
}

/// The envelope as it arrives; strings borrowed where JSON has no escapes.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(deny_unknown_fields)]
struct WireEnvelope<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    occurred_at: Cow<'a, str>,
    #[serde(borrow)]
    reported_at: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "present_str")]
    person_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present_str")]
    household_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present_str")]
    region_code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    payload: PayloadText<'a>,
    #[serde(default, deserialize_with = "present_u64")]
    schema_version: Option<u64>,
}

/// The payload's JSON text as received (any JSON value; the typed parse decides).
#[cfg_attr(test, derive(Debug, PartialEq))]
struct PayloadText<'a>(&'a str);

impl<'de: 'a, 'a> Deserialize<'de> for PayloadText<'a> {
    fn deserialize<D>(deserializer: D) -> Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        <&'a RawValue>::deserialize(deserializer).map(|raw| PayloadText(raw.get()))
    }
}

fn present_str<'de: 'a, 'a, D>(deserializer: D) -> Result<Option<Cow<'a, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <Cow<'a, str>>::deserialize(deserializer).map(Some)
}

fn present_u64<'de, D>(deserializer: D) -> Result<Option<u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    u64::deserialize(deserializer).map(Some)
}

/// How the fast path failed.
enum FastFail {
    /// Something the schemas forbid: let the validator say exactly what.
    Schema(&'static str),
    /// A check beyond the schemas.
    Semantic(Rejection),
}

impl From<Rejection> for FastFail {
    fn from(rejection: Rejection) -> Self {
        FastFail::Semantic(rejection)
    }
}

type Fast<T> = Result<T, FastFail>;

fn schema<T>(ok: bool, what: &'static str, value: T) -> Fast<T> {
    if ok {
        Ok(value)
    } else {
        Err(FastFail::Schema(what))
    }
}

impl Decoder {
    /// A decoder with the configured tolerances.
    pub fn new(settings: &ValidationSettings) -> Self {
        let offset = settings.default_utc_offset.trim();
        Decoder {
            skew: Duration::minutes(settings.clock_skew_minutes),
            settlement_tolerance: settings.settlement_tolerance_yuan,
            // Checked with the settings: empty, `Z` or `±HH:MM`.
            default_offset: (!offset.is_empty()).then(|| offset.to_string()),
        }
    }

    /// Decodes and validates one record; `now` is the processing time used by the
    /// future-date check.
    pub fn decode(&self, bytes: &[u8], now: DateTime<Utc>) -> Result<Event, Box<Refusal>> {
        self.decode_with(bytes, now, scan::scan)
    }

    /// [`Decoder::decode`] with the envelope reader that runs before serde's.
    fn decode_with(
        &self,
        bytes: &[u8],
        now: DateTime<Utc>,
        envelope: fn(&str) -> Option<scan::Scanned<'_>>,
    ) -> Result<Event, Box<Refusal>> {
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(error) => {
                let rejection = Rejection::new(
                    Stage::Decode,
                    "json.not_utf8",
                    format!(
                        "record is not valid UTF-8 (first bad byte at offset {})",
                        error.valid_up_to()
                    ),
                );
                return Err(Box::new(Refusal {
                    rejection,
                    salvage: Salvage::default(),
                }));
            }
        };
        match self.fast(text, now, envelope) {
            Ok(event) => Ok(event),
            Err(FastFail::Semantic(rejection)) => Err(Box::new(Refusal {
                rejection,
                salvage: salvage(text),
            })),
            Err(FastFail::Schema(what)) => Err(Box::new(Refusal {
                rejection: slow_rejection(text, what),
                salvage: salvage(text),
            })),
        }
    }

    fn fast(
        &self,
        text: &str,
        now: DateTime<Utc>,
        envelope: fn(&str) -> Option<scan::Scanned<'_>>,
    ) -> Fast<Event> {
        let (wire, read) = match envelope(text) {
            Some(scan::Scanned { wire, payload }) => (wire, payload),
            None => (
                serde_json::from_str::<WireEnvelope<'_>>(text)
                    .map_err(|_| FastFail::Schema("envelope"))?,
                None,
            ),
        };
        let event_id = EventId::parse(&wire.event_id).map_err(|_| FastFail::Schema("event_id"))?;
        let source = Source::parse(&wire.source).ok_or(FastFail::Schema("source"))?;
        let kind = Kind::parse(&wire.kind).ok_or(FastFail::Schema("kind"))?;
        schema(kind.source() == source, "source for kind", ())?;
        schema(
            wire.schema_version.is_none_or(|v| v == 1),
            "schema_version",
            (),
        )?;
        let occurred_text = schema(
            is_event_time_shaped(&wire.occurred_at),
            "occurred_at",
            &wire.occurred_at,
        )?;
        let reported_text = schema(
            is_event_time_shaped(&wire.reported_at),
            "reported_at",
            &wire.reported_at,
        )?;
        // serde would also read a struct from a JSON array; the schema says object.
        schema(wire.payload.0.starts_with('{'), "payload", ())?;
        let subject = self.subject(&wire, kind)?;
        let payload = match read {
            Some(read) => read?,
            None => payload(kind, &mut WholeText(wire.payload.0))?,
        };

        let occurred_at = self.event_time(occurred_text, "/occurred_at")?;
        let reported_at = self.event_time(reported_text, "/reported_at")?;
        if occurred_at > reported_at + self.skew {
            return Err(Rejection::new(
                Stage::Semantic,
                "time.occurred_after_reported",
                format!("occurred_at {occurred_at} is later than reported_at {reported_at}"),
            )
            .at("/occurred_at")
            .into());
        }
        if reported_at > now + self.skew {
            return Err(Rejection::new(
                Stage::Semantic,
                "time.reported_in_future",
                format!("reported_at {reported_at} is in the future (now {now})"),
            )
            .at("/reported_at")
            .into());
        }
        self.check_payload(&payload, occurred_at, reported_at)?;
        Ok(Event {
            payload_json: wire.payload.0.into(),
            event_id,
            source,
            occurred_at,
            reported_at,
            subject,
            payload,
        })
    }

    fn subject(&self, wire: &WireEnvelope<'_>, kind: Kind) -> Fast<Subject> {
        let given = [
            wire.person_id.is_some(),
            wire.household_id.is_some(),
            wire.region_code.is_some(),
        ];
        schema(given.iter().filter(|&&g| g).count() == 1, "subject", ())?;
        match kind.subject() {
            SubjectKind::Person => {
                let text = wire
                    .person_id
                    .as_deref()
                    .ok_or(FastFail::Schema("person_id"))?;
                schema(is_resident_id_shaped(text), "person_id", ())?;
                ResidentId::parse(text)
                    .map(Subject::Person)
                    .map_err(|error| id_rejection(error, "/person_id").into())
            }
            SubjectKind::Household => {
                let text = wire
                    .household_id
                    .as_deref()
                    .ok_or(FastFail::Schema("household_id"))?;
                HouseholdId::parse(text)
                    .map(Subject::Household)
                    .map_err(|_| FastFail::Schema("household_id"))
            }
            SubjectKind::Region => {
                let text = wire
                    .region_code
                    .as_deref()
                    .ok_or(FastFail::Schema("region_code"))?;
                schema(is_region_shaped(text), "region_code", ())?;
                RegionCode::parse(text)
                    .map(Subject::Region)
                    .map_err(|error| id_rejection(error, "/region_code").into())
            }
        }
    }

    fn check_payload(
        &self,
        payload: &Payload,
        occurred_at: DateTime<Utc>,
        reported_at: DateTime<Utc>,
    ) -> Fast<()> {
        match payload {
            Payload::MedicalSettlement(settlement) => {
                let sum = settlement.reimbursed_yuan + settlement.out_of_pocket_yuan;
                if (sum - settlement.total_cost_yuan).abs() > self.settlement_tolerance + 1e-9 {
                    return Err(Rejection::new(
                        Stage::Semantic,
                        "money.settlement_mismatch",
                        format!(
                            "reimbursed_yuan + out_of_pocket_yuan = {sum:.2}, but total_cost_yuan = {:.2}",
                            settlement.total_cost_yuan
                        ),
                    )
                    .at("/payload/total_cost_yuan")
                    .into());
                }
            }
            Payload::SeriousIllness(illness)
                if illness.diagnosed_on > reported_at.date_naive() + Duration::days(1) =>
            {
                return Err(Rejection::new(
                    Stage::Semantic,
                    "time.diagnosed_after_reported",
                    format!(
                        "diagnosed_on {} is after reported_at {reported_at}",
                        illness.diagnosed_on
                    ),
                )
                .at("/payload/diagnosed_on")
                .into());
            }
            Payload::DisasterDeclared(declared) => {
                if let Some(ends_at) = declared.ends_at
                    && ends_at < occurred_at
                {
                    return Err(Rejection::new(
                        Stage::Semantic,
                        "time.ends_before_occurred",
                        format!("ends_at {ends_at} is before occurred_at {occurred_at}"),
                    )
                    .at("/payload/ends_at")
                    .into());
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn id_rejection(error: IdError, field: &str) -> Rejection {
    Rejection::new(Stage::Semantic, error.rule(), error.to_string()).at(field)
}

/// A date-time already known to match the strict RFC 3339 shape, read without
/// chrono's general parser (twice per event on the hot path). `None` if a field is
/// out of range (month 13, 25 o'clock, ...).
fn shaped_time(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    let number = |range: std::ops::Range<usize>| {
        b[range]
            .iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'))
    };
    let date = NaiveDate::from_ymd_opt(number(0..4) as i32, number(5..7), number(8..10))?;
    let mut nanos = 0u32;
    let mut i = 19;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        nanos = number(start..i) * 10u32.pow(9 - (i - start) as u32);
    }
    let time = chrono::NaiveTime::from_hms_nano_opt(
        number(11..13),
        number(14..16),
        number(17..19),
        nanos,
    )?;
    let offset_seconds = match b[i] {
        b'Z' => 0,
        sign => {
            let (hours, minutes) = (number(i + 1..i + 3), number(i + 4..i + 6));
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = (hours * 3600 + minutes * 60) as i64;
            if sign == b'-' { -seconds } else { seconds }
        }
    };
    let local = date.and_time(time);
    Some(Utc.from_utc_datetime(&(local - Duration::seconds(offset_seconds))))
}

impl Decoder {
    /// An [`is_event_time_shaped`] time: as sent when it has its offset, in the
    /// configured default zone when it has none, else refused in words.
    fn event_time(&self, text: &str, field: &str) -> Fast<DateTime<Utc>> {
        if has_offset(text) {
            return parse_time(text, field);
        }
        match &self.default_offset {
            Some(offset) => parse_time(&format!("{text}{offset}"), field),
            None => Err(Rejection::new(
                Stage::Semantic,
                "time.no_zone",
                format!(
                    "{text:?} has no zone; add the UTC offset it was written in (such as +08:00, \
                     or Z for UTC), or set validation.default_utc_offset to read such times in one zone"
                ),
            )
            .at(field)
            .into()),
        }
    }
}

/// Whether a time of [`is_event_time_shaped`] shape ends with a UTC offset.
fn has_offset(text: &str) -> bool {
    let b = text.as_bytes();
    b.last() == Some(&b'Z') || (b.len() >= 6 && matches!(b[b.len() - 6], b'+' | b'-'))
}

/// The `event_time` of `schemas/common.json`: a [`is_rfc3339`] time, or the same
/// with a space for the `T` and without its offset:
/// `^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})?$`
fn is_event_time_shaped(text: &str) -> bool {
    let b = text.as_bytes();
    if b.len() < 19 || !(b[10] == b'T' || b[10] == b' ') {
        return false;
    }
    // The same text with `T` and an offset must be RFC 3339.
    let mut strict = Vec::with_capacity(b.len() + 6);
    strict.extend_from_slice(b);
    strict[10] = b'T';
    if !has_offset(text) {
        strict.extend_from_slice(b"+00:00");
    }
    std::str::from_utf8(&strict).is_ok_and(is_rfc3339)
}

fn parse_time(text: &str, field: &str) -> Fast<DateTime<Utc>> {
    if let Some(time) = shaped_time(text) {
        return Ok(time);
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|error| {
            Rejection::new(
                Stage::Semantic,
                "time.invalid",
                format!("{text:?} is not a real date and time: {error}"),
            )
            .at(field)
            .into()
        })
}

/// `^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$`
fn is_rfc3339(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range)
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    if b.len() < 20
        || !(digits(0..4)
            && b[4] == b'-'
            && digits(5..7)
            && b[7] == b'-'
            && digits(8..10)
            && b[10] == b'T'
            && digits(11..13)
            && b[13] == b':'
            && digits(14..16)
            && b[16] == b':'
            && digits(17..19))
    {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if !(1..=9).contains(&(i - start)) {
            return false;
        }
    }
    match &b[i..] {
        [b'Z'] => true,
        [sign, h1, h2, b':', m1, m2] => {
            (*sign == b'+' || *sign == b'-') && [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit())
        }
        _ => false,
    }
}

/// `^[0-9]{4}-[0-9]{2}-[0-9]{2}$`
fn is_date_shaped(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// `^[0-9]{17}[0-9Xx]$`
fn is_resident_id_shaped(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 18
        && b[..17].iter().all(u8::is_ascii_digit)
        && matches!(b[17], b'0'..=b'9' | b'X' | b'x')
}

/// `^[0-9]{12}$`
fn is_region_shaped(text: &str) -> bool {
    text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit())
}

fn money(value: f64) -> bool {
    (0.0..=MAX_YUAN).contains(&value)
}

fn text_len(value: &str, max: usize) -> bool {
    let chars = value.chars().count();
    (1..=max).contains(&chars)
}

/// Typed payload for `kind`, with the schema constraints serde cannot express.
/// Where a typed payload is read from.
trait PayloadInput<'a> {
    /// Reads the payload as `T` (each kind reads it once).
    fn typed<T: Deserialize<'a>>(&mut self) -> Fast<T>;

    /// Reads the payload as a medical settlement.
    fn settlement(&mut self) -> Fast<MedicalSettlement> {
        self.typed()
    }
}

/// The payload's own text.
struct WholeText<'a>(&'a str);

impl<'a> PayloadInput<'a> for WholeText<'a> {
    fn typed<T: Deserialize<'a>>(&mut self) -> Fast<T> {
        serde_json::from_str(self.0).map_err(|_| FastFail::Schema("payload"))
    }
}

/// The record from the payload's first byte on: the payload is read where it is,
/// in the same pass as the envelope, and its end is noted.
struct InPlace<'a> {
    text: &'a str,
    /// The payload's length, once read.
    read: Option<usize>,
}

impl<'a> PayloadInput<'a> for InPlace<'a> {
    fn typed<T: Deserialize<'a>>(&mut self) -> Fast<T> {
        let mut stream = serde_json::Deserializer::from_str(self.text).into_iter::<T>();
        match stream.next() {
            Some(Ok(value)) => {
                self.read = Some(stream.byte_offset());
                Ok(value)
            }
            _ => Err(FastFail::Schema("payload")),
        }
    }

    fn settlement(&mut self) -> Fast<MedicalSettlement> {
        match settlement::settlement(self.text) {
            Some((settlement, length)) => {
                self.read = Some(length);
                Ok(settlement)
            }
            None => self.typed(),
        }
    }
}

fn payload<'a>(kind: Kind, json: &mut impl PayloadInput<'a>) -> Fast<Payload> {
    fn typed<'a, T: Deserialize<'a>>(json: &mut impl PayloadInput<'a>) -> Fast<T> {
        json.typed()
    }
    let payload = match kind {
        Kind::AssistanceApplication => {
            let p: AssistanceApplication = typed(json)?;
            schema(
                p.monthly_amount_yuan.is_none_or(money),
                "monthly_amount_yuan",
                (),
            )?;
            Payload::AssistanceApplication(p)
        }
        Kind::MedicalSettlement => {
            let p = json.settlement()?;
            schema(
                money(p.total_cost_yuan) && money(p.reimbursed_yuan) && money(p.out_of_pocket_yuan),
                "settlement money",
                (),
            )?;
            schema(
                p.diagnosis_group.as_deref().is_none_or(|g| text_len(g, 64)),
                "diagnosis_group",
                (),
            )?;
            Payload::MedicalSettlement(p)
        }
        Kind::SeriousIllness => {
            // The date's shape is a schema constraint; serde's NaiveDate would also
            // accept other spellings, so check the text first.
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Wire<'a> {
                disease_group: String,
                #[serde(borrow)]
                diagnosed_on: Cow<'a, str>,
            }
            let wire: Wire<'_> = typed(json)?;
            schema(text_len(&wire.disease_group, 64), "disease_group", ())?;
            schema(is_date_shaped(&wire.diagnosed_on), "diagnosed_on", ())?;
            let diagnosed_on =
                NaiveDate::parse_from_str(&wire.diagnosed_on, "%Y-%m-%d").map_err(|_| {
                    Rejection::new(
                        Stage::Semantic,
                        "time.invalid",
                        format!("{:?} is not a real date", wire.diagnosed_on),
                    )
                    .at("/payload/diagnosed_on")
                })?;
            Payload::SeriousIllness(SeriousIllness {
                disease_group: wire.disease_group,
                diagnosed_on,
            })
        }
        Kind::DisabilityCertified => {
            let p: DisabilityCertified = typed(json)?;
            schema((1..=4).contains(&p.grade), "grade", ())?;
            Payload::DisabilityCertified(p)
        }
        Kind::Unemployment => {
            let p: Unemployment = typed(json)?;
            schema(
                p.employer_id.as_deref().is_none_or(|s| text_len(s, 64))
                    && p.industry.as_deref().is_none_or(|s| text_len(s, 64))
                    && p.previous_monthly_income_yuan.is_none_or(money),
                "unemployment fields",
                (),
            )?;
            Payload::Unemployment(p)
        }
        Kind::DisasterDeclared => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Wire<'a> {
                hazard: Hazard,
                level: DisasterLevel,
                #[serde(borrow)]
                region_codes: Vec<Cow<'a, str>>,
                #[serde(default, borrow, deserialize_with = "present_str")]
                ends_at: Option<Cow<'a, str>>,
            }
            let wire: Wire<'_> = typed(json)?;
            schema(!wire.region_codes.is_empty(), "region_codes", ())?;
            schema(
                wire.region_codes.iter().all(|c| is_region_shaped(c)),
                "region_codes",
                (),
            )?;
            schema(all_unique(&wire.region_codes), "region_codes", ())?;
            if let Some(ends_at) = &wire.ends_at {
                schema(is_rfc3339(ends_at), "ends_at", ())?;
            }
            let mut region_codes = Vec::with_capacity(wire.region_codes.len());
            for (i, code) in wire.region_codes.iter().enumerate() {
                let code = RegionCode::parse(code)
                    .map_err(|e| id_rejection(e, &format!("/payload/region_codes/{i}")))?;
                region_codes.push(code);
            }
            let ends_at = match &wire.ends_at {
                Some(text) => Some(parse_time(text, "/payload/ends_at")?),
                None => None,
            };
            Payload::DisasterDeclared(DisasterDeclared {
                hazard: wire.hazard,
                level: wire.level,
                region_codes,
                ends_at,
            })
        }
        Kind::DisasterImpact => {
            let p: DisasterImpact = typed(json)?;
            schema(
                money(p.loss_yuan) && p.crop_loss_ratio.is_none_or(|r| (0.0..=1.0).contains(&r)),
                "disaster impact fields",
                (),
            )?;
            Payload::DisasterImpact(p)
        }
        Kind::IndustryProjectFailure => {
            let p: IndustryProjectFailure = typed(json)?;
            schema(
                text_len(&p.project_id, 64)
                    && text_len(&p.project_name, 200)
                    && !p.household_ids.is_empty()
                    && all_unique(&p.household_ids)
                    && money(p.loss_yuan),
                "industry project fields",
                (),
            )?;
            Payload::IndustryProjectFailure(p)
        }
        Kind::SchoolDropout => Payload::SchoolDropout(typed(json)?),
        Kind::HousingSafety => Payload::HousingSafety(typed(json)?),
        Kind::WaterOutage => {
            let p: WaterOutage = typed(json)?;
            schema(
                p.expected_days >= 0.0 && p.expected_days.is_finite(),
                "expected_days",
                (),
            )?;
            schema(
                p.households_affected <= 100_000_000,
                "households_affected",
                (),
            )?;
            Payload::WaterOutage(p)
        }
    };
    Ok(payload)
}

fn all_unique<T: std::hash::Hash + Eq>(items: &[T]) -> bool {
    let mut seen = HashSet::with_capacity(items.len());
    items.iter().all(|item| seen.insert(item))
}

/// The exact schema violation of a record the fast path refused. `hint` names
/// what the fast path disliked, for the (bug-only) case where the schema accepts it.
fn slow_rejection(text: &str, hint: &str) -> Rejection {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(error) => {
            return Rejection::new(
                Stage::Decode,
                "json.syntax",
                format!("not valid JSON: {error}"),
            );
        }
    };
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .and_then(Kind::parse);
    let path = match kind {
        Some(kind) => format!("events/{}.json", kind.as_str()),
        None => "events/envelope.json".to_string(),
    };
    let violations = Schemas::get().violations(&path, &value);
    let chosen = violations
        .iter()
        .find(|v| !matches!(v.keyword.as_str(), "allOf" | "anyOf" | "oneOf" | "$ref"))
        .or(violations.first());
    match chosen {
        Some(violation) => {
            let rejection = Rejection::new(
                Stage::Schema,
                format!("schema.{}", violation.keyword),
                format!("{} (schema {path})", violation.message),
            );
            if violation.pointer.is_empty() {
                rejection
            } else {
                rejection.at(violation.pointer.clone())
            }
        }
        None => Rejection::new(
            Stage::Schema,
            "schema.typed",
            format!("record does not fit the typed contract ({hint}) though {path} accepts it"),
        ),
    }
}

/// What can be read of a refused record's envelope.
fn salvage(text: &str) -> Salvage {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) else {
        return Salvage::default();
    };
    let field = |name: &str| {
        map.get(name)
            .and_then(|v| v.as_str())
            .filter(|s| s.len() <= 128)
            .map(str::to_string)
    };
    Salvage {
        event_id: field("event_id"),
        source: field("source"),
        kind: field("kind"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn decoder() -> Decoder {
        Decoder::new(&crate::config::Settings::defaults().validation)
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap()
    }

    const PERSON: &str = "11010519491231002X";

    fn event(kind: &str, source: &str, subject: &str, payload: &str) -> String {
        format!(
            r#"{{"event_id":"E-1","source":"{source}","kind":"{kind}","occurred_at":"2024-05-01T10:00:00+08:00","reported_at":"2024-05-02T09:00:00+08:00",{subject},"payload":{payload}}}"#
        )
    }

    fn person_event(kind: &str, source: &str, payload: &str) -> String {
        event(kind, source, &format!(r#""person_id":"{PERSON}""#), payload)
    }

    fn rejected(line: &str) -> Rejection {
        decoder()
            .decode(line.as_bytes(), now())
            .expect_err("should be rejected")
            .rejection
    }

    #[test]
    fn decodes_a_medical_settlement() {
        let line = person_event(
            "medical_settlement",
            "medical_insurance",
            r#"{"total_cost_yuan":1000,"reimbursed_yuan":700,"out_of_pocket_yuan":300,"serious_illness":false}"#,
        );
        let event = decoder().decode(line.as_bytes(), now()).unwrap();
        assert_eq!(event.kind(), Kind::MedicalSettlement);
        assert_eq!(
            event.occurred_at,
            Utc.with_ymd_and_hms(2024, 5, 1, 2, 0, 0).unwrap()
        );
        match event.subject {
            Subject::Person(id) => assert_eq!(id.masked(), "110105********002X"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn broken_json_is_a_decode_error() {
        let r = rejected(r#"{"event_id": "#);
        assert_eq!((r.stage, r.rule.as_str()), (Stage::Decode, "json.syntax"));
    }

    #[test]
    fn non_utf8_is_a_decode_error() {
        let r = decoder()
            .decode(b"{\"a\":\"\xff\"}", now())
            .unwrap_err()
            .rejection;
        assert_eq!(r.rule, "json.not_utf8");
    }

    #[test]
    fn bad_check_digit_names_the_field() {
        let line = person_event(
            "school_dropout",
            "education",
            r#"{"school_stage":"primary"}"#,
        )
        .replace(PERSON, "110105194912310021");
        let r = rejected(&line);
        assert_eq!(r.rule, "id.check_digit");
        assert_eq!(r.field.as_deref(), Some("/person_id"));
    }

    #[test]
    fn wrong_type_names_field_and_keyword() {
        let line = person_event(
            "disability_certified",
            "disabled_persons_federation",
            r#"{"grade":"two","category":"physical"}"#,
        );
        let r = rejected(&line);
        assert_eq!(r.stage, Stage::Schema);
        assert_eq!(r.rule, "schema.type");
        assert_eq!(r.field.as_deref(), Some("/payload/grade"));
    }

    #[test]
    fn grade_out_of_range_and_whole_floats() {
        let grade = |g: &str| {
            person_event(
                "disability_certified",
                "disabled_persons_federation",
                &format!(r#"{{"grade":{g},"category":"physical"}}"#),
            )
        };
        assert_eq!(rejected(&grade("5")).rule, "schema.maximum");
        assert_eq!(rejected(&grade("0")).rule, "schema.minimum");
        assert!(decoder().decode(grade("2.0").as_bytes(), now()).is_ok());
        assert_eq!(rejected(&grade("2.5")).stage, Stage::Schema);
    }

    #[test]
    fn unknown_kind_and_mismatched_source() {
        let r = rejected(&person_event("weather", "water", "{}"));
        assert_eq!(r.rule, "schema.enum");
        assert_eq!(r.field.as_deref(), Some("/kind"));
        let r = rejected(&person_event(
            "school_dropout",
            "housing",
            r#"{"school_stage":"primary"}"#,
        ));
        assert_eq!(r.stage, Stage::Schema);
        assert_eq!(r.field.as_deref(), Some("/source"));
    }

    #[test]
    fn subject_must_match_kind() {
        let line = event(
            "school_dropout",
            "education",
            r#""household_id":"H1""#,
            r#"{"school_stage":"primary"}"#,
        );
        assert_eq!(rejected(&line).stage, Stage::Schema);
        let two = person_event(
            "school_dropout",
            "education",
            r#"{"school_stage":"primary"}"#,
        )
        .replace(r#""payload""#, r#""region_code":"522425101201","payload""#);
        assert_eq!(rejected(&two).stage, Stage::Schema);
    }

    #[test]
    fn settlement_must_add_up_within_a_cent() {
        let settlement = |oop: &str| {
            person_event(
                "medical_settlement",
                "medical_insurance",
                &format!(
                    r#"{{"total_cost_yuan":1000,"reimbursed_yuan":700,"out_of_pocket_yuan":{oop},"serious_illness":false}}"#
                ),
            )
        };
        assert!(
            decoder()
                .decode(settlement("300.01").as_bytes(), now())
                .is_ok()
        );
        assert!(
            decoder()
                .decode(settlement("299.99").as_bytes(), now())
                .is_ok()
        );
        let r = rejected(&settlement("300.02"));
        assert_eq!(r.rule, "money.settlement_mismatch");
        assert_eq!(r.stage, Stage::Semantic);
    }

    #[test]
    fn negative_money_is_refused() {
        let line = person_event(
            "medical_settlement",
            "medical_insurance",
            r#"{"total_cost_yuan":-1,"reimbursed_yuan":0,"out_of_pocket_yuan":-1,"serious_illness":false}"#,
        );
        assert_eq!(rejected(&line).rule, "schema.minimum");
    }

    #[test]
    fn clocks() {
        let base = person_event(
            "school_dropout",
            "education",
            r#"{"school_stage":"primary"}"#,
        );
        // Occurred 9 minutes after reported: within the 10-minute skew.
        let ok = base.replace("2024-05-01T10:00:00+08:00", "2024-05-02T09:09:00+08:00");
        assert!(decoder().decode(ok.as_bytes(), now()).is_ok());
        let late = base.replace("2024-05-01T10:00:00+08:00", "2024-05-02T09:11:00+08:00");
        assert_eq!(rejected(&late).rule, "time.occurred_after_reported");
        let future = base
            .replace("2024-05-02T09:00:00+08:00", "2099-01-01T00:00:00Z")
            .replace("2024-05-01T10:00:00+08:00", "2098-01-01T00:00:00Z");
        assert_eq!(rejected(&future).rule, "time.reported_in_future");
        let no_offset = base.replace("2024-05-01T10:00:00+08:00", "2024-05-01T10:00:00");
        let r = rejected(&no_offset);
        assert_eq!(
            (r.rule.as_str(), r.field.as_deref()),
            ("time.no_zone", Some("/occurred_at"))
        );
        assert!(r.reason.contains("has no zone; add"), "{}", r.reason);
        assert!(
            r.reason.contains("validation.default_utc_offset"),
            "{}",
            r.reason
        );
        assert!(!r.reason.contains("[0-9]"), "{}", r.reason);
        let month13 = base.replace("2024-05-01T10:00:00+08:00", "2024-13-01T10:00:00+08:00");
        assert_eq!(rejected(&month13).rule, "time.invalid");
    }

    #[test]
    fn times_without_a_zone_are_read_in_the_default_zone_or_refused_in_words() {
        let base = person_event(
            "school_dropout",
            "education",
            r#"{"school_stage":"primary"}"#,
        );
        let mut settings = crate::config::Settings::defaults().validation;
        settings.default_utc_offset = "+08:00".into();
        let with_zone = Decoder::new(&settings);
        let zoned = with_zone.decode(base.as_bytes(), now()).unwrap();
        for (occurred, reported) in [
            ("2024-05-01 10:00:00", "2024-05-02 09:00:00"),
            ("2024-05-01T10:00:00", "2024-05-02T09:00:00"),
            ("2024-05-01 10:00:00", "2024-05-02T01:00:00Z"),
            ("2024-05-01 02:00:00Z", "2024-05-02 09:00:00+08:00"),
        ] {
            let line = base
                .replace("2024-05-01T10:00:00+08:00", occurred)
                .replace("2024-05-02T09:00:00+08:00", reported);
            let event = with_zone.decode(line.as_bytes(), now()).unwrap();
            assert_eq!(event.occurred_at, zoned.occurred_at, "{occurred}");
            assert_eq!(event.reported_at, zoned.reported_at, "{reported}");
            // Without a default zone: the first zone-less field is named, in words.
            if !has_offset(occurred) || !has_offset(reported) {
                let refusal = decoder().decode(line.as_bytes(), now()).unwrap_err();
                assert_eq!(refusal.rejection.rule, "time.no_zone", "{line}");
            }
        }
        // A fraction, and the shapes that stay wrong however the zone is set.
        assert!(is_event_time_shaped("2024-05-01 10:00:00.123"));
        for bad in [
            "2024-05-01  10:00:00",
            "2024-05-01 10:00",
            "2024-05-01T10:00:00+8",
            "2024-05-01T10:00:00.",
            "2024-05-01",
            "2024-05-01 10:00:00+08:00:00",
        ] {
            assert!(!is_event_time_shaped(bad), "{bad}");
            let line = base.replace("2024-05-01T10:00:00+08:00", bad);
            let refusal = with_zone.decode(line.as_bytes(), now()).unwrap_err();
            assert_eq!(refusal.rejection.stage, Stage::Schema, "{bad}");
        }
        // Calendar checks apply to zone-less times too.
        let month13 = base.replace("2024-05-01T10:00:00+08:00", "2024-13-01 10:00:00");
        let refusal = with_zone.decode(month13.as_bytes(), now()).unwrap_err();
        assert_eq!(refusal.rejection.rule, "time.invalid");
    }

    #[test]
    fn the_fast_time_reader_agrees_with_chrono() {
        for text in [
            "2024-05-01T10:00:00+08:00",
            "2024-05-01T10:00:00Z",
            "2024-02-29T23:59:59.123456789-03:30",
            "1999-12-31T00:00:00.5+14:00",
            "2024-05-01T00:00:00-00:00",
        ] {
            let chrono = DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc);
            assert_eq!(shaped_time(text), Some(chrono), "{text}");
        }
        for bad in [
            "2023-02-29T10:00:00Z",
            "2024-13-01T10:00:00Z",
            "2024-05-01T24:00:00Z",
        ] {
            assert_eq!(shaped_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn null_optional_fields_are_refused_like_the_schema_does() {
        let line = person_event(
            "unemployment",
            "human_resources",
            r#"{"reason":"laid_off","employer_id":null}"#,
        );
        assert_eq!(rejected(&line).stage, Stage::Schema);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let line = person_event(
            "school_dropout",
            "education",
            r#"{"school_stage":"primary","grade":3}"#,
        );
        let r = rejected(&line);
        assert_eq!(r.stage, Stage::Schema);
        let line = person_event(
            "school_dropout",
            "education",
            r#"{"school_stage":"primary"}"#,
        )
        .replace(r#""payload""#, r#""extra":1,"payload""#);
        assert_eq!(rejected(&line).stage, Stage::Schema);
    }

    #[test]
    fn region_events() {
        let declared = event(
            "disaster_declared",
            "emergency_management",
            r#""region_code":"522425000000""#,
            r#"{"hazard":"flood","level":"II","region_codes":["522425101201","522425101202"]}"#,
        );
        let event = decoder().decode(declared.as_bytes(), now()).unwrap();
        match event.payload {
            Payload::DisasterDeclared(d) => assert_eq!(d.region_codes.len(), 2),
            other => panic!("{other:?}"),
        }
        let duplicate = declared.replace("522425101202", "522425101201");
        assert_eq!(rejected(&duplicate).rule, "schema.uniqueItems");
        let bad_province = declared.replace("522425101202", "992425101202");
        assert_eq!(rejected(&bad_province).rule, "region.code");
    }

    #[test]
    fn salvage_reads_what_it_can() {
        let line = person_event(
            "school_dropout",
            "education",
            r#"{"school_stage":"college"}"#,
        );
        let salvage = decoder()
            .decode(line.as_bytes(), now())
            .unwrap_err()
            .salvage;
        assert_eq!(salvage.event_id.as_deref(), Some("E-1"));
        assert_eq!(salvage.kind.as_deref(), Some("school_dropout"));
    }
}
