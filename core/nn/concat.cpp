#include "nn/concat.h"

#include "tensor/parallel.h"
#include "util/errors.h"

#include <cstring>

namespace quantscope {

Concat::Concat(std::string name, std::size_t inputs) : Layer(std::move(name)), m_inputs(inputs)
{
    if (inputs < 2) throw ConfigError(this->name() + ": Concat joins at least two inputs, given " + std::to_string(inputs));
}

Shape Concat::joined(const std::string& layer, const std::vector<Shape>& in, std::size_t axis)
{
    std::string all;
    for (const Shape& s : in) all += (all.empty() ? "" : ", ") + shapeString(s);
    if (in.size() < 2) throw ConfigError(layer + ": Concat joins at least two inputs, given " + std::to_string(in.size()));
    Shape out = in[0];
    if (out.size() <= axis) throw ConfigError(layer + ": cannot concatenate " + all + " along the channels (axis " + std::to_string(axis) + ")");
    for (std::size_t j = 1; j < in.size(); ++j) {
        const Shape& s = in[j];
        bool ok = s.size() == out.size();
        for (std::size_t d = 0; ok && d < s.size(); ++d) ok = d == axis || s[d] == out[d];
        if (!ok)
            throw ConfigError(layer + ": cannot concatenate shapes " + all +
                              " along the channels (every axis but the channels must be equal)");
        out[axis] += s[axis];
    }
    return out;
}

Shape Concat::outputShape(const Shape& in) const
{
    throw ConfigError(name() + ": Concat takes " + std::to_string(m_inputs) + " inputs, given one of shape " + shapeString(in));
}

Shape Concat::outputShapeMulti(const std::vector<Shape>& in) const
{
    if (in.size() != m_inputs)
        throw ConfigError(name() + ": Concat takes " + std::to_string(m_inputs) + " inputs, given " + std::to_string(in.size()));
    return joined(name(), in, 1);
}

void Concat::forward(const Tensor& x, Tensor&, const RunContext&) { (void)outputShape(x.shape()); }

void Concat::backward(const Tensor& x, const Tensor&, const Tensor&, Tensor&, bool) { (void)outputShape(x.shape()); }

// y[n] = [x0[n]; x1[n]; ...]: per sample, each input's C_j * inner values one after another
void Concat::forwardMulti(const std::vector<const Tensor*>& xs, Tensor& y, const RunContext& /*ctx*/)
{
    std::vector<Shape> shapes;
    for (const Tensor* t : xs) shapes.push_back(t->shape());
    y.resize(outputShapeMulti(shapes));
    const std::size_t N = y.dim(0), row = y.numel() / std::max<std::size_t>(N, 1);
    float* out = y.data();
    parallelFor(N, [&](std::size_t n) {
        std::size_t at = 0;
        for (const Tensor* t : xs) {
            const std::size_t len = t->numel() / N;
            std::memcpy(out + n * row + at, t->data() + n * len, len * sizeof(float));
            at += len;
        }
    });
}

// dxs[j][n] = dy[n]'s slice of input j
void Concat::backwardMulti(const std::vector<const Tensor*>& xs, const Tensor& /*y*/, const Tensor& dy,
                           const std::vector<Tensor*>& dxs)
{
    std::vector<Shape> shapes;
    for (const Tensor* t : xs) shapes.push_back(t->shape());
    const Shape os = outputShapeMulti(shapes);
    if (dy.shape() != os)
        throw ConfigError(name() + ": output gradient " + shapeString(dy.shape()) + " does not match the output " + shapeString(os));
    const std::size_t N = dy.dim(0), row = dy.numel() / std::max<std::size_t>(N, 1);
    for (std::size_t j = 0; j < xs.size(); ++j)
        if (dxs.at(j)) dxs[j]->resize(xs[j]->shape());
    const float* g = dy.data();
    parallelFor(N, [&](std::size_t n) {
        std::size_t at = 0;
        for (std::size_t j = 0; j < xs.size(); ++j) {
            const std::size_t len = xs[j]->numel() / N;
            if (dxs[j]) std::memcpy(dxs[j]->data() + n * len, g + n * row + at, len * sizeof(float));
            at += len;
        }
    });
}

} // namespace quantscope
