// PyTorch's distributed engine (c10d) for ipirm: a TCPStore rendezvous and a process group (Gloo,
// or NCCL for CUDA tensors), with the collectives data-parallel training needs, and c10d's
// Reducer (DistributedDataParallel's gradient buckets, summed while the backward pass runs). Compiled by
// build.rs against the libtorch the crate links; Gloo's headers come from Debian's libgloo-dev
// (the torch wheel ships libtorch's Gloo build but not its headers). Without them
// (IPIRM_NO_GLOO) every entry point returns an error saying so. NCCL's (IPIRM_NCCL) come from
// the venv: nccl.h from the nvidia-nccl wheel torch installs, the CUDA headers its include chain
// needs from nvidia-cuda-crt and nvidia-cuda-cccl (scripts/setup.sh); built without them, asking
// for NCCL is an error that says so.
//
// Convention (as src/shim): each function returns NULL on success or a malloc'd message that
// the caller frees (shim::take_error); tensors cross as tch's `at::Tensor*`.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include <torch/csrc/autograd/custom_function.h>
#include <torch/torch.h>

#ifndef IPIRM_NO_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>
#endif
#ifdef IPIRM_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace {
char* error(const std::string& msg) { return strdup(msg.c_str()); }
// A libtorch error's message without the frames it carries (as src/shim's).
char* error(const std::exception& e) {
  auto* c10 = dynamic_cast<const c10::Error*>(&e);
  return error(c10 != nullptr ? c10->what_without_backtrace() : e.what());
}
}  // namespace

