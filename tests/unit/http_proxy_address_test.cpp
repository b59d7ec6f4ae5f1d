#include <doctest/doctest.h>
#include <string>

#include "http_proxy/address_class.hpp"
#include "http_proxy/host.hpp"
#include "http_proxy/ip_address.hpp"

using namespace forkvm::http_proxy;

namespace {

// Parses text as a host that must be an IP literal; returns its text form.
std::string ip_of(const std::string& text) {
    auto r = parse_host(text);
    REQUIRE_MESSAGE(r, text << ": " << r.error);
    REQUIRE_MESSAGE(r.host->is_ip(), text << " parsed as a domain");
    return r.host->ip.to_string();
}

bool refused(const std::string& text) {
    auto r = parse_host(text);
    REQUIRE_MESSAGE(r, text << ": " << r.error);
    REQUIRE(r.host->is_ip());
    return classify_address(r.host->ip).special;
}

std::string reason(const std::string& text) {
    auto r = parse_host(text);
    REQUIRE_MESSAGE(r, text << ": " << r.error);
    REQUIRE(r.host->is_ip());
    return classify_address(r.host->ip).reason;
}

}  // namespace

TEST_CASE("http_proxy: IPv4 literals are parsed as inet_aton does") {
    CHECK(ip_of("127.0.0.1") == "127.0.0.1");
    CHECK(ip_of("0177.0.0.1") == "127.0.0.1");                  // octal part
    CHECK(ip_of("0x7f000001") == "127.0.0.1");                  // one hex part
    CHECK(ip_of("0X7F.1") == "127.0.0.1");                      // two parts, upper-case hex
    CHECK(ip_of("2130706433") == "127.0.0.1");                  // one decimal part
    CHECK(ip_of("127.1") == "127.0.0.1");                       // a.b: b fills 24 bits
    CHECK(ip_of("017700000001") == "127.0.0.1");                // one octal part
    CHECK(ip_of("10.0.258") == "10.0.1.2");                     // a.b.c: c fills 16 bits
    CHECK(ip_of("0x0000000000a9fea9fe") == "169.254.169.254");  // leading zeros are harmless
    CHECK(ip_of("169.254.43518") == "169.254.169.254");
    CHECK(ip_of("0") == "0.0.0.0");
    CHECK(ip_of("127.0.0.1.") == "127.0.0.1");  // one trailing dot stripped
    CHECK(ip_of("255.255.255.255") == "255.255.255.255");
    CHECK(ip_of("4294967295") == "255.255.255.255");
}

TEST_CASE("http_proxy: numeric-looking hosts that inet_aton rejects are errors, not domains") {
    for (const char* bad :
         {"256.0.0.1", "1.2.3.4.5", "4294967296", "08.0.0.1", "0x", "0x1g.1", "1..2", "127.0.0.1..",
          "1.2.3.256", "1.2.65536", "1.16777216", "example.0x1", "foo.123", "99999999999999999999999"}) {
        auto r = parse_host(bad);
        CHECK_MESSAGE(!r, bad);
        CHECK_MESSAGE(!r.error.empty(), bad);
    }
}

TEST_CASE("http_proxy: IPv6 literals with and without brackets") {
    CHECK(ip_of("[::1]") == "::1");
    CHECK(ip_of("::1") == "::1");
    CHECK(ip_of("[2001:DB8::1]") == "2001:db8::1");
    CHECK(ip_of("[::ffff:127.0.0.1]") == "::ffff:127.0.0.1");
    CHECK(ip_of("[::ffff:7f00:1]") == "::ffff:127.0.0.1");
    auto r = parse_host("[::ffff:7f00:1]");
    REQUIRE(r);
    CHECK(r.host->ip.unmapped() == IpAddress::v4(0x7f000001));
    CHECK(r.host->to_string() == "[::ffff:127.0.0.1]");
}

TEST_CASE("http_proxy: IPv6 zone ids and malformed literals are rejected") {
    for (const char* bad : {"fe80::1%eth0", "[fe80::1%eth0]", "[fe80::1%25eth0]", "[::1", "::1]", "[]",
                            "[127.0.0.1]", "[::ffff:0177.0.0.1]", "1:2:3:4:5:6:7:8:9", "[::g]", ":::"}) {
        auto r = parse_host(bad);
        CHECK_MESSAGE(!r, bad);
    }
    CHECK(parse_host("fe80::1%eth0").error == "IPv6 zone ids are not allowed");
}

