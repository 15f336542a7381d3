//! Acknowledgement of queue records whose series are spread over shards:
//! a record is done when every piece is acknowledged, and the queue
//! cursor moves to the end of the longest done prefix.

use std::collections::VecDeque;

use crate::queue::Position;

#[derive(Debug)]
struct Entry {
    remaining: usize,
    end: Position,
    append_ms: i64,
    samples: u64,
}

/// Records handed to shards and not yet wholly acknowledged, in order.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    /// Id of `entries[0]`.
    base: u64,
    entries: VecDeque<Entry>,
}

impl Tracker {
    /// Registers the next record with `pieces` parts; returns its id and,
    /// when it has no pieces and is first in line, the new commit point.
    pub(crate) fn register(
        &mut self,
        pieces: usize,
        end: Position,
        append_ms: i64,
        samples: u64,
    ) -> (u64, Option<Position>) {
        let id = self.base + self.entries.len() as u64;
        self.entries.push_back(Entry {
            remaining: pieces,
            end,
            append_ms,
            samples,
        });
        (id, self.pop_done())
    }

    /// Acknowledges `n` pieces of record `id`; returns the new commit
    /// point when the done prefix grew.
    pub(crate) fn ack(&mut self, id: u64, n: usize) -> Option<Position> {
        let i = id.checked_sub(self.base)?;
        let e = self.entries.get_mut(usize::try_from(i).ok()?)?;
        e.remaining = e.remaining.saturating_sub(n);
        self.pop_done()
    }

    fn pop_done(&mut self) -> Option<Position> {
        let mut out = None;
        while self.entries.front().is_some_and(|e| e.remaining == 0) {
            if let Some(e) = self.entries.pop_front() {
                out = Some(e.end);
                self.base += 1;
            }
        }
        out
    }

    /// Append time of the oldest unacknowledged record.
    pub(crate) fn oldest_ms(&self) -> Option<i64> {
        self.entries.front().map(|e| e.append_ms)
    }

    /// Records in flight.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Samples in flight.
    pub(crate) fn samples(&self) -> u64 {
        self.entries.iter().map(|e| e.samples).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(o: u64) -> Position {
        Position {
            segment: 1,
            offset: o,
        }
    }

    #[test]
    fn commits_only_the_done_prefix() {
        let mut t = Tracker::default();
        let (a, _) = t.register(2, p(10), 1, 2);
        let (b, _) = t.register(1, p(20), 2, 1);
        let (c, done) = t.register(0, p(30), 3, 0);
        assert_eq!(done, None);
        assert_eq!(t.ack(b, 1), None);
        assert_eq!(t.ack(a, 1), None);
        assert_eq!(t.oldest_ms(), Some(1));
        assert_eq!(t.ack(a, 1), Some(p(30)));
        assert_eq!(t.len(), 0);
        assert_eq!(t.ack(c, 1), None);
        let (_, done) = t.register(0, p(40), 4, 0);
        assert_eq!(done, Some(p(40)));
    }
}
