// Importing DLPack capsules in the CUDA module: the legacy ("dltensor") and versioned
// ("dltensor_versioned", major version 1) capsules of cpp/dlpack.hpp's ABI. A consumed capsule is
// renamed to its "used_" name as the protocol requires, and the producer's deleter runs (under
// the GIL) when the last owner of the import lets go.
#pragma once

#include <Python.h>

#include <memory>
#include <string>

#include "dlpack.hpp"
#include "matrix.hpp"

namespace ulcmod::cuda {

// A consumed capsule: the tensor it describes, valid while `owner` (or a copy of it) lives.
struct Imported {
    const dlpack::Tensor* tensor = nullptr;
    std::shared_ptr<void> owner;
};

// Takes over a DLPack capsule. Throws std::invalid_argument if `capsule` is not one, was already
// consumed, or has a newer major version than 1.
Imported consume_dlpack(PyObject* capsule);

// A 2-D view (element strides) of an imported tensor of float16, bfloat16, float32 or float64;
// throws std::invalid_argument otherwise.
Matrix dlpack_matrix(const dlpack::Tensor& t, const char* name);

std::string dlpack_device_name(int32_t device_type);

}  // namespace ulcmod::cuda
