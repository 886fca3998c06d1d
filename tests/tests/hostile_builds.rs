//! Hostile functions are contained: a Rust function whose build script tries to reach a pod on
//! its node's bridge, starts processes until it cannot and writes until it may not, ends
//! `Failed` with what happened in its diagnostics, inside its deadline; both nodes stay Ready and
//! an execution running meanwhile succeeds. And guests that loop forever, in Wasm pods and in
//! container pods, get no more CPU than the operator's run-pod limit while another tenant's
//! CPU-bound guest runs beside them and finishes inside its timeout.
//!
//! What holds it: the compile pod's network is taken down by an init container before the build
//! (`wasmfn isolate-network`), the kubelet caps a pod's processes (`podPidsLimit`, the pids
//! cgroup), and the compile driver caps the size of any file a toolchain writes (1 GiB). Each is
//! checked against a control: an ordinary pod on the same node does reach the listener. For
//! the loopers, the run pod's CPU limit (`--run-cpu-limit`) becomes a CFS quota on the pod's
//! cgroup; the test reads that quota and the CPU the pod used from the node's cgroups while the
//! guest loops.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::executions::{execution, prebuilt_function, HELLO, LOOP};
use serde_json::{json, Value};
use wasmfn_e2e::operator::OperatorProcess;
use wasmfn_e2e::Kubectl;

const PORT: u16 = 8080;
/// The kubelet's `podPidsLimit` on the local cluster.
const POD_PIDS: usize = 1024;
/// The compile driver's `RLIMIT_FSIZE`.
const FILE_LIMIT: u64 = 1 << 30;
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);
/// The run-pod CPU limit the suite's operator gets, and the same in cores.
const RUN_CPU_LIMIT: &str = "250m";
const RUN_CPU_CORES: f64 = 0.25;

const CARGO_TOML: &str = "[package]\nname = \"hostile\"\nversion = \"0.1.0\"\nedition = \"2021\"\n";
const MAIN_RS: &str = "fn main() {\n    println!(\"never built\");\n}\n";

/// The build script: each finding is a located error line, so it reaches the diagnostics.
fn build_rs(targets: &[String]) -> String {
    let targets = targets
        .iter()
        .map(|t| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"use std::net::{{SocketAddr, TcpStream}};
use std::process::{{Child, Command, Stdio}};
use std::time::Duration;

fn report(what: &str) {{
    eprintln!("build.rs:1:1: error: HOSTILE {{what}}");
}}

fn main() {{
    for target in [{targets}] {{
        let address: SocketAddr = target.parse().expect("an address");
        match TcpStream::connect_timeout(&address, Duration::from_secs(3)) {{
            Ok(_) => report(&format!("connected to {{target}}")),
            Err(e) => report(&format!("no connection to {{target}}: {{e}}")),
        }}
    }}
    let mut children: Vec<Child> = Vec::new();
    let stop = loop {{
        if children.len() >= 5000 {{
            break "nothing stopped it".to_owned();
        }}
        let spawned = Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {{
            Ok(child) => children.push(child),
            Err(e) => break e.to_string(),
        }}
    }};
    report(&format!("started {{}} processes, then: {{stop}}", children.len()));
    for child in &mut children {{
        let _ = child.kill();
        let _ = child.wait();
    }}
    let path = format!("{{}}/filler", std::env::var("OUT_DIR").unwrap_or_else(|_| "/tmp".into()));
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("head -c 8589934592 /dev/zero > {{path}}"))
        .status();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let ended = match status {{
        Ok(status) => status.to_string(),
        Err(e) => e.to_string(),
    }};
    report(&format!("the writer ended ({{ended}}) at {{size}} bytes"));
    std::process::exit(1);
}}
"#
    )
}

/// The suite's operator, shared by its tests (one leader per cluster), with a run-pod CPU limit
/// well under one core so that a looping guest, single-threaded as every Wasm guest is, is
/// actually held by it. Stopped by its watchdog when the test process exits.
fn suite_operator() -> &'static OperatorProcess {
    static OPERATOR: OnceLock<OperatorProcess> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        common::leading_operator("hostile-suite", &[("WASMFN_RUN_CPU_LIMIT", RUN_CPU_LIMIT)])
    })
}

