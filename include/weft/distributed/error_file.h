// A rank's fatal error, for its launcher (torchelastic's TORCHELASTIC_ERROR_FILE and @record):
// weft-run gives each rank a path in WEFT_ERROR_FILE and, when ranks fail, reads what they wrote,
// so that it can report the rank a survivor names as stalled (Note [Collective sequence numbers]
// in docs/ARCHITECTURE.md) rather than the survivor. The library itself records the desync
// diagnosis of a timed-out collective; programs call record_error from their top-level handler.
#pragma once

#include <exception>
#include <string>

namespace weft::dist {

// Replaces the file named by WEFT_ERROR_FILE with `message` (written whole: a temporary file,
// then rename). Returns false, silently, when the variable is unset or the file cannot be
// written: the error being recorded matters more than the record.
bool record_error(const std::string& message);
bool record_error(const std::exception& e);  // e.what()

}  // namespace weft::dist
