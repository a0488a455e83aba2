//! The cold codec on a corpus of DICOM files, next to Orthanc's zlib-6 and the hot codec.
//!
//! ```sh
//! cargo run --release --example cold_ratio -- [-v] [--quick] [--only=NAME,...] [--csv=PATH] [DIR...]
//! ```
//!
//! `-v` prints one line per file; `--quick` times one run of everything (default: repeats
//! for at least 40 ms); `--only` keeps the files whose name contains one of the strings;
//! `--csv=PATH` writes the per-file sizes and times.
//!
//! Without DIRs: the real-image corpus of the codec benchmark (pydicom-data's images and
//! pydicom's test files in the repository's `.venv`). Every `*.dcm` file is read whole and
//! compressed whole, as a Part-10 file: zlib level 6 (what Orthanc's StorageCompression does),
//! the hot codec and the cold codec (with its hot fallback), each with the pixel layout the
//! crate's parser finds. Every cold output is decoded and compared with the input.
//! Speeds are MB of file bytes per second of this thread's CPU time (one core), so other load
//! on the machine does not count against them.
//!
//! Sets reported:
//! - `bench`: the codec benchmark's set (bench/test_codec_corpus.py): files of the first
//!   directory with native (uncompressed) pixel data, and its clinical modalities;
//! - `whole`: every file of every directory, already-compressed ones included;
//! - `native`: the files of `whole` whose pixel data the cold model codes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dicomvault_core::codec::{self, cold, Codec, PixelLayout, DEFAULT_HOT_LEVEL};
use dicomvault_core::object::pixel_layout;
use dicomvault_core::parse::{self, INDEX_TAGS};

const CLINICAL: &[&str] = &["CR", "CT", "MR", "NM", "US", "MG", "DX", "XA", "PT"];

fn cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

static QUICK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs `f` until at least 40 ms of CPU time went by (once with `--quick`); returns its last
/// result and seconds per run.
fn timed<T>(mut f: impl FnMut() -> T) -> (T, f64) {
    let (t0, mut n) = (cpu_time(), 0u32);
    let min = if QUICK.load(std::sync::atomic::Ordering::Relaxed) { 0.0 } else { 0.04 };
    loop {
        let out = f();
        n += 1;
        let el = (cpu_time() - t0).as_secs_f64();
        if el >= min {
            return (out, el / n as f64);
        }
    }
}

struct Row {
    name: String,
    first_dir: bool,
    modality: String,
    native: bool,
    cold_model: bool,
    size: usize,
    zlib: usize,
    hot: usize,
    cold: usize,
    cold_codec: Codec,
    t_zlib: f64,
    t_hot: f64,
    t_enc: f64,
    t_dec: f64,
}

fn zlib6(data: &[u8]) -> usize {
    let mut z =
        flate2::write::ZlibEncoder::new(Vec::with_capacity(data.len() / 2), flate2::Compression::new(6));
    z.write_all(data).expect("in memory");
    z.finish().expect("in memory").len()
}

fn measure(path: &Path, first_dir: bool) -> Row {
    let data = std::fs::read(path).expect("readable file");
    let parsed = parse::parse_file(&data, INDEX_TAGS).ok();
    let layout: Option<PixelLayout> =
        parsed.as_ref().and_then(|p| p.pixel.as_ref().and_then(|px| pixel_layout(px, p.dataset_offset)));
    let modality = parsed
        .as_ref()
        .and_then(|p| p.attrs.iter().find(|a| a.tag == 0x0008_0060))
        .map(|a| String::from_utf8_lossy(&a.value).trim().to_string())
        .unwrap_or_else(|| "?".into());
    let native = parsed.as_ref().and_then(|p| p.pixel.as_ref()).is_some_and(|px| !px.encapsulated);
    let cold_model = cold::cold_support(data.len(), layout.as_ref()).is_none();

    let (zlib, t_zlib) = timed(|| zlib6(&data));
    let ((_, hot), t_hot) =
        timed(|| codec::encode_hot(&data, layout.as_ref(), DEFAULT_HOT_LEVEL).expect("hot"));
    let ((cold_codec, stored), t_enc) = timed(|| codec::encode_cold(&data, layout.as_ref()).expect("cold"));
    let (back, t_dec) = timed(|| codec::decode(cold_codec, &stored, data.len()).expect("cold decode"));
    assert!(back == data, "{}: round trip is not bit-exact", path.display());
    Row {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        first_dir,
        modality,
        native,
        cold_model,
        size: data.len(),
        zlib,
        hot: hot.len(),
        cold: stored.len(),
        cold_codec,
        t_zlib,
        t_hot,
        t_enc,
        t_dec,
    }
}

fn gmean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x.ln(), n + 1));
    (s / n.max(1) as f64).exp()
}

