// The CUDA backend of IterD: both block-sum tables and both sides' labels in GPU memory, and A
// there too or streamed up from host memory for each table build (host_stream.hpp). The host's
// IterDState (cpp/iterd.cpp) drives it through the Backend interface; every scan is a full one
// (a scan of a table is one short kernel), and only the candidate rows and their entries travel
// to the host.
#include "cuda_backend.hpp"

#include <stdexcept>
#include <string>

#include "tables.cuh"

namespace ulcmod::cuda {
namespace {

// All work runs on the legacy default stream, the stream DLPack producers are asked to make
// the data ready on (see python/ulcmod/_device.py).
constexpr cudaStream_t kStream = 0;

class CudaBackend final : public Backend {
public:
    // A in GPU memory (`A`), or in host memory streamed up slab by slab (`stream`): one of the two.
    CudaBackend(std::shared_ptr<const DeviceArray> A, std::shared_ptr<HostStream> stream, int K, TablePolicy policy)
        : A_(std::move(A)), stream_(std::move(stream)), device_(A_ ? A_->device : stream_->device()), K_(K),
          policy_(policy) {
        if (K_ < 1) throw std::invalid_argument("K must be at least 1");
        view_[0] = A_ ? A_->view : stream_->host();  // a streamed view's data is host memory: shape only
        view_[1] = view_[0].transposed();
        if (view_[0].rows >= INT32_MAX || view_[0].cols >= INT32_MAX)
            throw std::invalid_argument("the GPU backend supports fewer than 2^31 rows and columns");
        layout_of(view_[0]);  // throws for matrices without a unit stride
        DeviceGuard guard(device_);
        for (int s = 0; s < 2; ++s) {
            const int64_t n = view_[s].rows;
            labels_[s].assign(n, 0);
            d_labels_[s].resize(n);
            ULCMOD_CUDA(cudaMemsetAsync(d_labels_[s].data(), 0, n * sizeof(int32_t), kStream));
        }
    }

    ~CudaBackend() override {
        try {
            DeviceGuard guard(device_);
            cudaStreamSynchronize(kStream);
            for (auto& b : table_) b = DeviceBuffer<double>();
            for (auto& b : d_labels_) b = DeviceBuffer<int32_t>();
            ws_ = TableWorkspace();
        } catch (...) {  // nothing can be reported from a destructor
        }
    }

    std::string name() const override { return stream_ ? "cuda-streamed" : "cuda"; }
    int64_t rows(Side side) const override { return view_[index_of(side)].rows; }
    int K() const override { return K_; }

    void set_labels(Side side, const int32_t* labels) override {
        const int s = index_of(side), t = index_of(other_side(side));
        DeviceGuard guard(device_);
        std::copy(labels, labels + labels_[s].size(), labels_[s].begin());
        d_labels_[s].upload(labels_[s].data(), labels_[s].size(), kStream);
        built_[t] = false;
        pending_[t].clear();
    }

    void move(Side side, const std::vector<Move>& moves) override {
        const int s = index_of(side), t = index_of(other_side(side));
        DeviceGuard guard(device_);
        for (const Move& m : moves) labels_[s][m.index] = m.to;
        cuda::scatter_labels(d_labels_[s].data(), moves, ws_, kStream);
        if (built_[t]) pending_[t].insert(pending_[t].end(), moves.begin(), moves.end());
    }

    void refresh(Side side) override {
        const int t = index_of(side), o = index_of(other_side(side));
        if (built_[t] && pending_[t].empty()) return;
        DeviceGuard guard(device_);
        const Matrix& V = view_[t];
        std::vector<Move>& pending = pending_[t];
        table_[t].resize(static_cast<size_t>(V.rows) * K_);
        // A streamed A is always rebuilt: an update would read it whole too (its moved lines are spread over it)
        const bool update = built_[t] && !stream_ &&
                            (policy_ == TablePolicy::Update ||
                             (policy_ == TablePolicy::Auto &&
                              cuda::update_is_cheaper(V, static_cast<int64_t>(pending.size()))));
        if (update) {
            cuda::update_table(V, pending, K_, table_[t].data(), ws_, kStream);
            stats_.update_reads += static_cast<int64_t>(pending.size()) * V.rows;
        } else {
            if (stream_)
                build_streamed(t);
            else
                cuda::build_table(V, d_labels_[o].data(), labels_[o].data(), K_, table_[t].data(), ws_, kStream);
            ++stats_.builds;
            built_[t] = true;
        }
        pending.clear();
        host_valid_[t] = false;
    }

