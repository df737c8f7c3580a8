// The error half of the protocol of `cpp.rs`: an entry point catches every exception and copies
// its message, NUL-terminated and cut to fit, into the caller's buffer before returning non-zero.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

inline void write_err(const std::string& msg, char* err, int64_t err_len) {
  if (err_len <= 0) return;
  std::strncpy(err, msg.c_str(), static_cast<size_t>(err_len - 1));
  err[err_len - 1] = '\0';
}
