# FindLlhttp: llhttp, the HTTP/1.x parser of Node.js, as Debian's node-llhttp ships it.
#
# Debian ships no library, only the generated C sources (/usr/share/llhttp/{llhttp,api,http}.c)
# and their header (/usr/share/include/llhttp/llhttp.h). This module finds both and builds the
# sources into a static library.
#
# Result:
#   llhttp::llhttp      static library target; its include directory is a SYSTEM one, and it
#                       defines LLHTTP_STRICT_MODE=1 for itself and its users (strict mode: CR
#                       must be followed by LF, LF must follow the header section, no data after
#                       `Connection: close`). No lenient flag is ever set by Strata.
#   Llhttp_FOUND, Llhttp_VERSION, Llhttp_INCLUDE_DIR, Llhttp_SOURCE_DIR
#
# Hints: Llhttp_ROOT (a prefix holding share/include/llhttp/llhttp.h and share/llhttp/*.c), or
# Llhttp_INCLUDE_DIR and Llhttp_SOURCE_DIR set directly.

find_path(Llhttp_INCLUDE_DIR
  NAMES llhttp.h
  PATH_SUFFIXES share/include/llhttp include/llhttp llhttp
  PATHS /usr /usr/local
  DOC "Directory holding llhttp.h")
find_path(Llhttp_SOURCE_DIR
  NAMES llhttp.c
  PATH_SUFFIXES share/llhttp src/llhttp llhttp
  PATHS /usr /usr/local
  DOC "Directory holding llhttp.c, api.c and http.c")

if(Llhttp_INCLUDE_DIR AND EXISTS "${Llhttp_INCLUDE_DIR}/llhttp.h")
  file(STRINGS "${Llhttp_INCLUDE_DIR}/llhttp.h" _llhttp_version_lines
    REGEX "^#define LLHTTP_VERSION_(MAJOR|MINOR|PATCH) [0-9]+")
  foreach(_part MAJOR MINOR PATCH)
    string(REGEX REPLACE ".*#define LLHTTP_VERSION_${_part} ([0-9]+).*" "\\1" _llhttp_${_part}
      "${_llhttp_version_lines}")
  endforeach()
  set(Llhttp_VERSION "${_llhttp_MAJOR}.${_llhttp_MINOR}.${_llhttp_PATCH}")
  unset(_llhttp_version_lines)
endif()

set(_llhttp_sources "")
if(Llhttp_SOURCE_DIR)
  foreach(_file llhttp.c api.c http.c)
    if(EXISTS "${Llhttp_SOURCE_DIR}/${_file}")
      list(APPEND _llhttp_sources "${Llhttp_SOURCE_DIR}/${_file}")
    endif()
  endforeach()
  list(LENGTH _llhttp_sources _llhttp_source_count)
  if(NOT _llhttp_source_count EQUAL 3)
    set(_llhttp_sources "")
  endif()
endif()
set(Llhttp_SOURCES "${_llhttp_sources}")

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Llhttp
  REQUIRED_VARS Llhttp_SOURCES Llhttp_INCLUDE_DIR Llhttp_SOURCE_DIR
  VERSION_VAR Llhttp_VERSION
  REASON_FAILURE_MESSAGE "install Debian's node-llhttp (scripts/deps.sh build)")
mark_as_advanced(Llhttp_INCLUDE_DIR Llhttp_SOURCE_DIR)

if(Llhttp_FOUND AND NOT TARGET llhttp::llhttp)
  # Third-party generated C: compiled as C, its warnings never errors, not part of our -Werror
  # set (strata_target_defaults is not applied). Global sanitizer flags still reach it.
  add_library(strata_llhttp STATIC ${Llhttp_SOURCES})
  add_library(llhttp::llhttp ALIAS strata_llhttp)
  set_target_properties(strata_llhttp PROPERTIES
    LINKER_LANGUAGE C
    C_STANDARD 99
    POSITION_INDEPENDENT_CODE OFF
    OUTPUT_NAME strata_llhttp)
  # Installed beside Strata's libraries (as strata::llhttp, a link-only dependency of
  # strata::protocols); its header is not: no public Strata header includes it.
  set_target_properties(strata_llhttp PROPERTIES EXPORT_NAME llhttp)
  target_include_directories(strata_llhttp SYSTEM PUBLIC "$<BUILD_INTERFACE:${Llhttp_INCLUDE_DIR}>")
  target_compile_definitions(strata_llhttp PUBLIC LLHTTP_STRICT_MODE=1)
  target_compile_options(strata_llhttp PRIVATE -Wno-error)
endif()
unset(_llhttp_sources)
