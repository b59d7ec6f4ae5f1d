// The unit test binary's main. CTest runs every test case on its own with
// --test-case=NAME (doctest_discover_tests); a name that no longer matches
// (a case renamed, or a name that CMake split at a ';') would then run
// nothing and pass. So a run with filters that selects no test case fails.
#define DOCTEST_CONFIG_IMPLEMENT
#include <cstdio>
#include <doctest/doctest.h>
#include <string_view>

namespace {

unsigned g_selected = 0;

class SelectionListener final : public doctest::IReporter {
public:
    explicit SelectionListener(const doctest::ContextOptions&) {}
    void report_query(const doctest::QueryData&) override {}
    void test_run_start() override {}
    void test_run_end(const doctest::TestRunStats& stats) override {
        g_selected = stats.numTestCasesPassingFilters;
    }
    void test_case_start(const doctest::TestCaseData&) override {}
    void test_case_reenter(const doctest::TestCaseData&) override {}
    void test_case_end(const doctest::CurrentTestCaseStats&) override {}
    void test_case_exception(const doctest::TestCaseException&) override {}
    void subcase_start(const doctest::SubcaseSignature&) override {}
    void subcase_end() override {}
    void log_assert(const doctest::AssertData&) override {}
    void log_message(const doctest::MessageData&) override {}
    void test_case_skipped(const doctest::TestCaseData&) override {}
};

}  // namespace

REGISTER_LISTENER("selection", 1, SelectionListener);

int main(int argc, char** argv) {
    doctest::Context context(argc, argv);
    const int result = context.run();
    if (context.shouldExit()) return result;  // --help, --list-test-cases, ...
    bool filtered = false;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg(argv[i]);
        if (arg.starts_with("--test-case=") || arg.starts_with("-tc=")) filtered = true;
    }
    if (filtered && g_selected == 0) {
        std::fprintf(stderr, "unit tests: the --test-case filter matched no test case\n");
        return result != 0 ? result : 1;
    }
    return result;
}
