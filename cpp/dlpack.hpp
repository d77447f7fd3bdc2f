// The DLPack exchange structures (the legacy, unversioned ABI that `__dlpack__()` returns by
// default in a capsule named "dltensor", and the versioned one of DLPack 1.x), written from the
// DLPack specification. Tensors from
// torch, CuPy, JAX and NumPy arrive this way without a dependency on any of them.
#pragma once

#include <cstdint>

namespace ulcmod::dlpack {

enum DeviceType : int32_t { kCPU = 1, kCUDA = 2, kCUDAHost = 3, kCUDAManaged = 13 };
enum TypeCode : uint8_t { kInt = 0, kUInt = 1, kFloat = 2, kBfloat = 4 };

struct Device {
    int32_t device_type;
    int32_t device_id;
};

struct DataType {
    uint8_t code;
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

constexpr const char* kCapsuleName = "dltensor";
constexpr const char* kUsedCapsuleName = "used_dltensor";

// The versioned ABI (DLPack 1.x: `__dlpack__(max_version=(1, 0))`), in a capsule named
// "dltensor_versioned".
struct Version {
    uint32_t major, minor;
};

struct ManagedTensorVersioned {
    Version version;
    void* manager_ctx;
    void (*deleter)(ManagedTensorVersioned* self);
    uint64_t flags;  // bit 0: read-only, bit 1: a copy
    Tensor dl_tensor;
};

constexpr const char* kVersionedCapsuleName = "dltensor_versioned";
constexpr const char* kUsedVersionedCapsuleName = "used_dltensor_versioned";

}  // namespace ulcmod::dlpack
