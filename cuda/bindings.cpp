// The optional extension module ulcmod._cuda: activation matrices in GPU memory (imported through
// DLPack or copied from the host), the CUDA backend of IterD handed to ulcmod._core.IterDState in a
// capsule, and the GPU passes of the initialisation (PCA), z-scoring and FastICA. It imports on a
// machine without a GPU and says so (device_count() == 0). Arguments arrive validated by the Python
// layer (python/ulcmod/_device.py); the checks here keep a direct caller from crashing.
#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <string>

#include "backend.hpp"
#include "common.hpp"
#include "cuda_backend.hpp"
#include "device_array.hpp"
#include "dlpack_import.hpp"
#include "ica.hpp"
#include "binding_helpers.hpp"
#include "pca.hpp"
#include "tables.cuh"
#include "zscore.hpp"

namespace py = pybind11;
using namespace ulcmod;
using namespace ulcmod::cuda;

namespace {

using ArrayPtr = std::shared_ptr<DeviceArray>;

ArrayPtr from_dlpack(const py::object& capsule) {
    if (!PyCapsule_CheckExact(capsule.ptr()))
        throw py::type_error("expected a DLPack capsule (the result of A.__dlpack__())");
    Imported imp = consume_dlpack(capsule.ptr());
    const dlpack::Tensor& t = *imp.tensor;
    auto arr = std::make_shared<DeviceArray>();
    arr->view = dlpack_matrix(t, "A");
    if (t.device.device_type != dlpack::kCUDA && t.device.device_type != dlpack::kCUDAManaged)
        throw py::value_error("the array is on " + dlpack_device_name(t.device.device_type) +
                              " memory, not on a CUDA device");
    arr->device = t.device.device_id;
    arr->owner = std::move(imp.owner);
    return arr;
}

// The element type of a host array: float16/32/64, or bfloat16 as ml_dtypes.bfloat16 or as the
// uint16 bit pattern of one.
DType host_dtype(const py::dtype& dt) {
    if (dt.kind() == 'f' && dt.itemsize() == 2) return DType::F16;
    if (dt.kind() == 'f' && dt.itemsize() == 4) return DType::F32;
    if (dt.kind() == 'f' && dt.itemsize() == 8) return DType::F64;
    if (dt.itemsize() == 2 && (dt.kind() == 'u' || py::str(dt.attr("name")).cast<std::string>() == "bfloat16"))
        return DType::BF16;
    throw py::type_error("A must be float16, bfloat16, float32 or float64");
}

py::dtype numpy_dtype(DType d) {
    switch (d) {
        case DType::F16: return py::dtype("float16");
        case DType::BF16: return py::dtype("uint16");  // bfloat16 bits; the Python layer views them
        case DType::F32: return py::dtype("float32");
        case DType::F64: return py::dtype("float64");
    }
    throw std::logic_error("unknown dtype");
}

const char* dtype_name(DType d) {
    switch (d) {
        case DType::F16: return "float16";
        case DType::BF16: return "bfloat16";
        case DType::F32: return "float32";
        case DType::F64: return "float64";
    }
    return "?";
}

// The view of a C- or F-contiguous host array (dtype float16/bfloat16/float32/float64), in its
// own element order: an F-ordered array (a transposed samples x neurons file, say) is a Colwise
// view, which every kernel reads.
Matrix host_matrix(const py::array& a) {
    if (a.ndim() != 2) throw py::value_error("expected a 2-D array");
    const bool c_order = a.flags() & py::array::c_style;
    if (!c_order && !(a.flags() & py::array::f_style)) throw py::value_error("expected a C- or F-contiguous array");
    Matrix m;
    m.data = a.data();
    m.dtype = host_dtype(a.dtype());
    m.rows = a.shape(0);
    m.cols = a.shape(1);
    m.row_stride = c_order ? m.cols : 1;
    m.col_stride = c_order ? 1 : m.rows;
    return m;
}

// A device copy of a host array in its own element order (host_matrix): one straight memcpy.
ArrayPtr from_host(const py::array& a, int device, bool empty) {
    auto arr = std::make_shared<DeviceArray>();
    arr->view = host_matrix(a);
    arr->device = device;
    const size_t bytes = static_cast<size_t>(a.shape(0)) * a.shape(1) * arr->view.itemsize();
    DeviceGuard guard(device);
    void* p = nullptr;
    ULCMOD_CUDA(cudaMalloc(&p, bytes ? bytes : 1));
    arr->owner = std::shared_ptr<void>(p, [device](void* q) {
        int prev = 0;
        cudaGetDevice(&prev);
        cudaSetDevice(device);
        cudaFree(q);
        cudaSetDevice(prev);
    });
    arr->view.data = p;
    if (!empty && bytes) {
        py::gil_scoped_release release;
        ULCMOD_CUDA(cudaMemcpy(p, a.data(), bytes, cudaMemcpyHostToDevice));
    }
    return arr;
}

// A host copy, C-ordered for Rowwise views and F-ordered for Colwise ones (no transposition).
py::array to_host(const DeviceArray& A) {
    const Matrix& v = A.view;
    const int64_t item = v.itemsize();
    const bool rowwise = layout_of(v) == Layout::Rowwise;
    std::vector<py::ssize_t> shape{v.rows, v.cols};
    std::vector<py::ssize_t> strides = rowwise ? std::vector<py::ssize_t>{v.cols * item, item}
                                               : std::vector<py::ssize_t>{item, v.rows * item};
    py::array out(numpy_dtype(v.dtype), shape, strides);
    void* dst = out.mutable_data();
    DeviceGuard guard(A.device);
    py::gil_scoped_release release;
    if (rowwise)
        ULCMOD_CUDA(cudaMemcpy2D(dst, v.cols * item, v.data, v.row_stride * item, v.cols * item, v.rows,
                                 cudaMemcpyDeviceToHost));
    else
        ULCMOD_CUDA(cudaMemcpy2D(dst, v.rows * item, v.data, v.col_stride * item, v.rows * item, v.cols,
                                 cudaMemcpyDeviceToHost));
    return out;
}

py::object backend_capsule(std::unique_ptr<Backend> backend) {
    PyObject* cap = PyCapsule_New(backend.get(), kBackendCapsule, [](PyObject* o) {
        // Deleted here only while nobody took it over (IterDState renames the capsule).
        if (PyCapsule_IsValid(o, kBackendCapsule))
            delete static_cast<Backend*>(PyCapsule_GetPointer(o, kBackendCapsule));
    });
    if (!cap) throw py::error_already_set();
    backend.release();
    return py::reinterpret_steal<py::object>(cap);
}

// The streamed CUDA backend over a C- or F-contiguous host array (held alive by the backend).
py::object streamed_backend(const py::array& a, int K, int device, int64_t slab_bytes) {
    const Matrix host = host_matrix(a);
    // The array outlives the backend; the backend may be freed without the GIL held.
    std::shared_ptr<void> keep(new py::object(a), [](void* p) {
        py::gil_scoped_acquire gil;
        delete static_cast<py::object*>(p);
    });
    auto stream = std::make_shared<HostStream>(host, std::move(keep), device, slab_bytes);
    return backend_capsule(make_streamed_cuda_backend(std::move(stream), K));
}

Matrix side_view(const DeviceArray& A, const std::string& side) {
    if (side == "neurons") return A.view;
    if (side == "samples") return A.view.transposed();
    throw py::value_error("side must be 'neurons' or 'samples', got '" + side + "'");
}

// One table of `side` (given the other side's labels) built outside IterD: the test and benchmark
// entry point to the kernels. Construct with the GIL held; build() may run without it.
struct TableJob {
    TableJob(const DeviceArray& A, const py::array_t<int32_t, py::array::c_style>& labels, int K_,
             const std::string& side)
        : V(side_view(A, side)), K(K_), device(A.device) {
        if (labels.ndim() != 1 || labels.shape(0) != V.cols)
            throw py::value_error("labels must have one entry per column of the table's view");
        lab.assign(labels.data(), labels.data() + V.cols);
        for (int32_t k : lab)
            if (k < 0 || k >= K) throw py::value_error("labels out of range [0, K)");
    }
    void prepare() {  // on `device`
        d_lab.upload(lab.data(), lab.size(), 0);
        table.resize(static_cast<size_t>(V.rows) * K);
        ULCMOD_CUDA(cudaMemset(table.data(), 0xff, table.size() * sizeof(double)));  // poison: NaN everywhere
    }
    void build() { build_table(V, d_lab.data(), lab.data(), K, table.data(), ws, 0); }

