//! Multi-member tests over the in-process transport. They poll with deadlines; none relies
//! on a fixed sleep.

use std::future::Future;
use std::time::Duration;

use berth_store::{Command, CommandResult, PutRequest, RangeRequest};
use tempfile::TempDir;

use crate::testing::{self, member_config, TestCluster, TestNet};
use crate::{RaftConfig, RaftError, RaftHandle};

const WAIT: Duration = Duration::from_secs(20);

async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    testing::eventually(what, WAIT, f).await
}

fn put(key: &str, value: &str) -> Command {
    Command::Put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..Default::default()
    })
}

fn get(h: &RaftHandle, key: &str) -> Option<Vec<u8>> {
    let r = h
        .store()
        .range(&RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })
        .expect("range");
    r.kvs.into_iter().next().map(|kv| kv.value)
}

/// A [`TestCluster`] with its own temporary directory.
struct Cluster {
    c: TestCluster,
    dir: TempDir,
}

impl std::ops::Deref for Cluster {
    type Target = TestCluster;
    fn deref(&self) -> &TestCluster {
        &self.c
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut TestCluster {
        &mut self.c
    }
}

impl Cluster {
    async fn start(n: usize, tweak: fn(&mut RaftConfig)) -> Cluster {
        let dir = TempDir::new().unwrap();
        let c = TestCluster::start(dir.path(), n, tweak)
            .await
            .expect("start cluster");
        Cluster { c, dir }
    }

