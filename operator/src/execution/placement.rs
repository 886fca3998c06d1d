//! Where an execution runs: a pure function of the requested runtime, the operator's policy and
//! the nodes and RuntimeClasses the operator observes.
//!
//! A node is a WasmEdge node when it carries one of the configured labels (default
//! `wasmfn.dev/wasmedge=true`, plus the runtime-class-manager convention `<handler>=provisioned`)
//! or matches the node selector of a RuntimeClass whose handler is the WasmEdge handler. A Wasm
//! pod names that RuntimeClass, so it can only land on nodes that also satisfy the class's
//! `scheduling` (node selector, and taints its tolerations cover); only Ready, schedulable nodes
//! count.

use std::collections::BTreeMap;

use wasmfn_api::ExecutionRuntime;

pub use crate::label_selector::LabelRequirement;

use crate::agent::pool::AgentView;

/// The operator's placement settings.
#[derive(Clone, Debug)]
pub struct Policy {
    /// False: executions never use WasmEdge nodes (`WASMEDGE_ENABLED=false`).
    pub wasmedge_enabled: bool,
    /// Labels that mark WasmEdge nodes (any one suffices).
    pub node_selectors: Vec<LabelRequirement>,
    /// The containerd runtime handler of the project's shim.
    pub handler: String,
}

impl Policy {
    /// The selectors including the runtime-class-manager convention `<handler>=provisioned`.
    fn selectors(&self) -> Vec<LabelRequirement> {
        let mut all = self.node_selectors.clone();
        let convention = LabelRequirement {
            key: self.handler.clone(),
            value: Some("provisioned".into()),
        };
        if !all.contains(&convention) {
            all.push(convention);
        }
        all
    }
}

/// A taint as placement needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taint {
    /// Key.
    pub key: String,
    /// Value (empty when none).
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// A toleration as placement needs it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Toleration {
    /// Key (empty with `Exists`: every key).
    pub key: String,
    /// `Equal` (default) or `Exists`.
    pub operator: String,
    /// Value for `Equal`.
    pub value: String,
    /// Effect tolerated (empty: every effect).
    pub effect: String,
}

impl Toleration {
    fn tolerates(&self, taint: &Taint) -> bool {
        if !self.effect.is_empty() && self.effect != taint.effect {
            return false;
        }
        if self.operator == "Exists" {
            return self.key.is_empty() || self.key == taint.key;
        }
        self.key == taint.key && self.value == taint.value
    }
}

/// What placement sees of a node.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The `Ready` condition is True.
    pub ready: bool,
    /// Cordoned (`spec.unschedulable`).
    pub unschedulable: bool,
    /// Its taints.
    pub taints: Vec<Taint>,
}

/// What placement sees of a RuntimeClass.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RuntimeClassView {
    /// The RuntimeClass's name (what a pod's `runtimeClassName` says).
    pub name: String,
    /// The containerd handler it selects.
    pub handler: String,
    /// `scheduling.nodeSelector`.
    pub node_selector: BTreeMap<String, String>,
    /// `scheduling.tolerations`.
    pub tolerations: Vec<Toleration>,
}

/// Where to run, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// A Wasm pod with `runtimeClassName` on one of `nodes` (sorted).
    Wasm {
        /// The RuntimeClass to name.
        runtime_class: String,
        /// Its scheduling tolerations (also set on the pod, in case the admission plugin that
        /// merges them is off).
        tolerations: Vec<Toleration>,
        /// The eligible nodes.
        nodes: Vec<String>,
        /// Why.
        reason: String,
    },
    /// The warm agent on a WasmEdge node: no pod for this run.
    Agent {
        /// The agent pod.
        agent: String,
        /// Its node.
        node: String,
        /// `ip:port` to dial.
        address: String,
        /// Why.
        reason: String,
    },
    /// A container pod running the runner image.
    Container {
        /// Why.
        reason: String,
    },
    /// Nowhere yet (`runtime: WasmEdge` without an eligible node).
    Wait {
        /// Why, and what would unblock it.
        reason: String,
    },
}

