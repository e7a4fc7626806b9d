// What tch 0.24 does not bind, against the same libtorch: autocast with a chosen dtype on any
// device type, the TF32 switches, channels_last memory format, and whether a CUDA device computes
// in bf16. Compiled by build.rs; its only caller is src/shim/mod.rs.
//
// Every function returns NULL on success or a heap-allocated message (free it with
// ipirm_shim_free_error) when libtorch threw: no C++ exception crosses into Rust.
//
// The includes are kept narrow for compile time: ATen/core/Tensor.h for at::Tensor (tch's
// C_tensor is an at::Tensor*), ATen/Context.h for the TF32 switches and the CUDA hooks. The
// autocast functions are declared here, exactly as ATen/autocast_mode.h of libtorch 2.11 declares
// them, because that header pulls in all of ATen's operators (several seconds more per build).
#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <c10/core/DeviceGuard.h>
#include <c10/util/Logging.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

namespace at::autocast {
TORCH_API bool is_autocast_enabled(at::DeviceType device_type);
TORCH_API void set_autocast_enabled(at::DeviceType device_type, bool enabled);
TORCH_API at::ScalarType get_autocast_dtype(at::DeviceType device_type);
TORCH_API void set_autocast_dtype(at::DeviceType device_type, at::ScalarType dtype);
TORCH_API void clear_cache();
TORCH_API int increment_nesting();
TORCH_API int decrement_nesting();
TORCH_API bool is_autocast_cache_enabled();
TORCH_API void set_autocast_cache_enabled(bool enabled);
}  // namespace at::autocast

namespace {

char* copy_message(const char* what) {
  size_t n = std::strlen(what);
  char* out = static_cast<char*>(std::malloc(n + 1));
  if (out != nullptr) std::memcpy(out, what, n + 1);
  return out;
}

template <typename F>
char* guarded(F&& f) {
  try {
    f();
    return nullptr;
  } catch (const c10::Error& e) {
    return copy_message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return copy_message(e.what());
  } catch (...) {
    return copy_message("unknown C++ exception");
  }
}

at::DeviceType device_type(int d) {
  switch (d) {
    case 0:
      return at::kCPU;
    case 1:
      return at::kCUDA;
    default:
      throw std::invalid_argument("ipirm shim: device type must be 0 (CPU) or 1 (CUDA), got " +
                                  std::to_string(d));
  }
}

at::MemoryFormat memory_format(int f) {
  switch (f) {
    case 0:
      return at::MemoryFormat::Contiguous;
    case 2:
      return at::MemoryFormat::ChannelsLast;
    default:
      throw std::invalid_argument(
          "ipirm shim: memory format must be 0 (contiguous) or 2 (channels_last), got " +
          std::to_string(f));
  }
}

}  // namespace

extern "C" {

void ipirm_shim_free_error(char* e) { std::free(e); }

// c10::Error's message ends in the C++ frames where it was raised: tch's error texts and c10d's
// own retry warnings print them (twenty lines of addresses for a rank that cannot connect). An
// empty fetcher leaves the message and its "Exception raised from <function> at <file:line>".
void ipirm_quiet_cpp_backtraces() {
  c10::SetStackTraceFetcher([]() -> std::string { return std::string(); });
}

// --- autocast: the state torch.autocast saves on entry and restores on exit.
char* ipirm_autocast_state(int device, bool* enabled, int* dtype, bool* cache) {
  return guarded([&] {
    auto d = device_type(device);
    *enabled = at::autocast::is_autocast_enabled(d);
    *dtype = static_cast<int>(at::autocast::get_autocast_dtype(d));
    *cache = at::autocast::is_autocast_cache_enabled();
  });
}

char* ipirm_autocast_set(int device, bool enabled, int dtype, bool cache) {
  return guarded([&] {
    auto d = device_type(device);
    auto t = static_cast<at::ScalarType>(dtype);
    if (t != at::kBFloat16 && t != at::kHalf && t != at::kFloat) {
      throw std::invalid_argument("ipirm shim: autocast dtype must be bf16, fp16 or fp32");
    }
    at::autocast::set_autocast_enabled(d, enabled);
    at::autocast::set_autocast_dtype(d, t);
    at::autocast::set_autocast_cache_enabled(cache);
  });
}

char* ipirm_autocast_increment_nesting(int* depth) {
  return guarded([&] { *depth = at::autocast::increment_nesting(); });
}

char* ipirm_autocast_decrement_nesting(int* depth) {
  return guarded([&] { *depth = at::autocast::decrement_nesting(); });
}

char* ipirm_autocast_clear_cache() {
  return guarded([] { at::autocast::clear_cache(); });
}

// --- TF32: the legacy setters keep the legacy flags and the per-backend fp32 precision of
// torch >= 2.9 in step (mixing the two APIs makes libtorch refuse to read either back).
char* ipirm_tf32_get(bool* matmul, bool* cudnn_conv) {
  return guarded([&] {
    auto& ctx = at::globalContext();
    *matmul = ctx.float32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL) ==
              at::Float32Precision::TF32;
    *cudnn_conv = ctx.float32Precision(at::Float32Backend::CUDA, at::Float32Op::CONV) ==
                  at::Float32Precision::TF32;
  });
}

char* ipirm_tf32_set(bool matmul, bool cudnn) {
  return guarded([&] {
    auto& ctx = at::globalContext();
    ctx.setAllowTF32CuBLAS(matmul);
    ctx.setAllowTF32CuDNN(cudnn);
  });
}

// --- memory format.
char* ipirm_contiguous(const at::Tensor* t, int format, at::Tensor** out) {
  return guarded([&] { *out = new at::Tensor(t->contiguous(memory_format(format))); });
}

char* ipirm_is_contiguous(const at::Tensor* t, int format, bool* out) {
  return guarded([&] { *out = t->is_contiguous(memory_format(format)); });
}

// In place for a parameter: its data is replaced by a copy in `format` (what
// nn.Module.to(memory_format=...) does), keeping the tensor, its autograd identity and whatever
// else shares it (the VarStore's entry, the optimizer's list).
char* ipirm_set_memory_format_(at::Tensor* t, int format) {
  return guarded([&] {
    auto f = memory_format(format);
    if (!t->is_contiguous(f)) t->set_data(t->contiguous(f));
  });
}

// --- CUDA: whether device `index` computes in bf16 natively (compute capability >= 8, as
// libtorch's CUDA hooks report it for cuDNN). False where libtorch has no CUDA backend.
char* ipirm_cuda_bf16_supported(int index, bool* out) {
  return guarded([&] {
    const auto& hooks = at::detail::getCUDAHooks();
    *out = false;
    if (!hooks.hasCUDA() || index < 0 || index >= hooks.deviceCount()) return;
    c10::DeviceGuard guard(c10::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index)));
    *out = hooks.supportsBFloat16ConvolutionWithCuDNNv8();
  });
}

}  // extern "C"
