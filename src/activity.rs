//! Recent activity for the dashboard: how many messages got each action and which symbols
//! fired, per hour over the last 24 hours. Kept in memory (it restarts with the process);
//! the durable per-message record is the tracking store's job.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::verdict::{Action, Verdict};

const HOURS: usize = 24;

#[derive(Default, Clone)]
struct Hour {
    /// Unix hour (seconds / 3600) this bucket counts.
    hour: u64,
    actions: BTreeMap<Action, u64>,
    symbols: BTreeMap<String, u64>,
}

/// Counts per hour, in a ring of 24 buckets.
pub struct Activity {
    hours: Mutex<Vec<Hour>>,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            hours: Mutex::new(vec![Hour::default(); HOURS]),
        }
    }
}

/// The last 24 hours, summed.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub actions: BTreeMap<Action, u64>,
    /// Most frequent first.
    pub top_symbols: Vec<(String, u64)>,
}

impl Activity {
    /// Counts one message: `action` is what happened in the end (a quarantine whose store
    /// write failed counts as the tempfail the sender saw).
    pub fn record(&self, action: Action, verdict: Option<&Verdict>, now: u64) {
        let hour = now / 3600;
        let mut hours = self.hours.lock().expect("activity lock");
        let bucket = &mut hours[(hour % HOURS as u64) as usize];
        if bucket.hour != hour {
            *bucket = Hour {
                hour,
                ..Hour::default()
            };
        }
        *bucket.actions.entry(action).or_default() += 1;
        for symbol in verdict.map(|v| v.symbols.as_slice()).unwrap_or_default() {
            *bucket.symbols.entry(symbol.name.clone()).or_default() += 1;
        }
    }

    pub fn last_day(&self, now: u64, top: usize) -> Summary {
        let hour = now / 3600;
        let hours = self.hours.lock().expect("activity lock");
        let mut summary = Summary::default();
        let mut symbols: BTreeMap<&str, u64> = BTreeMap::new();
        for bucket in hours
            .iter()
            .filter(|b| hour.saturating_sub(b.hour) < HOURS as u64)
        {
            for (action, n) in &bucket.actions {
                *summary.actions.entry(*action).or_default() += n;
            }
            for (name, n) in &bucket.symbols {
                *symbols.entry(name).or_default() += n;
            }
        }
        let mut ranked: Vec<(String, u64)> = symbols
            .into_iter()
            .map(|(s, n)| (s.to_string(), n))
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(top);
        summary.top_symbols = ranked;
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Symbol;

    #[test]
    fn counts_the_last_day_and_forgets_older_hours() {
        let activity = Activity::default();
        let verdict = Verdict {
            action: Action::Quarantine,
            score: 12.0,
            symbols: vec![Symbol::new("BIG_MONEY", 12.0, "")],
            forced_by: None,
            headers: Vec::new(),
        };
        let now = 1_800_000_000;
        activity.record(Action::Accept, None, now - 25 * 3600);
        activity.record(Action::Quarantine, Some(&verdict), now - 3600);
        activity.record(Action::Quarantine, Some(&verdict), now);
        activity.record(Action::Accept, None, now);
        let day = activity.last_day(now, 5);
        assert_eq!(day.actions[&Action::Quarantine], 2);
        assert_eq!(day.actions[&Action::Accept], 1, "25 hours ago is out");
        assert_eq!(day.top_symbols, [("BIG_MONEY".to_string(), 2)]);
    }
}