/// Decides where an execution with `runtime` runs.
pub fn place(
    runtime: ExecutionRuntime,
    policy: &Policy,
    nodes: &[NodeView],
    classes: &[RuntimeClassView],
) -> Placement {
    if runtime == ExecutionRuntime::Container {
        return Placement::Container {
            reason: "runtime Container was requested".into(),
        };
    }
    let wasm = if policy.wasmedge_enabled {
        wasm_nodes(policy, nodes, classes)
    } else {
        Err("WasmEdge placement is disabled in the operator (WASMEDGE_ENABLED=false)".into())
    };
    match (wasm, runtime) {
        (Ok(placement), _) => placement,
        (Err(why), ExecutionRuntime::WasmEdge) => Placement::Wait {
            reason: format!("runtime WasmEdge was requested but {why}; waiting for one"),
        },
        (Err(why), _) => Placement::Container {
            reason: format!("{why}: falling back to a container pod"),
        },
    }
}

/// The nodes a run pod of `placement` may be admitted to: a Wasm placement's eligible nodes;
/// for a container pod every Ready, schedulable node without a `NoSchedule`/`NoExecute` taint
/// (run pods tolerate none for long); none for the agent or a wait.
pub fn pod_nodes(placement: &Placement, nodes: &[NodeView]) -> Vec<String> {
    match placement {
        Placement::Wasm { nodes, .. } => nodes.clone(),
        Placement::Container { .. } => {
            let mut open: Vec<String> = nodes
                .iter()
                .filter(|n| n.ready && !n.unschedulable)
                .filter(|n| {
                    !n.taints
                        .iter()
                        .any(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
                })
                .map(|n| n.name.clone())
                .collect();
            open.sort();
            open
        }
        Placement::Agent { .. } | Placement::Wait { .. } => Vec::new(),
    }
}

/// Prefers a warm agent to a Wasm pod. `choose` is asked for an agent on the Wasm placement's
/// nodes (see [`crate::agent::pool::choose`]); without one the Wasm pod stays, its reason
/// saying why no agent took the run. Other placements are kept as they are.
pub fn prefer_agent(
    placement: Placement,
    choose: impl FnOnce(&[String]) -> Result<(AgentView, u32), String>,
) -> Placement {
    let Placement::Wasm {
        runtime_class,
        tolerations,
        nodes,
        reason,
    } = placement
    else {
        return placement;
    };
    match choose(&nodes) {
        Ok((agent, pending)) => Placement::Agent {
            reason: format!(
                "agent {} on WasmEdge node {} is Ready with {pending} run{} pending",
                agent.pod,
                agent.node,
                if pending == 1 { "" } else { "s" }
            ),
            agent: agent.pod,
            node: agent.node,
            address: agent.address,
        },
        Err(why) => Placement::Wasm {
            reason: format!("{reason}; no agent: {why}"),
            runtime_class,
            tolerations,
            nodes,
        },
    }
}

/// The Wasm placement, or why there is none.
fn wasm_nodes(
    policy: &Policy,
    nodes: &[NodeView],
    classes: &[RuntimeClassView],
) -> Result<Placement, String> {
    // The class named like the handler wins; otherwise the first by name.
    let mut matching: Vec<&RuntimeClassView> = classes
        .iter()
        .filter(|c| c.handler == policy.handler)
        .collect();
    matching.sort_by_key(|c| (c.name != policy.handler, c.name.clone()));
    let Some(class) = matching.first() else {
        return Err(format!(
            "no RuntimeClass has handler {:?} (install the chart's RuntimeClass)",
            policy.handler
        ));
    };
    let selectors = policy.selectors();
    let class_selects = |node: &NodeView| {
        class
            .node_selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v))
    };
    let mut eligible = Vec::new();
    let mut refused = Vec::new();
    for node in nodes {
        let labelled = selectors.iter().any(|s| s.matches(&node.labels));
        let by_class = !class.node_selector.is_empty() && class_selects(node);
        if !labelled && !by_class {
            continue;
        }
        let untolerated = node
            .taints
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .find(|t| !class.tolerations.iter().any(|tol| tol.tolerates(t)));
        let problem = if !node.ready {
            Some("not Ready".to_owned())
        } else if node.unschedulable {
            Some("cordoned".to_owned())
        } else if !class_selects(node) {
            Some(format!(
                "outside RuntimeClass {}'s node selector",
                class.name
            ))
        } else {
            untolerated.map(|t| format!("taint {}:{} not tolerated", t.key, t.effect))
        };
        match problem {
            None => eligible.push(node.name.clone()),
            Some(problem) => refused.push(format!("{} is {problem}", node.name)),
        }
    }
    eligible.sort();
    refused.sort();
    if eligible.is_empty() {
        let selectors: Vec<String> = selectors.iter().map(ToString::to_string).collect();
        return Err(if refused.is_empty() {
            format!(
                "no node is labelled as a WasmEdge node ({})",
                selectors.join(" or ")
            )
        } else {
            format!("no WasmEdge node can take it ({})", refused.join("; "))
        });
    }
    Ok(Placement::Wasm {
        runtime_class: class.name.clone(),
        tolerations: class.tolerations.clone(),
        reason: format!(
            "WasmEdge node{} {} Ready (RuntimeClass {})",
            if eligible.len() == 1 { "" } else { "s" },
            eligible.join(", "),
            class.name
        ),
        nodes: eligible,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            wasmedge_enabled: true,
            node_selectors: vec![
                LabelRequirement::parse("wasmfn.dev/wasmedge=true").expect("valid")
            ],
            handler: "wasmfn".into(),
        }
    }

    fn node(name: &str, labels: &[(&str, &str)]) -> NodeView {
        NodeView {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ready: true,
            unschedulable: false,
            taints: Vec::new(),
        }
    }

    fn class(selector: &[(&str, &str)]) -> RuntimeClassView {
        RuntimeClassView {
            name: "wasmfn".into(),
            handler: "wasmfn".into(),
            node_selector: selector
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tolerations: Vec::new(),
        }
    }

    fn cluster() -> (Vec<NodeView>, Vec<RuntimeClassView>) {
        (
            vec![
                node("b", &[]),
                node("a", &[("wasmfn.dev/wasmedge", "true")]),
            ],
            vec![class(&[("wasmfn.dev/wasmedge", "true")])],
        )
    }

    fn wasm_nodes_of(placement: &Placement) -> Option<Vec<String>> {
        match placement {
            Placement::Wasm { nodes, .. } => Some(nodes.clone()),
            _ => None,
        }
    }

    #[test]
    fn container_pods_may_go_to_ready_schedulable_untainted_nodes_and_wasm_pods_to_eligible_ones() {
        let mut nodes = vec![
            node("d", &[]),
            node("a", &[]),
            node("b", &[]),
            node("c", &[]),
            node("e", &[]),
        ];
        nodes[2].ready = false;
        nodes[3].unschedulable = true;
        nodes[4].taints.push(Taint {
            key: "dedicated".into(),
            value: "gpu".into(),
            effect: "NoSchedule".into(),
        });
        let container = Placement::Container {
            reason: "asked".into(),
        };
        assert_eq!(pod_nodes(&container, &nodes), ["a", "d"]);
        let wasm = Placement::Wasm {
            runtime_class: "wasmfn".into(),
            tolerations: vec![],
            nodes: vec!["b".into()],
            reason: "b".into(),
        };
        assert_eq!(pod_nodes(&wasm, &nodes), ["b"]);
        let wait = Placement::Wait {
            reason: "none".into(),
        };
        assert!(pod_nodes(&wait, &nodes).is_empty());
    }

    #[test]
    fn auto_prefers_a_ready_wasmedge_node() {
        let (nodes, classes) = cluster();
        let placement = place(ExecutionRuntime::Auto, &policy(), &nodes, &classes);
        assert_eq!(wasm_nodes_of(&placement), Some(vec!["a".to_string()]));
        let Placement::Wasm {
            runtime_class,
            reason,
            ..
        } = placement
        else {
            unreachable!()
        };
        assert_eq!(runtime_class, "wasmfn");
        assert!(reason.contains("WasmEdge node a Ready"), "{reason}");
    }

    #[test]
    fn container_is_always_a_container_pod() {
        let (nodes, classes) = cluster();
        assert!(matches!(
            place(ExecutionRuntime::Container, &policy(), &nodes, &classes),
            Placement::Container { .. }
        ));
    }

    /// Every way node A can stop being usable, for both Auto and WasmEdge.
    #[test]
    fn an_unusable_node_means_fallback_for_auto_and_waiting_for_wasmedge() {
        type Spoil = fn(&mut NodeView, &mut RuntimeClassView);
        let cases: [(&str, Spoil, &str); 5] = [
            ("cordoned", |n, _| n.unschedulable = true, "a is cordoned"),
            ("not ready", |n, _| n.ready = false, "a is not Ready"),
            (
                "unlabelled",
                |n, _| n.labels.clear(),
                "no node is labelled as a WasmEdge node (wasmfn.dev/wasmedge=true or wasmfn=provisioned)",
            ),
            (
                "tainted",
                |n, _| {
                    n.taints.push(Taint {
                        key: "dedicated".into(),
                        value: "gpu".into(),
                        effect: "NoSchedule".into(),
                    })
                },
                "taint dedicated:NoSchedule not tolerated",
            ),
            (
                "no runtime class",
                |_, c| c.handler = "runc".into(),
                "no RuntimeClass has handler \"wasmfn\"",
            ),
        ];
        for (name, spoil, why) in cases {
            let (mut nodes, mut classes) = cluster();
            spoil(&mut nodes[1], &mut classes[0]);
            match place(ExecutionRuntime::Auto, &policy(), &nodes, &classes) {
                Placement::Container { reason } => {
                    assert!(reason.contains(why), "{name}: {reason}");
                    assert!(reason.contains("falling back"), "{name}: {reason}");
                }
                other => panic!("{name}: Auto should fall back, got {other:?}"),
            }
            match place(ExecutionRuntime::WasmEdge, &policy(), &nodes, &classes) {
                Placement::Wait { reason } => assert!(reason.contains(why), "{name}: {reason}"),
                other => panic!("{name}: WasmEdge must wait, got {other:?}"),
            }
        }
    }

    #[test]
    fn disabled_wasmedge_falls_back_or_waits() {
        let (nodes, classes) = cluster();
        let policy = Policy {
            wasmedge_enabled: false,
            ..policy()
        };
        assert!(matches!(
            place(ExecutionRuntime::Auto, &policy, &nodes, &classes),
            Placement::Container { reason } if reason.contains("WASMEDGE_ENABLED=false")
        ));
        assert!(matches!(
            place(ExecutionRuntime::WasmEdge, &policy, &nodes, &classes),
            Placement::Wait { .. }
        ));
    }

    #[test]
    fn runtime_class_manager_label_and_class_selector_mark_wasmedge_nodes() {
        // The `<handler>=provisioned` convention, with a class that schedules anywhere.
        let nodes = vec![node("c", &[("wasmfn", "provisioned")]), node("d", &[])];
        let placement = place(ExecutionRuntime::Auto, &policy(), &nodes, &[class(&[])]);
        assert_eq!(wasm_nodes_of(&placement), Some(vec!["c".to_string()]));
        // A node only the RuntimeClass's own selector picks.
        let nodes = vec![node("e", &[("pool", "wasm")]), node("f", &[])];
        let placement = place(
            ExecutionRuntime::Auto,
            &policy(),
            &nodes,
            &[class(&[("pool", "wasm")])],
        );
        assert_eq!(wasm_nodes_of(&placement), Some(vec!["e".to_string()]));
        // A labelled node outside the class's selector cannot host its pods.
        let nodes = vec![node("g", &[("wasmfn.dev/wasmedge", "true")])];
        match place(
            ExecutionRuntime::Auto,
            &policy(),
            &nodes,
            &[class(&[("pool", "wasm")])],
        ) {
            Placement::Container { reason } => {
                assert!(reason.contains("outside RuntimeClass"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn class_tolerations_admit_tainted_nodes_and_are_passed_on() {
        let mut tainted = node("a", &[("wasmfn.dev/wasmedge", "true")]);
        tainted.taints = vec![
            Taint {
                key: "wasm".into(),
                value: "only".into(),
                effect: "NoSchedule".into(),
            },
            // PreferNoSchedule never blocks.
            Taint {
                key: "soft".into(),
                value: String::new(),
                effect: "PreferNoSchedule".into(),
            },
        ];
        let mut rc = class(&[]);
        rc.tolerations = vec![Toleration {
            key: "wasm".into(),
            operator: "Exists".into(),
            ..Default::default()
        }];
        match place(ExecutionRuntime::Auto, &policy(), &[tainted], &[rc]) {
            Placement::Wasm {
                nodes, tolerations, ..
            } => {
                assert_eq!(nodes, vec!["a".to_string()]);
                assert_eq!(tolerations.len(), 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tolerations_match_like_the_scheduler() {
        let taint = Taint {
            key: "k".into(),
            value: "v".into(),
            effect: "NoExecute".into(),
        };
        let tol = |key: &str, operator: &str, value: &str, effect: &str| Toleration {
            key: key.into(),
            operator: operator.into(),
            value: value.into(),
            effect: effect.into(),
        };
        assert!(tol("k", "Equal", "v", "").tolerates(&taint));
        assert!(tol("k", "", "v", "NoExecute").tolerates(&taint));
        assert!(!tol("k", "Equal", "w", "").tolerates(&taint));
        assert!(!tol("k", "Equal", "v", "NoSchedule").tolerates(&taint));
        assert!(tol("", "Exists", "", "").tolerates(&taint));
        assert!(tol("k", "Exists", "", "").tolerates(&taint));
        assert!(!tol("j", "Exists", "", "").tolerates(&taint));
    }

    #[test]
    fn the_class_named_like_the_handler_wins_and_nodes_are_sorted() {
        let nodes = vec![
            node("z", &[("wasmfn.dev/wasmedge", "true")]),
            node("y", &[("wasmfn.dev/wasmedge", "true")]),
        ];
        let mut other = class(&[]);
        other.name = "aaa-other".into();
        match place(
            ExecutionRuntime::Auto,
            &policy(),
            &nodes,
            &[other, class(&[])],
        ) {
            Placement::Wasm {
                runtime_class,
                nodes,
                reason,
                ..
            } => {
                assert_eq!(runtime_class, "wasmfn");
                assert_eq!(nodes, vec!["y".to_string(), "z".to_string()]);
                assert!(reason.contains("nodes y, z"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[cfg(test)]
mod agent_tests {
    use super::*;

    fn wasm() -> Placement {
        Placement::Wasm {
            runtime_class: "wasmfn".into(),
            tolerations: Vec::new(),
            nodes: vec!["a".into(), "b".into()],
            reason: "WasmEdge nodes a, b Ready (RuntimeClass wasmfn)".into(),
        }
    }

    fn agent(pod: &str, node: &str) -> AgentView {
        AgentView {
            pod: pod.into(),
            node: node.into(),
            address: "10.1.0.7:8443".into(),
            ready: true,
        }
    }

    #[test]
    fn a_chosen_agent_takes_the_run_instead_of_a_wasm_pod() {
        let mut asked = Vec::new();
        let placement = prefer_agent(wasm(), |nodes| {
            asked = nodes.to_vec();
            Ok((agent("wasmfn-agent-x", "b"), 1))
        });
        assert_eq!(asked, ["a", "b"]);
        assert_eq!(
            placement,
            Placement::Agent {
                agent: "wasmfn-agent-x".into(),
                node: "b".into(),
                address: "10.1.0.7:8443".into(),
                reason: "agent wasmfn-agent-x on WasmEdge node b is Ready with 1 run pending"
                    .into(),
            }
        );
    }

    #[test]
    fn without_an_agent_the_wasm_pod_stays_and_says_why() {
        match prefer_agent(wasm(), |_| Err("no agent is running".into())) {
            Placement::Wasm { reason, nodes, .. } => {
                assert_eq!(nodes, ["a", "b"]);
                assert_eq!(
                    reason,
                    "WasmEdge nodes a, b Ready (RuntimeClass wasmfn); no agent: no agent is running"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn container_and_waiting_placements_never_ask_for_an_agent() {
        for placement in [
            Placement::Container {
                reason: "runtime Container was requested".into(),
            },
            Placement::Wait {
                reason: "no WasmEdge node".into(),
            },
        ] {
            let kept = prefer_agent(placement.clone(), |_| panic!("asked for an agent"));
            assert_eq!(kept, placement);
        }
    }
}
