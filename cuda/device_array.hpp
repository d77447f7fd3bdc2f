// An activation matrix in GPU memory: a strided view (cpp/matrix.hpp) of a device buffer, the
// device it lives on, and whatever keeps the memory alive (an imported DLPack tensor or a buffer
// of our own).
#pragma once

#include <memory>

#include "matrix.hpp"

namespace ulcmod::cuda {

struct DeviceArray {
    Matrix view;  // view.data is a device pointer; strides in elements
    int device = 0;
    std::shared_ptr<void> owner;
};

}  // namespace ulcmod::cuda
