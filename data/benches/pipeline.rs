//! Single-core throughput of the pipeline next to torchvision + Pillow, in one run.
//!
//! `cargo bench -p kontrast-data --bench pipeline [-- SECONDS]` generates 64 JPEGs of 640 × 480
//! (quality 90) from sklearn's sample photos, measures images/s of decoding alone (libjpeg-turbo
//! and zune-jpeg), of the MoCo v2 two-crop set and of the Revisiting crop set on one thread,
//! then runs the same pipelines in torchvision (`tests/reference/augment_bench.py`) and prints
//! the ratios. `-- SECONDS ops` prints only the per-operation costs on one 224 × 224 crop.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use kontrast_data::augment::{blur, color};
use kontrast_data::crop::MultiCropSpec;
use kontrast_data::decode::{self, JpegBackend};
use kontrast_data::resize::{Resampler, ResizeImpl};
use kontrast_data::{
    Dataset, DatasetFormat, Loader, LoaderConfig, SampleRng, Sampler, normalize_into,
};

fn rate(seconds: f64, mut step: impl FnMut() -> usize) -> f64 {
    let (start, mut n) = (Instant::now(), 0usize);
    while start.elapsed().as_secs_f64() < seconds {
        n += step();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Images/s of one pipeline through the serial loader, optionally normalising on the CPU.
fn pipeline_rate(
    ds: &Arc<Dataset>,
    spec: &MultiCropSpec,
    seconds: f64,
    normalise: bool,
    resize: ResizeImpl,
) -> f64 {
    let sampler = Sampler::new(ds.len(), 0, 0, 1).expect("sampler");
    let mut epoch = 0;
    let mut out = Vec::new();
    rate(seconds, || {
        let config = LoaderConfig {
            batch_per_rank: 16,
            threads: 0,
            epoch,
            resize,
            ..LoaderConfig::default()
        };
        epoch += 1;
        let mut n = 0;
        for batch in Loader::new(Arc::clone(ds), &sampler, spec.clone(), config).expect("loader") {
            let batch = batch.expect("batch");
            if normalise {
                for v in &batch.views {
                    out.resize(v.data.len(), 0f32);
                    normalize_into(&v.data, v.size * v.size, &mut out);
                }
            }
            n += batch.indices.len();
        }
        n
    })
}

fn main() {
    let seconds: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5.0);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    let script = root.join("tests/reference/augment_bench.py");
    let dir = tempfile::tempdir().expect("temp dir");
    let images = dir.path().join("images");
    let status = Command::new(&python)
        .arg(&script)
        .args(["images", images.to_str().expect("utf-8"), "64"])
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "generating images with {} failed",
        python.display()
    );
    let ds = Arc::new(Dataset::open(DatasetFormat::Flat, &images).expect("images"));
    let files: Vec<Vec<u8>> = std::fs::read_dir(&images)
        .expect("dir")
        .map(|e| std::fs::read(e.expect("entry").path()).expect("read"))
        .collect();

    // Resampling alone for the Revisiting crop set: Pillow-exact vs fast_image_resize.
    let img = decode::decode(&files[0], JpegBackend::default(), 1).expect("decodes");
    let spec = MultiCropSpec::revisiting();
    let resize_rate = |kind| {
        let mut r = Resampler::with_impl(kind);
        let mut rng = SampleRng::from_parts(&[1]);
        rate(seconds / 2.0, || {
            for (c, b) in spec
                .sample_boxes(&mut rng, img.width, img.height)
                .iter()
                .enumerate()
            {
                r.crop_resize(&img, b, spec.size_of(c), spec.size_of(c));
            }
            1
        })
    };
    let resize_exact = resize_rate(ResizeImpl::Pillow);
    let resize_fast = resize_rate(ResizeImpl::Fast);

    // Per-operation cost on one 224 × 224 crop (milliseconds), the pieces the pipeline is made
    // of: where the time goes.
    let crop_box = kontrast_data::CropBox {
        top: 40,
        left: 100,
        height: 330,
        width: 410,
    };
    let mut r = Resampler::new();
    let crop224 = r.crop_resize(&img, &crop_box, 224, 224);
    let per_op = |f: &mut dyn FnMut(&mut kontrast_data::RgbImage)| {
        let mut work = crop224.clone();
        1000.0
            / rate(seconds / 4.0, || {
                work.data.copy_from_slice(&crop224.data);
                f(&mut work);
                1
            })
    };
    let ops: Vec<(&str, f64)> = vec![
        (
            "resize 410×330 → 224 (Pillow-exact)",
            per_op(&mut |_| {
                std::hint::black_box(r.crop_resize(&img, &crop_box, 224, 224));
            }),
        ),
        ("hue", per_op(&mut |w| color::adjust_hue(w, 0.07))),
        (
            "Gaussian blur σ = 1.0",
            per_op(&mut |w| blur::gaussian_blur(w, 1.0)),
        ),
        (
            "saturation",
            per_op(&mut |w| color::adjust_saturation(w, 1.3)),
        ),
        ("contrast", per_op(&mut |w| color::adjust_contrast(w, 1.3))),
        (
            "brightness",
            per_op(&mut |w| color::adjust_brightness(w, 1.3)),
        ),
        ("grayscale", per_op(&mut |w| color::grayscale(w))),
        ("copy only", per_op(&mut |_| {})),
    ];
    let print_ops = || {
        println!(
            "per operation on a 224 × 224 crop (ms, includes a 150 kB copy, see `copy only`):"
        );
        for (name, ms) in &ops {
            println!("  {name:<50} {ms:>7.3}");
        }
    };
    if std::env::args().any(|a| a == "ops") {
        // `-- SECONDS ops`: only the per-operation costs (quick, for tuning).
        print_ops();
        return;
    }

    // Rounds alternate between the two sides and keep each side's best, so that load from
    // other processes on the machine penalises neither side more than the other.
    const ROUNDS: usize = 3;
    let moco_spec = MultiCropSpec::moco_v2(224);
    let mut ours = [0f64; 8];
    let mut theirs = [0f64; 3];
    for _ in 0..ROUNDS {
        let mut i = 0;
        let mut decode_rate = |backend| {
            rate(seconds, || {
                i += 1;
                decode::decode(&files[i % files.len()], backend, 1).expect("decodes");
                1
            })
        };
        let round = [
            decode_rate(JpegBackend::default()),
            decode_rate(JpegBackend::Zune),
            pipeline_rate(&ds, &moco_spec, seconds, false, ResizeImpl::Pillow),
            pipeline_rate(&ds, &moco_spec, seconds, true, ResizeImpl::Pillow),
            pipeline_rate(&ds, &moco_spec, seconds, false, ResizeImpl::Fast),
            pipeline_rate(&ds, &spec, seconds, false, ResizeImpl::Pillow),
            pipeline_rate(&ds, &spec, seconds, true, ResizeImpl::Pillow),
            pipeline_rate(&ds, &spec, seconds, false, ResizeImpl::Fast),
        ];
        for (b, r) in ours.iter_mut().zip(round) {
            *b = b.max(r);
        }
        let out = Command::new(&python)
            .arg(&script)
            .args(["run", images.to_str().expect("utf-8"), &seconds.to_string()])
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| -> f64 {
            json.split(&format!("\"{name}\": "))
                .nth(1)
                .and_then(|s| s.split([',', '}']).next())
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(f64::NAN)
        };
        for (b, name) in theirs.iter_mut().zip(["decode", "moco_v2", "revisiting"]) {
            *b = b.max(field(name));
        }
    }
    let [py_decode, py_moco, py_rev] = theirs;

    println!(
        "single core, 64 JPEGs 640×480 q90, best of {ROUNDS} alternating rounds of {seconds} s (images/s)"
    );
    println!(
        "{:<52} {:>9} {:>12} {:>7}",
        "pipeline", "kontrast", "torchvision", "ratio"
    );
    let row = |name: &str, ours: f64, theirs: f64| {
        println!(
            "{name:<52} {ours:>9.1} {theirs:>12.1} {:>6.2}×",
            ours / theirs
        );
    };
    row(
        "decode, libjpeg-turbo (Pillow: libjpeg-turbo)",
        ours[0],
        py_decode,
    );
    row("decode, zune-jpeg", ours[1], py_decode);
    row("MoCo v2 2×224 (u8 out)", ours[2], py_moco);
    row("MoCo v2 2×224 + CPU normalise", ours[3], py_moco);
    row(
        "MoCo v2 2×224, fast_image_resize (u8 out)",
        ours[4],
        py_moco,
    );
    row(
        "Revisiting 2×160+4×96, AutoAugment (u8 out)",
        ours[5],
        py_rev,
    );
    row(
        "Revisiting 2×160+4×96, AutoAugment + CPU normalise",
        ours[6],
        py_rev,
    );
    row("Revisiting, fast_image_resize (u8 out)", ours[7], py_rev);
    print_ops();
    println!(
        "resize only, Revisiting crop set: Pillow-exact {resize_exact:.0}/s, fast_image_resize {resize_fast:.0}/s"
    );
}
