//! Operator availability end to end: Lease leader election between two real replicas, a standby
//! taking over when the leader dies, and a compile that survives the operator being killed.
//! The tests start their own replicas, one test at a time; one also checks what a new leader
//! does first: re-spell objects stored with an earlier release's lower-case enum values.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::executions::{events_for, execution, is_final, prebuilt_function, Watch, SLEEPER};
use serde_json::{json, Value};
use wasmfn_e2e::observability::scrape;
use wasmfn_e2e::operator::{crds_dir, OperatorProcess};
use wasmfn_e2e::Kubectl;

/// How long a run may take to start and finish (a first pull of the image included).
const RUN_TIMEOUT: Duration = Duration::from_secs(240);

/// One test's replicas at a time: replicas of two tests would share the Lease.
static REPLICAS: Mutex<()> = Mutex::new(());

fn setup(prefix: &str) -> (Kubectl, wasmfn_e2e::ClusterInfo) {
    let cluster = common::cluster();
    let crds = crds_dir();
    cluster
        .kubectl()
        .run(&["apply", "-f", crds.to_str().expect("utf-8")])
        .expect("apply the CRDs");
    let info = cluster.info().clone();
    drop(cluster);
    (common::namespace(prefix), info)
}

fn lease_holder(ns: &Kubectl) -> Option<String> {
    let lease = ns
        .json(&["get", "lease", "wasmfn-operator", "-n", "default"])
        .ok()?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
}

fn wat_function(name: &str, comment: &str) -> String {
    let code = format!(";; {comment}\n(module (func (export \"_start\")))\n");
    json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction", "metadata": {"name": name},
           "spec": {"language": "Wat", "source": {"code": code}}})
    .to_string()
}

fn wait_ready(ns: &Kubectl, name: &str, timeout: Duration) -> Value {
    ns.wait_for(&["wasmfunction", name], timeout, |f| {
        (f["status"]["phase"] == "Ready").then(|| f.clone())
    })
    .unwrap_or_else(|e| panic!("{name} never became Ready: {e}"))
}

#[test]
fn two_replicas_never_both_act_and_the_standby_takes_over_within_15_seconds() {
    let _one_at_a_time = REPLICAS.lock().unwrap_or_else(|p| p.into_inner());
    let (ns, info) = setup("failover");
    let mut first = OperatorProcess::start(&info, "replica-one", &[]).expect("start replica one");
    first
        .wait_for_log("became the leader", Duration::from_secs(60))
        .expect("replica one leads");
    let mut second = OperatorProcess::start(&info, "replica-two", &[]).expect("start replica two");
    second
        .wait_for_log("standing by", Duration::from_secs(60))
        .expect("replica two stands by");
    assert_eq!(lease_holder(&ns).as_deref(), Some("replica-one"));
    // Its stderr is a file, not a terminal: plain text, no colour escapes.
    let log = first.log_text();
    assert!(
        !log.contains('\u{1b}'),
        "colour escapes in a log that is not a terminal:\n{log}"
    );

    // Work done while both run is done by the leader alone, as each replica's own metrics say.
    ns.create(&wat_function("while-both", "a")).expect("create");
    wait_ready(&ns, "while-both", Duration::from_secs(300));
    let reconciles = |replica: &OperatorProcess| {
        let metrics = scrape(replica.health_port).expect("scrape a replica");
        (
            metrics.sum("wasmfn_leader", &[]),
            metrics.sum("wasmfn_reconciles_total", &[]),
            metrics.sum("wasmfn_compiles_total", &[]),
        )
    };
    let (leading, reconciled, compiled) = reconciles(&first);
    assert_eq!(leading, 1.0, "replica one says it leads");
    assert!(
        reconciled >= 1.0 && compiled >= 1.0,
        "{reconciled} {compiled}"
    );
    assert_eq!(
        reconciles(&second),
        (0.0, 0.0, 0.0),
        "the standby neither leads nor reconciles nor compiles:\n{}",
        second.log_text()
    );

    // The leader dies without releasing the Lease; the standby must wait for it to expire, and
    // no longer than 15 s in all.
    first.kill();
    let killed = Instant::now();
    second
        .wait_for_log("became the leader", Duration::from_secs(30))
        .expect("replica two takes over");
    let takeover = killed.elapsed();
    eprintln!(
        "standby took over {:.1} s after the leader was killed",
        takeover.as_secs_f64()
    );
    assert!(
        takeover <= Duration::from_secs(15),
        "takeover took {takeover:?}"
    );
    assert_eq!(lease_holder(&ns).as_deref(), Some("replica-two"));
    ns.create(&wat_function("after-failover", "b"))
        .expect("create");
    wait_ready(&ns, "after-failover", Duration::from_secs(300));
    let (leading, reconciled, _) = reconciles(&second);
    assert_eq!(leading, 1.0, "replica two says it leads");
    assert!(reconciled >= 1.0, "the new leader reconciles");

    // A clean shutdown releases the Lease at once.
    assert!(
        second.terminate(Duration::from_secs(20)),
        "SIGTERM ends the leader cleanly:\n{}",
        second.log_text()
    );
    assert_eq!(lease_holder(&ns), None);
}

