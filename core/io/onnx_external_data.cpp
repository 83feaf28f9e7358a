// ONNX external data (onnx/onnx.proto TensorProto.external_data; onnx/external_data_helper.py):
// tensors whose bytes live in a file beside the model, as onnx.save(..., save_as_external_data=True)
// and torch.onnx.export of a model over 2 GB write them. Each such tensor's bytes are read into its
// raw_data before the importer sees the graph, which then reads it as any other initializer.
#include "io/onnx_importer.h"

#include "util/errors.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

namespace quantscope::onnximport {

namespace {

using onnx::TensorProto;
namespace fs = std::filesystem;

// Every external tensor of the model: in each graph (the main one and subgraphs), its initializers
// and its nodes' tensor attributes; and in each local function's nodes.
void forEachTensor(onnx::ModelProto& mp, const std::function<void(TensorProto&)>& visit)
{
    std::function<void(onnx::NodeProto&)> node;
    std::function<void(onnx::GraphProto&)> graph = [&](onnx::GraphProto& g) {
        for (TensorProto& t : *g.mutable_initializer()) visit(t);
        for (onnx::NodeProto& n : *g.mutable_node()) node(n);
    };
    node = [&](onnx::NodeProto& n) {
        for (onnx::AttributeProto& a : *n.mutable_attribute()) {
            if (a.has_t()) visit(*a.mutable_t());
            for (TensorProto& t : *a.mutable_tensors()) visit(t);
            if (a.has_g()) graph(*a.mutable_g());
            for (onnx::GraphProto& g : *a.mutable_graphs()) graph(g);
        }
    };
    graph(*mp.mutable_graph());
    for (onnx::FunctionProto& f : *mp.mutable_functions())
        for (onnx::NodeProto& n : *f.mutable_node()) node(n);
}

// Bytes per element of a type stored as raw bytes; 0 for one that is not (strings).
std::size_t elementBytes(int type)
{
    switch (type) {
    case TensorProto::DOUBLE:
    case TensorProto::INT64:
    case TensorProto::UINT64: return 8;
    case TensorProto::FLOAT:
    case TensorProto::INT32:
    case TensorProto::UINT32: return 4;
    case TensorProto::FLOAT16:
    case TensorProto::BFLOAT16:
    case TensorProto::INT16:
    case TensorProto::UINT16: return 2;
    case TensorProto::INT8:
    case TensorProto::UINT8:
    case TensorProto::BOOL: return 1;
    default: return 0;
    }
}

// A non-negative whole number of external_data (offset, length), or FormatError.
std::uint64_t wholeNumber(const std::string& text, const std::string& what)
{
    if (text.empty() || text.size() > 19 || text.find_first_not_of("0123456789") != std::string::npos)
        throw FormatError(what + " is '" + text + "', not a whole number of bytes");
    return std::stoull(text);
}

} // namespace

void loadExternalData(onnx::ModelProto& mp, const std::string& source, const std::string& folder)
{
    std::uint64_t total = 0;
    fs::path base;
    forEachTensor(mp, [&](TensorProto& t) {
        if (t.data_location() != TensorProto::EXTERNAL && t.external_data_size() == 0) return;
        const std::string what = source + ": tensor '" + t.name() + "'";
        std::string location, offsetText, lengthText;
        for (const onnx::StringStringEntryProto& e : t.external_data()) {
            if (e.key() == "location") location = e.value();
            else if (e.key() == "offset") offsetText = e.value();
            else if (e.key() == "length") lengthText = e.value();
        }
        if (location.empty()) throw FormatError(what + " keeps its data in an external file but names none (external_data 'location')");
        if (folder.empty())
            throw ConfigError(what + " keeps its data in the external file '" + location +
                              "', which is found beside the model file: read the model from its file, or save it with its weights "
                              "inside (onnx.save(..., save_as_external_data=False))");
        // A path relative to the model's folder that stays inside it (as onnx.checker requires).
        const fs::path rel(location);
        bool escapes = rel.is_absolute() || rel.has_root_name() || rel.has_root_directory();
        for (const fs::path& part : rel) escapes = escapes || part == "..";
        if (escapes)
            throw FormatError(what + ": its external data location '" + location +
                              "' is not a path inside the model's folder (ONNX requires a relative path without '..')");
        if (base.empty()) {
            std::error_code ec;
            base = fs::weakly_canonical(fs::absolute(fs::path(folder), ec), ec);
            if (ec) throw IoError(source + ": the model's folder '" + folder + "' cannot be resolved: " + ec.message());
        }
        std::error_code ec;
        const fs::path file = fs::weakly_canonical(base / rel, ec);
        const std::string shown = (fs::path(folder) / rel).string();
        if (ec || !fs::exists(file, ec)) throw IoError(what + " keeps its data in '" + shown + "', which does not exist");
        const auto [fileEnd, baseEnd] = std::mismatch(file.begin(), file.end(), base.begin(), base.end());
        if (baseEnd != base.end()) // through a symbolic link
            throw FormatError(what + ": its external data '" + shown + "' leads outside the model's folder");
        if (!fs::is_regular_file(file, ec)) throw IoError(what + " keeps its data in '" + shown + "', which is not a regular file");
        const std::uint64_t fileSize = fs::file_size(file, ec);
        if (ec) throw IoError(shown + ": " + ec.message());

        const std::size_t width = elementBytes(t.data_type());
        if (width == 0)
            throw ConfigError(what + " of type " + elemTypeName(t.data_type()) + " keeps its data in an external file (only numbers are read)");
        const std::vector<std::int64_t> dims(t.dims().begin(), t.dims().end());
        std::uint64_t count = 0;
        try {
            count = checkedNumel(dims, "tensor '" + t.name() + "'");
        } catch (const FoldError& e) {
            throw FormatError(source + ": " + e.what);
        }
        const std::uint64_t bytes = count * width;
        const std::uint64_t offset = offsetText.empty() ? 0 : wholeNumber(offsetText, what + ": its external data offset");
        if (!lengthText.empty() && wholeNumber(lengthText, what + ": its external data length") != bytes)
            throw FormatError(what + ": its external data length is " + lengthText + " bytes; its dims " + listOf(dims) + " need " +
                              std::to_string(bytes));
        if (offset > fileSize || bytes > fileSize - offset)
            throw FormatError(what + " reads bytes [" + std::to_string(offset) + ", " + std::to_string(offset + bytes) + ") of '" + shown +
                              "', which holds " + std::to_string(fileSize) + " (a truncated data file, or another model's?)");
        total += bytes;
        if (total > kMaxExternalBytes)
            throw ConfigError(source + ": its external data holds more than " + std::to_string(kMaxExternalBytes >> 20) + " MiB of weights");
        std::string data(static_cast<std::size_t>(bytes), '\0');
        std::ifstream in(file, std::ios::binary);
        if (!in || !in.seekg(static_cast<std::streamoff>(offset)) || !in.read(data.data(), static_cast<std::streamsize>(bytes)))
            throw IoError(shown + ": cannot read bytes [" + std::to_string(offset) + ", " + std::to_string(offset + bytes) + ")");
        t.set_raw_data(std::move(data));
        t.clear_external_data();
        t.set_data_location(TensorProto::DEFAULT);
    });
}

} // namespace quantscope::onnximport

namespace quantscope {

std::string modelFolder(const std::string& path)
{
    const std::filesystem::path parent = std::filesystem::path(path).parent_path();
    return parent.empty() ? std::string(".") : parent.string();
}

} // namespace quantscope
