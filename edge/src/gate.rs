//! The admission gate's arithmetic, worker-free so it is tested on the host.
//!
//! While a sale is live the edge forwards at most about
//! `stock_left × overbook` buys that the origin has not yet answered;
//! beyond that it answers `503 sale_busy` (or `409 sold_out` once the origin
//! has said so) without the origin. Two halves share this file:
//!
//! - [`GateBook`], kept by one Durable Object per product: the stock it last
//!   read from the origin, the outcomes isolates reported since, and how
//!   many admissions each isolate holds unresolved. It grants admissions
//!   first come, first served, and (optionally) applies the per-member rate
//!   limit across every isolate.
//! - [`GateQueue`], kept by each isolate per product: buyers waiting for an
//!   admission, in arrival order, and the outcomes of admitted buys not yet
//!   reported. One call to the object is in flight per isolate and product
//!   at a time; it carries every buyer that queued meanwhile and every
//!   outcome since the last call, so the object sees one call per isolate
//!   per round trip, not one per buyer.

use std::collections::{HashMap, VecDeque};

use seckill_shared::rate_limit::{RateLimit, RateLimiter};
use seckill_shared::{MemberId, ProductId};
use serde::{Deserialize, Serialize};

/// Outcomes of admitted buys, as the origin answered them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcomes {
    /// `202`: a unit was reserved.
    pub accepted: u32,
    /// `409 sold_out`: the origin had no unit left.
    pub sold_out: u32,
    /// Any other answer: nothing was reserved (already ordered, refused).
    pub refused: u32,
    /// No answer, or a broken connection: a unit may have been reserved.
    pub unknown: u32,
}

impl Outcomes {
    pub fn total(&self) -> u32 {
        self.accepted + self.sold_out + self.refused + self.unknown
    }

    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    pub fn add(&mut self, other: Outcomes) {
        self.accepted += other.accepted;
        self.sold_out += other.sold_out;
        self.refused += other.refused;
        self.unknown += other.unknown;
    }

    /// The outcome of one buy from the origin's answer; `None` is no
    /// answer at all (timed out, connection lost).
    pub fn of(status: Option<u16>, sold_out: bool) -> Self {
        let mut one = Self::default();
        match status {
            Some(202) => one.accepted = 1,
            Some(409) if sold_out => one.sold_out = 1,
            // 503 outcome_unknown from the origin is unknown too; the
            // stock read corrects the book either way.
            Some(503) | None => one.unknown = 1,
            Some(_) => one.refused = 1,
        }
        one
    }
}

/// What one isolate tells the product's object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncRequest {
    pub product: ProductId,
    /// The isolate, so its unresolved admissions are counted apart.
    pub holder: u64,
    /// Buyers waiting for an admission, in arrival order.
    pub members: Vec<MemberId>,
    /// Outcomes since the isolate's last call.
    pub outcomes: Outcomes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// Forward the buy to the origin.
    Admit,
    /// The budget is spent by buys still unresolved: `503 sale_busy`.
    Busy,
    /// The origin said the stock is gone: `409 sold_out`.
    SoldOut,
    /// The member is over the rate limit across isolates: `429`.
    RateLimited,
    /// The gate could not read the stock (the origin is down): `503
    /// unavailable`, nothing reserved.
    Unavailable,
}

/// The object's answer: one admission per member, in the same order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncAnswer {
    pub admissions: Vec<Admission>,
}

/// `sale_busy`'s `Retry-After`: about when unresolved buys have been
/// answered and the budget is free again.
pub const RETRY_AFTER_S: u32 = 1;

/// How the object keeps its book.
#[derive(Debug, Clone, Copy)]
pub struct GateSettings {
    /// Unresolved buys allowed per unit of stock left.
    pub overbook: f64,
    /// While the book says nothing is left, the stock is read again this
    /// often (returned stock reopens the gate within about this).
    pub reread_ms: u64,
    /// Otherwise it is read this often, to correct what counting missed
    /// (units an operator added, reservations that failed later).
    pub correct_ms: u64,
    /// An isolate not heard from for this long holds nothing any more
    /// (every buy it forwarded has been answered or timed out).
    pub holder_timeout_ms: u64,
    /// The per-member limit across isolates, if the gate applies it.
    pub member_limit: Option<RateLimit>,
}