extern "C" {

#ifdef IPIRM_NO_GLOO

struct IpirmGroup {};

static char* no_gloo() {
  return error(
      "this ipirm was built without Gloo's headers, so it cannot train on several processes: "
      "install Debian's libgloo-dev (scripts/setup.sh does) and rebuild");
}

char* ipirm_dist_new(const char*, int, int, int, int, int64_t, int64_t, IpirmGroup**) {
  return no_gloo();
}
void ipirm_dist_drop(IpirmGroup*) {}
char* ipirm_dist_allreduce_sum(IpirmGroup*, at::Tensor*) { return no_gloo(); }
char* ipirm_dist_broadcast(IpirmGroup*, at::Tensor*, int) { return no_gloo(); }
char* ipirm_dist_allgather(IpirmGroup*, const at::Tensor*, at::Tensor**) { return no_gloo(); }
char* ipirm_dist_barrier(IpirmGroup*) { return no_gloo(); }
char* ipirm_dist_allreduce_sum_grad(IpirmGroup*, const at::Tensor*, at::Tensor**) {
  return no_gloo();
}
struct IpirmReducer {};
char* ipirm_reducer_new(IpirmGroup*, at::Tensor* const*, int64_t, int64_t, int64_t, IpirmReducer**) {
  return no_gloo();
}
char* ipirm_reducer_arm(IpirmReducer*) { return no_gloo(); }
void ipirm_reducer_drop(IpirmReducer*) {}

#else

// Never changed after it is made, so it may be used from any thread: c10d's Store and Backend
// take collectives from several threads (DistributedDataParallel calls them from autograd's).
struct IpirmGroup {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> pg;
  bool nccl;
  // The backend as a c10d ProcessGroup (what the Reducer takes), which routes a collective by its
  // tensors' device: NCCL takes CUDA tensors; Gloo takes CPU tensors and CUDA ones (through host
  // copies).
  c10::intrusive_ptr<c10d::ProcessGroup> group;
};

static IpirmGroup* new_group(c10::intrusive_ptr<c10d::Store> store,
                             c10::intrusive_ptr<c10d::Backend> pg, bool nccl) {
  auto group = c10::make_intrusive<c10d::ProcessGroup>(store, pg->getRank(), pg->getSize());
  using Type = c10d::ProcessGroup::BackendType;
  auto type = nccl ? Type::NCCL : Type::GLOO;
  if (!nccl) group->setBackend(c10::DeviceType::CPU, type, pg);
  group->setBackend(c10::DeviceType::CUDA, type, pg);
  group->setDefaultBackend(type);
  return new IpirmGroup{store, pg, nccl, group};
}

static const char* backend_name(int backend) { return backend == 1 ? "nccl" : "gloo"; }

// Every rank writes its backend into the store and reads every other rank's: ranks that would
// build different process groups stop here, each naming the first rank that differs, instead of
// hanging in their first collective.
static void agree_on_backend(c10d::Store& store, int rank, int world, int backend) {
  std::string mine = backend_name(backend);
  store.set("ipirm/backend/" + std::to_string(rank), std::vector<uint8_t>(mine.begin(), mine.end()));
  for (int r = 0; r < world; r++) {
    auto v = store.get("ipirm/backend/" + std::to_string(r));
    std::string theirs(v.begin(), v.end());
    if (theirs != mine) {
      throw std::runtime_error("rank " + std::to_string(r) + " asks for --dist-backend " + theirs +
                               ", this rank (" + std::to_string(rank) + ") for " + mine +
                               ": every rank must use the same backend");
    }
  }
}

// Rendezvous at `host:port` (rank 0 serves the store there) within `connect_timeout_ms`, then a
// process group of `backend` (0 Gloo, 1 NCCL) whose collectives wait at most `op_timeout_ms`.
char* ipirm_dist_new(const char* host, int port, int rank, int world, int backend,
                     int64_t connect_timeout_ms, int64_t op_timeout_ms, IpirmGroup** out) {
  try {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<uint16_t>(port);
    opts.isServer = rank == 0;
    opts.numWorkers = world;
    opts.waitWorkers = true;
    opts.timeout = std::chrono::milliseconds(connect_timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    // Collectives may wait on rank 0's solo work (a maximize step, the kNN monitor).
    agree_on_backend(*store, rank, world, backend);
    store->setTimeout(std::chrono::milliseconds(op_timeout_ms));
    if (backend == 1) {
#ifdef IPIRM_NCCL
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = std::chrono::milliseconds(op_timeout_ms);
      auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, o);
      *out = new_group(store, pg, true);
      return nullptr;
#else
      return error(
          "this ipirm was built without NCCL's headers: run scripts/setup.sh (it installs them "
          "into the venv) and rebuild, or use --dist-backend gloo");
#endif
    }
    auto o = c10d::ProcessGroupGloo::Options::create();
    o->timeout = std::chrono::milliseconds(op_timeout_ms);
    const char* iface = std::getenv("GLOO_SOCKET_IFNAME");
    std::string h(host);
    if (iface != nullptr && iface[0] != '\0') {
      o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
    } else if (h == "localhost" || h.rfind("127.", 0) == 0) {
      o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, o);
    *out = new_group(store, pg, false);
    return nullptr;
  } catch (const std::exception& e) {
    return error(e);
  }
}

// The group's orderly end (ProcessGroupNCCL warns at exit without it and may leak its
// communicators; Gloo's is a no-op), then its memory.
void ipirm_dist_drop(IpirmGroup* g) {
  try {
    g->pg->shutdown();
  } catch (const std::exception&) {
    // Ending anyway: a rank whose peers are gone cannot shut down cleanly.
  }
  delete g;
}

// The collectives work on detached aliases of their tensors (same storage, no autograd): with
// CUDA tensors, Gloo copies results back from host buffers in its own threads, where grad mode
// is on, and an in-place copy into a parameter (a leaf that requires grad) would be refused.
char* ipirm_dist_allreduce_sum(IpirmGroup* g, at::Tensor* t) {
  try {
    std::vector<at::Tensor> ts{t->detach()};
    g->pg->allreduce(ts)->wait();
    return nullptr;
  } catch (const std::exception& e) {
    return error(e);
  }
}

char* ipirm_dist_broadcast(IpirmGroup* g, at::Tensor* t, int root) {
  try {
    std::vector<at::Tensor> ts{t->detach()};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    g->pg->broadcast(ts, o)->wait();
    return nullptr;
  } catch (const std::exception& e) {
    return error(e);
  }
}

// Every rank's `t` (same shape on all), stacked along a new first dimension: world × shape.
char* ipirm_dist_allgather(IpirmGroup* g, const at::Tensor* t, at::Tensor** out) {
  try {
    int world = g->pg->getSize();
    std::vector<at::Tensor> outs;
    for (int i = 0; i < world; i++) outs.push_back(at::empty_like(*t));
    std::vector<std::vector<at::Tensor>> outputs{outs};
    std::vector<at::Tensor> inputs{t->detach().contiguous()};
    g->pg->allgather(outputs, inputs)->wait();
    *out = new at::Tensor(at::stack(outputs[0], 0));
    return nullptr;
  } catch (const std::exception& e) {
    return error(e);
  }
}

char* ipirm_dist_barrier(IpirmGroup* g) {
  try {
    g->pg->barrier()->wait();
    return nullptr;
  } catch (const std::exception& e) {
    return error(e);
  }
}

}  // extern "C"

