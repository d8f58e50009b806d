// Checkpoints: a name -> Tensor dict saved to and loaded from safetensors files, the format
// PyTorch's ecosystem reads, which holds only data (loading runs no code). Saves are atomic and
// store a checksum per tensor in the metadata; loads validate the whole file, verify those
// checksums (weft::ChecksumError naming the tensor and file) and copy every tensor out of it,
// onto `device`. load() also reads PyTorch's own .pt/.pth files (weft/serialize/torch_load.h),
// told apart by their bytes.
#pragma once

#include <map>
#include <string>

#include "weft/ordered_dict.h"
#include "weft/serialize/checksum.h"
#include "weft/serialize/torch_load.h"
#include "weft/tensor.h"

namespace weft {

using TensorDict = OrderedDict<Tensor>;

// `metadata` keys starting "weft.xxh64." are reserved for the checksums (serialize/checksum.h).
void save(const TensorDict& tensors, const std::string& path,
          const std::map<std::string, std::string>& metadata = {});
// Tensors come back in file order; dtypes weft cannot hold (e.g. F64) are converted to
// float32, integer types to int64. `metadata` receives the file's metadata less the checksums.
// A torch.save checkpoint (zip or legacy format) loads as its state_dict (torch_state_dict()),
// with `device` as map_location and as metadata the scalar entries beside the state_dict
// ('epoch' -> "3"); files of other kinds are refused, named.
TensorDict load(const std::string& path, Device device = Device::CPU(),
                std::map<std::string, std::string>* metadata = nullptr);
// load() of a file's bytes; `name` stands for the file in error messages.
TensorDict load_from_bytes(std::vector<uint8_t> bytes,
                           std::map<std::string, std::string>* metadata = nullptr,
                           const std::string& name = "safetensors bytes");

}  // namespace weft
