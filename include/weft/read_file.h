// Reads a whole file into memory for the format parsers (safetensors, IDX). Errors are
// weft::Error messages "<what>: cannot open|read '<path>': <reason>".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace weft {

std::vector<uint8_t> read_file(const std::string& path, const char* what);

}  // namespace weft
