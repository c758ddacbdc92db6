//! The admission gate's arithmetic, worker-free so it is tested on the host.
//!
//! While a sale is live the edge forwards at most about
//! `stock_left × overbook` buys that the origin has not yet answered;
//! beyond that it answers `503 sale_busy` (or `409 sold_out` once the origin
//! has said so) without the origin. Two halves share this file:
//!
//! - [`GateBook`], kept by one Durable Object per product: the stock it last
//!   read from the origin, the outcomes isolates reported since, and what
//!   each isolate holds: admissions unresolved and a lease of admissions it
//!   may still spend. It decides the buyers a call carries first come, first
//!   served, leases each caller a bounded slice of what is left, and
//!   (optionally) applies the per-member rate limit across every isolate.
//! - [`GateQueue`], kept by each isolate per product: its lease, the buyers
//!   waiting for the object, and what to report. A buyer is admitted at
//!   once from the lease, without a call; the isolate calls when the lease
//!   is spent or over and buyers wait, and once per lease interval to
//!   report outcomes and renew, so the object sees about one call per busy
//!   isolate per interval, not one per buyer.

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
    /// The isolate, so what it holds is counted apart.
    pub holder: u64,
    /// Buyers waiting for the object to decide, in arrival order.
    pub members: Vec<MemberId>,
    /// Admissions spent from the lease since the last call: each is now a
    /// buy waiting on the origin. The lease ends with every call.
    pub spent: u32,
    /// Who they were, when the gate keeps the member limit (each is counted
    /// against the member's bucket, in debt if need be).
    pub spent_members: Vec<MemberId>,
    /// Buyers the isolate expects in the next lease interval (those that
    /// arrived since the last call, scaled to one interval): the lease it
    /// asks for.
    pub demand: u32,
    /// Outcomes since the isolate's last call.
    pub outcomes: Outcomes,
    /// Admissions reported spent earlier that were not used after all (a
    /// shard reports what it gave out as spent at once, and corrects it
    /// when its isolates return what they did not use).
    #[serde(default)]
    pub unspent: u32,
    /// The shard of the product's gate this goes to (`GATE_SHARDS` > 1);
    /// `None`: the product's root object.
    #[serde(default)]
    pub shard: Option<u32>,
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

/// The object's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncAnswer {
    /// One admission per member of the request, in the same order.
    pub admissions: Vec<Admission>,
    /// Admissions the isolate may spend by itself for `lease_ms` from when
    /// it sent the call.
    pub lease: u32,
    pub lease_ms: u64,
    /// What the isolate answers buyers by itself once the lease is spent,
    /// until it ends: `Busy`, `SoldOut` or `Unavailable`; `Admit` means
    /// there may be more: ask.
    pub beyond: Admission,
    /// Members over the limit, with how long (ms) to refuse them.
    pub blocked: Vec<(MemberId, u64)>,
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
    /// How long a lease (and a `beyond` answer) lasts.
    pub lease_ms: u64,
    /// The per-member limit across isolates, if the gate applies it.
    pub member_limit: Option<RateLimit>,
}

#[derive(Debug, Clone, Copy)]
struct Holder {
    unresolved: u32,
    lease: u32,
    /// The lease counts as held until then: its end, plus one more lease
    /// for the report of what was spent to arrive.
    lease_held_until_ms: u64,
    seen_ms: u64,
}

impl Holder {
    fn held(&self, now_ms: u64) -> u64 {
        let lease = if now_ms < self.lease_held_until_ms {
            self.lease
        } else {
            0
        };
        u64::from(self.unresolved) + u64::from(lease)
    }
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
    /// Calls answered, ever (the object's load).
    calls: u64,
}

/// Charges members admitted from a lease to their rate-limit buckets
/// (even past empty: a debt), returning those now over the limit and for
/// how long (ms) they are blocked.
fn charge_spent(
    limiter: Option<&mut RateLimiter>,
    members: &[MemberId],
    now_ms: u64,
) -> Vec<(MemberId, u64)> {
    let Some(limiter) = limiter else {
        return Vec::new();
    };
    members
        .iter()
        .filter_map(|&member| {
            let wait_ms = limiter.charge(member, now_ms);
            (wait_ms > 0).then_some((member, wait_ms))
        })
        .collect()
}

/// The answer when the gate cannot read the stock: every waiting buyer is
/// told so, and the isolate gets no lease.
fn unavailable_answer(members: usize, lease_ms: u64, blocked: Vec<(MemberId, u64)>) -> SyncAnswer {
    SyncAnswer {
        admissions: vec![Admission::Unavailable; members],
        lease: 0,
        lease_ms,
        beyond: Admission::Unavailable,
        blocked,
    }
}

/// Decides an isolate's waiting members from `available`, in order: one
/// over the rate limit is refused (and blocked), the others are admitted
/// while the budget lasts and get `refusal` after. `allowed` hears of each
/// member the limiter let through. Returns the admissions and how many
/// were admitted.
fn admit_members(
    members: &[MemberId],
    mut limiter: Option<&mut RateLimiter>,
    now_ms: u64,
    available: &mut u64,
    refusal: Admission,
    blocked: &mut Vec<(MemberId, u64)>,
    mut allowed: impl FnMut(MemberId),
) -> (Vec<Admission>, u32) {
    let mut admitted = 0;
    let admissions = members
        .iter()
        .map(|&member| {
            if let Some(limiter) = limiter.as_deref_mut() {
                if !limiter.allow(member, now_ms) {
                    blocked.push((member, limiter.refused_for_ms(member, now_ms)));
                    return Admission::RateLimited;
                }
                allowed(member);
            }
            if *available > 0 {
                *available -= 1;
                admitted += 1;
                Admission::Admit
            } else {
                refusal
            }
        })
        .collect();
    (admissions, admitted)
}

