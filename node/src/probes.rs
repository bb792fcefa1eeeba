//! Startup, liveness and readiness probes (exec, httpGet, tcpSocket) with Kubernetes'
//! timing: first after initialDelaySeconds, then every periodSeconds; successThreshold
//! successes in a row pass, failureThreshold failures in a row fail. Until a startup probe has
//! passed, the others do not run. HTTP and TCP probes connect from inside the pod's network
//! namespace (to 127.0.0.1 there), so they work whatever the pod network is.

use crate::netns::in_netns;
use crate::runtime::Runtime;
use crate::Error;
use berth_proto::corev1::{Container, Probe};
use berth_proto::metav1::int_or_string::Value as IntOrStr;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Longest HTTP response head read from a probed server.
const HTTP_HEAD_BYTES_MAX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

#[derive(Debug, Clone, Default)]
pub struct ProbeState {
    next_due_ms: u64,
    successes: i32,
    failures: i32,
    /// The probe's verdict after its thresholds (None before any).
    passed: Option<bool>,
}

/// Where probes reach the container.
pub struct Target {
    pub runtime: Arc<dyn Runtime>,
    pub state_root: PathBuf,
    pub container_id: String,
    pub netns: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub started: bool,
    pub ready: bool,
    /// A liveness or startup probe failed: stop the container.
    pub kill: bool,
    pub next_due_ms: Option<u64>,
}

struct Timing {
    initial_delay_ms: u64,
    period_ms: u64,
    timeout: Duration,
    success_threshold: i32,
    failure_threshold: i32,
}

fn timing(p: &Probe) -> Timing {
    let or = |v: i32, d: i32| if v <= 0 { d } else { v };
    Timing {
        initial_delay_ms: p.initial_delay_seconds.max(0) as u64 * 1000,
        period_ms: or(p.period_seconds, 10) as u64 * 1000,
        timeout: Duration::from_secs(or(p.timeout_seconds, 1) as u64),
        success_threshold: or(p.success_threshold, 1),
        failure_threshold: or(p.failure_threshold, 3),
    }
}

/// Records one probe result against the thresholds; returns the verdict so far.
pub fn record(st: &mut ProbeState, ok: bool, success_threshold: i32, failure_threshold: i32) -> Option<bool> {
    if ok {
        st.successes += 1;
        st.failures = 0;
        if st.successes >= success_threshold {
            st.passed = Some(true);
        }
    } else {
        st.failures += 1;
        st.successes = 0;
        if st.failures >= failure_threshold {
            st.passed = Some(false);
        }
    }
    st.passed
}

/// Runs the container's due probes; see the module doc.
pub async fn step(
    c: &Container,
    states: &mut HashMap<ProbeKind, ProbeState>,
    started_ms: u64,
    now_ms: u64,
    target: &Target,
) -> Outcome {
    let mut out = Outcome {
        started: true,
        ready: c.readiness_probe.is_none(),
        kill: false,
        next_due_ms: None,
    };
    let mut due = |d: u64| out.next_due_ms = Some(out.next_due_ms.map_or(d, |n| n.min(d)));
    let order = [
        (ProbeKind::Startup, &c.startup_probe),
        (ProbeKind::Liveness, &c.liveness_probe),
        (ProbeKind::Readiness, &c.readiness_probe),
    ];
    for (kind, probe) in order {
        let Some(p) = probe else { continue };
        if kind != ProbeKind::Startup && !out.started {
            continue;
        }
        let t = timing(p);
        let st = states.entry(kind).or_insert_with(|| ProbeState {
            next_due_ms: started_ms + t.initial_delay_ms,
            ..ProbeState::default()
        });
        if kind == ProbeKind::Startup && st.passed == Some(true) {
            continue;
        }
        if now_ms >= st.next_due_ms {
            let ok = run(c, p, t.timeout, target).await;
            st.next_due_ms = now_ms + t.period_ms;
            let verdict = record(st, ok, t.success_threshold, t.failure_threshold);
            if verdict == Some(false) && kind != ProbeKind::Readiness {
                out.kill = true;
            }
        }
        due(st.next_due_ms);
        match kind {
            ProbeKind::Startup => out.started = st.passed == Some(true),
            ProbeKind::Readiness => out.ready = st.passed == Some(true),
            ProbeKind::Liveness => {}
        }
    }
    if !out.started {
        out.ready = false;
    }
    out
}

