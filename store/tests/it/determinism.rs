//! Same commands, same state: byte for byte.

use berth_store::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::*;

const KEYS: usize = 12;
const COMMANDS: usize = 1500;

fn key(rng: &mut StdRng) -> Vec<u8> {
    format!("key/{:02}", rng.gen_range(0..KEYS)).into_bytes()
}

fn put_req_random(rng: &mut StdRng) -> PutRequest {
    PutRequest {
        key: key(rng),
        value: rng.gen::<u32>().to_le_bytes().to_vec(),
        lease: if rng.gen_bool(0.3) { rng.gen_range(1..5) } else { 0 },
        prev_kv: rng.gen(),
        ignore_value: rng.gen_bool(0.05),
        ignore_lease: false,
    }
}

fn op(rng: &mut StdRng, depth: u32) -> RequestOp {
    match rng.gen_range(0..if depth > 0 { 3 } else { 4 }) {
        0 => RequestOp::Range(RangeRequest {
            key: key(rng),
            range_end: vec![0],
            limit: rng.gen_range(0..4),
            ..Default::default()
        }),
        1 => RequestOp::Put(put_req_random(rng)),
        2 => RequestOp::DeleteRange(DeleteRangeRequest {
            key: key(rng),
            range_end: key(rng),
            prev_kv: rng.gen(),
        }),
        _ => RequestOp::Txn(txn_random(rng, depth + 1)),
    }
}

fn txn_random(rng: &mut StdRng, depth: u32) -> TxnRequest {
    let target = match rng.gen_range(0..4) {
        0 => CompareTarget::Version(rng.gen_range(0..4)),
        1 => CompareTarget::ModRevision(rng.gen_range(0..400)),
        2 => CompareTarget::Lease(rng.gen_range(0..5)),
        _ => CompareTarget::Value(rng.gen::<u32>().to_le_bytes().to_vec()),
    };
    let result = [
        CompareResult::Equal,
        CompareResult::Greater,
        CompareResult::Less,
        CompareResult::NotEqual,
    ][rng.gen_range(0..4)];
    let ops = |rng: &mut StdRng| (0..rng.gen_range(0..4)).map(|_| op(rng, depth)).collect();
    TxnRequest {
        compare: vec![Compare {
            result,
            target,
            key: key(rng),
            range_end: vec![],
        }],
        success: ops(rng),
        failure: ops(rng),
    }
}

fn command(rng: &mut StdRng, revision_hint: i64) -> Command {
    match rng.gen_range(0..100) {
        0..=39 => Command::Put(put_req_random(rng)),
        40..=54 => Command::DeleteRange(DeleteRangeRequest {
            key: key(rng),
            range_end: if rng.gen() { key(rng) } else { vec![] },
            prev_kv: rng.gen(),
        }),
        55..=79 => Command::Txn(txn_random(rng, 0)),
        80..=84 => Command::Compact {
            revision: rng.gen_range(1..revision_hint + 2),
        },
        85..=91 => Command::LeaseGrant {
            id: rng.gen_range(0..5),
            ttl_secs: rng.gen_range(1..100),
        },
        92..=97 => Command::LeaseRevoke {
            id: rng.gen_range(0..5),
        },
        _ => Command::Noop,
    }
}

#[test]
fn same_commands_give_the_same_bytes() {
    let mut rng = StdRng::seed_from_u64(0x5EED);
    let mut cmds = Vec::new();
    // A rough revision so compactions are sometimes valid and sometimes not.
    for i in 0..COMMANDS {
        cmds.push(command(&mut rng, (i as i64) / 2 + 1));
    }
    let (_da, a) = open();
    let (_db, b) = open();

    // A applies in batches of random size, B one command at a time: batching must not matter.
    let mut results_a = Vec::new();
    let mut i = 0;
    while i < cmds.len() {
        let n = rng.gen_range(1..8).min(cmds.len() - i);
        let marker = format!("upto:{}", i + n);
        results_a.extend(a.apply(&cmds[i..i + n], Some(marker.as_bytes())).unwrap());
        i += n;
    }
    let mut results_b = Vec::new();
    for (i, cmd) in cmds.iter().enumerate() {
        let marker = format!("upto:{}", i + 1);
        results_b.extend(
            b.apply(std::slice::from_ref(cmd), Some(marker.as_bytes()))
                .unwrap(),
        );
    }
    assert_eq!(format!("{results_a:?}"), format!("{results_b:?}"));
    let failures = results_a.iter().filter(|r| r.is_err()).count();
    assert!(
        failures > 0 && failures < COMMANDS / 2,
        "the mix exercises errors too: {failures}"
    );
    assert!(a.revision() > 300, "the mix writes: {}", a.revision());
    assert!(a.compact_revision() > 0);
    assert_eq!(a.hash(), b.hash());
    assert_eq!(a.snapshot().unwrap(), b.snapshot().unwrap());
    assert_eq!(dump(&a), dump(&b));
}
