//! MoCo v2 with the "Revisiting Contrastive Methods" additions: a query encoder trained by SGD,
//! a key encoder that follows it by momentum, a queue of keys as negatives and, for the kNN
//! loss, a second queue of the keys' backbone features.
use kontrast_api::config::Arch;
use tch::{Device, Kind, Tensor};

use super::loss::{KnnTerm, Losses, contrastive_loss};
use super::params::{Params, Role};
use super::resnet::ResNet;
use super::{Gang, ModelError, head::ProjectionHead};

/// The shape and hyper-parameters of the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MocoSpec {
    /// Backbone.
    pub arch: Arch,
    /// 3×3 stride-1 stem without max-pool, for small images.
    pub cifar_stem: bool,
    /// Channels of the first stage (64 in torchvision).
    pub width: i64,
    /// Output dimension of the projection head.
    pub dim: i64,
    /// Queue length K.
    pub queue_size: i64,
    /// MLP head (MoCo v2) instead of a linear one.
    pub mlp: bool,
    /// Key-encoder momentum m.
    pub momentum: f64,
    /// Softmax temperature T.
    pub temperature: f64,
    /// kNN loss: (neighbours, weight), or `None` without the second queue.
    pub knn: Option<(i64, f64)>,
    /// Shuffle BN on the key branch across the gang (MoCo's default). Off, each rank encodes its
    /// own keys, which only tests use: it makes a gang's step equal a single process's.
    pub shuffle_keys: bool,
}

/// A backbone and its head.
#[derive(Debug)]
pub struct Encoder {
    /// The ResNet trunk.
    pub backbone: ResNet,
    head: ProjectionHead,
}

impl Encoder {
    /// Images → (pooled backbone features N×D, projection N×dim), neither normalised.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> (Tensor, Tensor) {
        let features = self.backbone.forward_t(x, train);
        let projection = self.head.forward(&features);
        (features, projection)
    }
}

/// One step's views of a batch of b images.
pub struct Views {
    /// (b·Lq)×3×L×L: the large query crops (crop 0, and any large crops beyond the key),
    /// image-major.
    pub query: Tensor,
    /// b×3×L×L: crop 1, the key.
    pub key: Tensor,
    /// (b·S)×3×s×s small crops, image-major (row i·S + j is crop j of image i); `None` for MoCo v2.
    pub small: Option<Tensor>,
}

/// What a forward pass produces.
pub struct Forward {
    /// The loss terms.
    pub losses: Losses,
    /// B×dim normalised keys of the whole gang's batch, in data order: what gets enqueued.
    pub keys: Tensor,
    /// B×D normalised backbone features of those keys (kNN loss only).
    pub key_features: Option<Tensor>,
}

/// The MoCo pair and its queues. Tensors are registered in [`Moco::params`] under the names of
/// the reference implementation's `state_dict` (without DDP's `module.` prefix).
#[derive(Debug)]
pub struct Moco {
    spec: MocoSpec,
    params: Params,
    encoder_q: Encoder,
    encoder_k: Encoder,
    /// dim×K keys, one per column.
    queue: Tensor,
    /// D×K backbone features aligned with `queue`.
    queue_features: Option<Tensor>,
    /// [1] int64: the next column to write.
    queue_ptr: Tensor,
    /// (query parameter, key parameter), in registration order.
    pairs: Vec<(Tensor, Tensor)>,
}

fn l2_normalize(x: &Tensor, dim: i64) -> Tensor {
    // F.normalize: x / max(‖x‖, 1e-12).
    let norm = x
        .norm_scalaropt_dim(2, [dim].as_slice(), true)
        .clamp_min(1e-12);
    x / norm
}

