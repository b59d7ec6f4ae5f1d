#pragma once
// A throwaway PKI for tests, made with OpenSSL at run time (no key material
// in the repository): a CA, and leaf certificates it signs for given DNS
// names and IP addresses. EC P-256 keys, valid from an hour ago for a day.

#include <memory>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdexcept>
#include <string>
#include <vector>

namespace forkvm::test {

struct Pem {
    std::string cert;
    std::string key;
};

namespace pki_detail {

struct KeyFree {
    void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct CertFree {
    void operator()(X509* c) const { X509_free(c); }
};
struct BioFree {
    void operator()(BIO* b) const { BIO_free(b); }
};
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;
using Cert = std::unique_ptr<X509, CertFree>;
using Bio = std::unique_ptr<BIO, BioFree>;

inline void check(bool ok, const char* what) {
    if (!ok) throw std::runtime_error(std::string("test PKI: ") + what + " failed");
}

inline Key new_key() {
    Key key(EVP_EC_gen("P-256"));
    check(key != nullptr, "EC key generation");
    return key;
}

inline std::string bio_text(BIO* bio) {
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio, &data);
    return std::string(data, static_cast<std::size_t>(n));
}

inline std::string cert_pem(X509* cert) {
    Bio bio(BIO_new(BIO_s_mem()));
    check(PEM_write_bio_X509(bio.get(), cert) == 1, "PEM_write_bio_X509");
    return bio_text(bio.get());
}

inline std::string key_pem(EVP_PKEY* key) {
    Bio bio(BIO_new(BIO_s_mem()));
    check(PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) == 1,
          "PEM_write_bio_PrivateKey");
    return bio_text(bio.get());
}

inline void add_extension(X509* cert, X509* issuer, int nid, const std::string& value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
    check(ext != nullptr, "X509V3_EXT_conf_nid");
    const bool ok = X509_add_ext(cert, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    check(ok, "X509_add_ext");
}

// A certificate for `key`'s public half named `common_name`, signed by
// `issuer_key` as `issuer` (null = self-signed).
inline Cert make_cert(EVP_PKEY* key, const std::string& common_name, X509* issuer, EVP_PKEY* issuer_key,
                      long serial, bool is_ca, const std::string& subject_alt_names) {
    Cert cert(X509_new());
    check(cert != nullptr, "X509_new");
    X509_set_version(cert.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial);
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), 24 * 3600);
    check(X509_set_pubkey(cert.get(), key) == 1, "X509_set_pubkey");
    X509_NAME* name = X509_get_subject_name(cert.get());
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("forkvm tests"), -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0);
    X509* signer = issuer != nullptr ? issuer : cert.get();
    check(X509_set_issuer_name(cert.get(), X509_get_subject_name(signer)) == 1, "X509_set_issuer_name");
    add_extension(cert.get(), signer, NID_basic_constraints,
                  is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    add_extension(cert.get(), signer, NID_key_usage,
                  is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
    add_extension(cert.get(), signer, NID_subject_key_identifier, "hash");
    if (!is_ca) {
        add_extension(cert.get(), signer, NID_ext_key_usage, "serverAuth");
        add_extension(cert.get(), signer, NID_subject_alt_name, subject_alt_names);
    }
    check(X509_sign(cert.get(), issuer_key != nullptr ? issuer_key : key, EVP_sha256()) > 0, "X509_sign");
    return cert;
}

}  // namespace pki_detail

class TestPki {
public:
    TestPki() : ca_key_(pki_detail::new_key()) {
        ca_ = pki_detail::make_cert(ca_key_.get(), "forkvm test CA", nullptr, nullptr, 1, true, "");
    }

    // The CA certificate, for a client's trust store.
    [[nodiscard]] std::string ca_pem() const { return pki_detail::cert_pem(ca_.get()); }

    // A server certificate (chain: leaf then CA) and its key, for names like
    // "localhost" and addresses like "127.0.0.1".
    Pem issue(const std::vector<std::string>& dns_names, const std::vector<std::string>& ip_addresses) {
        std::string alt;
        for (const auto& name : dns_names) alt += (alt.empty() ? "" : ",") + ("DNS:" + name);
        for (const auto& ip : ip_addresses) alt += (alt.empty() ? "" : ",") + ("IP:" + ip);
        const auto key = pki_detail::new_key();
        const auto cn = dns_names.empty() ? ip_addresses.at(0) : dns_names.front();
        const auto cert =
            pki_detail::make_cert(key.get(), cn, ca_.get(), ca_key_.get(), ++serial_, false, alt);
        return {pki_detail::cert_pem(cert.get()) + ca_pem(), pki_detail::key_pem(key.get())};
    }

private:
    pki_detail::Key ca_key_;
    pki_detail::Cert ca_;
    long serial_ = 1;
};

}  // namespace forkvm::test
