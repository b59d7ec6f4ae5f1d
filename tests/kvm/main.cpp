// The kvm test binary's main, with a listener that prints each test case as
// it starts and ends (with its time), flushed at once. scripts/kvm-tests
// runs ctest with -V so these lines arrive live: when the emulated KVM host
// dies mid-test, the log still says which case was running.
#define DOCTEST_CONFIG_IMPLEMENT
#include <chrono>
#include <cstdio>
#include <doctest/doctest.h>
#include <mutex>

namespace {

class ProgressListener final : public doctest::IReporter {
public:
    explicit ProgressListener(const doctest::ContextOptions& /*options*/) {}

    void test_case_start(const doctest::TestCaseData& data) override {
        const std::lock_guard lock(mutex_);
        start_ = std::chrono::steady_clock::now();
        std::fprintf(stderr, "[kvm-test] start: %s\n", data.m_name);
        std::fflush(stderr);
    }
    void test_case_end(const doctest::CurrentTestCaseStats& stats) override {
        const std::lock_guard lock(mutex_);
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
        std::fprintf(stderr, "[kvm-test] %s after %.1f s\n", stats.testCaseSuccess ? "passed" : "FAILED",
                     secs);
        std::fflush(stderr);
    }

    void report_query(const doctest::QueryData& /*data*/) override {}
    void test_run_start() override {}
    void test_run_end(const doctest::TestRunStats& /*stats*/) override {}
    void test_case_reenter(const doctest::TestCaseData& /*data*/) override {}
    void test_case_exception(const doctest::TestCaseException& /*ex*/) override {}
    void subcase_start(const doctest::SubcaseSignature& /*signature*/) override {}
    void subcase_end() override {}
    void log_assert(const doctest::AssertData& /*data*/) override {}
    void log_message(const doctest::MessageData& /*data*/) override {}
    void test_case_skipped(const doctest::TestCaseData& /*data*/) override {}

private:
    std::mutex mutex_;
    std::chrono::steady_clock::time_point start_{};
};

}  // namespace

REGISTER_LISTENER("kvm-progress", 1, ProgressListener);

int main(int argc, char** argv) {
    // Line-buffered stdout: doctest's failure reports reach the log as they
    // happen, not at exit (which never comes if the emulated host dies).
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    doctest::Context context(argc, argv);
    return context.run();
}
