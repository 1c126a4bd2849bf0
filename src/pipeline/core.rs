//! The pure pipeline core: a batch of raw records -> everything the store must
//! commit for it (accepted events, dead letters, alert and task snapshots, regional
//! counts and signals, counts). decode+validate -> dedupe by event id -> resolve ->
//! household rules, and the regional stage beside them. No I/O and no
//! clock of its own: `now` comes in, so tests and benchmarks are deterministic.
//! It cannot fail: every bad record becomes a dead letter.
//!
//! A batch goes through in phases, because its cost is mostly cache misses: a few
//! thousand records at a time (so each step finds the previous one's results in
//! cache), decode every record; then the seen-set inserts, the pseudonyms and the
//! person look-ups back to back (their misses overlap); then each new event in
//! arrival order (stored event, regional counts, risk fact). Last, over the whole
//! batch, the household work — household id and village, rules — household by
//! household, in registry order. The results are those of taking the records one
//! by one (`core_tests`).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use chrono::{DateTime, Utc};

use crate::config::Settings;
use crate::domain::alert::HouseholdAlert;
use crate::domain::dead_letter::{DeadLetter, Rejection, Salvage, Stage};
use crate::domain::event::{Event, Subject};
use crate::domain::ids::{HouseholdId, PersonKey, Pseudonymiser};
use crate::domain::record::{Origin, RawRecord};
use crate::domain::registry::{HouseholdIdx, PersonEntry, Registry};
use crate::domain::task::{LoggedChange, ScreeningTask};

use super::decode::Decoder;
use super::detect::RegionalStage;
use super::resolve::{Target, person_lookup, resolve_with};
use super::rules::HouseholdRules;
use super::rules::facts::{Fact, PersonFacts, RiskEvent};
use crate::batch::{
    BatchOutput, ClosedAlert, LaneMark, LaneProgress, Match, RestoredEvent, StoredEvent,
};

/// A hasher for keys that are already uniformly distributed digests.
#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
    fn write_u128(&mut self, value: u128) {
        self.0 = (value as u64) ^ ((value >> 64) as u64);
    }
}

/// The event-id digests seen, each with the day of its event's time: duplicates are
/// found among the events within the dedupe horizon (`input.dedupe_horizon_days`), and
/// the digests of older events are dropped as event time moves on, so the set holds
/// the horizon's events, not every event ever seen.
#[derive(Default)]
pub struct SeenSet {
    digests: HashMap<[u64; 2], i32, BuildHasherDefault<DigestHasher>>,
    /// Digests of events before this day (days since 1970-01-01, UTC) are dropped.
    floor: Option<i32>,
}

/// The day of an event time, for the seen set.
fn epoch_day(at: DateTime<Utc>) -> i32 {
    at.timestamp().div_euclid(86_400) as i32
}

impl SeenSet {
    /// Records `digest` of an event on `day`; false when it was seen before.
    pub fn insert(&mut self, digest: u128, day: i32) -> bool {
        let key = [digest as u64, (digest >> 64) as u64];
        match self.digests.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(day);
                true
            }
        }
    }

    /// Digests held.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// True when no digest is held.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Drops the digests of events before `day`, once the floor has moved `step` days
    /// since the last time (a pass over the whole set each time).
    fn drop_before(&mut self, day: i32, step: i32) {
        if self.floor.is_some_and(|floor| day < floor + step) {
            return;
        }
        if self.floor.is_some() {
            self.digests.retain(|_, seen| *seen >= day);
        }
        self.floor = Some(day);
    }
}

/// Records taken through decoding and the look-ups at a time: few enough that the
/// decoded events are still in cache when they are accepted, enough that the
/// look-ups' cache misses overlap.
const FRONT_CHUNK: usize = 2048;

