//! Collectives over PyTorch's c10d process groups (Gloo on CPU, NCCL on CUDA) through a C++ shim.
//!
//! The shim (`csrc/c10d_shim.cpp`) builds the same objects `torch.distributed` does: a
//! `TCPStore` hosted by rank 0 at `MASTER_ADDR:MASTER_PORT`, a `PrefixStore` over it, and
//! `ProcessGroupGloo` or `ProcessGroupNCCL` (the latter only with the `nccl` cargo feature).
//!
//! Rules every caller must follow, as with `torch.distributed`:
//! - All ranks issue the same collectives, on tensors of the same shape and kind, in the same
//!   order. Tensor lists therefore need a deterministic order: `tch::nn::VarStore::variables()` is
//!   a `HashMap` whose order differs between processes, so use [`ordered_variables`].
//! - Each group hosts its own store on rank 0, so two groups alive at once need two ports.
//! - Failures that c10d reports are returned as [`DistError`]; a failure that Gloo raises on its
//!   own background thread terminates the process (SIGABRT), which a launcher sees as a failed
//!   rank.
pub mod check;
mod ffi;
pub mod grad_reducer;

use std::ffi::{CString, c_int};
use std::fmt;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::time::Duration;

use tch::Tensor;

pub use grad_reducer::{DEFAULT_BUCKET_BYTES, GradReducer, ReduceStats, broadcast_parameters};

/// Which c10d backend carries the collectives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `ProcessGroupGloo`: CPU tensors, TCP between ranks.
    Gloo,
    /// `ProcessGroupNCCL`: CUDA tensors; needs the `nccl` cargo feature and a GPU.
    Nccl,
}

impl Backend {
    /// Whether this binary was built with the `nccl` feature.
    pub fn nccl_built() -> bool {
        // SAFETY: no arguments, no state.
        unsafe { ffi::kontrast_c10d_nccl_built() != 0 }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        })
    }
}

/// How [`ProcessGroup::all_reduce`] combines the ranks' tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// Element-wise sum.
    Sum,
    /// Element-wise mean over ranks (a sum divided by the world size; floating-point tensors only).
    Avg,
    /// Element-wise product.
    Product,
    /// Element-wise minimum.
    Min,
    /// Element-wise maximum.
    Max,
}

/// Where and how a rank joins its group: the `torch.distributed` environment contract.
#[derive(Clone, Debug)]
pub struct Rendezvous {
    /// Host of rank 0, which serves the store (`MASTER_ADDR`).
    pub master_addr: String,
    /// Port of the store on rank 0 (`MASTER_PORT`).
    pub master_port: u16,
    /// This process's rank, `0..world_size` (`RANK`).
    pub rank: usize,
    /// Number of ranks (`WORLD_SIZE`).
    pub world_size: usize,
    /// Limit for joining the store and for each collective.
    pub timeout: Duration,
    /// The address or hostname Gloo binds to and advertises to its peers; `None` resolves this
    /// machine's hostname (falling back to loopback).
    pub local_address: Option<String>,
    /// The CUDA device an NCCL rank drives (usually `LOCAL_RANK`); `None` means device 0.
    pub cuda_device: Option<usize>,
}

impl Rendezvous {
    /// Reads `RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`, `LOCAL_RANK` (CUDA device,
    /// optional) and `POD_IP` (Gloo's local address, optional) from the environment.
    pub fn from_env(timeout: Duration) -> Result<Self, DistError> {
        fn var(name: &'static str) -> Result<String, DistError> {
            std::env::var(name).map_err(|_| DistError::Environment {
                name,
                reason: "is not set".into(),
            })
        }
        fn parse<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, DistError> {
            value.trim().parse().map_err(|_| DistError::Environment {
                name,
                reason: format!("{value:?} is not a valid number"),
            })
        }
        let cuda_device = match std::env::var("LOCAL_RANK") {
            Ok(v) => Some(parse("LOCAL_RANK", &v)?),
            Err(_) => None,
        };
        Ok(Self {
            master_addr: var("MASTER_ADDR")?,
            master_port: parse("MASTER_PORT", &var("MASTER_PORT")?)?,
            rank: parse("RANK", &var("RANK")?)?,
            world_size: parse("WORLD_SIZE", &var("WORLD_SIZE")?)?,
            timeout,
            local_address: std::env::var("POD_IP").ok().filter(|s| !s.is_empty()),
            cuda_device,
        })
    }

