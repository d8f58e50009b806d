// Distributed checkpoints (weft/distributed/checkpoint.h). Layout of a checkpoint directory:
//   index                 "weft-dcp 1", then per tensor "tensor NAME DTYPE NDIM DIMS..." and per
//                         box "chunk NAME FILE KEY NDIM OFFSETS... SIZES..."
//   rank-<R>.safetensors  the boxes rank R saved, under the keys the index names
#include "weft/distributed/checkpoint.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "weft/autograd.h"
#include "weft/distributed/coalesced.h"
#include "weft/distributed/distributed.h"
#include "weft/ops.h"
#include "weft/serialize.h"

namespace weft::dist::checkpoint {

namespace fs = std::filesystem;

namespace {

struct Chunk {
  std::string name, file, key;
  Shape offsets, sizes;
};
struct TensorMeta {
  DType dtype = kFloat32;
  Shape shape;
  std::vector<Chunk> chunks;
};
using Index = std::map<std::string, TensorMeta>;

std::string dims_str(const Shape& s) {
  std::string out = std::to_string(s.size());
  for (int64_t d : s) out.append(" ").append(std::to_string(d));
  return out;
}

Shape read_dims(std::istringstream& in, const std::string& where) {
  size_t n = 0;
  WEFT_CHECK(in >> n && n <= 64, "distributed checkpoint: malformed dimensions in ", where);
  Shape s(n);
  for (auto& d : s) WEFT_CHECK(in >> d && d >= 0, "distributed checkpoint: malformed ", where);
  return s;
}

void check_name(const std::string& name) {
  WEFT_CHECK(!name.empty() && name.find_first_of(" \t\n") == std::string::npos,
             "distributed checkpoint: key '", name, "' is empty or contains whitespace");
}

// The index lines describing what this rank saves, and the tensors it saves under their keys.
std::string describe_own(const StateDict& state, int rank, TensorDict* out) {
  std::string lines;
  const std::string file = "rank-" + std::to_string(rank) + ".safetensors";
  for (const auto& [name, entry] : state) {
    check_name(name);
    const auto* sh = std::get_if<ShardedTensor>(&entry);
    const Tensor& t = sh ? sh->local : std::get<Tensor>(entry);
    WEFT_CHECK(t.defined(), "distributed checkpoint save: '", name, "' is undefined");
    const Shape global = sh ? sh->global_shape : t.sizes();
    const Shape offsets = sh ? sh->offsets : Shape(t.dim(), 0);
    WEFT_CHECK(offsets.size() == global.size() && t.dim() == static_cast<int64_t>(global.size()),
               "distributed checkpoint save: '", name, "' has ", t.dim(), " dimensions, offsets ",
               offsets.size(), " and a global shape of ", global.size());
    for (size_t d = 0; d < global.size(); ++d)
      WEFT_CHECK(offsets[d] >= 0 && offsets[d] + t.size(d) <= global[d],
                 "distributed checkpoint save: the box of '", name, "' on rank ", rank,
                 " leaves its global shape ", shape_str(global), " in dimension ", d);
    if (rank == 0)
      lines.append("tensor ")
          .append(name)
          .append(" ")
          .append(std::to_string(int(t.dtype())))
          .append(" ")
          .append(dims_str(global))
          .append("\n");
    if (!sh && rank != 0) continue;  // a replicated tensor is saved once, by rank 0
    const std::string key = name + "@" + std::to_string(rank);
    out->insert(key, t.to(Device::CPU()).contiguous());
    lines.append("chunk ")
        .append(name)
        .append(" ")
        .append(file)
        .append(" ")
        .append(key)
        .append(" ")
        .append(dims_str(offsets))
        .append(" ")
        .append(dims_str(t.sizes()))
        .append("\n");
  }
  return lines;
}

// Makes `tmp` the checkpoint at `dir` in one step: rename when `dir` is new, else an atomic
// exchange (renameat2 RENAME_EXCHANGE) after which the old checkpoint sits at `tmp`, removed.
void commit(const fs::path& tmp, const fs::path& dir) {
  if (!fs::exists(dir)) {
    fs::rename(tmp, dir);
  } else {
    const long rc =
        syscall(SYS_renameat2, AT_FDCWD, tmp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE);
    WEFT_CHECK(rc == 0, "distributed checkpoint save: cannot swap ", tmp.string(), " into ",
               dir.string(), ": ", std::strerror(errno));
    fs::remove_all(tmp);
  }
  const int fd = ::open(dir.parent_path().empty() ? "." : dir.parent_path().c_str(),
                        O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void write_index(const fs::path& path, const std::string& text) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << "weft-dcp 1\n" << text;
    out.flush();
    WEFT_CHECK(out.good(), "distributed checkpoint save: cannot write ", path.string());
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

Index read_index(const std::string& dir) {
  const fs::path p = fs::path(dir) / "index";
  std::ifstream in(p);
  WEFT_CHECK(in.good(), "distributed checkpoint: ", p.string(),
             " is missing: not a weft distributed checkpoint (or one whose save did not finish)");
  std::string line;
  std::getline(in, line);
  WEFT_CHECK(line == "weft-dcp 1", "distributed checkpoint: ", p.string(),
             " does not start with 'weft-dcp 1'");
  Index index;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string kind, name;
    ls >> kind >> name;
    if (kind == "tensor") {
      int dt = -1;
      WEFT_CHECK(ls >> dt && dt >= 0 && dt <= 3, "distributed checkpoint: bad dtype in ",
                 p.string());
      index[name].dtype = static_cast<DType>(dt);
      index[name].shape = read_dims(ls, p.string());
    } else {
      Chunk c{name, "", "", {}, {}};
      WEFT_CHECK(kind == "chunk" && (ls >> c.file >> c.key),
                 "distributed checkpoint: malformed line '", line, "' in ", p.string());
      c.offsets = read_dims(ls, p.string());
      c.sizes = read_dims(ls, p.string());
      WEFT_CHECK(index.count(name) && c.file.find('/') == std::string::npos,
                 "distributed checkpoint: chunk of unknown tensor '", name, "' in ", p.string());
      index[name].chunks.push_back(std::move(c));
    }
  }
  return index;
}

// Temporary directories of saves into `target` that were interrupted (a rank or the job died):
// nothing refers to them.
void remove_stale(const fs::path& target) {
  std::error_code ec;
  const std::string prefix = target.filename().string() + ".tmp-";
  for (const auto& e : fs::directory_iterator(target.parent_path(), ec))
    if (e.path().filename().string().rfind(prefix, 0) == 0) fs::remove_all(e.path(), ec);
}

// Whether the chunk's box and dst's box (at offsets) share any element.
bool overlaps(const Tensor& dst, const Shape& offsets, const Chunk& c) {
  for (size_t d = 0; d < offsets.size(); ++d)
    if (std::min(offsets[d] + dst.size(d), c.offsets[d] + c.sizes[d]) <=
        std::max(offsets[d], c.offsets[d]))
      return false;
  return true;
}

// Copies the overlap of the chunk (src) and dst's box, narrowed out of both; returns its size.
int64_t copy_overlap(Tensor& dst, const Shape& offsets, const Chunk& c, const Tensor& src) {
  Tensor from = src, to = dst;
  for (size_t d = 0; d < offsets.size(); ++d) {
    const int64_t lo = std::max(offsets[d], c.offsets[d]);
    const int64_t hi = std::min(offsets[d] + dst.size(d), c.offsets[d] + c.sizes[d]);
    from = from.narrow(static_cast<int64_t>(d), lo - c.offsets[d], hi - lo);
    to = to.narrow(static_cast<int64_t>(d), lo - offsets[d], hi - lo);
  }
  to.copy_(from.to(dst.device()));
  return to.numel();
}

}  // namespace

void save(const StateDict& state, const std::string& dir, std::shared_ptr<ProcessGroup> group) {
  if (!group) group = default_group();
  ProcessGroup& pg = *group;
  const fs::path target = fs::absolute(dir);
  // Rank 0 names the temporary directory; everyone writes into it.
  std::string tmp;
  if (pg.rank() == 0) tmp = target.string() + ".tmp-" + std::to_string(std::random_device{}());
  tmp = broadcast_string(pg, tmp, 0);
  std::string error;
  if (pg.rank() == 0) {
    std::error_code ec;
    remove_stale(target);
    fs::create_directories(tmp, ec);
    if (ec) error = "cannot create " + tmp + ": " + ec.message();
  }
  error = broadcast_string(pg, error, 0);
  WEFT_CHECK_DIST(error.empty(), "distributed checkpoint save: ", error);
  std::string lines;
  try {
    TensorDict mine;
    lines = describe_own(state, pg.rank(), &mine);
    const fs::path file = fs::path(tmp) / ("rank-" + std::to_string(pg.rank()) + ".safetensors");
    weft::save(mine, file.string());
    weft::load(file.string());  // read back: what was written is what the index will promise
  } catch (const std::exception& e) {
    lines = std::string("!error rank ") + std::to_string(pg.rank()) + ": " + e.what();
  }
  const auto all = all_gather_strings(pg, lines);
  for (const auto& l : all)
    if (l.rfind("!error", 0) == 0) error = l.substr(7);
  if (error.empty() && pg.rank() == 0) {
    try {
      std::string text;
      for (const auto& l : all) text += l;
      write_index(fs::path(tmp) / "index", text);
      commit(tmp, target);
    } catch (const std::exception& e) {
      error = std::string("rank 0 could not commit: ") + e.what();
    }
  }
  if (pg.rank() == 0 && !error.empty()) fs::remove_all(tmp);
  error = broadcast_string(pg, error, 0);
  WEFT_CHECK_DIST(error.empty(), "distributed checkpoint save to ", target.string(),
                  " failed (the previous checkpoint is untouched): ", error);
}

void load(StateDict& state, const std::string& dir) {
  const Index index = read_index(dir);
  std::map<std::string, TensorDict> files;
  NoGradGuard ng;
  for (auto& [name, entry] : state) {
    auto it = index.find(name);
    WEFT_CHECK(it != index.end(), "distributed checkpoint ", dir, " has no tensor '", name, "'");
    const TensorMeta& meta = it->second;
    auto* sh = std::get_if<ShardedTensor>(&entry);
    Tensor& dst = sh ? sh->local : std::get<Tensor>(entry);
    const Shape offsets = sh ? sh->offsets : Shape(dst.dim(), 0);
    const Shape global = sh ? sh->global_shape : dst.sizes();
    WEFT_CHECK(global == meta.shape && dst.dtype() == meta.dtype, "distributed checkpoint ", dir,
               ": '", name, "' is ", meta.dtype, " ", shape_str(meta.shape), " there, but ",
               dst.dtype(), " ", shape_str(global), " here");
    int64_t covered = 0;
    for (const Chunk& c : meta.chunks) {
      if (!overlaps(dst, offsets, c)) continue;
      auto f = files.find(c.file);
      if (f == files.end())
        f = files.emplace(c.file, weft::load((fs::path(dir) / c.file).string())).first;
      const Tensor* src = f->second.find(c.key);
      WEFT_CHECK(src && src->sizes() == c.sizes, "distributed checkpoint ", dir, ": ", c.file,
                 " lacks '", c.key, "' of the shape its index promises");
      covered += copy_overlap(dst, offsets, c, *src);
    }
    WEFT_CHECK(covered == dst.numel(), "distributed checkpoint ", dir, ": the saved boxes of '",
               name, "' cover ", covered, " of the ", dst.numel(), " elements asked for");
  }
}

std::map<std::string, TensorInfo> read_metadata(const std::string& dir) {
  std::map<std::string, TensorInfo> out;
  for (const auto& [name, meta] : read_index(dir)) out[name] = TensorInfo{meta.dtype, meta.shape};
  return out;
}

std::map<std::string, Tensor> load_full(const std::string& dir) {
  const Index index = read_index(dir);
  StateDict state;
  for (const auto& [name, meta] : index) state[name] = zeros(meta.shape, {.dtype = meta.dtype});
  load(state, dir);
  std::map<std::string, Tensor> out;
  for (auto& [name, e] : state) out[name] = std::get<Tensor>(e);
  return out;
}

void consolidate(const std::string& dir, const std::string& safetensors_path) {
  TensorDict all;
  for (auto& [name, t] : load_full(dir)) all.insert(name, t);
  weft::save(all, safetensors_path);
}

}  // namespace weft::dist::checkpoint
