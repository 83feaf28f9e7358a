// CSV images (the Kaggle digit-recognizer layout): an optional header row, then one image per
// row: the label, then the pixels 0..255, channel-planar for colour (all red, then green, then
// blue; each plane row-major), which is how a (C, H, W) array flattens.
//   - a .csv file: its rows are split into train/test by opts.testFraction per class (by row hash: splitTrainTest);
//   - a folder: train.csv, and test.csv when it has the label column (Kaggle's test.csv has none:
//     it is then ignored and train.csv is split as above).
// The shape is C=1 square (N*N pixel columns), C=3 square (3*N*N) or --image-shape CxHxW.
#include "data/readers.h"

#include "util/atomic_file.h"
#include "util/ascii_text.h"
#include "util/errors.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <string_view>

namespace quantscope {

namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t kMaxCsvBytes = std::uint64_t{1} << 33;

std::string_view trim(std::string_view s)
{
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
    if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
    return s;
}

// The lines of a text, numbered from 1; blank lines are skipped.
class Lines {
public:
    explicit Lines(std::string_view text) : m_text(text) {}
    bool next(std::string_view& line, std::size_t& number)
    {
        while (m_pos < m_text.size()) {
            const std::size_t end = std::min(m_text.find('\n', m_pos), m_text.size());
            line = m_text.substr(m_pos, end - m_pos);
            m_pos = end + 1;
            number = ++m_line;
            if (!trim(line).empty()) return true;
        }
        return false;
    }

private:
    std::string_view m_text;
    std::size_t m_pos = 0, m_line = 0;
};

std::size_t columnCount(std::string_view line) { return static_cast<std::size_t>(std::count(line.begin(), line.end(), ',')) + 1; }

bool isNumber(std::string_view cell)
{
    cell = trim(cell);
    double v = 0;
    const auto r = std::from_chars(cell.data(), cell.data() + cell.size(), v);
    return !cell.empty() && r.ec == std::errc() && r.ptr == cell.data() + cell.size();
}

bool isHeader(std::string_view line)
{
    std::size_t start = 0;
    while (true) {
        const std::size_t comma = line.find(',', start);
        if (!isNumber(line.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start)))
            return true;
        if (comma == std::string_view::npos) return false;
        start = comma + 1;
    }
}

// The first and the last field of a line.
std::string_view firstField(std::string_view line) { return trim(line.substr(0, line.find(','))); }
std::string_view lastField(std::string_view line)
{
    const std::size_t comma = line.rfind(',');
    return trim(comma == std::string_view::npos ? line : line.substr(comma + 1));
}

// Whether every field after the first is a pixel value (a whole number 0..255).
bool restArePixels(std::string_view line)
{
    std::size_t start = line.find(',');
    if (start == std::string_view::npos) return false;
    while (start != std::string_view::npos) {
        const std::size_t comma = line.find(',', start + 1);
        const std::string_view cell = trim(line.substr(start + 1, comma == std::string_view::npos ? std::string_view::npos : comma - start - 1));
        long v = -1;
        const auto r = std::from_chars(cell.data(), cell.data() + cell.size(), v);
        if (cell.empty() || r.ec != std::errc() || r.ptr != cell.data() + cell.size() || v < 0 || v > 255) return false;
        start = comma;
    }
    return true;
}

struct CsvText {
    std::string path;
    std::vector<std::uint8_t> bytes;
    std::string_view text() const { return {reinterpret_cast<const char*>(bytes.data()), bytes.size()}; }
    std::size_t columns = 0;
    bool header = false;
    // The header row as read: its line, its first field, whether it ends with a comma, and whether
    // all after its first field are pixel values (then it is likely a data row with a class name
    // for a label, in a file without a header).
    std::size_t headerLine = 0;
    std::string headerFirst, headerLast;
    bool headerTrailingComma = false, headerLooksLikeRow = false;
    // What separates the first line's fields when it is not a comma (';', a tab): said when the
    // file reads as one column.
    std::string otherSeparator;
};