fn summary(label: &str, rows: &[&Row]) {
    if rows.is_empty() {
        println!("{label:<22} (no files)");
        return;
    }
    let sum = |f: &dyn Fn(&Row) -> f64| rows.iter().map(|r| f(r)).sum::<f64>();
    let size = sum(&|r| r.size as f64);
    let (z, h, c) = (sum(&|r| r.zlib as f64), sum(&|r| r.hot as f64), sum(&|r| r.cold as f64));
    let mb = size / 1e6;
    println!(
        "{label:<22}{:>5}{:>9.1}{:>8.2}{:>8.2}{:>8.2}{:>8.3}{:>8.3}{:>8.2}{:>8.3}{:>8.3}{:>7.1}{:>7.0}{:>7.1}{:>7.1}",
        rows.len(),
        mb,
        size / z,
        size / h,
        size / c,
        z / c,
        h / c,
        gmean(rows.iter().map(|r| r.size as f64 / r.cold as f64)),
        gmean(rows.iter().map(|r| r.zlib as f64 / r.cold as f64)),
        gmean(rows.iter().map(|r| r.hot as f64 / r.cold as f64)),
        mb / sum(&|r| r.t_zlib),
        mb / sum(&|r| r.t_hot),
        mb / sum(&|r| r.t_enc),
        mb / sum(&|r| r.t_dec),
    );
}

fn main() {
    let mut verbose = false;
    let mut only: Vec<String> = Vec::new();
    let mut csv: Option<PathBuf> = None;
    let mut dirs: Vec<PathBuf> = Vec::new();
    for a in std::env::args().skip(1) {
        if a == "-v" {
            verbose = true;
        } else if a == "--quick" {
            QUICK.store(true, std::sync::atomic::Ordering::Relaxed);
        } else if let Some(o) = a.strip_prefix("--csv=") {
            csv = Some(PathBuf::from(o));
        } else if let Some(o) = a.strip_prefix("--only=") {
            only.extend(o.split(',').map(str::to_string));
        } else {
            dirs.push(a.into());
        }
    }
    if dirs.is_empty() {
        let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/lib/python3.11/site-packages");
        dirs = vec![site.join("data_store/data"), site.join("pydicom/data/test_files")];
    }
    let mut rows = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let Ok(rd) = std::fs::read_dir(d) else {
            eprintln!("skipping {}: not readable", d.display());
            continue;
        };
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
            .collect();
        files.sort();
        for f in files {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if !only.is_empty() && !only.iter().any(|o| name.contains(o.as_str())) {
                continue;
            }
            let r = measure(&f, i == 0);
            if verbose {
                println!(
                    "{:<44}{:<4}{:>9}{:>8.2}{:>8.2}{:>8.2}{:>7.3}  {:<5}{:>6.1}{:>6.1}",
                    r.name,
                    r.modality,
                    r.size,
                    r.size as f64 / r.zlib as f64,
                    r.size as f64 / r.hot as f64,
                    r.size as f64 / r.cold as f64,
                    r.zlib as f64 / r.cold as f64,
                    format!("{:?}", r.cold_codec),
                    r.size as f64 / 1e6 / r.t_enc,
                    r.size as f64 / 1e6 / r.t_dec,
                );
            }
            rows.push(r);
        }
    }
    if let Some(path) = &csv {
        let mut out =
            String::from("file,first_dir,modality,native,cold_model,size,zlib6,hot,cold,codec,enc_s,dec_s\n");
        for r in &rows {
            out += &format!(
                "{},{},{},{},{},{},{},{},{},{:?},{:.6},{:.6}\n",
                r.name,
                r.first_dir,
                r.modality,
                r.native,
                r.cold_model,
                r.size,
                r.zlib,
                r.hot,
                r.cold,
                r.cold_codec,
                r.t_enc,
                r.t_dec
            );
        }
        std::fs::write(path, out).expect("writable CSV path");
    }
    println!(
        "{:<22}{:>5}{:>9}{:>8}{:>8}{:>8}{:>8}{:>8}{:>8}{:>8}{:>8}{:>7}{:>7}{:>7}{:>7}",
        "set",
        "files",
        "MB",
        "zlib6",
        "hot",
        "cold",
        "x zlib",
        "x hot",
        "gm cold",
        "gm xz",
        "gm xh",
        "zl MB/s",
        "hot",
        "enc",
        "dec"
    );
    let clinical = |r: &Row| CLINICAL.contains(&r.modality.as_str());
    let bench: Vec<&Row> = rows.iter().filter(|r| r.first_dir && r.native).collect();
    summary("bench (all)", &bench);
    summary("bench clinical", &bench.iter().copied().filter(|r| clinical(r)).collect::<Vec<_>>());
    summary("whole", &rows.iter().collect::<Vec<_>>());
    summary("whole, native pixels", &rows.iter().filter(|r| r.cold_model).collect::<Vec<_>>());
    summary("whole, compressed/other", &rows.iter().filter(|r| !r.cold_model).collect::<Vec<_>>());
    let fallbacks = rows.iter().filter(|r| r.cold_codec != Codec::Cold).count();
    let model_but_hot = rows.iter().filter(|r| r.cold_model && r.cold_codec != Codec::Cold).count();
    println!(
        "{} files; stored as Cold: {}, fallback to hot/raw: {} (of which {} the model coded but hot was smaller)",
        rows.len(),
        rows.len() - fallbacks,
        fallbacks,
        model_but_hot
    );
    println!("ratios: total input bytes / total stored bytes; x zlib = zlib's stored total / cold's; gm = geometric mean of per-file figures; MB/s per core (thread CPU time)");
}
