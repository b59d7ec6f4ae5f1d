#pragma once
// A fresh directory under /tmp for one test, removed with everything in it.

#include <unistd.h>

#include <filesystem>
#include <stdexcept>
#include <string>

namespace forkvm::test {

struct TempDir {
    std::filesystem::path path;
    explicit TempDir(const std::string& prefix = "forkvm_test") {
        std::string pattern = "/tmp/" + prefix + "_XXXXXX";
        if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path = pattern;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
};

}  // namespace forkvm::test
