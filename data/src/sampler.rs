//! Per-rank sharding with `torch.utils.data.DistributedSampler` semantics (shuffle, drop_last):
//! every epoch a permutation seeded by `seed + epoch`, truncated to a multiple of the world size,
//! rank `r` taking positions `r, r + world, r + 2·world, …`. Shards are disjoint and equal.

use crate::rng::SampleRng;
use crate::{DataError, Result};

/// Which samples one rank reads in an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sampler {
    len: usize,
    seed: u64,
    rank: usize,
    world_size: usize,
}

impl Sampler {
    /// A sampler over `len` samples for `rank` of `world_size`.
    pub fn new(len: usize, seed: u64, rank: usize, world_size: usize) -> Result<Self> {
        if world_size == 0 || rank >= world_size {
            return Err(DataError::Config(format!(
                "rank {rank} is not in a world of {world_size}"
            )));
        }
        if len < world_size {
            return Err(DataError::Config(format!(
                "{len} samples cannot be shared by {world_size} ranks"
            )));
        }
        Ok(Self {
            len,
            seed,
            rank,
            world_size,
        })
    }

    /// Samples per rank and epoch (`len / world_size`, the remainder dropped).
    pub fn samples_per_rank(&self) -> usize {
        self.len / self.world_size
    }

    /// Full batches per rank and epoch (the last partial batch is dropped).
    pub fn batches_per_epoch(&self, batch_per_rank: usize) -> usize {
        self.samples_per_rank()
            .checked_div(batch_per_rank)
            .unwrap_or(0)
    }

    /// This rank's data set indices for `epoch`, in reading order.
    pub fn epoch_indices(&self, epoch: u64) -> Vec<usize> {
        let mut perm: Vec<usize> = (0..self.len).collect();
        SampleRng::from_parts(&[self.seed.wrapping_add(epoch), 0x5A4D_504C_4552])
            .shuffle(&mut perm);
        let total = self.samples_per_rank() * self.world_size;
        perm[..total]
            .iter()
            .skip(self.rank)
            .step_by(self.world_size)
            .copied()
            .collect()
    }

    /// The rank this sampler serves.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// The shuffling seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }
}
