#include "server/tls_context.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "pool/service_error.hpp"

namespace forkvm::server {

namespace {

namespace ssl = boost::asio::ssl;

// TLS 1.2 suites: ECDHE key exchange (forward secrecy) with AEAD ciphers only.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

std::string openssl_reason() {
    std::string reason;
    while (const auto code = ERR_get_error()) {
        char text[256];
        ERR_error_string_n(code, text, sizeof text);
        if (!reason.empty()) reason += "; ";
        reason += text;
    }
    return reason.empty() ? "unknown OpenSSL error" : reason;
}

[[noreturn]] void fail(const char* field, const std::string& what) {
    throw pool::ServiceError::invalid_argument(field, what + ": " + openssl_reason());
}

}  // namespace

std::shared_ptr<ssl::context> make_tls_context(const std::string& cert_file, const std::string& key_file) {
    ERR_clear_error();
    auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
    SSL_CTX* native = context->native_handle();
    if (SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION) != 1) fail("server.tls_cert", "TLS set-up");
    SSL_CTX_set_options(native, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                    SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_SINGLE_ECDH_USE);
    if (SSL_CTX_set_cipher_list(native, kTls12Ciphers) != 1) fail("server.tls_cert", "TLS cipher list");
    if (SSL_CTX_use_certificate_chain_file(native, cert_file.c_str()) != 1) {
        fail("server.tls_cert", "cannot load the certificate chain " + cert_file);
    }
    if (SSL_CTX_use_PrivateKey_file(native, key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
        fail("server.tls_key", "cannot load the private key " + key_file);
    }
    if (SSL_CTX_check_private_key(native) != 1) {
        fail("server.tls_key",
             "the private key " + key_file + " does not match the certificate " + cert_file);
    }
    return context;
}

}  // namespace forkvm::server