/// An isolate's next lease: as big as its demand but no bigger than half
/// of what is left shared among the leaseholders (itself included), so one
/// isolate cannot hoard the budget while others wait; at least one while
/// anything is left.
fn lease_share(available: u64, leaseholders: u64, demand: u32) -> u32 {
    let share = (available / (2 * leaseholders)).max(u64::from(available > 0));
    share.min(u64::from(demand)) as u32
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
            calls: 0,
        }
    }

    pub fn has_reading(&self) -> bool {
        self.reading.is_some()
    }

    /// Calls answered since the object started.
    pub fn calls(&self) -> u64 {
        self.calls
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

    /// Admissions unresolved or leased, over every isolate.
    pub fn held(&self, now_ms: u64) -> u64 {
        self.holders.values().map(|h| h.held(now_ms)).sum()
    }

    /// How many unresolved buys the stock allows now.
    pub fn budget(&self) -> u64 {
        let left = self.stock_left();
        if left == 0 {
            return 0;
        }
        ((left as f64 * self.settings.overbook).ceil() as u64).max(1)
    }

    /// Takes an isolate's report, answers its waiting buyers and leases it
    /// a slice of what is left.
    pub fn sync(&mut self, request: &SyncRequest, now_ms: u64) -> SyncAnswer {
        let blocked = self.take_report(request, now_ms);
        self.answer(request, now_ms, blocked)
    }

    /// The first half of [`GateBook::sync`]: what the isolate reports (the
    /// object applies it before it decides whether to read the stock, so
    /// outcomes that empty the book are asked about at once). Returns the
    /// members it blocks.
    pub fn take_report(&mut self, request: &SyncRequest, now_ms: u64) -> Vec<(MemberId, u64)> {
        self.calls += 1;
        let timeout = self.settings.holder_timeout_ms;
        self.holders
            .retain(|_, h| now_ms.saturating_sub(h.seen_ms) < timeout);
        self.accepted += u64::from(request.outcomes.accepted);
        self.sold_out += u64::from(request.outcomes.sold_out);
        let holder = self.holders.entry(request.holder).or_insert(Holder {
            unresolved: 0,
            lease: 0,
            lease_held_until_ms: 0,
            seen_ms: now_ms,
        });
        holder.seen_ms = now_ms;
        // The old lease ends with this call: what was spent of it waits on
        // the origin now, the rest is free again.
        holder.lease = 0;
        holder.unresolved = (holder.unresolved + request.spent)
            .saturating_sub(request.outcomes.total() + request.unspent);

        charge_spent(self.limiter.as_mut(), &request.spent_members, now_ms)
    }

    /// The second half of [`GateBook::sync`]: the isolate's waiting buyers
    /// decided and its next lease.
    pub fn answer(
        &mut self,
        request: &SyncRequest,
        now_ms: u64,
        mut blocked: Vec<(MemberId, u64)>,
    ) -> SyncAnswer {
        let lease_ms = self.settings.lease_ms;
        if self.reading.is_none() {
            return unavailable_answer(request.members.len(), lease_ms, blocked);
        }
        let mut available = self.budget().saturating_sub(self.held(now_ms));
        let sold_out = self.stock_left() == 0 && self.origin_says_sold_out();
        let refusal = if sold_out {
            Admission::SoldOut
        } else {
            Admission::Busy
        };
        let (admissions, admitted) = admit_members(
            &request.members,
            self.limiter.as_mut(),
            now_ms,
            &mut available,
            refusal,
            &mut blocked,
            |_| {},
        );
        let leasing = 1 + self
            .holders
            .iter()
            .filter(|(id, h)| {
                **id != request.holder && h.lease > 0 && now_ms < h.lease_held_until_ms
            })
            .count() as u64;
        let lease = lease_share(available, leasing, request.demand);
        available -= u64::from(lease);
        if let Some(holder) = self.holders.get_mut(&request.holder) {
            holder.unresolved += admitted;
            holder.lease = lease;
            holder.lease_held_until_ms = now_ms + 2 * lease_ms;
        }
        let beyond = if available > 0 {
            Admission::Admit
        } else if sold_out {
            Admission::SoldOut
        } else {
            Admission::Busy
        };
        SyncAnswer {
            admissions,
            lease,
            lease_ms,
            beyond,
            blocked,
        }
    }
}

/// Isolates' holder ids are random below this; shards' are above it. (Ids
/// go through JSON in JavaScript: they stay below 2^53.)
pub const ISOLATE_HOLDERS: u64 = 1 << 52;

/// Most shards a product's gate has (`GATE_SHARDS`).
pub const MAX_SHARDS: u32 = 64;

/// The holder id a shard has at the product's root object: one per shard
/// and incarnation, so a restarted shard (which forgot what its isolates
/// held) is a new holder, and what the old one held is freed by the
/// root's holder timeout.
pub fn shard_holder(shard: u32, incarnation: u64) -> u64 {
    ISOLATE_HOLDERS + (incarnation % ISOLATE_HOLDERS / 64) * 64 + u64::from(shard % MAX_SHARDS)
}

#[derive(Debug, Clone, Copy)]
struct ShardHolder {
    unresolved: u32,
    lease: u32,
    /// The root lease the isolate's lease was given from.
    epoch: u64,
    demand: u32,
    seen_ms: u64,
}

/// What a shard owes the root: everything it gave out counts as spent at
/// once; what comes back unused later is `unspent`.
#[derive(Debug, Default, Clone)]
struct ToRoot {
    spent: u64,
    unspent: u64,
    spent_members: Vec<MemberId>,
    outcomes: Outcomes,
}

/// One shard of a product's gate (`GATE_SHARDS` > 1): it serves its
/// isolates exactly as the root serves isolates, but instead of reading
/// the stock it leases its supply from the product's root object with the
/// same protocol one level up (the shard is one holder there). So the
/// budget is never split into fixed fractions: a shard holds only what its
/// isolates asked for in the last lease, and returns the rest.
pub struct ShardBook {
    settings: GateSettings,
    holders: HashMap<u64, ShardHolder>,
    /// Units leased from the root, free to give out until `supply_until_ms`.
    supply: u64,
    supply_until_ms: u64,
    /// Which root lease `supply` is.
    epoch: u64,
    /// The root's last word on what lies beyond its lease (`None`: never
    /// heard from).
    root_beyond: Option<Admission>,
    to_root: ToRoot,
    limiter: Option<RateLimiter>,
    /// Members the root blocked, until when: relayed to every isolate.
    blocks: HashMap<MemberId, u64>,
    calls: u64,
    /// A random id of this shard's life (see [`shard_holder`]).
    incarnation: u64,
}

