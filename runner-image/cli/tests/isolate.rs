//! `wasmfn isolate-network` in a network namespace of the test's own (`unshare --net`, so the
//! host's interfaces are never touched): a veth pair that is up is down afterwards, and
//! without NET_ADMIN the command fails with a message that says so. Needs root, as CI runs.

use std::process::{Command, Output};

const WASMFN: &str = env!("CARGO_BIN_EXE_wasmfn");

/// Runs `script` under `sh` in a fresh network namespace.
fn in_new_netns(script: &str) -> Output {
    Command::new("unshare")
        .args(["--net", "sh", "-euc", script])
        .env("WASMFN", WASMFN)
        .output()
        .expect("run unshare (the tests need root)")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn every_interface_but_loopback_goes_down_and_stays_down() {
    let output = in_new_netns(
        r#"ip link add wfn-test0 type veth peer name wfn-test1
ip link set wfn-test0 up
ip link set wfn-test1 up
ip link set lo up
ip -o link show wfn-test0 | grep -q ',UP' || { echo "the veth is not up to begin with"; exit 9; }
"$WASMFN" isolate-network
ip -o link show wfn-test0
ip -o link show wfn-test1
ip -o link show lo"#,
    );
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(
        out.contains("network isolated: wfn-test0, wfn-test1 down; only loopback remains"),
        "{out}"
    );
    for end in ["wfn-test0@", "wfn-test1@"] {
        let line = out
            .lines()
            .find(|l| l.contains(end))
            .unwrap_or_else(|| panic!("{end}'s link line in {out}"));
        assert!(!line.contains(",UP"), "down: {line}");
    }
    let lo = out.lines().find(|l| l.contains(" lo:")).expect("lo's line");
    assert!(lo.contains(",UP"), "loopback stays up: {lo}");
}

#[test]
fn without_net_admin_it_fails_and_says_what_it_needs() {
    let output = in_new_netns(
        r#"ip link add wfn-test0 type veth peer name wfn-test1
ip link set wfn-test0 up
setpriv --bounding-set -net_admin --inh-caps -net_admin "$WASMFN" isolate-network"#,
    );
    let out = text(&output);
    assert_eq!(output.status.code(), Some(125), "{out}");
    assert!(
        out.contains("taking wfn-test0 down (the container needs NET_ADMIN)"),
        "{out}"
    );
}