    /// `MASTER_ADDR:MASTER_PORT`, as errors name it.
    pub fn endpoint(&self) -> String {
        if self.master_addr.contains(':') {
            format!("[{}]:{}", self.master_addr, self.master_port)
        } else {
            format!("{}:{}", self.master_addr, self.master_port)
        }
    }
}

/// An error from the distributed layer; each names the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A variable of the environment contract is missing or malformed.
    #[error("environment variable {name} {reason}")]
    Environment {
        /// The variable.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The rendezvous settings are inconsistent (rank out of range, zero ranks, …).
    #[error("invalid rendezvous: {0}")]
    InvalidRendezvous(String),
    /// Joining the store on rank 0 failed or timed out.
    #[error(
        "rendezvous with the store at {endpoint} failed (rank {rank} of {world_size}, timeout {timeout:?}): {message}"
    )]
    Store {
        /// `MASTER_ADDR:MASTER_PORT`.
        endpoint: String,
        /// This rank.
        rank: usize,
        /// The group size.
        world_size: usize,
        /// The configured timeout.
        timeout: Duration,
        /// c10d's message.
        message: String,
    },
    /// `Backend::Nccl` was requested from a binary built without the `nccl` feature.
    #[error("NCCL process group: built without the nccl feature (cargo build --features nccl)")]
    NcclNotBuilt,
    /// Creating the process group failed after the store was reached.
    #[error("creating the {backend} process group failed: {message}")]
    Init {
        /// The backend.
        backend: Backend,
        /// c10d's message.
        message: String,
    },
    /// A collective failed or timed out (a peer died, shapes differ, …).
    #[error("{op} failed: {message}")]
    Collective {
        /// The collective.
        op: &'static str,
        /// c10d's message.
        message: String,
    },
    /// A tensor handed to a collective is unusable for it.
    #[error("{op}: {reason}")]
    InvalidTensor {
        /// The collective.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A tensor operation around a collective (packing, copying back) failed.
    #[error("{op}: {source}")]
    Tensor {
        /// The operation.
        op: &'static str,
        /// libtorch's error.
        #[source]
        source: tch::TchError,
    },
    /// The build's c10d classes do not match libtorch's (see `verify_gloo_layout`).
    #[error("c10d self-check failed: {0}")]
    Layout(String),
}

impl DistError {
    pub(crate) fn tensor(op: &'static str) -> impl FnOnce(tch::TchError) -> Self {
        move |source| DistError::Tensor { op, source }
    }
}

/// A joined process group. Collectives must be issued in the same order on every rank; the group
/// may move between threads but is used from one at a time.
pub struct ProcessGroup {
    pg: NonNull<ffi::Pg>,
    store: NonNull<ffi::Store>,
    backend: Backend,
    rank: usize,
    world_size: usize,
}

// SAFETY: c10d backends and stores are not tied to the thread that created them; `ProcessGroup`
// is not `Sync`, so calls into one group never race.
unsafe impl Send for ProcessGroup {}

impl fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("backend", &self.backend)
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .finish()
    }
}