#[derive(Debug, Clone, Copy)]
struct Holder {
    unresolved: u32,
    seen_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    stock_left: i64,
    /// Counters as they stood when the read was sent: outcomes reported
    /// after that are not in the reading.
    accepted_before: u64,
    sold_out_before: u64,
}

/// Members tracked by the gate's rate limiter before idle ones are dropped.
const LIMITED_MEMBERS: usize = 200_000;

/// One product's admissions, as its object keeps them.
pub struct GateBook {
    settings: GateSettings,
    reading: Option<Reading>,
    read_sent_ms: Option<u64>,
    /// Counters of every outcome reported, ever.
    accepted: u64,
    sold_out: u64,
    holders: HashMap<u64, Holder>,
    limiter: Option<RateLimiter>,
}

impl GateBook {
    pub fn new(settings: GateSettings) -> Self {
        Self {
            settings,
            reading: None,
            read_sent_ms: None,
            accepted: 0,
            sold_out: 0,
            holders: HashMap::new(),
            limiter: settings
                .member_limit
                .map(|limit| RateLimiter::new(limit, LIMITED_MEMBERS)),
        }
    }

    pub fn has_reading(&self) -> bool {
        self.reading.is_some()
    }

    /// True when the stock should be read from the origin before answering:
    /// at once when counting alone says nothing is left (the origin decides
    /// between sold out and busy), every `reread_ms` while the origin says
    /// nothing is left (returned units reopen the gate), and every
    /// `correct_ms` otherwise.
    pub fn read_due(&self, now_ms: u64) -> bool {
        match self.read_sent_ms {
            None => true,
            Some(sent) => {
                let age = now_ms.saturating_sub(sent);
                let empty = self.stock_left() == 0;
                (empty && (!self.origin_says_sold_out() || age >= self.settings.reread_ms))
                    || age >= self.settings.correct_ms
            }
        }
    }

    /// A read is on its way; returns the counters to pass to
    /// [`GateBook::apply_read`].
    pub fn read_sent(&mut self, now_ms: u64) -> (u64, u64) {
        self.read_sent_ms = Some(now_ms);
        (self.accepted, self.sold_out)
    }

    /// The origin's `stock_left`, read with the counters `sent` returned by
    /// [`GateBook::read_sent`].
    pub fn apply_read(&mut self, stock_left: i64, sent: (u64, u64)) {
        self.reading = Some(Reading {
            stock_left: stock_left.max(0),
            accepted_before: sent.0,
            sold_out_before: sent.1,
        });
    }

    /// Units the book believes are left: the last reading less the units
    /// reserved since; none once the origin answered `sold_out` since.
    pub fn stock_left(&self) -> i64 {
        let Some(reading) = self.reading else {
            return 0;
        };
        if self.sold_out > reading.sold_out_before {
            return 0;
        }
        let reserved_since = self.accepted.saturating_sub(reading.accepted_before);
        (reading.stock_left - reserved_since as i64).max(0)
    }

    /// True when the origin itself says nothing is left (a reading of zero,
    /// or a `sold_out` answer since): only then is a buyer told `sold_out`.
    fn origin_says_sold_out(&self) -> bool {
        self.reading.is_some_and(|reading| {
            reading.stock_left == 0 || self.sold_out > reading.sold_out_before
        })
    }

    /// Buys admitted and not yet answered, over every isolate.
    pub fn unresolved(&self) -> u64 {
        self.holders.values().map(|h| u64::from(h.unresolved)).sum()
    }

    /// How many unresolved buys the stock allows now.
    pub fn budget(&self) -> u64 {
        let left = self.stock_left();
        if left == 0 {
            return 0;
        }
        ((left as f64 * self.settings.overbook).ceil() as u64).max(1)
    }

