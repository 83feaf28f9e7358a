#include "nn/linear.h"

#include "tensor/bf16.h"
#include "tensor/parallel.h"
#include "util/errors.h"

#include <algorithm>
#include <atomic>

namespace quantscope {

namespace {
using Idx = Eigen::Index;
constexpr std::size_t kRowGrain = 16;   // batch rows per task
constexpr std::size_t kColGrain = 512;  // input features per task in dW and dx (seed-cnn's fc1: 18 tasks, even on 2 or 3 threads)
constexpr std::size_t kOutGrain = 32;   // output features per task in forward
} // namespace

Linear::Linear(std::string name, std::size_t in, std::size_t out, bool hasBias)
    : Layer(std::move(name)), m_in(in), m_out(out), m_hasBias(hasBias)
{
    if (!in || !out) throw ConfigError("linear: sizes must be positive");
    checkWeightCount(this->name(), "Linear " + std::to_string(in) + " -> " + std::to_string(out), {in, out});
    m_weight.name = "weight";
    m_weight.isWeight = true;
    m_weight.value = Tensor({out, in});
    m_weight.grad = Tensor({out, in});
    m_bias.name = "bias";
    m_bias.value = Tensor({hasBias ? out : 0});
    m_bias.grad = Tensor(m_bias.value.shape());
}

std::string Linear::describe() const
{
    return std::to_string(m_in) + "->" + std::to_string(m_out) + (m_hasBias ? "" : " no bias");
}

Shape Linear::outputShape(const Shape& in) const
{
    if (in.size() != 2 || in[1] != m_in)
        throw ConfigError(name() + ": expected input (N," + std::to_string(m_in) + "), got " + shapeString(in));
    return {in[0], m_out};
}

// x: (N, in), W: (out, in), y: (N, out) = x W^T + 1 b^T (no b^T term without a bias)
void Linear::forward(const Tensor& x, Tensor& y, const RunContext& /*ctx*/)
{
    y.resize(outputShape(x.shape()));
    const std::size_t N = x.dim(0);
    const ConstMatrixMap Wm = m_weight.forwardValue().matrix(m_out, m_in);
    const ConstMatrixMap X = x.matrix(N, m_in);
    MatrixMap Y = y.matrix(N, m_out);
    if (m_bf16 != Bf16Path::Emulated) { // y = bf16(x) bf16(W)^T
        // x packed once, then column blocks of y, each packing only its rows of W: W (seed-cnn's
        // fc1: 4.7 MB) is read once a step, not once per block of batch rows (forward 0.99 -> 0.68 ms on Zen 5).
        packBf16A(m_xPacked, m_bf16, false, N, m_in, x.data(), m_in);
        const std::size_t grain = m_out >= 2 * kOutGrain ? kOutGrain : m_out;
        parallelChunks(m_out, grain, [&](std::size_t j0, std::size_t j1) {
            gemmBf16Packed(m_xPacked, true, j1 - j0, m_weight.forwardValue().data() + j0 * m_in, m_in, y.data() + j0, m_out, false);
        });
        addBias(Y);
        return;
    }
    // Split over output features when W is the big operand (each task packs only its rows of
    // W), over batch rows otherwise.
    if (m_out >= 2 * kOutGrain && m_out * m_in >= N * m_in) {
        parallelChunks(m_out, kOutGrain, [&](std::size_t j0, std::size_t j1) {
            const Idx cols = static_cast<Idx>(j1 - j0);
            Y.middleCols(static_cast<Idx>(j0), cols).noalias() =
                X * Wm.middleRows(static_cast<Idx>(j0), cols).transpose();
        });
    } else {
        parallelChunks(N, kRowGrain, [&](std::size_t r0, std::size_t r1) {
            const Idx rows = static_cast<Idx>(r1 - r0);
            Y.middleRows(static_cast<Idx>(r0), rows).noalias() = X.middleRows(static_cast<Idx>(r0), rows) * Wm.transpose();
        });
    }
    addBias(Y);
}

// Y: (N, out) += 1 b^T; nothing without a bias.
void Linear::addBias(MatrixMap& Y) const
{
    if (!m_hasBias) return;
    const Eigen::Map<const Eigen::RowVectorXf> b(m_bias.forwardValue().data(), static_cast<Idx>(m_out));
    Y.rowwise() += b;
}

// dW = dy^T x ; db = 1^T dy (no db without a bias) ; dx = dy W
void Linear::backward(const Tensor& x, const Tensor& /*y*/, const Tensor& dy, Tensor& dx, bool needInputGrad)
{
    checkOutputGradient(x, dy);
    const std::size_t N = x.dim(0);
    const ConstMatrixMap X = x.matrix(N, m_in);
    const ConstMatrixMap G = dy.matrix(N, m_out);
    MatrixMap dW = m_weight.grad.matrix(m_out, m_in);
    const bool bf16 = m_bf16 != Bf16Path::Emulated;
    m_wgPassed = bf16 && m_wgPass.on;
    if (bf16) { // dW[:, j0:j1] = bf16(dy)^T bf16(x[:, j0:j1]), then the weight-gradient pass
        // dy^T packed once, not once per column block (the same bits as gemmBf16 packing it)
        packBf16A(m_dyPackedT, m_bf16, true, m_out, N, dy.data(), m_out);
        parallelChunks(m_in, kColGrain, [&](std::size_t j0, std::size_t j1) {
            gemmBf16Packed(m_dyPackedT, false, j1 - j0, x.data() + j0, m_in, m_weight.grad.data() + j0, m_in, false);
            if (!m_wgPass.on) return;
            bool ok = true;
            const float scale = m_wgPass.scale;
            for (std::size_t o = 0; o < m_out; ++o) {
                float* row = m_weight.grad.data() + o * m_in + j0;
                ok &= roundBf16AllFinite(row, j1 - j0);
                if (scale != 1.0f)
                    for (std::size_t j = 0; j < j1 - j0; ++j) row[j] *= scale;
            }
            if (!ok && m_wgPass.finite) m_wgPass.finite->store(false, std::memory_order_relaxed);
        });
    } else {
        // Column blocks of dW are independent: dW[:, j0:j1] = G^T X[:, j0:j1].
        parallelChunks(m_in, kColGrain, [&](std::size_t j0, std::size_t j1) {
            const Idx cols = static_cast<Idx>(j1 - j0);
            dW.middleCols(static_cast<Idx>(j0), cols).noalias() = G.transpose() * X.middleCols(static_cast<Idx>(j0), cols);
        });
    }
    // db: plain in-order sums over the batch. Eigen's vectorised colwise().sum() rounds
    // differently depending on the destination's alignment, so identical runs differed.
    if (m_hasBias) {
        float* db = m_bias.grad.data();
        std::fill(db, db + m_out, 0.0f);
        for (std::size_t n = 0; n < N; ++n)
            for (std::size_t j = 0; j < m_out; ++j) db[j] += dy[n * m_out + j];
    }
    m_dxFinite = true; // also when no dx is asked for
    if (!needInputGrad) return;
    dx.resize(x.shape());
    const ConstMatrixMap Wm = m_weight.forwardValue().matrix(m_out, m_in);
    MatrixMap DX = dx.matrix(N, m_in);
    // Each task's columns of dx, rounded to bf16 right after they are written, while in cache
    // (setRoundInputGradientBf16).
    std::atomic<bool> finite{true};
    const auto roundColumns = [&](std::size_t j0, std::size_t j1) {
        if (!m_roundDxBf16) return;
        bool ok = true;
        for (std::size_t n = 0; n < N; ++n) ok &= roundBf16AllFinite(dx.data() + n * m_in + j0, j1 - j0);
        if (!ok) finite.store(false, std::memory_order_relaxed);
    };
    if (bf16) { // dx[:, j0:j1] = bf16(dy) bf16(W[:, j0:j1])
        packBf16A(m_dyPacked, m_bf16, false, N, m_out, dy.data(), m_out);
        parallelChunks(m_in, kColGrain, [&](std::size_t j0, std::size_t j1) {
            gemmBf16Packed(m_dyPacked, false, j1 - j0, m_weight.forwardValue().data() + j0, m_in, dx.data() + j0, m_in, false);
            roundColumns(j0, j1);
        });
    } else {
        // Column blocks of dx: dx[:, j0:j1] = G W[:, j0:j1]; each task packs only its slice of W.
        parallelChunks(m_in, kColGrain, [&](std::size_t j0, std::size_t j1) {
            const Idx cols = static_cast<Idx>(j1 - j0);
            DX.middleCols(static_cast<Idx>(j0), cols).noalias() = G * Wm.middleCols(static_cast<Idx>(j0), cols);
            roundColumns(j0, j1);
        });
    }
    m_dxFinite = finite.load();
}

} // namespace quantscope