    Matrix V;
    int K, device;
    std::vector<int32_t> lab;
    TableWorkspace ws;
    DeviceBuffer<int32_t> d_lab;
    DeviceBuffer<double> table;
};

// Milliseconds of each of `repeat` runs of f() on the legacy default stream, timed with events.
template <class F>
std::vector<double> time_ms(int repeat, F&& f) {
    cudaEvent_t start, stop;
    ULCMOD_CUDA(cudaEventCreate(&start));
    ULCMOD_CUDA(cudaEventCreate(&stop));
    std::vector<double> ms;
    for (int i = 0; i < repeat; ++i) {
        ULCMOD_CUDA(cudaEventRecord(start, 0));
        f();
        ULCMOD_CUDA(cudaEventRecord(stop, 0));
        ULCMOD_CUDA(cudaEventSynchronize(stop));
        float t = 0.0f;
        ULCMOD_CUDA(cudaEventElapsedTime(&t, start, stop));
        ms.push_back(t);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    return ms;
}

py::array_t<double> build_table_py(const DeviceArray& A, const py::array_t<int32_t, py::array::c_style>& labels,
                                   int K, const std::string& side) {
    TableJob job(A, labels, K, side);
    py::array_t<double> out({job.V.rows, static_cast<int64_t>(K)});
    double* dst = out.mutable_data();
    py::gil_scoped_release release;
    DeviceGuard guard(job.device);
    job.prepare();
    job.build();
    ULCMOD_CUDA(cudaMemcpy(dst, job.table.data(), job.table.size() * sizeof(double), cudaMemcpyDeviceToHost));
    return out;
}

std::vector<double> time_table_py(const DeviceArray& A, const py::array_t<int32_t, py::array::c_style>& labels,
                                  int K, const std::string& side, int repeat) {
    TableJob job(A, labels, K, side);
    py::gil_scoped_release release;
    DeviceGuard guard(job.device);
    job.prepare();
    job.build();  // warm-up; sizes the workspace
    return time_ms(repeat, [&] { job.build(); });
}

// Device-to-device copy bandwidth (bytes read + written per second) over `bytes` bytes, median of
// `repeat` timed copies, after a warm-up.
double copy_bandwidth(int device, int64_t bytes, int repeat) {
    py::gil_scoped_release release;
    DeviceGuard guard(device);
    DeviceBuffer<uint8_t> a(bytes), b(bytes);
    ULCMOD_CUDA(cudaMemset(a.data(), 0x5a, bytes));
    ULCMOD_CUDA(cudaMemcpy(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice));
    std::vector<double> ms = time_ms(repeat, [&] {
        ULCMOD_CUDA(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, 0));
    });
    std::sort(ms.begin(), ms.end());
    return 2.0 * static_cast<double>(bytes) / (ms[ms.size() / 2] * 1e-3);
}

int device_count() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky-free error so later calls start clean
        return 0;
    }
    return n;
}

