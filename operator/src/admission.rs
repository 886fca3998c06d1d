//! Admission of run pods: at most `cap` in flight on each node, the rest queued in the order
//! their executions were created.
//!
//! A burst that becomes a pod per execution at once overloads the kubelets: pods wait in a
//! node's backlog, their deadlines run, and the ones at the back are lost although no guest ever
//! ran. Admitted instead, a queued execution has no pod and no deadline running; its condition
//! says `Queued`, and it is woken when a run pod finishes.
//!
//! A node's in-flight run pods are the pods the watch shows unfinished (phase neither Succeeded
//! nor Failed) that are bound to it or were admitted to it, plus the pods this replica admitted
//! that the watch has not shown yet. An admitted pod is pinned to its node, so the cap holds per
//! node whatever the scheduler would have chosen.
//!
//! The choice ([`admit`]) is pure; [`Admission`] keeps the queue and the not-yet-watched pods
//! behind a lock, so two reconciles never take the same room.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt as _;
use tokio::sync::mpsc;
use wasmfn_api::WasmExecution;

use wasmfn_api::labels::{EXECUTION_UID as EXECUTION_UID_LABEL, RUN_NODE as NODE_LABEL};

/// How long a pod this replica admitted counts without the watch showing it: a create that
/// failed without telling (the reconcile errs and the execution is admitted again) cannot hold
/// its room for longer.
const UNSEEN_FOR: Duration = Duration::from_secs(60);

/// Where an execution's queue position comes from: its creation time, then its uid.
pub type QueueKey = (Timestamp, String);

/// What [`admit`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// Create the pod on this node.
    Node(String),
    /// No room for it yet.
    Queued {
        /// For the condition: why, in words that stay the same while nothing changes.
        message: String,
    },
}

/// Run pods in flight per node among `pods` (the watched run pods).
pub fn in_flight<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for pod in pods {
        if let Some(node) = node_of(pod).filter(|_| unfinished(pod)) {
            *counts.entry(node.to_owned()).or_insert(0) += 1;
        }
    }
    counts
}

/// The node a run pod is on or was admitted to.
fn node_of(pod: &Pod) -> Option<&str> {
    pod.labels().get(EXECUTION_UID_LABEL)?;
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .or_else(|| pod.labels().get(NODE_LABEL).map(String::as_str))
}

