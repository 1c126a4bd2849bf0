//! The batch contract: what the pure core hands the store for one batch (accepted
//! events, dead letters, alert and task snapshots, the regional stage's results,
//! counts) with the source positions that produced it, and what the store gives back
//! at start-up to rebuild the core's state. The core, the regional leader and the
//! store all import this module; it imports only `domain`, so no arrow runs back up.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::alert::{HouseholdAlert, Level, RiskType};
use crate::domain::dead_letter::DeadLetter;
use crate::domain::event::{Kind, Source};
use crate::domain::ids::{EventId, HouseholdId, MaskedId, PersonKey, RegionCode};
use crate::domain::record::Origin;
use crate::domain::signal::{RegionalSignal, RiskKind};
use crate::domain::task::ScreeningTask;

// What a batch produces.

/// How an accepted event attached to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// Joined to a registry household.
    Matched,
    /// Its person or household is not in the registry.
    Unmatched,
    /// A region-level event.
    Regional,
}

impl Match {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Match::Matched => "matched",
            Match::Unmatched => "unmatched",
            Match::Regional => "regional",
        }
    }

    /// Parses the stored name.
    pub fn parse(text: &str) -> Option<Match> {
        [Match::Matched, Match::Unmatched, Match::Regional]
            .into_iter()
            .find(|m| m.as_str() == text)
    }
}

/// An accepted event as the store keeps it: no clear resident ID.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Department id.
    pub event_id: EventId,
    /// Department.
    pub source: Source,
    /// Kind.
    pub kind: Kind,
    /// Event time.
    pub occurred_at: DateTime<Utc>,
    /// Report time.
    pub reported_at: DateTime<Utc>,
    /// Pseudonym of the person.
    pub person_key: Option<PersonKey>,
    /// Masked person ID.
    pub person_masked: Option<MaskedId>,
    /// Household, when matched to one.
    pub household_id: Option<HouseholdId>,
    /// The household's village, or the event's region.
    pub region_code: Option<RegionCode>,
    /// How it attached.
    pub matched: Match,
    /// The typed payload as JSON.
    pub payload_json: std::sync::Arc<str>,
    /// Where it came from.
    pub origin: Origin,
}

/// Per-batch counts (metrics and the report move once per batch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    /// Records handled.
    pub records: u64,
    /// Valid, new events.
    pub accepted: u64,
    /// Valid events whose id was seen before.
    pub duplicates: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Accepted events the registry could not place.
    pub unmatched: u64,
    /// Findings held back by a cool-down.
    pub suppressed: u64,
}

/// Everything one batch produced.
#[derive(Debug, Default)]
pub struct BatchOutput {
    /// Accepted events.
    pub events: Vec<StoredEvent>,
    /// Refused records.
    pub dead_letters: Vec<DeadLetter>,
    /// Alert snapshots created or changed.
    pub alerts: Vec<HouseholdAlert>,
    /// Task snapshots created or changed.
    pub tasks: Vec<ScreeningTask>,
    /// Alerts the registry change log closed (the store closed them already) and
    /// alerts that expired, with the event time of their end: the cool-down (after
    /// a closing) and the core's memory count from it.
    pub closures: Vec<(String, DateTime<Utc>)>,
    /// The regional stage's counts, clock, signals and campaign tasks.
    pub regional: RegionalOutput,
    /// Counts.
    pub counts: BatchCounts,
    /// The inputs whose event-time progress this batch changed.
    pub lanes: Vec<LaneProgress>,
}

/// One count row: the absolute number of distinct households of `region` with `kind`
/// on `day`. The store upserts it (primary key region, kind, day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountRow {
    /// Region (village, township or county).
    pub region_code: RegionCode,
    /// Risk kind.
    pub kind: RiskKind,
    /// CST day.
    pub day: NaiveDate,
    /// Distinct households.
    pub count: u32,
}

/// A series' detector state, as the regional stage serialises it (its refit periods
/// and in-control models): the store keeps the document whole, by (region, kind), and
/// gives it back at start-up; only the stage reads inside it.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesCheckpoint {
    /// Region.
    pub region_code: RegionCode,
    /// Kind.
    pub kind: RiskKind,
    /// The stage's JSON document.
    pub document: String,
}

/// The stage's clock: one row in the store, replaced when it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkState {
    /// Latest event time seen.
    pub max_event_time: Option<DateTime<Utc>>,
    /// The watermark (never goes backwards).
    pub watermark: Option<DateTime<Utc>>,
    /// Processing time the latest event time last moved (for the idle timeout).
    pub last_progress_at: Option<DateTime<Utc>>,
    /// First day of every series (frozen when the first day is judged).
    pub origin: Option<NaiveDate>,
    /// Last judged day.
    pub judged_through: Option<NaiveDate>,
    /// Each input's event-time progress, by input key: while any input holds the
    /// watermark, the watermark follows the least advanced of those that do (events
    /// from a lagging partition or a file not yet read are not late for it).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub lanes: std::collections::BTreeMap<String, LaneClock>,
}

/// One input's event-time progress in the stage's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneClock {
    /// Whether the input may still deliver events older than its latest one.
    pub holding: bool,
    /// Its latest event time.
    pub max_event_time: Option<DateTime<Utc>>,
}