fn pinned_probe(name: &str, node: &str, args: &[&str]) -> String {
    common::probe_pod(name, Some(node), args, "")
}

fn pod_ip(ns: &Kubectl, name: &str) -> String {
    ns.wait_for(&["pod", name], Duration::from_secs(240), |p| {
        (p["status"]["phase"] == "Running")
            .then(|| p["status"]["podIP"].as_str().map(str::to_owned))
            .flatten()
    })
    .unwrap_or_else(|e| panic!("{name} running: {e}"))
}

fn finished_pod(ns: &Kubectl, name: &str) -> Value {
    ns.wait_for(&["pod", name], Duration::from_secs(240), |p| {
        matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")).then(|| p.clone())
    })
    .unwrap_or_else(|e| panic!("{name} finished: {e}"))
}

fn nodes_ready(ns: &Kubectl) -> Vec<(String, String)> {
    let nodes: Value = serde_json::from_str(
        &ns.run(&["get", "nodes", "-o", "json"])
            .expect("kubectl get nodes"),
    )
    .expect("json");
    nodes["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|n| {
            let ready = n["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .map(|c| c["status"].as_str().unwrap_or("?").to_owned())
                .unwrap_or_default();
            (
                n["metadata"]["name"].as_str().unwrap_or("?").to_owned(),
                ready,
            )
        })
        .collect()
}

#[test]
fn a_build_script_that_dials_out_forks_and_fills_the_disk_fails_contained_while_others_run() {
    suite_operator();
    let nodes: Vec<String> = common::cluster()
        .info()
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .collect();
    let ns = common::namespace("hostile");

    // A listener on each node's bridge, and proof an ordinary pod there reaches it.
    let mut targets = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        let listener = format!("listener-{index}");
        ns.create(&pinned_probe(
            &listener,
            node,
            &["listen", &PORT.to_string()],
        ))
        .expect("create a listener");
        let ip = pod_ip(&ns, &listener);
        let control = format!("control-{index}");
        ns.create(&pinned_probe(
            &control,
            node,
            &["connect", &ip, &PORT.to_string()],
        ))
        .expect("create a control pod");
        let pod = finished_pod(&ns, &control);
        let log = ns.run(&["logs", &control]).unwrap_or_default();
        assert_eq!(
            pod["status"]["phase"], "Succeeded",
            "an ordinary pod on {node} reaches {ip}:{PORT}: {log}"
        );
        assert!(log.contains("connected: hello"), "{log}");
        targets.push(format!("{ip}:{PORT}"));
    }

    let source = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hostile-src"},
        "data": {"Cargo.toml": CARGO_TOML, "build.rs": build_rs(&targets), "src__main.rs": MAIN_RS}});
    ns.create(&source.to_string()).expect("create the source");
    let function = json!({"apiVersion": "wasmfn.dev/v1alpha1", "kind": "WasmFunction",
        "metadata": {"name": "hostile"},
        "spec": {"language": "Rust", "source": {"configMapRef": {"name": "hostile-src"}},
                 "build": {"timeoutSeconds": BUILD_TIMEOUT.as_secs()}}});
    let started = Instant::now();
    ns.create(&function.to_string())
        .expect("create the hostile function");

    // Another tenant's execution runs meanwhile.
    ns.create(&prebuilt_function("bystander", HELLO, json!({})))
        .expect("create the bystander function");
    ns.wait_for(
        &["wasmfunction", "hostile"],
        Duration::from_secs(240),
        |f| (f["status"]["phase"] == "Compiling").then_some(()),
    )
    .expect("the hostile compile runs");
    ns.create(&execution("bystander-run", "bystander", json!({})).to_string())
        .expect("create the bystander execution");

    let failed = ns
        .wait_for(
            &["wasmfunction", "hostile"],
            BUILD_TIMEOUT + Duration::from_secs(120),
            |f| {
                matches!(f["status"]["phase"].as_str(), Some("Failed" | "Ready")).then(|| f.clone())
            },
        )
        .expect("the hostile function ends");
    let took = started.elapsed();
    let status = &failed["status"];
    let diagnostics: Vec<String> = status["compile"]["diagnostics"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|l| l.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let text = diagnostics.join("\n");
    println!("hostile function after {took:?}: {}\n{text}", status);
    assert_eq!(status["phase"], "Failed", "{status}");
    assert_eq!(status["compile"]["reason"], "CompileError", "{status}");
    assert!(took < BUILD_TIMEOUT, "ended inside its deadline: {took:?}");
    for target in &targets {
        assert!(
            text.contains(&format!("HOSTILE no connection to {target}")),
            "the build reached no pod on the bridge ({target}):\n{text}"
        );
    }
    assert!(!text.contains("HOSTILE connected"), "{text}");
    let started_line = text
        .lines()
        .find(|l| l.contains("HOSTILE started"))
        .unwrap_or_else(|| panic!("the fork report:\n{text}"));
    let count: usize = started_line
        .split("HOSTILE started ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a process count in {started_line}"));
    assert!(
        count > 10 && count < POD_PIDS && !started_line.contains("nothing stopped it"),
        "the pod's process cap stopped the fork loop: {started_line}"
    );
    assert!(
        text.contains(&format!("at {FILE_LIMIT} bytes")),
        "the file-size cap stopped the writer at 1 GiB:\n{text}"
    );

    let bystander = ns
        .wait_for(
            &["wasmexecution", "bystander-run"],
            Duration::from_secs(240),
            |e| common::executions::is_final(e).then(|| e.clone()),
        )
        .expect("the bystander ends");
    assert_eq!(
        bystander["status"]["phase"], "Succeeded",
        "{}",
        bystander["status"]
    );
    for (node, ready) in nodes_ready(&ns) {
        assert_eq!(ready, "True", "node {node} stays Ready");
    }
}

