// A plain C ABI over PyTorch's c10d: TCPStore rendezvous, ProcessGroupGloo and (with
// USE_C10D_NCCL) ProcessGroupNCCL, used by worker/src/dist/ffi.rs.
//
// Conventions:
// - Tensors are tch's `C_tensor*`, which is an `at::Tensor*`.
// - Fallible functions return 0 on success and -1 on failure; the message is then available from
//   kontrast_c10d_last_error() on the same thread. No C++ exception crosses this boundary.
// - Handles are heap objects owned by the caller and released with the matching *_free.
// - Collectives are asynchronous: they return a work handle that must be waited on; the work keeps
//   its tensors alive until it completes.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "guarded.h"
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#ifdef USE_C10D_NCCL
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#ifndef USE_C10D_GLOO
#error "compile with -DUSE_C10D_GLOO: ProcessGroupGloo.hpp is empty without it"
#endif

// What the stand-in gloo headers (csrc/gloo) promise: no gloo object can be created here, so no
// code compiled here depends on gloo's layout. The sizes of the c10d classes that hold gloo
// objects are checked against libtorch at run time (kontrast_c10d_gloo_layout_check).
static_assert(!std::is_default_constructible_v<gloo::Context>);
static_assert(!std::is_copy_constructible_v<gloo::Context>);
static_assert(std::is_abstract_v<c10d::ProcessGroupGloo::GlooStore>);

namespace {

thread_local std::string last_error;

// Runs `body`, turning any exception into -1 plus a message for kontrast_c10d_last_error().
template <typename F>
int guarded(const char* what, F&& body) noexcept {
  return kontrast::guarded(last_error, what, std::forward<F>(body));
}

std::chrono::milliseconds millis(int64_t ms) {
  return std::chrono::milliseconds(ms);
}

} // namespace

struct kontrast_c10d_store {
  c10::intrusive_ptr<c10d::Store> store;
};

struct kontrast_c10d_pg {
  c10::intrusive_ptr<c10d::Backend> backend;
};

struct kontrast_c10d_work {
  c10::intrusive_ptr<c10d::Work> work;
};

extern "C" {

const char* kontrast_c10d_last_error(void) {
  return last_error.c_str();
}

int kontrast_c10d_nccl_built(void) {
#ifdef USE_C10D_NCCL
  return 1;
#else
  return 0;
#endif
}

// Rank 0 (is_server) hosts the store and waits until all `world_size` ranks have connected;
// the others connect, retrying until `timeout_ms`.
int kontrast_c10d_store_new(
    const char* host,
    uint16_t port,
    int is_server,
    int world_size,
    int64_t timeout_ms,
    kontrast_c10d_store** out) {
  return guarded("TCPStore", [&] {
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    opts.numWorkers = static_cast<std::size_t>(world_size);
    opts.waitWorkers = true;
    opts.timeout = millis(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    *out = new kontrast_c10d_store{std::move(store)};
  });
}

void kontrast_c10d_store_free(kontrast_c10d_store* store) {
  delete store;
}

// `local_address` (nullable) is the address gloo binds to and advertises to its peers; without
// it gloo resolves this machine's hostname, falling back to loopback.
int kontrast_c10d_gloo_new(
    kontrast_c10d_store* store,
    const char* prefix,
    int rank,
    int world_size,
    int64_t timeout_ms,
    const char* local_address,
    kontrast_c10d_pg** out) {
  return guarded("ProcessGroupGloo", [&] {
    auto prefixed =
        c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), store->store);
    auto opts = c10d::ProcessGroupGloo::Options::create(millis(timeout_ms));
    if (local_address != nullptr && local_address[0] != '\0') {
      opts->devices.push_back(
          c10d::ProcessGroupGloo::createDeviceForHostname(local_address));
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(
        prefixed, rank, world_size, opts);
    *out = new kontrast_c10d_pg{std::move(pg)};
  });
}

// `device` is the CUDA device this rank drives; it becomes the current device.
int kontrast_c10d_nccl_new(
    kontrast_c10d_store* store,
    const char* prefix,
    int rank,
    int world_size,
    int64_t timeout_ms,
    int device,
    kontrast_c10d_pg** out) {
  return guarded("ProcessGroupNCCL", [&] {
#ifdef USE_C10D_NCCL
    // Checked here because ProcessGroupNCCL would otherwise fail much later, in its watchdog.
    const auto devices = static_cast<int>(c10::cuda::device_count());
    if (devices == 0) {
      throw std::runtime_error("no CUDA device is visible to this process");
    }
    if (device < 0 || device >= devices) {
      throw std::runtime_error(
          "CUDA device " + std::to_string(device) + " does not exist (" +
          std::to_string(devices) + " visible)");
    }
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
    auto prefixed =
        c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), store->store);
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = millis(timeout_ms);
    auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(
        prefixed, rank, world_size, opts);
    // Binding the device tells barrier() which device to use; connecting eagerly makes a broken
    // gang fail here rather than in the first collective.
    const c10::Device bound(c10::kCUDA, static_cast<c10::DeviceIndex>(device));
    pg->setBoundDeviceId(bound);
    pg->eagerConnectSingleDevice(bound);
    *out = new kontrast_c10d_pg{std::move(pg)};
#else
    (void)store;
    (void)prefix;
    (void)rank;
    (void)world_size;
    (void)timeout_ms;
    (void)device;
    (void)out;
    throw std::runtime_error("built without the nccl feature");
#endif
  });
}

