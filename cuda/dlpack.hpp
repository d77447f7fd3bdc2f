// A minimal DLPack consumer (https://dmlc.github.io/dlpack/latest/): the ABI structs, written
// from the specification, and the import of a `__dlpack__()` capsule, legacy ("dltensor") or
// versioned ("dltensor_versioned", major version 1). A consumed capsule is renamed to its
// "used_" name as the protocol requires, and the producer's deleter runs (under the GIL) when the
// last owner of the import lets go.
#pragma once

#include <Python.h>

#include <cstdint>
#include <memory>
#include <string>

#include "matrix.hpp"

namespace ulcmod::cuda::dlpack {

struct Device {
    int32_t device_type;  // kDLCPU = 1, kDLCUDA = 2, kDLCUDAHost = 3, kDLCUDAManaged = 13, ...
    int32_t device_id;
};

struct DataType {
    uint8_t code;  // kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBfloat = 4, ...
    uint8_t bits;
    uint16_t lanes;
};

struct Tensor {
    void* data;
    Device device;
    int32_t ndim;
    DataType dtype;
    int64_t* shape;
    int64_t* strides;  // in elements; null means C-contiguous
    uint64_t byte_offset;
};

struct ManagedTensor {
    Tensor dl_tensor;
    void* manager_ctx;
    void (*deleter)(ManagedTensor* self);
};

struct Version {
    uint32_t major, minor;
};

struct ManagedTensorVersioned {
    Version version;
    void* manager_ctx;
    void (*deleter)(ManagedTensorVersioned* self);
    uint64_t flags;
    Tensor dl_tensor;
};

constexpr int32_t kCPU = 1, kCUDA = 2, kCUDAHost = 3, kCUDAManaged = 13;
constexpr uint8_t kFloat = 2, kBfloat = 4;

// A consumed capsule: the tensor it describes, valid while `owner` (or a copy of it) lives.
struct Imported {
    const Tensor* tensor = nullptr;
    std::shared_ptr<void> owner;
};

// Takes over a DLPack capsule. Throws std::invalid_argument if `capsule` is not one, was already
// consumed, or has a newer major version than 1.
Imported consume(PyObject* capsule);

// The element type of a DLPack tensor as the core's DType; throws std::invalid_argument for
// types other than float16, bfloat16, float32 and float64 (one lane).
DType element_type(const DataType& t, const char* name);

// A 2-D view (element strides) of an imported tensor; throws std::invalid_argument otherwise.
Matrix as_matrix(const Tensor& t, const char* name);

std::string device_name(int32_t device_type);

}  // namespace ulcmod::cuda::dlpack