/// Recursive fib(31), printed in decimal: about a third of a second of CPU when interpreted, a
/// fixed amount of work whatever runs beside it.
const TENANT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func $fib (param $n i32) (result i32)
    (if (result i32) (i32.lt_u (local.get $n) (i32.const 2))
      (then (local.get $n))
      (else (i32.add (call $fib (i32.sub (local.get $n) (i32.const 1)))
                     (call $fib (i32.sub (local.get $n) (i32.const 2)))))))
  ;; 0..8 the iovec, 8..12 bytes written; the digits end at 100, where the newline is
  (func (export "_start") (local $value i32) (local $at i32)
    (local.set $value (call $fib (i32.const 31)))
    (local.set $at (i32.const 100))
    (i32.store8 (i32.const 100) (i32.const 10))
    (loop $digits
      (local.set $at (i32.sub (local.get $at) (i32.const 1)))
      (i32.store8 (local.get $at)
        (i32.add (i32.const 48) (i32.rem_u (local.get $value) (i32.const 10))))
      (local.set $value (i32.div_u (local.get $value) (i32.const 10)))
      (br_if $digits (local.get $value)))
    (i32.store (i32.const 0) (local.get $at))
    (i32.store (i32.const 4) (i32.sub (i32.const 101) (local.get $at)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"#;
const TENANT_OUTPUT: &str = "1346269\n";
/// Met with room to spare when the tenant's pod gets its share of a core: its work takes about
/// 1.3 s under the suite's 250m limit.
const TENANT_TIMEOUT_MS: u64 = 10_000;
/// Long enough for the tenant to run while every looper loops, and for a measuring window of
/// several seconds.
const LOOPER_TIMEOUT_MS: u64 = 12_000;
/// The shortest stretch of looping measured that counts as a measurement.
const SHORTEST_WINDOW: Duration = Duration::from_secs(5);
/// How long a looper's pod must use no CPU for its watch to end.
const IDLE_END: Duration = Duration::from_secs(3);

/// The v1 hierarchy whose root has `file` (`cpu` and `cpuacct` may be one mount or two).
fn hierarchy_with(file: &str) -> PathBuf {
    wasmfn_e2e::cluster::cgroups::hierarchies()
        .into_iter()
        .find(|h| h.join(file).is_file())
        .unwrap_or_else(|| panic!("a cgroup v1 hierarchy with {file}"))
}

/// One reading of a pod's cgroup.
#[derive(Clone, Copy, Debug)]
struct CpuSample {
    at: Instant,
    /// CPU time the pod's processes used since its cgroup was made (`cpuacct.usage`).
    used: Duration,
    /// CFS periods elapsed and periods in which the quota ran out (`cpu.stat`).
    periods: u64,
    throttled: u64,
}

/// A pod's cgroup in the `cpu` and `cpuacct` hierarchies.
struct PodCpu {
    cpu: PathBuf,
    cpuacct: PathBuf,
}

impl PodCpu {
    /// The cgroup of the pod with `uid` under any of the nodes' pod cgroups, once it exists.
    fn find(pods_cgroups: &[String], uid: &str) -> Option<PodCpu> {
        let cpu_root = hierarchy_with("cpu.cfs_quota_us");
        let cpuacct_root = hierarchy_with("cpuacct.usage");
        let wanted = format!("pod{uid}");
        let mut stack: Vec<PathBuf> = pods_cgroups
            .iter()
            .map(|c| cpu_root.join(c.trim_start_matches('/')))
            .collect();
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for path in entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()) {
                if path.file_name().is_some_and(|n| *n == *wanted) {
                    let relative = path.strip_prefix(&cpu_root).ok()?;
                    return Some(PodCpu {
                        cpuacct: cpuacct_root.join(relative),
                        cpu: path,
                    });
                }
                stack.push(path);
            }
        }
        None
    }

    fn read(dir: &Path, file: &str) -> Option<String> {
        std::fs::read_to_string(dir.join(file)).ok()
    }

    /// `cpu.cfs_quota_us` (-1: none) and `cpu.cfs_period_us`.
    fn quota(&self) -> Option<(i64, u64)> {
        let quota = Self::read(&self.cpu, "cpu.cfs_quota_us")?
            .trim()
            .parse()
            .ok()?;
        let period = Self::read(&self.cpu, "cpu.cfs_period_us")?
            .trim()
            .parse()
            .ok()?;
        Some((quota, period))
    }

    /// Now's reading; `None` once the cgroup is gone.
    fn sample(&self) -> Option<CpuSample> {
        let used: u64 = Self::read(&self.cpuacct, "cpuacct.usage")?
            .trim()
            .parse()
            .ok()?;
        let stat = Self::read(&self.cpu, "cpu.stat")?;
        let field = |name: &str| -> Option<u64> {
            stat.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))?
                .trim()
                .parse()
                .ok()
        };
        Some(CpuSample {
            at: Instant::now(),
            used: Duration::from_nanos(used),
            periods: field("nr_periods")?,
            throttled: field("nr_throttled")?,
        })
    }

    /// Readings every 100 ms until the pod has used no CPU for [`IDLE_END`] (the kubelet keeps a
    /// finished pod's cgroup while the pod exists), the cgroup goes, or `until`.
    fn watch(&self, until: Instant) -> Vec<CpuSample> {
        let mut samples: Vec<CpuSample> = Vec::new();
        let mut grew = Instant::now();
        while Instant::now() < until && grew.elapsed() < IDLE_END {
            let Some(sample) = self.sample() else { break };
            if samples.last().is_some_and(|last| sample.used > last.used) {
                grew = sample.at;
            }
            samples.push(sample);
            std::thread::sleep(Duration::from_millis(100));
        }
        samples
    }
}

