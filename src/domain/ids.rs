//! Identifier newtypes that flow between every stage: resident IDs, region codes,
//! household ids, event ids, and the keyed pseudonyms that stand in for resident IDs.
//! Each has a `parse` constructor that checks what the contract promises (GB 11643
//! check digit, 12-digit statistical division codes, the id alphabets), so a value
//! of these types is valid by construction. Parsing fails with [`IdError`].

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Why an identifier was rejected; `rule` codes are the dead-letter rule names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not 17 digits followed by a digit or `X`.
    #[error("resident ID must be 17 digits and a check character (digit or X)")]
    ResidentIdFormat,
    /// The 18th character does not match the GB 11643 checksum of the first 17.
    #[error("resident ID check digit is wrong (GB 11643)")]
    ResidentIdCheckDigit,
    /// Digits 7–14 are not a plausible date of birth.
    #[error("resident ID birth date (digits 7-14) is not a valid date")]
    ResidentIdBirthDate,
    /// Not 12 digits, or not a well-formed statistical division code.
    #[error("region code must be 12 digits with a valid province prefix")]
    RegionCode,
    /// Empty, too long, or characters outside `[A-Za-z0-9_-]`.
    #[error("household id must be 1-64 characters of [A-Za-z0-9_-], starting alphanumeric")]
    HouseholdId,
    /// Empty, too long, or characters outside `[A-Za-z0-9._:-]`.
    #[error("event id must be 1-128 characters of [A-Za-z0-9._:-], starting alphanumeric")]
    EventId,
}

impl IdError {
    /// The dead-letter rule code of this failure.
    pub fn rule(&self) -> &'static str {
        match self {
            IdError::ResidentIdFormat => "id.format",
            IdError::ResidentIdCheckDigit => "id.check_digit",
            IdError::ResidentIdBirthDate => "id.birth_date",
            IdError::RegionCode => "region.code",
            IdError::HouseholdId => "household.id",
            IdError::EventId => "event.id",
        }
    }
}

/// An 18-character resident identity number (居民身份证号码, GB 11643-1999).
///
/// The clear value never leaves this type except through [`ResidentId::masked`] and
/// [`Pseudonymiser::key`]: `Debug` and `Display` print the masked form, and the type
/// is deliberately not `Serialize`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ResidentId([u8; 18]);

/// GB 11643 weights for positions 1..=17.
const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// Check character for `sum mod 11`.
const ID_CHECK: &[u8; 11] = b"10X98765432";

impl ResidentId {
    /// Parses and checks an ID: format, birth date, check digit. A lowercase `x` is
    /// accepted and normalised to `X`, as departments' systems differ on it.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let bytes = text.as_bytes();
        if bytes.len() != 18 || !bytes[..17].iter().all(u8::is_ascii_digit) {
            return Err(IdError::ResidentIdFormat);
        }
        let last = bytes[17].to_ascii_uppercase();
        if !(last.is_ascii_digit() || last == b'X') {
            return Err(IdError::ResidentIdFormat);
        }
        if bytes[0] == b'0' || bytes[0] == b'9' {
            return Err(IdError::ResidentIdFormat);
        }
        if !plausible_birth_date(&bytes[6..14]) {
            return Err(IdError::ResidentIdBirthDate);
        }
        if check_character(&bytes[..17]) != last {
            return Err(IdError::ResidentIdCheckDigit);
        }
        let mut id = [0u8; 18];
        id.copy_from_slice(bytes);
        id[17] = last;
        Ok(ResidentId(id))
    }

    /// Display form: first 6 and last 4 characters, the rest starred
    /// (`522425********123X`).
    pub fn masked(&self) -> MaskedId {
        let mut masked = self.0;
        masked[6..14].copy_from_slice(b"********");
        MaskedId(masked)
    }

    /// The date of birth in digits 7-14 (a real date: [`ResidentId::parse`] checked it).
    pub fn birth_date(&self) -> chrono::NaiveDate {
        let number = |range: std::ops::Range<usize>| {
            self.0[range]
                .iter()
                .fold(0u32, |acc, &b| acc * 10 + u32::from(b - b'0'))
        };
        chrono::NaiveDate::from_ymd_opt(number(6..10) as i32, number(10..12), number(12..14))
            .unwrap_or_default()
    }

    /// The clear digits, for the pseudonymiser only.
    fn as_bytes(&self) -> &[u8; 18] {
        &self.0
    }
}

/// Masks an 18-byte resident-ID-shaped token as first 6 + 8 stars + last 4.
pub fn mask_id_bytes(id: &[u8; 18]) -> String {
    let mut masked = String::with_capacity(18);
    masked.extend(id[..6].iter().map(|&b| b as char));
    masked.push_str("********");
    masked.extend(id[14..].iter().map(|&b| b as char));
    masked
}