/// The core, with the state it carries between batches.
pub struct Core {
    decoder: Decoder,
    pseudonymiser: Pseudonymiser,
    registry: Registry,
    rules: HouseholdRules,
    rule_settings: crate::config::RuleSettings,
    seen: SeenSet,
    regional: RegionalStage,
    /// Whether the regional stage runs here (else the regional leader counts the
    /// committed events; see `detect.placement`).
    regional_inline: bool,
    /// The batch's household work, done at the end of the batch. This and the
    /// buffers below keep their capacity between batches, so a batch does not
    /// take fresh memory for its working lists.
    pending: Vec<Pending>,
    /// The risk facts `pending` points into, with their event's report time (a task
    /// one opens counts its days from it) and the latest event time accepted before
    /// their record (the household's alert expires first if it was due by then).
    risks: Vec<Option<PendingRisk>>,
    /// Room for sorting `pending`.
    sorting: Vec<Pending>,
    /// The batch's decoded events, with the index of their record.
    decoded: Vec<(Event, u32)>,
    /// The look-ups of each decoded event.
    lookups: Vec<Lookup>,
    /// Whether each input of the run holds the regional watermark, as its source last
    /// said (declared inputs hold it until then; an input never declared does not).
    lanes: std::collections::BTreeMap<String, bool>,
    /// Inputs whose holding changed since the last batch.
    marked: Vec<String>,
    /// The registry change log up to here is applied.
    registry_cursor: i64,
    /// The latest event time accepted (restored from the store): a decision applied
    /// from the change log closes its alert at this point of event time, so that
    /// the cool-down compares event times.
    event_clock: Option<DateTime<Utc>>,
    /// Alerts the change log closed since the last batch, with their event time.
    closures: Vec<(String, DateTime<Utc>)>,
    /// `input.dedupe_horizon_days`.
    dedupe_horizon_days: i64,
}

/// Household work of an accepted event, done household by household at the end
/// of its batch. Small, so sorting the batch's work by household moves little.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    household: HouseholdIdx,
    /// The accepted event (index into the batch's events) whose household id and
    /// village come from the household's record.
    stored: Option<u32>,
    /// Its risk fact for the household's window (index into `Core::risks`).
    risk: Option<u32>,
}

/// A risk fact waiting for its household's turn at the end of the batch.
struct PendingRisk {
    risk: RiskEvent,
    reported_at: DateTime<Utc>,
    clock_before: Option<DateTime<Utc>>,
}

/// What the look-ups found for one decoded event.
struct Lookup {
    /// Its id was not seen before.
    fresh: bool,
    /// Its person subject's pseudonym, and the registry's entry for it.
    person: Option<(PersonKey, Option<PersonEntry>)>,
}

impl Core {
    /// A core over `registry` with empty state.
    pub fn new(settings: &Settings, pseudonymiser: Pseudonymiser, registry: Registry) -> Self {
        Core {
            decoder: Decoder::new(&settings.validation),
            pseudonymiser,
            registry,
            rules: HouseholdRules::new(settings.rules.clone(), settings.policy.clone())
                .with_budgets(settings.procedure.budgets()),
            rule_settings: settings.rules.clone(),
            seen: SeenSet::default(),
            regional: RegionalStage::new(&settings.detect),
            regional_inline: true,
            pending: Vec::new(),
            risks: Vec::new(),
            sorting: Vec::new(),
            decoded: Vec::new(),
            lookups: Vec::new(),
            lanes: Default::default(),
            marked: Vec::new(),
            registry_cursor: 0,
            event_clock: None,
            closures: Vec::new(),
            dedupe_horizon_days: settings.input.dedupe_horizon_days,
        }
    }

    /// Declares the inputs of this run (its files, or the partitions assigned): each
    /// holds the regional watermark until its source says it no longer does; inputs of
    /// earlier runs no longer hold it.
    pub fn declare_lanes(&mut self, lanes: &[String]) {
        self.lanes = lanes.iter().map(|lane| (lane.clone(), true)).collect();
        self.marked = lanes.to_vec();
        if self.regional_inline {
            self.regional
                .declare_lanes(lanes.iter().map(String::as_str));
        }
    }

    /// Takes what the source says of its inputs with the next batch.
    pub fn mark_lanes(&mut self, marks: &[LaneMark]) {
        for mark in marks {
            let holding = self.lanes.entry(mark.lane.clone()).or_insert(!mark.holding);
            if *holding != mark.holding {
                *holding = mark.holding;
                if !self.marked.contains(&mark.lane) {
                    self.marked.push(mark.lane.clone());
                }
            }
        }
    }

