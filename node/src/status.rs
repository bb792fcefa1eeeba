//! Pod status as Kubernetes reports it, computed from what the agent knows of each container.
//! Pure: time comes in as strings, so the phase rules and conditions are unit-tested.

use berth_proto::corev1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    HostIp, PodCondition, PodIp, PodStatus,
};

/// A container's termination.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: i32,
    /// "Completed", "Error", "OOMKilled", ...
    pub reason: String,
    pub message: String,
    pub started_at: String,
    pub finished_at: String,
    pub container_id: String,
}

/// A container's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Waiting { reason: String, message: String },
    Running { started_at: String },
    Terminated(Terminated),
}

/// What the agent knows of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub container_id: String,
    pub state: State,
    pub last_state: Option<Terminated>,
    pub restart_count: i32,
    pub ready: bool,
    pub started: bool,
}

/// What the agent knows of a pod.
#[derive(Debug, Clone, Default)]
pub struct PodView {
    pub init_containers: Vec<ContainerView>,
    pub containers: Vec<ContainerView>,
    pub restart_policy: String,
    pub pod_ip: String,
    pub host_ip: String,
    pub start_time: String,
    /// A pod-level problem (sandbox or volume setup), shown as the status message.
    pub message: String,
}

/// The pod phase by the kubelet's rules.
pub fn phase(v: &PodView) -> &'static str {
    let policy = v.restart_policy.as_str();
    for c in &v.init_containers {
        match &c.state {
            State::Terminated(t) if t.exit_code == 0 => {}
            State::Terminated(_) if policy == "Never" => return "Failed",
            _ => return "Pending",
        }
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &v.containers {
        match &c.state {
            State::Running { .. } => running += 1,
            State::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            State::Waiting { .. } if c.last_state.is_some() => stopped += 1,
            State::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 || v.containers.is_empty() {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if policy == "Always" || policy.is_empty() {
        // Stopped but about to be restarted.
        "Running"
    } else if stopped == succeeded {
        "Succeeded"
    } else if policy == "Never" {
        "Failed"
    } else {
        // OnFailure: the failed ones restart.
        "Running"
    }
}

fn condition(
    old: &[PodCondition],
    kind: &str,
    ok: bool,
    reason: &str,
    message: String,
    now: &str,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let since = old
        .iter()
        .find(|c| c.r#type == kind && c.status == status)
        .map_or(now.to_string(), |c| c.last_transition_time.clone());
    PodCondition {
        r#type: kind.into(),
        status: status.into(),
        last_probe_time: String::new(),
        last_transition_time: since,
        reason: if ok { String::new() } else { reason.into() },
        message: if ok { String::new() } else { message },
    }
}

fn state(s: &State) -> ContainerState {
    match s {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: reason.clone(),
                message: message.clone(),
            }),
            ..Default::default()
        },
        State::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: started_at.clone(),
            }),
            ..Default::default()
        },
        State::Terminated(t) => terminated(t),
    }
}

fn terminated(t: &Terminated) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: t.exit_code,
            signal: t.signal,
            reason: t.reason.clone(),
            message: t.message.clone(),
            started_at: t.started_at.clone(),
            finished_at: t.finished_at.clone(),
            container_id: t.container_id.clone(),
        }),
        ..Default::default()
    }
}

fn container_status(c: &ContainerView) -> ContainerStatus {
    ContainerStatus {
        name: c.name.clone(),
        state: Some(state(&c.state)),
        last_state: Some(c.last_state.as_ref().map(terminated).unwrap_or_default()),
        ready: c.ready,
        restart_count: c.restart_count,
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id: c.container_id.clone(),
        started: Some(c.started),
    }
}

