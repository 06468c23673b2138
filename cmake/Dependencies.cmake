# Finds every dependency named in TOOLCHAIN.md, so that each layer can link what it needs.
# scripts/install-deps installs all of them on Debian 12.

find_package(OpenMP REQUIRED COMPONENTS CXX)
# OpenBLAS built on OpenMP (Debian's libopenblas0-openmp), linked by path with an RPATH: its GEMMs
# then run on the same OpenMP thread pool as our kernels. The pthreads build would keep a second
# pool whose threads spin against OpenMP's on a small machine (measured: half the speed on 2 cores).
set(_openblas_dir /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp)
find_library(OPENBLAS_OPENMP_LIBRARY openblas PATHS ${_openblas_dir} NO_DEFAULT_PATH)
find_path(CBLAS_INCLUDE_DIR cblas.h
  PATHS /usr/include/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp NO_DEFAULT_PATH)
if(NOT OPENBLAS_OPENMP_LIBRARY OR NOT CBLAS_INCLUDE_DIR)
  message(FATAL_ERROR "OpenBLAS (OpenMP build) not found in ${_openblas_dir}; "
                      "run scripts/install-deps (package libopenblas-openmp-dev)")
endif()
find_package(tomlplusplus CONFIG REQUIRED)
find_package(nlohmann_json CONFIG REQUIRED)
find_package(GTest CONFIG REQUIRED)
find_package(MPI REQUIRED COMPONENTS C CXX)
find_package(ucx CONFIG REQUIRED)
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_package(prometheus-cpp CONFIG REQUIRED)
find_package(civetweb CONFIG REQUIRED)
# xxHash (XXH64) checksums every checkpoint shard.
find_path(XXHASH_INCLUDE_DIR xxhash.h)
find_library(XXHASH_LIBRARY xxhash)
if(NOT XXHASH_INCLUDE_DIR OR NOT XXHASH_LIBRARY)
  message(FATAL_ERROR "xxHash not found; run scripts/install-deps (package libxxhash-dev)")
endif()

# CUDA is optional: ON where nvcc is found. The CUDA code must always compile where the toolkit
# exists (CI has it, without a GPU); at run time the CPU path is used when no GPU answers.
include(CheckLanguage)
check_language(CUDA)
find_path(NCCL_INCLUDE_DIR nccl.h HINTS /usr/local/cuda/include)
if(CMAKE_CUDA_COMPILER AND NCCL_INCLUDE_DIR)
  set(_tandem_cuda_default ON)
elseif(CMAKE_CUDA_COMPILER)
  message(STATUS "tandem: nvcc found but not nccl.h: building without CUDA")
  set(_tandem_cuda_default OFF)
else()
  set(_tandem_cuda_default OFF)
endif()
option(TANDEM_CUDA "Build the CUDA device, kernels and NCCL backend" ${_tandem_cuda_default})
if(TANDEM_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    # Hopper's own code (sm_90a: what the FP8 GEMMs need) and compute_90 PTX that later GPUs
    # compile at load time; "native" would fail on machines without a GPU.
    set(CMAKE_CUDA_ARCHITECTURES 90a-real 90-virtual)
  endif()
  set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
  enable_language(CUDA)
  # CMake 3.25 does not know that nvcc 13 takes -std=c++20; tell it, so targets may use C++20.
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA_STANDARD 20)
  find_package(CUDAToolkit REQUIRED)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} REQUIRED)
  find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} REQUIRED)
endif()
message(STATUS "tandem: CUDA=${TANDEM_CUDA} ARCH=${TANDEM_ARCH}")
