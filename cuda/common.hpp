// Shared pieces of the CUDA module: error checks that turn a failed CUDA or cuBLAS call into a C++
// exception naming the call, a device buffer that frees itself, and a guard that makes a device
// current for the duration of a call.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

namespace ulcmod::cuda {

[[noreturn]] inline void throw_cuda(cudaError_t e, const char* call, const char* file, int line) {
    throw std::runtime_error(std::string("CUDA error ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) +
                             ") in " + call + " at " + file + ":" + std::to_string(line));
}

// Every CUDA runtime call goes through this; kernel launches are followed by ULCMOD_CUDA_LAUNCHED().
#define ULCMOD_CUDA(call)                                                                    \
    do {                                                                                     \
        const cudaError_t ulcmod_err_ = (call);                                              \
        if (ulcmod_err_ != cudaSuccess) ::ulcmod::cuda::throw_cuda(ulcmod_err_, #call, __FILE__, __LINE__); \
    } while (0)
#define ULCMOD_CUDA_LAUNCHED() ULCMOD_CUDA(cudaGetLastError())

// Owns `n` elements of device memory (uninitialised). Moves, never copies.
template <class T>
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    explicit DeviceBuffer(size_t n) { resize(n); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), n_(std::exchange(o.n_, 0)) {}
    DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
        if (this != &o) {
            release();
            ptr_ = std::exchange(o.ptr_, nullptr);
            n_ = std::exchange(o.n_, 0);
        }
        return *this;
    }
    ~DeviceBuffer() { release(); }

    // Contents are not kept. Grows only: a smaller request reuses the allocation.
    void resize(size_t n) {
        if (n <= capacity_) {
            n_ = n;
            return;
        }
        release();
        void* p = nullptr;
        ULCMOD_CUDA(cudaMalloc(&p, (n ? n : 1) * sizeof(T)));
        ptr_ = static_cast<T*>(p);
        n_ = capacity_ = n;
    }
    T* data() { return ptr_; }
    const T* data() const { return ptr_; }
    size_t size() const { return n_; }

    void upload(const T* host, size_t n, cudaStream_t stream) {
        resize(n);
        if (n) ULCMOD_CUDA(cudaMemcpyAsync(ptr_, host, n * sizeof(T), cudaMemcpyHostToDevice, stream));
    }

private:
    void release() {
        if (ptr_) cudaFree(ptr_);  // errors here (e.g. at process exit) cannot be reported
        ptr_ = nullptr;
        n_ = capacity_ = 0;
    }
    T* ptr_ = nullptr;
    size_t n_ = 0, capacity_ = 0;
};

// Makes `device` current until the end of the scope.
class DeviceGuard {
public:
    explicit DeviceGuard(int device) {
        ULCMOD_CUDA(cudaGetDevice(&previous_));
        if (previous_ != device) ULCMOD_CUDA(cudaSetDevice(device));
    }
    ~DeviceGuard() {
        int now = -1;
        if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
    }
    DeviceGuard(const DeviceGuard&) = delete;
    DeviceGuard& operator=(const DeviceGuard&) = delete;

private:
    int previous_ = 0;
};

// Multiprocessors of the current device (for sizing persistent grids).
inline int sm_count() {
    int dev = 0, n = 0;
    ULCMOD_CUDA(cudaGetDevice(&dev));
    ULCMOD_CUDA(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    return n;
}

}  // namespace ulcmod::cuda
