// ASCII case folding for names that are compared without case: file extensions (".PNG" is a
// PNG), ONNX enum names, layer kinds. Bytes outside A-Z are kept as they are, so UTF-8 text
// passes through unchanged (std::tolower on a negative char is undefined; this never calls it).
#pragma once

#include <filesystem>
#include <string>

namespace quantscope {

// s with A-Z turned to a-z.
inline std::string asciiLower(std::string s)
{
    for (char& c : s)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return s;
}

// The extension of path, with its dot, in lower case: "data/Train.CSV" -> ".csv", "" without one.
inline std::string lowerExtension(const std::filesystem::path& path) { return asciiLower(path.extension().string()); }

} // namespace quantscope
