// The factory of the CUDA backend (cuda_backend.cu): IterD's tables and row scoring on a GPU.
#pragma once

#include <memory>

#include "backend.hpp"
#include "device_array.hpp"
#include "host_stream.hpp"

namespace ulcmod::cuda {

// A backend over an activation matrix in GPU memory (C- or F-ordered, or a slice of one along its
// other axis). It shares ownership of the array.
std::unique_ptr<Backend> make_cuda_backend(std::shared_ptr<const DeviceArray> A, int K,
                                           TablePolicy policy = TablePolicy::Auto);

// A backend over an activation matrix in host memory that does not fit in GPU memory: every table
// build streams it up once (no incremental updates, which would read it whole as well). The tables
// and labels stay in GPU memory.
std::unique_ptr<Backend> make_streamed_cuda_backend(std::shared_ptr<HostStream> A, int K);

}  // namespace ulcmod::cuda
