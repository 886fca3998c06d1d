//! The warm module cache: the second run of a digest fetches and compiles nothing, entries
//! survive a restart, bad bytes are never stored, and the size bound holds.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::cell::Cell;

use support::*;
use wasmfn_execution::artifact::ModuleBytes;
use wasmfn_execution::module_cache::ModuleCache;
use wasmfn_execution::{Error, Reason};

fn module(name: &str) -> (Vec<u8>, String) {
    let bytes = std::fs::read(guest(name)).unwrap();
    let digest = ModuleBytes::new(bytes.clone()).sha256();
    (bytes, digest)
}

#[test]
fn the_second_run_of_a_digest_fetches_and_compiles_nothing_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, digest) = module("wat/hello");
    let fetches = Cell::new(0);
    let fetch = || {
        fetches.set(fetches.get() + 1);
        Ok(bytes.clone())
    };
    let cache = ModuleCache::open(dir.path(), 1 << 30).unwrap();
    let first = cache.get(&digest, fetch).unwrap();
    assert!(first.added);
    let aot = first.aot.clone().expect("compiled to its AOT form");
    let compiled_at = std::fs::metadata(&aot).unwrap().modified().unwrap();
    let second = cache.get(&digest, fetch).unwrap();
    assert!(!second.added);
    drop(cache);
    let reopened = ModuleCache::open(dir.path(), 1 << 30).unwrap();
    let third = reopened.get(&digest, fetch).unwrap();
    assert!(!third.added);
    assert_eq!(fetches.get(), 1, "fetched once");
    assert_eq!(third.aot.as_ref(), Some(&aot));
    assert_eq!(
        std::fs::metadata(&aot).unwrap().modified().unwrap(),
        compiled_at,
        "compiled once"
    );
    // What the cache holds runs as native code, bound to the module it came from.
    let mut request = request(&third.module);
    request.aot = third.aot;
    let execution = exec(&request);
    assert_eq!(execution.document.reason, Reason::Completed);
    assert!(execution.document.runtime.aot, "{:?}", execution.document);
    assert_eq!(stdout_text(&execution), "hello\n");
}

#[test]
fn a_module_added_without_its_aot_form_runs_interpreted_until_compiled_once() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, digest) = module("wat/hello");
    let cache = ModuleCache::open(dir.path(), 1 << 30).unwrap();
    let added = cache.add(&digest, || Ok(bytes.clone())).unwrap();
    assert!(added.added);
    assert_eq!(added.aot, None, "adding does not compile");
    let interpreted = exec(&request(&added.module));
    assert_eq!(stdout_text(&interpreted), "hello\n");
    assert!(!interpreted.document.runtime.aot);
    let aot = cache.compile_aot(&digest).unwrap().expect("compiled");
    let compiled_at = std::fs::metadata(&aot).unwrap().modified().unwrap();
    assert_eq!(cache.compile_aot(&digest).unwrap().as_ref(), Some(&aot));
    assert_eq!(
        std::fs::metadata(&aot).unwrap().modified().unwrap(),
        compiled_at,
        "compiled once"
    );
    let hit = cache.lookup(&digest).unwrap().unwrap();
    assert_eq!(hit.aot.as_ref(), Some(&aot));
    let (_, unknown) = module("wat/fib");
    assert_eq!(
        cache.compile_aot(&unknown).unwrap(),
        None,
        "not cached: nothing to compile"
    );
}

#[test]
fn bytes_that_do_not_match_the_digest_or_carry_native_code_are_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ModuleCache::open(dir.path(), 1 << 30).unwrap();
    let (hello, hello_digest) = module("wat/hello");
    let (other, _) = module("wat/add");
    let wrong = cache.get(&hello_digest, || Ok(other.clone()));
    assert!(
        matches!(&wrong, Err(Error::InvalidModule(m)) if m.contains("digest mismatch")),
        "{wrong:?}"
    );
    // A `wasmedge` custom section appended to a clean module.
    let mut native = hello.clone();
    native.extend_from_slice(&[0, 10, 8]);
    native.extend_from_slice(b"wasmedge\x7f");
    let native_digest = ModuleBytes::new(native.clone()).sha256();
    let refused = cache.get(&native_digest, || Ok(native.clone()));
    assert!(
        matches!(&refused, Err(Error::InvalidModule(m)) if m.contains("\"wasmedge\"")),
        "{refused:?}"
    );
    let failed_fetch = cache.get(&hello_digest, || Err("registry unreachable".into()));
    assert!(matches!(&failed_fetch, Err(Error::Runtime(m)) if m == "registry unreachable"));
    for bad in [
        "sha256:abc",
        "md5:00",
        &hello_digest.to_uppercase(),
        "sha256:../../etc",
    ] {
        assert!(
            matches!(
                cache.get(bad, || Ok(hello.clone())),
                Err(Error::InvalidModule(_))
            ),
            "{bad}"
        );
    }
    assert_eq!(cache.size().unwrap(), 0, "nothing stored");
    assert!(
        cache
            .get(&hello_digest, || Ok(hello.clone()))
            .unwrap()
            .added
    );
}

#[test]
fn the_least_recently_used_entries_go_when_the_cache_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let modules = [module("wat/hello"), module("wat/add"), module("wat/fib")];
    // Measure one entry, then bound the cache to a little over two of them.
    let probe_dir = tempfile::tempdir().unwrap();
    let probe = ModuleCache::open(probe_dir.path(), u64::MAX).unwrap();
    let mut largest = 0;
    for (bytes, digest) in &modules {
        let before = probe.size().unwrap();
        probe.get(digest, || Ok(bytes.clone())).unwrap();
        largest = largest.max(probe.size().unwrap() - before);
    }
    let bound = largest * 2 + largest / 2;
    let cache = ModuleCache::open(dir.path(), bound).unwrap();
    let get = |i: usize| {
        let (bytes, digest) = &modules[i];
        cache.get(digest, || Ok(bytes.clone())).unwrap().added
    };
    assert!(get(0));
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(get(1));
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(!get(0), "hello is used again, so add is now the oldest");
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(get(2));
    assert!(cache.size().unwrap() <= bound);
    assert!(!get(0), "the recently used entry stayed");
    assert!(get(1), "the least recently used entry was evicted");
}
