//! One MoCo v2 training step with the convolution weights in NCHW and in channels-last, side by
//! side in one process (rounds alternate; the best of each is kept, the first round warms up).
//! `cargo bench -p kontrast-worker --bench layout [-- ROUNDS]`; CPU only, one thread.
use std::time::Instant;

use kontrast_api::config::Arch;
use kontrast_worker::model::{Moco, MocoSpec, Views};
use kontrast_worker::train::sgd::{Sgd, SgdConfig};
use kontrast_worker::train::step::train_step;
use tch::{Device, Kind, Tensor};

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .filter(|a| !a.starts_with('-'))
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(4)
        .max(2);
    tch::set_num_threads(1);
    println!("| model | input | batch | NCHW s/step | channels-last s/step | speed-up |");
    println!("|---|---|---:|---:|---:|---:|");
    let cases = [
        (Arch::Resnet50, false, 64, 224, 8),
        (Arch::Resnet18, true, 8, 28, 64),
    ];
    for (arch, cifar_stem, width, side, batch) in cases {
        let spec = MocoSpec {
            arch,
            cifar_stem,
            width,
            dim: 128,
            queue_size: 4096,
            mlp: true,
            momentum: 0.99,
            temperature: 0.2,
            knn: None,
            shuffle_keys: true,
        };
        let build = |channels_last: bool| -> anyhow::Result<Moco> {
            tch::manual_seed(1);
            let moco = Moco::new(spec, Device::Cpu);
            if channels_last {
                moco.set_channels_last()?;
            }
            Ok(moco)
        };
        let models = [build(false)?, build(true)?];
        let sgd = SgdConfig {
            momentum: 0.9,
            weight_decay: 1e-4,
        };
        let mut optimisers: Vec<Sgd> = models
            .iter()
            .map(|m| Sgd::new(m.trainable(), sgd))
            .collect();
        let opts = (Kind::Float, Device::Cpu);
        let mut best = [f64::MAX; 2];
        for round in 0..rounds {
            for (i, (moco, optimiser)) in models.iter().zip(&mut optimisers).enumerate() {
                let views = Views {
                    query: Tensor::randn([batch, 3, side, side], opts),
                    key: Tensor::randn([batch, 3, side, side], opts),
                    small: None,
                };
                let start = Instant::now();
                train_step(moco, optimiser, &views, 0.01, false, None, None)?;
                if round > 0 {
                    best[i] = best[i].min(start.elapsed().as_secs_f64());
                }
            }
        }
        println!(
            "| {arch:?} width {width}{} | {side} px | {batch} | {:.3} | {:.3} | {:.2}× |",
            if cifar_stem { ", CIFAR stem" } else { "" },
            best[0],
            best[1],
            best[0] / best[1]
        );
    }
    Ok(())
}