TEST_CASE("http_proxy: domain names are validated and lower-cased") {
    auto r = parse_host("Files.PyPI.org.");
    REQUIRE(r);
    CHECK_FALSE(r.host->is_ip());
    CHECK(r.host->name == "files.pypi.org");
    CHECK(parse_host("xn--bcher-kva.example"));
    CHECK(parse_host("a-b.c1"));
    CHECK(parse_host("127.0.0.1.nip.io"));  // last label is not numeric: a name
    CHECK(parse_host(std::string(63, 'a') + ".com"));
    CHECK_FALSE(parse_host(std::string(64, 'a') + ".com"));
    std::string long_name;
    for (int i = 0; i < 50; ++i) long_name += "abcd.";
    long_name += "com";  // 253 bytes
    CHECK(parse_host(long_name));
    CHECK_FALSE(parse_host("x" + long_name));
    for (const char* bad : {"", ".", "-a.com", "a-.com", "a..com", "a_b.com", "ex ample.com", "exa\tmple.com",
                            "bücher.de", "*.example.com", "a.com..", "user@host", "a/b", "%31%32%37.0.0.1"}) {
        CHECK_MESSAGE(!parse_host(bad), bad);
    }
}

TEST_CASE("http_proxy: every refused IPv4 range and its edges") {
    struct Edge {
        const char* below;
        const char* first;
        const char* last;
        const char* above;
    };
    // below/above are public (or nullptr at the ends of the address space).
    const Edge edges[] = {
        {nullptr, "0.0.0.0", "0.255.255.255", "1.0.0.0"},
        {"9.255.255.255", "10.0.0.0", "10.255.255.255", "11.0.0.0"},
        {"100.63.255.255", "100.64.0.0", "100.127.255.255", "100.128.0.0"},
        {"126.255.255.255", "127.0.0.0", "127.255.255.255", "128.0.0.0"},
        {"169.253.255.255", "169.254.0.0", "169.254.255.255", "169.255.0.0"},
        {"172.15.255.255", "172.16.0.0", "172.31.255.255", "172.32.0.0"},
        {"191.255.255.255", "192.0.0.0", "192.0.0.255", "192.0.1.0"},
        {"192.0.1.255", "192.0.2.0", "192.0.2.255", "192.0.3.0"},
        {"192.88.98.255", "192.88.99.0", "192.88.99.255", "192.88.100.0"},
        {"192.167.255.255", "192.168.0.0", "192.168.255.255", "192.169.0.0"},
        {"198.17.255.255", "198.18.0.0", "198.19.255.255", "198.20.0.0"},
        {"198.51.99.255", "198.51.100.0", "198.51.100.255", "198.51.101.0"},
        {"203.0.112.255", "203.0.113.0", "203.0.113.255", "203.0.114.0"},
        {"223.255.255.255", "224.0.0.0", "239.255.255.255", nullptr},
        {nullptr, "240.0.0.0", "255.255.255.255", nullptr},
    };
    for (const auto& e : edges) {
        if (e.below) CHECK_MESSAGE(!refused(e.below), e.below);
        CHECK_MESSAGE(refused(e.first), e.first);
        CHECK_MESSAGE(refused(e.last), e.last);
        if (e.above) CHECK_MESSAGE(!refused(e.above), e.above);
    }
    CHECK(reason("169.254.169.254") == "169.254.0.0/16 link-local (cloud metadata)");
    CHECK(reason("127.1") == "127.0.0.0/8 loopback");
    CHECK(reason("8.8.8.8") == "public IPv4 unicast");
}

TEST_CASE("http_proxy: obfuscated loopback spellings are all refused") {
    for (const char* s : {"0177.0.0.1", "0x7f000001", "2130706433", "127.1", "017700000001",
                          "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "::1", "[::1]", "0", "0.0.0.0", "[::]",
                          "[::127.0.0.1]", "[64:ff9b::127.0.0.1]", "[2002:7f00:1::]"}) {
        CHECK_MESSAGE(refused(s), s);
    }
}

