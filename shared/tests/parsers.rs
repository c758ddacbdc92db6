//! Property tests of the parsers every request and stream entry goes
//! through, on both the edge and the origin: whatever the input, they
//! answer (never panic), accept exactly what the matching writer produces,
//! and read it back unchanged.

use proptest::prelude::*;
use seckill_shared::keys::{DeadlineEntry, MemberState};
use seckill_shared::records::{ChangeOp, ChangeRecord, OrderRequest};
use seckill_shared::token::{self, TokenError, TokenSecret};
use seckill_shared::{MemberId, OrderId, ProductId};

fn id() -> impl Strategy<Value = i64> {
    1..=i64::MAX
}

/// Field lookups built from arbitrary name/value pairs, as a stream entry
/// someone else wrote might carry.
fn lookup(pairs: Vec<(String, String)>) -> impl Fn(&str) -> Option<String> {
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

fn fields(record: Vec<(&'static str, String)>) -> Vec<(String, String)> {
    record
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

proptest! {
    #[test]
    fn ids_parse_exactly_their_display(value in id()) {
        let product = ProductId::new(value).unwrap();
        prop_assert_eq!(product.to_string().parse::<ProductId>(), Ok(product));
        prop_assert_eq!(value.to_string().parse::<MemberId>().map(MemberId::get), Ok(value));
    }

    #[test]
    fn ids_refuse_anything_but_plain_positive_decimals(text in "\\PC*") {
        let parsed = text.parse::<OrderId>();
        let plain = !text.is_empty()
            && text.len() <= 19
            && text.bytes().all(|b| b.is_ascii_digit())
            && text.parse::<i64>().is_ok_and(|v| v > 0);
        prop_assert_eq!(parsed.is_ok(), plain, "{:?}", text);
    }

    #[test]
    fn tokens_verify_only_as_signed(member in id(), expires in 1u64..=u64::MAX / 2, now in 0u64..=u64::MAX / 2) {
        let secret = TokenSecret::new("property-secret").unwrap();
        let signed = token::sign(&secret, MemberId::new(member).unwrap(), expires);
        let verified = token::verify(&secret, &signed, now);
        if now < expires {
            prop_assert_eq!(verified.map(|c| (c.member.get(), c.expires_at)), Ok((member, expires)));
        } else {
            prop_assert_eq!(verified, Err(TokenError::Expired));
        }
        let other = TokenSecret::new("another-secret").unwrap();
        prop_assert_eq!(token::verify(&other, &signed, 0), Err(TokenError::BadSignature));
    }

    #[test]
    fn any_string_is_answered_as_a_token(text in "\\PC{0,300}") {
        let secret = TokenSecret::new("property-secret").unwrap();
        // Never panics; never accepts what it did not sign.
        prop_assert!(token::verify(&secret, &text, 0).is_err());
        let _ = token::bearer(&text);
    }

    #[test]
    fn member_states_round_trip(seq in any::<i64>(), order in id(), kind in 0..4u8) {
        let order = OrderId::new(order).unwrap();
        let state = match kind {
            0 => MemberState::Queued { seq },
            1 => MemberState::Ordered { order },
            2 => MemberState::Failed { seq },
            _ => MemberState::Cancelled { order },
        };
        prop_assert_eq!(MemberState::decode(&state.encode()), Some(state));
    }

    #[test]
    fn any_string_is_answered_as_a_member_state(text in "\\PC{0,40}") {
        if let Some(state) = MemberState::decode(&text) {
            prop_assert_eq!(MemberState::decode(&state.encode()), Some(state));
        }
    }

    #[test]
    fn deadline_entries_round_trip(product in id(), order in id()) {
        let entry = DeadlineEntry { product: ProductId::new(product).unwrap(), order };
        prop_assert_eq!(DeadlineEntry::decode(&entry.encode()), Some(entry));
    }

    #[test]
    fn any_string_is_answered_as_a_deadline_entry(text in "\\PC{0,40}") {
        if let Some(entry) = DeadlineEntry::decode(&text) {
            prop_assert!(entry.order > 0);
            prop_assert_eq!(DeadlineEntry::decode(&entry.encode()), Some(entry));
        }
    }

    #[test]
    fn order_requests_round_trip(product in id(), member in id(), seq in any::<i64>(),
                                 price in any::<i64>(), at in any::<i64>()) {
        let product = ProductId::new(product).unwrap();
        let request = OrderRequest {
            product,
            member: MemberId::new(member).unwrap(),
            seq,
            price_cents: price,
            reserved_at_ms: at,
        };
        prop_assert_eq!(OrderRequest::parse(product, lookup(fields(request.fields()))), Ok(request));
    }

    #[test]
    fn any_entry_is_answered_as_an_order_request(
        pairs in proptest::collection::vec(("(member|product|seq|price|reserved_at_ms|x)", "\\PC{0,24}"), 0..8),
        product in id(),
    ) {
        let product = ProductId::new(product).unwrap();
        if let Ok(request) = OrderRequest::parse(product, lookup(pairs)) {
            prop_assert_eq!(request.product, product);
            prop_assert_eq!(OrderRequest::parse(product, lookup(fields(request.fields()))), Ok(request));
        }
    }

    #[test]
    fn change_records_round_trip(change in any::<i64>(), product in id(), op in 0..3u8,
                                 old in proptest::option::of(any::<i64>()),
                                 new in proptest::option::of(any::<i64>())) {
        let record = ChangeRecord {
            change,
            product: ProductId::new(product).unwrap(),
            op: [ChangeOp::Insert, ChangeOp::Update, ChangeOp::Delete][op as usize],
            old_stock_total: old,
            new_stock_total: new,
        };
        prop_assert_eq!(ChangeRecord::parse(lookup(fields(record.fields()))), Ok(record));
    }

    #[test]
    fn any_entry_is_answered_as_a_change_record(
        pairs in proptest::collection::vec(("(change|product|op|old_stock_total|new_stock_total)", "\\PC{0,24}"), 0..8),
    ) {
        if let Ok(record) = ChangeRecord::parse(lookup(pairs)) {
            prop_assert_eq!(ChangeRecord::parse(lookup(fields(record.fields()))), Ok(record));
        }
    }
}