    /// The batch's progress of each input it touched: the latest event time of its
    /// accepted events, and whether it still holds the watermark.
    fn lane_progress(&mut self, events: &[StoredEvent]) -> Vec<LaneProgress> {
        let mut lanes: Vec<LaneProgress> = Vec::new();
        let mut current: Option<(usize, &crate::domain::record::Origin)> = None;
        for event in events {
            let at = match current {
                Some((at, origin)) if origin.same_input(&event.origin) => at,
                _ => {
                    let key = event.origin.input_key();
                    let at = match lanes.iter().position(|lane| lane.lane == key) {
                        Some(at) => at,
                        None => {
                            lanes.push(LaneProgress {
                                holding: self.lanes.get(&key).copied().unwrap_or(false),
                                lane: key,
                                max_event_time: None,
                            });
                            lanes.len() - 1
                        }
                    };
                    current = Some((at, &event.origin));
                    at
                }
            };
            let lane = &mut lanes[at];
            lane.max_event_time = lane.max_event_time.max(Some(event.occurred_at));
        }
        for key in std::mem::take(&mut self.marked) {
            if !lanes.iter().any(|lane| lane.lane == key) {
                lanes.push(LaneProgress {
                    holding: self.lanes.get(&key).copied().unwrap_or(false),
                    lane: key,
                    max_event_time: None,
                });
            }
        }
        lanes
    }

    /// The same core without its regional stage: another process (the regional
    /// leader) counts the events this one commits.
    pub fn without_regional_stage(mut self) -> Self {
        self.regional_inline = false;
        self
    }