CsvText readCsv(const std::string& path)
{
    CsvText t;
    t.path = path;
    t.bytes = readFileBytes(path, kMaxCsvBytes);
    // A UTF-8 byte order mark (Excel's "CSV UTF-8") is no part of the first field: with it, a file
    // without a header lost its first row, taken for a header (tester 11).
    if (t.bytes.size() >= 3 && t.bytes[0] == 0xEF && t.bytes[1] == 0xBB && t.bytes[2] == 0xBF)
        t.bytes.erase(t.bytes.begin(), t.bytes.begin() + 3);
    Lines lines(t.text());
    std::string_view first;
    std::size_t n = 0;
    if (!lines.next(first, n)) throw FormatError(path + ": the CSV file is empty");
    t.columns = columnCount(first);
    t.header = isHeader(first);
    if (t.columns == 1) {
        if (first.find(';') != std::string_view::npos) t.otherSeparator = "semicolons";
        else if (first.find('\t') != std::string_view::npos) t.otherSeparator = "tabs";
        else if (trim(first).find(' ') != std::string_view::npos) t.otherSeparator = "spaces";
    }
    if (t.header) {
        t.headerLine = n;
        t.headerFirst = std::string(firstField(first).substr(0, 40));
        t.headerLast = std::string(lastField(first).substr(0, 40));
        t.headerTrailingComma = t.columns > 1 && lastField(first).empty();
        t.headerLooksLikeRow = restArePixels(first);
    }
    // A comma at the end of every row (as some exporters write) is an empty last field, not a
    // pixel: said so, rather than a pixel count that fits no shape. It is refused, not skipped: a
    // row whose last pixel is missing reads the same, and pandas and numpy read an extra column too.
    std::string_view row = first;
    if (!t.header || lines.next(row, n))
        if (t.columns > 1 && lastField(row).empty())
            throw FormatError(path + ": line " + std::to_string(n) + " ends with a comma, an empty last field after " +
                              std::to_string(columnCount(row) - 1) + " values; a row is the label and the pixels only: remove "
                              "the trailing comma from every row" + (t.headerTrailingComma ? " and the header" : ""));
    return t;
}

// Parses a whole number in [0, max] from `cell`; false when it is not one.
bool parseWhole(std::string_view cell, long& v)
{
    cell = trim(cell);
    const auto r = std::from_chars(cell.data(), cell.data() + cell.size(), v);
    return !cell.empty() && r.ec == std::errc() && r.ptr == cell.data() + cell.size();
}

