//! The warm agent on the local cluster: the chart's agent DaemonSet (its generated CA and
//! certificates, no Kubernetes token) on the WasmEdge node, and an operator replica handing it
//! runs with the client certificate the chart made for the operator.
//!
//! - executions run on the agent, without a pod, and status, printer column and event say so;
//! - pods in another namespace that reach the agent's address get nothing: without a client
//!   certificate, or with one from another CA, the handshake is refused;
//! - an agent killed mid-run loses the attempt (`AgentLost`), the retry finishes it, and the
//!   restarted agent still holds the module in its node-local cache (nothing is sent again);
//! - a caller's traceparent parents the operator's spans and the agent's (queued, run and its
//!   phases), exported over OTLP; an unusable one is reported with an event.

mod common;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use common::executions::{events_for, execution, is_final, list, prebuilt_function, SLEEPER};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use serde_json::{json, Value};
use wasmfn_e2e::agents::{Agents, PORT};
use wasmfn_e2e::observability::{span, OtlpReceiver};
use wasmfn_e2e::operator::{crds_dir, operator_binary, OperatorProcess};
use wasmfn_e2e::Kubectl;

const ECHO: &str = include_str!("../../runner-image/compile/tests/sources/wat/echo.wat");

struct Suite {
    agents: Agents,
    operator: OperatorProcess,
    collector: OtlpReceiver,
    _state: tempfile::TempDir,
}

/// The agents and the operator, set up once; tests take turns (one kills the agent).
fn suite() -> MutexGuard<'static, Suite> {
    static SUITE: OnceLock<Mutex<Suite>> = OnceLock::new();
    SUITE
        .get_or_init(|| {
            let state = tempfile::tempdir().expect("state directory");
            let cluster = common::cluster();
            cluster
                .kubectl()
                .run(&["apply", "-f", crds_dir().to_str().expect("utf-8")])
                .expect("CRDs");
            let agents =
                Agents::install(&cluster, "wasmfn-agents", state.path()).expect("install agents");
            let flags = agents.operator_flags();
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            let collector = OtlpReceiver::start().expect("the OTLP receiver");
            let env = [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.as_str()),
                ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ];
            let mut operator =
                OperatorProcess::start_with_env(cluster.info(), "agent-suite", &flags, &env)
                    .expect("operator");
            operator
                .wait_for_log("became the leader", Duration::from_secs(60))
                .expect("the operator leads");
            Mutex::new(Suite {
                agents,
                operator,
                collector,
                _state: state,
            })
        })
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn wasmfn_binary() -> PathBuf {
    operator_binary()
        .expect("binaries built")
        .with_file_name("wasmfn")
}

fn finished(ns: &Kubectl, name: &str, timeout: Duration) -> Value {
    ns.wait_for(&["wasmexecution", name], timeout, |e| {
        is_final(e).then(|| e.clone())
    })
    .unwrap_or_else(|e| panic!("{name} never finished: {e}"))
}

/// The echo function, Ready in `ns`.
fn ready_echo(ns: &Kubectl) {
    ns.create(&prebuilt_function("echo", ECHO, json!({})))
        .expect("function");
    ns.wait_for(&["wasmfunction", "echo"], Duration::from_secs(60), |f| {
        (f["status"]["phase"] == "Ready").then_some(())
    })
    .expect("the function is Ready");
}

/// The agent's address as the operator dials it (the node's address: host network here).
fn agent_address(agents: &Agents) -> (String, String, String) {
    let pods = agents.pods().expect("agent pods");
    assert_eq!(pods.len(), 1, "one agent, on the WasmEdge node: {pods:?}");
    let (pod, node, ip) = pods[0].clone();
    (pod, node, format!("{ip}:{PORT}"))
}

