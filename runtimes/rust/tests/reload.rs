//! Hot reload (issue 14.7): a bundle folder republished while a service runs is picked up; requests in
//! flight finish on the old sessions; old sessions close once drained.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{env, env_b, percentile, publish, Scratch};
use h2l_runtime::reload::Reload;
use h2l_runtime::{Bundle, OpenOptions, Reloader};

/// One bundle version's golden data, read from the original folder, keyed by its teacher sha256.
struct Version {
    inputs: Vec<f32>,
    teacher: Vec<f32>,
    student: Option<Vec<f32>>,
    atol: f32,
}

fn version(dir: &Path) -> (String, Version) {
    let b = Bundle::open(dir).unwrap();
    let v = Version {
        inputs: b.golden_inputs().unwrap().data,
        teacher: b.golden_f32("teacher", "projected_embedding").unwrap().unwrap().data,
        student: b.golden_f32("student", "projected_embedding").map(|r| r.unwrap().data),
        atol: b.manifest.golden.atol as f32,
    };
    (b.teacher_sha256().to_string(), v)
}

fn wait_for(reloader: &Reloader, teacher_sha: &str) {
    let t = Instant::now();
    while reloader.current().teacher_sha256() != teacher_sha {
        assert!(t.elapsed() < Duration::from_secs(20), "reload not seen after 20 s: {:?}", reloader.failures());
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn in_flight_requests_finish_on_the_old_bundle_then_it_closes() {
    let Some(a) = env() else { return };
    let Some(b) = env_b("in_flight_requests_finish_on_the_old_bundle_then_it_closes") else { return };
    let (sha_a, va) = version(&a);
    let (sha_b, _) = version(&b);
    assert_ne!(sha_a, sha_b, "H2L_BUNDLE and H2L_BUNDLE_B must have different teachers");
    let root = Scratch::new("drain");
    let live = root.path().join("live");
    publish(&live, &a, "0", false);
    let reloader = Reloader::open(&live, OpenOptions::new()).unwrap();
    assert_eq!(reloader.check().unwrap(), Reload::Unchanged);

    let in_flight = reloader.current(); // a request that started on A
    publish(&live, &b, "1", false);
    assert!(matches!(reloader.check().unwrap(), Reload::Swapped { .. }));
    assert_eq!(reloader.current().teacher_sha256(), sha_b);
    assert_eq!(reloader.draining(), 1, "A is still held by the request in flight");
    // The request in flight still answers from A's sessions, although A's folder is gone from disk.
    let d = in_flight.dim();
    let got = in_flight.teacher().project(&va.inputs[..d]).unwrap().projected;
    let diff = got.iter().zip(&va.teacher[..d]).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(diff <= va.atol, "old bundle answered wrong: {diff}");
    drop(in_flight);
    assert_eq!(reloader.draining(), 0, "A's sessions close when the last request drops it");
    assert_eq!(reloader.check().unwrap(), Reload::Unchanged);
}

#[test]
fn a_bad_republish_keeps_the_last_good_bundle() {
    let Some(a) = env() else { return };
    let Some(b) = env_b("a_bad_republish_keeps_the_last_good_bundle") else { return };
    let root = Scratch::new("bad");
    let live = root.path().join("live");
    publish(&live, &a, "0", false);
    let reloader = Reloader::open(&live, OpenOptions::new()).unwrap();
    let sha_a = reloader.current().teacher_sha256().to_string();
    let broken = Scratch::copy_of(&b, "broken");
    let p = broken.path().join("teacher.onnx");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&p, bytes).unwrap();
    publish(&live, broken.path(), "1", true);
    let e = reloader.check().unwrap_err();
    assert!(e.to_string().contains("teacher.onnx fails its sha256 check"), "{e}");
    assert_eq!(reloader.current().teacher_sha256(), sha_a);
    assert_eq!(reloader.failures().0, 1);
    publish(&live, &b, "2", true);
    assert!(matches!(reloader.check().unwrap(), Reload::Swapped { .. }));
    assert_ne!(reloader.current().teacher_sha256(), sha_a);
}

#[test]
fn load_test_50_republishes_under_k_workers() {
    let Some(a) = env() else { return };
    let Some(b) = env_b("load_test_50_republishes_under_k_workers") else { return };
    let versions: Arc<HashMap<String, Version>> = Arc::new([version(&a), version(&b)].into_iter().collect());
    assert_eq!(versions.len(), 2, "H2L_BUNDLE and H2L_BUNDLE_B must have different teachers");
    let root = Scratch::new("load");
    let live = root.path().join("live");
    publish(&live, &a, "init", false);
    let reloader = Arc::new(Reloader::open(&live, OpenOptions::new()).unwrap());
    let watcher = reloader.watch(Duration::from_millis(2));

    let workers: usize = std::env::var("H2L_RELOAD_WORKERS").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = Arc::new(AtomicBool::new(false));
    let (errors, mixed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let (reloader, versions, stop) = (Arc::clone(&reloader), Arc::clone(&versions), Arc::clone(&stop));
            let publishing = Arc::clone(&publishing);
            let (errors, mixed) = (Arc::clone(&errors), Arc::clone(&mixed));
            std::thread::spawn(move || {
                let (mut lat, mut quiet) = (Vec::new(), Vec::new());
                let mut seen: HashMap<String, u64> = HashMap::new();
                let mut k = w;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    let t = Instant::now();
                    let bundle = reloader.current(); // this request's version, held until it is answered
                    let answer_sha = bundle.teacher_sha256().to_string();
                    let Some(v) = versions.get(&answer_sha) else {
                        mixed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let d = bundle.dim();
                    let r = k % (v.inputs.len() / d);
                    let (model, want) = match (k % 2, bundle.student(), &v.student) {
                        (1, Some(s), Some(g)) => (s, g),
                        _ => (bundle.teacher(), &v.teacher),
                    };
                    match model.project(&v.inputs[r * d..(r + 1) * d]) {
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(out) => {
                            let us = t.elapsed().as_secs_f64() * 1e6;
                            if publishing.load(Ordering::Relaxed) { lat.push(us) } else { quiet.push(us) }
                            let diff = out.projected.iter().zip(&want[r * d..(r + 1) * d]).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                            if diff > v.atol {
                                mixed.fetch_add(1, Ordering::Relaxed);
                            }
                            *seen.entry(answer_sha).or_default() += 1;
                        }
                    }
                }
                (lat, quiet, seen)
            })
        })
        .collect();

    let sources = [(&a, version(&a).0), (&b, version(&b).0)];
    std::thread::sleep(Duration::from_millis(500)); // a quiet phase: the same workers, no republishing
    publishing.store(true, Ordering::Relaxed);
    let started = Instant::now();
    for i in 0..50 {
        let (src, sha) = &sources[(i + 1) % 2];
        publish(&live, src, &i.to_string(), i % 2 == 1);
        wait_for(&reloader, sha);
        std::thread::sleep(Duration::from_millis(10)); // let requests run on this version
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (mut lat, mut quiet) = (Vec::new(), Vec::new());
    let mut seen: HashMap<String, u64> = HashMap::new();
    for h in handles {
        let (l, q, s) = h.join().unwrap();
        lat.extend(l);
        quiet.extend(q);
        for (k, n) in s {
            *seen.entry(k).or_default() += n;
        }
    }
    drop(watcher);
    let (failures, last) = reloader.failures();
    let answers = lat.len();
    let (p50, p99) = (percentile(&mut lat, 50.0), percentile(&mut lat, 99.0));
    let (q50, q99) = (percentile(&mut quiet, 50.0), percentile(&mut quiet, 99.0));
    println!(
        "{}",
        serde_json::json!({"test": "rust_reload_load", "workers": workers, "republishes": 50, "answers": answers,
            "seconds": elapsed, "p50_us": p50, "p99_us": p99, "max_us": lat.last(),
            "quiet": {"answers": quiet.len(), "p50_us": q50, "p99_us": q99}, "swaps": reloader.swaps(),
            "reload_failures": failures, "answers_per_version": seen})
    );
    assert_eq!(errors.load(Ordering::Relaxed), 0, "requests failed");
    assert_eq!(mixed.load(Ordering::Relaxed), 0, "answers that match no version's golden vectors");
    assert_eq!(failures, 0, "reload failures: last {last:?}");
    assert_eq!(reloader.swaps(), 50);
    assert!(seen.len() == 2 && seen.values().all(|&n| n > 0), "both versions answered: {seen:?}");
    assert_eq!(reloader.draining(), 0, "every replaced bundle closed once drained");
}
