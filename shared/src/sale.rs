//! Where a sale stands at a given moment.
//!
//! The origin's reserve script applies the same rule inside Redis (with
//! Redis' clock); the edge applies it to its cached copy of the product so a
//! buy before the start or after the end never leaves the edge.

/// A sale is open from `starts_at` (inclusive) to `ends_at` (exclusive), in
/// unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaleWindow {
    pub starts_at: i64,
    pub ends_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SalePhase {
    NotStarted,
    Open,
    Ended,
}

impl SaleWindow {
    pub fn phase(&self, now_unix_s: i64) -> SalePhase {
        if now_unix_s < self.starts_at {
            SalePhase::NotStarted
        } else if now_unix_s >= self.ends_at {
            SalePhase::Ended
        } else {
            SalePhase::Open
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries() {
        let w = SaleWindow {
            starts_at: 10,
            ends_at: 20,
        };
        assert_eq!(w.phase(9), SalePhase::NotStarted);
        assert_eq!(w.phase(10), SalePhase::Open);
        assert_eq!(w.phase(19), SalePhase::Open);
        assert_eq!(w.phase(20), SalePhase::Ended);
    }
}