// Rows of `t` with the label first, each checked; labels must be below `labelLimit`, which
// `limitFrom` explains in an out-of-range message (e.g. " (classes.txt names 2 classes)"). A label
// that is a name says how names are given (classes.txt), and where the first row was taken for a
// header for its name alone, names that row.
LabeledImages parseRows(const CsvText& t, const ImageShape& shape, std::size_t labelLimit, const std::string& limitFrom)
{
    LabeledImages s;
    s.channels = shape.channels;
    s.height = shape.height;
    s.width = shape.width;
    Lines lines(t.text());
    std::string_view line;
    std::size_t number = 0;
    if (t.header) lines.next(line, number);
    const std::string at = t.path + ": line ";
    const std::string file = fs::path(t.path).filename().string() + ":";
    while (lines.next(line, number)) {
        const std::size_t cols = columnCount(line);
        if (cols != t.columns)
            throw FormatError(at + std::to_string(number) + " has " + std::to_string(cols) + " columns; " +
                              (t.header ? "the header has " : "the first row has ") + std::to_string(t.columns) +
                              (lastField(line).empty()           ? " (line " + std::to_string(number) + " ends with a comma)"
                               : t.header && t.headerTrailingComma ? " (the header ends with a comma)"
                                                                  : std::string()));
        std::size_t start = 0;
        for (std::size_t c = 0; c < cols; ++c) {
            const std::size_t comma = std::min(line.find(',', start), line.size());
            const std::string_view cell = line.substr(start, comma - start);
            start = comma + 1;
            long v = 0;
            const std::string where = at + std::to_string(number) + ", column " + std::to_string(c + 1);
            if (!parseWhole(cell, v)) {
                const std::string shown(trim(cell).substr(0, 40));
                if (shown.empty())
                    throw FormatError(where + ": the field is empty" + (c + 1 == cols ? " (the line ends with a comma)" : " (two commas in a row)"));
                if (c == 0 && !isNumber(cell)) { // a class name for a label
                    const std::string names = "labels are class indices 0..N-1, not names: write each row's class index, and "
                                              "the class names, one a line in index order, in classes.txt beside the CSV";
                    if (t.header && t.headerLooksLikeRow) // the first row was taken for a header for its name alone
                        throw FormatError(at + std::to_string(t.headerLine) + ", column 1: '" + t.headerFirst + "' is a class name; " +
                                          names + ". (Line " + std::to_string(t.headerLine) + " was read as a header, as its first "
                                          "field is not a number, but the rest of it is pixel values: the file has no header, "
                                          "and line " + std::to_string(number) + "'s label '" + shown + "' is a name too)");
                    throw FormatError(where + ": '" + shown + "' is not a whole number; " + names);
                }
                throw FormatError(where + ": '" + shown + "' is not a whole number" +
                                  (c == 0 ? std::string(" (labels are class indices)")
                                          : std::string(" (pixels are bytes 0..255") + (isNumber(cell) ? ")" : ", in decimal digits)")));
            }
            if (c == 0) {
                if (v < 0 || static_cast<std::size_t>(v) >= labelLimit)
                    throw FormatError(where + ": label " + std::to_string(v) + " is out of range (0.." +
                                      std::to_string(labelLimit - 1) + ")" + limitFrom);
                s.labels.push_back(static_cast<std::int32_t>(v));
                s.sources.push_back(file + std::to_string(number));
            } else {
                if (v < 0 || v > 255)
                    throw FormatError(where + ": pixel " + std::to_string(v) + " is outside 0..255");
                s.pixels.push_back(static_cast<std::uint8_t>(v));
            }
        }
    }
    if (s.labels.empty()) throw FormatError(t.path + ": holds no data rows");
    return s;
}

ImageShape shapeFor(const CsvText& t, const ImageShape& given)
{
    if (t.columns < 2)
        throw FormatError(t.path + ": has " + std::to_string(t.columns) + " column; expected a label and pixels" +
                          (t.otherSeparator.empty() ? std::string()
                                                    : " (its fields are separated by " + t.otherSeparator +
                                                          "; the values must be separated by commas: save it as comma-separated CSV, "
                                                          "e.g. pandas' to_csv)"));
    const std::size_t P = t.columns - 1;
    if (given.given()) {
        if (given.channels * given.height * given.width != P)
            throw ConfigError(t.path + ": rows hold " + std::to_string(P) + " pixels, but --image-shape " +
                              std::to_string(given.channels) + "x" + std::to_string(given.height) + "x" +
                              std::to_string(given.width) + " needs " +
                              std::to_string(given.channels * given.height * given.width));
        return given;
    }
    for (std::size_t C : {std::size_t{1}, std::size_t{3}}) {
        if (P % C) continue;
        const auto side = static_cast<std::size_t>(std::llround(std::sqrt(static_cast<double>(P / C))));
        if (side * side * C == P) return {C, side, side};
    }
    throw FormatError(t.path + ": rows hold " + std::to_string(P) + " pixels, which is neither NxN (grayscale) nor "
                      "3xNxN (colour); give the shape with --image-shape CxHxW");
}

std::size_t maxLabel(const LabeledImages& s) { return static_cast<std::size_t>(*std::max_element(s.labels.begin(), s.labels.end())); }

} // namespace

