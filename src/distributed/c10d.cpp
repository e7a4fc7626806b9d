// PyTorch's distributed engine (c10d) for ipirm: a TCPStore rendezvous and a Gloo process group,
// with the four collectives data-parallel training needs. Compiled by build.rs against the
// libtorch the crate links; Gloo's headers come from Debian's libgloo-dev (the torch wheel ships
// libtorch's Gloo build but not its headers). Without them (IPIRM_NO_GLOO) every entry point
// returns an error saying so.
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

char* ipirm_dist_new(const char*, int, int, int, int64_t, int64_t, IpirmGroup**) { return no_gloo(); }
void ipirm_dist_drop(IpirmGroup*) {}
char* ipirm_dist_allreduce_sum(IpirmGroup*, at::Tensor*) { return no_gloo(); }
char* ipirm_dist_broadcast(IpirmGroup*, at::Tensor*, int) { return no_gloo(); }
char* ipirm_dist_allgather(IpirmGroup*, const at::Tensor*, at::Tensor**) { return no_gloo(); }
char* ipirm_dist_barrier(IpirmGroup*) { return no_gloo(); }

#else

struct IpirmGroup {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
};

// Rendezvous at `host:port` (rank 0 serves the store there) within `connect_timeout_ms`, then a
// Gloo group whose collectives wait at most `op_timeout_ms`.
char* ipirm_dist_new(const char* host, int port, int rank, int world, int64_t connect_timeout_ms,
                     int64_t op_timeout_ms, IpirmGroup** out) {
  try {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<uint16_t>(port);
    opts.isServer = rank == 0;
    opts.numWorkers = world;
    opts.waitWorkers = true;
    opts.timeout = std::chrono::milliseconds(connect_timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    // Collectives may wait on rank 0's solo work (a maximize step, the kNN monitor).
    store->setTimeout(std::chrono::milliseconds(op_timeout_ms));
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

void ipirm_dist_drop(IpirmGroup* g) { delete g; }

char* ipirm_dist_allreduce_sum(IpirmGroup* g, at::Tensor* t) {
  try {
    std::vector<at::Tensor> ts{*t};
    g->pg->allreduce(ts)->wait();
    return nullptr;
  } catch (const std::exception& e) {
    return error(e.what());
  }
}

char* ipirm_dist_broadcast(IpirmGroup* g, at::Tensor* t, int root) {
  try {
    std::vector<at::Tensor> ts{*t};
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
    std::vector<at::Tensor> inputs{t->contiguous()};
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