#[test]
fn executions_run_on_the_agent_without_a_pod_and_status_column_and_event_say_so() {
    let suite = suite();
    let (agent_pod, agent_node, _) = agent_address(&suite.agents);
    let ns = common::namespace("agent-run");
    ready_echo(&ns);
    ns.create(&list(vec![
        execution("auto", "echo", json!({"stdin": "through the agent\n"})),
        execution("wasmedge", "echo", json!({"runtime": "WasmEdge"})),
    ]))
    .expect("executions");
    for (name, stdout) in [
        ("auto", "hello from wat\nthrough the agent\n"),
        ("wasmedge", "hello from wat\n"),
    ] {
        let done = finished(&ns, name, Duration::from_secs(120));
        let status = &done["status"];
        assert_eq!(status["phase"], "Succeeded", "{name}: {status:#}");
        assert_eq!(status["path"], "Agent", "{name}: {status:#}");
        assert_eq!(status["agent"], agent_pod.as_str(), "{name}: {status:#}");
        assert_eq!(status["node"], agent_node.as_str(), "{name}: {status:#}");
        assert_eq!(status["runtime"], "WasmEdge", "{name}: {status:#}");
        assert_eq!(
            status["aot"], true,
            "the agent runs its AOT form: {status:#}"
        );
        assert!(status["podName"].is_null(), "{name}: {status:#}");
        assert_eq!(status["stdout"], stdout, "{name}: {status:#}");
        let reason = status["placementReason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(&format!("agent {agent_pod} on WasmEdge node {agent_node}")),
            "{reason}"
        );
        let events = events_for(&ns, name);
        assert!(
            events.iter().any(|(kind, reason, note, _)| kind == "Normal"
                && reason == "Succeeded"
                && note.contains(&format!("(path Agent: agent {agent_pod} on WasmEdge node"))),
            "{name}: {events:?}"
        );
    }
    let pods = ns.json(&["get", "pods"]).expect("pods");
    assert_eq!(pods["items"], json!([]), "no pod ran an execution");
    let table = ns
        .run(&["get", "wasmexecution", "auto"])
        .expect("kubectl get");
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let column = header
        .iter()
        .position(|h| *h == "PATH")
        .expect("a PATH column");
    assert_eq!(row.get(column), Some(&"Agent"), "{table}");
}

#[test]
fn python_and_javascript_executions_run_on_the_agent_under_its_aot_interpreters() {
    let suite = suite();
    let (agent_pod, _, _) = agent_address(&suite.agents);
    let ns = common::namespace("agent-scripts");
    let functions = [
        (
            "py",
            "python",
            "import json, sys\nd = json.load(sys.stdin)\nprint(json.dumps({'total': sum(d['n'])}))\n",
        ),
        (
            "js",
            "javascript",
            "import * as std from 'std';\nconst d = JSON.parse(std.in.readAsString());\n\
             console.log(JSON.stringify({total: d.n.reduce((a, b) => a + b, 0)}));\n\
             throw new Error('after the answer');\n",
        ),
    ];
    for (name, language, code) in functions {
        let function = json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction",
            "metadata": {"name": name},
            "spec": {"language": common::api_objects::language(language), "source": {"code": code}}});
        ns.create(&function.to_string()).expect("function");
    }
    for (name, _, _) in functions {
        ns.wait_for(&["wasmfunction", name], Duration::from_secs(420), |f| {
            (f["status"]["phase"] == "Ready").then_some(())
        })
        .unwrap_or_else(|e| panic!("{name} is never Ready: {e}"));
    }
    ns.create(&list(vec![
        execution("py-run", "py", json!({"input": {"n": [1, 2, 4]}})),
        execution(
            "js-run",
            "js",
            json!({"input": {"n": [1, 2, 4]}, "retries": 2}),
        ),
    ]))
    .expect("executions");
    for (name, phase) in [("py-run", "Succeeded"), ("js-run", "Failed")] {
        let done = finished(&ns, name, Duration::from_secs(120));
        let status = &done["status"];
        assert_eq!(status["phase"], phase, "{name}: {status:#}");
        assert_eq!(status["path"], "Agent", "{name}: {status:#}");
        assert_eq!(status["agent"], agent_pod.as_str(), "{name}: {status:#}");
        assert_eq!(status["aot"], true, "{name}: {status:#}");
        assert_eq!(status["result"], json!({"total": 7}), "{name}: {status:#}");
        assert_eq!(status["attempts"], 1, "{name}: {status:#}");
    }
    let thrown = finished(&ns, "js-run", Duration::from_secs(10));
    assert_eq!(thrown["status"]["reason"], "NonZeroExit");
    let stderr = thrown["status"]["stderr"].as_str().unwrap_or_default();
    assert!(stderr.contains("Error: after the answer"), "{stderr}");
    let pods = ns.json(&["get", "pods"]).expect("pods");
    let run_pods: Vec<&Value> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["labels"]["wasmfn.dev/execution"].is_string())
        .collect();
    assert!(run_pods.is_empty(), "no run pod: {run_pods:?}");
}

