# Helpers shared by every Strata target.
#
# strata_target_defaults(<target>): warnings as errors on our own code, C++20.
# strata_add_layer(<name> SOURCES ... LINK ...): a static library strata::<name> whose
#   include/ is PUBLIC and src/ PRIVATE, linking only the layers given (so a layer's headers
#   cannot see a layer above it). Installed headers all land in <prefix>/include/strata/.
# strata_check_headers(<target> <include-dir>): compiles one translation unit per public header
#   against <target> alone, proving each header is self-contained and respects the layering.

function(strata_target_defaults target)
  target_compile_features(${target} PUBLIC cxx_std_20)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror -Wno-missing-field-initializers)
  if(STRATA_ASSERTIONS)
    target_compile_definitions(${target} PUBLIC STRATA_ASSERTIONS=1)
  endif()
endfunction()

function(strata_add_layer name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LINK;PRIVATE_LINK" ${ARGN})
  add_library(strata_${name} STATIC ${ARG_SOURCES})
  add_library(strata::${name} ALIAS strata_${name})
  # Installed and exported as strata::<name> too (cmake/StrataInstall.cmake).
  set_target_properties(strata_${name} PROPERTIES OUTPUT_NAME strata_${name} EXPORT_NAME ${name})
  target_include_directories(strata_${name}
    PUBLIC $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include> $<INSTALL_INTERFACE:include>
    PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_link_libraries(strata_${name} PUBLIC ${ARG_LINK} PRIVATE ${ARG_PRIVATE_LINK})
  strata_target_defaults(strata_${name})
endfunction()

function(strata_check_headers target include_dir)
  file(GLOB_RECURSE headers RELATIVE "${include_dir}" CONFIGURE_DEPENDS "${include_dir}/*.hpp")
  set(sources "")
  foreach(header IN LISTS headers)
    string(MAKE_C_IDENTIFIER "${header}" id)
    set(src "${CMAKE_CURRENT_BINARY_DIR}/check_headers/${id}.cpp")
    file(CONFIGURE OUTPUT "${src}" CONTENT "#include <${header}>\n")
    list(APPEND sources "${src}")
  endforeach()
  add_library(${target}_check_headers OBJECT ${sources})
  target_link_libraries(${target}_check_headers PRIVATE ${target})
  strata_target_defaults(${target}_check_headers)
endfunction()
