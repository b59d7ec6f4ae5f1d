#include "vmm/sys_error.hpp"

#include <cstring>
#include <fmt/format.h>

namespace forkvm {

SysError::SysError(std::string operation, int err)
    : std::runtime_error(fmt::format("{}: {} (errno {})", operation, std::strerror(err), err)),
      operation_(std::move(operation)),
      err_(err) {}

}  // namespace forkvm