impl ProcessGroup {
    /// Joins the group: connects to (rank 0: hosts) the store, waits for all ranks, and sets up
    /// the backend. Fails with [`DistError::Store`] naming `MASTER_ADDR:MASTER_PORT` when the
    /// store cannot be reached within `rv.timeout`.
    pub fn new(backend: Backend, rv: &Rendezvous) -> Result<Self, DistError> {
        if backend == Backend::Nccl {
            if !Backend::nccl_built() {
                return Err(DistError::NcclNotBuilt);
            }
            // Checked before the rendezvous so a rank without its GPU fails at once.
            let visible = tch::Cuda::device_count();
            let wanted = rv.cuda_device.unwrap_or(0);
            if visible <= 0 || i64::try_from(wanted).unwrap_or(i64::MAX) >= visible {
                return Err(DistError::Init {
                    backend,
                    message: format!(
                        "CUDA device {wanted} is not available ({visible} visible to this process)"
                    ),
                });
            }
        }
        let c_int_of = |what: &str, v: usize| {
            c_int::try_from(v)
                .map_err(|_| DistError::InvalidRendezvous(format!("{what} {v} is too large")))
        };
        if rv.world_size == 0 {
            return Err(DistError::InvalidRendezvous("world size is 0".into()));
        }
        if rv.rank >= rv.world_size {
            return Err(DistError::InvalidRendezvous(format!(
                "rank {} is not below world size {}",
                rv.rank, rv.world_size
            )));
        }
        let rank = c_int_of("rank", rv.rank)?;
        let world = c_int_of("world size", rv.world_size)?;
        let device = c_int_of("CUDA device", rv.cuda_device.unwrap_or(0))?;
        // c10d takes milliseconds; a zero timeout would mean "fail at once".
        let timeout_ms = i64::try_from(rv.timeout.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let host = CString::new(rv.master_addr.as_str())
            .map_err(|_| DistError::InvalidRendezvous("MASTER_ADDR contains a NUL byte".into()))?;
        let local = rv
            .local_address
            .as_deref()
            .map(CString::new)
            .transpose()
            .map_err(|_| {
                DistError::InvalidRendezvous("local address contains a NUL byte".into())
            })?;

        tracing::debug!(
            endpoint = %rv.endpoint(),
            rank = rv.rank,
            world_size = rv.world_size,
            %backend,
            "joining the store"
        );
        let mut store = ptr::null_mut();
        // SAFETY: valid C strings and out-pointer; the shim catches every exception.
        let status = unsafe {
            ffi::kontrast_c10d_store_new(
                host.as_ptr(),
                rv.master_port,
                c_int::from(rv.rank == 0),
                world,
                timeout_ms,
                &mut store,
            )
        };
        ffi::check(status).map_err(|message| DistError::Store {
            endpoint: rv.endpoint(),
            rank: rv.rank,
            world_size: rv.world_size,
            timeout: rv.timeout,
            message,
        })?;
        let store = NonNull::new(store).ok_or_else(|| DistError::Store {
            endpoint: rv.endpoint(),
            rank: rv.rank,
            world_size: rv.world_size,
            timeout: rv.timeout,
            message: "no store returned".into(),
        })?;

        // The store belongs to this group alone; the prefix only keeps its keys recognisable.
        let prefix = CString::new(format!("kontrast/{backend}/"))
            .map_err(|_| DistError::InvalidRendezvous("bad prefix".into()))?;
        let mut pg = ptr::null_mut();
        // SAFETY: `store` is live; strings and out-pointer valid; exceptions are caught.
        let status = unsafe {
            match backend {
                Backend::Gloo => ffi::kontrast_c10d_gloo_new(
                    store.as_ptr(),
                    prefix.as_ptr(),
                    rank,
                    world,
                    timeout_ms,
                    local.as_ref().map_or(ptr::null(), |s| s.as_ptr()),
                    &mut pg,
                ),
                Backend::Nccl => ffi::kontrast_c10d_nccl_new(
                    store.as_ptr(),
                    prefix.as_ptr(),
                    rank,
                    world,
                    timeout_ms,
                    device,
                    &mut pg,
                ),
            }
        };
        let created = ffi::check(status)
            .and_then(|()| NonNull::new(pg).ok_or_else(|| "no process group returned".to_string()));
        let pg = match created {
            Ok(pg) => pg,
            Err(message) => {
                // SAFETY: created above and not shared.
                unsafe { ffi::kontrast_c10d_store_free(store.as_ptr()) };
                return Err(DistError::Init { backend, message });
            }
        };
        tracing::debug!(
            rank = rv.rank,
            world_size = rv.world_size,
            %backend,
            "joined the process group"
        );
        Ok(Self {
            pg,
            store,
            backend,
            rank: rv.rank,
            world_size: rv.world_size,
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks in the group.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// The backend carrying the collectives.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Reduces `t` across ranks, in place, and waits for the result.
    pub fn all_reduce(&self, t: &mut Tensor, op: ReduceOp) -> Result<(), DistError> {
        self.all_reduce_async(t, op)?.wait()
    }

    /// Starts reducing `t` across ranks, in place. `t` is borrowed until the returned [`Work`]
    /// is waited on (or dropped, which waits too).
    pub fn all_reduce_async<'a>(
        &'a self,
        t: &'a mut Tensor,
        op: ReduceOp,
    ) -> Result<Work<'a>, DistError> {
        const OP: &str = "all_reduce";
        check_tensor(OP, t)?;
        let code = match op {
            ReduceOp::Sum | ReduceOp::Avg => 0,
            ReduceOp::Product => 1,
            ReduceOp::Min => 2,
            ReduceOp::Max => 3,
        };
        let divide_by = if op == ReduceOp::Avg {
            if !t.is_floating_point() {
                return Err(DistError::InvalidTensor {
                    op: OP,
                    reason: format!(
                        "averaging needs a floating-point tensor, not {:?}",
                        t.kind()
                    ),
                });
            }
            Some(self.world_size as f64)
        } else {
            None
        };
        let mut work = ptr::null_mut();
        // SAFETY: live group, defined tensor, valid out-pointer.
        let status = unsafe {
            ffi::kontrast_c10d_all_reduce(self.pg.as_ptr(), t.as_mut_ptr(), code, &mut work)
        };
        Work::started(OP, status, work, Some(t), divide_by)
    }

    /// Gathers every rank's `t` (same shape on all ranks) and returns them concatenated along
    /// dim 0 in rank order; a 0-dimensional `t` counts as shape `[1]`.
    pub fn all_gather(&self, t: &Tensor) -> Result<Tensor, DistError> {
        const OP: &str = "all_gather";
        check_tensor(OP, t)?;
        let input = if t.dim() == 0 {
            t.f_reshape([1]).map_err(DistError::tensor(OP))?
        } else {
            t.shallow_clone()
        };
        let mut shape = input.size();
        shape[0] *= self.world_size as i64;
        let mut output = Tensor::f_empty(shape.as_slice(), (input.kind(), input.device()))
            .map_err(DistError::tensor(OP))?;
        let mut work = ptr::null_mut();
        // SAFETY: live group, defined tensors, valid out-pointer. The shim's work holds
        // references to both tensors until it completes; it is waited on before returning.
        let status = unsafe {
            ffi::kontrast_c10d_all_gather(
                self.pg.as_ptr(),
                input.as_ptr(),
                output.as_mut_ptr(),
                &mut work,
            )
        };
        Work::started(OP, status, work, None, None)?.wait()?;
        Ok(output)
    }

    /// Overwrites `t` on every rank with `root`'s `t`.
    pub fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), DistError> {
        const OP: &str = "broadcast";
        check_tensor(OP, t)?;
        if root >= self.world_size {
            return Err(DistError::InvalidTensor {
                op: OP,
                reason: format!("root {root} is not below world size {}", self.world_size),
            });
        }
        let mut work = ptr::null_mut();
        // SAFETY: live group, defined tensor, valid out-pointer; root fits c_int (< world size).
        let status = unsafe {
            ffi::kontrast_c10d_broadcast(self.pg.as_ptr(), t.as_mut_ptr(), root as c_int, &mut work)
        };
        Work::started(OP, status, work, Some(t), None)?.wait()
    }

    /// Returns once every rank has entered the barrier (and, for Gloo, once this rank's earlier
    /// collectives have finished).
    pub fn barrier(&self) -> Result<(), DistError> {
        let mut work = ptr::null_mut();
        // SAFETY: live group, valid out-pointer.
        let status = unsafe { ffi::kontrast_c10d_barrier(self.pg.as_ptr(), &mut work) };
        Work::started("barrier", status, work, None, None)?.wait()
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: both handles are owned; the group goes first because it uses the store.
        unsafe {
            ffi::kontrast_c10d_pg_free(self.pg.as_ptr());
            ffi::kontrast_c10d_store_free(self.store.as_ptr());
        }
    }
}

/// Rejects tensors c10d would refuse with a less helpful message.
fn check_tensor(op: &'static str, t: &Tensor) -> Result<(), DistError> {
    if !t.defined() {
        return Err(DistError::InvalidTensor {
            op,
            reason: "the tensor is undefined".into(),
        });
    }
    if !t.is_contiguous() {
        return Err(DistError::InvalidTensor {
            op,
            reason: "the tensor is not contiguous".into(),
        });
    }
    Ok(())
}

/// A collective in flight, from [`ProcessGroup::all_reduce_async`]. Wait on it to get its result;
/// dropping it waits too (and logs an error, having nobody to return it to).
#[must_use = "a collective must be waited on"]
pub struct Work<'a> {
    raw: Option<NonNull<ffi::Work>>,
    op: &'static str,
    tensor: Option<&'a mut Tensor>,
    divide_by: Option<f64>,
    _group: PhantomData<&'a ProcessGroup>,
}