impl Moco {
    /// Builds both encoders (the key encoder a copy of the query encoder) and random
    /// normalised queues, drawing from libtorch's global generator.
    pub fn new(spec: MocoSpec, device: Device) -> Self {
        let mut params = Params::default();
        let build = |params: &mut Params, name: &str, trainable: bool| {
            let mut scope = params.scope(name, device, trainable);
            let backbone = ResNet::new(scope.reborrow(), spec.arch, spec.cifar_stem, spec.width);
            let head =
                ProjectionHead::new(scope.reborrow(), backbone.feature_dim(), spec.dim, spec.mlp);
            Encoder { backbone, head }
        };
        let encoder_q = build(&mut params, "encoder_q", true);
        let encoder_k = build(&mut params, "encoder_k", false);
        let feature_dim = encoder_q.backbone.feature_dim();
        let (queue, queue_features, queue_ptr) = {
            let mut root = params.scope("", device, false);
            let opts = (Kind::Float, device);
            let queue = root.buffer(
                "queue",
                l2_normalize(&Tensor::randn([spec.dim, spec.queue_size], opts), 0),
            );
            let queue_ptr = root.buffer("queue_ptr", Tensor::zeros([1], (Kind::Int64, device)));
            let queue_features = spec.knn.map(|_| {
                root.buffer(
                    "queue_backbone",
                    l2_normalize(&Tensor::randn([feature_dim, spec.queue_size], opts), 0),
                )
            });
            (queue, queue_features, queue_ptr)
        };
        let pairs = pair_up(&params);
        let moco = Self {
            spec,
            params,
            encoder_q,
            encoder_k,
            queue,
            queue_features,
            queue_ptr,
            pairs,
        };
        moco.copy_query_to_key();
        moco
    }

    /// Every tensor (both encoders' parameters and buffers, the queues), in a fixed order.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The query encoder's parameters: what the optimiser updates and gradients are reduced over.
    pub fn trainable(&self) -> Vec<Tensor> {
        self.pairs.iter().map(|(q, _)| q.shallow_clone()).collect()
    }

    /// The query encoder's parameters with their names, in the order of [`Moco::trainable`].
    pub fn trainable_named(&self) -> Vec<(String, Tensor)> {
        self.params
            .parameters()
            .filter(|e| e.name.starts_with("encoder_q."))
            .map(|e| (e.name.clone(), e.tensor.shallow_clone()))
            .collect()
    }

    /// The query encoder (for evaluation and export).
    pub fn encoder_q(&self) -> &Encoder {
        &self.encoder_q
    }

    /// The model's hyper-parameters.
    pub fn spec(&self) -> &MocoSpec {
        &self.spec
    }

    /// Converts every floating-point tensor to `kind` (e.g. float64 to compare with a reference
    /// without fp32 rounding noise).
    pub fn set_float_kind(&self, kind: Kind) {
        tch::no_grad(|| {
            for e in self.params.entries() {
                if e.tensor.is_floating_point() {
                    let mut t = e.tensor.shallow_clone();
                    t.set_data(&e.tensor.to_kind(kind));
                }
            }
        });
    }

    /// Lays every convolution weight of both encoders out channels_last (see
    /// [`memory_format`](super::memory_format)); returns how many were converted.
    pub fn set_channels_last(&self) -> Result<usize, super::memory_format::MemoryFormatError> {
        super::memory_format::convolutions_channels_last(&self.params)
    }

    /// The next queue column to write.
    pub fn queue_ptr(&self) -> i64 {
        self.queue_ptr.int64_value(&[0])
    }

    /// Puts the queue pointer back to the first slot (the queue's contents stay).
    pub fn reset_queue_ptr(&self) {
        tch::no_grad(|| {
            let _ = self.queue_ptr.shallow_clone().fill_(0);
        });
    }

    /// Makes the key encoder an exact copy of the query encoder, parameters and buffers: how
    /// MoCo starts.
    pub fn copy_query_to_key(&self) {
        tch::no_grad(|| {
            for e in self.params.entries() {
                if let Some(k) = e
                    .name
                    .strip_prefix("encoder_q.")
                    .and_then(|rest| self.params.get(&format!("encoder_k.{rest}")))
                {
                    k.tensor.shallow_clone().copy_(&e.tensor);
                }
            }
        });
    }

    /// θk ← m·θk + (1−m)·θq over parameters only; the key encoder's BN statistics stay its own.
    pub fn momentum_update(&self) {
        let m = self.spec.momentum;
        tch::no_grad(|| {
            for (q, k) in &self.pairs {
                let mut k = k.shallow_clone();
                let updated = &k * m + q * (1.0 - m);
                k.copy_(&updated);
            }
        });
    }

