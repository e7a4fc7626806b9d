// PyTorch's distributed engine (c10d) for ipirm: a TCPStore rendezvous and a process group (Gloo,
// or NCCL for CUDA tensors), with the four collectives data-parallel training needs. Compiled by
// build.rs against the libtorch the crate links; Gloo's headers come from Debian's libgloo-dev
// (the torch wheel ships libtorch's Gloo build but not its headers). Without them
// (IPIRM_NO_GLOO) every entry point returns an error saying so. NCCL's (IPIRM_NCCL) come from
// the venv: nccl.h from the nvidia-nccl wheel torch installs, the CUDA headers its include chain
// needs from nvidia-cuda-crt and nvidia-cuda-cccl (scripts/setup.sh); built without them, asking
// for NCCL is an error that says so.
//
// Convention (as src/shim): each function returns NULL on success or a malloc'd message that
// the caller frees (shim::take_error); tensors cross as tch's `at::Tensor*`.
#include <cstdlib>
#include <cstring>
#include <string>

#include <torch/torch.h>

#ifndef IPIRM_NO_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
#ifdef IPIRM_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace {
char* error(const std::string& msg) { return strdup(msg.c_str()); }
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

#else

struct IpirmGroup {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> pg;
};

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
      *out = new IpirmGroup{store, pg};
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
    *out = new IpirmGroup{store, pg};
    return nullptr;
  } catch (const std::exception& e) {
    return error(e.what());
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
    return error(e.what());
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
    return error(e.what());
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
    return error(e.what());
  }
}

char* ipirm_dist_barrier(IpirmGroup* g) {
  try {
    g->pg->barrier()->wait();
    return nullptr;
  } catch (const std::exception& e) {
    return error(e.what());
  }
}

#endif
}
