//! The medical history: a bounded ring of records per service.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::Heal;
use crate::health::Condition;
use crate::time::Instant;

/// The outcome of an intervention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The service was healthy by the end of the settle time.
    Resolved,
    /// The settle time ended with the service still unhealthy.
    Unresolved,
    /// The settle time has not ended yet.
    Pending,
}

impl Outcome {
    /// `resolved`, `unresolved` or `pending`.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Resolved => "resolved",
            Outcome::Unresolved => "unresolved",
            Outcome::Pending => "pending",
        }
    }
}

/// One line of the medical history (and of `medic events`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Numbers the records of one service, from 0; an outcome update repeats the number of the
    /// record it completes.
    pub seq: u64,
    /// When.
    pub at: Instant,
    /// The service's condition at that moment.
    pub condition: Condition,
    /// The intervention made, if any.
    pub heal: Option<Heal>,
    /// The intervention's outcome, if there was one.
    pub outcome: Option<Outcome>,
    /// When the outcome was decided (the end of the settle time); `None` while pending.
    pub outcome_at: Option<Instant>,
    /// Why, in words: `"exit code 1"`, `"blocked by wan"`, `"settling until 12.000s"`,
    /// `"given up after 10 strikes"`, `"operator restart"`.
    pub note: String,
}

/// One record as `12.000s exited restart (resolved at 13.000s): strike 1 of 10` (or
/// `(pending)` before the settle time ends): the one rendering of a
/// history line, for the daemon's log, the CLI and tests.
impl core::fmt::Display for Record {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let heal = self.heal.as_ref().map(|h| h.describe());
        let line = Line {
            at: &self.at,
            service: None,
            condition: self.condition.name(),
            heal: heal.as_deref(),
            outcome: self.outcome.map(Outcome::name),
            outcome_at: self
                .outcome_at
                .as_ref()
                .map(|a| a as &dyn core::fmt::Display),
            note: &self.note,
        };
        line.fmt(f)
    }
}

/// The parts of one history line, however they are held (a kernel [`Record`], or the rows of
/// the control socket): one rendering for the daemon's log, `medic history` and `medic events`.
pub struct Line<'a> {
    /// When (`12.000s`).
    pub at: &'a dyn core::fmt::Display,
    /// Whose, for a line of the event stream.
    pub service: Option<&'a str>,
    /// The condition's name.
    pub condition: &'a str,
    /// The heal, described.
    pub heal: Option<&'a str>,
    /// The outcome's name.
    pub outcome: Option<&'a str>,
    /// When the outcome was decided.
    pub outcome_at: Option<&'a dyn core::fmt::Display>,
    /// Why.
    pub note: &'a str,
}

impl core::fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.at)?;
        if let Some(service) = self.service {
            write!(f, " {service}")?;
        }
        write!(f, " {}", self.condition)?;
        if let Some(h) = self.heal {
            write!(f, " {h}")?;
        }
        match (self.outcome, self.outcome_at) {
            (Some(o), Some(at)) => write!(f, " ({o} at {at})")?,
            (Some(o), None) => write!(f, " ({o})")?,
            (None, _) => {}
        }
        if !self.note.is_empty() {
            write!(f, ": {}", self.note)?;
        }
        Ok(())
    }
}

/// A bounded ring of [`Record`]s, oldest first. When full, the oldest record is dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    records: VecDeque<Record>,
    capacity: u32,
    next_seq: u64,
}

impl History {
    /// An empty history holding at most `capacity` records (at least 1).
    pub fn new(capacity: u32) -> History {
        History {
            records: VecDeque::new(),
            capacity: capacity.max(1),
            next_seq: 0,
        }
    }

    /// Appends a record, numbering it; returns a copy for the event stream.
    pub fn push(
        &mut self,
        at: Instant,
        condition: Condition,
        heal: Option<Heal>,
        outcome: Option<Outcome>,
        note: String,
    ) -> Record {
        let record = Record {
            seq: self.next_seq,
            at,
            condition,
            heal,
            outcome,
            outcome_at: None,
            note,
        };
        self.next_seq += 1;
        if self.records.len() >= self.capacity as usize {
            self.records.pop_front();
        }
        self.records.push_back(record.clone());
        record
    }

    /// Sets the outcome of record `seq`, decided `at`, if it is still in the ring; returns the
    /// updated record.
    pub fn settle(&mut self, seq: u64, outcome: Outcome, at: Instant) -> Option<Record> {
        let first = self.records.front()?.seq;
        let idx = seq.checked_sub(first)? as usize;
        let record = self.records.get_mut(idx)?;
        record.outcome = Some(outcome);
        record.outcome_at = Some(at);
        Some(record.clone())
    }