    /// One forward pass: the queries through the query encoder (the large crop and the small
    /// crops as separate passes, each with its own BN statistics), a momentum update, the keys
    /// through the key encoder (shuffled across the gang when there is one), and the loss.
    /// `knn_active` is false during the kNN loss's warm-up. Does not enqueue: call
    /// [`Moco::enqueue`] with the returned keys after the backward pass.
    pub fn forward(
        &self,
        views: &Views,
        knn_active: bool,
        gang: Option<&dyn Gang>,
    ) -> Result<Forward, ModelError> {
        let b = views.key.size()[0].max(1);
        // Rows per image in each query pass (1 for the usual single large query crop).
        let large_rows = views.query.size()[0] / b;
        let (mut h, mut z) = self.encoder_q.forward_t(&views.query, true);
        let mut small_rows = 0;
        if let Some(small) = &views.small {
            small_rows = small.size()[0] / b;
            let (h_small, z_small) = self.encoder_q.forward_t(small, true);
            h = Tensor::cat(&[&h, &h_small], 0);
            z = Tensor::cat(&[&z, &z_small], 0);
        }
        let q = l2_normalize(&z, 1); // R×dim: the large rows, then the small rows, image-major

        self.momentum_update();
        let (k_local, keys, key_features) = tch::no_grad(|| self.encode_keys(&views.key, gang))?;
        // Every query row of image i has key i as its positive.
        let mut positives = vec![k_local.repeat_interleave_self_int(large_rows, 0, None)];
        if small_rows > 0 {
            positives.push(k_local.repeat_interleave_self_int(small_rows, 0, None));
        }
        let k_rows = Tensor::cat(&positives, 0);

        let knn = match (self.spec.knn, &self.queue_features, knn_active) {
            (Some((top_k, weight)), Some(queue_features), true) => {
                Some((top_k, weight, queue_features, l2_normalize(&h, 1)))
            }
            _ => None,
        };
        let losses = contrastive_loss(
            &q,
            &k_rows,
            &self.queue,
            self.spec.temperature,
            knn.as_ref()
                .map(|(top_k, weight, queue_features, hq)| KnnTerm {
                    query_features: hq,
                    queue_features,
                    top_k: *top_k,
                    weight: *weight,
                }),
        );
        Ok(Forward {
            losses,
            keys,
            key_features: self.queue_features.as_ref().map(|_| key_features),
        })
    }

    /// Encodes the key crops. Returns (local keys b×dim, the gang's keys B×dim, the gang's key
    /// backbone features B×D), all normalised and in data order.
    ///
    /// With a gang of several processes this is MoCo's shuffle BN: the key images of all ranks
    /// are gathered, rank 0 draws a permutation that every rank receives, each rank encodes its
    /// slice of the shuffled batch (so BN statistics mix images of all ranks and a query cannot
    /// find its key through them), and the outputs are gathered and un-shuffled. A single
    /// process splits its shuffled batch into BN groups instead ([`Moco::encode_keys_alone`]).
    fn encode_keys(
        &self,
        im_k: &Tensor,
        gang: Option<&dyn Gang>,
    ) -> Result<(Tensor, Tensor, Tensor), ModelError> {
        let encode = |x: &Tensor| {
            let (h, z) = self.encoder_k.forward_t(x, true);
            (l2_normalize(&z, 1), l2_normalize(&h, 1))
        };
        let gang = match gang {
            Some(g) if g.world_size() > 1 => g,
            _ => {
                let (k, h) = self.encode_keys_alone(im_k, &encode);
                return Ok((k.shallow_clone(), k, h));
            }
        };
        let b = im_k.size()[0];
        let (rank, world) = (gang.rank() as i64, gang.world_size() as i64);
        if !self.spec.shuffle_keys {
            let (k, h) = encode(im_k);
            let keys = gang.all_gather(&k)?;
            let features = gang.all_gather(&h)?;
            return Ok((k, keys, features));
        }
        let all = gang.all_gather(im_k)?; // B×3×L×L
        let total = all.size()[0];
        let mut perm = if rank == 0 {
            Tensor::randperm(total, (Kind::Int64, im_k.device()))
        } else {
            Tensor::zeros([total], (Kind::Int64, im_k.device()))
        };
        gang.broadcast(&mut perm, 0)?;
        let mine = perm.narrow(0, rank * b, b);
        let (k, h) = encode(&all.index_select(0, &mine));
        let unshuffle = perm.argsort(0, false);
        let keys = gang.all_gather(&k)?.index_select(0, &unshuffle); // B×dim
        let features = gang.all_gather(&h)?.index_select(0, &unshuffle); // B×D
        debug_assert_eq!(keys.size()[0], world * b);
        Ok((keys.narrow(0, rank * b, b), keys, features))
    }

