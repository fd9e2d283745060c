//! Data-parallel gradient averaging the way PyTorch's DDP does it: gradients packed into flat
//! buckets (parameters in reverse order, so the last layers, whose gradients backward produces
//! first, go first), one asynchronous all-reduce per bucket, averaged by the world size and
//! copied back. tch has no backward hooks, so reduction starts after backward instead of
//! overlapping it; packing the next bucket overlaps the previous bucket's all-reduce.
//!
//! Parameter lists must be in the same order on every rank (see [`super::ordered_variables`]).
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};

use super::{DistError, ProcessGroup, ReduceOp, set_grad};

/// DDP's default bucket size: 25 MiB.
pub const DEFAULT_BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// What one [`GradReducer::reduce`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReduceStats {
    /// From the first bucket's launch to the last bucket's completion.
    pub all_reduce: Duration,
    /// Bytes all-reduced (per rank).
    pub bytes: usize,
    /// Number of buckets, i.e. all-reduce calls.
    pub buckets: usize,
}

/// One tensor's place in a flat bucket.
struct Slot {
    index: usize,
    offset: i64,
    numel: i64,
}

/// Consecutive tensors of one kind and device, at most one bucket's size (or a single tensor).
struct Group {
    slots: Vec<Slot>,
    kind: Kind,
    device: Device,
    numel: i64,
}

/// Splits `tensors` (index, tensor) into groups, keeping their order.
fn plan<'t>(
    op: &'static str,
    tensors: impl IntoIterator<Item = (usize, &'t Tensor)>,
    bucket_bytes: usize,
) -> Result<Vec<Group>, DistError> {
    let mut groups: Vec<Group> = Vec::new();
    for (index, t) in tensors {
        if !t.defined() {
            return Err(DistError::InvalidTensor {
                op,
                reason: format!("tensor {index} is undefined"),
            });
        }
        let (kind, device) = (t.kind(), t.device());
        let numel = t.numel() as i64;
        let elt = kind.elt_size_in_bytes();
        let fits = groups.last().is_some_and(|g| {
            g.kind == kind && g.device == device && (g.numel + numel) as usize * elt <= bucket_bytes
        });
        if !fits {
            groups.push(Group {
                slots: Vec::new(),
                kind,
                device,
                numel: 0,
            });
        }
        let last = groups.len() - 1;
        let g = &mut groups[last];
        g.slots.push(Slot {
            index,
            offset: g.numel,
            numel,
        });
        g.numel += numel;
    }
    Ok(groups)
}

struct Bucket {
    slots: Vec<Slot>,
    flat: Tensor,
}

/// Averages the gradients of a fixed parameter list across the ranks of a group.
pub struct GradReducer {
    params: Vec<Tensor>,
    buckets: Vec<Bucket>,
}

impl std::fmt::Debug for GradReducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GradReducer")
            .field("params", &self.params.len())
            .field("buckets", &self.buckets.len())
            .finish()
    }
}

impl GradReducer {
    /// A reducer for `params` (in the same order on every rank) with 25 MiB buckets.
    /// Tensors that do not require a gradient are skipped.
    pub fn new(params: &[Tensor]) -> Result<Self, DistError> {
        Self::with_bucket_bytes(params, DEFAULT_BUCKET_BYTES)
    }

    /// Like [`GradReducer::new`] with buckets of at most `bucket_bytes` (a larger parameter gets a
    /// bucket of its own).
    pub fn with_bucket_bytes(params: &[Tensor], bucket_bytes: usize) -> Result<Self, DistError> {
        const OP: &str = "gradient reducer";
        let params: Vec<Tensor> = params
            .iter()
            .filter(|p| p.defined() && p.requires_grad())
            .map(Tensor::shallow_clone)
            .collect();
        let groups = plan(OP, params.iter().enumerate().rev(), bucket_bytes)?;
        let buckets = groups
            .into_iter()
            .map(|g| {
                let flat = Tensor::f_zeros([g.numel], (g.kind, g.device))
                    .map_err(DistError::tensor(OP))?;
                Ok(Bucket {
                    slots: g.slots,
                    flat,
                })
            })
            .collect::<Result<_, DistError>>()?;
        Ok(Self { params, buckets })
    }

