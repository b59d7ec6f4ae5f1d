#include <fcntl.h>

#include <doctest/doctest.h>
#include <string>

#include "vmm/kvm.hpp"
#include "vmm/sys_error.hpp"
#include "vmm/unique_fd.hpp"

using forkvm::SysError;
using forkvm::UniqueFd;

TEST_CASE("vmm: SysError names the operation and errno") {
    SysError e("KVM_CREATE_VM", EPERM);
    CHECK(e.operation() == "KVM_CREATE_VM");
    CHECK(e.err() == EPERM);
    CHECK(e.code() == std::errc::operation_not_permitted);
    CHECK(std::string(e.what()) == "KVM_CREATE_VM: Operation not permitted (errno 1)");
}

TEST_CASE("vmm: opening a missing KVM device throws SysError naming the path") {
    try {
        (void)forkvm::vmm::Kvm::open("/nonexistent/kvm");
        FAIL("open succeeded");
    } catch (const SysError& e) {
        CHECK(e.operation() == "open /nonexistent/kvm");
        CHECK(e.err() == ENOENT);
    }
}

TEST_CASE("vmm: UniqueFd closes exactly once and moves ownership") {
    int raw = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    REQUIRE(raw >= 0);
    {
        UniqueFd a(raw);
        UniqueFd b(std::move(a));
        CHECK_FALSE(a.valid());
        CHECK(b.get() == raw);
    }
    CHECK(::fcntl(raw, F_GETFD) == -1);  // closed when b went out of scope
    CHECK(errno == EBADF);
}
