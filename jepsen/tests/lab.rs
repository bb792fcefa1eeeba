//! The lab network for real (needs root): namespaces and bridge exist while the `Lab` lives,
//! a partition rule stops TCP between two nodes and healing restores it, and everything is
//! gone after drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use berth_jepsen::run::lab::{enter_netns, Lab, NAME_PREFIX};

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs `f` on a thread inside namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let handle = Lab::open_netns(ns).unwrap();
    std::thread::spawn(move || {
        enter_netns(&handle).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Whether node 1 can open a TCP connection to `addr` and get a byte back.
fn reachable(lab: &Lab, addr: std::net::SocketAddr) -> bool {
    in_netns(&lab.node_netns(1), move || {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut b = [0u8; 1];
        s.write_all(b"?").is_ok() && s.read_exact(&mut b).is_ok()
    })
}

#[test]
fn partition_rules_cut_tcp_between_nodes_and_drop_removes_everything() {
    let run = format!("t{:03x}", std::process::id() % 0x1000);
    let lab = Lab::create(NAME_PREFIX, &run, 2).unwrap();
    assert!(netns_list().contains(&lab.node_netns(2)));
    // An echo server on node 2.
    let ip = lab.node_ip(2);
    let listener = in_netns(&lab.node_netns(2), move || {
        TcpListener::bind((ip.as_str(), 0)).unwrap()
    });
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut b = [0u8; 1];
            if conn.read_exact(&mut b).is_ok() {
                let _ = conn.write_all(&b);
            }
        }
    });
    assert!(reachable(&lab, addr), "linked nodes talk");
    lab.block(1, &[2]).unwrap();
    assert!(!reachable(&lab, addr), "a partition cuts them");
    lab.unblock(1).unwrap();
    assert!(reachable(&lab, addr), "healing restores the link");
    // A slow, lossy link applies (netem, or its fallback on kernels without it) and clears.
    let how = lab.netem(1, 40, 20, 5).unwrap();
    assert!(how.starts_with("netem") || how.starts_with("tbf"), "{how}");
    lab.clear_netem(1);
    assert!(reachable(&lab, addr), "a cleared slow link is gone");
    let names = [lab.lab_netns(), lab.node_netns(1), lab.node_netns(2)];
    drop(lab);
    let left = netns_list();
    for name in names {
        assert!(!left.contains(&name), "{name} left behind");
    }
}

#[test]
fn nothing_in_the_lab_routes_to_the_uplink() {
    let run = format!("u{:03x}", std::process::id() % 0x1000);
    let lab = Lab::create(NAME_PREFIX, &run, 1).unwrap();
    for ns in [lab.lab_netns(), lab.node_netns(1)] {
        let out = Command::new("ip")
            .args(["-n", &ns, "route", "show", "default"])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).trim().is_empty(),
            "{ns} has a default route"
        );
    }
}

#[test]
fn labs_with_other_prefixes_coexist_with_the_same_run_id_and_subnet() {
    // What a campaign (its own prefix) beside a CI run (the default one) amounts to, even if
    // their run ids (PIDs) collided: only namespace names are machine-global.
    let run = format!("c{:03x}", std::process::id() % 0x1000);
    let ci = Lab::create(NAME_PREFIX, &run, 1).unwrap();
    let campaign = Lab::create("bjc-", &run, 1).unwrap();
    assert!(campaign.node_netns(1).starts_with("bjc-"));
    assert!(!campaign.node_netns(1).starts_with(NAME_PREFIX));
    assert_eq!(
        ci.node_ip(1),
        campaign.node_ip(1),
        "the same subnet, in separate namespaces"
    );
    let campaign_names = [campaign.lab_netns(), campaign.node_netns(1)];
    drop(ci);
    let left = netns_list();
    for name in &campaign_names {
        assert!(
            left.contains(name.as_str()),
            "{name} removed by the other lab's cleanup"
        );
    }
    drop(campaign);
    let left = netns_list();
    for name in &campaign_names {
        assert!(!left.contains(name.as_str()), "{name} left behind");
    }
}

#[test]
fn bad_prefixes_are_refused_with_the_flag_named() {
    for bad in ["", "BJ-", "bj_", "toolongpfx-"] {
        let e = Lab::check_prefix(bad).unwrap_err().to_string();
        assert!(e.contains("lab-prefix"), "{bad:?}: {e}");
    }
    Lab::check_prefix("bjc-").unwrap();
}