impl ShardBook {
    pub fn new(settings: GateSettings, incarnation: u64) -> Self {
        Self {
            incarnation,
            settings,
            holders: HashMap::new(),
            supply: 0,
            supply_until_ms: 0,
            epoch: 0,
            root_beyond: None,
            to_root: ToRoot::default(),
            limiter: settings
                .member_limit
                .map(|limit| RateLimiter::new(limit, LIMITED_MEMBERS)),
            blocks: HashMap::new(),
            calls: 0,
        }
    }

    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// What is free to give out now.
    fn available(&self, now_ms: u64) -> u64 {
        if now_ms < self.supply_until_ms {
            self.supply
        } else {
            0
        }
    }

    /// True when the shard should call the root before answering: never
    /// heard from it, its lease is over, or the root may have more and the
    /// supply cannot cover the buyers waiting (or is spent while more are
    /// expected).
    pub fn root_due(&self, request: &SyncRequest, now_ms: u64) -> bool {
        match self.root_beyond {
            None => true,
            Some(beyond) => {
                let available = self.available(now_ms);
                now_ms >= self.supply_until_ms
                    || (beyond == Admission::Admit
                        && (available < request.members.len() as u64
                            || (available == 0 && request.demand > 0)))
            }
        }
    }

    /// True while the root has not heard everything (outcomes, what was
    /// given out or returned): it is told when the lease ends.
    pub fn owes_root(&self) -> bool {
        let owed = &self.to_root;
        owed.spent > 0 || owed.unspent > 0 || !owed.outcomes.is_empty()
    }

    pub fn supply_until_ms(&self) -> u64 {
        self.supply_until_ms
    }

    /// The shard's call to the root: it ends the shard's lease (what is
    /// left of the supply goes back) and asks for its isolates' demand;
    /// `members` are the buyers of the isolate call that made it due, for
    /// the root to decide first come, first served from all it has.
    pub fn root_request(
        &mut self,
        shard: u32,
        product: ProductId,
        now_ms: u64,
        members: Vec<MemberId>,
    ) -> SyncRequest {
        let lease_ms = self.settings.lease_ms;
        let demand: u64 = self
            .holders
            .values()
            .filter(|h| now_ms.saturating_sub(h.seen_ms) < 2 * lease_ms)
            .map(|h| u64::from(h.demand))
            .sum();
        self.supply = 0;
        self.supply_until_ms = 0;
        self.epoch += 1;
        let owed = std::mem::take(&mut self.to_root);
        SyncRequest {
            product,
            holder: shard_holder(shard, self.incarnation),
            members,
            spent: owed.spent.min(u64::from(u32::MAX)) as u32,
            spent_members: owed.spent_members,
            demand: demand.min(u64::from(u32::MAX)) as u32,
            outcomes: owed.outcomes,
            unspent: owed.unspent.min(u64::from(u32::MAX)) as u32,
            shard: None,
        }
    }

    /// The root's answer to `request`, sent at `sent_ms` (`None`: the call
    /// failed; what it reported goes with the next one, and the shard says
    /// busy for one lease).
    pub fn apply_root(
        &mut self,
        request: SyncRequest,
        answer: Option<&SyncAnswer>,
        sent_ms: u64,
        now_ms: u64,
    ) {
        match answer {
            Some(answer) => {
                self.supply = u64::from(answer.lease);
                self.supply_until_ms = sent_ms + answer.lease_ms;
                self.root_beyond = Some(answer.beyond);
                for &(member, wait_ms) in &answer.blocked {
                    self.blocks.insert(member, now_ms + wait_ms);
                }
            }
            None => {
                self.supply_until_ms = now_ms + self.settings.lease_ms;
                self.root_beyond = Some(Admission::Busy);
                self.to_root.spent += u64::from(request.spent);
                self.to_root.unspent += u64::from(request.unspent);
                self.to_root.outcomes.add(request.outcomes);
                self.to_root.spent_members.extend(request.spent_members);
            }
        }
    }

    /// The first half of an isolate's call: what it reports.
    pub fn take_report(&mut self, request: &SyncRequest, now_ms: u64) -> Vec<(MemberId, u64)> {
        self.calls += 1;
        let timeout = self.settings.holder_timeout_ms;
        let owed = &mut self.to_root;
        self.holders.retain(|_, h| {
            let alive = now_ms.saturating_sub(h.seen_ms) < timeout;
            if !alive {
                // A silent isolate's buys have been answered or timed out,
                // and its lease is long over: the root gets them back.
                owed.unspent += u64::from(h.unresolved) + u64::from(h.lease);
            }
            alive
        });
        let epoch = self.epoch;
        let holder = self.holders.entry(request.holder).or_insert(ShardHolder {
            unresolved: 0,
            lease: 0,
            epoch,
            demand: 0,
            seen_ms: now_ms,
        });
        holder.seen_ms = now_ms;
        holder.demand = request.demand.max(request.members.len() as u32);
        let returned = u64::from(holder.lease.saturating_sub(request.spent));
        if holder.epoch == epoch {
            // Not yet reported to the root: take it back from what is owed.
            self.to_root.spent = self.to_root.spent.saturating_sub(returned);
            if now_ms < self.supply_until_ms {
                self.supply += returned;
            }
        } else {
            self.to_root.unspent += returned;
        }
        holder.lease = 0;
        let resolved = request.outcomes.total() + request.unspent;
        let excess = (holder.unresolved + request.spent).saturating_sub(resolved);
        holder.unresolved = excess;
        self.to_root.outcomes.add(request.outcomes);
        self.to_root
            .spent_members
            .extend(request.spent_members.iter().copied());
        charge_spent(self.limiter.as_mut(), &request.spent_members, now_ms)
    }