TEST_CASE("http_proxy: IPv6 ranges and the IPv4-embedding forms") {
    CHECK(reason("::") == ":: unspecified");
    CHECK(reason("::1") == "::1 loopback");
    CHECK(reason("fc00::1").find("fc00::/7") == 0);
    CHECK(reason("fdff:ffff::1").find("fc00::/7") == 0);
    CHECK(reason("fe80::1").find("fe80::/10") == 0);
    CHECK(reason("febf::1").find("fe80::/10") == 0);
    CHECK(reason("fec0::1").find("fec0::/10") == 0);
    CHECK(reason("ff02::1").find("ff00::/8") == 0);
    CHECK(reason("100::1").find("100::/64") == 0);
    CHECK(reason("2001:db8::1").find("2001:db8::/32") == 0);
    CHECK(reason("2001::1").find("2001::/32 Teredo") == 0);
    CHECK(reason("64:ff9b:1::1").find("64:ff9b:1::/48") == 0);
    CHECK(refused("1fff:ffff::1"));  // outside 2000::/3
    CHECK(refused("4000::1"));
    CHECK_FALSE(refused("2606:4700::1111"));
    CHECK_FALSE(refused("2a00:1450::1"));

    // IPv4-mapped: the verdict of the embedded address.
    CHECK(reason("::ffff:169.254.169.254") ==
          "::ffff:0:0/96 IPv4-mapped 169.254.169.254: 169.254.0.0/16 link-local (cloud metadata)");
    CHECK_FALSE(refused("::ffff:8.8.8.8"));
    CHECK(refused("::ffff:10.0.0.1"));
    // IPv4-compatible: always refused, even for a public embedded address.
    CHECK(refused("::8.8.8.8"));
    // NAT64 and 6to4: refused when the embedded address is.
    CHECK(refused("64:ff9b::10.0.0.1"));
    CHECK_FALSE(refused("64:ff9b::8.8.8.8"));
    CHECK(refused("2002:a9fe:a9fe::1"));
    CHECK(reason("2002:a9fe:a9fe::1").find("2002::/16 6to4 169.254.169.254") == 0);
    CHECK_FALSE(refused("2002:808:808::1"));
}

TEST_CASE("http_proxy: IpAddress formatting and strict parsing") {
    CHECK(IpAddress::v4(0x0a010203).to_string() == "10.1.2.3");
    CHECK(IpAddress::v4(0x0a010203).v4_value() == 0x0a010203u);
    CHECK(IpAddress::parse_strict("10.1.2.3") == IpAddress::v4(0x0a010203));
    CHECK_FALSE(IpAddress::parse_strict("010.1.2.3"));
    CHECK_FALSE(IpAddress::parse_strict("10.1.2"));
    CHECK_FALSE(IpAddress::parse_strict("10.1.2.3 "));
    CHECK_FALSE(IpAddress::parse_strict("[::1]"));
    auto v6 = IpAddress::parse_strict("2001:db8:0:0:0:0:0:1");
    REQUIRE(v6);
    CHECK(v6->is_v6());
    CHECK(v6->to_string() == "2001:db8::1");
    CHECK(IpAddress::v4(1) != *v6);
}

TEST_CASE("http_proxy: IpPrefix parsing and containment") {
    auto p = IpPrefix::parse("10.1.0.0/16");
    REQUIRE(p);
    CHECK(p->contains(IpAddress::v4(0x0a01ffff)));
    CHECK_FALSE(p->contains(IpAddress::v4(0x0a020000)));
    CHECK(p->to_string() == "10.1.0.0/16");
    CHECK(IpPrefix::parse("10.1.2.3")->to_string() == "10.1.2.3");
    CHECK(IpPrefix::parse("0.0.0.0/0")->contains(IpAddress::v4(0xffffffff)));
    CHECK(IpPrefix::parse("fd00::/8")->contains(*IpAddress::parse_strict("fdab::1")));
    CHECK_FALSE(IpPrefix::parse("fd00::/8")->contains(IpAddress::v4(0xfd000000)));
    CHECK(IpPrefix::parse("10.1.3.0/23") == std::nullopt);  // host bits set
    std::string error;
    CHECK_FALSE(IpPrefix::parse("10.0.0.0/33", &error));
    CHECK(error == "prefix length must be in 0..32");
    CHECK_FALSE(IpPrefix::parse("10.0.0.0/08"));
    CHECK_FALSE(IpPrefix::parse("10.0.0.0/"));
    CHECK_FALSE(IpPrefix::parse("::/129"));
    CHECK(IpPrefix::parse("::/128"));
    CHECK(IpPrefix::parse("10.1.2.0/23"));
}