/// What a looper used while it was seen using CPU: from the first reading to the last one that
/// had grown (a finished pod's cgroup can linger idle, which would dilute the rate).
#[derive(Debug)]
struct Busy {
    wall: Duration,
    used: Duration,
    periods: u64,
    throttled: u64,
    /// The highest rate over any stretch of at least a second, in cores.
    busiest_second: f64,
}

fn busy(samples: &[CpuSample]) -> Busy {
    let last = samples
        .windows(2)
        .rposition(|pair| pair[1].used > pair[0].used)
        .map_or(0, |i| i + 1);
    let (first, end) = (samples[0], samples[last]);
    let busiest_second = (0..=last)
        .filter_map(|i| {
            let from = samples[i];
            let to = samples[i..=last]
                .iter()
                .find(|s| s.at - from.at >= Duration::from_secs(1))?;
            Some((to.used - from.used).as_secs_f64() / (to.at - from.at).as_secs_f64())
        })
        .fold(0.0, f64::max);
    Busy {
        wall: end.at - first.at,
        used: end.used - first.used,
        periods: end.periods - first.periods,
        throttled: end.throttled - first.throttled,
        busiest_second,
    }
}

/// `kubectl get ARGS` every half second until `done` answers (the harness's 100 ms polling
/// starts a kubectl ten times a second, CPU this test leaves to the guests).
fn poll<T>(
    ns: &Kubectl,
    args: &[&str],
    timeout: Duration,
    mut done: impl FnMut(&Value) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut get = vec!["get"];
    get.extend_from_slice(args);
    let mut last = Value::Null;
    loop {
        if let Ok(object) = ns.json(&get) {
            if let Some(answer) = done(&object) {
                return answer;
            }
            last = object;
        }
        assert!(
            Instant::now() < deadline,
            "{} within {timeout:?}; last: {last}",
            args.join(" ")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The final status of execution `name`.
fn final_status(ns: &Kubectl, name: &str, timeout: Duration) -> Value {
    poll(ns, &["wasmexecution", name], timeout, |e| {
        common::executions::is_final(e).then(|| e["status"].clone())
    })
}

/// Runs the tenant's guest in a container pod and returns its final status.
fn run_tenant(ns: &Kubectl, name: &str) -> Value {
    ns.create(
        &execution(
            name,
            "fib",
            json!({"runtime": "Container", "timeoutMillis": TENANT_TIMEOUT_MS}),
        )
        .to_string(),
    )
    .expect("create the tenant's execution");
    final_status(ns, name, Duration::from_secs(180))
}

fn assert_tenant_met_its_timeout(status: &Value) {
    assert_eq!(status["phase"], "Succeeded", "{status:#}");
    assert_eq!(status["stdout"], TENANT_OUTPUT, "{status:#}");
    let ran = status["durationMs"].as_f64().unwrap_or(f64::MAX);
    assert!(ran < TENANT_TIMEOUT_MS as f64, "{status:#}");
}

#[test]
fn looping_guests_get_no_more_than_the_run_pod_cpu_limit_while_another_tenants_guest_meets_its_timeout(
) {
    let began = Instant::now();
    suite_operator();
    // Both nodes share this machine's CPUs, so where each pod lands does not matter.
    let pods_cgroups: Vec<String> = common::cluster()
        .info()
        .nodes
        .iter()
        .map(|n| n.pods_cgroup.clone())
        .collect();
    let ns = common::namespace("hostile-cpu");
    ns.create(&prebuilt_function("loop", LOOP, json!({})))
        .expect("create the looping function");
    ns.create(&prebuilt_function("fib", TENANT, json!({})))
        .expect("create the tenant's function");
    for function in ["loop", "fib"] {
        ns.wait_for(&["wasmfunction", function], Duration::from_secs(60), |f| {
            (f["status"]["phase"] == "Ready").then_some(())
        })
        .unwrap_or_else(|e| panic!("{function} is Ready: {e}"));
    }

    // The tenant alone first, for comparison.
    let alone = run_tenant(&ns, "fib-alone");
    assert_tenant_met_its_timeout(&alone);

    let loopers = [
        ("loop-wasm-1", "Auto", "WasmPod"),
        ("loop-wasm-2", "Auto", "WasmPod"),
        ("loop-container", "Container", "ContainerPod"),
    ];
    let runs = loopers
        .iter()
        .map(|(name, runtime, _)| {
            execution(
                name,
                "loop",
                json!({"runtime": runtime, "timeoutMillis": LOOPER_TIMEOUT_MS, "retries": 0}),
            )
        })
        .collect();
    ns.create(&common::executions::list(runs))
        .expect("create the loopers");
    let mut watchers = Vec::new();
    for (name, _, _) in loopers {
        let uid = poll(
            &ns,
            &["pods", "-l", &format!("wasmfn.dev/execution={name}")],
            Duration::from_secs(120),
            |pods| {
                pods["items"]
                    .as_array()?
                    .iter()
                    .find(|p| p["status"]["phase"] == "Running")?["metadata"]["uid"]
                    .as_str()
                    .map(str::to_owned)
            },
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let cgroup = loop {
            if let Some(found) = PodCpu::find(&pods_cgroups, &uid) {
                break found;
            }
            assert!(Instant::now() < deadline, "{name}: no cgroup for pod {uid}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let quota = cgroup.quota();
        let until = Instant::now() + Duration::from_millis(LOOPER_TIMEOUT_MS + 30_000);
        watchers.push((name, quota, std::thread::spawn(move || cgroup.watch(until))));
    }

    // Another tenant's guest runs while all of them loop.
    let loaded = run_tenant(&ns, "fib-loaded");
    for status in [&alone, &loaded] {
        println!(
            "tenant: {} ms ({}, aot {})",
            status["durationMs"], status["podName"], status["aot"]
        );
    }
    assert_tenant_met_its_timeout(&loaded);

    let mut throttled = 0;
    for ((name, quota, watcher), (_, _, path)) in watchers.into_iter().zip(loopers) {
        let samples = watcher.join().expect("the cgroup watcher");
        let run = final_status(&ns, name, Duration::from_secs(120));
        assert!(!samples.is_empty(), "{name}: its cgroup was read");
        let seen = busy(&samples);
        println!(
            "{name} ({}, {}): quota {quota:?}, used {:?} in {:?} ({:.3} cores, busiest second \
             {:.3}), throttled in {} of {} periods",
            run["path"],
            run["node"],
            seen.used,
            seen.wall,
            seen.used.as_secs_f64() / seen.wall.as_secs_f64(),
            seen.busiest_second,
            seen.throttled,
            seen.periods
        );
        assert_eq!(run["phase"], "TimedOut", "{name}: {run:#}");
        assert_eq!(run["path"], path, "{name}: {run:#}");
        let (quota_us, period_us) = quota.unwrap_or_else(|| panic!("{name}: its CFS quota"));
        assert_eq!(
            quota_us,
            (RUN_CPU_CORES * period_us as f64).round() as i64,
            "{name}: the pod's CFS quota is the run-pod CPU limit ({RUN_CPU_LIMIT}) per {period_us} us"
        );
        assert!(
            seen.wall >= SHORTEST_WINDOW,
            "{name}: looped under watch for only {:?}",
            seen.wall
        );
        // Periods are counted only while a quota is set on a cgroup with work to run.
        assert!(
            seen.periods > 0,
            "{name}: CFS bandwidth control ran on the pod's cgroup ({seen:?})"
        );
        throttled += seen.throttled;
        let allowed = seen.wall.mul_f64(RUN_CPU_CORES * 1.1) + Duration::from_millis(30);
        assert!(
            seen.used <= allowed,
            "{name}: used {:?} of CPU in {:?}, more than {RUN_CPU_LIMIT} allows ({allowed:?})",
            seen.used,
            seen.wall
        );
    }
    // Each looper would take a core; on a busy machine (pods get little CPU weight from their
    // 10m request) one may seldom reach its quota, but not all of them.
    assert!(throttled > 0, "the quota held back a looper at least once");
    println!("the CPU-limit test took {:?}", began.elapsed());
}