fn unfinished(pod: &Pod) -> bool {
    !matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether a watched pod's change may have freed room: it finished, or is going away.
pub fn frees_room(pod: &Pod) -> bool {
    pod.labels().contains_key(EXECUTION_UID_LABEL)
        && (!unfinished(pod) || pod.metadata.deletion_timestamp.is_some())
}

/// Decides for one execution: the candidate with the most room (ties by name), when some
/// candidate has room and fewer executions are queued before this one than there is room on its
/// candidates; else queued. `cap == 0` admits everything to the first candidate.
pub fn admit(
    cap: u32,
    candidates: &[String],
    in_flight: &BTreeMap<String, u32>,
    queued_before: usize,
) -> Admitted {
    let load = |node: &String| in_flight.get(node).copied().unwrap_or(0);
    if cap == 0 {
        return match candidates.iter().min_by_key(|n| (load(n), n.as_str())) {
            Some(node) => Admitted::Node(node.clone()),
            None => Admitted::Queued {
                message: "no node to run on".into(),
            },
        };
    }
    let room: usize = candidates
        .iter()
        .map(|n| cap.saturating_sub(load(n)) as usize)
        .sum();
    let best = candidates
        .iter()
        .filter(|n| load(n) < cap)
        .min_by_key(|n| (load(n), n.as_str()));
    match best {
        Some(node) if queued_before < room => Admitted::Node(node.clone()),
        // One message whether the nodes are full or the room left is taken by earlier queued
        // executions: which of the two holds changes from one reconcile to the next, and a
        // message that follows it would rewrite the status and repeat the event each time.
        _ => Admitted::Queued {
            message: format!(
                "queued for room on {}: at most {cap} run pods in flight per node; the execution \
                 starts when one finishes, in creation order",
                candidates.join(", ")
            ),
        },
    }
}

/// The queue and the pods admitted but not yet watched.
#[derive(Debug, Default)]
struct State {
    queued: BTreeMap<QueueKey, ObjectRef<WasmExecution>>,
    /// `namespace/pod` → (node, when admitted).
    unseen: HashMap<String, (String, Instant)>,
}

impl State {
    fn counts(&mut self, watched: &[std::sync::Arc<Pod>], now: Instant) -> BTreeMap<String, u32> {
        let mut counts = in_flight(watched.iter().map(AsRef::as_ref));
        let seen: std::collections::HashSet<String> =
            watched.iter().map(|p| pod_key(p.as_ref())).collect();
        self.unseen
            .retain(|key, (_, at)| !seen.contains(key) && now.duration_since(*at) < UNSEEN_FOR);
        for (node, _) in self.unseen.values() {
            *counts.entry(node.clone()).or_insert(0) += 1;
        }
        counts
    }
}

fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

/// The operator's admission queue (one per replica; only the leader admits).
#[derive(Debug)]
pub struct Admission {
    cap: u32,
    state: Mutex<State>,
    wake: mpsc::UnboundedSender<ObjectRef<WasmExecution>>,
    woken: Mutex<Option<mpsc::UnboundedReceiver<ObjectRef<WasmExecution>>>>,
}

impl Admission {
    /// A queue admitting at most `cap` run pods per node (0: no cap).
    pub fn new(cap: u32) -> Self {
        let (wake, woken) = mpsc::unbounded_channel();
        Admission {
            cap,
            state: Mutex::default(),
            wake,
            woken: Mutex::new(Some(woken)),
        }
    }

    /// The cap per node (0: none).
    pub fn cap(&self) -> u32 {
        self.cap
    }

    /// The executions to reconcile because room may have freed (taken once, by the controller).
    pub fn take_woken(&self) -> Option<mpsc::UnboundedReceiver<ObjectRef<WasmExecution>>> {
        self.woken.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Admits the execution queued under `key` to one of `candidates`, holding the room for
    /// its pod `namespace/pod` until the watch shows it; or queues it. `watched` are the run
    /// pods as watched.
    pub fn admit(
        &self,
        key: QueueKey,
        execution: ObjectRef<WasmExecution>,
        pod: &str,
        candidates: &[String],
        watched: &[std::sync::Arc<Pod>],
    ) -> Admitted {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let counts = state.counts(watched, Instant::now());
        let queued_before = state.queued.range(..&key).count();
        let decided = admit(self.cap, candidates, &counts, queued_before);
        match &decided {
            Admitted::Node(node) => {
                state.queued.remove(&key);
                state
                    .unseen
                    .insert(pod.to_owned(), (node.clone(), Instant::now()));
            }
            Admitted::Queued { .. } => {
                state.queued.insert(key, execution);
            }
        }
        decided
    }

    /// Gives back the room held for `namespace/pod` (its create failed).
    pub fn release(&self, pod: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.unseen.remove(pod);
    }

    /// Takes the execution queued under `key` out of the queue (it runs elsewhere, finished or
    /// went away).
    pub fn leave(&self, key: &QueueKey) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.queued.remove(key);
    }

    /// Keeps only the queued executions whose uid `keep` accepts.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.queued.retain(|(_, uid), _| keep(uid));
    }

    /// How many executions are queued.
    pub fn queued(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .queued
            .len()
    }

    /// Reconciles the first `n` queued executions (room may have freed).
    pub fn wake(&self, n: usize) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for execution in state.queued.values().take(n) {
            let _ = self.wake.send(execution.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use kube::api::ObjectMeta;
    use std::sync::Arc;

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn load(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    }

    fn pod(name: &str, bound: Option<&str>, admitted: Option<&str>, phase: &str) -> Arc<Pod> {
        let mut labels = BTreeMap::from([(EXECUTION_UID_LABEL.to_owned(), "uid".to_owned())]);
        if let Some(node) = admitted {
            labels.insert(NODE_LABEL.to_owned(), node.to_owned());
        }
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: Some(labels),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: bound.map(str::to_owned),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        })
    }

    fn key(second: i64, uid: &str) -> QueueKey {
        (
            Timestamp::from_second(second).expect("valid"),
            uid.to_owned(),
        )
    }

    fn reference(name: &str) -> ObjectRef<WasmExecution> {
        ObjectRef::new(name).within("ns")
    }

    #[test]
    fn the_node_with_the_most_room_is_chosen_and_ties_go_by_name() {
        let candidates = nodes(&["b", "a"]);
        assert_eq!(
            admit(3, &candidates, &load(&[("a", 2), ("b", 1)]), 0),
            Admitted::Node("b".into())
        );
        assert_eq!(
            admit(3, &candidates, &load(&[]), 0),
            Admitted::Node("a".into())
        );
    }

    #[test]
    fn full_nodes_queue_the_execution_and_say_so() {
        let decided = admit(2, &nodes(&["a", "b"]), &load(&[("a", 2), ("b", 3)]), 0);
        let Admitted::Queued { message } = decided else {
            panic!("admitted: {decided:?}");
        };
        assert!(
            message.contains("queued for room on a, b: at most 2 run pods in flight per node"),
            "{message}"
        );
    }

    #[test]
    fn earlier_queued_executions_take_the_room_first() {
        let candidates = nodes(&["a", "b"]);
        let counts = load(&[("a", 2), ("b", 1)]);
        // One slot is free (b): the first in the queue gets it, the second waits.
        assert_eq!(
            admit(2, &candidates, &counts, 0),
            Admitted::Node("b".into())
        );
        let behind = admit(2, &candidates, &counts, 1);
        assert!(matches!(behind, Admitted::Queued { .. }), "{behind:?}");
        // Waiting behind others reads the same as waiting for full nodes, so a status that
        // flips between the two causes is not rewritten (nor its event repeated).
        let full = admit(2, &candidates, &load(&[("a", 2), ("b", 2)]), 0);
        assert_eq!(behind, full);
    }

    #[test]
    fn no_cap_admits_everything_to_the_least_loaded_candidate() {
        assert_eq!(
            admit(0, &nodes(&["a", "b"]), &load(&[("a", 500)]), 900),
            Admitted::Node("b".into())
        );
        assert!(matches!(
            admit(0, &[], &load(&[]), 0),
            Admitted::Queued { .. }
        ));
    }

    #[test]
    fn unfinished_pods_count_on_their_node_or_the_node_they_were_admitted_to() {
        let pods = [
            pod("p1", Some("a"), Some("a"), "Running"),
            pod("p2", None, Some("a"), "Pending"),
            pod("p3", Some("b"), None, "Pending"),
            pod("p4", Some("a"), Some("a"), "Succeeded"),
            pod("p5", Some("b"), Some("b"), "Failed"),
            pod("p6", None, None, "Pending"),
        ];
        assert_eq!(
            in_flight(pods.iter().map(AsRef::as_ref)),
            load(&[("a", 2), ("b", 1)])
        );
        assert!(!frees_room(&pods[0]));
        assert!(frees_room(&pods[3]));
    }

    #[test]
    fn admitted_pods_hold_their_room_until_the_watch_shows_them() {
        let admission = Admission::new(1);
        let one = nodes(&["a"]);
        let first = admission.admit(key(1, "u1"), reference("e1"), "ns/e1-run-1", &one, &[]);
        assert_eq!(first, Admitted::Node("a".into()));
        // The watch has not shown e1's pod: its room is still taken.
        let second = admission.admit(key(2, "u2"), reference("e2"), "ns/e2-run-1", &one, &[]);
        assert!(matches!(second, Admitted::Queued { .. }));
        assert_eq!(admission.queued(), 1);
        // The watch shows it running: still one in flight.
        let running = [pod("e1-run-1", Some("a"), Some("a"), "Running")];
        let again = admission.admit(key(2, "u2"), reference("e2"), "ns/e2-run-1", &one, &running);
        assert!(matches!(again, Admitted::Queued { .. }));
        // It finished: e2 is admitted and leaves the queue.
        let done = [pod("e1-run-1", Some("a"), Some("a"), "Succeeded")];
        let admitted = admission.admit(key(2, "u2"), reference("e2"), "ns/e2-run-1", &one, &done);
        assert_eq!(admitted, Admitted::Node("a".into()));
        assert_eq!(admission.queued(), 0);
    }

    #[test]
    fn a_newer_execution_does_not_overtake_a_queued_older_one() {
        let admission = Admission::new(1);
        let one = nodes(&["a"]);
        let busy = [pod("x-run-1", Some("a"), Some("a"), "Running")];
        let old = admission.admit(key(1, "old"), reference("old"), "ns/old-run-1", &one, &busy);
        assert!(matches!(old, Admitted::Queued { .. }));
        // Room frees; the newer execution asks first but the older one is ahead.
        let newer = admission.admit(key(5, "new"), reference("new"), "ns/new-run-1", &one, &[]);
        assert!(matches!(newer, Admitted::Queued { .. }), "{newer:?}");
        let old = admission.admit(key(1, "old"), reference("old"), "ns/old-run-1", &one, &[]);
        assert_eq!(old, Admitted::Node("a".into()));
    }

    #[test]
    fn a_failed_create_gives_its_room_back_and_leaving_or_retaining_empties_the_queue() {
        let admission = Admission::new(1);
        let one = nodes(&["a"]);
        let first = admission.admit(key(1, "u1"), reference("e1"), "ns/e1-run-1", &one, &[]);
        assert_eq!(first, Admitted::Node("a".into()));
        admission.release("ns/e1-run-1");
        let second = admission.admit(key(2, "u2"), reference("e2"), "ns/e2-run-1", &one, &[]);
        assert_eq!(second, Admitted::Node("a".into()));
        let third = admission.admit(key(3, "u3"), reference("e3"), "ns/e3-run-1", &one, &[]);
        let fourth = admission.admit(key(4, "u4"), reference("e4"), "ns/e4-run-1", &one, &[]);
        assert!(matches!(third, Admitted::Queued { .. }));
        assert!(matches!(fourth, Admitted::Queued { .. }));
        admission.leave(&key(3, "u3"));
        assert_eq!(admission.queued(), 1);
        admission.retain(|uid| uid != "u4");
        assert_eq!(admission.queued(), 0);
    }

    #[tokio::test]
    async fn waking_sends_the_head_of_the_queue_in_order() {
        let admission = Admission::new(1);
        let mut woken = admission.take_woken().expect("first take");
        assert!(admission.take_woken().is_none(), "taken once");
        let one = nodes(&["a"]);
        let busy = [pod("x-run-1", Some("a"), Some("a"), "Running")];
        for (second, name) in [(3, "c"), (1, "a"), (2, "b")] {
            admission.admit(
                key(second, name),
                reference(name),
                &format!("ns/{name}-run-1"),
                &one,
                &busy,
            );
        }
        admission.wake(2);
        assert_eq!(woken.recv().await, Some(reference("a")));
        assert_eq!(woken.recv().await, Some(reference("b")));
        assert!(woken.try_recv().is_err(), "only the first two");
    }
}
