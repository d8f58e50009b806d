#include "weft/nn/parallel/scatter_gather.h"

#include "weft/ops.h"

namespace weft::nn::parallel {

std::vector<std::vector<Tensor>> scatter(const std::vector<Tensor>& inputs,
                                         const std::vector<Device>& devices, int64_t dim) {
  WEFT_CHECK(!devices.empty(), "scatter: no devices given");
  WEFT_CHECK(!inputs.empty(), "scatter: no inputs given");
  size_t n = devices.size();
  std::vector<std::vector<Tensor>> chunks;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& x = inputs[k];
    WEFT_CHECK(x.dim() > 0, "scatter: input ", k, " is 0-dimensional and cannot be split");
    WEFT_CHECK(x.size(dim) > 0, "scatter: input ", k, " ", x.str(), " is empty along dim ", dim);
    chunks.push_back(x.chunk((int64_t)n, dim));
    n = std::min(n, chunks.back().size());
    WEFT_CHECK(k == 0 || chunks.back().size() == chunks[0].size(), "scatter: input ", k, " ",
               shape_str(x.sizes()), " splits into ", chunks.back().size(), " chunks but input 0 ",
               shape_str(inputs[0].sizes()), " into ", chunks[0].size(),
               "; all inputs need the same size along dim ", dim);
  }
  std::vector<std::vector<Tensor>> out(n);
  for (size_t i = 0; i < n; ++i)
    for (auto& c : chunks) out[i].push_back(c[i].to(devices[i]));
  return out;
}

Tensor gather(const std::vector<Tensor>& outputs, Device target, int64_t dim) {
  WEFT_CHECK(!outputs.empty(), "gather: no outputs given");
  std::vector<Tensor> moved;
  for (const Tensor& o : outputs) {
    WEFT_CHECK(o.dim() > 0,
               "gather: outputs must have at least 1 dim (got a scalar); "
               "DataParallel gathers along dim ",
               dim);
    moved.push_back(o.to(target));
  }
  return moved.size() == 1 ? moved[0] : cat(moved, dim);
}

}  // namespace weft::nn::parallel
