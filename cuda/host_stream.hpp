// Activations in host memory read by a GPU in slabs: ranges along the matrix's outer axis (rows of
// a C-ordered matrix, columns of an F-ordered one), each copied up as it is needed. For matrices
// that do not fit in GPU memory: every pass over A (a table build) streams it over PCIe once.
//
// Two slabs are in flight: while the GPU works on one, the next is copied into pinned memory by
// the host's threads and up by a copy engine, so the transfer hides the work (or the reverse).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <memory>

#include "common.hpp"
#include "matrix.hpp"

namespace ulcmod::cuda {

class HostStream {
public:
    // `host` is C- or F-contiguous host memory kept alive by `keep`; slabs take at most
    // `slab_bytes` (at least one line of the outer axis).
    HostStream(const Matrix& host, std::shared_ptr<void> keep, int device, int64_t slab_bytes);
    ~HostStream();
    HostStream(const HostStream&) = delete;
    HostStream& operator=(const HostStream&) = delete;

    const Matrix& host() const { return host_; }
    int device() const { return device_; }
    // Whether slabs are ranges of rows (C order) rather than of columns (F order).
    bool slabs_of_rows() const { return rows_; }
    // Calls work(slab, first, count) for every slab in order, on `stream`: `slab` is the device
    // view of A's rows (or columns) [first, first + count), valid until the work queued on
    // `stream` by that call has run. Returns when the last slab's copy has been queued.
    void for_each_slab(cudaStream_t stream, const std::function<void(const Matrix&, int64_t, int64_t)>& work);

private:
    void release();  // waits for the copies and work in flight, then frees the buffers and events

    Matrix host_;
    std::shared_ptr<void> keep_;
    int device_;
    bool rows_;
    int64_t line_bytes_, lines_per_slab_;
    void* pinned_[2] = {nullptr, nullptr};
    DeviceBuffer<char> slab_[2];
    cudaStream_t copy_ = nullptr;
    cudaEvent_t uploaded_[2] = {nullptr, nullptr}, consumed_[2] = {nullptr, nullptr};
};

}  // namespace ulcmod::cuda