    /// The second half: the isolate's waiting buyers decided from the
    /// supply, and its next lease.
    /// `decided`: the root's admissions for the request's members, when
    /// the shard carried them to the root (already counted there).
    pub fn answer(
        &mut self,
        request: &SyncRequest,
        now_ms: u64,
        mut blocked: Vec<(MemberId, u64)>,
        decided: Option<&[Admission]>,
    ) -> SyncAnswer {
        let lease_ms = self.settings.lease_ms;
        self.blocks.retain(|_, until| now_ms < *until);
        blocked.extend(self.blocks.iter().map(|(m, until)| (*m, until - now_ms)));
        let Some(root_beyond) = self.root_beyond else {
            return unavailable_answer(request.members.len(), lease_ms, blocked);
        };
        let refusal = match root_beyond {
            Admission::Admit => Admission::Busy,
            other => other,
        };
        if let Some(decided) = decided.filter(|d| d.len() == request.members.len()) {
            let at_root = decided.iter().filter(|a| **a == Admission::Admit).count() as u32;
            if let Some(holder) = self.holders.get_mut(&request.holder) {
                holder.unresolved += at_root;
            }
            return self.finish_answer(request, now_ms, decided.to_vec(), blocked);
        }
        let mut available = self.available(now_ms);
        let to_root = &mut self.to_root;
        let (admissions, admitted) = admit_members(
            &request.members,
            self.limiter.as_mut(),
            now_ms,
            &mut available,
            refusal,
            &mut blocked,
            // The root charges it too: the limit spans shards.
            |member| to_root.spent_members.push(member),
        );
        self.supply = available;
        self.to_root.spent += u64::from(admitted);
        if let Some(holder) = self.holders.get_mut(&request.holder) {
            holder.unresolved += admitted;
        }
        self.finish_answer(request, now_ms, admissions, blocked)
    }

    /// The isolate's next lease, from what is left of the supply.
    fn finish_answer(
        &mut self,
        request: &SyncRequest,
        now_ms: u64,
        admissions: Vec<Admission>,
        blocked: Vec<(MemberId, u64)>,
    ) -> SyncAnswer {
        let lease_ms = self.settings.lease_ms;
        let root_beyond = self.root_beyond.unwrap_or(Admission::Unavailable);
        let mut available = self.available(now_ms);
        let epoch = self.epoch;
        let leasing = 1 + self
            .holders
            .iter()
            .filter(|(id, h)| **id != request.holder && h.lease > 0 && h.epoch == epoch)
            .count() as u64;
        let lease = lease_share(available, leasing, request.demand);
        available -= u64::from(lease);
        self.supply = available;
        self.to_root.spent += u64::from(lease);
        if let Some(holder) = self.holders.get_mut(&request.holder) {
            holder.lease = lease;
            holder.epoch = epoch;
        }
        let beyond = if available > 0 {
            Admission::Admit
        } else {
            root_beyond
        };
        SyncAnswer {
            admissions,
            lease,
            lease_ms,
            beyond,
            blocked,
        }
    }
}

/// One call to the object: who it asks for and what it reports.
#[derive(Debug, Clone)]
pub struct Batch {
    pub tickets: Vec<u64>,
    pub request: SyncRequest,
    pub sent_ms: u64,
}

/// What an isolate's buyer learns on arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Decided at once, from the lease or the object's last answer.
    Decided(Admission),
    /// Waiting for a call: collect the admission with this ticket.
    Waiting(u64),
}

/// How an isolate's queue treats members.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueSettings {
    /// How long a lease lasts (the object says so too; this sizes demand).
    pub lease_ms: u64,
    /// The gate keeps the member limit: a member this isolate saw within
    /// `recheck_ms` is decided by the object, not from the lease.
    pub check_members: bool,
    pub recheck_ms: u64,
    /// Objects a product's gate is sharded over (1: the root only).
    pub shards: u32,
}

impl QueueSettings {
    /// The shard this isolate calls, by its holder id.
    pub fn shard_of(&self, holder: u64) -> Option<u32> {
        (self.shards > 1).then(|| (holder % u64::from(self.shards)) as u32)
    }
}

/// Members remembered as recent or blocked before the lists are pruned.
const REMEMBERED_MEMBERS: usize = 100_000;

/// One product's lease, waiting buyers and unreported outcomes in one
/// isolate.
#[derive(Debug, Default)]
pub struct GateQueue {
    settings: QueueSettings,
    next_ticket: u64,
    /// Buyers waiting for a call, in arrival order; `true`: the member must
    /// be checked by the object.
    waiting: VecDeque<(u64, MemberId, bool)>,
    decided: HashMap<u64, Admission>,
    in_flight_since_ms: Option<u64>,
    unreported: Outcomes,
    lease: u32,
    lease_until_ms: u64,
    beyond: Option<Admission>,
    spent: u32,
    spent_members: Vec<MemberId>,
    /// Buyers that arrived since the last call.
    demand: u32,
    last_call_ms: Option<u64>,
    recent: HashMap<MemberId, u64>,
    blocked: HashMap<MemberId, u64>,
    settling: bool,
}

impl GateQueue {
    pub fn new(settings: QueueSettings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }

    /// A buyer arrives: admitted from the lease, answered from the object's
    /// last word, or queued for the next call.
    pub fn arrive(&mut self, member: MemberId, now_ms: u64) -> Arrival {
        self.demand = self.demand.saturating_add(1);
        if self
            .blocked
            .get(&member)
            .is_some_and(|until| now_ms < *until)
        {
            return Arrival::Decided(Admission::RateLimited);
        }
        let check = self.settings.check_members
            && self
                .recent
                .get(&member)
                .is_some_and(|seen| now_ms.saturating_sub(*seen) < self.settings.recheck_ms);
        if self.settings.check_members {
            if self.recent.len() >= REMEMBERED_MEMBERS {
                let recheck_ms = self.settings.recheck_ms;
                self.recent
                    .retain(|_, seen| now_ms.saturating_sub(*seen) < recheck_ms);
                self.blocked.retain(|_, until| now_ms < *until);
            }
            self.recent.insert(member, now_ms);
        }
        if self.waiting.is_empty() {
            if let Some(admission) = self.decide_by_lease(member, check, now_ms) {
                return Arrival::Decided(admission);
            }
        }
        self.next_ticket += 1;
        self.waiting.push_back((self.next_ticket, member, check));
        Arrival::Waiting(self.next_ticket)
    }