/// The GB 11643 check character for the first 17 digits.
pub fn check_character(first17: &[u8]) -> u8 {
    let sum: u32 = first17
        .iter()
        .zip(ID_WEIGHTS)
        .map(|(&digit, weight)| u32::from(digit - b'0') * weight)
        .sum();
    ID_CHECK[(sum % 11) as usize]
}

fn plausible_birth_date(yyyymmdd: &[u8]) -> bool {
    let number = |range: std::ops::Range<usize>| {
        yyyymmdd[range]
            .iter()
            .fold(0u32, |acc, &b| acc * 10 + u32::from(b - b'0'))
    };
    let (year, month, day) = (number(0..4), number(4..6), number(6..8));
    (1880..=2100).contains(&year)
        && chrono::NaiveDate::from_ymd_opt(year as i32, month, day).is_some()
}

/// A masked resident ID (first 6 + 8 stars + last 4): what may be shown and stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MaskedId([u8; 18]);

impl MaskedId {
    /// The masked text.
    pub fn as_str(&self) -> &str {
        // Built only from ASCII digits, `X` and `*`.
        std::str::from_utf8(&self.0).unwrap_or("******************")
    }
}

impl fmt::Display for MaskedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for MaskedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MaskedId({})", self.as_str())
    }
}

impl PartialEq<&str> for MaskedId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for ResidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResidentId({})", self.masked())
    }
}

impl fmt::Display for ResidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.masked().as_str())
    }
}

/// The keyed pseudonym of a resident ID: HMAC-SHA256 under the configured key.
/// Joins between feeds and the registry use this, never the clear ID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersonKey(pub [u8; 32]);

impl PersonKey {
    /// Lowercase hex, as stored and exported.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Rebuilds a key read back from the store.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(PersonKey)
    }
}

impl fmt::Debug for PersonKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PersonKey({}…)", &self.to_hex()[..12])
    }
}

/// Turns resident IDs into [`PersonKey`]s. Holds the HMAC state keyed once, so
/// each pseudonym costs two SHA-256 compressions.
#[derive(Clone)]
pub struct Pseudonymiser {
    keyed: Hmac<Sha256>,
}

/// What a key's fingerprint is the digest of: text that no resident ID can be.
const KEY_FINGERPRINT_INPUT: &[u8] = b"yujing key fingerprint v1";

impl Pseudonymiser {
    /// A pseudonymiser for `key` (any length; HMAC hashes long keys).
    pub fn new(key: &[u8]) -> Self {
        // HMAC accepts keys of every length, so this cannot fail.
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .expect("HMAC-SHA256 accepts keys of any length");
        Pseudonymiser { keyed }
    }

    /// The key's fingerprint (hex): the keyed digest of a constant that is no
    /// resident ID, so it tells keys apart without revealing the key or any pseudonym.
    /// A store remembers the fingerprint of the key it was made with.
    pub fn fingerprint(&self) -> String {
        let mut mac = self.keyed.clone();
        mac.update(KEY_FINGERPRINT_INPUT);
        hex::encode(mac.finalize().into_bytes())
    }

    /// The pseudonym of `id`.
    pub fn key(&self, id: &ResidentId) -> PersonKey {
        let mut mac = self.keyed.clone();
        mac.update(id.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut key = [0u8; 32];
        key.copy_from_slice(&digest);
        PersonKey(key)
    }
}

impl fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pseudonymiser(<key redacted>)")
    }
}

/// A 12-digit statistical division code (统计用区划代码): province (2), city (2),
/// county (2), township (3), village (3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionCode(u64);

/// A level of the region hierarchy, derived from which digits of a code are set.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RegionLevel {
    /// 省 — only the first 2 digits set.
    Province,
    /// 市 — digits 3–4 set.
    City,
    /// 县 — digits 5–6 set.
    County,
    /// 乡镇 / 管理区 — digits 7–9 set.
    Township,
    /// 村 / 社区 — digits 10–12 set.
    Village,
}

impl RegionLevel {
    /// The name used in config, CSV and exports.
    pub fn as_str(self) -> &'static str {
        match self {
            RegionLevel::Province => "province",
            RegionLevel::City => "city",
            RegionLevel::County => "county",
            RegionLevel::Township => "township",
            RegionLevel::Village => "village",
        }
    }

    /// Parses the name used in config and CSV.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "province" => Some(RegionLevel::Province),
            "city" => Some(RegionLevel::City),
            "county" => Some(RegionLevel::County),
            "township" => Some(RegionLevel::Township),
            "village" => Some(RegionLevel::Village),
            _ => None,
        }
    }
}