std::string runtime_status() {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
    }
    return n > 0 ? "ok" : "no CUDA device";
}

// FastICA on the GPU: the computation precision is float32 or float64 (`float32`). The result is
// the core's Whitening class (X1 stays on the device).
py::object ica_whiten_py(const DeviceArray& X, int64_t c, bool float32) {
    if (c < 1 || c > std::min(X.view.rows, X.view.cols)) throw py::value_error("n_components must be in [1, min(n, p)]");
    auto run = [&](auto tag) {
        using T = decltype(tag);
        DeviceWhitening<T> w;
        {
            py::gil_scoped_release release;
            w = whiten_device<T>(X, c);
        }
        return py::module_::import("ulcmod._core")
            .attr("Whitening")(to_numpy(w.w.mean), to_numpy(w.w.K, c, X.view.cols), w.X1,
                               static_cast<double>(w.w.smallest_ratio));
    };
    return float32 ? run(float{}) : run(double{});
}

py::tuple ica_iterate_py(const IcaMatrix& X1, const py::array& W0, const std::string& fun, double alpha,
                         bool deflation, double tol, int max_iter) {
    const IcaSettings s{contrast_from_name(fun), alpha, deflation, tol, max_iter};
    const int64_t c = X1.rows;
    auto run = [&](auto tag) {
        using T = decltype(tag);
        const auto w = W0.cast<py::array_t<T, py::array::c_style | py::array::forcecast>>();
        if (w.ndim() != 2 || w.shape(0) != c || w.shape(1) != c)
            throw py::value_error("w_init must be (n_components, n_components)");
        IcaRun<T> r;
        {
            py::gil_scoped_release release;
            r = iterate_device<T>(X1, w.data(), s);
        }
        return py::tuple(py::make_tuple(to_numpy(r.W, c, c), r.n_iter, r.converged));
    };
    return X1.f32 ? run(float{}) : run(double{});
}

