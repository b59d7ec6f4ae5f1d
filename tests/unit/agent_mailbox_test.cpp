// Clone hygiene: the mailbox page format (guest/protocol/mailbox.hpp), the
// agent's MailboxWatcher and its hook in the server (guest/agent/hygiene.hpp),
// and the host's post_mailbox (vmm/mailbox.hpp).

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <doctest/doctest.h>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "guest/agent/hygiene.hpp"
#include "guest/agent/test_harness.hpp"
#include "guest/protocol/mailbox.hpp"
#include "tests/support/loopback.hpp"
#include "vmm/guest_memory.hpp"
#include "vmm/layout.hpp"
#include "vmm/mailbox.hpp"

namespace proto = forkvm::proto;
using forkvm::agent::HygieneActions;
using forkvm::agent::MailboxCheck;
using forkvm::agent::MailboxWatcher;
using forkvm::agent::testing::AgentHarness;

namespace {

using Page = std::array<std::uint8_t, proto::kMailboxPageSize>;

proto::MailboxUpdate full_update(std::uint64_t generation, std::string hostname) {
    proto::MailboxUpdate u;
    u.generation = generation;
    u.flags = proto::kMailboxAllFlags;
    u.clock = {1'700'000'000, 123'456'789};
    u.hostname = std::move(hostname);
    for (std::size_t i = 0; i < u.entropy.size(); ++i) {
        u.entropy[i] = static_cast<std::uint8_t>(i * 7 + generation);
    }
    return u;
}

Page encoded(const proto::MailboxUpdate& u) {
    Page page{};
    REQUIRE(proto::encode_mailbox(u, page) == proto::MailboxError::none);
    return page;
}

void put_u32(Page& page, std::size_t off, std::uint32_t v) {
    for (std::size_t i = 0; i < 4; ++i) page[off + i] = static_cast<std::uint8_t>(v >> (8 * i));
}

proto::MailboxError decode_error(const Page& page) { return proto::decode_mailbox(page).error; }

struct TempDir {
    std::string path;
    TempDir() {
        char tmpl[] = "/tmp/h3_mailbox_XXXXXX";
        if (::mkdtemp(tmpl) != nullptr) path = tmpl;
    }
    ~TempDir() {
        if (!path.empty()) (void)std::system(("rm -rf '" + path + "'").c_str());
    }
    [[nodiscard]] std::string operator/(const std::string& name) const { return path + "/" + name; }
};

std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Writes `page` at `offset` of `path` (created as needed), like the host
// writing guest memory behind /dev/mem.
void post_file(const std::string& path, std::uint64_t offset, const Page& page) {
    const forkvm::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    REQUIRE(fd.valid());
    REQUIRE(::pwrite(fd.get(), page.data(), page.size(), static_cast<off_t>(offset)) ==
            static_cast<ssize_t>(page.size()));
}

// Records every action in order (in this process).
class RecordingActions final : public HygieneActions {
public:
    std::vector<std::string> calls;
    std::vector<std::uint8_t> last_entropy;
    proto::MailboxClock now{0, 0};
    proto::MailboxClock last_clock{};
    int fail_with = 0;  // errno every action returns

    int add_entropy(std::span<const std::uint8_t> bytes) override {
        calls.push_back("entropy " + std::to_string(bytes.size()));
        last_entropy.assign(bytes.begin(), bytes.end());
        return fail_with;
    }
    int reseed_crng() override {
        calls.emplace_back("reseed");
        return fail_with;
    }
    int get_clock(proto::MailboxClock& out) override {
        out = now;
        return 0;
    }
    int set_clock(const proto::MailboxClock& clock) override {
        calls.push_back("clock " + std::to_string(clock.seconds));
        last_clock = clock;
        return fail_with;
    }
    int set_hostname(std::string_view name) override {
        calls.push_back("hostname " + std::string(name));
        return fail_with;
    }
};

// Appends each action as a line to a file: the agent server runs in a forked
// child, so the test reads what it did from the file.
class FileActions final : public HygieneActions {
public:
    explicit FileActions(std::string path) : path_(std::move(path)) {}
    int add_entropy(std::span<const std::uint8_t> bytes) override {
        return line("entropy " + std::to_string(bytes.size()));
    }
    int reseed_crng() override { return line("reseed"); }
    int get_clock(proto::MailboxClock& out) override {
        out = {0, 0};
        return 0;
    }
    int set_clock(const proto::MailboxClock& clock) override {
        return line("clock " + std::to_string(clock.seconds));
    }
    int set_hostname(std::string_view name) override { return line("hostname " + std::string(name)); }

private:
    int line(const std::string& text) {
        std::ofstream(path_, std::ios::app) << text << '\n';
        return 0;
    }
    std::string path_;
};

}  // namespace

// ------------------------------------------------------------- format ----

TEST_CASE("agent: mailbox encode/decode round trip") {
    const auto full = full_update(7, "sbx-0123.example");
    const Page page = encoded(full);
    CHECK(std::equal(proto::kMailboxMagic.begin(), proto::kMailboxMagic.end(), page.begin()));
    CHECK(page[proto::kMailboxOffGeneration] == 7);  // little-endian
    CHECK(std::all_of(page.begin() + proto::kMailboxUsedSize, page.end(),
                      [](std::uint8_t b) { return b == 0; }));
    auto d = proto::decode_mailbox(page);
    REQUIRE(d);
    CHECK(*d.update == full);
    CHECK(proto::peek_mailbox_generation(page) == 7U);

    // Only flagged fields travel: a clock-only post carries no hostname or entropy.
    proto::MailboxUpdate clock_only;
    clock_only.generation = UINT64_MAX;
    clock_only.flags = proto::kMailboxClock;
    clock_only.clock = {0, 999'999'999};
    d = proto::decode_mailbox(encoded(clock_only));
    REQUIRE(d);
    CHECK(*d.update == clock_only);

    proto::MailboxUpdate with_ignored = clock_only;
    with_ignored.hostname = "not sent";
    with_ignored.entropy[3] = 9;
    d = proto::decode_mailbox(encoded(with_ignored));
    REQUIRE(d);
    CHECK(d.update->hostname.empty());
    CHECK(d.update->entropy == std::array<std::uint8_t, proto::kMailboxEntropySize>{});

    // A 64-byte hostname (the Linux maximum) fits exactly.
    const std::string longest(64, 'h');
    d = proto::decode_mailbox(encoded(full_update(1, longest)));
    REQUIRE(d);
    CHECK(d.update->hostname == longest);
}

TEST_CASE("agent: mailbox decode rejects bad magic, flags, clock, lengths and hostnames") {
    const Page good = encoded(full_update(3, "clone-1"));
    REQUIRE(proto::decode_mailbox(good));

    CHECK(decode_error(Page{}) == proto::MailboxError::bad_magic);  // nothing posted yet
    CHECK_FALSE(proto::peek_mailbox_generation(Page{}).has_value());
    Page p = good;
    p[7] = '2';
    CHECK(decode_error(p) == proto::MailboxError::bad_magic);

    CHECK(proto::decode_mailbox(std::span<const std::uint8_t>(good.data(), proto::kMailboxUsedSize - 1))
              .error == proto::MailboxError::too_short);
    CHECK(proto::decode_mailbox(std::span<const std::uint8_t>()).error == proto::MailboxError::too_short);
    CHECK(proto::decode_mailbox(std::span<const std::uint8_t>(good.data(), proto::kMailboxUsedSize)));

    p = good;
    put_u32(p, proto::kMailboxOffFlags, proto::kMailboxAllFlags | 8U);
    CHECK(decode_error(p) == proto::MailboxError::unknown_flags);

    p = good;
    put_u32(p, proto::kMailboxOffClockNsec, 1'000'000'000U);
    CHECK(decode_error(p) == proto::MailboxError::bad_clock);
    p = good;
    p[proto::kMailboxOffClockSec + 7] = 0x80;  // negative seconds
    CHECK(decode_error(p) == proto::MailboxError::bad_clock);

    for (std::uint32_t len : {0U, 65U, 0xffffffffU}) {
        p = good;
        put_u32(p, proto::kMailboxOffHostnameLen, len);
        CHECK(decode_error(p) == proto::MailboxError::bad_hostname_length);
    }
    p = good;  // a length without the hostname flag
    put_u32(p, proto::kMailboxOffFlags, proto::kMailboxClock);
    CHECK(decode_error(p) == proto::MailboxError::bad_hostname_length);

    for (std::uint8_t bad :
         {std::uint8_t{0}, std::uint8_t{' '}, std::uint8_t{'/'}, std::uint8_t{'_'}, std::uint8_t{0xff}}) {
        p = good;
        p[proto::kMailboxOffHostname + 2] = bad;
        CHECK(decode_error(p) == proto::MailboxError::bad_hostname);
    }
    p = good;  // the length covers a byte past the name: a NUL
    put_u32(p, proto::kMailboxOffHostnameLen, 8);
    CHECK(decode_error(p) == proto::MailboxError::bad_hostname);
}

TEST_CASE("agent: mailbox encode refuses an update it could not decode") {
    Page page{};
    page[0] = 0xaa;
    auto u = full_update(1, "bad host");
    CHECK(proto::encode_mailbox(u, page) == proto::MailboxError::bad_hostname);
    u.hostname = "";
    CHECK(proto::encode_mailbox(u, page) == proto::MailboxError::bad_hostname_length);
    u.hostname = std::string(65, 'a');
    CHECK(proto::encode_mailbox(u, page) == proto::MailboxError::bad_hostname_length);
    u = full_update(1, "ok");
    u.clock.nanoseconds = 1'000'000'000U;
    CHECK(proto::encode_mailbox(u, page) == proto::MailboxError::bad_clock);
    u = full_update(1, "ok");
    u.flags |= 0x100U;
    CHECK(proto::encode_mailbox(u, page) == proto::MailboxError::unknown_flags);
    CHECK(page[0] == 0xaa);  // untouched
    CHECK(proto::valid_mailbox_hostname("a.b-C9"));
    CHECK_FALSE(proto::valid_mailbox_hostname("a:b"));
}

// ------------------------------------------------------------ watcher ----

TEST_CASE("agent: mailbox watcher applies each generation once, in order") {
    TempDir dir;
    REQUIRE(!dir.path.empty());
    const std::string mem = dir / "mem";
    constexpr std::uint64_t kOffset = 0x9f000;  // a sparse file, like /dev/mem
    auto actions = std::make_shared<RecordingActions>();
    post_file(mem, kOffset, Page{});  // a freshly booted VM: zero page
    MailboxWatcher w(mem, kOffset, actions);
    REQUIRE(w.active());
    CHECK(w.check_and_apply() == MailboxCheck::not_posted);
    CHECK(actions->calls.empty());

    const auto first = full_update(1, "clone-1");
    post_file(mem, kOffset, encoded(first));
    CHECK(w.check_and_apply() == MailboxCheck::applied);
    CHECK(actions->calls ==
          std::vector<std::string>{"entropy 64", "reseed", "clock 1700000000", "hostname clone-1"});
    CHECK(actions->last_entropy == std::vector<std::uint8_t>(first.entropy.begin(), first.entropy.end()));
    CHECK(actions->last_clock == first.clock);
    CHECK(w.last_generation() == 1);

    // Same generation: nothing, even if the bytes changed.
    actions->calls.clear();
    CHECK(w.check_and_apply() == MailboxCheck::unchanged);
    post_file(mem, kOffset, encoded(full_update(1, "other")));
    CHECK(w.check_and_apply() == MailboxCheck::unchanged);
    CHECK(actions->calls.empty());

    // A bump (a resume): applied again, only what it carries.
    proto::MailboxUpdate resume;
    resume.generation = 2;
    resume.flags = proto::kMailboxClock;
    resume.clock = {1'700'000'100, 5};
    post_file(mem, kOffset, encoded(resume));
    CHECK(w.check_and_apply() == MailboxCheck::applied);
    CHECK(actions->calls == std::vector<std::string>{"clock 1700000100"});
    CHECK(w.check_and_apply() == MailboxCheck::unchanged);

    // Any change of generation counts, not only an increase.
    actions->calls.clear();
    post_file(mem, kOffset, encoded(full_update(1, "clone-x")));
    CHECK(w.check_and_apply() == MailboxCheck::applied);
    CHECK(actions->calls.back() == "hostname clone-x");
    CHECK(w.stats().applied == 3);
    CHECK(w.stats().action_failures == 0);
}

TEST_CASE("agent: mailbox watcher moves the clock forward only") {
    TempDir dir;
    const std::string mem = dir / "mem";
    auto actions = std::make_shared<RecordingActions>();
    actions->now = {1'700'000'000, 500};
    proto::MailboxUpdate u;
    u.flags = proto::kMailboxClock;
    u.generation = 1;
    u.clock = {1'700'000'000, 499};  // behind the guest: a post applied late
    post_file(mem, 0, encoded(u));
    MailboxWatcher w(mem, 0, actions);
    REQUIRE(w.active());
    CHECK(w.check_and_apply() == MailboxCheck::applied);
    CHECK(actions->calls.empty());
    CHECK(w.stats().clock_skipped == 1);
    u.generation = 2;
    u.clock = {1'700'000'000, 501};
    post_file(mem, 0, encoded(u));
    CHECK(w.check_and_apply() == MailboxCheck::applied);
    CHECK(actions->calls == std::vector<std::string>{"clock 1700000000"});
    CHECK(actions->last_clock.nanoseconds == 501);
}

TEST_CASE("agent: mailbox watcher survives bad pages, short reads, failing actions and no source") {
    TempDir dir;
    const std::string mem = dir / "mem";
    auto actions = std::make_shared<RecordingActions>();

    MailboxWatcher missing(dir / "no-such-file", 0, actions);
    CHECK_FALSE(missing.active());
    CHECK(missing.check_and_apply() == MailboxCheck::inactive);
    MailboxWatcher off("", 0, actions);
    CHECK(off.check_and_apply() == MailboxCheck::inactive);

    // A page that does not decode: rejected once, then treated as seen.
    Page bad = encoded(full_update(5, "clone"));
    bad[proto::kMailboxOffHostname] = '/';
    post_file(mem, 0, bad);
    MailboxWatcher w(mem, 0, actions);
    CHECK(w.check_and_apply() == MailboxCheck::rejected);
    CHECK(w.check_and_apply() == MailboxCheck::unchanged);
    CHECK(w.stats().rejected == 1);
    CHECK(actions->calls.empty());

    // Short: the file ends inside the page.
    MailboxWatcher past_end(mem, 100, actions);
    CHECK(past_end.check_and_apply() == MailboxCheck::read_failed);
    CHECK(past_end.stats().read_failures == 1);

    // Every action failing: counted, the rest still run, the page counts as applied.
    actions->fail_with = EPERM;
    post_file(mem, 0, encoded(full_update(6, "clone")));
    CHECK(w.check_and_apply() == MailboxCheck::applied);
    CHECK(actions->calls.size() == 4);
    CHECK(w.stats().action_failures == 4);
    CHECK(w.check_and_apply() == MailboxCheck::unchanged);
}

// ------------------------------------------------------------- server ----

TEST_CASE("agent: server applies the mailbox before it handles a request") {
    TempDir dir;
    REQUIRE(!dir.path.empty());
    const std::string mem = dir / "mem";
    const std::string log = dir / "actions.log";
    post_file(mem, 0x1000, Page{});
    auto options = forkvm::agent::testing::test_options();
    options.mailbox_path = mem;
    options.mailbox_offset = 0x1000;
    options.hygiene_actions = std::make_shared<FileActions>(log);

    AgentHarness h(options);
    REQUIRE(h.started());
    REQUIRE(h.ready());

    // Posted while the agent waits (the VM "paused"), then a request.
    post_file(mem, 0x1000, encoded(full_update(1, "clone-1")));
    auto pong = h.request(1, proto::Ping{42});
    REQUIRE(pong);
    CHECK(std::holds_alternative<proto::Pong>(*pong));
    CHECK(read_text(log) == "entropy 64\nreseed\nclock 1700000000\nhostname clone-1\n");

    // The exec sees the second post already applied: the check ran before it.
    post_file(mem, 0x1000, encoded(full_update(2, "clone-2")));
    auto run = forkvm::agent::testing::run_exec(h, 2, forkvm::agent::testing::exec_req({"cat", log}));
    REQUIRE(run.exit);
    CHECK(run.exit->exit_code == 0);
    CHECK(run.out.find("hostname clone-2\n") != std::string::npos);

    // No new generation: nothing applied again.
    const std::string before = read_text(log);
    REQUIRE(h.request(3, proto::Ping{43}));
    CHECK(read_text(log) == before);
    CHECK(h.stop() == 0);
}

TEST_CASE("agent: a new identity in the mailbox ends the proxy streams the VM had, a resume does not") {
    TempDir dir;
    REQUIRE(!dir.path.empty());
    const std::string mem = dir / "mem";
    post_file(mem, 0x1000, Page{});
    auto options = forkvm::agent::testing::test_options();
    options.mailbox_path = mem;
    options.mailbox_offset = 0x1000;
    options.hygiene_actions = std::make_shared<FileActions>(dir / "actions.log");
    options.proxy_port = forkvm::test::unused_loopback_port();

    AgentHarness h(options);
    REQUIRE(h.started());
    REQUIRE(h.ready());
    post_file(mem, 0x1000, encoded(full_update(1, "source")));
    REQUIRE(h.request(1, proto::Ping{1}));

    // A client's connection through the proxy, open and credited.
    forkvm::test::LoopbackClient client(options.proxy_port);
    auto open = h.recv();
    REQUIRE(open);
    REQUIRE(open->type == proto::MessageType::proxy_open);
    const std::uint32_t stream = open->request_id;
    h.send(stream, proto::ProxyCredit{1024});

    // The same VM resumed (same hostname, a new generation): the stream lives on.
    post_file(mem, 0x1000, encoded(full_update(2, "source")));
    auto pong = h.request(2, proto::Ping{2});
    REQUIRE(pong);
    CHECK(std::holds_alternative<proto::Pong>(*pong));
    h.send(stream, proto::ProxyData{proto::Bytes{'h', 'i'}});
    CHECK(client.read_until("hi") == "hi");

    // A clone (a new hostname): the agent aborts the stream toward its host
    // and closes the client's connection.
    post_file(mem, 0x1000, encoded(full_update(3, "clone-1")));
    h.send(4, proto::Ping{4});
    bool aborted = false;
    for (int i = 0; i < 4 && !aborted; ++i) {
        auto f = h.recv();
        REQUIRE(f);
        if (f->type != proto::MessageType::proxy_close) continue;
        CHECK(f->request_id == stream);
        const auto close = proto::decode_message<proto::ProxyClose>(*f);
        REQUIRE(close);
        aborted = close->abort;
    }
    CHECK(aborted);
    CHECK(client.read_to_eof().find("<timeout>") == std::string::npos);
    CHECK(h.stop() == 0);
}

// --------------------------------------------------------------- host ----

TEST_CASE("vmm: post_mailbox fills entropy and clock, bumps the generation, keeps fields sticky") {
    namespace layout = forkvm::vmm::layout;
    auto memory = forkvm::vmm::GuestMemory::anonymous(2ULL << 20);
    const auto page = [&] {
        auto s = memory.slice(layout::kMailbox, layout::kMailboxSize);
        REQUIRE(s);
        return std::span<const std::uint8_t>(s->data(), s->size());
    };
    CHECK(proto::decode_mailbox(page()).error == proto::MailboxError::bad_magic);

    proto::MailboxUpdate first;
    first.flags = proto::kMailboxAllFlags;
    first.hostname = "sbx-1";
    timespec before{};
    ::clock_gettime(CLOCK_REALTIME, &before);
    const auto written = forkvm::vmm::post_mailbox(memory, first);
    auto d = proto::decode_mailbox(page());
    REQUIRE(d);
    CHECK(*d.update == written);
    CHECK(d.update->generation == 1);
    CHECK(d.update->hostname == "sbx-1");
    CHECK(d.update->clock.seconds >= before.tv_sec);
    CHECK(d.update->clock.seconds <= before.tv_sec + 5);
    CHECK(d.update->entropy != std::array<std::uint8_t, proto::kMailboxEntropySize>{});

    // A clock-only post (a resume) keeps the hostname and refreshes the
    // entropy: the agent may not have applied generation 1 yet.
    proto::MailboxUpdate resume;
    resume.flags = proto::kMailboxClock;
    const auto second = forkvm::vmm::post_mailbox(memory, resume);
    d = proto::decode_mailbox(page());
    REQUIRE(d);
    CHECK(d.update->generation == 2);
    CHECK(d.update->flags == proto::kMailboxAllFlags);
    CHECK(d.update->hostname == "sbx-1");
    CHECK(d.update->entropy != written.entropy);
    CHECK(*d.update == second);

    // A new hostname replaces the old one.
    proto::MailboxUpdate rename;
    rename.flags = proto::kMailboxHostname;
    rename.hostname = "sbx-2";
    CHECK(forkvm::vmm::post_mailbox(memory, rename).hostname == "sbx-2");

    // Invalid: thrown, the page is left as it was.
    proto::MailboxUpdate bad;
    bad.flags = proto::kMailboxHostname;
    bad.hostname = "no spaces";
    CHECK_THROWS_AS((void)forkvm::vmm::post_mailbox(memory, bad), forkvm::vmm::MailboxPostError);
    bad.flags = 0x40;
    CHECK_THROWS_AS((void)forkvm::vmm::post_mailbox(memory, bad), forkvm::vmm::MailboxPostError);
    CHECK(proto::peek_mailbox_generation(page()) == 3U);

    // A page scribbled by the guest: only its generation is kept.
    auto raw = memory.slice(layout::kMailbox, layout::kMailboxSize);
    REQUIRE(raw);
    (*raw)[proto::kMailboxOffFlags + 3] = 0x80;  // unknown flag bit
    (*raw)[proto::kMailboxOffGeneration] = 41;
    CHECK(forkvm::vmm::post_mailbox(memory, resume).flags == proto::kMailboxClock);
    CHECK(proto::peek_mailbox_generation(page()) == 42U);

    // Generation wraps to 1, never 0 (0 means "nothing applied" to the agent).
    std::fill_n(raw->data() + proto::kMailboxOffGeneration, 8, std::uint8_t{0xff});
    CHECK(forkvm::vmm::post_mailbox(memory, resume).generation == 1);

    // Guest memory too small to hold the page.
    auto tiny = forkvm::vmm::GuestMemory::anonymous(0x80000);
    CHECK_THROWS_AS((void)forkvm::vmm::post_mailbox(tiny, resume), forkvm::vmm::MailboxPostError);
}