impl RegionCode {
    /// Parses 12 ASCII digits whose province prefix is in 11..=82.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let bytes = text.as_bytes();
        if bytes.len() != 12 || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(IdError::RegionCode);
        }
        let value = bytes
            .iter()
            .fold(0u64, |acc, &b| acc * 10 + u64::from(b - b'0'));
        let province = value / 10_000_000_000;
        if !(11..=82).contains(&province) {
            return Err(IdError::RegionCode);
        }
        Ok(RegionCode(value))
    }

    /// The numeric value (for compact storage and hashing).
    pub fn value(self) -> u64 {
        self.0
    }

    /// Which level of the hierarchy the code names.
    pub fn level(self) -> RegionLevel {
        let v = self.0;
        if !v.is_multiple_of(1000) {
            RegionLevel::Village
        } else if !v.is_multiple_of(1_000_000) {
            RegionLevel::Township
        } else if !v.is_multiple_of(100_000_000) {
            RegionLevel::County
        } else if !v.is_multiple_of(10_000_000_000) {
            RegionLevel::City
        } else {
            RegionLevel::Province
        }
    }

    /// The enclosing township (first 9 digits + `000`).
    pub fn township(self) -> RegionCode {
        RegionCode(self.0 / 1000 * 1000)
    }

    /// The enclosing county (first 6 digits + `000000`).
    pub fn county(self) -> RegionCode {
        RegionCode(self.0 / 1_000_000 * 1_000_000)
    }

    /// The code truncated to `level` (the ancestor at that level).
    pub fn ancestor(self, level: RegionLevel) -> RegionCode {
        let unit = match level {
            RegionLevel::Village => 1,
            RegionLevel::Township => 1000,
            RegionLevel::County => 1_000_000,
            RegionLevel::City => 100_000_000,
            RegionLevel::Province => 10_000_000_000,
        };
        RegionCode(self.0 / unit * unit)
    }

    /// Whether `self` lies within `other` (or is it).
    pub fn is_within(self, other: RegionCode) -> bool {
        self.ancestor(other.level()) == other
    }
}

impl fmt::Display for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:012}", self.0)
    }
}

impl fmt::Debug for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegionCode({:012})", self.0)
    }
}

impl Serialize for RegionCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RegionCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        RegionCode::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Whether `text` is 1..=max of `[A-Za-z0-9]` then `[A-Za-z0-9{extra}]`.
fn is_token(text: &str, max: usize, extra: &[u8]) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= max
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(b))
}

/// A household number in the registry (户编号).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct HouseholdId(std::sync::Arc<str>);

impl HouseholdId {
    /// Parses `[A-Za-z0-9][A-Za-z0-9_-]{0,63}`.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        if is_token(text, 64, b"_-") {
            Ok(HouseholdId(std::sync::Arc::from(text)))
        } else {
            Err(IdError::HouseholdId)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for HouseholdId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HouseholdId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for HouseholdId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HouseholdId({})", self.0)
    }
}

impl<'de> Deserialize<'de> for HouseholdId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        HouseholdId::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A department's event id: the dedupe key. Shared (`Arc`), since one id is cited
/// by the event, the household windows and the alerts.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EventId(std::sync::Arc<str>);

impl EventId {
    /// Parses `[A-Za-z0-9][A-Za-z0-9._:-]{0,127}`.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        if is_token(text, 128, b"._:-") {
            Ok(EventId(std::sync::Arc::from(text)))
        } else {
            Err(IdError::EventId)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared text itself, for binding without a copy.
    pub fn shared(&self) -> std::sync::Arc<str> {
        self.0.clone()
    }

    /// The 128-bit digest the dedupe set holds for this id from `source`: an event
    /// is the same event only from the same department (two departments may number
    /// their records alike).
    ///
    /// xxh3 is not a cryptographic hash, but event ids come from departments, not
    /// from adversaries, and a 128-bit collision among billions of ids is out of reach.
    pub fn digest(&self, source: &str) -> u128 {
        dedupe_digest(source, &self.0)
    }
}

