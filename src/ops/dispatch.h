// Internal: DispatchStub, the one place where an op picks its kernel for a device (PyTorch's
// DispatchStub). Guarantees: a stub call is one indirect call through a table filled before
// main() by static registrars; a device type with no kernel throws weft::Error naming the op.
// Calling a stub needs nothing but this header, so the tensor core can call stubs too.
#pragma once

// The rules every op and kernel follow are Note [Device dispatch] in docs/ARCHITECTURE.md:
// stubs declared and defined under src/ops/stubs/, kernels registered from src/ops/cpu/ and
// src/ops/cuda/, no device branches in op files, a missing kernel an error naming the op.

#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "weft/cuda.h"
#include "weft/device.h"
#include "weft/error.h"

namespace weft::ops {

inline constexpr size_t kDeviceTypes = 2;  // DeviceType::CPU, DeviceType::CUDA

// What every stub has whatever its kernel type: a name for messages and which devices have a
// kernel.
class DispatchStubBase {
 public:
  constexpr explicit DispatchStubBase(const char* name) : name_(name) {}
  DispatchStubBase(const DispatchStubBase&) = delete;
  DispatchStubBase& operator=(const DispatchStubBase&) = delete;

  // The op's name: the stub's identifier without its "_stub" suffix.
  std::string name() const {
    std::string n = name_;
    const std::string suffix = "_stub";
    if (n.size() > suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
      n.resize(n.size() - suffix.size());
    return n;
  }
  bool has_kernel(DeviceType t) const { return has_[index(t)]; }

 protected:
  static constexpr size_t index(DeviceType t) { return static_cast<size_t>(t); }
  void mark(DeviceType t) { has_[index(t)] = true; }
  [[noreturn, gnu::cold, gnu::noinline]] void missing_kernel(Device d) const {
    const bool cuda = d.is_cuda();
    WEFT_ERROR(name(), ": no kernel for ", cuda ? "cuda" : "cpu", " tensors",
               cuda && !weft::cuda::is_built() ? " (this build of weft has no CUDA backend)" : "");
  }

 private:
  const char* name_;
  bool has_[kDeviceTypes] = {};
};

template <typename FnPtr>
class DispatchStub;

// A stub for kernels of type R(Args...): one pointer per device type.
template <typename R, typename... Args>
class DispatchStub<R (*)(Args...)> : public DispatchStubBase {
 public:
  using Fn = R (*)(Args...);
  constexpr explicit DispatchStub(const char* name) : DispatchStubBase(name) {}

  // Runs the kernel of d's device type (every index of a type shares its kernel). The kernel's
  // own parameter types, so that arguments convert (and braced lists build) at the call.
  R operator()(Device d, Args... args) const {
    const Fn fn = kernels_[index(d.type)];
    if (!fn) [[unlikely]]
      missing_kernel(d);
    return fn(std::forward<Args>(args)...);
  }
  void register_kernel(DeviceType t, Fn fn) {
    kernels_[index(t)] = fn;
    mark(t);
  }

 private:
  Fn kernels_[kDeviceTypes] = {};
};

// Every stub of libweft, in static-initialisation order (src/ops/dispatch.cpp).
std::vector<const DispatchStubBase*>& dispatch_stubs();

namespace detail {
struct StubListing {
  explicit StubListing(const DispatchStubBase* stub) { dispatch_stubs().push_back(stub); }
};
template <typename Stub>
struct KernelRegistrar {
  KernelRegistrar(Stub& stub, DeviceType t, typename Stub::Fn fn) { stub.register_kernel(t, fn); }
};
}  // namespace detail

}  // namespace weft::ops

#define WEFT_DISPATCH_CONCAT_(a, b) a##b
#define WEFT_DISPATCH_CONCAT(a, b) WEFT_DISPATCH_CONCAT_(a, b)

// In a stub header: `WEFT_DECLARE_DISPATCH(Tensor (*)(const Tensor&), relu_stub);`.
#define WEFT_DECLARE_DISPATCH(fn_type, name) extern ::weft::ops::DispatchStub<fn_type> name

// Once, in the stub header's .cpp (at namespace scope of the declaration). Constant-initialised,
// so kernels may register into it from any object file's static initialisers.
#define WEFT_DEFINE_DISPATCH(name)                                                     \
  constinit decltype(name) name{#name};                                                \
  [[maybe_unused]] static const ::weft::ops::detail::StubListing WEFT_DISPATCH_CONCAT( \
      weft_stub_listing_, __LINE__) {                                                  \
    &name                                                                              \
  }

// In a kernel file: `WEFT_REGISTER_DISPATCH(ops::relu_stub, CPU, &relu_kernel);` (the device
// type's enumerator: CPU or CUDA).
#define WEFT_REGISTER_DISPATCH(stub, device_type, fn)                 \
  [[maybe_unused]] static const ::weft::ops::detail::KernelRegistrar< \
      std::remove_reference_t<decltype(stub)>>                        \
  WEFT_DISPATCH_CONCAT(weft_kernel_registrar_, __LINE__) {            \
    stub, ::weft::DeviceType::device_type, fn                         \
  }
