//! Property tests of the audit chain: any single changed byte, any deleted record and any
//! two swapped records are detected; an intact chain always verifies; verification from a
//! verified-prefix mark detects any changed byte after the mark.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use casegraph_engine::audit::{Entry, Head, Kind, Record, verify, verify_from};
use jiff::Timestamp;
use proptest::prelude::*;
use serde_json::json;

fn chain(n: usize, salt: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut head = Head::genesis();
    (0..n)
        .map(|i| {
            let r = head.append(Entry::new(
                format!("c-{}", (i as u64 + salt) % 4),
                if i % 3 == 0 { Kind::Step } else { Kind::Call },
                Timestamp::from_second(1_700_000_000 + i as i64).unwrap(),
                json!({ "node": format!("n{i}"), "digest": format!("{:x}", salt * 31 + i as u64),
                        "decision": "approve", "amount": "12.50" }),
            ));
            (
                r.seq.to_be_bytes().to_vec(),
                serde_json::to_vec(&r).unwrap(),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn an_intact_chain_verifies(n in 1usize..40, salt in 0u64..1000) {
        prop_assert_eq!(verify(chain(n, salt)).unwrap().records, n as u64);
    }

    #[test]
    fn any_changed_byte_is_detected(n in 1usize..20, salt in 0u64..1000, pick in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut c = chain(n, salt);
        let total: usize = c.iter().map(|(_, v)| v.len()).sum();
        let mut at = pick.index(total);
        for (_, v) in c.iter_mut() {
            if at < v.len() {
                prop_assume!(v[at] != byte);
                v[at] = byte;
                break;
            }
            at -= v.len();
        }
        prop_assert!(verify(c).is_err());
    }

    #[test]
    fn a_deleted_record_is_detected(n in 2usize..30, salt in 0u64..1000, pick in any::<prop::sample::Index>()) {
        let mut c = chain(n, salt);
        // Deleting the last record is a truncation: the records alone cannot show it, the
        // head hash printed by `audit verify` does.
        let i = pick.index(n - 1);
        c.remove(i);
        prop_assert!(verify(c).is_err());
    }

    #[test]
    fn two_swapped_records_are_detected(n in 2usize..30, salt in 0u64..1000, a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
        let mut c = chain(n, salt);
        let (i, j) = (a.index(n), b.index(n));
        prop_assume!(i != j);
        // Swap the stored records but keep the keys: the store's order is by key.
        let vi = c[i].1.clone();
        c[i].1 = c[j].1.clone();
        c[j].1 = vi;
        prop_assert!(verify(c).is_err());
    }

    #[test]
    fn any_changed_byte_after_a_mark_is_detected_from_the_mark(n in 2usize..20, salt in 0u64..1000, cut in any::<prop::sample::Index>(), pick in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut c = chain(n, salt);
        // The mark: the head after the first `m` records, as an earlier verification left it.
        let m = cut.index(n);
        let mark = if m == 0 {
            Head::genesis()
        } else {
            let r: Record = serde_json::from_slice(&c[m - 1].1).unwrap();
            Head { seq: r.seq, hash: r.hash }
        };
        let mut tail = c.split_off(m);
        prop_assert_eq!(verify_from(mark.clone(), tail.clone()).unwrap().checked, (n - m) as u64);
        let total: usize = tail.iter().map(|(_, v)| v.len()).sum();
        let mut at = pick.index(total);
        for (_, v) in tail.iter_mut() {
            if at < v.len() {
                prop_assume!(v[at] != byte);
                v[at] = byte;
                break;
            }
            at -= v.len();
        }
        prop_assert!(verify_from(mark, tail).is_err());
    }
}
