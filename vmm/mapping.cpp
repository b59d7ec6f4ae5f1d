#include "vmm/mapping.hpp"

#include "vmm/sys_error.hpp"

namespace forkvm {

Mapping Mapping::map(std::size_t size, int prot, int flags, int fd, long offset, const char* what) {
    void* addr = ::mmap(nullptr, size, prot, flags, fd, offset);
    if (addr == MAP_FAILED) throw SysError(what, errno);
    return Mapping(addr, size);
}

}  // namespace forkvm