#[test]
fn a_leader_paused_past_its_lease_writes_nothing_when_it_resumes_and_the_result_stands() {
    let _one_at_a_time = REPLICAS.lock().unwrap_or_else(|p| p.into_inner());
    let (ns, info) = setup("paused");
    let namespace = ns.namespace_name().expect("bound").to_owned();
    let mut first = OperatorProcess::start(&info, "paused-one", &[]).expect("start replica one");
    first
        .wait_for_log("became the leader", Duration::from_secs(60))
        .expect("replica one leads");
    let mut second = OperatorProcess::start(&info, "paused-two", &[]).expect("start replica two");
    second
        .wait_for_log("standing by", Duration::from_secs(60))
        .expect("replica two stands by");
    ns.create(&prebuilt_function("sleeper", SLEEPER, json!({})))
        .expect("function");
    wait_ready(&ns, "sleeper", Duration::from_secs(60));
    let watch = Watch::start(&ns, &namespace, "wasmexecutions");
    ns.create(&execution("through-pause", "sleeper", json!({"args": ["8000"]})).to_string())
        .expect("execution");
    ns.wait_for(&["wasmexecution", "through-pause"], RUN_TIMEOUT, |e| {
        (e["status"]["phase"] == "Running").then_some(())
    })
    .expect("the run starts under replica one");

    // Paused for twice the lease (10 s): replica two takes over and records the result.
    first.signal(libc::SIGSTOP);
    second
        .wait_for_log("became the leader", Duration::from_secs(30))
        .expect("replica two takes over");
    let done = ns
        .wait_for(&["wasmexecution", "through-pause"], RUN_TIMEOUT, |e| {
            is_final(e).then(|| e.clone())
        })
        .expect("the execution finishes");
    // Twice the lease in all since the pause, at least.
    std::thread::sleep(Duration::from_secs(10));
    first.signal(libc::SIGCONT);
    // Resumed, replica one finds the Lease taken and exits; until then it writes nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while first.exit_status().is_none() {
        assert!(
            Instant::now() < deadline,
            "the resumed replica kept running:\n{}",
            first.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(done["status"]["phase"], "Succeeded", "{:#}", done["status"]);

    // In the watch's history the execution changes no more once it is final.
    let history: Vec<Value> = watch
        .events()
        .into_iter()
        .filter(|e| e.name() == "through-pause")
        .map(|e| e.object)
        .collect();
    let first_final = history
        .iter()
        .position(is_final)
        .expect("the watch saw the final status");
    for later in &history[first_final..] {
        assert_eq!(
            later["status"], history[first_final]["status"],
            "the status changed after it was final"
        );
    }
    let finishing: u64 = events_for(&ns, "through-pause")
        .iter()
        .filter(|(_, reason, _, _)| reason == "Succeeded")
        .map(|(_, _, _, count)| count)
        .sum();
    assert_eq!(finishing, 1, "exactly one finishing event");
    second.terminate(Duration::from_secs(20));
}

#[test]
fn an_operator_killed_mid_compile_resumes_without_a_duplicate_job() {
    let _one_at_a_time = REPLICAS.lock().unwrap_or_else(|p| p.into_inner());
    let (ns, info) = setup("resume");
    let mut first = OperatorProcess::start(&info, "before-crash", &[]).expect("start");
    first
        .wait_for_log("became the leader", Duration::from_secs(60))
        .expect("leads");
    let code = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../runner-image/compile/tests/sources/go/echo.go"),
    )
    .expect("go source");
    let function = json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction", "metadata": {"name": "slow"},
                          "spec": {"language": "Go", "source": {"code": code}}});
    ns.create(&function.to_string()).expect("create");
    let job_uid = ns
        .wait_for(&["jobs"], Duration::from_secs(60), |list| {
            list["items"].as_array()?.first()?["metadata"]["uid"]
                .as_str()
                .map(str::to_owned)
        })
        .expect("a compile Job starts");
    first.kill();
    // Watch the Jobs while no operator runs and after the new one starts: only ever the one.
    let mut second = OperatorProcess::start(&info, "after-crash", &[]).expect("restart");
    second
        .wait_for_log("became the leader", Duration::from_secs(60))
        .expect("the new replica leads");
    let deadline = Instant::now() + Duration::from_secs(420);
    let ready = loop {
        for job in ns.json(&["get", "jobs"]).expect("jobs")["items"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(
                job["metadata"]["uid"].as_str(),
                Some(job_uid.as_str()),
                "a second compile Job appeared"
            );
        }
        let function = ns.json(&["get", "wasmfunction", "slow"]).expect("function");
        if function["status"]["phase"] == "Ready" {
            break function;
        }
        assert!(
            Instant::now() < deadline,
            "never Ready: {}",
            function["status"]
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(ready["status"]["artifact"]["digest"]
        .as_str()
        .is_some_and(|d| d.starts_with("sha256:")));
    let events = ns.json(&["get", "events.events.k8s.io"]).expect("events");
    let started = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["name"] == "slow" && e["reason"] == "CompileStarted")
        .count();
    assert_eq!(started, 1, "one compile was started in all");
}