/// A CA the agents do not know, and a client certificate it signed.
fn forged_identity() -> [(String, String); 3] {
    let mut ca_params = CertificateParams::new(Vec::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("key");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let mut params = CertificateParams::new(vec!["wasmfn-operator".into()]).expect("params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("certificate");
    [
        ("ca.crt".into(), ca.pem()),
        ("tls.crt".into(), cert.pem()),
        ("tls.key".into(), key.serialize_pem()),
    ]
}

fn probe(name: &str, node: &str, address: &str, forged: bool) -> String {
    let mut args = vec!["agent-status", "--address", address];
    if forged {
        args.extend(["--tls-dir", "/forged"]);
    }
    let mounts = if forged {
        "    volumeMounts:\n    - name: forged\n      mountPath: /forged\n  volumes:\n  - name: forged\n    secret:\n      secretName: forged\n"
    } else {
        ""
    };
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: Never
  hostNetwork: true
  automountServiceAccountToken: false
  nodeSelector:
    kubernetes.io/hostname: \"{node}\"
  containers:
  - name: probe
    image: {image}
    args: {args}
{mounts}",
        image = common::image("runner"),
        args = serde_json::to_string(&args).expect("args"),
    )
}

#[test]
fn a_pod_in_another_namespace_cannot_hand_work_to_an_agent() {
    let suite = suite();
    let (_, node, address) = agent_address(&suite.agents);
    // The operator's certificate gets an answer at that address: what stops the pods below is
    // the agent's TLS, not the network.
    let known = std::process::Command::new(wasmfn_binary())
        .args(["agent-status", "--address", &address, "--tls-dir"])
        .arg(&suite.agents.client_tls)
        .output()
        .expect("wasmfn agent-status");
    assert!(
        known.status.success(),
        "{}",
        String::from_utf8_lossy(&known.stderr)
    );
    let status: Value = serde_json::from_slice(&known.stdout).expect("status JSON");
    assert!(status["capacity"].as_u64().unwrap_or(0) >= 1, "{status}");

    let ns = common::namespace("intruder");
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "forged"},
        "stringData": forged_identity().into_iter().map(|(k, v)| (k, Value::String(v))).collect::<serde_json::Map<String, Value>>()
    });
    ns.create(&secret.to_string()).expect("forged secret");
    for (name, forged) in [("anonymous", false), ("forged", true)] {
        ns.create(&probe(name, &node, &address, forged))
            .expect("probe pod");
    }
    for name in ["anonymous", "forged"] {
        let ended = ns
            .wait_for(&["pod", name], Duration::from_secs(120), common::terminated)
            .unwrap_or_else(|e| panic!("{name} never ended: {e}"));
        let log = ns.run(&["logs", name]).unwrap_or_default();
        assert_eq!(ended["exitCode"], 1, "{name} was let in: {log}");
        assert!(log.contains(&address), "{name}: {log}");
        assert!(!log.contains("capacity"), "{name} got a status: {log}");
    }
    let agent_log = suite
        .agents
        .namespace
        .run(&[
            "logs",
            "-l",
            "app.kubernetes.io/component=agent",
            "--tail=200",
        ])
        .unwrap_or_default();
    assert!(
        agent_log.contains("TLS handshake failed"),
        "the agent logs the refusals: {agent_log}"
    );
}

#[test]
fn an_agent_killed_mid_run_loses_the_attempt_the_retry_finishes_it_and_the_cache_survives() {
    let suite = suite();
    let (agent_pod, _, _) = agent_address(&suite.agents);
    let ns = common::namespace("agent-lost");
    ns.create(&prebuilt_function("sleeper", SLEEPER, json!({})))
        .expect("function");
    let function = ns
        .wait_for(&["wasmfunction", "sleeper"], Duration::from_secs(60), |f| {
            (f["status"]["phase"] == "Ready").then(|| f.clone())
        })
        .expect("the function is Ready");
    let digest = function["status"]["artifact"]["digest"]
        .as_str()
        .expect("digest")
        .to_owned();
    // Long enough to be noted Running (after 5 s) well before it ends.
    ns.create(&execution("slow", "sleeper", json!({"args": ["20000"], "retries": 2})).to_string())
        .expect("execution");
    ns.wait_for(&["wasmexecution", "slow"], Duration::from_secs(60), |e| {
        (e["status"]["phase"] == "Running" && e["status"]["path"] == "Agent").then_some(())
    })
    .expect("running on the agent");
    std::thread::sleep(Duration::from_millis(500));
    suite
        .agents
        .namespace
        .run(&["delete", "pod", &agent_pod, "--grace-period=0", "--force"])
        .expect("kill the agent");
    let done = finished(&ns, "slow", Duration::from_secs(180));
    let status = &done["status"];
    assert_eq!(status["phase"], "Succeeded", "{status:#}");
    assert_eq!(status["stdout"], "slept\n", "{status:#}");
    assert!(status["attempts"].as_i64().unwrap_or(0) >= 2, "{status:#}");
    let events = events_for(&ns, "slow");
    assert!(
        events
            .iter()
            .any(|(kind, reason, note, _)| kind == "Warning"
                && reason == "AgentLost"
                && note.contains("attempt 1 was lost")),
        "{events:?}"
    );

    // The restarted agent (a new pod) still has the module: a run there sends nothing.
    suite
        .agents
        .wait_ready(Duration::from_secs(120))
        .expect("the agent is back");
    let (restarted, _, _) = agent_address(&suite.agents);
    assert_ne!(restarted, agent_pod);
    ns.create(&execution("again", "sleeper", json!({"args": ["1"]})).to_string())
        .expect("execution");
    let again = finished(&ns, "again", Duration::from_secs(120));
    assert_eq!(again["status"]["path"], "Agent", "{:#}", again["status"]);
    assert_eq!(again["status"]["agent"], restarted.as_str());
    assert_eq!(again["status"]["phase"], "Succeeded");
    let log = suite.operator.log_text();
    let sent = log
        .lines()
        .filter(|l| l.contains("sending a module to an agent") && l.contains(&digest))
        .count();
    assert_eq!(sent, 1, "the module went to the agent once:\n{log}");
}

