#pragma once
// SysError: a failed system call or ioctl, naming the operation and errno.
// "KVM_CREATE_VCPU: File exists (errno 17)" tells the reader what failed
// without a debugger.

#include <cerrno>
#include <stdexcept>
#include <string>
#include <system_error>

namespace forkvm {

class SysError : public std::runtime_error {
public:
    SysError(std::string operation, int err);

    // The operation that failed, e.g. "KVM_RUN" or "open /dev/kvm".
    [[nodiscard]] const std::string& operation() const noexcept { return operation_; }
    [[nodiscard]] int err() const noexcept { return err_; }
    [[nodiscard]] std::error_code code() const noexcept { return {err_, std::generic_category()}; }

private:
    std::string operation_;
    int err_;
};

// Throws SysError(operation, errno) when result is negative; returns result.
inline long check_sys(long result, const char* operation) {
    if (result < 0) throw SysError(operation, errno);
    return result;
}

}  // namespace forkvm
