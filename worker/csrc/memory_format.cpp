// Memory layout of tensors, used by worker/src/model/memory_format.rs: tch has no API for
// ATen's memory formats, and convolutions run markedly faster on NHWC ("channels_last") data
// (oneDNN on the CPU, tensor cores on CUDA). Errors follow guarded.h, read back through
// kontrast_memory_format_last_error().
#include <string>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "guarded.h"

namespace {
thread_local std::string last_error;
}  // namespace

extern "C" {

const char* kontrast_memory_format_last_error() { return last_error.c_str(); }

// Re-lays `tensor` (4-d) out as channels_last in place, keeping its identity (and so the
// autograd leaf, its name in the module and every shallow copy): what `module.to(memory_format=
// torch.channels_last)` does to parameters in PyTorch.
int kontrast_set_channels_last(at::Tensor* tensor) noexcept {
  return kontrast::guarded(last_error, "channels_last", [&] {
    TORCH_CHECK(tensor->dim() == 4, "channels_last needs a 4-d tensor, not ", tensor->dim(), "-d");
    c10::AutoGradMode no_grad(false);
    tensor->set_data(tensor->contiguous(at::MemoryFormat::ChannelsLast));
  });
}

// 1 when `tensor` is laid out channels_last (and 4-d), else 0.
int kontrast_is_channels_last(const at::Tensor* tensor, int* out) noexcept {
  return kontrast::guarded(last_error, "is_channels_last", [&] {
    *out = tensor->dim() == 4 && tensor->is_contiguous(at::MemoryFormat::ChannelsLast) ? 1 : 0;
  });
}

}  // extern "C"