    /// Number of buckets (all-reduce calls per [`GradReducer::reduce`]).
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Replaces every parameter's gradient by its mean over the ranks of `pg`. Call after
    /// backward on every rank. A parameter without a gradient on this rank counts as zeros and
    /// receives the mean (as DDP does with `find_unused_parameters`).
    pub fn reduce(&mut self, pg: &ProcessGroup) -> Result<ReduceStats, DistError> {
        const OP: &str = "gradient all-reduce";
        let _no_grad = tch::no_grad_guard();
        let mut stats = ReduceStats {
            buckets: self.buckets.len(),
            ..ReduceStats::default()
        };
        let mut started = None;
        let mut works = Vec::with_capacity(self.buckets.len());
        for bucket in &mut self.buckets {
            for slot in &bucket.slots {
                let grad = self.params[slot.index].grad();
                let mut part = bucket
                    .flat
                    .f_narrow(0, slot.offset, slot.numel)
                    .map_err(DistError::tensor(OP))?;
                if grad.defined() {
                    let grad = grad.f_reshape([-1]).map_err(DistError::tensor(OP))?;
                    part.f_copy_(&grad).map_err(DistError::tensor(OP))?;
                } else {
                    let _ = part.f_zero_().map_err(DistError::tensor(OP))?;
                }
            }
            stats.bytes += bucket.flat.numel() * bucket.flat.kind().elt_size_in_bytes();
            started.get_or_insert_with(Instant::now);
            works.push(pg.all_reduce_async(&mut bucket.flat, ReduceOp::Avg)?);
        }
        for work in works {
            work.wait()?;
        }
        stats.all_reduce = started.map(|s| s.elapsed()).unwrap_or_default();
        for bucket in &self.buckets {
            for slot in &bucket.slots {
                let param = &self.params[slot.index];
                let mean = bucket
                    .flat
                    .f_narrow(0, slot.offset, slot.numel)
                    .and_then(|p| p.f_view_as(param))
                    .map_err(DistError::tensor(OP))?;
                let mut grad = param.grad();
                if grad.defined() {
                    grad.f_copy_(&mean).map_err(DistError::tensor(OP))?;
                } else {
                    // A copy: the bucket is overwritten by the next reduction.
                    let mean = mean.f_detach_copy().map_err(DistError::tensor(OP))?;
                    set_grad(param, &mean)?;
                }
            }
        }
        Ok(stats)
    }
}

/// Copies rank `root`'s values of `tensors` (parameters and buffers, in the same order on every
/// rank) to every other rank, in place and in buckets; used before training so every rank starts
/// from the same weights.
pub fn broadcast_parameters(
    pg: &ProcessGroup,
    tensors: &[Tensor],
    root: usize,
) -> Result<(), DistError> {
    const OP: &str = "broadcast_parameters";
    let _no_grad = tch::no_grad_guard();
    for group in plan(OP, tensors.iter().enumerate(), DEFAULT_BUCKET_BYTES)? {
        let mut flat = if pg.rank() == root {
            let parts = group
                .slots
                .iter()
                .map(|s| tensors[s.index].f_reshape([-1]))
                .collect::<Result<Vec<_>, _>>()
                .map_err(DistError::tensor(OP))?;
            Tensor::f_cat(&parts, 0).map_err(DistError::tensor(OP))?
        } else {
            Tensor::f_empty([group.numel], (group.kind, group.device))
                .map_err(DistError::tensor(OP))?
        };
        pg.broadcast(&mut flat, root)?;
        if pg.rank() != root {
            for slot in &group.slots {
                let mut target = tensors[slot.index].shallow_clone();
                let value = flat
                    .f_narrow(0, slot.offset, slot.numel)
                    .and_then(|p| p.f_view_as(&target))
                    .map_err(DistError::tensor(OP))?;
                target.f_copy_(&value).map_err(DistError::tensor(OP))?;
            }
        }
    }
    Ok(())
}
