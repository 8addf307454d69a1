# `cmake --install`: the static libraries, the headers under include/strata/, a CMake package
# (find_package(Strata) -> strata::strata and strata::core, ::transports, ::protocols,
# ::streams, and the test kit strata::testing) and a pkg-config file (strata.pc).
#
# The libraries are static, so what they link goes with them: Threads and OpenSSL are found
# again by StrataConfig.cmake, and llhttp (built from Debian's generated C, private to
# strata::protocols) is installed as libstrata_llhttp.a, a link-only dependency.

include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(STRATA_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/Strata)

install(TARGETS strata_core strata_transports strata_protocols strata_streams strata_testing
  strata_llhttp strata
  EXPORT StrataTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
foreach(layer IN ITEMS core transports protocols streams testing)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${layer}/include/strata
    DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.hpp")
endforeach()
install(FILES ${PROJECT_BINARY_DIR}/generated/include/strata/version.hpp
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/strata)

install(EXPORT StrataTargets NAMESPACE strata:: DESTINATION ${STRATA_INSTALL_CMAKEDIR})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/StrataConfig.cmake.in
  ${PROJECT_BINARY_DIR}/StrataConfig.cmake INSTALL_DESTINATION ${STRATA_INSTALL_CMAKEDIR})
# 0.x: a minor release may break the API, so only the same minor version is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/StrataConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/StrataConfig.cmake ${PROJECT_BINARY_DIR}/StrataConfigVersion.cmake
  DESTINATION ${STRATA_INSTALL_CMAKEDIR})

# pkg-config: paths relative to the .pc file's directory, so that the tree can be moved (and
# `cmake --install --prefix` may choose another prefix than the configured one).
file(RELATIVE_PATH STRATA_PC_TO_PREFIX /root/${CMAKE_INSTALL_LIBDIR}/pkgconfig /root)
configure_file(${CMAKE_CURRENT_LIST_DIR}/strata.pc.in ${PROJECT_BINARY_DIR}/strata.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/strata.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