/// The CRD's schema path of a spec field's enum list.
fn enum_pointer(spec_path: &[&str]) -> String {
    let mut pointer = String::from("/spec/versions/0/schema/openAPIV3Schema/properties/spec");
    for name in spec_path {
        pointer.push_str("/properties/");
        pointer.push_str(name);
    }
    pointer + "/enum"
}

/// Puts the generated CRDs back, also when a test panics half way.
struct GeneratedCrds(Kubectl);

impl GeneratedCrds {
    fn restore(&self) {
        self.0
            .run(&["apply", "-f", crds_dir().to_str().expect("utf-8")])
            .expect("re-apply the generated CRDs");
    }
}

impl Drop for GeneratedCrds {
    fn drop(&mut self) {
        // Never a second panic while unwinding; the next test's setup applies them again anyway.
        let _ = self
            .0
            .run(&["apply", "-f", crds_dir().to_str().unwrap_or_default()]);
    }
}

#[test]
fn objects_stored_with_old_lower_case_enum_values_are_respelled_by_the_new_leader_and_then_reconciled(
) {
    let _one_at_a_time = REPLICAS.lock().unwrap_or_else(|p| p.into_inner());
    let (ns, info) = setup("respell");
    let crds = GeneratedCrds(ns.clone());

    // The schema of an earlier release: the lower-case spellings are added (nothing removed),
    // while no operator runs (every test of this suite holds REPLICAS while its replicas live).
    let add = |crd: &str, path: &[&str], value: &str| {
        let patch =
            json!([{"op": "add", "path": format!("{}/-", enum_pointer(path)), "value": value}]);
        ns.run(&["patch", "crd", crd, "--type=json", "-p", &patch.to_string()])
            .unwrap_or_else(|e| panic!("add {value} to {crd}: {e}"));
    };
    add("wasmfunctions.wasmfn.dev", &["language"], "rust");
    add(
        "wasmfunctions.wasmfn.dev",
        &["build", "optimization"],
        "speed",
    );
    add("wasmexecutions.wasmfn.dev", &["runtime"], "container");
    let code = "fn main() {\n    println!(\"respelled\");\n}\n";
    let function = json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction", "metadata": {"name": "old"},
                          "spec": {"language": "rust", "build": {"optimization": "speed"}, "source": {"code": code}}});
    // The API server has just added the new lower-case values; retry while its schema cache catches up.
    ns.wait_for(
        &["crd", "wasmexecutions.wasmfn.dev"],
        Duration::from_secs(30),
        |_| ns.create(&function.to_string()).ok(),
    )
    .expect("create a function with the old spellings");
    let run = execution("old-run", "old", json!({"runtime": "container"}));
    ns.wait_for(
        &["crd", "wasmexecutions.wasmfn.dev"],
        Duration::from_secs(30),
        |_| ns.create(&run.to_string()).ok(),
    )
    .expect("create an execution with an old spelling");

    // The current schema again: the stored objects are now refused every update.
    crds.restore();
    let annotate = |kind: &str, name: &str| {
        ns.run(&[
            "annotate",
            "--overwrite",
            kind,
            name,
            "wasmfn.test/touched=yes",
        ])
    };
    let refused = |kind: &str, name: &str| match annotate(kind, name) {
        Err(error) if error.to_string().contains("Unsupported value") => Some(()),
        _ => None,
    };
    ns.wait_for(&["wasmfunction", "old"], Duration::from_secs(30), |_| {
        refused("wasmfunction", "old")
    })
    .expect("an update of the old function is refused under the current schema");
    assert!(refused("wasmexecution", "old-run").is_some());

    let mut operator = OperatorProcess::start(&info, "respeller", &[]).expect("start the operator");
    operator
        .wait_for_log("became the leader", Duration::from_secs(60))
        .expect("leads");
    let stored = ns
        .wait_for(&["wasmfunction", "old"], Duration::from_secs(60), |f| {
            (f["spec"]["language"] == "Rust").then(|| f.clone())
        })
        .unwrap_or_else(|e| panic!("never re-spelled: {e}\n{}", operator.log_text()));
    assert_eq!(stored["spec"]["build"]["optimization"], "Speed");
    assert_eq!(stored["spec"]["source"]["code"], code, "the rest is kept");
    let stored_run = ns
        .wait_for(
            &["wasmexecution", "old-run"],
            Duration::from_secs(60),
            |e| (e["spec"]["runtime"] == "Container").then(|| e.clone()),
        )
        .expect("the execution is re-spelled");
    assert_eq!(stored_run["spec"]["functionRef"]["name"], "old");

    let respelled = |name: &str| {
        events_for(&ns, name)
            .into_iter()
            .filter(|(kind, reason, _, _)| kind == "Normal" && reason == "Respelled")
            .map(|(_, _, note, _)| note)
            .collect::<Vec<_>>()
    };
    let notes = respelled("old");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("spec.build.optimization speed → Speed")
            && notes[0].contains("spec.language rust → Rust"),
        "{notes:?}"
    );
    let notes = respelled("old-run");
    assert!(
        notes.len() == 1 && notes[0].contains("spec.runtime container → Container"),
        "{notes:?}"
    );

    // The operator's status writes are accepted again: the function compiles and is Ready for
    // the re-spelled generation, and the execution has a status.
    let ready = wait_ready(&ns, "old", Duration::from_secs(300));
    assert_eq!(
        ready["status"]["observedGeneration"],
        ready["metadata"]["generation"]
    );
    ns.wait_for(
        &["wasmexecution", "old-run"],
        Duration::from_secs(60),
        |e| e["status"]["phase"].as_str().map(str::to_owned),
    )
    .expect("the execution's status is written");
    let metrics = scrape(operator.health_port).expect("scrape");
    assert_eq!(
        metrics.sum(
            "wasmfn_respelled_objects_total",
            &[("outcome", "respelled")]
        ),
        2.0
    );
    assert_eq!(
        metrics.sum("wasmfn_respelled_objects_total", &[("outcome", "failed")]),
        0.0
    );
    annotate("wasmfunction", "old").expect("updates are accepted again");
    operator.terminate(Duration::from_secs(20));
}