    async fn shutdown_all(self) {
        self.c.shutdown_all().await;
    }
}

fn applied_ok(r: Result<Result<CommandResult, crate::ApplyError>, RaftError>) -> CommandResult {
    r.expect("proposed").expect("applied without error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn elect_and_forward_a_proposal_from_a_follower() {
    let c = Cluster::start(3, |_| {}).await;
    let leader = c.leader().await;
    let follower = c.names.iter().find(|n| **n != leader).unwrap().clone();

    let res = applied_ok(c.h(&follower).propose(put("/a", "1")).await);
    assert!(matches!(res, CommandResult::Put(_)), "{res:?}");
    for name in &c.names {
        eventually("the write everywhere", || async {
            (get(c.h(name), "/a") == Some(b"1".to_vec())).then_some(())
        })
        .await;
    }
    // Every member knows every member, with the client address each one recorded itself.
    for name in &c.names {
        eventually("client addresses recorded", || async {
            let st = c.h(name).status();
            (st.members.len() == 3
                && st
                    .members
                    .iter()
                    .all(|m| m.member.client_addr == format!("{}:client", m.member.name)))
            .then_some(())
        })
        .await;
    }
    c.shutdown_all().await;
}

/// Concurrent proposals share log entries: 300 writes in flight at once take far fewer than
/// 300 entries, and every one gets its own result.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_proposals_are_batched_into_shared_entries() {
    let c = Cluster::start(3, |_| {}).await;
    let leader = c.leader().await;
    let h = c.h(&leader).clone();
    let before = h.status().last_log_index;
    let writes = (0..300).map(|i| {
        let h = h.clone();
        async move { applied_ok(h.propose(put(&format!("/batch/{i}"), "v")).await) }
    });
    let results = futures::future::join_all(writes).await;
    let mut revisions: Vec<i64> = results
        .into_iter()
        .map(|r| match r {
            CommandResult::Put(p) => p.revision,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), 300, "each write has its own revision");
    let entries = h.status().last_log_index - before;
    assert!(entries < 150, "300 concurrent writes took {entries} entries");
    for i in [0, 150, 299] {
        assert_eq!(get(&h, &format!("/batch/{i}")), Some(b"v".to_vec()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_read_sees_write_acknowledged_by_leader() {
    let c = Cluster::start(3, |_| {}).await;
    let leader = c.leader().await;
    let followers: Vec<&String> = c.names.iter().filter(|n| **n != leader).collect();
    for i in 0..20 {
        let v = i.to_string();
        applied_ok(c.h(&leader).propose(put("/k", &v)).await);
        for f in &followers {
            c.h(f).read_linearizable().await.expect("read index");
            assert_eq!(
                get(c.h(f), "/k"),
                Some(v.clone().into_bytes()),
                "stale read on {f}"
            );
        }
    }
    c.h(&leader).read_linearizable().await.expect("leader read");
    c.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_cut_off_then_new_leader_and_writes_continue() {
    let c = Cluster::start(3, |_| {}).await;
    let old = c.leader().await;
    applied_ok(c.h(&old).propose(put("/before", "x")).await);

    c.net.isolate(&old);
    let rest: Vec<&str> = c.names.iter().map(String::as_str).filter(|n| *n != old).collect();
    let new = c.leader_among(&rest).await;
    assert_ne!(new, old);
    let other = rest.iter().find(|n| **n != new).unwrap();
    // Through a follower (forwarded) and through the new leader.
    applied_ok(c.h(other).propose(put("/after", "y")).await);
    applied_ok(c.h(&new).propose(put("/after2", "z")).await);

    c.net.heal_all();
    eventually("the old leader catches up", || async {
        (get(c.h(&old), "/after2") == Some(b"z".to_vec())).then_some(())
    })
    .await;
    let leader = c.leader().await;
    assert_ne!(c.h(&leader).status().term, 0);
    c.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_member_resumes_from_its_data_dir_and_catches_up() {
    let mut c = Cluster::start(3, |_| {}).await;
    let leader = c.leader().await;
    let victim = c.names.iter().find(|n| **n != leader).unwrap().clone();
    applied_ok(c.h(&leader).propose(put("/k0", "v")).await);
    eventually("replicated", || async { get(c.h(&victim), "/k0").map(|_| ()) }).await;
    let term_before = c.h(&victim).status().term;

    c.stop_member(&victim).await.expect("stop");
    for i in 1..=30 {
        applied_ok(c.h(&leader).propose(put(&format!("/k{i}"), "v")).await);
    }
    c.start_member(&victim).await.expect("restart");
    let h = c.h(&victim).clone();
    eventually("restarted member caught up", || async {
        get(&h, "/k30").map(|_| ())
    })
    .await;
    assert_eq!(get(&h, "/k0"), Some(b"v".to_vec()));
    let st = h.status();
    assert!(st.term >= term_before);
    assert_eq!(st.members.len(), 3, "no re-initialization: {st:?}");
    c.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lagging_member_catches_up_through_a_snapshot() {
    let c = Cluster::start(3, |cfg| cfg.snapshot_every_logs = 20).await;
    let leader = c.leader().await;
    let lagging = c.names.iter().find(|n| **n != leader).unwrap().clone();
    c.net.isolate(&lagging);
    let lag_last = c.h(&lagging).status().last_log_index;

    let rest: Vec<&str> = c
        .names
        .iter()
        .map(String::as_str)
        .filter(|n| *n != lagging)
        .collect();
    let leader = c.leader_among(&rest).await;
    for i in 0..100 {
        applied_ok(c.h(&leader).propose(put(&format!("/s{i:03}"), "v")).await);
    }
    // The leader purged the log past what the lagging member has.
    eventually("the leader purged its log", || async {
        let purged = c.h(&leader).raft().metrics().borrow().purged?;
        (purged.index > lag_last + 1).then_some(())
    })
    .await;

    c.net.heal_all();
    let h = c.h(&lagging).clone();
    eventually("the lagging member caught up", || async {
        get(&h, "/s099").map(|_| ())
    })
    .await;
    assert!(
        h.raft().metrics().borrow().snapshot.is_some(),
        "it installed a snapshot"
    );
    assert_eq!(get(&h, "/s000"), Some(b"v".to_vec()));
    assert_eq!(h.store().hash(), c.h(&leader).store().hash());
    c.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_a_fourth_member_then_remove_it() {
    let mut c = Cluster::start(3, |_| {}).await;
    let leader = c.leader().await;
    applied_ok(c.h(&leader).propose(put("/old", "1")).await);

    let mut cfg = member_config("m4", &c.dir.path().join("m4"), &[]);
    cfg.join = vec!["m1".into()];
    let h4 = c.start_with(cfg).await.expect("start joiner");
    tokio::time::timeout(WAIT, h4.joined())
        .await
        .expect("join in time")
        .expect("joined");
    assert_eq!(h4.cluster_id(), c.h("m1").cluster_id());
    eventually("the joiner has the old data", || async {
        get(&h4, "/old").map(|_| ())
    })
    .await;
    let st = c.h(&leader).status();
    assert_eq!(st.members.len(), 4);
    assert!(
        st.members.iter().all(|m| m.role != crate::MemberRole::Learner),
        "{st:?}"
    );
    assert!(!h4.status().is_learner);

    // Adding it again is refused; removing an unknown id says so.
    let again = c
        .h("m2")
        .add_member("m4".into(), "m4".into(), "m4:client".into(), false)
        .await;
    assert!(matches!(again, Err(RaftError::MemberExists { .. })), "{again:?}");
    assert_eq!(
        c.h("m2").remove_member(12345).await,
        Err(RaftError::MemberNotFound(12345))
    );

    // Removed through a follower (forwarded to the leader).
    let via = c.names.iter().find(|n| **n != leader).unwrap().clone();
    c.h(&via).remove_member(h4.member_id()).await.expect("remove");
    eventually("m4 left the membership", || async {
        c.names
            .iter()
            .all(|n| c.h(n).status().members.len() == 3)
            .then_some(())
    })
    .await;
    applied_ok(c.h(&via).propose(put("/after-removal", "1")).await);
    c.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_as_learner_then_promote() {
    let mut c = Cluster::start(3, |_| {}).await;
    c.leader().await;
    let mut cfg = member_config("l1", &c.dir.path().join("l1"), &[]);
    cfg.join = vec!["m2".into(), "m3".into()];
    cfg.join_as_learner = true;
    let l1 = c.start_with(cfg).await.expect("start learner");
    tokio::time::timeout(WAIT, l1.joined())
        .await
        .expect("join in time")
        .expect("joined");
    let id = l1.member_id();
    eventually("l1 is a learner everywhere", || async {
        c.names
            .iter()
            .all(|n| {
                let st = c.h(n).status();
                st.members
                    .iter()
                    .any(|m| m.id == id && m.role == crate::MemberRole::Learner)
            })
            .then_some(())
    })
    .await;
    eventually("l1 sees itself as a learner", || async {
        l1.status().is_learner.then_some(())
    })
    .await;
    // A learner serves linearizable reads too.
    applied_ok(c.h("m1").propose(put("/l", "1")).await);
    l1.read_linearizable().await.expect("learner read");
    assert_eq!(get(&l1, "/l"), Some(b"1".to_vec()));

    assert_eq!(
        c.h("m1").promote_member(crate::member_id("nobody")).await,
        Err(RaftError::MemberNotFound(crate::member_id("nobody")))
    );
    c.h("m1").promote_member(id).await.expect("promote");
    eventually("l1 is a voter", || async {
        (!l1.status().is_learner && l1.status().members.len() == 4).then_some(())
    })
    .await;
    // Promoting a voter again is a no-op.
    c.h("m2").promote_member(id).await.expect("promote again");
    c.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_expire_only_on_the_leader_and_a_new_leader_gives_a_fresh_ttl() {
    let c = Cluster::start(3, |cfg| cfg.min_lease_ttl_secs = 1).await;
    let leader = c.leader().await;
    let follower = c.names.iter().find(|n| **n != leader).unwrap().clone();
    for n in &c.names {
        assert_eq!(
            c.h(n).inner.leases.is_primary(),
            *n == leader,
            "only the leader keeps lease clocks"
        );
    }

    // Granted through a follower with id 0: the proposer picks the id.
    let granted = applied_ok(
        c.h(&follower)
            .propose(Command::LeaseGrant { id: 0, ttl_secs: 3 })
            .await,
    );
    let CommandResult::LeaseGrant { id, ttl_secs, .. } = granted else {
        panic!("{granted:?}")
    };
    assert!(id > 0);
    assert_eq!(ttl_secs, 3);
    let mut attached = match put("/leased", "v") {
        Command::Put(p) => p,
        _ => unreachable!(),
    };
    attached.lease = id;
    applied_ok(c.h(&follower).propose(Command::Put(attached)).await);
    assert_eq!(c.h(&follower).lease_keepalive(id).await, Ok(3));
    assert_eq!(
        c.h(&follower).lease_keepalive(424242).await,
        Err(RaftError::LeaseNotFound)
    );
    assert!(matches!(c.h(&follower).lease_time_to_live(id).await, Ok((3, r)) if r > 0 && r <= 3));

    // Let the clock run down to at most one second left, then change leader.
    eventually("the TTL runs down", || async {
        let (_, remaining) = c.h(&leader).lease_time_to_live(id).await.ok()?;
        (remaining <= 1).then_some(())
    })
    .await;
    c.net.isolate(&leader);
    let rest: Vec<&str> = c
        .names
        .iter()
        .map(String::as_str)
        .filter(|n| **n != leader)
        .collect();
    let new = c.leader_among(&rest).await;
    eventually("the new leader promoted its lessor", || async {
        c.h(&new).inner.leases.is_primary().then_some(())
    })
    .await;
    let (_, remaining) = c
        .h(&new)
        .lease_time_to_live(id)
        .await
        .expect("ttl from the new leader");
    assert!(
        remaining >= 2,
        "the new leader gives a fresh TTL, got {remaining}s"
    );
    assert!(c.h(&new).store().lease(id).is_some());

    // No keepalives: the new leader expires it, and the attached key goes with it.
    eventually("the lease expires", || async {
        let gone = rest
            .iter()
            .all(|n| c.h(n).store().lease(id).is_none() && get(c.h(n), "/leased").is_none());
        gone.then_some(())
    })
    .await;
    // The isolated old leader could not expire anything on its own.
    assert!(c.h(&leader).store().lease(id).is_some());
    c.net.heal_all();
    eventually("the old leader learns of the revoke", || async {
        c.h(&leader).store().lease(id).is_none().then_some(())
    })
    .await;
    c.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_dir_of_another_cluster_is_rejected() {
    let dir = TempDir::new().unwrap();
    let net = TestNet::new();
    let data = dir.path().join("solo");
    let solo = RaftHandle::start(member_config("solo", &data, &["solo"]), net.transport("solo"))
        .await
        .expect("single-member cluster");
    net.register("solo", solo.clone());
    eventually("solo leads", || async { solo.is_leader().then_some(()) }).await;
    applied_ok(solo.propose(put("/x", "1")).await);
    solo.shutdown().await.unwrap();
    net.unregister("solo");
    drop(solo);
    let cid_file = std::fs::read(data.join("cluster_id")).unwrap();

    // Same data dir, another initial cluster.
    let other = member_config("solo", &data, &["solo", "peer"]);
    match RaftHandle::start(other, net.transport("solo")).await {
        Err(RaftError::ClusterIdMismatch { .. }) => {}
        Err(e) => panic!("unexpected {e}"),
        Ok(_) => panic!("accepted a data dir of another cluster"),
    }
    assert_eq!(std::fs::read(data.join("cluster_id")).unwrap(), cid_file);

    // Same data dir, joining another cluster.
    let c = Cluster::start(3, |_| {}).await;
    c.leader().await;
    let mut join = member_config("solo", &data, &[]);
    join.join = vec!["m1".into()];
    match RaftHandle::start(join, c.net.transport("solo")).await {
        Err(RaftError::ClusterIdMismatch { .. }) => {}
        Err(e) => panic!("unexpected {e}"),
        Ok(_) => panic!("joined with a data dir of another cluster"),
    }
    assert_eq!(std::fs::read(data.join("cluster_id")).unwrap(), cid_file);
    assert_eq!(c.h("m1").status().members.len(), 3);

    // The original configuration still resumes, data intact.
    let solo = RaftHandle::start(member_config("solo", &data, &["solo"]), net.transport("solo"))
        .await
        .expect("resume");
    net.register("solo", solo.clone());
    eventually("resumed with its data", || async {
        (solo.read_linearizable().await.is_ok() && get(&solo, "/x") == Some(b"1".to_vec())).then_some(())
    })
    .await;
    solo.shutdown().await.unwrap();
    c.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peer_messages_of_another_cluster_are_refused() {
    let c = Cluster::start(1, |_| {}).await;
    c.leader().await;
    let h = c.h("m1");
    let payload = crate::network::encode_request(
        h.cluster_id() ^ 1,
        &crate::network::ReadIndexRequest { timeout_ms: 100 },
    )
    .unwrap();
    let res = h.handle_peer(crate::PeerRpc::ReadIndex, payload).await;
    assert!(matches!(res, Err(RaftError::ClusterIdMismatch { .. })), "{res:?}");
    assert!(matches!(
        h.handle_peer(crate::PeerRpc::Vote, vec![1, 2, 3]).await,
        Err(RaftError::Protocol(_))
    ));
    c.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_compaction_by_revisions() {
    let c = Cluster::start(1, |cfg| {
        cfg.auto_compaction = Some(crate::AutoCompaction::Revisions(5))
    })
    .await;
    let leader = c.leader().await;
    let h = c.h(&leader);
    for i in 0..20 {
        applied_ok(h.propose(put("/c", &i.to_string())).await);
    }
    let rev = h.store().revision();
    eventually("compacted to revision - 5", || async {
        (h.store().compact_revision() >= rev - 5).then_some(())
    })
    .await;
    c.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_cluster_restart_keeps_acknowledged_writes() {
    let mut c = Cluster::start(3, |_| {}).await;
    let leader = c.leader().await;
    for i in 0..10 {
        applied_ok(c.h(&leader).propose(put(&format!("/d{i}"), "v")).await);
    }
    let names = c.names.clone();
    for n in &names {
        c.stop_member(n).await.expect("stop");
    }
    for n in &names {
        c.start_member(n).await.expect("restart");
    }
    let leader = c.leader().await;
    for n in &names {
        c.h(n).read_linearizable().await.expect("read");
        assert_eq!(get(c.h(n), "/d9"), Some(b"v".to_vec()), "on {n}");
    }
    applied_ok(c.h(&leader).propose(put("/after", "v")).await);
    c.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_quorum_requests_fail_by_their_deadline() {
    let c = Cluster::start(3, |cfg| cfg.request_timeout_ms = 600).await;
    let leader = c.leader().await;
    let follower = c.names.iter().find(|n| **n != leader).unwrap().clone();
    c.net.isolate(&follower);
    let started = tokio::time::Instant::now();
    let res = c.h(&follower).propose(put("/lost", "v")).await;
    assert!(res.is_err(), "{res:?}");
    assert!(c.h(&follower).read_linearizable().await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the deadlines"
    );
    c.net.heal_all();
    // Nothing was applied twice or half: the key is either there once or not at all.
    let leader = c.leader().await;
    applied_ok(c.h(&leader).propose(put("/ok", "v")).await);
    c.shutdown_all().await;
}

/// `core_stopped` stays pending while the member runs and resolves once its core is gone (a
/// shutdown here; a panicking core drops the same metrics sender), which is what makes
/// `berth server` exit instead of answering "server stopped" forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn core_stopped_resolves_when_the_core_ends() {
    let mut c = Cluster::start(1, |_| {}).await;
    let name = c.names[0].clone();
    let handle = c.h(&name).clone();
    let stopped = tokio::spawn(async move { handle.core_stopped().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!stopped.is_finished(), "pending while the member runs");
    c.stop_member(&name).await.expect("stop");
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("resolves after the core ended")
        .unwrap();
}

/// The request timeout of the partition tests: long, so that waiting for it cannot pass for
/// the prompt recovery they check.
const SLOW_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// How soon after a follower knows the new leader its next request must complete: a third of
/// the request timeout (before the fix of JEPSEN.md bug 4 it waited for the whole timeout).
const AFTER_NEW_LEADER: Duration = Duration::from_secs(10);

fn slow_requests(cfg: &mut RaftConfig) {
    cfg.request_timeout_ms = SLOW_REQUEST_TIMEOUT_MS;
    // Elections slow enough that the test fills the follower's queue before one starts.
    cfg.heartbeat_interval_ms = 100;
    cfg.election_timeout_min_ms = 1_000;
    cfg.election_timeout_max_ms = 2_000;
}

/// A 3-member cluster with [`slow_requests`], its leader and a follower (the follower's first
/// write went through, so it knows the leader).
async fn cluster_with_follower() -> (Cluster, String, String) {
    let c = Cluster::start(3, slow_requests).await;
    let old = c.leader().await;
    let f = c.names.iter().find(|n| **n != old).unwrap().clone();
    applied_ok(c.h(&f).propose(put("/before", "x")).await);
    (c, old, f)
}

/// The leader `f` knows of once it is not `old`.
async fn new_leader_known(c: &Cluster, f: &str, old: &str) -> u64 {
    let old_id = c.h(old).member_id();
    eventually("the follower knows a new leader", || async {
        c.h(f).status().leader_id.filter(|l| *l != old_id)
    })
    .await
}

/// JEPSEN.md bug 4: the leader is partitioned away (its messages dropped) while a follower's
/// forwarded batches fill every in-flight slot. Once the follower knows the new leader, those
/// forwards end indeterminate (not re-sent: the old leader may have applied them) and the
/// follower's next writes go to the new leader at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwards_to_a_partitioned_leader_are_abandoned_for_the_new_leader() {
    let (c, old, f) = cluster_with_follower().await;
    c.net.partition(&old);
    let mut lost = Vec::new();
    for i in 0..crate::batch::BATCHES_IN_FLIGHT_MAX {
        let h = c.h(&f).clone();
        lost.push(tokio::spawn(async move {
            h.propose(put(&format!("/lost{i}"), "x")).await
        }));
        eventually("the forward is held by the partition", || async {
            (c.net.held_calls(&old, crate::PeerRpc::Forward) > i).then_some(())
        })
        .await;
    }
    let queued = {
        let h = c.h(&f).clone();
        tokio::spawn(async move { h.propose(put("/queued", "q")).await })
    };

    new_leader_known(&c, &f, &old).await;
    let after = tokio::time::timeout(AFTER_NEW_LEADER, c.h(&f).propose(put("/after", "y")))
        .await
        .expect("a write proposed once the new leader is known completes well before the request timeout");
    applied_ok(after);
    let queued = tokio::time::timeout(AFTER_NEW_LEADER, queued)
        .await
        .expect("the write queued behind the lost forwards completes");
    applied_ok(queued.unwrap());
    for l in lost {
        let r = tokio::time::timeout(AFTER_NEW_LEADER, l)
            .await
            .expect("an abandoned forward answers at once")
            .unwrap();
        assert!(
            matches!(r, Err(RaftError::Transport(_))),
            "a forward that may have been delivered ends indeterminate: {r:?}"
        );
    }
    // Not re-sent to the new leader (the old one, cut off, cannot commit them either).
    let rest: Vec<&str> = c.names.iter().map(String::as_str).filter(|n| *n != old).collect();
    let new = c.leader_among(&rest).await;
    assert_eq!(get(c.h(&new), "/after"), Some(b"y".to_vec()));
    assert_eq!(get(c.h(&new), "/lost0"), None);
    assert_eq!(get(c.h(&new), "/lost1"), None);
    c.shutdown_all().await;
}

/// The same for linearizable reads: a read-index round waiting on the partitioned leader is
/// abandoned when the new leader is known, and the reads are served through the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_index_rounds_at_a_partitioned_leader_move_to_the_new_leader() {
    let (c, old, f) = cluster_with_follower().await;
    c.net.partition(&old);
    let stuck = {
        let h = c.h(&f).clone();
        tokio::spawn(async move { h.read_linearizable().await })
    };
    eventually("the read-index call is held by the partition", || async {
        (c.net.held_calls(&old, crate::PeerRpc::ReadIndex) > 0).then_some(())
    })
    .await;

    new_leader_known(&c, &f, &old).await;
    tokio::time::timeout(AFTER_NEW_LEADER, c.h(&f).read_linearizable())
        .await
        .expect("a read started once the new leader is known completes well before the request timeout")
        .expect("read");
    tokio::time::timeout(AFTER_NEW_LEADER, stuck)
        .await
        .expect("the read that waited on the old leader is retried at the new one")
        .unwrap()
        .expect("read");
    c.shutdown_all().await;
}

// --- A member whose recovered Raft state is behind what it acknowledged (JEPSEN.md bug 2) ---

/// The newest (live) WAL file of a member's database.
fn live_wal(data_dir: &std::path::Path) -> std::path::PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(data_dir.join("db"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a WAL file")
}

/// Writes 40 puts through the leader and waits until `victim` has applied them (so it has
/// acknowledged every entry holding them); returns the leader.
async fn write_and_wait_applied(c: &Cluster, victim: &str, prefix: &str) -> String {
    let leader = c.leader().await;
    for i in 0..40 {
        applied_ok(c.h(&leader).propose(put(&format!("/{prefix}{i:02}"), "v")).await);
    }
    let last = format!("/{prefix}39");
    eventually("the victim applied every write", || async {
        get(c.h(victim), &last).map(|_| ())
    })
    .await;
    leader
}

fn assert_refused(res: Result<RaftHandle, RaftError>, data_dir: &std::path::Path, what: &str) {
    let err = match res {
        Ok(_) => panic!("a member with {what} started"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(matches!(err, RaftError::StateBehind(_)), "{what}: {msg}");
    for needle in [
        &data_dir.display().to_string()[..],
        "behind",
        "acknowledged",
        "rejoin",
        "empty data dir",
    ] {
        assert!(msg.contains(needle), "{what}: message lacks {needle:?}: {msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_whose_wal_lost_its_tail_refuses_to_start() {
    let mut c = Cluster::start(3, |_| {}).await;
    let leader = c.leader().await;
    let victim = c.names.iter().find(|n| **n != leader).unwrap().clone();
    write_and_wait_applied(&c, &victim, "t").await;
    let data_dir = c.config(&victim).data_dir.clone();
    c.stop_member(&victim).await.expect("stop");

    // An untouched data dir restarts fine (and the stop did not leave the WAL empty).
    c.start_member(&victim)
        .await
        .expect("restart of an untouched data dir");
    write_and_wait_applied(&c, &victim, "u").await;
    c.stop_member(&victim).await.expect("stop");

    // The disk fault of the jepsen run truncates the live WAL to half; where half falls, the
    // cut may remove only state-machine writes after the last acknowledged entry (the member
    // then rightly starts and re-applies). Cutting the whole live WAL surely loses acknowledged
    // entries: everything since the last flush.
    let wal = live_wal(&data_dir);
    let len = std::fs::metadata(&wal).unwrap().len();
    assert!(len > 4096, "the live WAL holds the writes ({len} bytes)");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(0)
        .unwrap();
    let res = c.start_member(&victim).await;
    assert_refused(res, &data_dir, "a truncated WAL");
    // Refusing changed nothing: it refuses again.
    assert_refused(
        c.start_member(&victim).await,
        &data_dir,
        "a truncated WAL (again)",
    );

    // The others go on; the victim, wiped and rejoined empty, catches up.
    let leader = c.leader().await;
    applied_ok(c.h(&leader).propose(put("/after", "v")).await);
    let victim_id = crate::member_id(&victim);
    c.h(&leader)
        .remove_member(victim_id)
        .await
        .expect("remove the victim");
    std::fs::remove_dir_all(&data_dir).unwrap();
    let mut cfg = member_config(&victim, &data_dir, &[]);
    cfg.join = vec![leader.clone()];
    let h = c.start_with(cfg).await.expect("rejoin empty");
    tokio::time::timeout(WAIT, h.joined())
        .await
        .expect("joined in time")
        .expect("joined");
    eventually("the rejoined member caught up", || async {
        get(&h, "/after").map(|_| ())
    })
    .await;
    assert_eq!(get(&h, "/u39"), Some(b"v".to_vec()));
    c.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_lost_only_its_vote_refuses_to_start() {
    let mut c = Cluster::start(3, |_| {}).await;
    let leader = c.leader().await;
    let victim = c.names.iter().find(|n| **n != leader).unwrap().clone();
    write_and_wait_applied(&c, &victim, "t").await;
    let data_dir = c.config(&victim).data_dir.clone();
    c.stop_member(&victim).await.expect("stop");

    // Lose the vote record alone (the log stays intact).
    {
        let store = berth_store::Store::open(berth_store::StoreConfig {
            path: data_dir.join("db"),
            extra_column_families: vec![crate::LOG_CF.to_string(), crate::META_CF.to_string()],
            watch_queue_len: berth_store::WATCH_QUEUE_LEN_DEFAULT,
        })
        .unwrap();
        let db = store.db();
        let meta = db.cf_handle(crate::META_CF).unwrap();
        assert!(
            db.get_cf(meta, b"vote").unwrap().is_some(),
            "the member had voted"
        );
        let mut o = rocksdb::WriteOptions::default();
        o.set_sync(true);
        db.delete_cf_opt(meta, b"vote", &o).unwrap();
    }
    let res = c.start_member(&victim).await;
    assert_refused(res, &data_dir, "a lost vote");
    let msg = c.start_member(&victim).await.err().unwrap().to_string();
    assert!(msg.contains("no vote"), "says what was found: {msg}");
    c.shutdown_all().await;
}

/// What a kill -9 leaves: the files as they are while the member runs (the page cache keeps
/// every written byte, synced or not). The mark is copied first, as a crash could find it no
/// newer than the WAL written after it.
fn copy_running_data_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to.join("db")).unwrap();
    for f in ["raft_durable", "cluster_id"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    for e in std::fs::read_dir(from.join("db")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join("db").join(p.file_name().unwrap())).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_killed_without_closing_restarts_fine() {
    let mut c = Cluster::start(3, |_| {}).await;
    let leader = c.leader().await;
    let victim = c.names.iter().find(|n| **n != leader).unwrap().clone();
    write_and_wait_applied(&c, &victim, "t").await;
    let data_dir = c.config(&victim).data_dir.clone();
    let image = c.dir.path().join("crash-image");
    copy_running_data_dir(&data_dir, &image);
    c.stop_member(&victim).await.expect("stop");
    std::fs::remove_dir_all(&data_dir).unwrap();
    std::fs::rename(&image, &data_dir).unwrap();

    let h = c.start_member(&victim).await.expect("restart after a crash");
    assert_eq!(get(&h, "/t39"), Some(b"v".to_vec()));
    let leader = c.leader().await;
    applied_ok(c.h(&leader).propose(put("/after", "v")).await);
    eventually("caught up", || async { get(&h, "/after").map(|_| ()) }).await;
    c.shutdown_all().await;
}

/// The durable mark on disk of a stopped member's data dir.
fn mark_on_disk(data_dir: &std::path::Path) -> crate::durable::Mark {
    match crate::durable::DurableFile::open(data_dir).expect("readable mark") {
        crate::durable::Opened::Found(f) => f.mark(),
        crate::durable::Opened::Missing => panic!("no durable mark in {}", data_dir.display()),
    }
}

/// The open question of session 2 (JEPSEN.md, bug 2): a live WAL cut at half once let a member
/// start. That is legitimate only if the cut lost no log entry the member had acknowledged.
/// Independent witness of "acknowledged": the leader's replication progress for the member
/// (openraft's matched log id, which moves only on the member's answer to an append, sent
/// after its sync). The test checks (1) the mark on disk covers that, so a start (recovered
/// state >= mark) can never come after losing an acknowledged entry; (2) for cuts at several
/// points (on copies of the data dir), which case each is, by comparing the recovered last
/// log id with the mark; (3) the real start after a cut at half does what the comparison says.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wal_cut_lets_a_member_start_only_when_it_lost_nothing_acknowledged() {
    let mut c = Cluster::start(3, |_| {}).await;
    let leader = c.leader().await;
    let victim = c.names.iter().find(|n| **n != leader).unwrap().clone();
    let victim_id = crate::member_id(&victim);
    let data_dir = c.config(&victim).data_dir.clone();
    // Restart once so the live WAL holds only this test's writes, then write.
    c.stop_member(&victim).await.expect("stop");
    c.start_member(&victim).await.expect("restart");
    write_and_wait_applied(&c, &victim, "w").await;
    let leader = c.leader().await;
    let leader_last = c.h(&leader).raft().metrics().borrow().last_log_index;
    let acked = eventually("the leader saw the victim acknowledge its whole log", || async {
        let m = c.h(&leader).raft().metrics().borrow().clone();
        let matched = m.replication.as_ref()?.get(&victim_id).copied().flatten()?;
        (Some(matched.index) >= leader_last).then_some(matched)
    })
    .await;
    c.stop_member(&victim).await.expect("stop");
    let mark = mark_on_disk(&data_dir);
    assert!(
        mark.last_log_id >= Some(acked),
        "the mark {mark:?} covers what the leader saw acknowledged ({acked:?})"
    );
    let wal = live_wal(&data_dir);
    let len = std::fs::metadata(&wal).unwrap().len();
    let scratch = TempDir::new().unwrap();
    let mut cases = Vec::new();
    for percent in [10u64, 50, 90, 99] {
        let copy = scratch.path().join(format!("cut{percent}"));
        let ok = std::process::Command::new("cp")
            .arg("-a")
            .arg(&data_dir)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(ok.success());
        let copied_wal = copy.join("db").join(wal.file_name().unwrap());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&copied_wal)
            .unwrap()
            .set_len(len * percent / 100)
            .unwrap();
        let recovered = crate::log_store::recovered_mark_read_only(&copy).expect("opens read-only");
        let starts = recovered.covers(&mark);
        if starts {
            assert!(
                recovered.last_log_id >= Some(acked),
                "cut at {percent}%: would start having lost acknowledged entries"
            );
        }
        let index = |id: Option<crate::types::LogId>| id.map_or(0, |id| id.index);
        cases.push((
            percent,
            starts,
            index(recovered.last_log_id),
            index(mark.last_log_id),
        ));
    }
    eprintln!(
        "live WAL of {len} bytes; acknowledged up to index {}; (cut at %, starts, recovered last \
         index, mark's last index): {cases:?}",
        acked.index
    );
    // The real member after a cut at half: starts exactly when the comparison says it may.
    let half_starts = cases.iter().find(|c| c.0 == 50).unwrap().1;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    match c.start_member(&victim).await {
        Ok(_) => assert!(
            half_starts,
            "started although its recovered log is behind the mark"
        ),
        Err(e) => {
            assert!(
                !half_starts,
                "refused although nothing acknowledged was lost: {e}"
            );
            assert!(matches!(e, RaftError::StateBehind(_)), "{e}");
        }
    }
    c.shutdown_all().await;
}

/// JEPSEN.md bug 5: a keep-alive must not revive a lease whose revoke is already in flight.
/// The leader, alone (both followers stopped, as by the kill nemesis), sees the lease expire
/// and proposes its revoke, which cannot commit. A keep-alive sent meanwhile waits for a
/// quorum; when the followers return, the leader (still leader) confirms, and before the fix
/// its lessor restarted the TTL and answered "TTL 2" although the pending revoke then
/// committed and deleted the lease at once (the jepsen lease workload saw the key gone 1.2 s
/// after such an answer). Now a keep-alive of an expired lease waits for the revoke and
/// answers "not found".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keepalive_does_not_revive_a_lease_whose_revoke_is_in_flight() {
    let mut c = Cluster::start(3, slow_requests).await;
    let leader = c.leader().await;
    let granted = applied_ok(
        c.h(&leader)
            .propose(Command::LeaseGrant { id: 0, ttl_secs: 2 })
            .await,
    );
    let CommandResult::LeaseGrant { id, ttl_secs, .. } = granted else {
        panic!("{granted:?}")
    };
    let followers: Vec<String> = c.names.iter().filter(|n| **n != leader).cloned().collect();
    for f in &followers {
        c.stop_member(f).await.expect("stop a follower");
    }
    // Past the TTL, the leader's duty loop has proposed the revoke (it cannot commit).
    eventually("the lease expired on the leader's clock", || async {
        (c.h(&leader).inner.leases.remaining_secs(id) == Some(Some(0))).then_some(())
    })
    .await;
    let keepalive = {
        let h = c.h(&leader).clone();
        tokio::spawn(async move { h.lease_keepalive(id).await })
    };
    for f in &followers {
        c.start_member(f).await.expect("restart a follower");
    }
    let answer = keepalive.await.unwrap();
    let answered = std::time::Instant::now();
    assert!(
        c.h(&leader).is_leader(),
        "the test needs the same leader throughout"
    );
    eventually("the revoke is applied", || async {
        c.h(&leader).store().lease(id).is_none().then_some(())
    })
    .await;
    assert!(
        answer.is_err() || answered.elapsed() >= Duration::from_secs(ttl_secs as u64),
        "a keep-alive answered {answer:?}, then the lease was revoked {:?} later",
        answered.elapsed()
    );
    assert_eq!(answer, Err(RaftError::LeaseNotFound));
    c.shutdown_all().await;
}