impl<'a> Work<'a> {
    fn started(
        op: &'static str,
        status: c_int,
        raw: *mut ffi::Work,
        tensor: Option<&'a mut Tensor>,
        divide_by: Option<f64>,
    ) -> Result<Self, DistError> {
        ffi::check(status).map_err(|message| DistError::Collective { op, message })?;
        let raw = NonNull::new(raw).ok_or_else(|| DistError::Collective {
            op,
            message: "no work returned".into(),
        })?;
        Ok(Self {
            raw: Some(raw),
            op,
            tensor,
            divide_by,
            _group: PhantomData,
        })
    }

    /// Blocks until the collective has finished (for NCCL: until the current CUDA stream is
    /// ordered after it) and returns its outcome.
    pub fn wait(mut self) -> Result<(), DistError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), DistError> {
        let Some(raw) = self.raw.take() else {
            return Ok(());
        };
        // SAFETY: `raw` is owned by this Work and freed exactly once, here.
        let status = unsafe {
            let status = ffi::kontrast_c10d_work_wait(raw.as_ptr());
            ffi::kontrast_c10d_work_free(raw.as_ptr());
            status
        };
        ffi::check(status).map_err(|message| DistError::Collective {
            op: self.op,
            message,
        })?;
        if let (Some(t), Some(n)) = (self.tensor.as_deref_mut(), self.divide_by) {
            let _ = t.f_div_scalar_(n).map_err(DistError::tensor(self.op))?;
        }
        Ok(())
    }
}

