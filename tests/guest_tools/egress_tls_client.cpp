// egress-tls-client: a small HTTPS client for the kvm egress tests, run
// inside the guest. It reaches HOST:PORT only through the egress proxy in
// $HTTPS_PROXY (a CONNECT tunnel), then speaks TLS end to end with
// certificate and host name verification against CAFILE, sends one GET and
// prints the response. Static (built with OpenSSL's static libraries) so it
// runs in the busybox initramfs.
//
// usage: egress-tls-client HOST PORT CAFILE [PATH]
// exit: 0 response printed; 2 usage; 3 the proxy refused (its status line
//       and body printed); 4 TLS failed (the reason printed); 5 I/O error.

#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <string>

namespace {

int fail(int code, const std::string& message) {
    std::fprintf(stdout, "%s\n", message.c_str());
    std::fflush(stdout);
    return code;
}

std::string openssl_errors() {
    std::string out;
    while (const unsigned long e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        if (!out.empty()) out += "; ";
        out += buf;
    }
    return out;
}

// "http://127.0.0.1:3128" (what the agent puts in every exec's environment).
bool parse_proxy(const char* url, sockaddr_in& out) {
    if (url == nullptr || std::strncmp(url, "http://", 7) != 0) return false;
    const std::string rest(url + 7);
    const std::size_t colon = rest.find(':');
    if (colon == std::string::npos) return false;
    std::string host = rest.substr(0, colon);
    const int port = std::atoi(rest.c_str() + colon + 1);
    out = {};
    out.sin_family = AF_INET;
    out.sin_port = htons(static_cast<std::uint16_t>(port));
    return port > 0 && port < 65536 && ::inet_pton(AF_INET, host.c_str(), &out.sin_addr) == 1;
}

bool write_all(int fd, const std::string& bytes) {
    for (std::size_t off = 0; off < bytes.size();) {
        const ssize_t n = ::write(fd, bytes.data() + off, bytes.size() - off);
        if (n <= 0) return false;
        off += static_cast<std::size_t>(n);
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 4 || argc > 5) return fail(2, "usage: egress-tls-client HOST PORT CAFILE [PATH]");
    const std::string host = argv[1];
    const std::string port = argv[2];
    const char* ca_file = argv[3];
    const std::string path = argc == 5 ? argv[4] : "/";

    sockaddr_in proxy{};
    const char* proxy_url = std::getenv("HTTPS_PROXY");
    if (!parse_proxy(proxy_url, proxy)) return fail(2, "HTTPS_PROXY is not http://IPv4:PORT");
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&proxy), sizeof proxy) != 0)
        return fail(5, std::string("connect to the proxy: ") + std::strerror(errno));

    // The tunnel: read the proxy's answer byte by byte, so nothing of the
    // TLS stream that follows is consumed here.
    if (!write_all(fd,
                   "CONNECT " + host + ":" + port + " HTTP/1.1\r\nHost: " + host + ":" + port + "\r\n\r\n"))
        return fail(5, "write to the proxy failed");
    std::string head;
    char c = 0;
    while (head.find("\r\n\r\n") == std::string::npos) {
        if (::read(fd, &c, 1) != 1) return fail(5, "the proxy closed before answering: " + head);
        head.push_back(c);
        if (head.size() > 16384) return fail(5, "the proxy's answer is too long");
    }
    if (head.rfind("HTTP/1.1 200", 0) != 0) {
        std::string rest;
        char buf[4096];
        ssize_t n = 0;
        while ((n = ::read(fd, buf, sizeof buf)) > 0) rest.append(buf, static_cast<std::size_t>(n));
        return fail(3, "proxy refused: " + head.substr(0, head.find("\r\n")) + "\n" + rest);
    }

    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == nullptr) return fail(4, "tls: " + openssl_errors());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    if (SSL_CTX_load_verify_locations(ctx, ca_file, nullptr) != 1)
        return fail(4, "tls: cannot load the CA file: " + openssl_errors());
    SSL* ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"  // OpenSSL's macro casts
    SSL_set_tlsext_host_name(ssl, host.c_str());   // SNI
#pragma GCC diagnostic pop
    SSL_set1_host(ssl, host.c_str());  // the certificate must name this host
    if (SSL_connect(ssl) != 1) {
        const long verify = SSL_get_verify_result(ssl);
        return fail(4, "tls: handshake failed: " + openssl_errors() +
                           " (verify: " + X509_verify_cert_error_string(verify) + ")");
    }
    const std::string request =
        "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n";
    if (SSL_write(ssl, request.data(), static_cast<int>(request.size())) <= 0)
        return fail(5, "tls write failed: " + openssl_errors());
    std::string response;
    char buf[4096];
    int n = 0;
    while ((n = SSL_read(ssl, buf, sizeof buf)) > 0) response.append(buf, static_cast<std::size_t>(n));
    std::fwrite(response.data(), 1, response.size(), stdout);
    std::fflush(stdout);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    ::close(fd);
    return 0;
}