/// Everything one the regional stage's flush produced: what the store must commit in the
/// same transaction as the batch.
#[derive(Debug, Default, PartialEq)]
pub struct RegionalOutput {
    /// Count rows created or changed (absolute values).
    pub counts: Vec<CountRow>,
    /// Series checkpoints created or changed.
    pub checkpoints: Vec<SeriesCheckpoint>,
    /// The clock, when it changed.
    pub watermark: Option<WatermarkState>,
    /// Signal snapshots raised, updated or cleared.
    pub signals: Vec<RegionalSignal>,
    /// Campaign screening tasks opened.
    pub tasks: Vec<ScreeningTask>,
    /// Events of this batch for days already judged.
    pub late_events: u64,
    /// Of them, those that changed a count (and re-judged its days).
    pub late_corrections: u64,
    /// Days newly closed and judged.
    pub days_judged: u64,
}

/// Where one input stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourcePosition {
    /// `file:/abs/path`, `stdin`, or `kafka:topic:partition`.
    pub source_key: String,
    /// Byte offset (files) or next offset (Kafka).
    pub position: u64,
    /// Lines read (files).
    pub line: u64,
    /// Digest of the file's first bytes, to notice a replaced file.
    pub fingerprint: Option<String>,
    /// The claim under which this instance reads the input (Kafka partitions: the
    /// epoch the store gave it when the partition was assigned). A commit whose claim
    /// another instance has since superseded is refused, so an evicted consumer can
    /// never overwrite the new owner's position. `None`: not fenced (files, stdin).
    pub claim: Option<i64>,
}

/// One input's event-time progress, as a source reports it with a batch: whether
/// the input still *holds* the regional watermark (it may yet deliver events older
/// than what it delivered so far: a file not read to its end, a partition behind its
/// high watermark) or no longer does (a file at its end, a partition caught up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneMark {
    /// The input's key (as in [`SourcePosition::source_key`]).
    pub lane: String,
    /// Whether it holds the watermark.
    pub holding: bool,
}

/// One input's event-time progress after a batch, as the store keeps it (the regional
/// leader reads every instance's lanes): whether it holds the watermark, and the latest
/// event time committed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneProgress {
    /// The input's key.
    pub lane: String,
    /// Whether it holds the watermark.
    pub holding: bool,
    /// The latest event time of its accepted events (`None`: none yet).
    pub max_event_time: Option<DateTime<Utc>>,
}

// What the store gives back at start-up.

/// The state the pipeline rebuilds at start-up.
#[derive(Debug, Default)]
pub struct StoredState {
    /// Dedupe digests of the accepted events since the dedupe horizon, with their
    /// event times.
    pub seen: Vec<(u128, DateTime<Utc>)>,
    /// Household events within reach of the rules' windows.
    pub events: Vec<RestoredEvent>,
    /// Household events before those, reported after the regional stage's hold
    /// began (`held_after`): committed, not yet counted.
    pub held: Vec<RestoredEvent>,
    /// Open alerts with their tasks and episode numbers.
    pub open_alerts: Vec<(HouseholdAlert, Option<ScreeningTask>, u32)>,
    /// Closed alerts still relevant to cool-downs.
    pub closed_alerts: Vec<(HouseholdId, ClosedAlert, u32)>,
    /// Every household that ever had an alert, with how many (its next episode).
    pub episodes: Vec<(HouseholdId, u32)>,
}

/// The regional stage's state as stored (the clock is read first, on its own).
#[derive(Debug, Default)]
pub struct StoredRegional {
    /// Count rows from the day the stage asked for.
    pub counts: Vec<CountRow>,
    /// Every series' detector state.
    pub checkpoints: Vec<SeriesCheckpoint>,
    /// The latest signal of every (region, kind).
    pub signals: Vec<RegionalSignal>,
    /// Every campaign task's village and due time.
    pub campaigns: Vec<(RegionCode, DateTime<Utc>)>,
}

/// A stored household event read back to rebuild state.
#[derive(Debug, Clone)]
pub struct RestoredEvent {
    /// Id.
    pub event_id: EventId,
    /// Event time.
    pub occurred_at: DateTime<Utc>,
    /// When the department reported it.
    pub reported_at: DateTime<Utc>,
    /// Pseudonym of the person, for person events.
    pub person_key: Option<PersonKey>,
    /// Households it concerns.
    pub households: Vec<HouseholdId>,
    /// The region, for region events.
    pub region_code: Option<RegionCode>,
    /// Typed payload (`None` if the stored JSON no longer parses).
    pub payload: Option<crate::domain::event::Payload>,
}

/// A closed or expired alert, as far as the cool-down and the handled evidence need it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedAlert {
    /// Its risk types.
    pub risk_types: Vec<RiskType>,
    /// Its level.
    pub level: Level,
    /// When it closed, in event time (the latest event time accepted when the
    /// decision reached the stream; for an expired alert, its latest evidence plus
    /// `rules.expiry_days`).
    pub closed_at: DateTime<Utc>,
    /// Its evidence: events already handled (by a visit, or by its expiry: they
    /// do not raise an alert again on their own).
    pub evidence: Vec<EventId>,
    /// It expired below the task level rather than closing with an outcome: no
    /// cool-down follows (no one verified the risk).
    pub expired: bool,
}