fn port_of(c: &Container, port: Option<&berth_proto::metav1::IntOrString>) -> Result<u16, String> {
    match port.and_then(|p| p.value.clone()) {
        Some(IntOrStr::IntVal(n)) => u16::try_from(n).map_err(|_| format!("port {n} out of range")),
        Some(IntOrStr::StrVal(name)) => c
            .ports
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
        None => Err("probe without a port".into()),
    }
}

async fn run(c: &Container, p: &Probe, timeout: Duration, t: &Target) -> bool {
    let r: Result<bool, String> = if let Some(e) = &p.exec {
        t.runtime
            .exec(&t.state_root, &t.container_id, &e.command, timeout)
            .await
            .map(|code| code == 0)
            .map_err(|e| e.to_string())
    } else if let Some(h) = &p.http_get {
        match port_of(c, h.port.as_ref()) {
            Ok(port) => {
                let path = if h.path.is_empty() {
                    "/".to_string()
                } else {
                    h.path.clone()
                };
                let headers: Vec<(String, String)> = h
                    .http_headers
                    .iter()
                    .map(|x| (x.name.clone(), x.value.clone()))
                    .collect();
                blocking(t, move || http_get(port, &path, &headers, timeout)).await
            }
            Err(e) => Err(e),
        }
    } else if let Some(s) = &p.tcp_socket {
        match port_of(c, s.port.as_ref()) {
            Ok(port) => blocking(t, move || tcp_connect(port, timeout).map(|_| true)).await,
            Err(e) => Err(e),
        }
    } else {
        Err("only exec, httpGet and tcpSocket probes run on this node".into())
    };
    match r {
        Ok(ok) => ok,
        Err(e) => {
            tracing::debug!(container = %c.name, "probe: {e}");
            false
        }
    }
}

async fn blocking(
    t: &Target,
    f: impl FnOnce() -> Result<bool, String> + Send + 'static,
) -> Result<bool, String> {
    let ns = t.netns.clone();
    tokio::task::spawn_blocking(move || {
        in_netns(&ns, move || f().map_err(Error::Pod)).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

fn tcp_connect(port: u16, timeout: Duration) -> Result<std::net::TcpStream, String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))
}

/// A GET whose status is 200..400 passes, as the kubelet decides.
fn http_get(port: u16, path: &str, headers: &[(String, String)], timeout: Duration) -> Result<bool, String> {
    let mut s = tcp_connect(port, timeout)?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: berth-probe/1.0\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; HTTP_HEAD_BYTES_MAX];
    let mut n = 0;
    while n < buf.len() {
        match s.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                if buf[..n].contains(&b'\n') {
                    break;
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {:?}", head.lines().next().unwrap_or("")))?;
    Ok((200..400).contains(&code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let mut st = ProbeState::default();
        assert_eq!(record(&mut st, true, 2, 3), None);
        assert_eq!(record(&mut st, true, 2, 3), Some(true));
        assert_eq!(
            record(&mut st, false, 2, 3),
            Some(true),
            "one failure keeps the verdict"
        );
        assert_eq!(record(&mut st, false, 2, 3), Some(true));
        assert_eq!(record(&mut st, false, 2, 3), Some(false));
        assert_eq!(record(&mut st, true, 2, 3), Some(false));
        assert_eq!(record(&mut st, true, 2, 3), Some(true));
    }

    #[test]
    fn http_and_tcp_against_a_real_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for (i, s) in l.incoming().take(2).enumerate() {
                let mut s = s.unwrap();
                let mut b = [0u8; 1024];
                let n = s.read(&mut b).unwrap();
                assert!(String::from_utf8_lossy(&b[..n]).starts_with("GET /healthz HTTP/1.1\r\n"));
                let status = if i == 0 {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .unwrap();
            }
        });
        let t = Duration::from_secs(2);
        assert_eq!(http_get(port, "/healthz", &[], t), Ok(true));
        assert_eq!(http_get(port, "/healthz", &[], t), Ok(false));
        server.join().unwrap();
        assert!(tcp_connect(port, t).is_err(), "listener closed");
    }
}
