#include "distributed/op_record.h"

#include <cstdio>

namespace weft::dist::detail {

namespace {

const char* kind_name(OpKind k) {
  switch (k) {
    case OpKind::ALLREDUCE:
      return "allreduce";
    case OpKind::BROADCAST:
      return "broadcast";
    case OpKind::ALLGATHER:
      return "allgather";
    case OpKind::REDUCE_SCATTER:
      return "reduce_scatter";
    case OpKind::BARRIER:
      return "barrier";
    case OpKind::REDUCE:
      return "reduce";
    case OpKind::GATHER:
      return "gather";
    case OpKind::SCATTER:
      return "scatter";
    case OpKind::ALLGATHER_INTO_TENSOR:
      return "allgather_into_tensor";
    case OpKind::REDUCE_SCATTER_TENSOR:
      return "reduce_scatter_tensor";
    case OpKind::ALLTOALL_BASE:
      return "alltoall_base";
    case OpKind::ALLTOALL:
      return "alltoall";
    case OpKind::NONE:
      break;
  }
  return "unknown op";
}

// A fingerprint starts with this, so that a rank exchanging something else is seen as such.
constexpr int64_t kMagic = 0x77656674;  // "weft"

}  // namespace

OpRecord OpRecord::of(OpKind kind, const std::vector<Tensor>& tensors, int reduce, int root) {
  OpRecord r;
  r.kind = kind;
  r.reduce = static_cast<int8_t>(reduce);
  r.root = root;
  r.ntensors = static_cast<int32_t>(tensors.size());
  for (const Tensor& t : tensors) {
    if (!t.defined()) continue;
    r.numel += t.numel();
    r.bytes += static_cast<int64_t>(t.nbytes());
  }
  if (!tensors.empty() && tensors[0].defined()) {
    const Tensor& t = tensors[0];
    r.dtype = static_cast<int8_t>(t.dtype());
    r.ndim = static_cast<int8_t>(t.dim());
    for (int d = 0; d < std::min<int>(t.dim(), kMaxDims); ++d) r.shape[d] = t.sizes()[d];
  }
  return r;
}

std::string OpRecord::describe() const {
  std::string args;
  auto add = [&](const std::string& s) { args += (args.empty() ? "" : ", ") + s; };
  if (reduce >= 0) add(to_string(static_cast<ReduceOp>(reduce)));
  if (root >= 0) add("root " + std::to_string(root));
  if (dtype >= 0) {  // as the backends' own messages write it: "float32 (4, 3)"
    std::string shp =
        shape_str(Shape(shape.begin(), shape.begin() + std::min<int>(ndim, kMaxDims)));
    if (ndim > kMaxDims) shp.insert(shp.size() - 1, ", ...");
    add(std::string(dtype_name(static_cast<DType>(dtype))) + " " + shp);
  }
  if (ntensors > 1) add(std::to_string(ntensors) + " tensors");
  const std::string name = kind_name(kind);
  return args.empty() ? name : name + "(" + args + ")";
}

std::string OpRecord::describe_with_size() const {
  return kind == OpKind::BARRIER ? describe() : describe() + ", " + format_bytes(bytes);
}

std::array<int64_t, OpRecord::kFingerprintLen> OpRecord::fingerprint(int64_t seq) const {
  std::array<int64_t, kFingerprintLen> fp{};
  fp[0] = kMagic;
  fp[1] = seq;
  fp[2] = static_cast<int64_t>(kind);
  fp[3] = reduce;
  fp[4] = root;
  fp[5] = dtype;
  fp[6] = (static_cast<int64_t>(ntensors) << 8) | static_cast<uint8_t>(ndim);
  fp[7] = numel;
  fp[8] = bytes;
  for (int d = 0; d < kMaxDims; ++d) fp[9 + d] = shape[d];
  return fp;
}

OpRecord OpRecord::from_fingerprint(const int64_t* fp) {
  OpRecord r;
  if (fp[0] != kMagic) return r;  // kind NONE: "unknown op"
  r.kind = static_cast<OpKind>(fp[2]);
  r.reduce = static_cast<int8_t>(fp[3]);
  r.root = static_cast<int32_t>(fp[4]);
  r.dtype = static_cast<int8_t>(fp[5]);
  r.ntensors = static_cast<int32_t>(fp[6] >> 8);
  r.ndim = static_cast<int8_t>(fp[6] & 0xff);
  r.numel = fp[7];
  r.bytes = fp[8];
  for (int d = 0; d < kMaxDims; ++d) r.shape[d] = fp[9 + d];
  return r;
}

std::string format_bytes(int64_t bytes) {
  if (bytes < 1024) return std::to_string(bytes) + " B";
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes) / 1024;
  int u = 0;
  while (v >= 1024 && u < 3) v /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace weft::dist::detail
