#include "serialize/torch_load/zip_reader.h"

#include <zip.h>

#include <algorithm>

#include "weft/error.h"

namespace weft::serialize {

ZipReader::ZipReader(const uint8_t* data, size_t size) {
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* src = zip_source_buffer_create(data, size, 0, &error);
  if (src) {
    archive_ = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &error);
    if (!archive_) zip_source_free(src);
  }
  if (!archive_) {
    const std::string why = zip_error_strerror(&error);
    zip_error_fini(&error);
    WEFT_ERROR("zip: cannot open the archive: ", why);
  }
  zip_error_fini(&error);
  const zip_int64_t n = zip_get_num_entries(archive_, 0);
  for (zip_int64_t i = 0; i < n; ++i) {
    const char* name = zip_get_name(archive_, static_cast<zip_uint64_t>(i), ZIP_FL_ENC_RAW);
    names_.push_back(name ? name : "");
  }
}

ZipReader::~ZipReader() {
  if (archive_) zip_discard(archive_);
}

int64_t ZipReader::index(const std::string& name) const {
  const zip_int64_t i = zip_name_locate(archive_, name.c_str(), ZIP_FL_ENC_RAW);
  WEFT_CHECK(i >= 0, "zip: the archive has no record '", name, "'");
  return i;
}

bool ZipReader::has(const std::string& name) const {
  return std::find(names_.begin(), names_.end(), name) != names_.end();
}

uint64_t ZipReader::size(const std::string& name) const {
  zip_stat_t st;
  zip_stat_init(&st);
  WEFT_CHECK(zip_stat_index(archive_, static_cast<zip_uint64_t>(index(name)), 0, &st) == 0 &&
                 (st.valid & ZIP_STAT_SIZE),
             "zip: cannot stat record '", name, "': ", zip_strerror(archive_));
  return st.size;
}

void ZipReader::read(const std::string& name, void* dst, uint64_t n) const {
  const uint64_t have = size(name);
  WEFT_CHECK(have == n, "zip: record '", name, "' has ", have, " bytes, expected ", n);
  zip_file_t* f = zip_fopen_index(archive_, static_cast<zip_uint64_t>(index(name)), 0);
  WEFT_CHECK(f, "zip: cannot open record '", name, "': ", zip_strerror(archive_));
  uint64_t done = 0;
  std::string why;
  while (done < n) {
    const zip_int64_t r = zip_fread(f, static_cast<uint8_t*>(dst) + done, n - done);
    if (r <= 0) {
      why = r < 0 ? zip_file_strerror(f) : "unexpected end of data";
      break;
    }
    done += static_cast<uint64_t>(r);
  }
  zip_fclose(f);
  WEFT_CHECK(done == n, "zip: reading record '", name, "' failed after ", done, " of ", n,
             " bytes: ", why);
}

std::vector<uint8_t> ZipReader::read(const std::string& name, uint64_t max_bytes) const {
  const uint64_t n = size(name);
  WEFT_CHECK(n <= max_bytes, "zip: record '", name, "' has ", n, " bytes, more than the limit of ",
             max_bytes);
  std::vector<uint8_t> out(n);
  read(name, out.data(), n);
  return out;
}

}  // namespace weft::serialize