/// The pod's status. `old` keeps condition transition times and the PodScheduled condition
/// the scheduler wrote; `now` stamps conditions that change.
pub fn pod_status(v: &PodView, old: Option<&PodStatus>, now: &str) -> PodStatus {
    let old_conditions = old.map(|s| s.conditions.clone()).unwrap_or_default();
    let phase = phase(v);
    let terminal = phase == "Succeeded" || phase == "Failed";
    let initialized = v
        .init_containers
        .iter()
        .all(|c| matches!(&c.state, State::Terminated(t) if t.exit_code == 0));
    let uninit: Vec<&str> = v
        .init_containers
        .iter()
        .filter(|c| !matches!(&c.state, State::Terminated(t) if t.exit_code == 0))
        .map(|c| c.name.as_str())
        .collect();
    let unready: Vec<&str> = v
        .containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let ready = unready.is_empty() && !terminal;
    let (reason, message) = if terminal {
        ("PodCompleted", String::new())
    } else {
        (
            "ContainersNotReady",
            format!("containers with unready status: [{}]", unready.join(" ")),
        )
    };
    let mut conditions = vec![
        old_conditions
            .iter()
            .find(|c| c.r#type == "PodScheduled")
            .cloned()
            .unwrap_or_else(|| condition(&[], "PodScheduled", true, "", String::new(), now)),
        condition(
            &old_conditions,
            "Initialized",
            initialized,
            if terminal {
                "PodCompleted"
            } else {
                "ContainersNotInitialized"
            },
            format!("containers with incomplete status: [{}]", uninit.join(" ")),
            now,
        ),
        condition(
            &old_conditions,
            "ContainersReady",
            ready,
            reason,
            message.clone(),
            now,
        ),
        condition(&old_conditions, "Ready", ready, reason, message, now),
    ];
    if terminal {
        for c in &mut conditions[2..] {
            c.message.clear();
        }
    }
    PodStatus {
        phase: phase.into(),
        conditions,
        message: v.message.clone(),
        host_ip: v.host_ip.clone(),
        host_ips: if v.host_ip.is_empty() {
            vec![]
        } else {
            vec![HostIp {
                ip: v.host_ip.clone(),
            }]
        },
        pod_ip: v.pod_ip.clone(),
        pod_ips: if v.pod_ip.is_empty() {
            vec![]
        } else {
            vec![PodIp { ip: v.pod_ip.clone() }]
        },
        start_time: v.start_time.clone(),
        init_container_statuses: v.init_containers.iter().map(container_status).collect(),
        container_statuses: v.containers.iter().map(container_status).collect(),
        qos_class: old.map(|s| s.qos_class.clone()).unwrap_or_default(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, state: State, last: bool) -> ContainerView {
        let ready = matches!(state, State::Running { .. });
        ContainerView {
            name: name.into(),
            image: "busybox".into(),
            image_id: String::new(),
            container_id: String::new(),
            state,
            last_state: last.then(|| term(1)),
            restart_count: 0,
            ready,
            started: ready,
        }
    }

    fn term(code: i32) -> Terminated {
        Terminated {
            exit_code: code,
            signal: 0,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: String::new(),
            started_at: "t0".into(),
            finished_at: "t1".into(),
            container_id: String::new(),
        }
    }

    fn running() -> State {
        State::Running {
            started_at: "t0".into(),
        }
    }

    fn waiting(r: &str) -> State {
        State::Waiting {
            reason: r.into(),
            message: String::new(),
        }
    }

    fn view(policy: &str, init: Vec<ContainerView>, cs: Vec<ContainerView>) -> PodView {
        PodView {
            init_containers: init,
            containers: cs,
            restart_policy: policy.into(),
            ..Default::default()
        }
    }

    #[test]
    fn phases_follow_the_kubelet() {
        let t = |code| State::Terminated(term(code));
        assert_eq!(
            phase(&view(
                "Always",
                vec![],
                vec![c("a", waiting("ContainerCreating"), false)]
            )),
            "Pending"
        );
        assert_eq!(
            phase(&view("Always", vec![], vec![c("a", running(), false)])),
            "Running"
        );
        assert_eq!(
            phase(&view(
                "Always",
                vec![],
                vec![c("a", waiting("CrashLoopBackOff"), true)]
            )),
            "Running"
        );
        assert_eq!(
            phase(&view(
                "Never",
                vec![],
                vec![c("a", t(0), false), c("b", t(0), false)]
            )),
            "Succeeded"
        );
        assert_eq!(
            phase(&view(
                "Never",
                vec![],
                vec![c("a", t(0), false), c("b", t(2), false)]
            )),
            "Failed"
        );
        assert_eq!(
            phase(&view("OnFailure", vec![], vec![c("a", t(0), false)])),
            "Succeeded"
        );
        assert_eq!(
            phase(&view("OnFailure", vec![], vec![c("a", t(1), false)])),
            "Running"
        );
        assert_eq!(
            phase(&view(
                "Never",
                vec![],
                vec![c("a", running(), false), c("b", t(3), false)]
            )),
            "Running"
        );
        // Init containers gate everything.
        let init_running = c("i", running(), false);
        assert_eq!(
            phase(&view(
                "Always",
                vec![init_running],
                vec![c("a", waiting("PodInitializing"), false)]
            )),
            "Pending"
        );
        assert_eq!(
            phase(&view(
                "Never",
                vec![c("i", t(1), false)],
                vec![c("a", waiting("PodInitializing"), false)]
            )),
            "Failed"
        );
        assert_eq!(
            phase(&view(
                "OnFailure",
                vec![c("i", t(1), false)],
                vec![c("a", waiting("PodInitializing"), false)]
            )),
            "Pending"
        );
        assert_eq!(
            phase(&view(
                "Always",
                vec![c("i", t(0), false)],
                vec![c("a", running(), false)]
            )),
            "Running"
        );
    }

    #[test]
    fn conditions_and_transition_times() {
        let v = view(
            "Always",
            vec![c("i", State::Terminated(term(0)), false)],
            vec![
                c("a", running(), false),
                c("b", waiting("ContainerCreating"), false),
            ],
        );
        let s1 = pod_status(&v, None, "T1");
        let get = |s: &PodStatus, k: &str| s.conditions.iter().find(|c| c.r#type == k).unwrap().clone();
        assert_eq!(s1.phase, "Pending");
        assert_eq!(get(&s1, "Initialized").status, "True");
        let r = get(&s1, "Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "ContainersNotReady")
        );
        assert_eq!(r.message, "containers with unready status: [b]");
        assert_eq!(
            s1.container_statuses[1]
                .state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason,
            "ContainerCreating"
        );

        let mut v2 = v.clone();
        v2.containers[1] = c("b", running(), false);
        let s2 = pod_status(&v2, Some(&s1), "T2");
        assert_eq!(s2.phase, "Running");
        assert_eq!(get(&s2, "Ready").status, "True");
        assert_eq!(get(&s2, "Ready").last_transition_time, "T2");
        assert_eq!(
            get(&s2, "Initialized").last_transition_time,
            "T1",
            "unchanged condition keeps its time"
        );
        assert_eq!(get(&s2, "PodScheduled").status, "True");

        let done = view("Never", vec![], vec![c("a", State::Terminated(term(0)), false)]);
        let s3 = pod_status(&done, Some(&s2), "T3");
        assert_eq!(s3.phase, "Succeeded");
        let r = get(&s3, "Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_str(), r.message.as_str()),
            ("False", "PodCompleted", "")
        );
        assert_eq!(
            s3.container_statuses[0]
                .state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .reason,
            "Completed"
        );
    }
}
