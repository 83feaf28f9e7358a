// The constant folder of the ONNX importer (see onnx_const.h) and its attribute helpers; the
// tensors it folds are decoded in onnx_const_decode.cpp. Each folded op follows its definition in
// the ONNX operator spec; sizes are checked before allocation.
#include "io/onnx_const.h"

#include <algorithm>
#include <limits>
#include <cstdint>
#include <cmath>
#include <functional>
#include <map>

namespace quantscope::onnximport {

using fold_detail::fail;
using fold_detail::isIntType;

namespace {

using onnx::TensorProto;

std::int64_t normAxis(std::int64_t axis, std::size_t rank, const char* op)
{
    const auto r = static_cast<std::int64_t>(rank);
    if (axis < -r || axis >= r) fail(std::string(op) + ": axis " + std::to_string(axis) + " is out of range for rank " + std::to_string(rank));
    return axis < 0 ? axis + r : axis;
}

std::vector<std::int64_t> intsOf(const ConstTensor& t, const char* what)
{
    if (t.isFloat) fail(std::string(what) + " must be integers");
    return t.i;
}

ConstTensor like(const ConstTensor& a, std::vector<std::int64_t> dims)
{
    ConstTensor r;
    r.isFloat = a.isFloat;
    r.dims = std::move(dims);
    r.origin = a.origin;
    r.halfType = a.halfType;
    return r;
}

// Arithmetic on half-precision values: ONNX computes it in that type, rounding every result, which
// folding in float32 would not; such graphs Cast their half-precision weights to float first.
void noHalfArithmetic(const ConstTensor& t, const std::string& op)
{
    if (t.halfType)
        fail(op + " on the " + elemTypeName(t.halfType) + " constant '" + t.origin + "' is not folded (ONNX computes it in " +
                 elemTypeName(t.halfType) + "); half-precision weights are read through a Cast to float",
             true);
}

void checkBatchFree(const ConstTensor& t, const char* op)
{
    if (!t.isFloat)
        for (std::int64_t v : t.i)
            if (v == kBatchDim) fail(std::string(op) + " on the batch size is not folded", true);
}

std::size_t prod(const std::vector<std::int64_t>& d, std::size_t from, std::size_t to)
{
    std::size_t p = 1;
    for (std::size_t k = from; k < to; ++k) p *= static_cast<std::size_t>(d[k]);
    return p;
}

// Copies elements [src .. src + n) of `a` to the end of `out`.
void append(ConstTensor& out, const ConstTensor& a, std::size_t src, std::size_t n)
{
    if (a.isFloat) out.f.insert(out.f.end(), a.f.begin() + static_cast<std::ptrdiff_t>(src), a.f.begin() + static_cast<std::ptrdiff_t>(src + n));
    else out.i.insert(out.i.end(), a.i.begin() + static_cast<std::ptrdiff_t>(src), a.i.begin() + static_cast<std::ptrdiff_t>(src + n));
}

ConstTensor binary(const std::string& op, const ConstTensor& a, const ConstTensor& b)
{
    noHalfArithmetic(a, op);
    noHalfArithmetic(b, op);
    checkBatchFree(a, op.c_str());
    checkBatchFree(b, op.c_str());
    const std::size_t rank = std::max(a.dims.size(), b.dims.size());
    std::vector<std::int64_t> dims(rank), da(rank, 1), db(rank, 1);
    std::copy(a.dims.begin(), a.dims.end(), da.begin() + static_cast<std::ptrdiff_t>(rank - a.dims.size()));
    std::copy(b.dims.begin(), b.dims.end(), db.begin() + static_cast<std::ptrdiff_t>(rank - b.dims.size()));
    for (std::size_t k = 0; k < rank; ++k) {
        if (da[k] != db[k] && da[k] != 1 && db[k] != 1) fail(op + ": shapes do not broadcast");
        dims[k] = da[k] == 1 ? db[k] : da[k];
    }
    const std::uint64_t n = checkedNumel(dims, op);
    if (n > kMaxFoldedElements) fail(op + ": the folded result would have " + std::to_string(n) + " elements", true);
    ConstTensor r;
    const bool equal = op == "Equal"; // a bool tensor, held as 0 and 1 integers
    r.isFloat = !equal && (a.isFloat || b.isFloat);
    r.dims = dims;
    r.origin = a.origin.empty() ? b.origin : a.origin;
    if (r.isFloat) r.f.resize(n);
    else r.i.resize(n);
    std::vector<std::size_t> idx(rank, 0);
    for (std::uint64_t k = 0; k < n; ++k) {
        std::size_t ia = 0, ib = 0;
        for (std::size_t d = 0; d < rank; ++d) {
            ia = ia * static_cast<std::size_t>(da[d]) + (da[d] == 1 ? 0 : idx[d]);
            ib = ib * static_cast<std::size_t>(db[d]) + (db[d] == 1 ? 0 : idx[d]);
        }
        if (equal) {
            r.i[k] = a.isFloat || b.isFloat ? a.at(ia) == b.at(ib) : a.i[ia] == b.i[ib];
        } else if (r.isFloat) {
            const double x = a.at(ia), y = b.at(ib);
            double v = 0;
            if (op == "Add") v = x + y;
            else if (op == "Sub") v = x - y;
            else if (op == "Mul") v = x * y;
            else if (op == "Pow") v = std::pow(x, y);
            else v = x / y;
            r.f[k] = static_cast<float>(v);
        } else {
            const std::int64_t x = a.i[ia], y = b.i[ib];
            const auto lim = std::int64_t{1} << 40; // shape arithmetic only: a sum or difference cannot overflow
            if (x > lim || x < -lim || y > lim || y < -lim) fail(op + ": integers too large to fold");
            std::int64_t v = 0;
            if (op == "Add") v = x + y;
            else if (op == "Sub") v = x - y;
            else if (op == "Mul") {
                // a product can (2^80): undefined behaviour, which fuzz_onnx_import found (4294967041^2)
                if (__builtin_mul_overflow(x, y, &v)) fail("Mul: integers too large to fold");
            } else if (op == "Pow") fail("Pow: integer powers are not folded");
            else {
                if (y == 0) fail("Div: integer division by zero");
                v = x / y;
            }
            r.i[k] = v;
        }
        for (std::size_t d = rank; d-- > 0;) {
            if (++idx[d] < static_cast<std::size_t>(dims[d])) break;
            idx[d] = 0;
        }
    }
    return r;
}

ConstTensor gather(const onnx::NodeProto& n, const ConstTensor& data, const ConstTensor& ind)
{
    if (data.dims.empty()) fail("Gather: scalar data");
    const auto axis = static_cast<std::size_t>(normAxis(attrInt(n, "axis", 0), data.dims.size(), "Gather"));
    const std::vector<std::int64_t> idx = intsOf(ind, "Gather indices");
    std::vector<std::int64_t> dims(data.dims.begin(), data.dims.begin() + static_cast<std::ptrdiff_t>(axis));
    dims.insert(dims.end(), ind.dims.begin(), ind.dims.end());
    dims.insert(dims.end(), data.dims.begin() + static_cast<std::ptrdiff_t>(axis) + 1, data.dims.end());
    if (checkedNumel(dims, "Gather") > kMaxFoldedElements) fail("Gather: the folded result is too large", true);
    const std::size_t outer = prod(data.dims, 0, axis), inner = prod(data.dims, axis + 1, data.dims.size());
    const std::int64_t len = data.dims[axis];
    ConstTensor r = like(data, dims);
    for (std::size_t o = 0; o < outer; ++o)
        for (std::int64_t j : idx) {
            if (j < -len || j >= len) fail("Gather: index " + std::to_string(j) + " is out of range");
            if (j < 0) j += len;
            append(r, data, (o * static_cast<std::size_t>(len) + static_cast<std::size_t>(j)) * inner, inner);
        }
    return r;
}

ConstTensor concat(const onnx::NodeProto& n, const std::vector<const ConstTensor*>& in)
{
    if (in.empty() || !in[0]) fail("Concat: no inputs");
    const std::size_t rank = in[0]->dims.size();
    if (rank == 0) fail("Concat: scalar inputs");
    const auto axis = static_cast<std::size_t>(normAxis(attrInt(n, "axis", 0), rank, "Concat"));
    std::vector<std::int64_t> dims = in[0]->dims;
    dims[axis] = 0;
    bool isFloat = false;
    for (const ConstTensor* t : in) {
        if (!t || t->dims.size() != rank) fail("Concat: inputs of different ranks");
        for (std::size_t d = 0; d < rank; ++d)
            if (d != axis && t->dims[d] != in[0]->dims[d]) fail("Concat: inputs of different shapes");
        dims[axis] += t->dims[axis];
        isFloat = isFloat || t->isFloat;
    }
    for (const ConstTensor* t : in)
        if (t->isFloat != isFloat) fail("Concat: inputs of different types");
    checkedNumel(dims, "Concat");
    ConstTensor r = like(*in[0], dims);
    const std::size_t outer = prod(dims, 0, axis), inner = prod(dims, axis + 1, rank);
    for (std::size_t o = 0; o < outer; ++o)
        for (const ConstTensor* t : in) {
            const std::size_t block = static_cast<std::size_t>(t->dims[axis]) * inner;
            append(r, *t, o * block, block);
        }
    return r;
}

ConstTensor transpose(const onnx::NodeProto& n, const ConstTensor& a)
{
    const std::size_t rank = a.dims.size();
    std::vector<std::int64_t> perm = attrInts(n, "perm");
    if (perm.empty())
        for (std::size_t d = rank; d-- > 0;) perm.push_back(static_cast<std::int64_t>(d));
    if (perm.size() != rank) fail("Transpose: perm does not match the rank");
    std::vector<bool> seen(rank, false);
    for (std::int64_t p : perm) {
        if (p < 0 || p >= static_cast<std::int64_t>(rank) || seen[static_cast<std::size_t>(p)]) fail("Transpose: perm is not a permutation");
        seen[static_cast<std::size_t>(p)] = true;
    }
    std::vector<std::int64_t> dims(rank);
    for (std::size_t d = 0; d < rank; ++d) dims[d] = a.dims[static_cast<std::size_t>(perm[d])];
    std::vector<std::size_t> stride(rank, 1); // input strides
    for (std::size_t d = rank; d-- > 1;) stride[d - 1] = stride[d] * static_cast<std::size_t>(a.dims[d]);
    ConstTensor r = like(a, dims);
    const std::size_t total = a.numel();
    if (a.isFloat) r.f.resize(total);
    else r.i.resize(total);
    std::vector<std::size_t> idx(rank, 0);
    for (std::size_t k = 0; k < total; ++k) {
        std::size_t src = 0;
        for (std::size_t d = 0; d < rank; ++d) src += idx[d] * stride[static_cast<std::size_t>(perm[d])];
        if (src >= total) fail("Transpose: the tensor holds fewer values than its dimensions say");
        if (a.isFloat) r.f[k] = a.f[src];
        else r.i[k] = a.i[src];
        for (std::size_t d = rank; d-- > 0;) {
            if (++idx[d] < static_cast<std::size_t>(dims[d])) break;
            idx[d] = 0;
        }
    }
    return r;
}

ConstTensor reshape(const onnx::NodeProto& n, const ConstTensor& a, const ConstTensor& shape)
{
    std::vector<std::int64_t> dims = intsOf(shape, "Reshape shape");
    const bool allowZero = attrInt(n, "allowzero", 0) != 0;
    long infer = -1;
    std::uint64_t known = 1;
    for (std::size_t d = 0; d < dims.size(); ++d) {
        if (dims[d] == 0 && !allowZero) {
            if (d >= a.dims.size()) fail("Reshape: 0 copies a dimension the input lacks");
            dims[d] = a.dims[d];
        }
        if (dims[d] == -1) {
            if (infer >= 0) fail("Reshape: two -1 dimensions");
            infer = static_cast<long>(d);
            continue;
        }
        if (dims[d] < 0 || dims[d] > (std::int64_t{1} << 31)) fail("Reshape: dimension " + std::to_string(dims[d]), dims[d] == kBatchDim);
        known *= static_cast<std::uint64_t>(dims[d]);
        if (known > kMaxConstElements) fail("Reshape: too many elements");
    }
    if (infer >= 0) {
        if (known == 0 || a.numel() % known) fail("Reshape: -1 cannot be inferred");
        dims[static_cast<std::size_t>(infer)] = static_cast<std::int64_t>(a.numel() / known);
        known *= static_cast<std::uint64_t>(dims[static_cast<std::size_t>(infer)]);
    }
    if (known != a.numel()) fail("Reshape: " + std::to_string(a.numel()) + " elements do not make the target shape");
    ConstTensor r = a;
    r.dims = dims;
    return r;
}

ConstTensor slice(const onnx::NodeProto& n, const std::vector<const ConstTensor*>& in, int opset)
{
    const ConstTensor& a = *in[0];
    std::vector<std::int64_t> starts, ends, axes, steps;
    if (opset < 10) {
        starts = attrInts(n, "starts");
        ends = attrInts(n, "ends");
        axes = attrInts(n, "axes");
    } else {
        if (in.size() < 3 || !in[1] || !in[2]) fail("Slice: lacks starts or ends");
        starts = intsOf(*in[1], "Slice starts");
        ends = intsOf(*in[2], "Slice ends");
        if (in.size() > 3 && in[3]) axes = intsOf(*in[3], "Slice axes");
        if (in.size() > 4 && in[4]) steps = intsOf(*in[4], "Slice steps");
    }
    const std::size_t rank = a.dims.size();
    if (axes.empty())
        for (std::size_t d = 0; d < starts.size(); ++d) axes.push_back(static_cast<std::int64_t>(d));
    if (steps.empty()) steps.assign(starts.size(), 1);
    if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
        fail("Slice: starts, ends, axes and steps differ in length");
    std::vector<std::int64_t> st(rank, 0), sp(rank, 1), dims = a.dims;
    for (std::size_t k = 0; k < starts.size(); ++k) {
        const auto d = static_cast<std::size_t>(normAxis(axes[k], rank, "Slice"));
        const std::int64_t len = a.dims[d];
        // Steps beyond +-2^32 act as +-2^32 (dims are at most 2^31); clamping keeps the arithmetic in range.
        const std::int64_t step = std::clamp<std::int64_t>(steps[k], -(std::int64_t{1} << 32), std::int64_t{1} << 32);
        if (step == 0) fail("Slice: step 0");
        std::int64_t s = starts[k], e = ends[k];
        if (s < 0) s += len;
        if (e < 0) e += len;
        if (step > 0) {
            s = std::clamp<std::int64_t>(s, 0, len);
            e = std::clamp<std::int64_t>(e, 0, len);
            dims[d] = e > s ? (e - s + step - 1) / step : 0;
        } else {
            s = std::clamp<std::int64_t>(s, 0, len - 1);
            e = std::clamp<std::int64_t>(e, -1, len - 1);
            dims[d] = s > e ? (s - e + (-step) - 1) / (-step) : 0;
        }
        st[d] = s;
        sp[d] = step;
    }
    const std::uint64_t total = checkedNumel(dims, "Slice");
    std::vector<std::size_t> stride(rank, 1);
    for (std::size_t d = rank; d-- > 1;) stride[d - 1] = stride[d] * static_cast<std::size_t>(a.dims[d]);
    ConstTensor r = like(a, dims);
    std::vector<std::int64_t> idx(rank, 0);
    for (std::uint64_t k = 0; k < total; ++k) {
        std::size_t src = 0;
        for (std::size_t d = 0; d < rank; ++d) src += static_cast<std::size_t>(st[d] + idx[d] * sp[d]) * stride[d];
        append(r, a, src, 1);
        for (std::size_t d = rank; d-- > 0;) {
            if (++idx[d] < dims[d]) break;
            idx[d] = 0;
        }
    }
    return r;
}

std::vector<std::int64_t> axesOf(const onnx::NodeProto& n, const std::vector<const ConstTensor*>& in, int opset)
{
    if (opset >= 13) return in.size() > 1 && in[1] ? intsOf(*in[1], "axes") : std::vector<std::int64_t>{};
    return attrInts(n, "axes");
}

ConstTensor unsqueeze(const onnx::NodeProto& n, const std::vector<const ConstTensor*>& in, int opset)
{
    const ConstTensor& a = *in[0];
    const std::vector<std::int64_t> axes = axesOf(n, in, opset);
    if (axes.empty()) fail("Unsqueeze: no axes");
    const std::size_t rank = a.dims.size() + axes.size();
    std::vector<bool> one(rank, false);
    for (std::int64_t x : axes) {
        const auto d = static_cast<std::size_t>(normAxis(x, rank, "Unsqueeze"));
        if (one[d]) fail("Unsqueeze: repeated axis");
        one[d] = true;
    }
    ConstTensor r = a;
    r.dims.clear();
    std::size_t src = 0;
    for (std::size_t d = 0; d < rank; ++d) r.dims.push_back(one[d] ? 1 : a.dims[src++]);
    return r;
}

ConstTensor squeeze(const onnx::NodeProto& n, const std::vector<const ConstTensor*>& in, int opset)
{
    const ConstTensor& a = *in[0];
    const std::vector<std::int64_t> axes = axesOf(n, in, opset);
    std::vector<bool> drop(a.dims.size(), axes.empty());
    if (axes.empty())
        for (std::size_t d = 0; d < a.dims.size(); ++d) drop[d] = a.dims[d] == 1;
    for (std::int64_t x : axes) {
        const auto d = static_cast<std::size_t>(normAxis(x, a.dims.size(), "Squeeze"));
        if (a.dims[d] != 1) fail("Squeeze: axis " + std::to_string(x) + " is not of size 1");
        drop[d] = true;
    }
    ConstTensor r = a;
    r.dims.clear();
    for (std::size_t d = 0; d < a.dims.size(); ++d)
        if (!drop[d]) r.dims.push_back(a.dims[d]);
    return r;
}

// ReduceMean, ReduceSum, ReduceL2, ReduceMax and ReduceMin of a float constant, over the axes of
// the attribute or of input 1 (ReduceSum from opset 13), all axes where none are given
// (unless noop_with_empty_axes), keepdims as ONNX says (default 1). Weight standardisation
// (timm's StdConv2d, BiT: the mean and variance of each filter) and weight_norm (the L2 norm of
// each filter) compute a conv's weight so. Sums in double.
ConstTensor reduce(const onnx::NodeProto& n, const std::vector<const ConstTensor*>& in)
{
    const std::string& op = n.op_type();
    const ConstTensor& a = *in[0];
    noHalfArithmetic(a, op);
    if (!a.isFloat) fail(op + ": the input is not a float tensor", true);
    // the importer moves a constant axes input of opset 18 back into the attribute (reduceAxesToAttributes)
    std::vector<std::int64_t> axes = attrInts(n, "axes");
    if (axes.empty() && in.size() > 1 && in[1]) axes = intsOf(*in[1], "axes");
    const std::size_t rank = a.dims.size();
    std::vector<bool> reduced(rank, false);
    if (axes.empty()) {
        if (attrInt(n, "noop_with_empty_axes", 0) != 0) return a;
        reduced.assign(rank, true);
    }
    for (std::int64_t x : axes) {
        const auto d = static_cast<std::size_t>(normAxis(x, rank, op.c_str()));
        if (reduced[d]) fail(op + ": repeated axis");
        reduced[d] = true;
    }
    const bool keep = attrInt(n, "keepdims", 1) != 0;
    std::vector<std::int64_t> kept, out;
    for (std::size_t d = 0; d < rank; ++d) {
        if (reduced[d] && a.dims[d] == 0) fail(op + ": reduces an empty axis", true);
        kept.push_back(reduced[d] ? 1 : a.dims[d]);
        if (!reduced[d] || keep) out.push_back(kept.back());
    }
    const std::size_t total = a.numel(), count = prod(kept, 0, rank), per = count == 0 ? 0 : total / count;
    const bool isMax = op == "ReduceMax", isMin = op == "ReduceMin";
    std::vector<double> acc(count, isMax ? -std::numeric_limits<double>::infinity() : isMin ? std::numeric_limits<double>::infinity() : 0.0);
    // row-major index of each element's output: its coordinates with the reduced ones set to 0
    std::vector<std::size_t> coord(rank, 0);
    for (std::size_t k = 0; k < total; ++k) {
        std::size_t o = 0;
        for (std::size_t d = 0; d < rank; ++d) o = o * static_cast<std::size_t>(kept[d]) + (reduced[d] ? 0 : coord[d]);
        const double v = a.f[k];
        if (isMax) acc[o] = std::max(acc[o], v);
        else if (isMin) acc[o] = std::min(acc[o], v);
        else acc[o] += op == "ReduceL2" ? v * v : v;
        for (std::size_t d = rank; d-- > 0;) { // next coordinate
            if (++coord[d] < static_cast<std::size_t>(a.dims[d])) break;
            coord[d] = 0;
        }
    }
    ConstTensor r = like(a, out);
    r.f.resize(count);
    for (std::size_t o = 0; o < count; ++o)
        r.f[o] = static_cast<float>(op == "ReduceMean" ? acc[o] / static_cast<double>(per) : op == "ReduceL2" ? std::sqrt(acc[o]) : acc[o]);
    return r;
}

ConstTensor cast(const onnx::NodeProto& n, const ConstTensor& a)
{
    const std::int64_t to = attrInt(n, "to", 0);
    ConstTensor r = like(a, a.dims);
    r.halfType = 0; // a float16 value is exact in float32 and float64; an integer cast truncates it exactly too
    if (to == TensorProto::FLOAT || to == TensorProto::DOUBLE) {
        checkBatchFree(a, "Cast");
        r.isFloat = true;
        r.f.resize(a.numel());
        for (std::size_t k = 0; k < a.numel(); ++k) r.f[k] = static_cast<float>(a.at(k));
    } else if (isIntType(static_cast<int>(to))) {
        r.isFloat = false;
        r.i.resize(a.numel());
        for (std::size_t k = 0; k < a.numel(); ++k) {
            if (!a.isFloat) r.i[k] = to == TensorProto::BOOL ? (a.i[k] != 0) : a.i[k];
            else if (!std::isfinite(a.f[k]) || std::fabs(a.f[k]) > 9e18f) fail("Cast: " + std::to_string(a.f[k]) + " is not an integer");
            else r.i[k] = to == TensorProto::BOOL ? (a.f[k] != 0.0f) : static_cast<std::int64_t>(a.f[k]);
        }
    } else {
        fail("Cast to element type " + elemTypeName(to) + " is not folded", true);
    }
    return r;
}

ConstTensor constantOfShape(const onnx::NodeProto& n, const ConstTensor& shape)
{
    const std::vector<std::int64_t> dims = intsOf(shape, "ConstantOfShape shape");
    checkBatchFree(shape, "ConstantOfShape");
    const std::uint64_t total = checkedNumel(dims, "ConstantOfShape");
    if (total > kMaxConstantOfShapeElements) fail("ConstantOfShape: " + std::to_string(total) + " elements is more than a constant subgraph needs", true);
    ConstTensor fill;
    fill.f = {0.0f};
    if (const onnx::AttributeProto* a = findAttr(n, "value")) {
        fill = decodeTensor(a->t());
        if (fill.numel() != 1) fail("ConstantOfShape: value is not one element");
    }
    ConstTensor r;
    r.isFloat = fill.isFloat;
    r.halfType = fill.halfType;
    r.dims = dims;
    if (r.isFloat) r.f.assign(total, fill.f[0]);
    else r.i.assign(total, fill.i[0]);
    return r;
}

ConstTensor constant(const onnx::NodeProto& n)
{
    ConstTensor r;
    if (const onnx::AttributeProto* a = findAttr(n, "value")) return decodeTensor(a->t());
    if (const onnx::AttributeProto* a = findAttr(n, "value_float")) {
        r.f = {a->f()};
    } else if (const onnx::AttributeProto* a = findAttr(n, "value_floats")) {
        r.f.assign(a->floats().begin(), a->floats().end());
        r.dims = {static_cast<std::int64_t>(r.f.size())};
    } else if (const onnx::AttributeProto* a = findAttr(n, "value_int")) {
        r.isFloat = false;
        r.i = {a->i()};
    } else if (const onnx::AttributeProto* a = findAttr(n, "value_ints")) {
        r.isFloat = false;
        r.i.assign(a->ints().begin(), a->ints().end());
        r.dims = {static_cast<std::int64_t>(r.i.size())};
    } else {
        fail("Constant: only value, value_float(s) and value_int(s) are read", true);
    }
    return r;
}

ConstTensor shapeOf(const onnx::NodeProto& n, const ConstTensor& a)
{
    const auto rank = static_cast<std::int64_t>(a.dims.size());
    std::int64_t start = attrInt(n, "start", 0), end = attrInt(n, "end", rank);
    if (start < 0) start += rank;
    if (end < 0) end += rank;
    start = std::clamp<std::int64_t>(start, 0, rank);
    end = std::clamp<std::int64_t>(end, 0, rank);
    ConstTensor r;
    r.isFloat = false;
    for (std::int64_t d = start; d < end; ++d) r.i.push_back(a.dims[static_cast<std::size_t>(d)]);
    r.dims = {static_cast<std::int64_t>(r.i.size())};
    return r;
}

} // namespace

bool isFoldable(const std::string& op)
{
    static const char* ops[] = {"Constant", "Identity", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast",
                                "Reshape", "Transpose", "Slice", "ConstantOfShape", "Add", "Sub", "Mul", "Div",
                                "Reciprocal", "Neg", "Sqrt", "Exp", "Log", "Abs", "Pow", "Clip", "Expand", "Equal", "Where",
                                "ReduceMean", "ReduceSum", "ReduceL2", "ReduceMax", "ReduceMin"};
    return std::find(std::begin(ops), std::end(ops), op) != std::end(ops);
}

std::vector<ConstTensor> foldNode(const onnx::NodeProto& n, const std::vector<const ConstTensor*>& in, int opset)
{
    const std::string& op = n.op_type();
    auto need = [&](std::size_t k) -> const ConstTensor& {
        if (k >= in.size() || !in[k]) fail(op + ": lacks input " + std::to_string(k));
        return *in[k];
    };
    if (op == "Constant") return {constant(n)};
    if (op == "Identity") return {need(0)};
    if (op == "Shape") return {shapeOf(n, need(0))};
    if (op == "Gather") return {gather(n, need(0), need(1))};
    if (op == "Unsqueeze") return need(0), std::vector<ConstTensor>{unsqueeze(n, in, opset)};
    if (op == "Squeeze") return need(0), std::vector<ConstTensor>{squeeze(n, in, opset)};
    if (op == "Concat") return {concat(n, in)};
    if (op.rfind("Reduce", 0) == 0) return need(0), std::vector<ConstTensor>{reduce(n, in)};
    if (op == "Cast") return {cast(n, need(0))};
    if (op == "Reshape") return {reshape(n, need(0), need(1))};
    if (op == "Transpose") return {transpose(n, need(0))};
    if (op == "Slice") return need(0), std::vector<ConstTensor>{slice(n, in, opset)};
    if (op == "ConstantOfShape") return {constantOfShape(n, need(0))};
    if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div" || op == "Pow" || op == "Equal") return {binary(op, need(0), need(1))};
    // x.expand(-1, 3, -1, -1) exports its sizes as Where(Equal(sizes, -1), 1, sizes) (tester 12):
    // condition, x and y of one shape, or single values, as shape arithmetic writes them.
    if (op == "Where") {
        const ConstTensor &c = need(0), &x = need(1), &y = need(2);
        if (c.isFloat) fail("Where: the condition is not a bool tensor");
        if (x.isFloat != y.isFloat) fail("Where: x and y are of different types");
        noHalfArithmetic(x, op);
        noHalfArithmetic(y, op);
        const ConstTensor* shaped = c.numel() != 1 ? &c : x.numel() != 1 ? &x : &y;
        for (const ConstTensor* t : {&c, &x, &y})
            if (t->numel() != 1 && t->dims != shaped->dims) fail("Where: condition, x and y differ in shape", true);
        ConstTensor r = x;
        r.dims = shaped->dims;
        const std::size_t n = shaped->numel();
        r.f.assign(x.isFloat ? n : 0, 0.0f);
        r.i.assign(x.isFloat ? 0 : n, 0);
        const auto pick = [](const ConstTensor& t, std::size_t k) { return t.numel() == 1 ? 0 : k; };
        for (std::size_t k = 0; k < n; ++k) {
            const bool take = c.i[pick(c, k)] != 0;
            if (x.isFloat) r.f[k] = take ? x.f[pick(x, k)] : y.f[pick(y, k)];
            else r.i[k] = take ? x.i[pick(x, k)] : y.i[pick(y, k)];
        }
        return {r};
    }
    // (x - m) * (1 / s) with a tensor s leaves a Reciprocal; a normalisation's buffers may pass
    // through exp(log_std), (v + eps) ** 0.5, s.abs() or s.clamp(min=eps) (tester 11).
    if (op == "Reciprocal" || op == "Neg" || op == "Sqrt" || op == "Exp" || op == "Log" || op == "Abs") {
        ConstTensor r = need(0);
        noHalfArithmetic(r, op);
        if (!r.isFloat && op != "Neg" && op != "Abs") fail(op + ": the input is not a float tensor");
        for (std::int64_t& v : r.i) v = op == "Neg" ? -v : std::abs(v);
        for (float& v : r.f)
            v = op == "Neg" ? -v : op == "Sqrt" ? std::sqrt(v) : op == "Exp" ? std::exp(v) : op == "Log" ? std::log(v)
                : op == "Abs" ? std::fabs(v) : 1.0f / v;
        return {r};
    }
    if (op == "Clip") { // bounds: attributes before opset 11, optional inputs since
        ConstTensor r = need(0);
        noHalfArithmetic(r, op);
        double lo = -std::numeric_limits<double>::infinity(), hi = std::numeric_limits<double>::infinity();
        if (opset < 11) {
            lo = attrFloat(n, "min", -std::numeric_limits<float>::infinity());
            hi = attrFloat(n, "max", std::numeric_limits<float>::infinity());
        } else {
            for (std::size_t k : {std::size_t{1}, std::size_t{2}})
                if (k < in.size() && in[k]) {
                    if (in[k]->numel() != 1) fail("Clip: a bound is not one value");
                    (k == 1 ? lo : hi) = in[k]->at(0);
                }
        }
        for (float& v : r.f) v = static_cast<float>(std::clamp(static_cast<double>(v), lo, hi));
        for (std::int64_t& v : r.i) v = static_cast<std::int64_t>(std::clamp(static_cast<double>(v), lo, hi));
        return {r};
    }
    if (op == "Expand") { // x broadcast to a shape: x + zeros(shape)
        noHalfArithmetic(need(0), op);
        std::vector<std::int64_t> shape = intsOf(need(1), "Expand shape");
        for (std::int64_t& d : shape) // expand_as(x): the batch broadcasts anyway
            if (d == kBatchDim) d = 1;
        ConstTensor zeros;
        zeros.isFloat = need(0).isFloat;
        zeros.dims = shape;
        const std::uint64_t count = checkedNumel(shape, "Expand");
        if (count > kMaxFoldedElements) fail("Expand: the folded result would have " + std::to_string(count) + " elements", true);
        if (zeros.isFloat) zeros.f.assign(count, 0.0f);
        else zeros.i.assign(count, 0);
        ConstTensor r = binary("Add", need(0), zeros);
        r.origin = need(0).origin;
        return {r};
    }
    fail(op + " is not folded", true);
}

const onnx::AttributeProto* findAttr(const onnx::NodeProto& n, const std::string& name)
{
    for (const auto& a : n.attribute())
        if (a.name() == name) return &a;
    return nullptr;
}

const std::string* repeatedAttr(const onnx::NodeProto& n)
{
    for (int a = 1; a < n.attribute_size(); ++a)
        for (int b = 0; b < a; ++b)
            if (n.attribute(a).name() == n.attribute(b).name()) return &n.attribute(a).name();
    return nullptr;
}

std::int64_t attrInt(const onnx::NodeProto& n, const std::string& name, std::int64_t def)
{
    const onnx::AttributeProto* a = findAttr(n, name);
    return a ? a->i() : def;
}

float attrFloat(const onnx::NodeProto& n, const std::string& name, float def)
{
    const onnx::AttributeProto* a = findAttr(n, name);
    return a ? a->f() : def;
}

std::vector<std::int64_t> attrInts(const onnx::NodeProto& n, const std::string& name)
{
    const onnx::AttributeProto* a = findAttr(n, name);
    return a ? std::vector<std::int64_t>(a->ints().begin(), a->ints().end()) : std::vector<std::int64_t>{};
}

std::string attrString(const onnx::NodeProto& n, const std::string& name, const std::string& def)
{
    const onnx::AttributeProto* a = findAttr(n, name);
    return a ? a->s() : def;
}

} // namespace quantscope::onnximport
