//! Builds the application from settings: the store (connected and migrated), the
//! metrics, and the core with its state rebuilt from the store. The binary and the
//! tests both start here, so what the tests run is what users run.

use chrono::{Duration, Utc};

use crate::config::{ConfigError, Settings};
use crate::domain::ids::Pseudonymiser;
use crate::domain::registry::Registry;
use crate::pipeline::core::Core;
use crate::pipeline::detect::stage::RegionalStage;
use crate::store::{OutboxTopics, Store, StoreError};
use crate::telemetry::Metrics;

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store was made with another pseudonymisation key: its pseudonyms would
    /// match no event's person.
    #[error(
        "the store was made with another pseudonymisation key (fingerprint {stored}…; the key \
         set now has {configured}…), so no event would match its registry: set \
         YUJING__PRIVACY__PSEUDONYMISATION_KEY (privacy.pseudonymisation_key) to the key the \
         store was made with, or give another store (--store) for this key"
    )]
    OtherKey {
        /// The start of the stored key's fingerprint.
        stored: String,
        /// The start of the configured key's fingerprint.
        configured: String,
    },
}

/// The setting under which a store keeps its key's fingerprint.
const KEY_FINGERPRINT: &str = "key_fingerprint";

/// Refuses a key other than the one `store` was made with; a store without one
/// takes this key's fingerprint (its first use).
pub async fn check_key(store: &Store, pseudonymiser: &Pseudonymiser) -> Result<(), AppError> {
    let configured = pseudonymiser.fingerprint();
    let stored = store.claim_setting(KEY_FINGERPRINT, &configured).await?;
    if stored != configured {
        // Twelve hex digits tell keys apart in a message; the rest adds nothing.
        return Err(AppError::OtherKey {
            stored: stored.chars().take(12).collect(),
            configured: configured.chars().take(12).collect(),
        });
    }
    Ok(())
}

/// The running application's shared parts.
#[derive(Debug, Clone)]
pub struct App {
    /// Settings.
    pub settings: Settings,
    /// The store.
    pub store: Store,
    /// Metrics.
    pub metrics: Metrics,
}

impl App {
    /// Connects the store named by the settings.
    pub async fn build(settings: Settings) -> Result<App, AppError> {
        let mut store = Store::connect(settings.store.url.expose(), &settings.store).await?;
        let kafka = &settings.kafka;
        if kafka.enabled() && kafka.publish_outputs {
            let topics = &kafka.output_topics;
            store = store.with_outbox(OutboxTopics {
                household_alerts: topics.household_alerts.clone(),
                screening_tasks: topics.screening_tasks.clone(),
                regional_signals: topics.regional_signals.clone(),
                dead_letters: topics.dead_letters.clone(),
                dead_letter_raw_bytes: kafka.dead_letter_publish_bytes,
            });
        }
        Ok(App {
            settings,
            store,
            metrics: Metrics::new(),
        })
    }

    /// The pseudonymiser for the configured key: an error when none is set, or when
    /// the store was made with another key ([`check_key`]).
    pub async fn pseudonymiser(&self) -> Result<Pseudonymiser, AppError> {
        let pseudonymiser = Pseudonymiser::new(self.settings.require_pseudonymisation_key()?);
        check_key(&self.store, &pseudonymiser).await?;
        Ok(pseudonymiser)
    }

    /// Loads the registry and the pipeline state and builds the core.
    pub async fn load_core(&self) -> Result<Core, AppError> {
        self.load_core_with(true).await
    }

    /// The registry as stored, with its members.
    pub async fn load_registry(&self) -> Result<Registry, AppError> {
        let stored = self.store.load_households_and_regions().await?;
        let mut registry = Registry::with_households(stored.households, stored.regions);
        let mut orphans = 0usize;
        self.store
            .for_each_member(&mut |key, household, labour_capable| {
                orphans += usize::from(!registry.add_member(key, household, labour_capable));
                Ok(())
            })
            .await?;
        if orphans > 0 {
            tracing::warn!(
                orphans,
                "registry members whose household is not in the registry were skipped"
            );
        }
        self.metrics.registry_loaded(registry.household_count());
        Ok(registry)
    }

