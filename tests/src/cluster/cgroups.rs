//! Cgroup v1 bookkeeping: each node gets one cgroup for its pods (the kubelet's cgroup root) and one
//! for its containerd and shims, in every hierarchy. Teardown kills whatever is left in them, so no
//! container outlives its cluster.

use crate::error::{Error, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const ROOT: &str = "/sys/fs/cgroup";

/// Every mounted v1 hierarchy (`cpu`, `memory`, `pids`, `systemd` …), not the v2 `unified` one.
pub fn hierarchies() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return out;
    };
    for line in mountinfo.lines() {
        // `… mountpoint … - cgroup cgroup rw,cpu`: field 5 is the mount point.
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if !right.starts_with("cgroup ") {
            continue;
        }
        if let Some(mount) = left.split(' ').nth(4) {
            if mount.starts_with(ROOT) {
                out.push(PathBuf::from(mount));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Creates `cgroup` (e.g. `/wasmfn-1234abcd-a`) in every hierarchy.
pub fn create(cgroup: &str) -> Result<()> {
    let hierarchies = hierarchies();
    if hierarchies.is_empty() {
        return Err(Error::Prerequisite(
            "cgroup v1 hierarchies under /sys/fs/cgroup (kubelet 1.20 needs cgroup v1)".into(),
        ));
    }
    for h in hierarchies {
        let dir = h.join(cgroup.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        // A fresh cpuset cgroup has no CPUs or memory nodes; nothing can join it until it has.
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let parent = h.join(file);
            if parent.exists() {
                let value = std::fs::read_to_string(&parent).unwrap_or_default();
                std::fs::write(dir.join(file), value.trim())
                    .map_err(Error::io(format!("set {file} of {}", dir.display())))?;
            }
        }
    }
    Ok(())
}

/// `dir` and every cgroup directory below it, parents before children.
fn tree(dir: PathBuf) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir];
    while let Some(dir) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                    .map(|e| e.path()),
            );
        }
        out.push(dir);
    }
    out
}

pub fn pids_below(cgroup: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = hierarchies()
        .into_iter()
        .flat_map(|h| tree(h.join(cgroup.trim_start_matches('/'))))
        .filter_map(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
        .flat_map(|procs| {
            procs
                .lines()
                .filter_map(|l| l.trim().parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// SIGKILLs every process in `cgroup` and below until none is left (or 10 s pass).
pub fn kill_all(cgroup: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = pids_below(cgroup);
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            super::process::signal(pid, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes `cgroup` and everything below it from every hierarchy (deepest first).
pub fn remove(cgroup: &str) {
    for h in hierarchies() {
        for dir in tree(h.join(cgroup.trim_start_matches('/'))).iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
