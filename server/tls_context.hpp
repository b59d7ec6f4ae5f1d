#pragma once
// The server's TLS settings (OpenSSL through Boost.Asio): TLS 1.2 and 1.3
// only, forward-secret AEAD cipher suites for TLS 1.2 (TLS 1.3's are all
// AEAD), the server's cipher order, no compression, no renegotiation.

#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <string>

namespace forkvm::server {

// Loads a PEM certificate chain and its private key. Throws
// ServiceError(invalid_argument, field "server.tls_cert" or
// "server.tls_key") naming the file and OpenSSL's reason when either cannot
// be loaded or the key does not match the certificate.
std::shared_ptr<boost::asio::ssl::context> make_tls_context(const std::string& cert_file,
                                                            const std::string& key_file);

}  // namespace forkvm::server
