//! The hot codec's decode alone (what every retrieve of a warm object runs), for profiling
//! (`perf`, `valgrind --tool=callgrind`) and for comparing decoder changes on the same files.
//!
//! ```sh
//! cargo run --release --example hot_decode -- [--seconds=S] [--codec-crc] DIR...
//! ```
//!
//! Every `*.dcm` file is encoded once as the archive stores it (the filter on its native pixel
//! data), then all are decoded into one reused buffer, as the vault's reader does, for at least
//! `--seconds` of this thread's CPU time (default 2). Prints the stored ratio and the decode
//! MB/s per core (file bytes per second of thread CPU time) and ns per file.
//!
//! The decode is the local blob store's read path: the stored bytes count as checked by the
//! record CRC, so the codec's own CRC is skipped ([`codec::StoredCrc::RecordChecked`]).
//! `--codec-crc` checks it too, as a decode of bytes from an object store does.

use std::path::PathBuf;
use std::time::Duration;

use dicomvault_core::codec::{self, Codec, DEFAULT_HOT_LEVEL};
use dicomvault_core::object::pixel_layout;
use dicomvault_core::parse::{self, INDEX_TAGS};

fn cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn main() {
    let mut seconds = 2.0f64;
    let mut checked = codec::StoredCrc::RecordChecked;
    let mut dirs: Vec<PathBuf> = Vec::new();
    for a in std::env::args().skip(1) {
        if a == "--codec-crc" {
            checked = codec::StoredCrc::Unchecked;
        } else if let Some(v) = a.strip_prefix("--seconds=") {
            seconds = v.parse().expect("--seconds=S");
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
            let layout = p.pixel.as_ref().and_then(|px| pixel_layout(px, p.dataset_offset));
            let (codec, stored) =
                codec::encode_hot(&data, layout.as_ref(), DEFAULT_HOT_LEVEL).expect("encodes");
            let back = codec::decode(codec, &stored, data.len()).expect("decodes");
            assert!(back == data, "{}: round trip is not bit-exact", f.display());
            logical += data.len();
            stored_total += stored.len();
            objects.push((codec, stored, data.len()));
        }
    }
    assert!(!objects.is_empty(), "no *.dcm file");
    let hot = objects.iter().filter(|(c, _, _)| *c == Codec::Hot).count();
    let mut out = Vec::new();
    let (t0, mut n) = (cpu_time(), 0u32);
    loop {
        for (codec, stored, len) in &objects {
            codec::decode_checked_into(*codec, stored, *len, &mut out, checked).expect("decodes");
            std::hint::black_box(&out);
        }
        n += 1;
        if (cpu_time() - t0).as_secs_f64() >= seconds {
            break;
        }
    }
    let el = (cpu_time() - t0).as_secs_f64();
    println!(
        "{} files ({hot} hot), {:.1} MB, ratio {:.3}, {n} passes, decode {:.0} MB/s per core, {:.1} us per file",
        objects.len(),
        logical as f64 / 1e6,
        logical as f64 / stored_total as f64,
        logical as f64 * n as f64 / el / 1e6,
        el / (n as f64 * objects.len() as f64) * 1e6
    );
}
