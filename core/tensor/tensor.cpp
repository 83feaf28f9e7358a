#include "tensor/tensor.h"

#include "util/errors.h"

#include <algorithm>
#include <sstream>

namespace quantscope {

std::size_t shapeNumel(const Shape& s)
{
    std::size_t n = 1;
    for (std::size_t d : s) n *= d;
    return n;
}

std::string shapeString(const Shape& s)
{
    std::ostringstream os;
    os << '[';
    for (std::size_t i = 0; i < s.size(); ++i) os << (i ? "," : "") << s[i];
    os << ']';
    return os.str();
}

Tensor::Tensor(Shape shape, float fill) : m_shape(std::move(shape)), m_data(shapeNumel(m_shape), fill) {}

Tensor::Tensor(Shape shape, std::vector<float> data) : m_shape(std::move(shape)), m_data(std::move(data))
{
    if (shapeNumel(m_shape) != m_data.size())
        throw ConfigError("tensor shape " + shapeString(m_shape) + " does not match " +
                          std::to_string(m_data.size()) + " values");
}

void Tensor::resize(const Shape& shape)
{
    m_shape = shape;
    m_data.resize(shapeNumel(shape));
}

void Tensor::reshape(const Shape& shape)
{
    if (shapeNumel(shape) != m_data.size())
        throw ConfigError("cannot reshape " + shapeString(m_shape) + " to " + shapeString(shape));
    m_shape = shape;
}

void Tensor::fill(float v) { std::fill(m_data.begin(), m_data.end(), v); }

MatrixMap Tensor::matrix(std::size_t rows, std::size_t cols)
{
    return MatrixMap(m_data.data(), static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(cols));
}

ConstMatrixMap Tensor::matrix(std::size_t rows, std::size_t cols) const
{
    return ConstMatrixMap(m_data.data(), static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(cols));
}

void argmaxRows(const Tensor& scores, std::span<std::int32_t> out)
{
    const std::size_t N = scores.dim(0), K = scores.dim(1);
    for (std::size_t n = 0; n < N && n < out.size(); ++n) {
        const float* r = scores.data() + n * K;
        std::size_t best = 0;
        for (std::size_t j = 1; j < K; ++j)
            if (r[j] > r[best]) best = j;
        out[n] = static_cast<std::int32_t>(best);
    }
}

} // namespace quantscope