namespace {
// The sum over the ranks of a tensor, as an autograd function: its backward sums the incoming
// gradients over the ranks the same way (the derivative of every rank's output with respect to
// every rank's input is the identity). What SyncBatchNorm's statistics need (model.sync_bn):
// written with it, plain tensor operations give SyncBatchNorm's gradients.
struct AllReduceSum : public torch::autograd::Function<AllReduceSum> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            int64_t group) {
    ctx->saved_data["group"] = group;
    std::vector<at::Tensor> ts{x.detach().contiguous().clone()};
    reinterpret_cast<IpirmGroup*>(group)->pg->allreduce(ts)->wait();
    return ts[0];
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto group = reinterpret_cast<IpirmGroup*>(ctx->saved_data["group"].toInt());
    std::vector<at::Tensor> ts{grads[0].detach().contiguous().clone()};
    group->pg->allreduce(ts)->wait();
    return {ts[0], at::Tensor()};
  }
};
}  // namespace

extern "C" {

// `*out` = the sum over the ranks of `t`, differentiably (see AllReduceSum).
char* ipirm_dist_allreduce_sum_grad(IpirmGroup* g, const at::Tensor* t, at::Tensor** out) {
  try {
    *out = new at::Tensor(AllReduceSum::apply(*t, reinterpret_cast<int64_t>(g)));
    return nullptr;
  } catch (const std::exception& e) {
    return error(e);
  }
}

}  // extern "C"

namespace {
// A bucket's gradients summed over the ranks (no division by the world size: every rank's
// gradient is its own rows' share of the global batch's loss, see src/distributed/mod.rs).
// The Reducer divides only when no hook is registered.
class SumOverRanks
    : public c10d::CppCommHookInterface<c10::intrusive_ptr<c10d::ProcessGroup>> {
 public:
  using CppCommHookInterface::CppCommHookInterface;
  c10::intrusive_ptr<c10::ivalue::Future> runHook(c10d::GradBucket& bucket) override {
    std::vector<at::Tensor> ts{bucket.getBufferRef()};
    return state_->allreduce(ts)->getFuture();
  }
};
}  // namespace

extern "C" {

struct IpirmReducer {
  std::unique_ptr<c10d::Reducer> reducer;
};

// c10d's Reducer over `params` (in the same order on every rank), as DistributedDataParallel
// builds it: buckets of at most `cap` bytes in the parameters' order, the first (the first
// parameters, whose gradients come last) at most `first_cap`, then reversed so that buckets are
// summed in the order backward fills them; every parameter takes part in every armed backward
// (no search for unused ones).
char* ipirm_reducer_new(IpirmGroup* g, at::Tensor* const* params, int64_t n, int64_t cap,
                        int64_t first_cap, IpirmReducer** out) {
  try {
    std::vector<at::Tensor> ps;
    for (int64_t i = 0; i < n; i++) ps.push_back(*params[i]);
    std::vector<bool> sparse(ps.size(), false);
    auto [indices, limits] = c10d::compute_bucket_assignment_by_size(
        ps, {static_cast<size_t>(first_cap), static_cast<size_t>(cap)}, sparse);
    std::reverse(indices.begin(), indices.end());
    std::reverse(limits.begin(), limits.end());
    std::vector<int64_t> caps(limits.begin(), limits.end());
    auto pg = g->group;
    auto r = std::make_unique<c10d::Reducer>(
        ps, std::move(indices), pg, sparse, cap, /*find_unused_parameters=*/false,
        /*gradient_as_bucket_view=*/false, std::unordered_map<size_t, std::string>{}, first_cap,
        /*skip_all_reduce_unused_params=*/false, /*use_python_reducer=*/false, caps);
    r->register_comm_hook(std::make_unique<SumOverRanks>(pg));
    *out = new IpirmReducer{std::move(r)};
    return nullptr;
  } catch (const std::exception& e) {
    return error(e);
  }
}

// Arms the Reducer for the next backward pass, as DDP's forward does: after the first armed
// backward, the buckets are rebuilt once in the order the gradients came (rank 0's order,
// broadcast); then every parameter's gradient, once accumulated, is copied into its bucket and
// a full bucket is summed over the ranks while backward goes on; at the end of that backward the
// sums are written back into the gradients. A backward that is not armed only accumulates.
char* ipirm_reducer_arm(IpirmReducer* r) {
  try {
    r->reducer->rebuild_buckets();
    r->reducer->prepare_for_forward();
    r->reducer->prepare_for_backward({});
    return nullptr;
  } catch (const std::exception& e) {
    return error(e);
  }
}

void ipirm_reducer_drop(IpirmReducer* r) {
  try {
    delete r;
  } catch (const std::exception&) {
    // The Reducer's destructor may throw (it removes its hooks); the run is ending anyway.
  }
}

#endif
}
