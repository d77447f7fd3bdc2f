#include "host_stream.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "parallel.hpp"

namespace ulcmod::cuda {
namespace {

// Copy `bytes` from src to dst on the host's threads (a memory map's pages fault in in parallel).
void parallel_copy(void* dst, const void* src, int64_t bytes) {
    parallel_for(bytes, int64_t{4} << 20, [&](int64_t begin, int64_t end) {
        std::memcpy(static_cast<char*>(dst) + begin, static_cast<const char*>(src) + begin, end - begin);
    });
}

}  // namespace

HostStream::HostStream(const Matrix& host, std::shared_ptr<void> keep, int device, int64_t slab_bytes)
    : host_(host), keep_(std::move(keep)), device_(device) {
    const bool c_order = host.col_stride == 1 && host.row_stride == host.cols;
    const bool f_order = host.row_stride == 1 && host.col_stride == host.rows;
    if (!c_order && !f_order) throw std::invalid_argument("a streamed matrix must be C- or F-contiguous");
    rows_ = c_order && !(f_order && host.rows == 1);  // a single row: columns are the natural slabs
    const int64_t lines = rows_ ? host.rows : host.cols;
    line_bytes_ = (rows_ ? host.cols : host.rows) * host.itemsize();
    lines_per_slab_ = std::clamp<int64_t>(slab_bytes / std::max<int64_t>(1, line_bytes_), 1, std::max<int64_t>(1, lines));
    const int64_t bytes = lines_per_slab_ * line_bytes_;
    DeviceGuard guard(device_);
    try {
        for (int b = 0; b < 2; ++b) {
            ULCMOD_CUDA(cudaHostAlloc(&pinned_[b], std::max<int64_t>(1, bytes), cudaHostAllocDefault));
            slab_[b].resize(bytes);
            ULCMOD_CUDA(cudaEventCreateWithFlags(&uploaded_[b], cudaEventDisableTiming));
            ULCMOD_CUDA(cudaEventCreateWithFlags(&consumed_[b], cudaEventDisableTiming));
        }
        ULCMOD_CUDA(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking));
    } catch (...) {  // no destructor runs for a half-built object: free what was made
        release();
        throw;
    }
}

HostStream::~HostStream() { release(); }

void HostStream::release() {
    int prev = 0;
    cudaGetDevice(&prev);
    cudaSetDevice(device_);
    if (copy_) cudaStreamSynchronize(copy_);
    for (int b = 0; b < 2; ++b) {
        if (consumed_[b]) cudaEventSynchronize(consumed_[b]);
        if (pinned_[b]) cudaFreeHost(pinned_[b]);
        if (uploaded_[b]) cudaEventDestroy(uploaded_[b]);
        if (consumed_[b]) cudaEventDestroy(consumed_[b]);
    }
    if (copy_) cudaStreamDestroy(copy_);
    cudaSetDevice(prev);
}

void HostStream::for_each_slab(cudaStream_t stream, const std::function<void(const Matrix&, int64_t, int64_t)>& work) {
    DeviceGuard guard(device_);
    const int64_t lines = rows_ ? host_.rows : host_.cols;
    const char* base = static_cast<const char*>(host_.data);
    for (int64_t first = 0, i = 0; first < lines; first += lines_per_slab_, ++i) {
        const int b = static_cast<int>(i % 2);
        const int64_t count = std::min(lines_per_slab_, lines - first);
        const int64_t bytes = count * line_bytes_;
        // The buffers' last use, in this pass or the one before, is over (events never recorded
        // yet wait for nothing).
        ULCMOD_CUDA(cudaEventSynchronize(uploaded_[b]));  // pinned_[b] was copied up: reusable
        parallel_copy(pinned_[b], base + first * line_bytes_, bytes);
        ULCMOD_CUDA(cudaStreamWaitEvent(copy_, consumed_[b], 0));  // the work on slab_[b] is done
        ULCMOD_CUDA(cudaMemcpyAsync(slab_[b].data(), pinned_[b], bytes, cudaMemcpyHostToDevice, copy_));
        ULCMOD_CUDA(cudaEventRecord(uploaded_[b], copy_));
        ULCMOD_CUDA(cudaStreamWaitEvent(stream, uploaded_[b], 0));
        Matrix slab = host_;
        slab.data = slab_[b].data();
        if (rows_) {
            slab.rows = count;  // C order: row_stride = cols as on the host
        } else {
            slab.cols = count;  // F order: col_stride = rows as on the host
        }
        work(slab, first, count);
        ULCMOD_CUDA(cudaEventRecord(consumed_[b], stream));
    }
}

}  // namespace ulcmod::cuda
