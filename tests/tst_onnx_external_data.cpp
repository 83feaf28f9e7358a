// ONNX external data: a PyTorch export saved with onnx.save(..., save_as_external_data=True) keeps
// its weights in files beside the model, each tensor naming its file ('location', relative to the
// model's folder), 'offset' and 'length'. Read from its path (as train, eval and analyze read it),
// such a model gives the weights of the same model with its weights inside, whether in one file,
// one file per tensor or a subfolder; a broken reference (a missing, truncated or foreign file, a
// location outside the model's folder, a length or offset the dims or the file contradict) is a
// typed error naming the model, the tensor and the data file. Given as bytes, without its folder,
// the model says where its weights are.
#include "io/exported_model.h"
#include "io/model_source.h"
#include "io/onnx_import.h"
#include "io/onnx_io.h"
#include "nn/model_zoo.h"
#include "util/errors.h"

#include "onnx_import_fixtures.h"

#include <onnx/onnx_pb.h>

#include <QTemporaryDir>
#include <QtTest>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

using namespace quantscope;
namespace fs = std::filesystem;
using onnx_import_fixtures::kFixtures, onnx_import_fixtures::parse, onnx_import_fixtures::serialize;

namespace {

const char* const kFixture = "residual_op13_fold_dyn"; // a conv net with a residual join, weights as raw_data

void setEntry(onnx::TensorProto& t, const std::string& key, const std::string& value)
{
    onnx_import_fixtures::setEntry(*t.mutable_external_data(), key, value);
}

// Moves the raw bytes of every initializer of mp into files under dir: all into `oneFile` one after
// another (each at its offset), or (oneFile empty) each into "<prefix><name>.bin". Returns how many
// moved.
std::size_t externalize(onnx::ModelProto& mp, const fs::path& dir, const std::string& oneFile, const std::string& prefix = "",
                        bool withLength = true)
{
    std::size_t moved = 0;
    std::uint64_t offset = 0;
    std::ofstream one;
    if (!oneFile.empty()) {
        fs::create_directories((dir / oneFile).parent_path());
        one.open(dir / oneFile, std::ios::binary);
    }
    for (onnx::TensorProto& t : *mp.mutable_graph()->mutable_initializer()) {
        if (!t.has_raw_data() || t.raw_data().empty()) continue;
        const std::string& data = t.raw_data();
        const std::string location = oneFile.empty() ? prefix + t.name() + ".bin" : oneFile;
        if (oneFile.empty()) {
            std::ofstream f(dir / location, std::ios::binary);
            f.write(data.data(), static_cast<std::streamsize>(data.size()));
        } else {
            one.write(data.data(), static_cast<std::streamsize>(data.size()));
        }
        setEntry(t, "location", location);
        if (!oneFile.empty()) setEntry(t, "offset", std::to_string(offset));
        if (withLength) setEntry(t, "length", std::to_string(data.size()));
        offset += data.size();
        t.clear_raw_data();
        t.set_data_location(onnx::TensorProto::EXTERNAL);
        ++moved;
    }
    return moved;
}

void save(const onnx::ModelProto& mp, const fs::path& path)
{
    const std::vector<std::uint8_t> b = serialize(mp);
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

onnx::TensorProto& initializer(onnx::ModelProto& mp, std::size_t k) { return *mp.mutable_graph()->mutable_initializer(static_cast<int>(k)); }


} // namespace

class TestOnnxExternalData : public QObject {
    Q_OBJECT

private slots:
    void readsWeightsBesideTheModel_data();
    void readsWeightsBesideTheModel();
    void brokenReferencesAreTypedErrors_data();
    void brokenReferencesAreTypedErrors();
    void bytesWithoutTheirFolder();
    void ownExportResavedBesideItsWeights();

private:
    QTemporaryDir m_tmp;
};

void TestOnnxExternalData::readsWeightsBesideTheModel_data()
{
    QTest::addColumn<QString>("oneFile");
    QTest::addColumn<QString>("prefix");
    QTest::addColumn<bool>("withLength");
    QTest::newRow("one file") << "model.onnx.data" << "" << true;
    QTest::newRow("one file per tensor") << "" << "" << true;
    QTest::newRow("a subfolder, no lengths") << "weights/all.bin" << "" << false;
    QTest::newRow("per tensor in a subfolder") << "" << "w/" << true;
}

// The model read from its path has the layers and the weights, bit for bit, of the same model with
// its weights inside.
void TestOnnxExternalData::readsWeightsBesideTheModel()
{
    QFETCH(QString, oneFile);
    QFETCH(QString, prefix);
    QFETCH(bool, withLength);
    const fs::path inside = kFixtures / (std::string(kFixture) + ".onnx");
    const ExportedModel want = readModelFile(inside.string(), 28, 28);

    const fs::path dir = fs::path(m_tmp.path().toStdString()) / QTest::currentDataTag();
    fs::create_directories(dir / prefix.toStdString());
    onnx::ModelProto mp = parse(inside);
    const std::size_t moved = externalize(mp, dir, oneFile.toStdString(), prefix.toStdString(), withLength);
    QVERIFY2(moved >= 8, qPrintable(QString::number(moved)));
    save(mp, dir / "model.onnx");
    std::uint64_t movedBytes = 0;
    for (const auto& e : fs::recursive_directory_iterator(dir))
        if (e.is_regular_file() && e.path().filename() != "model.onnx") movedBytes += e.file_size();
    QVERIFY(movedBytes > 4096);
    QVERIFY(fs::file_size(dir / "model.onnx") + movedBytes / 2 < fs::file_size(inside)); // the weights are not inside

    const ExportedModel got = readModelFile((dir / "model.onnx").string(), 28, 28);
    QCOMPARE(got.layers.size(), want.layers.size());
    std::size_t tensors = 0;
    for (std::size_t i = 0; i < want.layers.size(); ++i) {
        QCOMPARE(got.layers[i].name, want.layers[i].name);
        QCOMPARE(got.layers[i].tensors.size(), want.layers[i].tensors.size());
        for (std::size_t k = 0; k < want.layers[i].tensors.size(); ++k, ++tensors)
            QVERIFY2(got.layers[i].tensors[k].values == want.layers[i].tensors[k].values, want.layers[i].name.c_str());
    }
    QVERIFY(tensors >= 8);
}

void TestOnnxExternalData::brokenReferencesAreTypedErrors_data()
{
    using Edit = std::function<void(onnx::ModelProto&, const fs::path& dir)>;
    QTest::addColumn<void*>("edit");
    QTest::addColumn<QString>("errorType");
    QTest::addColumn<QString>("mentions");
    static std::vector<std::unique_ptr<Edit>> kept;
    const auto row = [](const char* name, Edit e, const char* type, const char* mentions) {
        kept.push_back(std::make_unique<Edit>(std::move(e)));
        QTest::newRow(name) << static_cast<void*>(kept.back().get()) << QString(type) << QString(mentions);
    };
    row("data file missing", [](onnx::ModelProto&, const fs::path& dir) { fs::remove(dir / "model.onnx.data"); }, "IoError",
        "keeps its data in 'DIR/model.onnx.data', which does not exist");
    row("truncated data file", [](onnx::ModelProto&, const fs::path& dir) { fs::resize_file(dir / "model.onnx.data", 100); },
        "FormatError", "of 'DIR/model.onnx.data', which holds 100 (a truncated data file, or another model's?)");
    row("location with ..", [](onnx::ModelProto& mp, const fs::path&) { setEntry(initializer(mp, 0), "location", "../model.onnx.data"); },
        "FormatError", "its external data location '../model.onnx.data' is not a path inside the model's folder");
    row("absolute location", [](onnx::ModelProto& mp, const fs::path&) { setEntry(initializer(mp, 0), "location", "/etc/passwd"); },
        "FormatError", "its external data location '/etc/passwd' is not a path inside the model's folder");
    row("link leading out",
        [](onnx::ModelProto& mp, const fs::path& dir) { // the right bytes, outside the model's folder
            fs::copy_file(dir / "model.onnx.data", dir.parent_path() / "outside.data", fs::copy_options::overwrite_existing);
            fs::create_directory_symlink(dir.parent_path(), dir / "up");
            setEntry(initializer(mp, 0), "location", "up/outside.data");
        },
        "FormatError", "its external data 'DIR/up/outside.data' leads outside the model's folder");
    row("length against the dims", [](onnx::ModelProto& mp, const fs::path&) { setEntry(initializer(mp, 0), "length", "12"); },
        "FormatError", "its external data length is 12 bytes; its dims");
    row("offset past the end", [](onnx::ModelProto& mp, const fs::path&) { setEntry(initializer(mp, 0), "offset", "99999999999"); },
        "FormatError", "reads bytes [99999999999,");
    row("offset not a number", [](onnx::ModelProto& mp, const fs::path&) { setEntry(initializer(mp, 0), "offset", "-8"); },
        "FormatError", "its external data offset is '-8', not a whole number of bytes");
    row("no location", [](onnx::ModelProto& mp, const fs::path&) { setEntry(initializer(mp, 0), "location", ""); }, "FormatError",
        "keeps its data in an external file but names none");
    row("a folder as the data file",
        [](onnx::ModelProto& mp, const fs::path& dir) {
            fs::create_directory(dir / "sub");
            setEntry(initializer(mp, 0), "location", "sub");
        },
        "IoError", "keeps its data in 'DIR/sub', which is not a regular file");
}

// Each broken reference: the error of its type, starting with the model's path and naming the
// tensor or the data file, and nothing read past it.
void TestOnnxExternalData::brokenReferencesAreTypedErrors()
{
    using Edit = std::function<void(onnx::ModelProto&, const fs::path& dir)>;
    QFETCH(void*, edit);
    QFETCH(QString, errorType);
    QFETCH(QString, mentions);
    const fs::path dir = fs::path(m_tmp.path().toStdString()) / ("broken-" + std::string(QTest::currentDataTag()));
    fs::create_directories(dir);
    onnx::ModelProto mp = parse(kFixtures / (std::string(kFixture) + ".onnx"));
    QVERIFY(externalize(mp, dir, "model.onnx.data") >= 8);
    (*static_cast<Edit*>(edit))(mp, dir);
    const std::string path = (dir / "model.onnx").string();
    save(mp, path);
    mentions.replace("DIR", QString::fromStdString(dir.string()));
    try {
        readModelFile(path, 28, 28);
        QFAIL("read a model whose external data is broken");
    } catch (const Error& e) {
        const QString msg = e.what();
        const QString type = dynamic_cast<const IoError*>(&e)       ? "IoError"
                             : dynamic_cast<const FormatError*>(&e) ? "FormatError"
                             : dynamic_cast<const ConfigError*>(&e) ? "ConfigError"
                                                                    : "Error";
        QVERIFY2(type == errorType, qPrintable(type + ": " + msg));
        QVERIFY2(msg.startsWith(QString::fromStdString(path)), e.what());
        QVERIFY2(msg.contains(mentions), e.what());
    }
}

// Bytes without a folder (a model handed over in memory) cannot reach the data file: a ConfigError
// that says so, naming the file the tensor names.
void TestOnnxExternalData::bytesWithoutTheirFolder()
{
    const fs::path dir = fs::path(m_tmp.path().toStdString()) / "bytes";
    fs::create_directories(dir);
    onnx::ModelProto mp = parse(kFixtures / (std::string(kFixture) + ".onnx"));
    QVERIFY(externalize(mp, dir, "model.onnx.data") >= 8);
    try {
        importOnnx(serialize(mp), "in-memory.onnx");
        QFAIL("read external data without a folder");
    } catch (const ConfigError& e) {
        QVERIFY2(QString(e.what()).startsWith("in-memory.onnx: tensor '") &&
                     QString(e.what()).contains("keeps its data in the external file 'model.onnx.data', which is found beside the model "
                                                "file: read the model from its file"),
                 e.what());
    }
}

// QuantScope's own export (read by the reader of its own files, not the importer), its weights
// re-saved beside it as onnx.save(..., save_as_external_data=True) does: the same model back.
void TestOnnxExternalData::ownExportResavedBesideItsWeights()
{
    std::unique_ptr<Model> model = makeModel("resnet8", 1, 28, 28, 10, 3);
    const ExportedModel exported = exportFloatModel(*model, "resnet8", Normalization::uniform(0.25f, 0.5f, 1), {});
    const std::vector<std::uint8_t> bytes = encodeOnnx(exported);
    const ExportedModel want = decodeOnnx(bytes, "inside.onnx");
    const fs::path dir = fs::path(m_tmp.path().toStdString()) / "own";
    fs::create_directories(dir);
    onnx::ModelProto mp;
    QVERIFY(mp.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())));
    QCOMPARE(mp.producer_name(), std::string("QuantScope"));
    QVERIFY(externalize(mp, dir, "resnet8.onnx.data") >= 20);
    save(mp, dir / "resnet8.onnx");
    const ExportedModel got = readModelFile((dir / "resnet8.onnx").string());
    QCOMPARE(got.modelName, want.modelName);
    QCOMPARE(got.layers.size(), want.layers.size());
    for (std::size_t i = 0; i < want.layers.size(); ++i)
        for (std::size_t k = 0; k < want.layers[i].tensors.size(); ++k)
            QVERIFY2(got.layers[i].tensors.at(k).values == want.layers[i].tensors[k].values, want.layers[i].name.c_str());
}

QTEST_GUILESS_MAIN(TestOnnxExternalData)
#include "tst_onnx_external_data.moc"