void kontrast_c10d_pg_free(kontrast_c10d_pg* pg) {
  // Backend destructors join their threads; nothing to report from here.
  try {
    delete pg;
  } catch (...) {
  }
}

// op: 0 sum, 1 product, 2 min, 3 max (averaging is a sum divided on the Rust side, because
// gloo has no AVG).
int kontrast_c10d_all_reduce(
    kontrast_c10d_pg* pg,
    at::Tensor* tensor,
    int op,
    kontrast_c10d_work** out) {
  return guarded("all_reduce", [&] {
    c10d::AllreduceOptions opts;
    switch (op) {
      case 0:
        opts.reduceOp = c10d::ReduceOp::SUM;
        break;
      case 1:
        opts.reduceOp = c10d::ReduceOp::PRODUCT;
        break;
      case 2:
        opts.reduceOp = c10d::ReduceOp::MIN;
        break;
      case 3:
        opts.reduceOp = c10d::ReduceOp::MAX;
        break;
      default:
        throw std::invalid_argument("unknown reduce op " + std::to_string(op));
    }
    std::vector<at::Tensor> tensors{*tensor};
    auto work = pg->backend->allreduce(tensors, opts);
    *out = new kontrast_c10d_work{std::move(work)};
  });
}

// `output` holds world_size * input.numel() elements: rank r's input lands in the r-th chunk
// along dim 0.
int kontrast_c10d_all_gather(
    kontrast_c10d_pg* pg,
    const at::Tensor* input,
    at::Tensor* output,
    kontrast_c10d_work** out) {
  return guarded("all_gather", [&] {
    const auto size = pg->backend->getSize();
    std::vector<at::Tensor> inputs{*input};
    std::vector<std::vector<at::Tensor>> outputs(1);
    // Views into the caller's output: both backends copy each rank's part into them.
    outputs[0] = output->chunk(size, 0);
    if (static_cast<int>(outputs[0].size()) != size) {
      throw std::invalid_argument("output does not split into one chunk per rank");
    }
    auto work = pg->backend->allgather(outputs, inputs, c10d::AllgatherOptions());
    *out = new kontrast_c10d_work{std::move(work)};
  });
}

int kontrast_c10d_broadcast(
    kontrast_c10d_pg* pg,
    at::Tensor* tensor,
    int root,
    kontrast_c10d_work** out) {
  return guarded("broadcast", [&] {
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    std::vector<at::Tensor> tensors{*tensor};
    auto work = pg->backend->broadcast(tensors, opts);
    *out = new kontrast_c10d_work{std::move(work)};
  });
}

