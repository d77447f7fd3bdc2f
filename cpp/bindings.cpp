// The private extension module ulcmod._core. Arguments arrive validated by the Python layer;
// the checks here only keep a direct caller from crashing the interpreter.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "balanced_kmeans.hpp"
#include "dlpack.hpp"
#include "fastica.hpp"
#include "interrupt.hpp"
#include "isa.hpp"
#include "iterd.hpp"
#include "binding_helpers.hpp"
#include "parallel.hpp"
#include "permute.hpp"
#include "pca.hpp"
#include "tables.hpp"

namespace py = pybind11;
using namespace ulcmod;

namespace {

// Whether the user pressed Ctrl-C: runs Python's signal handlers, which leave KeyboardInterrupt
// set as the current error (the translator of Interrupted below keeps it).
bool python_interrupted() {
    py::gil_scoped_acquire gil;
    return PyErr_CheckSignals() != 0;
}

// Held around every long core call: the GIL is released and Ctrl-C is polled (interrupt.hpp).
struct LongCall {
    InterruptScope scope{python_interrupted};
    py::gil_scoped_release release;
};

// The NumPy dtype of bfloat16, from ml_dtypes (NumPy has none of its own).
py::dtype bfloat16_dtype() { return py::dtype::from_args(py::module_::import("ml_dtypes").attr("bfloat16")); }

// The element type of an activation array: float16/32/64, or ml_dtypes.bfloat16.
DType activation_dtype(const py::dtype& dt, const char* name) {
    if (dt.kind() == 'f' && dt.itemsize() == 2) return DType::F16;
    if (dt.kind() == 'f' && dt.itemsize() == 4) return DType::F32;
    if (dt.kind() == 'f' && dt.itemsize() == 8) return DType::F64;
    if (dt.kind() == 'V' && dt.itemsize() == 2 && py::str(dt.attr("name")).cast<std::string>() == "bfloat16")
        return DType::BF16;
    throw py::type_error(std::string(name) + " must be float16, bfloat16, float32 or float64");
}

// A strided view on a NumPy array, read in place. The array must stay alive while used.
Matrix as_matrix(const py::array& a, const char* name) {
    if (a.ndim() != 2)
        throw py::value_error(std::string(name) + " must be 2-D, got " + std::to_string(a.ndim()) + "-D");
    const py::dtype dt = a.dtype();
    Matrix m;
    m.dtype = activation_dtype(dt, name);
    if (dt.byteorder() == '>')
        throw py::value_error(std::string(name) + " must be in native byte order");
    const int64_t item = dt.itemsize();
    if (a.strides(0) % item != 0 || a.strides(1) % item != 0)
        throw py::value_error(std::string(name) + " has strides that are not multiples of its itemsize");
    m.data = a.data();
    m.rows = a.shape(0);
    m.cols = a.shape(1);
    m.row_stride = a.strides(0) / item;
    m.col_stride = a.strides(1) / item;
    return m;
}

// A read-only NumPy view of a CPU tensor received as a DLPack capsule (zero copy); bfloat16 as
// ml_dtypes.bfloat16. The view keeps the producer's tensor alive and releases it through its
// deleter.
py::array dlpack_cpu_view(const py::capsule& cap) {
    namespace dl = ulcmod::dlpack;
    if (!PyCapsule_IsValid(cap.ptr(), dl::kCapsuleName))
        throw py::type_error("expected an unused DLPack capsule (named 'dltensor')");
    auto* managed = static_cast<dl::ManagedTensor*>(PyCapsule_GetPointer(cap.ptr(), dl::kCapsuleName));
    if (PyCapsule_SetName(cap.ptr(), dl::kUsedCapsuleName) != 0) throw py::error_already_set();
    py::capsule owner(managed, [](void* p) {
        auto* m = static_cast<dl::ManagedTensor*>(p);
        if (m->deleter) m->deleter(m);
    });
    const dl::Tensor& t = managed->dl_tensor;
    if (t.device.device_type != dl::kCPU && t.device.device_type != dl::kCUDAHost)
        throw py::value_error("the tensor is not in CPU memory (DLPack device type " +
                              std::to_string(t.device.device_type) + ")");
    if (t.dtype.lanes != 1 || !((t.dtype.code == dl::kFloat && (t.dtype.bits == 16 || t.dtype.bits == 32 ||
                                                                  t.dtype.bits == 64)) ||
                                (t.dtype.code == dl::kBfloat && t.dtype.bits == 16)))
        throw py::type_error("the tensor's dtype (DLPack code " + std::to_string(t.dtype.code) + ", " +
                             std::to_string(t.dtype.bits) + " bits) is not float16, bfloat16, float32 or float64");
    const py::dtype dtype = t.dtype.code == dl::kBfloat ? bfloat16_dtype()
                                                        : py::dtype("float" + std::to_string(t.dtype.bits));
    const int64_t item = t.dtype.bits / 8;
    std::vector<py::ssize_t> shape(t.shape, t.shape + t.ndim), strides(t.ndim);
    int64_t run = 1;
    for (int d = t.ndim - 1; d >= 0; --d) {
        strides[d] = (t.strides ? t.strides[d] : run) * item;
        run *= t.shape[d];
    }
    py::array view(dtype, shape, strides, static_cast<char*>(t.data) + t.byte_offset, owner);
    py::detail::array_proxy(view.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    return view;
}

void check_col_labels(const py::array_t<int32_t, py::array::c_style>& col_labels, const Matrix& mat, int K) {
    if (K < 1) throw py::value_error("K must be >= 1");
    if (col_labels.size() != mat.cols) throw py::value_error("col_labels must have A.shape[1] entries");
    for (py::ssize_t c = 0; c < col_labels.size(); ++c)
        if (col_labels.data()[c] < 0 || col_labels.data()[c] >= K)
            throw py::value_error("col_labels out of range [0, K)");
}

std::vector<int32_t> as_labels(const py::array_t<int32_t, py::array::c_style>& a) {
    return std::vector<int32_t>(a.data(), a.data() + a.size());
}

// A whitening result as NumPy arrays (Whitening<T> holds vectors of the working precision);
// X1 is a NumPy array here and a device matrix when the CUDA module whitens on the GPU.
struct WhiteningArrays {
    py::array mean, K;
    py::object X1;
    double smallest_ratio;
};

SweepOrder parse_order(const std::string& s) {
    if (s == "parallel") return SweepOrder::Parallel;
    if (s == "random") return SweepOrder::Random;
    if (s == "sequential") return SweepOrder::Sequential;
    throw py::value_error("order must be 'parallel', 'random' or 'sequential', got '" + s + "'");
}

template <class T>
WhiteningArrays whiten_typed(const py::array_t<T, py::array::c_style>& X, int64_t c) {
    Whitening<T> w;
    {
        LongCall call;
        w = whiten(X.data(), X.shape(0), X.shape(1), c);
    }
    return {to_numpy(w.mean), to_numpy(w.K, c, static_cast<int64_t>(X.shape(1))),
            to_numpy(w.X1, c, static_cast<int64_t>(X.shape(0))), static_cast<double>(w.smallest_ratio)};
}

template <class T>
py::tuple iterate_typed(const py::array_t<T, py::array::c_style>& X1, const py::array_t<T, py::array::c_style>& W0,
                        const IcaSettings& s) {
    const int64_t c = X1.shape(0), n = X1.shape(1);
    if (W0.ndim() != 2 || W0.shape(0) != c || W0.shape(1) != c)
        throw py::value_error("w_init must be (n_components, n_components)");
    IcaRun<T> run;
    {
        LongCall call;
        run = fastica_iterate(X1.data(), c, n, W0.data(), s);
    }
    return py::make_tuple(to_numpy(run.W, c, c), run.n_iter, run.converged);
}

// Keeps the activation array alive for as long as the state reads it.
struct PyIterDState {
    py::object owner;
    std::unique_ptr<IterDState> state;
};

const char* side_name(Side side) { return side == Side::Neurons ? "neurons" : "samples"; }

// A backend written in Python (for example one whose table R lives on the workers of a cluster):
// every call is forwarded to the object's method of the same name, under the GIL. The protocol
// is documented in python/ulcmod/_backend.py.
class PythonBackend final : public Backend {
public:
    explicit PythonBackend(py::object impl) : impl_(std::move(impl)) {
        py::gil_scoped_acquire gil;
        K_ = impl_.attr("K")().cast<int>();
        name_ = impl_.attr("name")().cast<std::string>();
        for (Side side : {Side::Neurons, Side::Samples})
            rows_[index_of(side)] = impl_.attr("rows")(side_name(side)).cast<int64_t>();
    }
    ~PythonBackend() override {
        py::gil_scoped_acquire gil;
        impl_ = py::object();
        table_ = py::object();
    }

    std::string name() const override { return name_; }
    int64_t rows(Side side) const override { return rows_[index_of(side)]; }
    int K() const override { return K_; }

    void set_labels(Side side, const int32_t* labels) override {
        py::gil_scoped_acquire gil;
        py::array_t<int32_t> arr(rows_[index_of(side)], labels);
        impl_.attr("set_labels")(side_name(side), arr);
    }
    void move(Side side, const std::vector<Move>& moves) override {
        py::gil_scoped_acquire gil;
        const auto n = static_cast<py::ssize_t>(moves.size());
        py::array_t<int64_t> index(n);
        py::array_t<int32_t> from(n), to(n);
        for (py::ssize_t i = 0; i < n; ++i) {
            index.mutable_data()[i] = moves[i].index;
            from.mutable_data()[i] = moves[i].from;
            to.mutable_data()[i] = moves[i].to;
        }
        impl_.attr("move")(side_name(side), index, from, to);
    }
    void refresh(Side side) override {
        py::gil_scoped_acquire gil;
        impl_.attr("refresh")(side_name(side));
    }
    double diagonal(Side side) override {
        py::gil_scoped_acquire gil;
        return impl_.attr("diagonal")(side_name(side)).cast<double>();
    }
    void candidates(Side side, const MoveRule& rule, bool full, Candidates& out) override {
        py::gil_scoped_acquire gil;
        py::tuple got = impl_.attr("candidates")(side_name(side), rule, full);
        auto rows = got[0].cast<py::array_t<int64_t, py::array::c_style | py::array::forcecast>>();
        auto entries = got[1].cast<py::array_t<double, py::array::c_style | py::array::forcecast>>();
        if (entries.size() != rows.size() * K_)
            throw std::invalid_argument("backend.candidates must return rows and a (len(rows), K) array");
        out.clear();
        out.rows.assign(rows.data(), rows.data() + rows.size());
        out.entries.assign(entries.data(), entries.data() + entries.size());
    }
    const double* host_table(Side side) override {
        py::gil_scoped_acquire gil;
        auto arr = impl_.attr("host_table")(side_name(side))
                       .cast<py::array_t<double, py::array::c_style | py::array::forcecast>>();
        if (arr.size() != rows_[index_of(side)] * K_)
            throw std::invalid_argument("backend.host_table must return a (rows, K) float64 array");
        table_ = arr;  // kept alive until the next call
        return arr.data();
    }
    TableStats stats() const override {
        py::gil_scoped_acquire gil;
        py::dict d = impl_.attr("stats")();
        auto get = [&](const char* key) { return d.contains(key) ? d[key].cast<int64_t>() : int64_t{0}; };
        return {get("builds"), get("update_reads"), get("full_scans"), get("partial_scans")};
    }

private:
    py::object impl_, table_;
    int K_ = 0;
    std::string name_;
    int64_t rows_[2] = {0, 0};
};

MoveRule rule_from(const py::array_t<double, py::array::c_style | py::array::forcecast>& c,
                   const py::array_t<uint8_t, py::array::c_style | py::array::forcecast>& leave, double slack) {
    const int64_t K = leave.size();
    if (c.ndim() != 2 || c.shape(0) != K || c.shape(1) != K || K < 1)
        throw py::value_error("c must be (K, K) and leave of length K");
    MoveRule rule;
    rule.K = static_cast<int>(K);
    rule.c.assign(c.data(), c.data() + c.size());
    rule.leave.assign(leave.data(), leave.data() + K);
    rule.slack = slack;
    return rule;
}

// The backend for an IterDState: the CPU backend over a NumPy array, a backend handed over by
// another extension module (the CUDA one) in a capsule (see kBackendCapsule), or a Python object
// implementing the backend protocol.
std::unique_ptr<Backend> backend_for(const py::object& A, int K, const std::string& table_policy) {
    if (PyCapsule_IsValid(A.ptr(), kBackendCapsule)) {
        auto* backend = static_cast<Backend*>(PyCapsule_GetPointer(A.ptr(), kBackendCapsule));
        if (backend->K() != K)
            throw py::value_error("the backend was made for K=" + std::to_string(backend->K()) +
                                  ", not K=" + std::to_string(K));
        if (PyCapsule_SetName(A.ptr(), kBackendCapsuleTaken) != 0) throw py::error_already_set();
        return std::unique_ptr<Backend>(backend);
    }
    if (PyCapsule_CheckExact(A.ptr()))
        throw py::type_error("A is a capsule that holds no ulcmod backend (or one already in use)");
    if (!py::isinstance<py::array>(A) && py::hasattr(A, "candidates")) {
        auto backend = std::make_unique<PythonBackend>(A);
        if (backend->K() != K)
            throw py::value_error("the backend was made for K=" + std::to_string(backend->K()) +
                                  ", not K=" + std::to_string(K));
        return backend;
    }
    return make_cpu_backend(as_matrix(A.cast<py::array>(), "A"), K, parse_policy(table_policy));
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const Interrupted&) {
            if (!PyErr_Occurred()) PyErr_SetNone(PyExc_KeyboardInterrupt);
        }
    });

    m.doc() = R"pbdoc(Compiled core of ulcmod: IterD, block-sum tables and balanced k-means.)pbdoc";

    m.def(
        "build_table",
        [](const py::array& A, const py::array_t<int32_t, py::array::c_style>& col_labels, int K) {
            const Matrix mat = as_matrix(A, "A");
            check_col_labels(col_labels, mat, K);
            py::array_t<double> out({mat.rows, static_cast<int64_t>(K)});
            double* dst = out.mutable_data();
            {
                LongCall call;
                build_table(mat, col_labels.data(), K, dst);
            }
            return out;
        },
        py::arg("A"), py::arg("col_labels"), py::arg("K"),
        R"pbdoc(T[r, k] = sum of A[r, c] over columns c labelled k, in float64 (one pass, A read in place).)pbdoc");

    m.def(
        "update_table",
        [](const py::array& A, const py::array_t<int64_t, py::array::c_style>& index,
           const py::array_t<int32_t, py::array::c_style>& from,
           const py::array_t<int32_t, py::array::c_style>& to,
           py::array_t<double, py::array::c_style> table) {
            const Matrix mat = as_matrix(A, "A");
            const int64_t n = index.size();
            if (table.ndim() != 2 || table.shape(0) != mat.rows || from.size() != n || to.size() != n)
                throw py::value_error("table must be (A.shape[0], K) and index/from/to of equal length");
            const int K = static_cast<int>(table.shape(1));
            std::vector<Move> moves(n);
            for (int64_t i = 0; i < n; ++i) {
                const int64_t c = index.data()[i];
                const int32_t a = from.data()[i], b = to.data()[i];
                if (c < 0 || c >= mat.cols || a < 0 || a >= K || b < 0 || b >= K)
                    throw py::value_error("move out of range");
                moves[i] = {c, a, b};
            }
            double* dst = table.mutable_data();
            LongCall call;
            update_table(mat, moves, K, dst);
        },
        py::arg("A"), py::arg("index"), py::arg("from_"), py::arg("to"), py::arg("table"),
        R"pbdoc(In place: table[:, from] -= A[:, index], table[:, to] += A[:, index] for each move.)pbdoc");

    m.def("dlpack_cpu_view", &dlpack_cpu_view, py::arg("capsule"),
          R"pbdoc(Read-only NumPy view of a CPU tensor's DLPack capsule (bfloat16 as ml_dtypes.bfloat16).)pbdoc");

    py::class_<Objective>(m, "Objective", R"pbdoc(IterD's objective of a labelling: L = xi * B, with D, P and H.)pbdoc")
        .def_readonly("L", &Objective::L)
        .def_readonly("xi", &Objective::xi)
        .def_readonly("B", &Objective::B)
        .def_readonly("D", &Objective::D, "sum over the K diagonal blocks")
        .def_readonly("P", &Objective::P, "sum of n_k m_k")
        .def_readonly("H", &Objective::H, "sum of 1 / (n_k m_k)");

    py::class_<KMeansResult>(m, "KMeansResult", R"pbdoc(The best k-means run: centres, labels, inertia.)pbdoc")
        .def_property_readonly("centers", [](const KMeansResult& r) {
            const auto K = static_cast<int64_t>(r.centers.size() / std::max<size_t>(1, r.d));
            return to_numpy(r.centers, K, static_cast<int64_t>(r.d));
        })
        .def_property_readonly("labels", [](const KMeansResult& r) { return to_numpy(r.labels); })
        .def_readonly("inertia", &KMeansResult::inertia)
        .def_readonly("n_iter", &KMeansResult::n_iter)
        .def_readonly("converged", &KMeansResult::converged);

    py::class_<WhiteningArrays>(m, "Whitening", R"pbdoc(
PCA whitening of centred data X (n x p) to c components: X1 = K (X - mean)^T * sqrt(n) (c x n),
and the smallest kept eigenvalue over the largest (a rank check). Also made by the CUDA module.
)pbdoc")
        .def(py::init([](py::array mean, py::array K, py::object X1, double smallest_ratio) {
                 return WhiteningArrays{std::move(mean), std::move(K), std::move(X1), smallest_ratio};
             }),
             py::arg("mean"), py::arg("K"), py::arg("X1"), py::arg("smallest_ratio"))
        .def_readonly("mean", &WhiteningArrays::mean)
        .def_readonly("K", &WhiteningArrays::K)
        .def_readonly("X1", &WhiteningArrays::X1)
        .def_readonly("smallest_ratio", &WhiteningArrays::smallest_ratio);

    py::class_<MoveRule>(m, "MoveRule", R"pbdoc(
The acceptance rule of one round of a parallel sweep: a row with table entries t in module a
may improve L by moving to b iff t[b] - t[a] > c[a, b] (padded by the slack; see
cpp/move_rule.hpp). Read-only; made by the sweep and passed to a backend's candidates().
)pbdoc")
        .def(py::init([](const py::array_t<double, py::array::c_style | py::array::forcecast>& c,
                         const py::array_t<uint8_t, py::array::c_style | py::array::forcecast>& leave,
                         double slack) { return rule_from(c, leave, slack); }),
             py::arg("c"), py::arg("leave"), py::arg("slack"),
             R"pbdoc(A rule from its parts (as a backend on another process receives it).)pbdoc")
        .def_property_readonly("K", [](const MoveRule& r) { return r.K; })
        .def_property_readonly("c", [](const MoveRule& r) { return to_numpy(r.c, r.K, r.K); })
        .def_property_readonly("leave", [](const MoveRule& r) { return to_numpy(r.leave); })
        .def_property_readonly("slack", [](const MoveRule& r) { return r.slack; })
        .def(py::pickle(
            [](const MoveRule& r) { return py::make_tuple(to_numpy(r.c, r.K, r.K), to_numpy(r.leave), r.slack); },
            [](const py::tuple& t) {
                return rule_from(t[0].cast<py::array_t<double, py::array::c_style | py::array::forcecast>>(),
                                 t[1].cast<py::array_t<uint8_t, py::array::c_style | py::array::forcecast>>(),
                                 t[2].cast<double>());
            }));

    m.def(
        "rule_drift", [](const MoveRule& from, const MoveRule& to) { return to_numpy(rule_drift(from, to)); },
        py::arg("from_"), py::arg("to"),
        R"pbdoc(Per module a: bound on how much the padded margin of a row labelled a can grow from rule from_ to rule to (same table).)pbdoc");

    m.def(
        "update_is_cheaper",
        [](const py::array& A, int64_t n_moves) { return update_is_cheaper(as_matrix(A, "A"), n_moves); },
        py::arg("A"), py::arg("n_moves"),
        R"pbdoc(Whether applying n_moves moved columns of A to a table costs less than rebuilding it (the CPU cost model).)pbdoc");

    m.def(
        "scan_table",
        [](const py::array_t<double, py::array::c_style>& table,
           const py::array_t<int32_t, py::array::c_style>& labels, const MoveRule& rule) {
            if (table.ndim() != 2 || table.shape(1) != rule.K || labels.size() != table.shape(0))
                throw py::value_error("table must be (rows, K) and labels of length rows");
            for (py::ssize_t r = 0; r < labels.size(); ++r)
                if (labels.data()[r] < 0 || labels.data()[r] >= rule.K)
                    throw py::value_error("labels out of range [0, K)");
            Candidates out;
            {
                LongCall call;
                scan_table(table.data(), labels.data(), table.shape(0), rule, out);
            }
            return py::make_tuple(to_numpy(out.rows), to_numpy(out.entries, static_cast<int64_t>(out.rows.size()), rule.K));
        },
        py::arg("table"), py::arg("labels"), py::arg("rule"),
        R"pbdoc(Rows of a (rows, K) table that may improve under rule, ascending, and their entries (the CPU backend's full scan).)pbdoc");

    py::class_<PyIterDState>(m, "IterDState", R"pbdoc(
Running IterD state: labels, module sizes and the block-sum tables R (neurons x K) and
C (samples x K). Each call to ``iterate`` runs one neuron sweep and one sample sweep.
)pbdoc")
        .def(py::init([](py::object A, int K, py::object neuron_labels,
                         const py::array_t<int32_t, py::array::c_style>& sample_labels, double tol,
                         uint64_t seed, const std::string& table_policy) {
                 std::vector<int32_t> u;
                 if (!neuron_labels.is_none())
                     u = as_labels(neuron_labels.cast<py::array_t<int32_t, py::array::c_style>>());
                 std::vector<int32_t> s = as_labels(sample_labels);
                 auto self = std::make_unique<PyIterDState>();
                 self->owner = A;
                 std::unique_ptr<Backend> backend = backend_for(A, K, table_policy);
                 {
                     LongCall call;
                     self->state = std::make_unique<IterDState>(std::move(backend), std::move(u),
                                                                std::move(s), tol, seed);
                 }
                 return self;
             }),
             py::arg("A"), py::arg("K"), py::arg("neuron_labels"), py::arg("sample_labels"),
             py::arg("tol"), py::arg("seed"), py::arg("table_policy") = "auto")
        .def(
            "iterate",
            [](PyIterDState& self, const std::string& order) {
                const SweepOrder o = parse_order(order);
                LongCall call;
                return self.state->iterate(o);
            },
            py::arg("order"),
            R"pbdoc(One neuron sweep then one sample sweep in the given order ('parallel', 'random' or 'sequential'); returns (neurons moved, samples moved).)pbdoc")
        .def(
            "sweep",
            [](PyIterDState& self, const std::string& side, const std::string& order) {
                if (side != "neurons" && side != "samples")
                    throw py::value_error("side must be 'neurons' or 'samples', got '" + side + "'");
                const SweepOrder o = parse_order(order);
                LongCall call;
                return self.state->sweep(side == "neurons" ? Side::Neurons : Side::Samples, o);
            },
            py::arg("side"), py::arg("order"),
            R"pbdoc(One sweep of one side ('neurons' or 'samples'); returns the number of elements moved.)pbdoc")
        .def("objective", [](PyIterDState& self) {
            Objective o;
            {
                LongCall call;
                o = self.state->objective();
            }
            return o;
        })
        .def_property_readonly("neuron_labels", [](PyIterDState& s) { return to_numpy(s.state->neuron_labels()); })
        .def_property_readonly("sample_labels", [](PyIterDState& s) { return to_numpy(s.state->sample_labels()); })
        .def("neuron_table", [](PyIterDState& s) {
            return to_numpy(s.state->neuron_table(), static_cast<int64_t>(s.state->neuron_labels().size()),
                            static_cast<int64_t>(s.state->backend().K()));
        })
        .def("sample_table", [](PyIterDState& s) {
            return to_numpy(s.state->sample_table(), static_cast<int64_t>(s.state->sample_labels().size()),
                            static_cast<int64_t>(s.state->backend().K()));
        })
        .def_property_readonly("backend", [](PyIterDState& s) { return s.state->backend().name(); })
        .def_property_readonly("table_builds", [](PyIterDState& s) { return s.state->stats().builds; })
        .def_property_readonly("update_reads", [](PyIterDState& s) { return s.state->stats().update_reads; })
        .def_property_readonly("full_scans", [](PyIterDState& s) { return s.state->stats().full_scans; })
        .def_property_readonly("partial_scans", [](PyIterDState& s) { return s.state->stats().partial_scans; })
        .def_property_readonly("rounds", [](PyIterDState& s) { return s.state->rounds(); });

    m.def(
        "balanced_assignment",
        [](const py::array_t<double, py::array::c_style>& cost,
           const std::optional<py::array_t<int32_t, py::array::c_style | py::array::forcecast>>& start) {
            if (cost.ndim() != 2 || cost.shape(1) < 1 || cost.shape(0) < cost.shape(1) ||
                cost.shape(0) >= (int64_t{1} << 31))
                throw py::value_error("cost must be 2-D (n, K) with 2^31 > n >= K >= 1");
            const int64_t n = cost.shape(0);
            const int K = static_cast<int>(cost.shape(1));
            std::vector<int32_t> first;
            if (start) {
                if (start->ndim() != 1 || start->shape(0) != n)
                    throw py::value_error("start must hold one label per row of cost");
                first.assign(start->data(), start->data() + n);
                for (const int64_t size : count_labels(first, K, "start"))
                    if (size != n / K && size != n / K + 1)
                        throw py::value_error("start must give every cluster floor(n/K) or ceil(n/K) points");
            }
            std::vector<int32_t> labels;
            {
                LongCall call;
                labels = balanced_assignment(cost.data(), n, K, std::move(first));
            }
            return to_numpy(labels);
        },
        py::arg("cost"), py::arg("start") = py::none(),
        R"pbdoc(Exact min-cost assignment of n points to K clusters of sizes floor(n/K) or ceil(n/K),
from `start` (balanced labels) when given.)pbdoc");

    m.def(
        "kmeans",
        [](const py::array_t<double, py::array::c_style>& X, int K, bool balanced, int n_init,
           int max_iter, double tol, uint64_t seed) {
            if (X.ndim() != 2 || K < 1 || X.shape(0) < K || X.shape(0) >= (int64_t{1} << 31))
                throw py::value_error("X must be (n, d) with 2^31 > n >= K >= 1");
            if (n_init < 1 || max_iter < 1) throw py::value_error("n_init and max_iter must be >= 1");
            KMeansResult r;
            {
                LongCall call;
                r = kmeans(X.data(), X.shape(0), X.shape(1), K, balanced, n_init, max_iter, tol, seed);
            }
            return r;
        },
        py::arg("X"), py::arg("K"), py::arg("balanced"), py::arg("n_init"), py::arg("max_iter"),
        py::arg("tol"), py::arg("seed"),
        R"pbdoc(Lloyd k-means (exactly balanced or plain) from greedy k-means++ seeds, best of n_init.)pbdoc");

    m.def(
        "ica_whiten",
        [](const py::array& X, int64_t c) -> WhiteningArrays {
            if (X.ndim() != 2) throw py::value_error("X must be 2-D");
            if (py::isinstance<py::array_t<float, py::array::c_style>>(X) && X.dtype().itemsize() == 4)
                return whiten_typed<float>(X.cast<py::array_t<float, py::array::c_style>>(), c);
            return whiten_typed<double>(X.cast<py::array_t<double, py::array::c_style>>(), c);
        },
        py::arg("X"), py::arg("n_components"),
        R"pbdoc(Centre X (n x p) and whiten it by PCA to n_components (a Whitening).)pbdoc");

    m.def(
        "ica_iterate",
        [](const py::array& X1, const py::array& W0, const std::string& fun, double alpha, bool deflation,
           double tol, int max_iter) -> py::tuple {
            IcaSettings s{contrast_from_name(fun), alpha, deflation, tol, max_iter};
            if (X1.dtype().itemsize() == 4)
                return iterate_typed<float>(X1.cast<py::array_t<float, py::array::c_style>>(),
                                            W0.cast<py::array_t<float, py::array::c_style>>(), s);
            return iterate_typed<double>(X1.cast<py::array_t<double, py::array::c_style>>(),
                                         W0.cast<py::array_t<double, py::array::c_style>>(), s);
        },
        py::arg("X1"), py::arg("w_init"), py::arg("fun"), py::arg("alpha"), py::arg("deflation"), py::arg("tol"),
        py::arg("max_iter"),
        R"pbdoc(FastICA fixed-point iteration on whitened X1 (c x n) from w_init: (W, n_iter, converged).)pbdoc");

    m.def(
        "permute_rows",
        [](const py::array& A, py::array& out, uint64_t seed) {
            const Matrix a = as_matrix(A, "A");
            if (out.ndim() != 2 || out.shape(0) != a.rows || out.shape(1) != a.cols ||
                out.dtype().itemsize() != a.itemsize() || out.dtype().kind() != A.dtype().kind() ||
                !(out.flags() & py::array::c_style))
                throw py::value_error("out must be a C-contiguous array of A's shape and dtype");
            void* dst = out.mutable_data();  // raises if out is read-only
            LongCall call;
            permute_rows(a, dst, seed);
        },
        py::arg("A"), py::arg("out"), py::arg("seed"),
        R"pbdoc(Write each row of A into out in an independent random order drawn from (seed, row).)pbdoc");

    m.def(
        "build_table",
        [](const py::array& A, const py::array_t<int32_t, py::array::c_style>& col_labels, int K,
           py::array_t<double, py::array::c_style> out) {
            const Matrix mat = as_matrix(A, "A");
            check_col_labels(col_labels, mat, K);
            if (out.ndim() != 2 || out.shape(0) != mat.rows || out.shape(1) != K)
                throw py::value_error("out must be a C-ordered float64 array of shape (A.shape[0], K)");
            double* dst = out.mutable_data();
            {
                LongCall call;
                build_table(mat, col_labels.data(), K, dst);
            }
            return out;
        },
        py::arg("A"), py::arg("col_labels"), py::arg("K"), py::arg("out"),
        R"pbdoc(The same, written into ``out`` (A.shape[0] x K, float64, C order), which is returned.)pbdoc");

    m.def(
        "pca_pass",
        [](const py::array& A, py::object rows, const py::array_t<double, py::array::c_style>& Y, bool last) {
            const Matrix mat = as_matrix(A, "A");
            if (Y.ndim() != 2 || Y.shape(0) != mat.cols || Y.shape(1) < 1)
                throw py::value_error("Y must be (A.shape[1], width) with width >= 1");
            py::array_t<int64_t, py::array::c_style> ids;
            const int64_t* row_ptr = nullptr;
            int64_t n = mat.rows;
            if (!rows.is_none()) {
                ids = rows.cast<py::array_t<int64_t, py::array::c_style>>();
                n = ids.size();
                row_ptr = ids.data();
                for (int64_t i = 0; i < n; ++i)
                    if (row_ptr[i] < 0 || row_ptr[i] >= mat.rows) throw py::value_error("rows out of range [0, A.shape[0])");
            }
            const int64_t w = Y.shape(1);
            PcaPass r;
            {
                LongCall call;
                r = pca_pass(mat, row_ptr, n, Y.data(), w, last);
            }
            py::object y_next = py::none(), mu_z = py::none();
            if (!last) {
                y_next = to_numpy(r.y_next, mat.cols, w);
                mu_z = to_numpy(r.mu_z);
            }
            return py::make_tuple(to_numpy(r.gram, w, w), y_next, mu_z, r.first_nonfinite);
        },
        py::arg("A"), py::arg("rows"), py::arg("Y"), py::arg("last"),
        R"pbdoc(One pass of the samples' randomized PCA over rows of A (all when rows is None): X = the
rows widened to float32 (float64 for float64 A), mu = row means, Z = X Y - mu y_sum^T. Returns
(Z^T Z, X^T Z or None, mu^T Z or None, position in rows of the first row with NaN/inf or -1);
the last two are skipped when ``last``.)pbdoc");

    m.def(
        "_set_isa", [](const std::string& name) {
            try {
                set_isa(name);
            } catch (const std::invalid_argument& e) {
                throw py::value_error(e.what());
            }
        },
        py::arg("name"),
        R"pbdoc(Use the table kernels of ISA level ``name`` ('default', 'avx2', 'avx512') from now on (tests).)pbdoc");

    m.def("build_info", []() {
        py::dict d;
#ifdef _OPENMP
        d["openmp"] = true;
#else
        d["openmp"] = false;
#endif
#ifdef ULCMOD_WITH_CUDA
        d["cuda"] = true;
#else
        d["cuda"] = false;
#endif
        d["max_threads"] = max_threads();
        d["compiler"] = std::string(__VERSION__);
        d["isa"] = isa_name();
        d["isa_compiled"] = isa_compiled();
        d["isa_supported"] = isa_supported();
        return d;
    }, R"pbdoc(What this build of the core was compiled with: OpenMP, CUDA, threads, compiler, and the
table kernels' ISA levels: in use, compiled, supported by this CPU.)pbdoc");

    if (const std::string problem = isa_env_problem(); !problem.empty())
        if (PyErr_WarnEx(PyExc_RuntimeWarning, problem.c_str(), 1) < 0) throw py::error_already_set();
}
