//! The process group seen through what the model and the step need: key shuffling (`Gang`) and
//! gradient averaging (`GradientSync`).
use std::time::Duration;

use tch::Tensor;

use crate::dist::{DistError, GradReducer, ProcessGroup};
use crate::model::{CollectiveError, Gang};

use super::step::GradientSync;

impl Gang for ProcessGroup {
    fn rank(&self) -> usize {
        ProcessGroup::rank(self)
    }
    fn world_size(&self) -> usize {
        ProcessGroup::world_size(self)
    }
    fn all_gather(&self, t: &Tensor) -> Result<Tensor, CollectiveError> {
        Ok(ProcessGroup::all_gather(self, t)?)
    }
    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), CollectiveError> {
        Ok(ProcessGroup::broadcast(self, t, root)?)
    }
}

/// Averages the query encoder's gradients over the group with the bucketed reducer.
pub struct GradientAverager<'a> {
    pg: &'a ProcessGroup,
    reducer: GradReducer,
}

impl<'a> GradientAverager<'a> {
    /// An averager for `params` (the query encoder's, in their fixed order) over `pg`.
    pub fn new(pg: &'a ProcessGroup, params: &[Tensor]) -> Result<Self, DistError> {
        Ok(Self {
            pg,
            reducer: GradReducer::new(params)?,
        })
    }
}

impl GradientSync for GradientAverager<'_> {
    fn sync(&mut self) -> Result<Duration, CollectiveError> {
        Ok(self.reducer.reduce(self.pg)?.all_reduce)
    }
}