    /// Takes an isolate's report and answers its waiting buyers.
    pub fn sync(&mut self, request: &SyncRequest, now_ms: u64) -> SyncAnswer {
        let timeout = self.settings.holder_timeout_ms;
        self.holders
            .retain(|_, h| now_ms.saturating_sub(h.seen_ms) < timeout);
        self.accepted += u64::from(request.outcomes.accepted);
        self.sold_out += u64::from(request.outcomes.sold_out);
        let holder = self.holders.entry(request.holder).or_insert(Holder {
            unresolved: 0,
            seen_ms: now_ms,
        });
        holder.seen_ms = now_ms;
        holder.unresolved = holder.unresolved.saturating_sub(request.outcomes.total());

        if self.reading.is_none() {
            return SyncAnswer {
                admissions: vec![Admission::Unavailable; request.members.len()],
            };
        }
        let mut available = self.budget().saturating_sub(self.unresolved());
        let sold_out = self.stock_left() == 0 && self.origin_says_sold_out();
        let mut admitted = 0;
        let admissions = request
            .members
            .iter()
            .map(|&member| {
                if let Some(limiter) = self.limiter.as_mut() {
                    if !limiter.allow(member, now_ms) {
                        return Admission::RateLimited;
                    }
                }
                if available > 0 {
                    available -= 1;
                    admitted += 1;
                    Admission::Admit
                } else if sold_out {
                    Admission::SoldOut
                } else {
                    Admission::Busy
                }
            })
            .collect();
        if let Some(holder) = self.holders.get_mut(&request.holder) {
            holder.unresolved += admitted;
        }
        SyncAnswer { admissions }
    }
}

/// One call to the object: who it asks for and what it reports.
#[derive(Debug, Clone)]
pub struct Batch {
    pub tickets: Vec<u64>,
    pub members: Vec<MemberId>,
    pub outcomes: Outcomes,
}

/// One product's waiting buyers and unreported outcomes in one isolate.
#[derive(Debug, Default)]
pub struct GateQueue {
    next_ticket: u64,
    waiting: VecDeque<(u64, MemberId)>,
    decided: HashMap<u64, Admission>,
    in_flight_since_ms: Option<u64>,
    unreported: Outcomes,
}

impl GateQueue {
    /// A buyer joins the queue; the ticket collects its admission.
    pub fn enqueue(&mut self, member: MemberId) -> u64 {
        self.next_ticket += 1;
        self.waiting.push_back((self.next_ticket, member));
        self.next_ticket
    }

    /// The buyer's admission, once decided.
    pub fn take(&mut self, ticket: u64) -> Option<Admission> {
        self.decided.remove(&ticket)
    }

    /// A buyer that gives up waiting leaves the queue; an admission that
    /// arrived meanwhile is still its to use.
    pub fn abandon(&mut self, ticket: u64) -> Option<Admission> {
        self.waiting.retain(|(t, _)| *t != ticket);
        self.decided.remove(&ticket)
    }

