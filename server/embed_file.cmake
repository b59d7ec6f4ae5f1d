# cmake -DINPUT=<file> -DOUTPUT=<cpp> -DNAMESPACE=<ns> -DFUNCTION=<name> -P embed_file.cmake
# Writes a .cpp defining `std::string_view <ns>::<name>() noexcept` that returns
# the bytes of INPUT (as a char array, so any byte and any size is fine).
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" hex_length)
math(EXPR size "${hex_length} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," bytes "${hex}")
string(REGEX REPLACE "(([^,]*,){16})" "\\1\n    " bytes "${bytes}")
file(WRITE "${OUTPUT}.tmp"
"// Generated from ${INPUT} by server/embed_file.cmake. Do not edit.\n"
"#include <string_view>\n\n"
"namespace ${NAMESPACE} {\n\n"
"namespace {\n"
"// One extra byte so an empty file still makes a valid array.\n"
"constexpr char embedded_bytes[] = {\n    ${bytes}'\\0'};\n"
"}  // namespace\n\n"
"std::string_view ${FUNCTION}() noexcept { return std::string_view(embedded_bytes, ${size}); }\n\n"
"}  // namespace ${NAMESPACE}\n")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