    /// Whether the regional stage runs inside this core.
    pub fn regional_inline(&self) -> bool {
        self.regional_inline
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The household rules (tests and the API read alerts here).
    pub fn rules(&self) -> &HouseholdRules {
        &self.rules
    }

    /// The regional stage (restored at start-up, read by tests).
    pub fn regional(&self) -> &RegionalStage {
        &self.regional
    }

    /// The regional stage and the registry, to restore the stage's state.
    pub fn regional_restore(&mut self) -> (&mut RegionalStage, &Registry) {
        (&mut self.regional, &self.registry)
    }

    /// The input is finite and has ended: the next batch (even an empty one) judges
    /// every day up to the latest event's.
    pub fn end_of_input(&mut self) {
        self.regional.end_of_input();
    }

    /// Marks event ids as seen (state rebuilt from the store): each digest with its
    /// event's time.
    pub fn restore_seen(&mut self, digests: impl IntoIterator<Item = (u128, DateTime<Utc>)>) {
        for (digest, at) in digests {
            self.seen.insert(digest, epoch_day(at));
        }
    }

    /// The earliest event time still deduplicated (and accepted): the latest event
    /// time accepted minus `input.dedupe_horizon_days`.
    pub fn dedupe_horizon(&self) -> Option<DateTime<Utc>> {
        self.event_clock
            .map(|clock| clock - chrono::Duration::days(self.dedupe_horizon_days))
    }

    /// Number of event ids seen.
    pub fn seen_count(&self) -> usize {
        self.seen.len()
    }

    /// Re-adds a stored household event to its household's window (state rebuilt
    /// from the store), deriving its fact exactly as when it was first judged.
    pub fn restore_event(&mut self, stored: &RestoredEvent) {
        let Some(payload) = stored.payload.as_ref() else {
            return;
        };
        let person = stored.person_key.and_then(|key| self.registry.person(&key));
        for household in &stored.households {
            let Some(idx) = self.registry.household_idx(household) else {
                continue;
            };
            let facts = person_facts(&self.registry, idx, person);
            if let Some(fact) = Fact::derive(payload, facts, &self.rule_settings) {
                self.rules.restore_event(
                    idx,
                    RiskEvent {
                        event_id: stored.event_id.clone(),
                        occurred_at: stored.occurred_at,
                        fact,
                    },
                );
            }
        }
    }

    /// Restores an open alert with its task and episode number.
    pub fn restore_open_alert(
        &mut self,
        alert: HouseholdAlert,
        task: Option<ScreeningTask>,
        episode: u32,
    ) {
        if let Some(idx) = self.registry.household_idx(&alert.household_id) {
            self.rules.restore_open_alert(idx, alert, task, episode);
        }
    }

    /// Restores how many alerts a household has ever had (the next one's episode).
    pub fn restore_episodes(&mut self, household: &HouseholdId, episodes: u32) {
        if let Some(idx) = self.registry.household_idx(household) {
            self.rules.restore_episodes(idx, episodes);
        }
    }

    /// Restores a closed alert (cool-down and handled evidence).
    pub fn restore_closed_alert(
        &mut self,
        household: &HouseholdId,
        closed: ClosedAlert,
        episode: u32,
    ) {
        if let Some(idx) = self.registry.household_idx(household) {
            self.rules.restore_closed_alert(idx, closed, episode);
        }
    }

    /// Closes a household's open alert (its task was resolved).
    pub fn close_alert(
        &mut self,
        household: &HouseholdId,
        now: DateTime<Utc>,
    ) -> Option<HouseholdAlert> {
        let idx = self.registry.household_idx(household)?;
        let at = self.event_clock.unwrap_or(now);
        self.rules.close_alert(idx, now, at)
    }

    /// Restores the latest event time accepted (the store's).
    pub fn restore_event_clock(&mut self, latest: Option<DateTime<Utc>>) {
        self.event_clock = self.event_clock.max(latest);
    }

    /// How far the registry change log is applied (restored from the position the
    /// store committed with the last batch).
    pub fn registry_cursor(&self) -> i64 {
        self.registry_cursor
    }

    /// Sets how far the registry change log is applied (state rebuilt from the store,
    /// whose registry already holds every committed change).
    pub fn set_registry_cursor(&mut self, cursor: i64) {
        self.registry_cursor = cursor;
    }

    /// Applies decided registry changes (the change log, in order) before the next
    /// batch: the household's status, category and dates change in the registry the
    /// rules judge with, and the alert the decision closed is closed here too, so
    /// the household's next event opens a new alert with the action its new status
    /// calls for. Changes at or before the cursor are skipped; each change holds the
    /// household's values after it, so applying one again changes nothing. Returns
    /// how many were applied.
    pub fn apply_registry_changes(
        &mut self,
        changes: &[LoggedChange],
        now: DateTime<Utc>,
    ) -> usize {
        let mut applied = 0;
        for logged in changes {
            if logged.id <= self.registry_cursor {
                continue;
            }
            self.registry_cursor = logged.id;
            let Some(idx) = logged
                .household_id
                .as_ref()
                .and_then(|id| self.registry.household_idx(id))
            else {
                continue;
            };
            if let Some(change) = &logged.change {
                self.registry.set_status(
                    idx,
                    change.status,
                    change.monitoring_type,
                    change.identified_on,
                    change.risk_eliminated_on,
                );
            }
            let closes_open = logged.alert_id.as_ref().is_some_and(|closed| {
                self.rules
                    .open_alert(idx)
                    .is_some_and(|open| &open.alert_id == closed)
            });
            if closes_open {
                let at = self.event_clock.unwrap_or(now);
                if let Some(closed) = self.rules.close_alert(idx, now, at) {
                    self.closures.push((closed.alert_id, at));
                }
            }
            applied += 1;
        }
        applied
    }

    /// Processes one batch.
    pub fn process(&mut self, records: &[RawRecord], now: DateTime<Utc>) -> BatchOutput {
        let mut output = BatchOutput {
            events: Vec::with_capacity(records.len()),
            ..BatchOutput::default()
        };
        output.counts.records = records.len() as u64;
        // A few thousand records at a time through decoding and the look-ups, so
        // what one step leaves for the next is still in the processor's cache.
        for chunk in records.chunks(FRONT_CHUNK) {
            self.front(chunk, now, &mut output);
        }
        // Household by household, each household's events in arrival order: the
        // rules keep no state across households, so this gives exactly the results
        // of applying them as they came, with each household's record, window and
        // alert fetched into cache once per batch instead of once per event, in
        // registry order.
        sort_by_household(&mut self.pending, &mut self.sorting);
        for pending in self.pending.drain(..) {
            if let Some(at) = pending.stored {
                let household = self.registry.household(pending.household);
                let stored = &mut output.events[at as usize];
                stored.household_id = Some(household.household_id.clone());
                stored.region_code = Some(household.region_code);
            }
            if let Some(PendingRisk {
                risk,
                reported_at,
                clock_before,
            }) = pending.risk.and_then(|at| self.risks[at as usize].take())
            {
                // What taking the records one by one gives: the household's alert
                // expired first if the stream had marked it so by the record before.
                if let Some(clock) = clock_before {
                    self.rules.expire_if_marked(pending.household, clock, now);
                }
                self.rules
                    .apply(&self.registry, pending.household, risk, reported_at, now);
            }
        }
        self.risks.clear();
        if let Some(clock) = self.event_clock {
            self.rules.advance(clock, now);
        }
        if let Some(horizon) = self.dedupe_horizon() {
            let step = (self.dedupe_horizon_days / 16).max(1) as i32;
            self.seen.drop_before(epoch_day(horizon), step);
        }
        let changes = self.rules.drain();
        output.closures = std::mem::take(&mut self.closures);
        // Expired snapshots first: a household's new open alert in the same batch
        // must not meet its old one still open in the store.
        output.alerts = Vec::with_capacity(changes.expired.len() + changes.alerts.len());
        for (alert, at) in changes.expired {
            output.closures.push((alert.alert_id.clone(), at));
            output.alerts.push(alert);
        }
        output.alerts.extend(changes.alerts);
        output.tasks = changes.tasks;
        output.lanes = self.lane_progress(&output.events);
        if self.regional_inline {
            self.regional.update_lanes(&output.lanes);
            output.regional = self.regional.flush(&self.registry, now);
        }
        output.counts.suppressed = changes.suppressed;
        output.counts.dead_letters = output.dead_letters.len() as u64;
        output
    }

    /// Decodes `records` (a chunk of the batch), looks up their ids and persons,
    /// and accepts the new ones.
    fn front(&mut self, records: &[RawRecord], now: DateTime<Utc>, output: &mut BatchOutput) {
        let mut decoded = std::mem::take(&mut self.decoded);
        for (index, record) in records.iter().enumerate() {
            if let Some(full) = record.original_len {
                let rejection = Rejection::new(
                    Stage::Read,
                    "line.too_long",
                    format!(
                        "record is {full} bytes, longer than input.max_line_bytes; its first {} bytes are kept",
                        record.bytes.len()
                    ),
                );
                output.dead_letters.push(DeadLetter::new(
                    record,
                    rejection,
                    Salvage::default(),
                    now,
                ));
                continue;
            }
            match self.decoder.decode(&record.bytes, now) {
                Ok(event) => decoded.push((event, index as u32)),
                Err(refusal) => {
                    let super::decode::Refusal { rejection, salvage } = *refusal;
                    output
                        .dead_letters
                        .push(DeadLetter::new(record, rejection, salvage, now));
                }
            }
        }
        // The look-ups that miss the cache (the seen set, the person index) run
        // back to back for the whole chunk, so the processor overlaps their misses
        // instead of waiting for each between two decodes.
        let mut lookups = std::mem::take(&mut self.lookups);
        // An event older than the dedupe horizon could be a duplicate of one whose
        // digest is gone: it is refused as too late, as event time allows.
        let horizon = self.dedupe_horizon();
        decoded.retain(|(event, index)| {
            let Some(horizon) = horizon.filter(|&h| event.occurred_at < h) else {
                return true;
            };
            let rejection = Rejection::new(
                Stage::Semantic,
                "time.beyond_dedupe_horizon",
                format!(
                    "occurred_at is more than input.dedupe_horizon_days ({}) before the latest event time accepted; events before {} can no longer be told from duplicates (raise input.dedupe_horizon_days to accept them)",
                    self.dedupe_horizon_days,
                    horizon.to_rfc3339()
                ),
            );
            let salvage = Salvage {
                event_id: Some(event.event_id.as_str().to_string()),
                source: Some(event.source.as_str().to_string()),
                kind: Some(event.kind().as_str().to_string()),
            };
            output.dead_letters.push(DeadLetter::new(
                &records[*index as usize],
                rejection,
                salvage,
                now,
            ));
            false
        });
        lookups.extend(decoded.iter().map(|(event, _)| Lookup {
            fresh: self.seen.insert(
                event.event_id.digest(event.source.as_str()),
                epoch_day(event.occurred_at),
            ),
            person: None,
        }));
        for ((event, _), lookup) in decoded.iter().zip(lookups.iter_mut()) {
            if let Subject::Person(id) = &event.subject
                && lookup.fresh
            {
                lookup.person = Some((self.pseudonymiser.key(id), None));
            }
        }
        for lookup in &mut lookups {
            if let Some((key, entry)) = &mut lookup.person {
                *entry = self.registry.person(key);
            }
        }
        for ((event, index), lookup) in decoded.drain(..).zip(lookups.drain(..)) {
            if !lookup.fresh {
                output.counts.duplicates += 1;
                continue;
            }
            let origin = &records[index as usize].origin;
            self.accept(event, origin, lookup.person, output);
        }
        self.decoded = decoded;
        self.lookups = lookups;
    }

    /// Takes a new event; `person` is its person subject's pseudonym and entry.
    fn accept(
        &mut self,
        event: Event,
        origin: &Origin,
        person: Option<(PersonKey, Option<PersonEntry>)>,
        output: &mut BatchOutput,
    ) {
        output.counts.accepted += 1;
        let clock_before = self.event_clock;
        self.event_clock = self.event_clock.max(Some(event.occurred_at));
        let resolved = resolve_with(&event, &self.registry, |id| {
            person.unwrap_or_else(|| person_lookup(id, &self.registry, &self.pseudonymiser))
        });
        // A single household's id and village are filled in with its other
        // household work at the end of the batch.
        let at = output.events.len() as u32;
        let (matched, region_code, households, stored) = match &resolved.target {
            Target::Household(idx) => (Match::Matched, None, std::slice::from_ref(idx), Some(at)),
            Target::Households(list, _) => (
                Match::Matched,
                match &event.subject {
                    Subject::Region(code) => Some(*code),
                    _ => None,
                },
                list.as_slice(),
                None,
            ),
            Target::Regional(code) => (Match::Regional, Some(*code), &[][..], None),
            Target::Unmatched => (Match::Unmatched, None, &[][..], None),
        };
        if matched == Match::Unmatched {
            output.counts.unmatched += 1;
        }
        if matched != Match::Unmatched && self.regional_inline {
            self.regional.observe(&event, households, &self.registry);
        }
        for &idx in households {
            let facts = person_facts(&self.registry, idx, resolved.person);
            let risk =
                Fact::derive(&event.payload, facts, &self.rule_settings).map(|fact| RiskEvent {
                    event_id: event.event_id.clone(),
                    occurred_at: event.occurred_at,
                    fact,
                });
            if stored.is_some() || risk.is_some() {
                let risk = risk.map(|risk| {
                    self.risks.push(Some(PendingRisk {
                        risk,
                        reported_at: event.reported_at,
                        clock_before,
                    }));
                    self.risks.len() as u32 - 1
                });
                self.pending.push(Pending {
                    household: idx,
                    stored,
                    risk,
                });
            }
        }
        output.events.push(StoredEvent {
            kind: event.kind(),
            event_id: event.event_id,
            source: event.source,
            occurred_at: event.occurred_at,
            reported_at: event.reported_at,
            person_key: resolved.person_key,
            person_masked: resolved.person_masked,
            household_id: None,
            region_code,
            matched,
            payload_json: event.payload_json,
            origin: origin.clone(),
        });
    }
}

/// Sorts `pending` by household, keeping the order of each household's work (a
/// stable radix sort, a byte of the household index per pass: linear in the
/// batch, where a comparison sort took about 5 % of the core). `room` is scratch.
fn sort_by_household(pending: &mut Vec<Pending>, room: &mut Vec<Pending>) {
    let highest = pending.iter().map(|p| p.household).max().unwrap_or(0);
    let mut shift = 0;
    while shift < HouseholdIdx::BITS && (highest >> shift) > 0 {
        let digit = |p: &Pending| ((p.household >> shift) & 0xff) as usize;
        let mut starts = [0usize; 256];
        for p in pending.iter() {
            starts[digit(p)] += 1;
        }
        let mut next = 0;
        for start in &mut starts {
            let count = *start;
            *start = next;
            next += count;
        }
        room.clear();
        room.resize(pending.len(), pending[0]);
        for p in pending.iter() {
            let slot = &mut starts[digit(p)];
            room[*slot] = *p;
            *slot += 1;
        }
        std::mem::swap(pending, room);
        shift += 8;
    }
}

fn person_facts(
    registry: &Registry,
    household: HouseholdIdx,
    person: Option<crate::domain::registry::PersonEntry>,
) -> PersonFacts {
    PersonFacts {
        only_earner: person.is_some_and(|p| {
            p.household == household
                && p.labour_capable
                && registry.labour_capable_members(household) == 1
        }),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{Pending, sort_by_household};

    proptest! {
        /// The radix sort orders by household and keeps each household's work in
        /// arrival order: what a stable comparison sort gives.
        #[test]
        fn sort_by_household_is_a_stable_sort(
            households in prop::collection::vec(
                prop_oneof![0u32..4, 0u32..300, 0u32..70_000, any::<u32>()],
                0..600,
            )
        ) {
            let mut pending: Vec<Pending> = households
                .iter()
                .enumerate()
                .map(|(i, &household)| Pending {
                    household,
                    stored: Some(i as u32),
                    risk: (i % 3 == 0).then_some(i as u32),
                })
                .collect();
            let mut expected = pending.clone();
            expected.sort_by_key(|p| p.household);
            sort_by_household(&mut pending, &mut Vec::new());
            prop_assert_eq!(pending, expected);
        }
    }
}
