// Padding of feature maps as its own layer, where no Conv or AvgPool takes it into its window:
// PyTorch's F.pad / nn.ZeroPad2d / nn.ReflectionPad2d / nn.ReplicationPad2d, and Conv2d's
// padding_mode='reflect' or 'replicate' (exported as ONNX Pad, mode constant, reflect or edge,
// then a Conv without padding). Every output value is an input value or a zero, so a quantized
// input's grid is the output's (zero is a grid value: the zero point is an integer).
#pragma once

#include "nn/layer.h"

#include <array>
#include <cstdint>

namespace quantscope {

// How the border is filled (the values are .qsm codes, docs/FORMAT.md): Zeros (ONNX mode
// "constant" with value 0), Reflect (the mirror image without the edge value: x[-1] = x[1]),
// Replicate (the edge value repeated; ONNX "edge").
enum class PadMode : std::uint8_t { Zeros = 0, Reflect = 1, Replicate = 2 };
const char* padModeName(PadMode m); // "zeros", "reflect", "replicate": PyTorch's padding_mode names

// y (N, C, top + H + bottom, left + W + right) from x (N, C, H, W). Reflect needs each pad below
// its axis' size (PyTorch's rule), Replicate a non-empty input; outputShape throws ConfigError
// naming the layer, the pads and the shape otherwise. backward adds each output gradient into the
// input value it copies (a reflected or replicated value collects several).
class Pad2d final : public Layer {
public:
    // pads: top, left, bottom, right, each at most kMaxPad (ConfigError otherwise).
    static constexpr std::size_t kMaxPad = 64;
    Pad2d(std::string name, PadMode mode, std::array<std::size_t, 4> pads);
    LayerKind kind() const override { return LayerKind::Pad; }
    Shape outputShape(const Shape& in) const override;
    void forward(const Tensor& x, Tensor& y, const RunContext& ctx) override;
    void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx, bool needInputGrad) override;
    std::string describe() const override;
    PadMode mode() const { return m_mode; }
    const std::array<std::size_t, 4>& pads() const { return m_pads; }
    // The input index along an axis of `size` values that output index `o` copies, or -1 for a
    // zero (Zeros mode beyond the edges); `before` is the axis' leading pad.
    static long sourceIndex(PadMode mode, long o, std::size_t before, std::size_t size);

private:
    PadMode m_mode;
    std::array<std::size_t, 4> m_pads;
};

} // namespace quantscope
