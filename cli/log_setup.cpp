#include "cli/log_setup.hpp"

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace forkvm::cli {
namespace {

// {"time":"2026-11-28T04:30:00.123Z","level":"info","logger":"forkvm","msg":"..."}
// nlohmann does the escaping, so a message can hold anything (guest
// console bytes included) and the line stays valid JSON.
class JsonFormatter final : public spdlog::formatter {
public:
    void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
        const auto ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(msg.time.time_since_epoch()).count();
        const std::time_t secs = static_cast<std::time_t>(ms / 1000);
        std::tm tm{};
        ::gmtime_r(&secs, &tm);
        char stamp[40];
        const std::size_t n = std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
        std::snprintf(stamp + n, sizeof stamp - n, ".%03dZ", static_cast<int>(ms % 1000));
        nlohmann::ordered_json line = {
            {"time", stamp},
            {"level", std::string(spdlog::level::to_string_view(msg.level).data(),
                                  spdlog::level::to_string_view(msg.level).size())},
            {"logger", std::string(msg.logger_name.data(), msg.logger_name.size())},
            {"msg", std::string(msg.payload.data(), msg.payload.size())},
        };
        const std::string text =
            line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
        dest.append(text.data(), text.data() + text.size());
    }
    std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

}  // namespace

void setup_logging(const std::string& level, const std::string& format) {
    auto logger =
        std::make_shared<spdlog::logger>("forkvm", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    if (format == "json") {
        logger->set_formatter(std::make_unique<JsonFormatter>());
    } else {
        logger->set_formatter(std::make_unique<spdlog::pattern_formatter>("%Y-%m-%dT%H:%M:%S.%eZ %l %v",
                                                                          spdlog::pattern_time_type::utc));
    }
    logger->set_level(spdlog::level::from_str(level));
    logger->flush_on(spdlog::level::trace);  // the log is read live (tests, journald)
    spdlog::set_default_logger(std::move(logger));
}

}  // namespace forkvm::cli