RawDataset readCsvDataset(const std::string& path, const DatasetOptions& opts)
{
    std::error_code ec;
    const bool folder = fs::is_directory(path, ec);
    const fs::path trainPath = folder ? fs::path(path) / "train.csv" : fs::path(path);
    const fs::path dir = folder ? fs::path(path) : trainPath.parent_path();
    RawDataset raw;
    raw.name = folder ? baseName(path) : trainPath.stem().string();

    const CsvText train = readCsv(trainPath.string());
    const ImageShape shape = shapeFor(train, opts.imageShape);
    // classes.txt, when present, fixes the class count; otherwise it is the largest label + 1.
    const std::vector<std::string> names = readClassesTxt(dir.string());
    const std::string namedBy =
        names.empty() ? std::string() : " (" + (dir / "classes.txt").string() + " names " + std::to_string(names.size()) + " classes)";
    LabeledImages all = parseRows(train, shape, names.empty() ? kMaxClasses : names.size(), namedBy);
    if (std::all_of(all.labels.begin(), all.labels.end(), [&](std::int32_t l) { return l == all.labels[0]; }))
        throw FormatError(trainPath.string() + ": every row has label " + std::to_string(all.labels[0]) +
                          "; a classifier needs at least two classes");
    const std::size_t classes = names.empty() ? maxLabel(all) + 1 : names.size();
    raw.classNames = names.empty() ? numberedClassNames(classes) : names;
    // Classes are 0..K-1: a label with no rows is a gap (a stray label, or the label not in the
    // first column, when pixel values become labels). A folder of images refuses an empty class too.
    std::vector<std::size_t> rows(classes, 0);
    for (std::int32_t l : all.labels) ++rows[static_cast<std::size_t>(l)];
    std::string empty;
    std::size_t emptyCount = 0, single = 0;
    for (std::size_t c = 0; c < classes; ++c) {
        single += rows[c] == 1;
        if (rows[c] != 0) continue;
        if (++emptyCount <= 5) empty += (empty.empty() ? "" : ", ") + std::to_string(c);
    }
    // A header whose last column is the label (as some exports write it) says why the first column's
    // pixel values read as labels.
    const std::string last = asciiLower(train.headerLast);
    const bool labelLast = train.header && train.columns > 2 && (last == "label" || last == "labels" || last == "class" || last == "target");
    const std::string hint = "; labels must run 0..K-1 in the first column" + std::string(names.empty() ? "" : " (K from classes.txt)") +
                             (labelLast ? "; the header names the last column '" + train.headerLast +
                                              "': move that column first (the label, then the pixels)"
                                        : std::string());
    if (emptyCount)
        throw FormatError(trainPath.string() + ": " + std::to_string(classes) + " classes, and label" + (emptyCount > 1 ? "s " : " ") + empty +
                          (emptyCount > 5 ? " and " + std::to_string(emptyCount - 5) + " more" : "") + (emptyCount > 1 ? " have" : " has") +
                          " no rows" + hint);
    if (classes > 2 && 2 * single > classes)
        throw FormatError(trainPath.string() + ": " + std::to_string(single) + " of its " + std::to_string(classes) +
                          " classes have a single row" + hint);

    const fs::path testPath = dir / "test.csv";
    bool haveTest = false;
    std::string why;
    if (folder && fs::is_regular_file(testPath, ec)) {
        CsvText test = readCsv(testPath.string());
        if (test.columns == train.columns) {
            raw.test = parseRows(test, shape, classes,
                                 names.empty() ? " (the training rows' labels go up to " + std::to_string(classes - 1) + ")" : namedBy);
            raw.train = std::move(all);
            raw.split = "test.csv";
            haveTest = true;
        } else if (test.columns + 1 == train.columns) {
            why = " (test.csv has no label column)";
        } else {
            throw FormatError(testPath.string() + ": has " + std::to_string(test.columns) + " columns; " +
                              trainPath.string() + " has " + std::to_string(train.columns));
        }
    }
    if (!haveTest && opts.testOnly) { // every row is a test row
        raw.train.channels = all.channels;
        raw.train.height = all.height;
        raw.train.width = all.width;
        raw.test = std::move(all);
        raw.split = "every row of " + trainPath.filename().string() + why;
    } else if (!haveTest) {
        auto [tr, te] = splitTrainTest(all, opts.testFraction, trainPath.string());
        raw.train = std::move(tr);
        raw.test = std::move(te);
        raw.splitByFraction = true;
        raw.split = percentText(opts.testFraction) + " of " +
                    trainPath.filename().string() + " per class" + why;
    }
    return raw;
}

} // namespace quantscope
