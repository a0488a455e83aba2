//! The cold codec's decode alone, for profiling (`perf`, `valgrind --tool=callgrind`) and for
//! comparing format versions on the same files.
//!
//! ```sh
//! cargo run --release --example cold_decode -- [--version=N] [--seconds=S] [--runs=N] DIR...
//! ```
//!
//! Every `*.dcm` file the cold model codes is encoded once in format `N` (default: what
//! `encode_cold` writes), then all of them are decoded over and over: `--runs` passes, or for at
//! least `--seconds` of this thread's CPU time (default 2). Prints the stored ratio and the
//! decode MB/s per core (file bytes per second of thread CPU time).

use std::path::PathBuf;
use std::time::Duration;

use dicomvault_core::codec::{self, cold, Codec};
use dicomvault_core::object::pixel_layout;
use dicomvault_core::parse::{self, INDEX_TAGS};

fn cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn main() {
    let (mut version, mut seconds, mut runs) = (None, 2.0f64, None);
    let mut dirs: Vec<PathBuf> = Vec::new();
    for a in std::env::args().skip(1) {
        if let Some(v) = a.strip_prefix("--version=") {
            version = Some(v.parse::<u8>().expect("--version=N"));
        } else if let Some(v) = a.strip_prefix("--seconds=") {
            seconds = v.parse().expect("--seconds=S");
        } else if let Some(v) = a.strip_prefix("--runs=") {
            runs = Some(v.parse::<u32>().expect("--runs=N"));
        } else {
            dirs.push(a.into());
        }
    }
    let mut objects = Vec::new();
    let (mut logical, mut stored_total) = (0usize, 0usize);
    for d in &dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(d)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
            .collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).expect("readable file");
            let Ok(p) = parse::parse_file(&data, INDEX_TAGS) else { continue };
            let Some(layout) = p.pixel.as_ref().and_then(|px| pixel_layout(px, p.dataset_offset)) else {
                continue;
            };
            if cold::cold_support(data.len(), Some(&layout)).is_some() {
                continue;
            }
            let stored = match version {
                Some(v) => cold::encode_cold_version(&data, &layout, v).expect("encodes"),
                None => cold::encode_cold_only(&data, &layout).expect("encodes"),
            };
            let back = codec::decode(Codec::Cold, &stored, data.len()).expect("decodes");
            assert!(back == data, "{}: round trip is not bit-exact", f.display());
            logical += data.len();
            stored_total += stored.len();
            objects.push((stored, data.len()));
        }
    }
    assert!(!objects.is_empty(), "no file the cold model codes");
    let (t0, mut n) = (cpu_time(), 0u32);
    loop {
        for (stored, len) in &objects {
            std::hint::black_box(codec::decode(Codec::Cold, stored, *len).expect("decodes"));
        }
        n += 1;
        let el = (cpu_time() - t0).as_secs_f64();
        if runs.map_or(el >= seconds, |r| n >= r) {
            println!(
                "{} files, {:.1} MB, ratio {:.3}, {n} passes, decode {:.1} MB/s per core",
                objects.len(),
                logical as f64 / 1e6,
                logical as f64 / stored_total as f64,
                logical as f64 * n as f64 / 1e6 / el
            );
            break;
        }
    }
}