    /// The outcome of an admitted buy, reported with the next call.
    pub fn record(&mut self, outcome: Outcomes) {
        self.unreported.add(outcome);
    }

    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.unreported.is_empty()
    }

    /// Starts a call when none is in flight (or the one in flight has been
    /// silent for `stale_ms`, its request gone) and there is something to
    /// ask or report.
    pub fn start(&mut self, now_ms: u64, stale_ms: u64) -> Option<Batch> {
        if self
            .in_flight_since_ms
            .is_some_and(|since| now_ms.saturating_sub(since) < stale_ms)
            || !self.has_work()
        {
            return None;
        }
        self.in_flight_since_ms = Some(now_ms);
        let (tickets, members) = self.waiting.drain(..).unzip();
        Some(Batch {
            tickets,
            members,
            outcomes: std::mem::take(&mut self.unreported),
        })
    }

    /// The call returned (`None`: it failed; its buyers are told the sale is
    /// busy and its outcomes go with the next call).
    pub fn finish(&mut self, batch: Batch, answer: Option<&SyncAnswer>) {
        self.in_flight_since_ms = None;
        match answer {
            Some(answer) => {
                for (i, ticket) in batch.tickets.into_iter().enumerate() {
                    let admission = answer.admissions.get(i).copied().unwrap_or(Admission::Busy);
                    self.decided.insert(ticket, admission);
                }
            }
            None => {
                for ticket in batch.tickets {
                    self.decided.insert(ticket, Admission::Busy);
                }
                self.unreported.add(batch.outcomes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(overbook: f64) -> GateSettings {
        GateSettings {
            overbook,
            reread_ms: 500,
            correct_ms: 5_000,
            holder_timeout_ms: 10_000,
            member_limit: None,
        }
    }

    fn m(id: i64) -> MemberId {
        MemberId::new(id).unwrap()
    }

    fn ask(holder: u64, members: std::ops::Range<i64>, outcomes: Outcomes) -> SyncRequest {
        SyncRequest {
            product: ProductId::new(1).unwrap(),
            holder,
            members: members.map(m).collect(),
            outcomes,
        }
    }

    fn count(answer: &SyncAnswer, kind: Admission) -> usize {
        answer.admissions.iter().filter(|a| **a == kind).count()
    }

    fn book(stock: i64, overbook: f64) -> GateBook {
        let mut book = GateBook::new(settings(overbook));
        assert!(book.read_due(0));
        let sent = book.read_sent(0);
        book.apply_read(stock, sent);
        book
    }

    #[test]
    fn admits_overbook_times_the_stock_then_is_busy() {
        let mut book = book(100, 2.0);
        let answer = book.sync(&ask(1, 1..769, Outcomes::default()), 10);
        assert_eq!(count(&answer, Admission::Admit), 200);
        assert_eq!(count(&answer, Admission::Busy), 568);
        // The first 200 in arrival order are the admitted ones.
        assert!(answer.admissions[..200]
            .iter()
            .all(|a| *a == Admission::Admit));
        // Another isolate finds the budget spent.
        let other = book.sync(&ask(2, 1_000..1_010, Outcomes::default()), 20);
        assert_eq!(count(&other, Admission::Busy), 10);
    }

    #[test]
    fn outcomes_free_the_budget_and_a_sold_out_answer_closes_it() {
        let mut book = book(100, 2.0);
        book.sync(&ask(1, 1..201, Outcomes::default()), 10);
        // 100 reserved, 20 already held an order: 0 left, and the 80 still
        // in flight will be told sold out.
        let reported = Outcomes {
            accepted: 100,
            refused: 20,
            ..Outcomes::default()
        };
        let answer = book.sync(&ask(1, 300..310, reported), 20);
        assert_eq!(book.stock_left(), 0);
        assert_eq!(
            count(&answer, Admission::Busy),
            10,
            "counting alone never says sold out"
        );
        assert!(book.read_due(21), "the origin is asked at once");
        let answer = book.sync(
            &ask(
                1,
                310..320,
                Outcomes {
                    sold_out: 80,
                    ..Outcomes::default()
                },
            ),
            30,
        );
        assert_eq!(count(&answer, Admission::SoldOut), 10);
        assert_eq!(book.unresolved(), 0);
    }

    #[test]
    fn no_undersell_at_one_times_overbook() {
        let mut book = book(10, 1.0);
        let first = book.sync(&ask(1, 1..11, Outcomes::default()), 0);
        assert_eq!(count(&first, Admission::Admit), 10);
        // Three of them already held an order: three units are still free.
        let reported = Outcomes {
            accepted: 7,
            refused: 3,
            ..Outcomes::default()
        };
        let again = book.sync(&ask(1, 20..30, reported), 10);
        assert_eq!(count(&again, Admission::Admit), 3);
    }

    #[test]
    fn returned_stock_reopens_after_a_read() {
        let mut book = book(5, 2.0);
        book.sync(&ask(1, 1..11, Outcomes::default()), 0);
        let done = Outcomes {
            accepted: 5,
            sold_out: 5,
            ..Outcomes::default()
        };
        let closed = book.sync(&ask(1, 20..21, done), 100);
        assert_eq!(closed.admissions, vec![Admission::SoldOut]);
        assert!(!book.read_due(400), "the origin said so: not yet");
        assert!(book.read_due(600), "re-read while nothing is left");
        let sent = book.read_sent(600);
        book.apply_read(3, sent);
        let open = book.sync(&ask(1, 30..40, Outcomes::default()), 650);
        assert_eq!(count(&open, Admission::Admit), 6);
        assert!(!book.read_due(1_200), "selling: only the slow correction");
        assert!(book.read_due(5_600));
    }

    #[test]
    fn outcomes_reported_while_a_read_is_out_count_against_it() {
        let mut book = book(10, 1.0);
        book.sync(&ask(1, 1..11, Outcomes::default()), 0);
        let sent = book.read_sent(5_000);
        let accepted = Outcomes {
            accepted: 4,
            ..Outcomes::default()
        };
        book.sync(&ask(1, 0..0, accepted), 5_001);
        book.apply_read(10, sent);
        assert_eq!(book.stock_left(), 6);
    }

    #[test]
    fn a_silent_isolate_stops_holding_the_budget() {
        let mut book = book(1, 1.0);
        let first = book.sync(&ask(1, 1..2, Outcomes::default()), 0);
        assert_eq!(first.admissions, vec![Admission::Admit]);
        let busy = book.sync(&ask(2, 2..3, Outcomes::default()), 100);
        assert_eq!(busy.admissions, vec![Admission::Busy]);
        let later = book.sync(&ask(2, 2..3, Outcomes::default()), 10_100);
        assert_eq!(later.admissions, vec![Admission::Admit]);
    }

    #[test]
    fn the_member_limit_holds_across_isolates() {
        let mut book = GateBook::new(GateSettings {
            member_limit: Some(RateLimit {
                burst: 2,
                per_second: 1.0,
            }),
            ..settings(2.0)
        });
        let sent = book.read_sent(0);
        book.apply_read(100, sent);
        let one = book.sync(&ask(1, 7..8, Outcomes::default()), 0);
        let two = book.sync(&ask(2, 7..8, Outcomes::default()), 0);
        let three = book.sync(&ask(1, 7..8, Outcomes::default()), 0);
        assert_eq!(one.admissions, vec![Admission::Admit]);
        assert_eq!(two.admissions, vec![Admission::Admit]);
        assert_eq!(three.admissions, vec![Admission::RateLimited]);
    }

    #[test]
    fn the_queue_batches_buyers_in_arrival_order() {
        let mut queue = GateQueue::default();
        let a = queue.enqueue(m(1));
        let batch = queue.start(0, 1_000).unwrap();
        let b = queue.enqueue(m(2));
        let c = queue.enqueue(m(3));
        assert!(queue.start(10, 1_000).is_none(), "one call in flight");
        queue.finish(
            batch,
            Some(&SyncAnswer {
                admissions: vec![Admission::Admit],
            }),
        );
        assert_eq!(queue.take(a), Some(Admission::Admit));
        let batch = queue.start(20, 1_000).unwrap();
        assert_eq!(batch.members, vec![m(2), m(3)]);
        queue.record(Outcomes::of(Some(202), false));
        queue.finish(batch, None);
        assert_eq!(
            queue.take(b),
            Some(Admission::Busy),
            "a failed call is busy"
        );
        assert_eq!(queue.take(c), Some(Admission::Busy));
        let report = queue.start(30, 1_000).unwrap();
        assert!(report.members.is_empty());
        assert_eq!(report.outcomes.accepted, 1);
        assert!(queue.start(40, 1_000).is_none());
        // A call whose request vanished is taken over.
        queue.enqueue(m(4));
        assert!(queue.start(1_031, 1_000).is_some());
    }

    #[test]
    fn without_a_reading_nothing_is_admitted() {
        let mut book = GateBook::new(settings(2.0));
        let answer = book.sync(&ask(1, 1..3, Outcomes::default()), 0);
        assert_eq!(answer.admissions, vec![Admission::Unavailable; 2]);
    }

    #[test]
    fn outcomes_from_answers() {
        assert_eq!(Outcomes::of(Some(202), false).accepted, 1);
        assert_eq!(Outcomes::of(Some(409), true).sold_out, 1);
        assert_eq!(Outcomes::of(Some(409), false).refused, 1);
        assert_eq!(Outcomes::of(None, false).unknown, 1);
    }
}