impl Drop for Work<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::error!(error = %e, "collective dropped without waiting failed");
        }
    }
}

/// Runs libtorch's own constructors for the c10d classes this build allocates and checks they
/// agree with the headers it was compiled against (the stand-in gloo headers in `csrc/gloo`):
/// sizes, member offsets, a working one-rank Gloo group on 127.0.0.1.
pub fn verify_gloo_layout() -> Result<(), DistError> {
    // SAFETY: no arguments; the shim catches every exception.
    ffi::check(unsafe { ffi::kontrast_c10d_gloo_layout_check() }).map_err(DistError::Layout)
}

/// The variables of `vs` (parameters and buffers) sorted by name: the same order on every rank,
/// unlike `VarStore::variables()`, a `HashMap`.
pub fn ordered_variables(vs: &tch::nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<_> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Makes `grad` the gradient of `param` (tch can read gradients but not set them).
pub(crate) fn set_grad(param: &Tensor, grad: &Tensor) -> Result<(), DistError> {
    let mut param = param.shallow_clone();
    // SAFETY: both tensors are defined handles owned for the duration of the call.
    let status = unsafe { ffi::kontrast_c10d_set_grad(param.as_mut_ptr(), grad.as_ptr()) };
    ffi::check(status).map_err(|reason| DistError::InvalidTensor {
        op: "set_grad",
        reason,
    })
}
