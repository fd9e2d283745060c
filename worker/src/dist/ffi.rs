//! Declarations of the C ABI in `csrc/c10d_shim.cpp` (see there for the contract of each call),
//! plus reading the shim's per-thread error message.
use std::ffi::{CStr, c_char, c_int};

use torch_sys::C_tensor;

/// Opaque `c10d::Store` handle.
#[repr(C)]
pub(crate) struct Store {
    _private: [u8; 0],
}

/// Opaque `c10d::Backend` handle.
#[repr(C)]
pub(crate) struct Pg {
    _private: [u8; 0],
}

/// Opaque `c10d::Work` handle.
#[repr(C)]
pub(crate) struct Work {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn kontrast_c10d_last_error() -> *const c_char;
    pub(crate) fn kontrast_c10d_nccl_built() -> c_int;
    pub(crate) fn kontrast_c10d_store_new(
        host: *const c_char,
        port: u16,
        is_server: c_int,
        world_size: c_int,
        timeout_ms: i64,
        out: *mut *mut Store,
    ) -> c_int;
    pub(crate) fn kontrast_c10d_store_free(store: *mut Store);
    pub(crate) fn kontrast_c10d_gloo_new(
        store: *mut Store,
        prefix: *const c_char,
        rank: c_int,
        world_size: c_int,
        timeout_ms: i64,
        local_address: *const c_char,
        out: *mut *mut Pg,
    ) -> c_int;
    pub(crate) fn kontrast_c10d_nccl_new(
        store: *mut Store,
        prefix: *const c_char,
        rank: c_int,
        world_size: c_int,
        timeout_ms: i64,
        device: c_int,
        out: *mut *mut Pg,
    ) -> c_int;
    pub(crate) fn kontrast_c10d_pg_free(pg: *mut Pg);
    pub(crate) fn kontrast_c10d_all_reduce(
        pg: *mut Pg,
        tensor: *mut C_tensor,
        op: c_int,
        out: *mut *mut Work,
    ) -> c_int;
    pub(crate) fn kontrast_c10d_all_gather(
        pg: *mut Pg,
        input: *const C_tensor,
        output: *mut C_tensor,
        out: *mut *mut Work,
    ) -> c_int;
    pub(crate) fn kontrast_c10d_broadcast(
        pg: *mut Pg,
        tensor: *mut C_tensor,
        root: c_int,
        out: *mut *mut Work,
    ) -> c_int;
    pub(crate) fn kontrast_c10d_barrier(pg: *mut Pg, out: *mut *mut Work) -> c_int;
    pub(crate) fn kontrast_c10d_work_wait(work: *mut Work) -> c_int;
    pub(crate) fn kontrast_c10d_work_free(work: *mut Work);
    pub(crate) fn kontrast_c10d_set_grad(param: *mut C_tensor, grad: *const C_tensor) -> c_int;
    pub(crate) fn kontrast_c10d_gloo_layout_check() -> c_int;
}

/// Turns a shim status into `Ok` or the message the shim recorded on this thread.
pub(crate) fn check(status: c_int) -> Result<(), String> {
    if status == 0 {
        return Ok(());
    }
    // SAFETY: the shim returns a pointer to its thread-local string, valid until its next failing
    // call on this thread; it is copied at once.
    let message = unsafe { CStr::from_ptr(kontrast_c10d_last_error()) };
    let message = message.to_string_lossy().trim().to_string();
    Err(if message.is_empty() {
        "unknown error".to_string()
    } else {
        message
    })
}