/// The dedupe digest of (`source`, `event_id`) (see [`EventId::digest`]). The NUL
/// between them cannot occur in either, so no two pairs share the bytes hashed.
pub fn dedupe_digest(source: &str, event_id: &str) -> u128 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(source.as_bytes());
    hasher.update(b"\0");
    hasher.update(event_id.as_bytes());
    hasher.digest128()
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({})", self.0)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        EventId::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A deterministic 128-bit id, hex-encoded (alerts, tasks, dead letters): the first
/// 16 bytes of SHA-256 over the parts, each length-prefixed so that part boundaries
/// cannot be shifted to collide.
pub fn stable_id(domain: &str, parts: &[&[u8]]) -> String {
    use sha2::Digest;
    let mut hasher = Sha256::new();
    hasher.update((domain.len() as u64).to_le_bytes());
    hasher.update(domain.as_bytes());
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex::encode(&hasher.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a valid ID from 17 digits by appending the check character.
    fn with_check(first17: &str) -> String {
        let check = check_character(first17.as_bytes()) as char;
        format!("{first17}{check}")
    }

    #[test]
    fn accepts_a_valid_id_and_masks_it() {
        // 11010519491231002X is the worked example of GB 11643.
        let id = ResidentId::parse("11010519491231002X").unwrap();
        assert_eq!(id.masked(), "110105********002X");
        assert_eq!(format!("{id:?}"), "ResidentId(110105********002X)");
        assert_eq!(format!("{id}"), "110105********002X");
    }

    #[test]
    fn lowercase_x_is_normalised() {
        let upper = ResidentId::parse("11010519491231002X").unwrap();
        let lower = ResidentId::parse("11010519491231002x").unwrap();
        assert_eq!(upper, lower);
    }

    #[test]
    fn rejects_a_wrong_check_digit() {
        assert_eq!(
            ResidentId::parse("110105194912310021"),
            Err(IdError::ResidentIdCheckDigit)
        );
    }

    #[test]
    fn every_wrong_check_character_is_caught() {
        let valid = with_check("52242519850612301");
        for candidate in b"0123456789X" {
            let mut text = valid.clone().into_bytes();
            text[17] = *candidate;
            let text = String::from_utf8(text).unwrap();
            assert_eq!(ResidentId::parse(&text).is_ok(), text == valid, "{text}");
        }
    }

    #[test]
    fn rejects_bad_shapes_and_dates() {
        assert_eq!(
            ResidentId::parse("1101051949123100"),
            Err(IdError::ResidentIdFormat)
        );
        assert_eq!(
            ResidentId::parse("11010519491231002Y"),
            Err(IdError::ResidentIdFormat)
        );
        assert_eq!(
            ResidentId::parse("1101051949123100２X"),
            Err(IdError::ResidentIdFormat)
        );
        let feb30 = with_check("52242519850230301");
        assert_eq!(ResidentId::parse(&feb30), Err(IdError::ResidentIdBirthDate));
    }

    #[test]
    fn pseudonyms_depend_on_the_key() {
        let id = ResidentId::parse("11010519491231002X").unwrap();
        let fingerprint = Pseudonymiser::new(b"key-a").fingerprint();
        assert_eq!(fingerprint.len(), 64);
        assert_eq!(fingerprint, Pseudonymiser::new(b"key-a").fingerprint());
        assert_ne!(fingerprint, Pseudonymiser::new(b"key-b").fingerprint());
        assert!(!fingerprint.contains(&hex::encode(b"key-a")));
        let a = Pseudonymiser::new(b"key-a").key(&id);
        let b = Pseudonymiser::new(b"key-b").key(&id);
        assert_ne!(a, b);
        assert_eq!(a, Pseudonymiser::new(b"key-a").key(&id));
        // RFC 4231-style check that this really is HMAC-SHA256 over the 18 ASCII bytes.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"key-a").unwrap();
        mac.update(b"11010519491231002X");
        assert_eq!(a.0.as_slice(), mac.finalize().into_bytes().as_slice());
    }

    #[test]
    fn region_levels_and_ancestors() {
        let village = RegionCode::parse("522425101201").unwrap();
        assert_eq!(village.level(), RegionLevel::Village);
        assert_eq!(village.township().to_string(), "522425101000");
        assert_eq!(village.county().to_string(), "522425000000");
        assert_eq!(village.township().level(), RegionLevel::Township);
        assert_eq!(village.county().level(), RegionLevel::County);
        assert!(village.is_within(village.county()));
        assert!(!village.county().is_within(village));
        assert_eq!(
            RegionCode::parse("520000000000").unwrap().level(),
            RegionLevel::Province
        );
    }

    #[test]
    fn region_codes_are_twelve_digits_with_a_province() {
        assert!(RegionCode::parse("52242510120").is_err());
        assert!(RegionCode::parse("5224251012011").is_err());
        assert!(RegionCode::parse("99242510120a").is_err());
        assert!(RegionCode::parse("992425101201").is_err());
        assert!(RegionCode::parse("002425101201").is_err());
    }

    #[test]
    fn tokens() {
        assert!(HouseholdId::parse("522425101201-0001").is_ok());
        assert!(HouseholdId::parse("-x").is_err());
        assert!(HouseholdId::parse(&"a".repeat(65)).is_err());
        assert!(EventId::parse("MZ:2024.01-7").is_ok());
        assert!(EventId::parse("").is_err());
        assert!(EventId::parse("a b").is_err());
    }

    #[test]
    fn stable_ids_separate_parts() {
        assert_ne!(
            stable_id("alert", &[b"ab", b"c"]),
            stable_id("alert", &[b"a", b"bc"])
        );
        assert_eq!(stable_id("alert", &[b"x"]).len(), 32);
    }
}
