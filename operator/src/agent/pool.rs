//! The agents the operator can hand runs to, and which one takes the next run. Pure: the
//! reconciler feeds it the agent pods it watches and its own count of pending runs.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;

/// What placement sees of one agent pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentView {
    /// The agent pod's name.
    pub pod: String,
    /// Its node.
    pub node: String,
    /// `ip:port` to dial.
    pub address: String,
    /// The pod is Ready and not being deleted.
    pub ready: bool,
}

impl AgentView {
    /// The view of an agent pod listening on `port`; `None` until it has a node and an IP.
    pub fn of(pod: &Pod, port: u16) -> Option<AgentView> {
        let node = pod.spec.as_ref()?.node_name.clone()?;
        let status = pod.status.as_ref()?;
        let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
        let ready = pod.metadata.deletion_timestamp.is_none()
            && status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
        let address = if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        };
        Some(AgentView {
            pod: pod.name_any(),
            node,
            address,
            ready,
        })
    }
}

/// Picks the agent for a run that may go to any of `nodes`: a Ready agent on one of them with
/// fewer than `max_pending` runs handed to it and not yet answered, the least loaded first (then
/// by name, so the choice is stable). Otherwise says why none qualifies.
pub fn choose<'a>(
    agents: &'a [AgentView],
    nodes: &[String],
    pending: impl Fn(&str) -> u32,
    max_pending: u32,
) -> Result<(&'a AgentView, u32), String> {
    let on_nodes: Vec<&AgentView> = agents.iter().filter(|a| nodes.contains(&a.node)).collect();
    if on_nodes.is_empty() {
        return Err(if agents.is_empty() {
            "no agent is running".into()
        } else {
            format!("no agent runs on an eligible node ({})", nodes.join(", "))
        });
    }
    let ready: Vec<&AgentView> = on_nodes.iter().copied().filter(|a| a.ready).collect();
    if ready.is_empty() {
        return Err(format!(
            "no agent on an eligible node is Ready ({} not Ready)",
            on_nodes.len()
        ));
    }
    ready
        .iter()
        .map(|agent| (*agent, pending(&agent.pod)))
        .filter(|(_, load)| *load < max_pending)
        .min_by(|(a, load_a), (b, load_b)| load_a.cmp(load_b).then_with(|| a.pod.cmp(&b.pod)))
        .ok_or_else(|| {
            format!(
                "every Ready agent on an eligible node has {max_pending} runs pending (agent.maxPending)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn agent(pod: &str, node: &str, ready: bool) -> AgentView {
        AgentView {
            pod: pod.into(),
            node: node.into(),
            address: format!("10.0.0.1:{}", 8443),
            ready,
        }
    }

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn pod(node: Option<&str>, ip: Option<&str>, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("agent-x".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(Into::into),
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: ip.map(Into::into),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn an_agent_pod_is_seen_once_it_has_a_node_and_an_address() {
        assert_eq!(
            AgentView::of(&pod(None, Some("10.1.0.5"), true), 8443),
            None
        );
        assert_eq!(AgentView::of(&pod(Some("a"), None, true), 8443), None);
        let view = AgentView::of(&pod(Some("a"), Some("10.1.0.5"), true), 8443);
        assert_eq!(
            view,
            Some(AgentView {
                pod: "agent-x".into(),
                node: "a".into(),
                address: "10.1.0.5:8443".into(),
                ready: true,
            })
        );
        let v6 = AgentView::of(&pod(Some("a"), Some("fd00::5"), true), 8443);
        assert_eq!(v6.map(|v| v.address), Some("[fd00::5]:8443".into()));
    }

    #[test]
    fn an_agent_pod_that_is_not_ready_or_is_being_deleted_is_not_ready() {
        let unready = AgentView::of(&pod(Some("a"), Some("10.1.0.5"), false), 8443);
        assert_eq!(unready.map(|v| v.ready), Some(false));
        let mut deleting = pod(Some("a"), Some("10.1.0.5"), true);
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert_eq!(AgentView::of(&deleting, 8443).map(|v| v.ready), Some(false));
    }

    #[test]
    fn the_least_loaded_ready_agent_on_an_eligible_node_is_chosen() {
        let agents = [
            agent("agent-a", "a", true),
            agent("agent-b", "b", true),
            agent("agent-c", "c", true),
        ];
        let load = |pod: &str| if pod == "agent-a" { 5 } else { 2 };
        let (chosen, pending) =
            choose(&agents, &nodes(&["a", "b"]), load, 10).expect("an agent qualifies");
        assert_eq!((chosen.pod.as_str(), pending), ("agent-b", 2));
        // Ties go by name.
        let (chosen, _) =
            choose(&agents, &nodes(&["b", "c"]), |_| 0, 10).expect("an agent qualifies");
        assert_eq!(chosen.pod, "agent-b");
    }

    #[test]
    fn no_agent_qualifies_says_why() {
        let why = |agents: &[AgentView], load: u32| {
            choose(agents, &nodes(&["a"]), |_| load, 4).expect_err("no agent qualifies")
        };
        assert_eq!(why(&[], 0), "no agent is running");
        assert!(why(&[agent("agent-b", "b", true)], 0)
            .contains("no agent runs on an eligible node (a)"));
        assert!(why(&[agent("agent-a", "a", false)], 0).contains("1 not Ready"));
        assert!(why(&[agent("agent-a", "a", true)], 4).contains("every Ready agent"));
        assert!(choose(&[agent("agent-a", "a", true)], &nodes(&["a"]), |_| 3, 4).is_ok());
    }
}