    double diagonal(Side side) override {
        const int s = index_of(side);
        DeviceGuard guard(device_);
        return ulcmod::cuda::diagonal(table_[s].data(), d_labels_[s].data(), view_[s].rows, K_, ws_, kStream);
    }

    // Always a full scan: scoring every row of a table is a few microseconds to milliseconds here.
    void candidates(Side side, const MoveRule& rule, bool /*full*/, Candidates& out) override {
        const int s = index_of(side);
        DeviceGuard guard(device_);
        ++stats_.full_scans;
        ulcmod::cuda::candidates(table_[s].data(), d_labels_[s].data(), view_[s].rows, rule, out, ws_, kStream);
    }

    const double* host_table(Side side) override {
        const int s = index_of(side);
        if (!host_valid_[s]) {
            DeviceGuard guard(device_);
            host_[s].resize(static_cast<size_t>(view_[s].rows) * K_);
            ULCMOD_CUDA(cudaMemcpyAsync(host_[s].data(), table_[s].data(), host_[s].size() * sizeof(double),
                                        cudaMemcpyDeviceToHost, kStream));
            ULCMOD_CUDA(cudaStreamSynchronize(kStream));
            host_valid_[s] = true;
        }
        return host_[s].data();
    }

    TableStats stats() const override { return stats_; }

private:
    // Table t from one pass over the streamed A. A slab is a range of the table's rows (R from
    // slabs of A's rows, C from slabs of its columns), built in place, or a range of the other
    // side's lines, whose partial table is added in (in slab order: deterministic).
    void build_streamed(int t) {
        const int o = 1 - t;
        const int64_t n = view_[t].rows * K_;
        const bool slab_is_table_rows = (t == 0) == stream_->slabs_of_rows();
        if (!slab_is_table_rows) partial_.resize(n);
        bool first = true;
        stream_->for_each_slab(kStream, [&](const Matrix& slab, int64_t line, int64_t) {
            const Matrix V = t == 0 ? slab : slab.transposed();
            if (slab_is_table_rows) {
                cuda::build_table(V, d_labels_[o].data(), labels_[o].data(), K_, table_[t].data() + line * K_, ws_,
                                  kStream);
                return;
            }
            double* out = first ? table_[t].data() : partial_.data();
            cuda::build_table(V, d_labels_[o].data() + line, labels_[o].data() + line, K_, out, ws_, kStream);
            if (!first) cuda::add_into(table_[t].data(), partial_.data(), n, kStream);
            first = false;
        });
    }

    std::shared_ptr<const DeviceArray> A_;  // keeps the activations alive (null when streamed)
    std::shared_ptr<HostStream> stream_;    // the streamed activations (null when A_ is set)
    int device_;
    int K_;
    TablePolicy policy_;
    Matrix view_[2];  // [Neurons] = A, [Samples] = A^T
    std::vector<int32_t> labels_[2];
    DeviceBuffer<int32_t> d_labels_[2];
    DeviceBuffer<double> table_[2];
    DeviceBuffer<double> partial_;  // a slab's partial table (streamed builds)
    std::vector<double> host_[2];
    bool built_[2] = {false, false};
    bool host_valid_[2] = {false, false};
    std::vector<Move> pending_[2];  // moved columns of view t not yet applied to table t
    TableWorkspace ws_;
    TableStats stats_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(std::shared_ptr<const DeviceArray> A, int K, TablePolicy policy) {
    return std::make_unique<CudaBackend>(std::move(A), nullptr, K, policy);
}

std::unique_ptr<Backend> make_streamed_cuda_backend(std::shared_ptr<HostStream> A, int K) {
    return std::make_unique<CudaBackend>(nullptr, std::move(A), K, TablePolicy::Rebuild);
}

}  // namespace ulcmod::cuda
