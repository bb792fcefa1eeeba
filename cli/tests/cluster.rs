//! Fault tolerance of a real 3-member cluster on loopback: leader loss, restarts, catch-up
//! through snapshots, membership changes, watches across leader changes, lease expiry.

mod common;
use berth_proto::etcdserverpb as pb;
use berth_proto::etcdserverpb::watch_client::WatchClient;
use common::*;
use std::time::Duration;

fn key(i: u64) -> Vec<u8> {
    format!("k/{i:06}").into_bytes()
}

async fn get(c: &berth_client::EtcdClient, k: &[u8]) -> Option<Vec<u8>> {
    let r = c
        .range(pb::RangeRequest {
            key: k.to_vec(),
            ..Default::default()
        })
        .await
        .ok()?;
    Some(r.kvs.first().map(|kv| kv.value.clone()).unwrap_or_default())
}

/// Writes keys [from, to) and returns the ones acknowledged.
async fn write_range(c: &berth_client::EtcdClient, from: u64, to: u64) -> Vec<u64> {
    let mut acked = Vec::new();
    for i in from..to {
        if c.put(&key(i), format!("v{i}").as_bytes()).await.is_ok() {
            acked.push(i);
        }
    }
    acked
}

async fn assert_all_present(c: &berth_client::EtcdClient, acked: &[u64]) {
    for i in acked {
        let v = eventually("read of an acknowledged write", || async {
            get(c, &key(*i)).await
        })
        .await;
        assert_eq!(v, format!("v{i}").into_bytes(), "acknowledged write {i} lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_loses_no_acknowledged_write_and_member_catches_up() {
    let mut c = Cluster::start(3, &["--snapshot-count", "50"]).await;
    let client = c.client();
    let mut acked = write_range(&client, 0, 40).await;
    assert_eq!(acked.len(), 40);

    let leader = c.wait_leader().await;
    c.members[leader].kill();
    let client = c.client();
    // Writes resume once the survivors elect a new leader.
    let first = eventually("a write after the leader was killed", || async {
        client.put(b"after-kill", b"1").await.ok()
    })
    .await;
    assert!(first.header.unwrap().revision > 0);
    // Enough writes that the survivors snapshot and purge their logs past what the killed
    // member has, so it must catch up through a snapshot.
    acked.extend(write_range(&client, 40, 200).await);
    assert_all_present(&client, &acked).await;

    c.start_member(leader);
    c.wait_leader().await;
    let restarted =
        berth_client::EtcdClient::new(&[c.members[leader].client.clone()], Duration::from_secs(2)).unwrap();
    // A serializable read on the restarted member shows its own state once it caught up.
    eventually("restarted member caught up", || async {
        let r = restarted
            .range(pb::RangeRequest {
                key: key(199),
                serializable: true,
                ..Default::default()
            })
            .await
            .ok()?;
        (r.kvs.len() == 1).then_some(())
    })
    .await;
    assert_all_present(&restarted, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_as_learner_then_promote_and_remove() {
    let mut c = Cluster::start(3, &[]).await;
    let client = c.client();
    write_range(&client, 0, 20).await;
    let i = c.add_joining("s4");
    let eps = c.endpoints();
    let members = eventually("s4 promoted to voter", || async {
        let out = etcdctl(&eps, &["member", "list"]);
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        let line = s.lines().find(|l| l.contains("s4"))?.to_string();
        line.contains("false").then_some(s)
    })
    .await;
    assert_eq!(members.lines().count(), 4, "{members}");
    // The new member serves reads with everything written before it joined.
    let s4 = berth_client::EtcdClient::new(&[c.members[i].client.clone()], Duration::from_secs(2)).unwrap();
    assert_all_present(&s4, &(0..20).collect::<Vec<_>>()).await;

    // `berth cluster members` and `berth cluster remove`, as a user would run them.
    let out = std::process::Command::new(berth_bin())
        .args(["cluster", "members", "--server", &eps])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.contains("leader") && table.contains("s4"),
        "{table}"
    );
    let out = std::process::Command::new(berth_bin())
        .args(["cluster", "remove", "s4", "--server", &eps])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.members[i].kill();
    let list = etcdctl_ok(&c.endpoints(), &["member", "list"]);
    assert!(!list.contains("s4") && list.lines().count() == 3, "{list}");
    // Unknown members are refused by name.
    let out = std::process::Command::new(berth_bin())
        .args(["cluster", "remove", "nope", "--server", &c.endpoints()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no member named"));
    write_range(&c.client(), 20, 25).await;
}

/// etcd's way to grow a cluster: `etcdctl member add` (which sends no name), then a server
/// started with that peer address joins and takes the member's place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_member_add_then_server_takes_the_place() {
    let mut c = Cluster::start(3, &[]).await;
    let eps = c.endpoints();
    let peer = format!("127.0.0.1:{}", free_port());
    let out = etcdctl_ok(
        &eps,
        &["member", "add", "s5", &format!("--peer-urls=http://{peer}")],
    );
    assert!(out.contains("added to cluster"), "{out}");
    let list = etcdctl_ok(&eps, &["member", "list"]);
    assert!(list.contains("unstarted") && list.contains(&peer), "{list}");
    // The same address again is refused.
    let again = etcdctl(
        &eps,
        &["member", "add", "s6", &format!("--peer-urls=http://{peer}")],
    );
    assert!(!again.status.success());
    let i = c.add_joining_at("s5", &peer);
    let client = c.members[i].client.clone();
    eventually("s5 started with its name and client address", || async {
        let list = etcdctl_ok(&eps, &["member", "list"]);
        (list.contains("s5") && list.contains(&client) && !list.contains("unstarted")).then_some(())
    })
    .await;
    write_range(&c.client(), 0, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_is_continuous_across_a_leader_change() {
    let mut c = Cluster::start(3, &[]).await;
    let leader = c.wait_leader().await;
    // Watch on a follower that will survive.
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let ch = berth_client::dial::lazy_channel(&c.members[follower].client, Duration::from_secs(60)).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: b"k/".to_vec(),
                range_end: berth_proto::prefix_range_end(b"k/"),
                start_revision: 1,
                ..Default::default()
            },
        )),
    })
    .await
    .unwrap();
    let mut stream = WatchClient::new(ch)
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();

    let client = c.client();
    let mut acked = write_range(&client, 0, 30).await;
    c.members[leader].kill();
    let client = c.client();
    eventually("new leader accepts writes", || async {
        client.put(b"x", b"1").await.ok()
    })
    .await;
    acked.extend(write_range(&client, 30, 60).await);

    let mut seen = Vec::new();
    let mut last_rev = 0;
    while seen.len() < acked.len() {
        let msg = tokio::time::timeout(DEADLINE, stream.message())
            .await
            .expect("watch stalled")
            .unwrap()
            .unwrap();
        assert!(!msg.canceled, "watch canceled: {}", msg.cancel_reason);
        for ev in msg.events {
            let kv = ev.kv.unwrap();
            assert!(kv.mod_revision > last_rev, "revisions out of order or repeated");
            last_rev = kv.mod_revision;
            seen.push(String::from_utf8(kv.key).unwrap());
        }
    }
    let want: Vec<String> = acked
        .iter()
        .map(|i| String::from_utf8(key(*i)).unwrap())
        .collect();
    assert_eq!(seen, want);
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_deletes_its_keys() {
    let c = Cluster::start(3, &[]).await;
    let ep = c.endpoints();
    let grant = etcdctl_ok(&ep, &["lease", "grant", "2"]);
    let id = grant.split_whitespace().nth(1).unwrap().to_string();
    etcdctl_ok(&ep, &["put", "ephemeral", "v", "--lease", &id]);
    assert_eq!(
        etcdctl_ok(&ep, &["get", "ephemeral", "--print-value-only"]),
        "v\n"
    );
    eventually("the leased key is deleted at expiry", || async {
        (etcdctl_ok(&ep, &["get", "ephemeral"]).is_empty()).then_some(())
    })
    .await;
    let ttl = etcdctl_ok(&ep, &["lease", "timetolive", &id]);
    assert!(ttl.contains("already expired"), "{ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_state_and_other_cluster_data_dir_is_refused() {
    let mut c = Cluster::start(1, &[]).await;
    write_range(&c.client(), 0, 10).await;
    c.members[0].kill();
    c.start_member(0);
    c.wait_leader().await;
    assert_all_present(&c.client(), &(0..10).collect::<Vec<_>>()).await;
    c.members[0].kill();
    // The same data dir under another --initial-cluster is another cluster's: refused.
    let other = format!("s1={},s9=127.0.0.1:1", c.members[0].peer);
    let out = std::process::Command::new(berth_bin())
        .args([
            "server",
            "--name",
            "s1",
            "--peer-addr",
            &c.members[0].peer,
            "--client-addr",
            &c.members[0].client,
        ])
        .arg("--data-dir")
        .arg(&c.members[0].data_dir)
        .args(["--initial-cluster", &other])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cluster"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_save_and_restore_seed_a_new_cluster() {
    let c = Cluster::start(1, &[]).await;
    write_range(&c.client(), 0, 10).await;
    let file = c.dir.path().join("backup.db");
    etcdctl_ok(&c.endpoints(), &["snapshot", "save", file.to_str().unwrap()]);
    // `berth snapshot save` writes the same format; restore from its file.
    let ours = c.dir.path().join("backup-berth.db");
    let out = std::process::Command::new(berth_bin())
        .args([
            "snapshot",
            "save",
            ours.to_str().unwrap(),
            "--server",
            &c.endpoints(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::metadata(&file).unwrap().len() > 0);
    let file = ours;
    let data_dir = c.dir.path().join("restored");
    let out = std::process::Command::new(berth_bin())
        .args([
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut m = Cluster {
        dir: tempfile::tempdir().unwrap(),
        members: Vec::new(),
        initial_cluster: String::new(),
    };
    let peer = format!("127.0.0.1:{}", free_port());
    m.initial_cluster = format!("r1={peer}");
    m.members.push(Member {
        name: "r1".into(),
        peer,
        client: format!("127.0.0.1:{}", free_port()),
        data_dir,
        child: None,
        extra_args: Vec::new(),
        log: c.dir.path().join("r1.log"),
    });
    m.start_member(0);
    m.wait_leader().await;
    assert_all_present(&m.client(), &(0..10).collect::<Vec<_>>()).await;
}

/// Waits until member `i` has applied key `k` (a serializable read on it alone).
async fn wait_member_has(c: &Cluster, i: usize, k: u64) {
    let on_member =
        berth_client::EtcdClient::new(&[c.members[i].client.clone()], Duration::from_secs(2)).unwrap();
    eventually("the member applied the writes", || async {
        let r = on_member
            .range(pb::RangeRequest {
                key: key(k),
                serializable: true,
                ..Default::default()
            })
            .await
            .ok()?;
        (r.kvs.len() == 1).then_some(())
    })
    .await;
}

/// JEPSEN.md bug 2 with real processes: a follower SIGKILLed restarts fine; SIGKILLed again
/// and its live WAL truncated to half (a disk fault), it refuses to start with an error that
/// names its data dir and says to rejoin it empty, instead of serving a log that forgot
/// entries it had acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_wal_lost_its_tail_exits_with_a_clear_error() {
    let mut c = Cluster::start(3, &[]).await;
    let client = c.client();
    assert_eq!(write_range(&client, 0, 40).await.len(), 40);
    let leader = c.wait_leader().await;
    let victim = (leader + 1) % 3;
    wait_member_has(&c, victim, 39).await;

    c.members[victim].kill();
    c.start_member(victim);
    let client = c.client();
    assert_eq!(write_range(&client, 40, 80).await.len(), 40);
    wait_member_has(&c, victim, 79).await;
    c.members[victim].kill();

    let db = c.members[victim].data_dir.join("db");
    let mut wals: Vec<_> = std::fs::read_dir(&db)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    wals.sort();
    let wal = wals.pop().expect("a live WAL");
    let len = std::fs::metadata(&wal).unwrap().len();
    assert!(len > 4096, "the live WAL holds the writes ({len} bytes)");
    // The whole live WAL, not half of it: half may fall after the last acknowledged entry
    // (only state-machine writes lost, a legitimate start); all of it surely loses entries.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(0)
        .unwrap();

    let m = &c.members[victim];
    let stderr_path = c.dir.path().join("refused.stderr");
    let mut child = std::process::Command::new(berth_bin())
        .args([
            "server",
            "--name",
            &m.name,
            "--peer-addr",
            &m.peer,
            "--client-addr",
            &m.client,
        ])
        .arg("--data-dir")
        .arg(&m.data_dir)
        .args(["--initial-cluster", &c.initial_cluster])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    // Before the fix it started and served: stop it by its PID and fail.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "a member with a truncated WAL kept running: {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(!status.success(), "{stderr}");
    for needle in [
        "refusing to start",
        &m.data_dir.display().to_string()[..],
        "is behind what this member had acknowledged",
        "rejoin it with an empty data dir",
    ] {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}: {stderr}");
    }
    // The other two go on.
    let client = c.client();
    assert_eq!(write_range(&client, 80, 90).await.len(), 10);
}