py::array ica_to_host(const IcaMatrix& X1) {
    DeviceGuard guard(X1.device);
    if (X1.f32) {
        py::array_t<float> out({X1.rows, X1.cols});
        ULCMOD_CUDA(cudaMemcpy(out.mutable_data(), X1.f.data(), X1.rows * X1.cols * sizeof(float), cudaMemcpyDeviceToHost));
        return out;
    }
    py::array_t<double> out({X1.rows, X1.cols});
    ULCMOD_CUDA(cudaMemcpy(out.mutable_data(), X1.d.data(), X1.rows * X1.cols * sizeof(double), cudaMemcpyDeviceToHost));
    return out;
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
    m.doc() = R"pbdoc(GPU backend of ulcmod: device arrays, IterD's CUDA tables, PCA, z-scoring and FastICA.)pbdoc";

    m.def("device_count", &device_count, R"pbdoc(Number of CUDA devices (0 without a GPU or driver).)pbdoc");
    m.def("runtime_status", &runtime_status,
          R"pbdoc('ok', or why the CUDA runtime sees no device (the runtime's error name and message).)pbdoc");
    m.def(
        "device_name",
        [](int device) {
            cudaDeviceProp p;
            ULCMOD_CUDA(cudaGetDeviceProperties(&p, device));
            return std::string(p.name);
        },
        py::arg("device") = 0);
    m.def("build_info", []() {
        py::dict d;
        d["cuda_runtime"] = CUDART_VERSION;
        d["cublas"] = CUBLAS_VERSION;
        d["architectures"] = std::string(ULCMOD_CUDA_ARCHITECTURES);
        return d;
    }, R"pbdoc(What this module was built with: CUDA runtime and cuBLAS versions, GPU architectures.)pbdoc");
    m.def(
        "memory_info",
        [](int device) {
            DeviceGuard guard(device);
            size_t free = 0, total = 0;
            ULCMOD_CUDA(cudaMemGetInfo(&free, &total));
            return py::make_tuple(free, total);
        },
        py::arg("device") = 0, R"pbdoc((free, total) bytes of the device's memory.)pbdoc");
    m.def("streamed_backend", &streamed_backend, py::arg("array"), py::arg("K"), py::arg("device") = 0,
          py::arg("slab_bytes") = int64_t{256} << 20,
          R"pbdoc(The CUDA IterD backend over a C- or F-contiguous host array that is streamed up in slabs of at
most `slab_bytes` for every table build, in a capsule for ulcmod._core.IterDState.)pbdoc");
    m.def("_set_rowwise_variant", &set_rowwise_variant, py::arg("variant"),
          R"pbdoc(Benchmarks only: the Rowwise table kernel's variant (cuda/tables.cu).)pbdoc");
    m.def("copy_bandwidth", &copy_bandwidth, py::arg("device"), py::arg("bytes"), py::arg("repeat") = 20,
          R"pbdoc(Measured device-to-device copy bandwidth in bytes (read + written) per second.)pbdoc");
    m.def(
        "describe_dlpack",
        [](const py::object& capsule) {
            if (!PyCapsule_CheckExact(capsule.ptr())) throw py::type_error("expected a DLPack capsule");
            Imported imp = consume_dlpack(capsule.ptr());
            const dlpack::Tensor& t = *imp.tensor;
            py::dict d;
            d["device"] = dlpack_device_name(t.device.device_type);
            d["device_id"] = t.device.device_id;
            py::list shape, strides;
            for (int i = 0; i < t.ndim; ++i) shape.append(t.shape[i]);
            if (t.strides)
                for (int i = 0; i < t.ndim; ++i) strides.append(t.strides[i]);
            d["shape"] = py::tuple(shape);
            d["strides"] = t.strides ? py::object(py::tuple(strides)) : py::none();
            d["dtype"] = py::make_tuple(int(t.dtype.code), int(t.dtype.bits), int(t.dtype.lanes));
            if (t.ndim == 2) d["element"] = dtype_name(dlpack_matrix(t, "A").dtype);
            return d;
        },
        py::arg("capsule"),
        R"pbdoc(Consume a DLPack capsule (any device) and describe it: device, shape, strides, dtype.)pbdoc");

    py::class_<DeviceArray, ArrayPtr>(m, "DeviceArray", R"pbdoc(
A 2-D activation matrix in GPU memory (float16, bfloat16, float32 or float64), imported from a
DLPack capsule without a copy or copied from a host array.
)pbdoc")
        .def_static("from_dlpack", &from_dlpack, py::arg("capsule"),
                    R"pbdoc(Import a CUDA tensor from its DLPack capsule (the capsule is consumed).)pbdoc")
        .def_static(
            "from_host", [](const py::array& a, int device) { return from_host(a, device, false); },
            py::arg("array"), py::arg("device") = 0,
            R"pbdoc(Copy a C- or F-contiguous host array to the device, keeping its element order.)pbdoc")
        .def_static(
            "empty", [](const py::array& like, int device) { return from_host(like, device, true); },
            py::arg("like"), py::arg("device") = 0,
            R"pbdoc(An uninitialised device array with the shape, dtype and element order of a host array.)pbdoc")
        .def_property_readonly("shape", [](const DeviceArray& a) { return py::make_tuple(a.view.rows, a.view.cols); })
        .def_property_readonly("dtype", [](const DeviceArray& a) { return std::string(dtype_name(a.view.dtype)); })
        .def_property_readonly("device", [](const DeviceArray& a) { return a.device; })
        .def_property_readonly("strides",
                               [](const DeviceArray& a) { return py::make_tuple(a.view.row_stride, a.view.col_stride); })
        .def("to_host", &to_host, R"pbdoc(A host copy (bfloat16 as its uint16 bits).)pbdoc")
        .def(
            "block",
            [](const ArrayPtr& A, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
                const Matrix& v = A->view;
                if (r0 < 0 || r0 > r1 || r1 > v.rows || c0 < 0 || c0 > c1 || c1 > v.cols)
                    throw py::value_error("block out of range");
                auto out = std::make_shared<DeviceArray>(*A);  // shares the memory and its owner
                out->view.data = static_cast<const char*>(v.data) + (r0 * v.row_stride + c0 * v.col_stride) * v.itemsize();
                out->view.rows = r1 - r0;
                out->view.cols = c1 - c0;
                return out;
            },
            py::arg("r0"), py::arg("r1"), py::arg("c0"), py::arg("c1"),
            R"pbdoc(The view A[r0:r1, c0:c1], sharing A's memory (kept alive while the view lives).)pbdoc")
        .def(
            "backend",
            [](const ArrayPtr& self, int K, const std::string& table_policy) {
                return backend_capsule(make_cuda_backend(self, K, parse_policy(table_policy)));
            },
            py::arg("K"), py::arg("table_policy") = "auto",
            R"pbdoc(The CUDA IterD backend over this array, in a capsule for ulcmod._core.IterDState.)pbdoc")
        .def("table", &build_table_py, py::arg("labels"), py::arg("K"), py::arg("side") = "neurons",
             R"pbdoc(The block-sum table of `side` ('neurons': R, 'samples': C) given the other side's labels.)pbdoc")
        .def("time_table", &time_table_py, py::arg("labels"), py::arg("K"), py::arg("side") = "neurons",
             py::arg("repeat") = 10, R"pbdoc(Milliseconds per table build (CUDA events), after a warm-up.)pbdoc")
        .def(
            "pca_pass",
            [](const DeviceArray& A, const py::array_t<double, py::array::c_style>& Y, bool last,
               const py::object& rows) -> py::tuple {
                if (Y.ndim() != 2 || Y.shape(0) != A.view.cols) throw py::value_error("Y must be (n_samples, width)");
                std::vector<int64_t> r;
                if (!rows.is_none()) {
                    auto ra = rows.cast<py::array_t<int64_t, py::array::c_style>>();
                    r.assign(ra.data(), ra.data() + ra.size());
                    for (int64_t i : r)
                        if (i < 0 || i >= A.view.rows) throw py::value_error("rows out of range");
                }
                const int64_t w = Y.shape(1);
                PcaPass p;
                {
                    py::gil_scoped_release release;
                    p = pca_pass(A, Y.data(), w, last, rows.is_none() ? nullptr : r.data(),
                                 static_cast<int64_t>(r.size()));
                }
                if (p.bad >= 0) return py::make_tuple(py::none(), py::none(), p.bad);
                py::object y_next = last ? py::object(py::none()) : py::object(to_numpy(p.y_next, A.view.cols, w));
                return py::make_tuple(to_numpy(p.gram, w, w), y_next, -1);
            },
            py::arg("Y"), py::arg("last"), py::arg("rows") = py::none(),
            R"pbdoc(One randomized-PCA pass over the given rows: (gram, Y_next or None, first bad row or -1).)pbdoc")
        .def(
            "row_stats",
            [](const DeviceArray& A) {
                RowStats s;
                {
                    py::gil_scoped_release release;
                    s = row_stats(A);
                }
                return py::make_tuple(to_numpy(s.mean), to_numpy(s.var));
            },
            R"pbdoc(Per-row mean and population variance, float64.)pbdoc")
        .def(
            "zscore_into",
            [](const DeviceArray& A, const DeviceArray& out, const py::array_t<double, py::array::c_style>& mean,
               const py::array_t<double, py::array::c_style>& std) {
                if (mean.size() != A.view.rows || std.size() != A.view.rows)
                    throw py::value_error("mean and std need one entry per row");
                py::gil_scoped_release release;
                zscore_apply(A, mean.data(), std.data(), out);
            },
            py::arg("out"), py::arg("mean"), py::arg("std"),
            R"pbdoc(out = (A - mean[:, None]) / std[:, None], in float64, rounded to out's dtype.)pbdoc");

    py::class_<IcaMatrix, std::shared_ptr<IcaMatrix>>(m, "IcaMatrix",
                                                      R"pbdoc(Whitened FastICA data (c x n) in GPU memory.)pbdoc")
        .def_property_readonly("shape", [](const IcaMatrix& x) { return py::make_tuple(x.rows, x.cols); })
        .def("to_host", &ica_to_host, R"pbdoc(A host copy (float32 or float64).)pbdoc");
    m.def("ica_whiten", &ica_whiten_py, py::arg("X"), py::arg("n_components"), py::arg("float32"),
          R"pbdoc(Centre X (n x p, on the GPU) and whiten it by PCA: dict(mean, K, X1 (on the GPU), smallest_ratio).)pbdoc");
    m.def(
        "ica_transpose",
        [](const DeviceArray& X, bool float32) {
            py::gil_scoped_release release;
            return float32 ? transpose_device<float>(X) : transpose_device<double>(X);
        },
        py::arg("X"), py::arg("float32"), R"pbdoc(X^T as FastICA data already white (X1 = X^T, on the GPU).)pbdoc");
    m.def("ica_iterate", &ica_iterate_py, py::arg("X1"), py::arg("w_init"), py::arg("fun"), py::arg("alpha"),
          py::arg("deflation"), py::arg("tol"), py::arg("max_iter"),
          R"pbdoc(FastICA fixed point on whitened X1 (on the GPU) from w_init: (W, n_iter, converged).)pbdoc");

}
