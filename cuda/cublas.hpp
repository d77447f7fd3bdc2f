// cuBLAS for the dense products of the PCA and FastICA passes: an error check, and one handle
// per device, created on first use and kept for the life of the process (it runs on the legacy
// default stream; its settings are never changed, so threads may share it).
#pragma once

#include <cublas_v2.h>

#include <mutex>
#include <stdexcept>
#include <string>

#include "common.hpp"

namespace ulcmod::cuda {

#define ULCMOD_CUBLAS(call)                                                                              \
    do {                                                                                                 \
        const cublasStatus_t ulcmod_st_ = (call);                                                        \
        if (ulcmod_st_ != CUBLAS_STATUS_SUCCESS)                                                         \
            throw std::runtime_error(std::string("cuBLAS error ") + cublasGetStatusName(ulcmod_st_) + " in " + \
                                     #call + " at " + __FILE__ + ":" + std::to_string(__LINE__));        \
    } while (0)

inline cublasHandle_t cublas_handle() {
    constexpr int kMaxDevices = 64;
    static std::mutex mutex;
    static cublasHandle_t handles[kMaxDevices] = {};
    int dev = 0;
    ULCMOD_CUDA(cudaGetDevice(&dev));
    if (dev < 0 || dev >= kMaxDevices) throw std::runtime_error("device index out of range");
    std::lock_guard<std::mutex> lock(mutex);
    if (!handles[dev]) ULCMOD_CUBLAS(cublasCreate(&handles[dev]));
    return handles[dev];
}

}  // namespace ulcmod::cuda
