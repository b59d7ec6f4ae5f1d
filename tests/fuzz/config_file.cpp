// Any bytes as the JSON config file: load must either succeed or throw
// ConfigError, never crash or throw anything else. A config that loads must
// survive print -> load unchanged, and its masked print must hide the keys.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "config/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace forkvm::config;
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    Config config;
    try {
        config = load_with_file_text(text, {}, {}, "fuzz.json").config;
    } catch (const ConfigError& e) {
        if (e.problems().empty()) std::abort();  // an error must say what is wrong
        return 0;
    } catch (...) {
        std::abort();
    }
    try {
        const Config again = load_with_file_text(to_json(config, false), {}, {}).config;
        if (!(again == config)) std::abort();
        const std::string masked = to_json(config, true);
        for (const std::string& key : config.auth.api_keys) {
            if (masked.find(key) != std::string::npos) std::abort();
        }
        if (!config.auth.admin_key.empty() && masked.find(config.auth.admin_key) != std::string::npos)
            std::abort();
    } catch (...) {
        std::abort();
    }
    return 0;
}