    /// Shuffle BN for a single process: the keys are shuffled and encoded in
    /// [`virtual_ranks`] separate forward passes, each with its own BN statistics, then put back
    /// in order — what that many ranks would do. Without it, the keys of the current batch share
    /// BN statistics that the queued negatives (older batches) do not, and the network can lower
    /// the loss by recognising the batch instead of the image (MoCo's CIFAR demo splits BN the
    /// same way).
    fn encode_keys_alone(
        &self,
        im_k: &Tensor,
        encode: &dyn Fn(&Tensor) -> (Tensor, Tensor),
    ) -> (Tensor, Tensor) {
        let b = im_k.size()[0];
        let splits = if self.spec.shuffle_keys {
            virtual_ranks(b)
        } else {
            1
        };
        if splits == 1 {
            return encode(im_k);
        }
        let perm = Tensor::randperm(b, (Kind::Int64, im_k.device()));
        let shuffled = im_k.index_select(0, &perm);
        let (keys, features): (Vec<Tensor>, Vec<Tensor>) =
            shuffled.chunk(splits, 0).iter().map(encode).unzip();
        let unshuffle = perm.argsort(0, false);
        (
            Tensor::cat(&keys, 0).index_select(0, &unshuffle),
            Tensor::cat(&features, 0).index_select(0, &unshuffle),
        )
    }

    /// Writes the gang's keys (and their backbone features) into the queue as a FIFO ring. Keys
    /// computed under autocast arrive in the reduced dtype; `copy_` casts them into the queue,
    /// which stays in the model's dtype.
    pub fn enqueue(&self, keys: &Tensor, key_features: Option<&Tensor>) -> Result<(), ModelError> {
        let batch = keys.size()[0];
        let k = self.spec.queue_size;
        if batch == 0 || k % batch != 0 {
            return Err(ModelError::QueueNotDivisible { queue: k, batch });
        }
        let ptr = self.queue_ptr();
        if !(0..k).contains(&ptr) || ptr % batch != 0 {
            return Err(ModelError::QueuePointer {
                ptr,
                queue: k,
                batch,
            });
        }
        tch::no_grad(|| {
            self.queue.narrow(1, ptr, batch).copy_(&keys.tr());
            if let (Some(q), Some(f)) = (&self.queue_features, key_features) {
                q.narrow(1, ptr, batch).copy_(&f.tr());
            }
            let _ = self.queue_ptr.shallow_clone().fill_((ptr + batch) % k);
        });
        Ok(())
    }
}

/// How many BN groups a single process splits its key batch into: up to 8 (as MoCo's CIFAR
/// demo), each of at least 16 images so its statistics mean something, dividing the batch.
pub fn virtual_ranks(batch: i64) -> i64 {
    [8, 4, 2]
        .into_iter()
        .find(|&g| batch % g == 0 && batch / g >= 16)
        .unwrap_or(1)
}

/// Pairs each `encoder_q` parameter with its `encoder_k` twin, in registration order.
fn pair_up(params: &Params) -> Vec<(Tensor, Tensor)> {
    params
        .entries()
        .iter()
        .filter(|e| e.role == Role::Parameter)
        .filter_map(|e| {
            let rest = e.name.strip_prefix("encoder_q.")?;
            let k = params.get(&format!("encoder_k.{rest}"))?;
            Some((e.tensor.shallow_clone(), k.tensor.shallow_clone()))
        })
        .collect()
}
