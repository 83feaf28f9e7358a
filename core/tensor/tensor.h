// Tensor: an owning, contiguous float buffer with a row-major shape (NCHW for images).
// Eigen views over it are made with Eigen::Map at the point of use (see matrixView()).
#pragma once

#include <Eigen/Core>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

namespace quantscope {

using Shape = std::vector<std::size_t>;

std::size_t shapeNumel(const Shape& s);
std::string shapeString(const Shape& s);

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixMap = Eigen::Map<RowMatrix>;
using ConstMatrixMap = Eigen::Map<const RowMatrix>;
using VectorMap = Eigen::Map<Eigen::VectorXf>;
using ConstVectorMap = Eigen::Map<const Eigen::VectorXf>;

class Tensor {
public:
    Tensor() = default;
    explicit Tensor(Shape shape, float fill = 0.0f);
    Tensor(Shape shape, std::vector<float> data);

    const Shape& shape() const { return m_shape; }
    std::size_t dim(std::size_t i) const { return m_shape.at(i); }
    std::size_t rank() const { return m_shape.size(); }
    std::size_t numel() const { return m_data.size(); }
    bool empty() const { return m_data.empty(); }

    float* data() { return m_data.data(); }
    const float* data() const { return m_data.data(); }
    float& operator[](std::size_t i) { return m_data[i]; }
    float operator[](std::size_t i) const { return m_data[i]; }
    std::vector<float>& values() { return m_data; }
    const std::vector<float>& values() const { return m_data; }

    // Resizes to `shape`; keeps capacity, so reusing a Tensor per batch does not reallocate.
    void resize(const Shape& shape);
    // Same element count, new shape (e.g. NCHW -> N x CHW).
    void reshape(const Shape& shape);
    void fill(float v);
    void setZero() { fill(0.0f); }

    // View as a rows x cols row-major matrix (rows * cols == numel()).
    MatrixMap matrix(std::size_t rows, std::size_t cols);
    ConstMatrixMap matrix(std::size_t rows, std::size_t cols) const;
    VectorMap vector() { return VectorMap(m_data.data(), static_cast<Eigen::Index>(m_data.size())); }
    ConstVectorMap vector() const
    {
        return ConstVectorMap(m_data.data(), static_cast<Eigen::Index>(m_data.size()));
    }

private:
    Shape m_shape;
    std::vector<float> m_data;
};

// Index of the largest value in each row of scores (N, K) (the first on ties), into out[0, N).
void argmaxRows(const Tensor& scores, std::span<std::int32_t> out);

} // namespace quantscope
