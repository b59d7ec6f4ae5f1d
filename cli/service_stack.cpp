#include "cli/service_stack.hpp"

#include <algorithm>
#include <filesystem>
#include <spdlog/spdlog.h>

#include "cli/guest_defaults.hpp"
#include "cli/vm_options.hpp"
#include "pool/vm_process_source.hpp"
#include "server/server_options.hpp"

#ifndef FORKVM_VERSION
#error "FORKVM_VERSION must be defined by the build"
#endif

namespace forkvm::cli {
namespace {

vmm::VmConfig vm_config_from(const config::Config& c) {
    vmm::VmConfig vm;
    vm.kernel_path = c.vm.kernel.empty() ? default_kernel() : c.vm.kernel;
    vm.initrd_path = c.vm.initrd.empty() ? default_initrd() : c.vm.initrd;
    vm.memory_mb = static_cast<std::uint64_t>(c.vm.memory_mb);
    vm.vcpu_count = static_cast<unsigned>(c.vm.vcpus);
    // The loader has checked the value against the key's choices.
    vm.agent_channel = vmm::agent_channel_from_string(c.vm.agent_channel).value_or(vmm::AgentChannel::virtio);
    return vm;
}

pool::GoldenSource open_golden(const config::Config& c, const vmm::SpawnOptions& spawn) {
    pool::GoldenSettings golden;
    golden.vm = vm_config_from(c);
    golden.cache_root = (std::filesystem::path(c.data_dir) / "golden").string();
    golden.product_version = FORKVM_VERSION;
    golden.source.spawn = spawn;
    auto source = pool::open_golden_source(golden, [](const std::string& line) { spdlog::info("{}", line); });
    spdlog::info("zygote restored from {} (pid {})", source.snapshot_dir, source.source->zygote_pid());
    return source;
}

pool::PoolSettings pool_settings_from(const config::Config& c) {
    pool::PoolSettings p;
    p.min_warm = static_cast<std::size_t>(c.pool.min_warm);
    p.max_warm = static_cast<std::size_t>(c.pool.max_warm);
    p.refill_concurrency = static_cast<std::size_t>(c.pool.refill_concurrency);
    p.lease_wait = c.pool.lease_wait;
    return p;
}

pool::ManagerSettings manager_settings_from(const config::Config& c) {
    pool::ManagerSettings m;
    m.registry.max_sandboxes = static_cast<std::size_t>(c.sandbox.max_sandboxes);
    m.registry.max_per_key = static_cast<std::size_t>(c.sandbox.max_per_key);
    m.registry.default_ttl = c.sandbox.default_ttl;
    m.registry.max_ttl = c.sandbox.max_ttl;
    m.max_fork_count = static_cast<std::size_t>(c.sandbox.max_fork_count);
    m.max_output_bytes = server::server_options_from(c).max_exec_output_bytes;
    m.min_free_memory = c.sandbox.min_free_memory;
    return m;
}

pool::SnapshotStoreSettings snapshot_store_settings_from(const config::Config& c) {
    pool::SnapshotStoreSettings s;
    s.root = (std::filesystem::path(c.data_dir) / "snapshots").string();
    s.max_per_owner = static_cast<std::size_t>(c.snapshot.max_per_key);
    s.max_bytes_per_owner = c.snapshot.max_bytes_per_key;
    return s;
}

pool::TemplateCatalogSettings template_settings_from(const config::Config& c) {
    pool::TemplateCatalogSettings t;
    t.root = (std::filesystem::path(c.data_dir) / "templates").string();
    t.max_per_owner = static_cast<std::size_t>(c.template_.max_per_key);
    t.max_warm_limit = static_cast<std::size_t>(c.template_.max_warm_limit);
    t.pool_base = pool_settings_from(c);
    t.defaults.min_warm = 1;
    t.defaults.max_warm = std::min<std::size_t>(2, t.max_warm_limit);
    return t;
}

// A template's zygote: restored from its snapshot like the golden one.
pool::SourceFactory template_sources(const vmm::SpawnOptions& spawn) {
    pool::VmProcessSourceSettings base;
    base.spawn = spawn;
    return [base](const std::string& dir) {
        auto settings = base;
        settings.snapshot_dir = dir;
        return std::make_unique<pool::VmProcessSource>(settings);
    };
}

vmm::SpawnOptions spawn_options_from(const config::Config& c, std::shared_ptr<const vmm::CgroupHost> cgroups,
                                     int kvm_device_fd) {
    auto spawn = spawn_options(false, jail_options_from(c), resource_limits_from(c, std::move(cgroups)));
    spawn.kvm_device_fd = kvm_device_fd;
    return spawn;
}

http_proxy::HostsMap egress_hosts_from(const config::Config& c) {
    try {
        auto hosts = http_proxy::HostsMap::parse(c.egress.hosts);
        spdlog::info(
            "egress: {} name(s) in the hosts map; sandboxes reach nothing their policy does not allow",
            hosts.size());
        return hosts;
    } catch (const http_proxy::HostsMapError& e) {
        throw std::runtime_error(std::string("egress.hosts: ") + e.what());
    }
}

}  // namespace

std::shared_ptr<vmm::CgroupHost> detect_cgroups() {
    auto cgroups = vmm::CgroupHost::detect();
    if (cgroups->enforcing()) {
        spdlog::info("per-VM limits: {}", cgroups->describe());
    } else {
        spdlog::warn("{}", cgroups->describe());
    }
    return cgroups;
}

ServiceStack::ServiceStack(const config::Config& c, std::shared_ptr<const vmm::CgroupHost> cgroups,
                           int kvm_device_fd)
    : spawn_(spawn_options_from(c, std::move(cgroups), kvm_device_fd)),
      golden_(open_golden(c, spawn_)),
      pool_(*golden_.source, pool_settings_from(c)),
      snapshots_(snapshot_store_settings_from(c)),
      templates_(snapshots_, template_settings_from(c), template_sources(spawn_)),
      egress_(egress_hosts_from(c)),
      manager_(pool_, manager_settings_from(c), {}, {}, pool::Catalog{&snapshots_, &templates_}, &egress_) {}

ServiceStack::~ServiceStack() { shutdown(); }

void ServiceStack::shutdown() noexcept {
    manager_.shutdown();
    egress_.shutdown();
    templates_.shutdown();
    pool_.shutdown();
}

}  // namespace forkvm::cli
