# Shared compile settings for every forkvm target.
# (-Wnull-dereference is left out: g++ 12 reports false positives through
# std::vector::data() at -O2.)

set(FORKVM_WARNINGS
    -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion
    -Wnon-virtual-dtor -Wold-style-cast -Wcast-align -Woverloaded-virtual
    -Wdouble-promotion -Wformat=2 -Wimplicit-fallthrough)

if(FORKVM_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=address,undefined)
endif()

# forkvm_target(<name>): warnings (as errors unless FORKVM_WERROR=OFF) and the
# repository root as include root, so includes read "vmm/kvm.hpp".
function(forkvm_target name)
  target_compile_options(${name} PRIVATE ${FORKVM_WARNINGS})
  if(FORKVM_WERROR)
    target_compile_options(${name} PRIVATE -Werror)
  endif()
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
endfunction()

# forkvm_library(<name> SOURCES...): the library of one module folder.
function(forkvm_library name)
  add_library(${name} STATIC ${ARGN})
  forkvm_target(${name})
endfunction()
