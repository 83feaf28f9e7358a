#include "nn/add.h"

#include "tensor/parallel.h"
#include "util/errors.h"

#include <cstring>

namespace quantscope {

Shape Add::outputShape(const Shape& in) const
{
    throw ConfigError(name() + ": Add takes two inputs, given one of shape " + shapeString(in));
}

Shape Add::outputShapeMulti(const std::vector<Shape>& in) const
{
    if (in.size() != 2) throw ConfigError(name() + ": Add takes two inputs, given " + std::to_string(in.size()));
    if (in[0] != in[1])
        throw ConfigError(name() + ": cannot add shapes " + shapeString(in[0]) + " and " + shapeString(in[1]));
    return in[0];
}

void Add::forward(const Tensor& x, Tensor&, const RunContext&) { (void)outputShape(x.shape()); }

void Add::backward(const Tensor& x, const Tensor&, const Tensor&, Tensor&, bool) { (void)outputShape(x.shape()); }

// y = a + b
void Add::forwardMulti(const std::vector<const Tensor*>& xs, Tensor& y, const RunContext& /*ctx*/)
{
    y.resize(outputShapeMulti({xs.at(0)->shape(), xs.at(1)->shape()}));
    const std::size_t n = y.numel();
    const float* __restrict a = xs[0]->data();
    const float* __restrict b = xs[1]->data();
    float* __restrict out = y.data();
    parallelChunks(n, elementwiseGrain(n), [=](std::size_t lo, std::size_t hi) {
        const float* __restrict aa = a;
        const float* __restrict bb = b;
        float* __restrict dst = out;
        for (std::size_t i = lo; i < hi; ++i) dst[i] = aa[i] + bb[i];
    });
}

// da = db = dy
void Add::backwardMulti(const std::vector<const Tensor*>& xs, const Tensor& /*y*/, const Tensor& dy,
                        const std::vector<Tensor*>& dxs)
{
    const Shape os = outputShapeMulti({xs.at(0)->shape(), xs.at(1)->shape()});
    if (dy.shape() != os)
        throw ConfigError(name() + ": output gradient " + shapeString(dy.shape()) + " does not match the output " +
                          shapeString(os));
    float* out[2] = {};
    for (std::size_t j = 0; j < 2; ++j) {
        if (!dxs.at(j)) continue;
        dxs[j]->resize(xs.at(j)->shape());
        out[j] = dxs[j]->data();
    }
    // Copies in parallel chunks (a residual join's activations are large; one thread does not fill
    // the memory bandwidth).
    const std::size_t n = dy.numel();
    const float* g = dy.data();
    parallelChunks(n, elementwiseGrain(n), [=](std::size_t lo, std::size_t hi) {
        for (float* o : out)
            if (o) std::memcpy(o + lo, g + lo, (hi - lo) * sizeof(float));
    });
}

} // namespace quantscope