int kontrast_c10d_barrier(kontrast_c10d_pg* pg, kontrast_c10d_work** out) {
  return guarded("barrier", [&] {
    auto work = pg->backend->barrier(c10d::BarrierOptions());
    *out = new kontrast_c10d_work{std::move(work)};
  });
}

// Blocks until the work is done (for NCCL: until the current stream is ordered after it).
int kontrast_c10d_work_wait(kontrast_c10d_work* work) {
  return guarded("wait", [&] { work->work->wait(); });
}

void kontrast_c10d_work_free(kontrast_c10d_work* work) {
  try {
    delete work;
  } catch (...) {
  }
}

// Makes `grad` the gradient of `param` (tch can read a gradient but not set one; needed for
// parameters that took no part in this rank's backward pass).
int kontrast_c10d_set_grad(at::Tensor* param, const at::Tensor* grad) {
  return guarded("set_grad", [&] { param->mutable_grad() = *grad; });
}

// Proves that the c10d classes this file allocates, compiled against the stand-in gloo headers,
// match libtorch's: libtorch's own constructors run on buffers of the size this build computes,
// followed by guard bytes that must come back untouched, and inline accessors compiled here must
// read back what libtorch stored. Builds a one-rank gloo group over an in-memory store.
int kontrast_c10d_gloo_layout_check(void) {
  return guarded("gloo layout check", [&] {
    constexpr std::size_t guard = 256;
    constexpr unsigned char pattern = 0xA5;
    const auto intact = [&](const unsigned char* bytes, std::size_t size) {
      for (std::size_t i = 0; i < guard; ++i) {
        if (bytes[size + i] != pattern) {
          return false;
        }
      }
      return true;
    };
    struct Buffer {
      unsigned char* bytes;
      explicit Buffer(std::size_t n)
          : bytes(static_cast<unsigned char*>(::operator new(
                n, std::align_val_t{alignof(std::max_align_t)}))) {}
      ~Buffer() {
        ::operator delete(bytes, std::align_val_t{alignof(std::max_align_t)});
      }
    };
    using Gloo = c10d::ProcessGroupGloo;
    const auto timeout = millis(12345);

    // Options: constructed by libtorch's out-of-line constructor.
    {
      Buffer buf(sizeof(Gloo::Options) + guard);
      std::memset(buf.bytes, pattern, sizeof(Gloo::Options) + guard);
      auto* opts = new (buf.bytes) Gloo::Options(timeout);
      const bool ok = intact(buf.bytes, sizeof(Gloo::Options)) &&
          opts->timeout == timeout && opts->threads == 2 && opts->devices.empty();
      opts->~Options();
      if (!ok) {
        throw std::runtime_error(
            "ProcessGroupGloo::Options differs between this build and libtorch");
      }
    }

    // The process group itself, with a real device and rendezvous.
    auto store = c10::make_intrusive<c10d::HashStore>();
    auto opts = Gloo::Options::create(timeout);
    opts->devices.push_back(Gloo::createDeviceForHostname("127.0.0.1"));
    Buffer buf(sizeof(Gloo) + guard);
    std::memset(buf.bytes, pattern, sizeof(Gloo) + guard);
    auto* pg = new (buf.bytes) Gloo(store, 0, 1, opts);
    // Protected members read through pointers-to-member, i.e. at this build's offsets.
    struct Probe : Gloo {
      using Gloo::contexts_;
      using Gloo::pgStatus_;
      using Gloo::store_;
      using Gloo::threads_;
    };
    const bool ok = pg->getOptions().get() == opts.get() &&
        pg->getNumThreads() == 2 && pg->getRank() == 0 && pg->getSize() == 1 &&
        pg->getBackendName() == "gloo" && (pg->*&Probe::store_) != nullptr &&
        (pg->*&Probe::contexts_).size() == 1 &&
        (pg->*&Probe::threads_).size() == 2 &&
        (pg->*&Probe::pgStatus_) != nullptr;
    pg->~Gloo();
    if (!ok || !intact(buf.bytes, sizeof(Gloo))) {
      throw std::runtime_error(
          "ProcessGroupGloo differs between this build and libtorch");
    }
  });
}

} // extern "C"