#[test]
fn a_callers_trace_holds_the_agents_queued_run_and_phase_spans_and_a_bad_traceparent_is_reported() {
    let suite = suite();
    let (agent_pod, _, _) = agent_address(&suite.agents);
    let ns = common::namespace("agent-trace");
    ready_echo(&ns);
    let random = |bytes| wasmfn_e2e::cluster::pki::random_hex(bytes).expect("random");
    let (trace_id, caller_span) = (random(16), random(8));
    let mut traced = execution("traced", "echo", json!({}));
    traced["metadata"]["annotations"] =
        json!({"wasmfn.dev/traceparent": format!("00-{trace_id}-{caller_span}-01")});
    let mut broken = execution("badly-traced", "echo", json!({}));
    broken["metadata"]["annotations"] = json!({"wasmfn.dev/traceparent": "00-nonsense"});
    ns.create(&list(vec![traced, broken])).expect("executions");

    let done = finished(&ns, "traced", Duration::from_secs(120));
    assert_eq!(done["status"]["phase"], "Succeeded", "{:#}", done["status"]);
    assert_eq!(done["status"]["path"], "Agent", "{:#}", done["status"]);
    let spans = suite
        .collector
        .wait_for_trace(&trace_id, Duration::from_secs(30), |spans| {
            ["execution", "attempt 1", "queued", "run", "invoke"]
                .iter()
                .all(|prefix| spans.iter().any(|s| s.name.starts_with(prefix)))
        })
        .unwrap_or_else(|e| {
            panic!(
                "the agent run's spans never reached the collector ({e}); got {:#?}",
                suite.collector.spans()
            )
        });
    let execution_span = spans
        .iter()
        .find(|s| s.service == "wasmfn-operator" && s.name.starts_with("execution "))
        .expect("the execution's span");
    assert_eq!(
        execution_span.parent_span_id.as_deref(),
        Some(caller_span.as_str()),
        "a child of the caller's span"
    );
    let attempt = span(&spans, "wasmfn-operator", "attempt 1");
    assert_eq!(
        attempt.parent_span_id.as_ref(),
        Some(&execution_span.span_id)
    );
    assert_eq!(attempt.attributes["k8s.pod.name"], agent_pod);
    // The agent's own spans: the wait for a run slot and the run, both under the attempt, and
    // the run's phases under the run.
    let queued = span(&spans, "wasmfn-agent", "queued");
    assert_eq!(queued.parent_span_id.as_ref(), Some(&attempt.span_id));
    let run = span(&spans, "wasmfn-agent", "run");
    assert_eq!(
        run.parent_span_id.as_ref(),
        Some(&attempt.span_id),
        "{spans:#?}"
    );
    assert!(
        queued.end_unix_nano <= run.start_unix_nano + 1_000_000,
        "{queued:?} then {run:?}"
    );
    // The attempt covers the hand-over to the recorded answer (one clock here: one machine).
    assert!(
        attempt.start_unix_nano <= queued.start_unix_nano
            && attempt.end_unix_nano >= run.end_unix_nano,
        "{attempt:?} around {queued:?} and {run:?}"
    );
    for phase in ["load", "instantiate", "invoke"] {
        let phase_span = span(&spans, "wasmfn-agent", phase);
        assert_eq!(phase_span.parent_span_id.as_ref(), Some(&run.span_id));
        assert!(
            phase_span.start_unix_nano >= run.start_unix_nano
                && phase_span.end_unix_nano <= run.end_unix_nano,
            "{phase_span:?} within {run:?}"
        );
    }

    let broken = finished(&ns, "badly-traced", Duration::from_secs(120));
    assert_eq!(
        broken["status"]["phase"], "Succeeded",
        "{:#}",
        broken["status"]
    );
    assert_eq!(broken["status"]["path"], "Agent", "{:#}", broken["status"]);
    let events = events_for(&ns, "badly-traced");
    assert!(
        events
            .iter()
            .any(|(kind, reason, note, _)| kind == "Warning"
                && reason == "InvalidTraceparent"
                && note.contains("start a trace of their own")),
        "{events:?}"
    );
}
