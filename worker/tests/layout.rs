//! Channels-last convolution weights change how libtorch computes, not what: two training steps
//! of a model laid out channels_last match the same steps in NCHW, and the layout survives the
//! optimiser's in-place updates. In float64 the two agree to rounding; in float32 only the losses
//! are compared, because BN biases (sums of nearly cancelling terms, starting at 0) differ
//! by a few percent of their tiny size after two steps in either layout's summation order.
use kontrast_api::config::Arch;
use kontrast_worker::model::memory_format::is_channels_last;
use kontrast_worker::model::{Moco, MocoSpec, Views};
use kontrast_worker::train::sgd::{Sgd, SgdConfig};
use kontrast_worker::train::step::train_step;
use tch::{Device, Kind, Tensor};

/// Losses, relative, in float32. Measured: 1.1e-7 at most.
const LOSS_TOLERANCE_F32: f64 = 1e-5;
/// Losses, relative, in float64.
const LOSS_TOLERANCE_F64: f64 = 1e-12;
/// Every tensor after two float64 steps, as max |a − b| over max |a|. Measured: 2.9e-11 at most.
const STATE_TOLERANCE_F64: f64 = 1e-9;

fn spec(cifar_stem: bool) -> MocoSpec {
    MocoSpec {
        arch: Arch::Resnet18,
        cifar_stem,
        width: 16,
        dim: 16,
        queue_size: 32,
        mlp: true,
        momentum: 0.99,
        temperature: 0.2,
        knn: Some((5, 0.4)),
        shuffle_keys: true,
    }
}

fn views(seed: i64, kind: Kind) -> Views {
    tch::manual_seed(seed);
    let opts = (kind, Device::Cpu);
    Views {
        query: Tensor::randn([4, 3, 32, 32], opts),
        key: Tensor::randn([4, 3, 32, 32], opts),
        small: Some(Tensor::randn([8, 3, 16, 16], opts)),
    }
}

fn clone(v: &Views) -> Views {
    Views {
        query: v.query.copy(),
        key: v.key.copy(),
        small: v.small.as_ref().map(Tensor::copy),
    }
}

#[test]
fn two_channels_last_steps_match_two_nchw_steps() {
    tch::set_num_threads(1);
    for (kind, cifar_stem) in [
        (Kind::Double, false),
        (Kind::Double, true),
        (Kind::Float, false),
    ] {
        let build = |channels_last: bool| {
            tch::manual_seed(11);
            let moco = Moco::new(spec(cifar_stem), Device::Cpu);
            moco.set_float_kind(kind);
            if channels_last {
                let converted = moco.set_channels_last().expect("channels_last");
                // 20 convolutions per ResNet-18 (stem, 16 in the blocks, 3 shortcuts) × 2 encoders.
                assert_eq!(converted, 40);
            }
            moco
        };
        let (nchw, nhwc) = (build(false), build(true));
        let config = SgdConfig {
            momentum: 0.9,
            weight_decay: 1e-4,
        };
        let (mut sgd_a, mut sgd_b) = (
            Sgd::new(nchw.trainable(), config),
            Sgd::new(nhwc.trainable(), config),
        );
        for seed in [1, 2] {
            let v = views(seed, kind);
            let a = train_step(&nchw, &mut sgd_a, &clone(&v), 0.05, true, None, None)
                .expect("NCHW step");
            let b = train_step(&nhwc, &mut sgd_b, &v, 0.05, true, None, None)
                .expect("channels_last step");
            let err = ((b.losses.total - a.losses.total) / a.losses.total).abs();
            let tolerance = if kind == Kind::Double {
                LOSS_TOLERANCE_F64
            } else {
                LOSS_TOLERANCE_F32
            };
            assert!(
                err <= tolerance,
                "{kind:?}, stem {cifar_stem}, step {seed}: {} vs {} ({err:e})",
                b.losses.total,
                a.losses.total
            );
        }
        for (a, b) in nchw.params().entries().iter().zip(nhwc.params().entries()) {
            assert_eq!(a.name, b.name);
            if b.tensor.dim() == 4 {
                assert!(
                    is_channels_last(&b.tensor).expect("layout"),
                    "{} lost its layout",
                    b.name
                );
            }
            if !a.tensor.is_floating_point() {
                assert!(a.tensor.equal(&b.tensor), "{}", a.name);
                continue;
            }
            if kind != Kind::Double {
                continue;
            }
            let scale = a.tensor.abs().max().double_value(&[]).max(1e-12);
            let diff = (&a.tensor - &b.tensor).abs().max().double_value(&[]) / scale;
            assert!(diff <= STATE_TOLERANCE_F64, "{}: {diff:e}", a.name);
        }
    }
}