    /// The records, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Record> {
        self.records.iter()
    }

    /// How many records are held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Every record rendered as a line (see [`Record`]'s `Display`), oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.records.iter().map(Record::to_string).collect()
    }

    /// The most recent record.
    pub fn last(&self) -> Option<&Record> {
        self.records.back()
    }

    /// The ring's bound.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// A history taken back from a saved state (crate::adopt), in a ring of `capacity`: the
    /// newest records are kept. One whose numbering does not hold together is not trusted:
    /// an empty history goes on from its last number instead.
    pub(crate) fn restored(mut self, capacity: u32) -> History {
        let capacity = capacity.max(1);
        let numbered = self
            .records
            .iter()
            .zip(self.records.iter().skip(1))
            .all(|(a, b)| b.seq == a.seq.wrapping_add(1))
            && self.records.back().is_none_or(|r| r.seq < self.next_seq)
            && self.next_seq < u64::MAX / 2;
        if !numbered {
            let mut fresh = History::new(capacity);
            fresh.next_seq = self.next_seq.min(u64::MAX / 2);
            return fresh;
        }
        while self.records.len() > capacity as usize {
            self.records.pop_front();
        }
        self.capacity = capacity;
        self
    }

    /// The number the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(capacity: u32, n: u64) -> History {
        let mut h = History::new(capacity);
        for i in 0..n {
            h.push(
                Instant::from_millis(i * 1000),
                Condition::Exited,
                None,
                None,
                format!("record {i}"),
            );
        }
        h
    }

    #[test]
    fn the_last_record_is_the_newest_and_an_empty_history_says_so() {
        let empty = History::new(4);
        assert!(empty.is_empty());
        assert_eq!(empty.last(), None);
        let h = history(4, 6);
        assert!(!h.is_empty());
        assert_eq!(
            h.last().map(|r| (r.seq, r.note.as_str())),
            Some((5, "record 5"))
        );
    }

    #[test]
    fn a_well_numbered_history_comes_back_whole_with_its_numbering() {
        let saved = history(8, 5);
        let back = saved.clone().restored(8);
        assert_eq!(back, saved);
        assert_eq!(back.next_seq(), 5);
        // Exactly as many as the ring holds: nothing is dropped.
        let back = history(5, 5).restored(5);
        assert_eq!(back.len(), 5);
        assert_eq!(back.iter().next().map(|r| r.seq), Some(0));
        // One record: numbered by itself.
        assert_eq!(history(8, 1).restored(8).len(), 1);
    }

    #[test]
    fn a_smaller_ring_keeps_the_newest_records() {
        let back = history(8, 6).restored(4);
        let seqs: Vec<u64> = back.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [2, 3, 4, 5]);
        assert_eq!(back.capacity(), 4);
        assert_eq!(back.next_seq(), 6);
        assert_eq!(history(8, 3).restored(0).len(), 1, "capacity 0 is 1");
    }

    #[test]
    fn a_history_whose_numbering_does_not_hold_is_not_trusted() {
        // A gap.
        let mut gap = history(8, 4);
        gap.records[2].seq = 7;
        gap.next_seq = 9;
        let back = gap.restored(8);
        assert!(back.is_empty());
        assert_eq!(back.next_seq(), 9, "goes on from its last number");
        // The last record's number is not below the next one.
        let mut ahead = history(8, 3);
        ahead.next_seq = 2;
        assert!(ahead.restored(8).is_empty());
        let mut equal = history(8, 3);
        equal.next_seq = 2;
        equal.records[2].seq = 2;
        equal.records[1].seq = 1;
        assert!(
            equal.restored(8).is_empty(),
            "the last record numbered next_seq"
        );
        // A number near the end of the range (a corrupt state file) is clamped.
        let mut huge = History::new(8);
        huge.next_seq = u64::MAX / 2;
        let back = huge.restored(8);
        assert_eq!(back.next_seq(), u64::MAX / 2);
        let mut huger = History::new(8);
        huger.next_seq = u64::MAX - 1;
        assert_eq!(huger.restored(8).next_seq(), u64::MAX / 2);
        // Records numbered up to the clamp are not trusted either.
        let mut at_clamp = history(8, 3);
        for (i, r) in at_clamp.records.iter_mut().enumerate() {
            r.seq = u64::MAX / 2 - 3 + i as u64;
        }
        at_clamp.next_seq = u64::MAX / 2;
        assert!(at_clamp.restored(8).is_empty());
        // Just below the clamp it is trusted as it is.
        let mut high = History::new(8);
        high.next_seq = u64::MAX / 2 - 1;
        assert_eq!(high.restored(8).next_seq(), u64::MAX / 2 - 1);
    }
}