    /// Loads the registry and the pipeline state and builds the core; without
    /// `regional_inline`, the core has no regional stage (the regional leader counts
    /// the committed events instead).
    pub async fn load_core_with(&self, regional_inline: bool) -> Result<Core, AppError> {
        let pseudonymiser = self.pseudonymiser().await?;
        let registry = self.load_registry().await?;
        let mut core = Core::new(&self.settings, pseudonymiser, registry);
        if !regional_inline {
            core = core.without_regional_stage();
        }
        // The regional stage's clock first: it says how much history it needs.
        let clock = self.store.regional_clock().await?;
        core.regional_restore()
            .0
            .restore_watermark(clock.unwrap_or_default());
        let rules = &self.settings.rules;
        let reach = Duration::days(2 * (rules.lookback_days + rules.max_lateness_days));
        let latest = self.store.latest_event_time().await?;
        core.restore_event_clock(latest);
        // Events from the earlier of what the household windows and the regional
        // stage need (None: every event).
        let events_since = match (
            latest.map(|t| t - reach),
            core.regional().events_needed_from(),
        ) {
            (rules_from, _) if !regional_inline => rules_from,
            (Some(rules_from), Some(regional_from)) => Some(rules_from.min(regional_from)),
            _ => None,
        };
        // Closed and expired alerts within reach of the latest event time: what the
        // core itself still holds (older ones left its memory).
        let closed_since =
            latest.unwrap_or_else(Utc::now) - Duration::days(rules.closed_alert_reach_days());
        let held_after = regional_inline
            .then(|| core.regional().events_held_after())
            .flatten();
        let state = self
            .store
            .load_state(
                events_since,
                held_after,
                closed_since,
                core.dedupe_horizon(),
            )
            .await?;
        core.restore_seen(state.seen);
        for event in &state.events {
            core.restore_event(event);
        }
        for (household, episodes) in &state.episodes {
            core.restore_episodes(household, *episodes);
        }
        for (household, closed, episode) in state.closed_alerts {
            core.restore_closed_alert(&household, closed, episode);
        }
        for (alert, task, episode) in state.open_alerts {
            core.restore_open_alert(alert, task, episode);
        }
        // The registry as loaded holds every committed change; the cursor says which
        // the last committed batch had applied (later ones apply again, unchanged).
        if let Some(position) = self
            .store
            .position(crate::pipeline::REGISTRY_CHANGES_KEY)
            .await?
        {
            core.set_registry_cursor(position.position as i64);
        }
        if regional_inline {
            let (stage, registry) = core.regional_restore();
            let events: Vec<_> = state.events.iter().chain(&state.held).cloned().collect();
            self.restore_regional(stage, registry, &events).await?;
        }
        tracing::debug!(
            households = core.registry().household_count(),
            members = core.registry().person_count(),
            events_seen = core.seen_count(),
            "state loaded"
        );
        Ok(core)
    }

    /// Restores a regional stage, whose watermark is already restored, from the store:
    /// counts, detector checkpoints, signals, and the household `events` its windows
    /// need (from [`RegionalStage::events_needed_from`]).
    pub async fn restore_regional(
        &self,
        stage: &mut RegionalStage,
        registry: &Registry,
        events: &[crate::batch::RestoredEvent],
    ) -> Result<(), AppError> {
        let counts_from = stage.counts_needed_from();
        let regional = self.store.load_regional(counts_from).await?;
        stage.restore_counts(regional.counts);
        for checkpoint in regional.checkpoints {
            stage
                .restore_checkpoint(checkpoint)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        }
        for signal in regional.signals {
            stage.restore_signal(signal);
        }
        for (village, due_at) in regional.campaigns {
            stage.restore_campaign(village, due_at);
        }
        for event in events {
            stage.restore_event(event, registry);
        }
        stage.finish_restore();
        Ok(())
    }
}
