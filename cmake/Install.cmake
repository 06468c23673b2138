# What `cmake --install` puts under the prefix: the library with the public headers
# (include/tandem/), the tools, the CMake package (find_package(tandem) → tandem::tandem, its
# dependencies found again through find_dependency) and a pkg-config file. Internal headers are
# not installed: a program that embeds tandem sees only the public API.
include(CMakePackageConfigHelpers)

# The installed tools keep the RPATHs of the libraries they link by path (OpenBLAS's OpenMP build
# is not on the default search path).
set_target_properties(tandem-train tandem-launch tandemctl tandem-checkpoint PROPERTIES
  INSTALL_RPATH_USE_LINK_PATH TRUE)

set(_tandem_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/tandem)
install(TARGETS tandem EXPORT tandemTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS tandem-train tandem-launch tandemctl tandem-checkpoint
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${CMAKE_SOURCE_DIR}/include/tandem DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${CMAKE_BINARY_DIR}/generated/include/tandem/version.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/tandem)
install(EXPORT tandemTargets NAMESPACE tandem:: DESTINATION ${_tandem_cmake_dir})

configure_package_config_file(cmake/tandemConfig.cmake.in
  ${CMAKE_BINARY_DIR}/package/tandemConfig.cmake INSTALL_DESTINATION ${_tandem_cmake_dir})
# 0.x: a minor version may change the API, so only the same minor version is compatible.
write_basic_package_version_file(${CMAKE_BINARY_DIR}/package/tandemConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/package/tandemConfig.cmake
  ${CMAKE_BINARY_DIR}/package/tandemConfigVersion.cmake DESTINATION ${_tandem_cmake_dir})

# pkg-config: the library is static, so its dependencies go in the .private fields
# (pkg-config --static --cflags --libs tandem).
set(TANDEM_PC_LIBS_PRIVATE "${OPENBLAS_OPENMP_LIBRARY} ${XXHASH_LIBRARY} -lcivetweb -ldl -fopenmp")
if(TANDEM_CUDA)
  string(APPEND TANDEM_PC_LIBS_PRIVATE
    " -L${CUDAToolkit_LIBRARY_DIR} -lcublasLt -lcudart ${NCCL_LIBRARY}")
endif()
# Relocatable: the prefix is found from the .pc file's own directory.
file(RELATIVE_PATH TANDEM_PC_TO_PREFIX "/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/")
configure_file(cmake/tandem.pc.in ${CMAKE_BINARY_DIR}/package/tandem.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/package/tandem.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
