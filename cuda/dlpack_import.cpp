#include "dlpack_import.hpp"

#include <stdexcept>
#include <type_traits>

namespace ulcmod::cuda {
namespace {

using dlpack::ManagedTensor;
using dlpack::ManagedTensorVersioned;
constexpr const char* kLegacy = dlpack::kCapsuleName;
constexpr const char* kLegacyUsed = dlpack::kUsedCapsuleName;
constexpr const char* kVersioned = dlpack::kVersionedCapsuleName;
constexpr const char* kVersionedUsed = dlpack::kUsedVersionedCapsuleName;

bool interpreter_alive() {
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsInitialized() && !Py_IsFinalizing();
#else
    return Py_IsInitialized() && !_Py_IsFinalizing();
#endif
}

// Producers' deleters may touch Python objects (NumPy's, CuPy's do), so they run under the GIL.
// At interpreter exit the memory is left to the process teardown.
template <class M>
void release(M* managed) {
    if (!managed->deleter || !interpreter_alive()) return;
    const PyGILState_STATE gil = PyGILState_Ensure();
    managed->deleter(managed);
    PyGILState_Release(gil);
}

// Takes the managed tensor out of a capsule named `name` and renames the capsule `used`.
template <class M>
Imported take(PyObject* capsule, const char* name, const char* used) {
    auto* m = static_cast<M*>(PyCapsule_GetPointer(capsule, name));
    if (m == nullptr) {
        PyErr_Clear();
        throw std::invalid_argument("empty DLPack capsule");
    }
    if constexpr (std::is_same_v<M, ManagedTensorVersioned>)
        if (m->version.major != 1)
            throw std::invalid_argument("DLPack major version " + std::to_string(m->version.major) +
                                        " is not supported (ulcmod reads version 1)");
    Imported out;
    out.tensor = &m->dl_tensor;
    out.owner = std::shared_ptr<void>(m, [](void* p) { release(static_cast<M*>(p)); });
    if (PyCapsule_SetName(capsule, used) != 0) {
        PyErr_Clear();
        throw std::invalid_argument("could not mark the DLPack capsule as used");
    }
    return out;
}

}  // namespace

Imported consume_dlpack(PyObject* capsule) {
    if (!PyCapsule_CheckExact(capsule))
        throw std::invalid_argument("expected a DLPack capsule (the result of __dlpack__())");
    const char* name = PyCapsule_GetName(capsule);
    if (name == nullptr) {
        PyErr_Clear();
        throw std::invalid_argument("a capsule without a name is not a DLPack capsule");
    }
    const std::string n = name;
    if (n == kLegacy) return take<ManagedTensor>(capsule, kLegacy, kLegacyUsed);
    if (n == kVersioned) return take<ManagedTensorVersioned>(capsule, kVersioned, kVersionedUsed);
    if (n == kLegacyUsed || n == kVersionedUsed)
        throw std::invalid_argument("this DLPack capsule was already consumed; call __dlpack__() again");
    throw std::invalid_argument("capsule '" + n + "' is not a DLPack capsule");
}

// The element type of a DLPack tensor as the core's DType.
static DType element_type(const dlpack::DataType& t, const char* name) {
    if (t.lanes == 1) {
        if (t.code == dlpack::kFloat && t.bits == 16) return DType::F16;
        if (t.code == dlpack::kFloat && t.bits == 32) return DType::F32;
        if (t.code == dlpack::kFloat && t.bits == 64) return DType::F64;
        if (t.code == dlpack::kBfloat && t.bits == 16) return DType::BF16;
    }
    throw std::invalid_argument(std::string(name) + " has DLPack dtype (code " + std::to_string(t.code) +
                                ", bits " + std::to_string(t.bits) + ", lanes " + std::to_string(t.lanes) +
                                "); supported are float16, bfloat16, float32 and float64");
}

Matrix dlpack_matrix(const dlpack::Tensor& t, const char* name) {
    if (t.ndim != 2)
        throw std::invalid_argument("Expected a 2-D array " + std::string(name) + " (neurons x samples), got " +
                                    std::to_string(t.ndim) + "-D");
    Matrix m;
    m.dtype = element_type(t.dtype, name);
    const int64_t item = dtype_size(m.dtype);
    if (t.byte_offset % item != 0)
        throw std::invalid_argument(std::string(name) + " starts at a byte offset that is not a whole element");
    m.data = static_cast<const char*>(t.data) + t.byte_offset;
    m.rows = t.shape[0];
    m.cols = t.shape[1];
    m.row_stride = t.strides ? t.strides[0] : m.cols;
    m.col_stride = t.strides ? t.strides[1] : 1;
    return m;
}

std::string dlpack_device_name(int32_t device_type) {
    switch (device_type) {
        case dlpack::kCPU: return "cpu";
        case dlpack::kCUDA: return "cuda";
        case dlpack::kCUDAHost: return "cuda_host";
        case dlpack::kCUDAManaged: return "cuda_managed";
        default: return "device type " + std::to_string(device_type);
    }
}

}  // namespace ulcmod::cuda
