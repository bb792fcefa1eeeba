//! etcdctl 3.4 (a client no one here wrote) against a 3-member Berth cluster on loopback.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_kv_txn_watch_lease_members() {
    let c = Cluster::start(3, &[]).await;
    let ep = c.endpoints();

    // put / get / prefix / delete
    assert_eq!(etcdctl_ok(&ep, &["put", "foo", "bar"]).trim(), "OK");
    assert_eq!(etcdctl_ok(&ep, &["put", "foo2", "baz"]).trim(), "OK");
    assert_eq!(etcdctl_ok(&ep, &["get", "foo"]), "foo\nbar\n");
    assert_eq!(
        etcdctl_ok(&ep, &["get", "foo", "--prefix", "--keys-only"]),
        "foo\n\nfoo2\n\n"
    );
    // serializable reads on each member see the write once applied there
    for m in &c.members {
        let got = etcdctl_ok(&m.client, &["get", "foo", "--print-value-only"]);
        assert_eq!(got, "bar\n", "linearizable read on {}", m.name);
    }
    let json = etcdctl_ok(&ep, &["get", "foo", "-w", "json"]);
    assert!(json.contains("\"version\":1"), "{json}");
    assert_eq!(etcdctl_ok(&ep, &["del", "foo2"]).trim(), "1");
    assert_eq!(etcdctl_ok(&ep, &["get", "foo2"]), "");

    // txn: compare on value, then branch
    let mut txn = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={ep}"))
        .args(["txn"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    txn.stdin
        .take()
        .unwrap()
        .write_all(b"value(\"foo\") = \"bar\"\n\nput foo qux\n\nput foo nope\n\n")
        .unwrap();
    let out = txn.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "SUCCESS\n\nOK\n");
    assert_eq!(etcdctl_ok(&ep, &["get", "foo", "--print-value-only"]), "qux\n");

    // watch from a past revision: replays history in order, then stays open
    let rev0 = header_revision(&ep);
    etcdctl_ok(&ep, &["put", "w/a", "1"]);
    etcdctl_ok(&ep, &["put", "w/b", "2"]);
    etcdctl_ok(&ep, &["del", "w/a"]);
    let mut watch = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", c.members[1].client))
        .args(["watch", "w/", "--prefix", "--rev", &(rev0 + 1).to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .take(8)
            .map(|l| l.unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(
        lines,
        vec!["PUT", "w/a", "1", "PUT", "w/b", "2", "DELETE", "w/a"],
        "watch saw {lines:?}"
    );

    // lease: grant, attach, revoke removes the key
    let grant = etcdctl_ok(&ep, &["lease", "grant", "60"]);
    let id = grant.split_whitespace().nth(1).expect("lease id").to_string();
    etcdctl_ok(&ep, &["put", "leased", "v", "--lease", &id]);
    let ttl = etcdctl_ok(&ep, &["lease", "timetolive", &id, "--keys"]);
    assert!(ttl.contains("leased"), "{ttl}");
    assert!(etcdctl_ok(&ep, &["lease", "list"]).contains(&id));
    etcdctl_ok(&ep, &["lease", "keep-alive", "--once", &id]);
    etcdctl_ok(&ep, &["lease", "revoke", &id]);
    assert_eq!(etcdctl_ok(&ep, &["get", "leased"]), "");

    // member list and endpoint status
    let members = etcdctl_ok(&ep, &["member", "list"]);
    for m in &c.members {
        assert!(
            members.contains(&m.name) && members.contains(&m.peer),
            "{members}"
        );
    }
    let status = etcdctl_ok(&ep, &["endpoint", "status"]);
    assert_eq!(status.lines().count(), 3, "{status}");

    // compaction: old revisions are gone with etcd's error
    let rev = header_revision(&ep);
    etcdctl_ok(&ep, &["compact", &rev.to_string()]);
    let old = etcdctl(&ep, &["get", "foo", "--rev", "2"]);
    assert!(!old.status.success());
    assert!(String::from_utf8_lossy(&old.stderr).contains("required revision has been compacted"));
}

fn header_revision(ep: &str) -> i64 {
    let j = etcdctl_ok(ep, &["get", "foo", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    v["header"]["revision"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_and_bad_requests_change_nothing() {
    let c = Cluster::start(1, &["--max-request-bytes", "1024"]).await;
    let ep = c.endpoints();
    let big = "x".repeat(4096);
    let out = etcdctl(&ep, &["put", "big", &big]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("request is too large"),
        "{out:?}"
    );
    assert_eq!(etcdctl_ok(&ep, &["get", "big"]), "");
    let out = etcdctl(&ep, &["put", "k", "v", "--lease", "1234"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("requested lease not found"),
        "{out:?}"
    );
    assert_eq!(etcdctl_ok(&ep, &["get", "k"]), "");
}

#[test]
fn conflicting_and_bad_flags_are_named() {
    let run = |args: &[&str]| {
        let out = Command::new(berth_bin()).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d").display().to_string();
    let base = [
        "server",
        "--name",
        "s1",
        "--data-dir",
        &d,
        "--peer-addr",
        "127.0.0.1:1",
        "--client-addr",
        "127.0.0.1:2",
    ];
    let err = run(&[
        &base[..],
        &["--initial-cluster", "s1=127.0.0.1:1", "--join", "127.0.0.1:3"],
    ]
    .concat());
    assert!(
        err.contains("--initial-cluster") && err.contains("--join"),
        "{err}"
    );
    let err = run(&[&base[..], &["--initial-cluster", "s2=127.0.0.1:1"]].concat());
    assert!(
        err.contains("--initial-cluster does not name this member"),
        "{err}"
    );
    let err = run(&[&base[..], &["--auto-compaction-mode", "weekly"]].concat());
    assert!(err.contains("--auto-compaction-mode"), "{err}");
    assert!(
        !dir.path().join("d").exists(),
        "a refused start must not create the data dir"
    );
}