    /// What the lease decides for this buyer, if it decides.
    fn decide_by_lease(&mut self, member: MemberId, check: bool, now_ms: u64) -> Option<Admission> {
        if now_ms >= self.lease_until_ms {
            self.lease = 0;
            return None;
        }
        if self.lease > 0 {
            if check {
                return None;
            }
            self.lease -= 1;
            self.spent += 1;
            if self.settings.check_members {
                self.spent_members.push(member);
            }
            return Some(Admission::Admit);
        }
        self.beyond.filter(|beyond| *beyond != Admission::Admit)
    }

    /// The buyer's admission, once decided.
    pub fn take(&mut self, ticket: u64) -> Option<Admission> {
        self.decided.remove(&ticket)
    }

    /// A buyer that gives up waiting leaves the queue; an admission that
    /// arrived meanwhile is still its to use.
    pub fn abandon(&mut self, ticket: u64) -> Option<Admission> {
        self.waiting.retain(|(t, _, _)| *t != ticket);
        self.decided.remove(&ticket)
    }

    /// The outcome of an admitted buy, reported with the next call.
    pub fn record(&mut self, outcome: Outcomes) {
        self.unreported.add(outcome);
    }

    /// True while the queue holds anything the object must hear of.
    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty()
            || !self.unreported.is_empty()
            || self.lease > 0
            || self.spent > 0
            || self.demand > 0
    }

    /// Starts a call when none is in flight (or the one in flight has been
    /// silent for `stale_ms`, its request gone) and either buyers wait or
    /// the lease is over with something to report or renew.
    pub fn start(
        &mut self,
        holder: u64,
        product: ProductId,
        now_ms: u64,
        stale_ms: u64,
    ) -> Option<Batch> {
        if self
            .in_flight_since_ms
            .is_some_and(|since| now_ms.saturating_sub(since) < stale_ms)
        {
            return None;
        }
        let lease_over = now_ms >= self.lease_until_ms;
        if self.waiting.is_empty() && !(lease_over && self.has_work()) {
            return None;
        }
        self.in_flight_since_ms = Some(now_ms);
        // The lease ends with the call; buyers arriving meanwhile wait for
        // its answer.
        self.lease = 0;
        self.lease_until_ms = 0;
        let (tickets, members) = self.waiting.drain(..).map(|(t, m, _)| (t, m)).unzip();
        // Arrivals since the last call, as a rate over one lease interval
        // (a quick second call after a burst asks for the burst's rate).
        let lease_ms = self.settings.lease_ms.max(1);
        let since_ms = self
            .last_call_ms
            .map_or(lease_ms, |last| now_ms.saturating_sub(last))
            .max(10);
        let arrived = u64::from(std::mem::take(&mut self.demand));
        let demand = (arrived * lease_ms)
            .div_ceil(since_ms)
            .min(u64::from(u32::MAX)) as u32;
        self.last_call_ms = Some(now_ms);
        let request = SyncRequest {
            product,
            holder,
            members,
            unspent: 0,
            shard: self.settings.shard_of(holder),
            spent: std::mem::take(&mut self.spent),
            spent_members: std::mem::take(&mut self.spent_members),
            demand,
            outcomes: std::mem::take(&mut self.unreported),
        };
        Some(Batch {
            tickets,
            request,
            sent_ms: now_ms,
        })
    }

    /// The call returned (`None`: it failed; its buyers are told the sale is
    /// busy and what it reported goes with the next call). Buyers that
    /// arrived meanwhile are served from the new lease where it can.
    pub fn finish(&mut self, batch: Batch, answer: Option<&SyncAnswer>, now_ms: u64) {
        self.in_flight_since_ms = None;
        match answer {
            Some(answer) => {
                for (i, ticket) in batch.tickets.into_iter().enumerate() {
                    let admission = answer.admissions.get(i).copied().unwrap_or(Admission::Busy);
                    self.decided.insert(ticket, admission);
                }
                for &(member, wait_ms) in &answer.blocked {
                    self.blocked.insert(member, now_ms + wait_ms);
                }
                self.lease = answer.lease;
                self.lease_until_ms = batch.sent_ms + answer.lease_ms;
                self.beyond = Some(answer.beyond);
                let waiting = std::mem::take(&mut self.waiting);
                for (ticket, member, check) in waiting {
                    let blocked = self
                        .blocked
                        .get(&member)
                        .is_some_and(|until| now_ms < *until);
                    let decided = if blocked {
                        Some(Admission::RateLimited)
                    } else if self.waiting.is_empty() {
                        self.decide_by_lease(member, check, now_ms)
                    } else {
                        None
                    };
                    match decided {
                        Some(admission) => {
                            self.decided.insert(ticket, admission);
                        }
                        None => self.waiting.push_back((ticket, member, check)),
                    }
                }
            }
            None => {
                // Everybody waiting is told the sale is busy, and so is
                // everybody arriving for one lease interval: a gate that is
                // away is not asked again at once.
                let waiting = self.waiting.drain(..).map(|(ticket, _, _)| ticket);
                for ticket in batch.tickets.into_iter().chain(waiting) {
                    self.decided.insert(ticket, Admission::Busy);
                }
                self.lease_until_ms = now_ms + self.settings.lease_ms;
                self.beyond = Some(Admission::Busy);
                let request = batch.request;
                self.unreported.add(request.outcomes);
                self.spent += request.spent;
                self.spent_members.extend(request.spent_members);
            }
        }
    }

    /// For the isolate's one settling task per product: when to look again
    /// (a call in flight, or the lease's end), or `None` — nothing left to
    /// report, and the task is released.
    pub fn settle_due(&mut self, now_ms: u64) -> Option<u64> {
        if self.in_flight_since_ms.is_some() {
            return Some(now_ms + 10);
        }
        if !self.has_work() {
            self.settling = false;
            return None;
        }
        Some(self.lease_until_ms.max(now_ms))
    }

    /// Claims the settling task; false when one runs already.
    pub fn claim_settler(&mut self) -> bool {
        !std::mem::replace(&mut self.settling, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const LEASE_MS: u64 = 200;

    fn settings(overbook: f64) -> GateSettings {
        GateSettings {
            overbook,
            reread_ms: 500,
            correct_ms: 5_000,
            holder_timeout_ms: 10_000,
            lease_ms: LEASE_MS,
            member_limit: None,
        }
    }

    fn m(id: i64) -> MemberId {
        MemberId::new(id).unwrap()
    }

    fn p() -> ProductId {
        ProductId::new(1).unwrap()
    }

    fn ask(holder: u64, members: std::ops::Range<i64>, outcomes: Outcomes) -> SyncRequest {
        SyncRequest {
            product: p(),
            holder,
            members: members.map(m).collect(),
            spent: 0,
            spent_members: Vec::new(),
            demand: 0,
            outcomes,
            unspent: 0,
            shard: None,
        }
    }

    fn lease(holder: u64, demand: u32, spent: u32) -> SyncRequest {
        SyncRequest {
            demand,
            spent,
            ..ask(holder, 0..0, Outcomes::default())
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
        assert_eq!((answer.lease, answer.beyond), (0, Admission::Busy));
        // Another isolate finds the budget spent.
        let other = book.sync(&ask(2, 1_000..1_010, Outcomes::default()), 20);
        assert_eq!(count(&other, Admission::Busy), 10);
    }

    #[test]
    fn a_lease_is_a_bounded_slice_of_what_is_left() {
        let mut book = book(100, 2.0);
        // Alone, an isolate takes at most half of the 200 free.
        let one = book.sync(&lease(1, 1_000, 0), 0);
        assert_eq!((one.lease, one.beyond), (100, Admission::Admit));
        // With one other lease out: a quarter of the 100 left.
        let two = book.sync(&lease(2, 1_000, 0), 0);
        assert_eq!(two.lease, 25);
        // No more than the isolate expects to need.
        let three = book.sync(&lease(3, 5, 0), 0);
        assert_eq!(three.lease, 5);
        assert_eq!(book.held(0), 130);
        // At the last free unit, a lease of one.
        let mut small = super::tests::book(1, 1.0);
        assert_eq!(small.sync(&lease(1, 5, 0), 0).lease, 1);
        let spent = small.sync(&lease(2, 5, 0), 0);
        assert_eq!((spent.lease, spent.beyond), (0, Admission::Busy));
    }

    #[test]
    fn a_lease_ends_with_the_next_call_and_what_was_spent_is_held() {
        let mut book = book(100, 2.0);
        assert_eq!(book.sync(&lease(1, 1_000, 0), 0).lease, 100);
        // 30 were spent: they wait on the origin; the other 70 come back.
        let renewed = book.sync(&lease(1, 0, 30), 150);
        assert_eq!(renewed.lease, 0);
        assert_eq!(book.held(150), 30);
        let outcomes = Outcomes {
            accepted: 30,
            ..Outcomes::default()
        };
        book.sync(&ask(1, 0..0, outcomes), 300);
        assert_eq!(book.held(300), 0);
        assert_eq!(book.stock_left(), 70);
        assert_eq!(book.budget(), 140);
    }

    #[test]
    fn a_lease_not_renewed_is_free_two_intervals_later() {
        let mut book = book(10, 1.0);
        assert_eq!(book.sync(&lease(1, 100, 0), 0).lease, 5);
        assert_eq!(book.held(2 * LEASE_MS - 1), 5);
        assert_eq!(book.held(2 * LEASE_MS), 0);
        let other = book.sync(&lease(2, 100, 0), 2 * LEASE_MS);
        assert_eq!(other.lease, 5, "half of the ten free again");
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
        assert_eq!(answer.beyond, Admission::SoldOut);
        assert_eq!(book.held(30), 0);
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
        assert_eq!(three.blocked, vec![(m(7), 1_000)]);
        // Admitted from leases in two isolates before the gate heard of it:
        // the member owes those buys, and is blocked until they are repaid.
        let spent = |holder| SyncRequest {
            spent: 1,
            spent_members: vec![m(8)],
            ..ask(holder, 0..0, Outcomes::default())
        };
        assert!(book.sync(&spent(1), 0).blocked.is_empty());
        assert_eq!(book.sync(&spent(2), 0).blocked, vec![(m(8), 1_000)]);
        assert_eq!(book.sync(&spent(1), 0).blocked, vec![(m(8), 2_000)]);
        let asked = book.sync(&ask(2, 8..9, Outcomes::default()), 1_500);
        assert_eq!(asked.admissions, vec![Admission::RateLimited]);
        let repaid = book.sync(&ask(2, 8..9, Outcomes::default()), 2_000);
        assert_eq!(repaid.admissions, vec![Admission::Admit]);
    }

    #[test]
    fn without_a_reading_nothing_is_admitted() {
        let mut book = GateBook::new(settings(2.0));
        let answer = book.sync(&lease(1, 5, 0), 0);
        assert_eq!((answer.lease, answer.beyond), (0, Admission::Unavailable));
        let answer = book.sync(&ask(1, 1..3, Outcomes::default()), 0);
        assert_eq!(answer.admissions, vec![Admission::Unavailable; 2]);
        assert_eq!(book.calls(), 2);
    }

    fn queue(check_members: bool) -> GateQueue {
        GateQueue::new(QueueSettings {
            lease_ms: LEASE_MS,
            check_members,
            recheck_ms: 500,
            shards: 1,
        })
    }

    fn answer(admissions: Vec<Admission>, lease: u32, beyond: Admission) -> SyncAnswer {
        SyncAnswer {
            admissions,
            lease,
            lease_ms: LEASE_MS,
            beyond,
            blocked: Vec::new(),
        }
    }

    fn ticket(arrival: Arrival) -> u64 {
        match arrival {
            Arrival::Waiting(ticket) => ticket,
            decided => panic!("expected to wait, got {decided:?}"),
        }
    }

    #[test]
    fn buyers_are_admitted_from_the_lease_without_a_call() {
        let mut queue = queue(false);
        let first = ticket(queue.arrive(m(1), 0));
        let batch = queue.start(9, p(), 0, 1_000).unwrap();
        assert_eq!(batch.request.members, vec![m(1)]);
        // Two arrive while the call is out; the answer's lease takes them.
        let (a, b) = (ticket(queue.arrive(m(2), 5)), ticket(queue.arrive(m(3), 6)));
        queue.finish(
            batch,
            Some(&answer(vec![Admission::Admit], 3, Admission::Busy)),
            10,
        );
        for t in [first, a, b] {
            assert_eq!(queue.take(t), Some(Admission::Admit));
        }
        assert_eq!(queue.arrive(m(4), 20), Arrival::Decided(Admission::Admit));
        // Spent: the object's last word, until the lease ends.
        assert_eq!(queue.arrive(m(5), 30), Arrival::Decided(Admission::Busy));
        assert!(queue.start(9, p(), 40, 1_000).is_none(), "nobody waits");
        assert_eq!(queue.settle_due(40), Some(LEASE_MS));
        // Over: the next buyer waits for a call, which reports the three
        // spent and asks for about the rate seen.
        let late = ticket(queue.arrive(m(6), LEASE_MS));
        let batch = queue.start(9, p(), LEASE_MS, 1_000).unwrap();
        assert_eq!(batch.request.spent, 3);
        assert_eq!(batch.request.members, vec![m(6)]);
        assert_eq!(batch.request.demand, 5, "five arrived in one interval");
        queue.finish(
            batch,
            Some(&answer(vec![Admission::Busy], 0, Admission::Busy)),
            210,
        );
        assert_eq!(queue.take(late), Some(Admission::Busy));
    }

    #[test]
    fn a_burst_asks_for_its_rate_over_an_interval() {
        let mut queue = queue(false);
        ticket(queue.arrive(m(1), 0));
        let batch = queue.start(9, p(), 0, 1_000).unwrap();
        queue.finish(
            batch,
            Some(&answer(vec![Admission::Admit], 0, Admission::Admit)),
            20,
        );
        for id in 2..52 {
            ticket(queue.arrive(m(id), 20));
        }
        let batch = queue.start(9, p(), 20, 1_000).unwrap();
        assert_eq!(batch.request.demand, 500, "50 in 20 ms: 500 in 200 ms");
    }

    #[test]
    fn the_lease_is_reported_when_it_ends_even_without_buyers() {
        let mut queue = queue(false);
        assert!(queue.claim_settler());
        assert!(!queue.claim_settler(), "one settling task at a time");
        ticket(queue.arrive(m(1), 0));
        let batch = queue.start(9, p(), 0, 1_000).unwrap();
        queue.finish(
            batch,
            Some(&answer(vec![Admission::Admit], 10, Admission::Admit)),
            10,
        );
        queue.record(Outcomes::of(Some(202), false));
        assert!(
            queue.start(9, p(), 100, 1_000).is_none(),
            "not before it ends"
        );
        assert_eq!(queue.settle_due(100), Some(LEASE_MS));
        let report = queue.start(9, p(), LEASE_MS, 1_000).unwrap();
        assert_eq!(report.request.outcomes.accepted, 1);
        assert!(report.request.members.is_empty());
        assert_eq!(queue.settle_due(LEASE_MS), Some(LEASE_MS + 10), "in flight");
        queue.finish(report, Some(&answer(vec![], 0, Admission::Admit)), 210);
        assert_eq!(queue.settle_due(210), None, "nothing more: released");
        assert!(queue.claim_settler());
    }

    #[test]
    fn a_member_seen_lately_is_decided_by_the_object() {
        let mut queue = queue(true);
        ticket(queue.arrive(m(1), 0));
        let batch = queue.start(9, p(), 0, 1_000).unwrap();
        queue.finish(
            batch,
            Some(&answer(vec![Admission::Admit], 10, Admission::Admit)),
            10,
        );
        assert_eq!(queue.arrive(m(2), 20), Arrival::Decided(Admission::Admit));
        // Member 1 again within the recheck: the object counts it first.
        let again = ticket(queue.arrive(m(1), 30));
        let batch = queue.start(9, p(), 30, 1_000).unwrap();
        assert_eq!(batch.request.members, vec![m(1)]);
        assert_eq!(batch.request.spent_members, vec![m(2)]);
        let mut refused = answer(vec![Admission::RateLimited], 10, Admission::Admit);
        refused.blocked = vec![(m(1), 400), (m(2), 100)];
        queue.finish(batch, Some(&refused), 40);
        assert_eq!(queue.take(again), Some(Admission::RateLimited));
        // Blocked members are refused here, until the block ends.
        assert_eq!(
            queue.arrive(m(2), 100),
            Arrival::Decided(Admission::RateLimited)
        );
        assert_eq!(
            queue.arrive(m(1), 439),
            Arrival::Decided(Admission::RateLimited)
        );
        assert_eq!(queue.arrive(m(2), 1_000), Arrival::Waiting(3), "lease over");
    }

    #[test]
    fn a_failed_call_is_busy_for_an_interval_and_reports_again() {
        let mut queue = queue(false);
        let a = ticket(queue.arrive(m(1), 0));
        queue.record(Outcomes::of(Some(202), false));
        let batch = queue.start(9, p(), 0, 1_000).unwrap();
        let b = ticket(queue.arrive(m(2), 5));
        queue.finish(batch, None, 50);
        assert_eq!(queue.take(a), Some(Admission::Busy));
        assert_eq!(queue.take(b), Some(Admission::Busy));
        assert_eq!(queue.arrive(m(3), 60), Arrival::Decided(Admission::Busy));
        assert_eq!(queue.settle_due(60), Some(50 + LEASE_MS));
        let report = queue.start(9, p(), 50 + LEASE_MS, 1_000).unwrap();
        assert_eq!(report.request.outcomes.accepted, 1);
        // A call whose request vanished is taken over.
        ticket(queue.arrive(m(4), 300));
        assert!(queue.start(9, p(), 300, 1_000).is_none());
        assert!(queue.start(9, p(), 50 + LEASE_MS + 1_000, 1_000).is_some());
    }

    /// A shard's call, with the root's part played by `root` when due.
    fn via_shard(
        root: &mut GateBook,
        shard: &mut ShardBook,
        request: &SyncRequest,
        now_ms: u64,
    ) -> SyncAnswer {
        let blocked = shard.take_report(request, now_ms);
        if shard.root_due(request, now_ms) {
            let up = shard.root_request(0, p(), now_ms, request.members.clone());
            let answer = root.sync(&up, now_ms);
            shard.apply_root(up, Some(&answer), now_ms, now_ms);
            return shard.answer(request, now_ms, blocked, Some(&answer.admissions));
        }
        shard.answer(request, now_ms, blocked, None)
    }

    #[test]
    fn a_shard_leases_from_the_root_and_returns_what_its_isolates_leave() {
        let mut root = book(100, 2.0);
        let mut shard = ShardBook::new(settings(2.0), 1);
        let first = via_shard(&mut root, &mut shard, &lease(7, 1_000, 0), 0);
        // The root leased the shard half its 200; the shard, half of that.
        assert_eq!((first.lease, first.beyond), (50, Admission::Admit));
        assert_eq!(root.held(0), 100);
        // 20 spent; the other 30 go back to the shard's supply.
        let renewed = via_shard(&mut root, &mut shard, &lease(7, 0, 20), 150);
        assert_eq!(renewed.lease, 0);
        // The root lease over, the shard reports: 20 given out, 20 sold.
        let sold = SyncRequest {
            outcomes: Outcomes {
                accepted: 20,
                ..Outcomes::default()
            },
            ..ask(7, 0..0, Outcomes::default())
        };
        via_shard(&mut root, &mut shard, &sold, LEASE_MS);
        assert!(!shard.owes_root());
        assert_eq!(root.held(LEASE_MS), 0);
        assert_eq!(root.stock_left(), 80);
    }

    #[test]
    fn a_lease_older_than_the_shards_renewal_comes_back_as_unspent() {
        let mut root = book(100, 2.0);
        let mut shard = ShardBook::new(settings(2.0), 1);
        assert_eq!(
            via_shard(&mut root, &mut shard, &lease(7, 1_000, 0), 0).lease,
            50
        );
        // Another isolate renews the shard's lease: the 50 out count as
        // spent at the root.
        let other = via_shard(&mut root, &mut shard, &lease(8, 100, 0), LEASE_MS);
        assert_eq!(root.held(LEASE_MS), 50 + 75, "50 reported, 75 leased");
        assert_eq!(other.lease, 37);
        // The first isolate used 10 of its 50: 40 are owed back.
        via_shard(&mut root, &mut shard, &lease(7, 0, 10), 210);
        via_shard(&mut root, &mut shard, &lease(8, 0, 37), 2 * LEASE_MS);
        assert_eq!(root.held(2 * LEASE_MS), 10 + 37);
    }

    #[test]
    fn buyers_the_supply_cannot_cover_are_decided_by_the_root() {
        let mut root = book(100, 2.0);
        let mut shard = ShardBook::new(settings(2.0), 1);
        via_shard(&mut root, &mut shard, &lease(7, 2, 0), 0);
        let three = ask(8, 1..4, Outcomes::default());
        shard.take_report(&three, 10);
        assert!(shard.root_due(&three, 10), "one unit supplied, three wait");
        let answer = via_shard(
            &mut root,
            &mut shard,
            &ask(8, 1..4, Outcomes::default()),
            10,
        );
        assert_eq!(count(&answer, Admission::Admit), 3);
    }

    #[test]
    fn a_silent_isolate_of_a_shard_gives_the_root_its_holdings_back() {
        let mut root = book(10, 1.0);
        let mut shard = ShardBook::new(
            GateSettings {
                holder_timeout_ms: 5_000,
                ..settings(1.0)
            },
            1,
        );
        let first = via_shard(&mut root, &mut shard, &ask(7, 1..3, Outcomes::default()), 0);
        assert_eq!(count(&first, Admission::Admit), 2, "decided by the root");
        assert_eq!(root.held(0), 2 + 2, "and two leased for the demand");
        // Isolate 7 falls silent; the shard gives back its two unresolved
        // at its next call to the root (the root still hears the shard).
        let later = 6_000;
        via_shard(&mut root, &mut shard, &lease(8, 0, 0), later);
        assert_eq!(root.held(later), 0);
        assert!(!shard.owes_root());
    }

    #[test]
    fn a_shard_says_what_the_root_says() {
        let mut root = book(2, 1.0);
        let mut shard = ShardBook::new(settings(1.0), 1);
        let lonely = ShardBook::new(settings(1.0), 1).answer(
            &ask(1, 1..2, Outcomes::default()),
            0,
            vec![],
            None,
        );
        assert_eq!(lonely.admissions, vec![Admission::Unavailable]);
        let first = via_shard(&mut root, &mut shard, &ask(1, 1..4, Outcomes::default()), 0);
        assert_eq!(
            first.admissions,
            vec![Admission::Admit, Admission::Admit, Admission::Busy]
        );
        let done = Outcomes {
            accepted: 2,
            ..Outcomes::default()
        };
        let report = SyncRequest {
            outcomes: done,
            ..ask(1, 4..5, Outcomes::default())
        };
        // The root reads zero: sold out, through the shard.
        let _ = via_shard(&mut root, &mut shard, &report, LEASE_MS);
        let sent = root.read_sent(LEASE_MS);
        root.apply_read(0, sent);
        let closed = via_shard(
            &mut root,
            &mut shard,
            &ask(1, 5..6, Outcomes::default()),
            2 * LEASE_MS,
        );
        assert_eq!(closed.admissions, vec![Admission::SoldOut]);
        assert_eq!(closed.beyond, Admission::SoldOut);
    }

    #[test]
    fn shards_are_holders_apart_from_isolates_and_from_their_past_lives() {
        let ids: HashSet<u64> = (0..MAX_SHARDS)
            .flat_map(|shard| (0..3).map(move |life| shard_holder(shard, life * 1_000_003)))
            .collect();
        assert_eq!(ids.len(), 3 * MAX_SHARDS as usize);
        assert!(ids.iter().all(|id| *id >= ISOLATE_HOLDERS && *id < 1 << 53));
    }

    #[test]
    fn outcomes_from_answers() {
        assert_eq!(Outcomes::of(Some(202), false).accepted, 1);
        assert_eq!(Outcomes::of(Some(409), true).sold_out, 1);
        assert_eq!(Outcomes::of(Some(409), false).refused, 1);
        assert_eq!(Outcomes::of(None, false).unknown, 1);
    }
}
