// ONNX graphs whose input height and width are dynamic (torch.onnx.export with dynamic_axes
// {0: 'N', 2: 'H', 3: 'W'}): real exports (tests/onnx_import/*_dynhw, make_fixtures.py, torch
// 1.13) are read at the size asked for, and then compute what PyTorch computes at that size, at
// the export's size and at another (12x10, the JSON's input2/output2); without a size they are
// read at 28x28 (one channel) or 32x32 (three), with a note; train, eval and the analyses read
// them at the data's size (modelFromFile, prepareModelForData); a flattened classifier that takes
// only one size fails elsewhere with a message that says the size was chosen.
#include "onnx/export_fixtures.h" // first: TBB's profiling.h before Qt (a member named emit)

#include "analysis/file_eval.h"
#include "io/exported_model.h"
#include "io/model_source.h"
#include "io/onnx_import.h"
#include "util/errors.h"

#include "onnx_import_fixtures.h"

#include <onnx/onnx_pb.h>

#include <QtTest>

#include <fstream>

using namespace quantscope;
using namespace onnx_import_fixtures;

namespace {

// PyTorch's output at the fixture's second size (input2/output2) as a Reference.
Reference secondSize(const std::string& name)
{
    std::ifstream f(kFixtures / (name + ".json"));
    const nlohmann::json j = nlohmann::json::parse(f);
    Reference r = loadReference(kFixtures / (name + ".json"));
    r.inputShape = j.at("input2_shape").get<Shape>();
    r.input = j.at("input2").get<std::vector<float>>();
    r.output = j.at("output2").get<std::vector<float>>();
    return r;
}

ExportedModel importAt(const std::string& name, std::size_t h, std::size_t w, OnnxImportInfo* info = nullptr)
{
    const fs::path p = kFixtures / (name + ".onnx");
    OnnxImportOptions o;
    o.height = h;
    o.width = w;
    return importOnnx(fileBytes(p), p.string(), info, o);
}

bool hasNote(const ExportedModel& m, const std::string& text)
{
    return std::any_of(m.notes.begin(), m.notes.end(), [&](const std::string& n) { return n.find(text) != std::string::npos; });
}

} // namespace

class TestOnnxDynamicSize : public QObject {
    Q_OBJECT

private slots:
    void matchesPyTorchAtTwoSizes_data()
    {
        QTest::addColumn<QString>("name");
        QTest::newRow("residual, opset 13, folded") << "residual_op13_fold_dynhw";
        QTest::newRow("mobile block, opset 11") << "mobile_op11_nofold_dynhw";
    }
    // The graph read at the export's size and at 12x10 computes PyTorch's outputs at each.
    void matchesPyTorchAtTwoSizes()
    {
        QFETCH(QString, name);
        const std::string n = name.toStdString();
        const Reference ref = loadReference(kFixtures / (n + ".json"));
        OnnxImportInfo info;
        const ExportedModel a = importAt(n, ref.inputShape[2], ref.inputShape[3], &info);
        QVERIFY(info.dynamicImageSize && a.dynamicImageSize);
        QCOMPARE(Shape({a.height, a.width}), Shape({ref.inputShape[2], ref.inputShape[3]}));
        QVERIFY2(hasNote(a, "dynamic H ('H') and W ('W')"), a.notes.empty() ? "no note" : a.notes[0].c_str());
        const double devA = maxDeviation(a, ref);
        QVERIFY2(devA <= kOutputTol, qPrintable(QString::number(devA)));

        const Reference ref2 = secondSize(n);
        const ExportedModel b = importAt(n, ref2.inputShape[2], ref2.inputShape[3]);
        QCOMPARE(Shape({b.channels, b.height, b.width}), Shape(ref2.inputShape.begin() + 1, ref2.inputShape.end()));
        const double devB = maxDeviation(b, ref2);
        qInfo("%s: max |QuantScope - PyTorch| %.3g at %zux%zu, %.3g at %zux%zu", qPrintable(name), devA, a.height, a.width, devB,
              b.height, b.width);
        QVERIFY2(devB <= kOutputTol, qPrintable(QString::number(devB)));

        // Training builds the model at the data's size (the trainer's factory).
        std::unique_ptr<Model> built = modelFromFile((kFixtures / (n + ".onnx")).string(), false)(
            Shape(ref2.inputShape.begin() + 1, ref2.inputShape.end()), ref2.outputShape[1], 1);
        const Tensor x(ref2.inputShape, ref2.input);
        RunContext ctx;
        ctx.training = false;
        const Tensor y = built->forward(x, ctx);
        double dev = 0;
        for (std::size_t i = 0; i < y.numel(); ++i) dev = std::max(dev, std::fabs(double(y[i]) - ref2.output[i]));
        QVERIFY2(dev <= kOutputTol, qPrintable(QString::number(dev)));
    }

    // Without a size: 28x28 for one channel, 32x32 for three, said in a note.
    void defaultSide()
    {
        const fs::path r = kFixtures / "residual_op13_fold_dynhw.onnx", m = kFixtures / "mobile_op11_nofold_dynhw.onnx";
        const ExportedModel a = importOnnx(fileBytes(r), r.string());
        QCOMPARE(Shape({a.channels, a.height, a.width}), Shape({1, 28, 28}));
        QVERIFY(hasNote(a, "read at 28x28 (train, eval and analyze read it at their data's size)"));
        const ExportedModel b = readModelFile(m.string());
        QCOMPARE(Shape({b.channels, b.height, b.width}), Shape({3, 32, 32}));
        QVERIFY(b.dynamicImageSize);
        // A graph of static size keeps it, whatever is asked.
        const fs::path s = kFixtures / "residual_op13_fold_dyn.onnx";
        const ExportedModel c = readModelFile(s.string(), 12, 10);
        QCOMPARE(Shape({c.height, c.width}), Shape({8, 8}));
        QVERIFY(!c.dynamicImageSize);
    }

    // eval and the Evaluate dialog read the graph again at the data's size.
    void evalReadsAtTheDataSize()
    {
        const std::string path = (kFixtures / "residual_op13_fold_dynhw.onnx").string();
        ExportedModel m = readModelFile(path);
        Dataset d = fixtures::syntheticDataset(16, 20, 12, 10);
        d.classNames.resize(5);
        prepareModelForData(m, path, d, false);
        QCOMPARE(Shape({m.height, m.width}), Shape({12, 10}));
        QVERIFY(hasNote(m, "read at 12x10, the size asked for"));
        // Another channel count is still refused, naming both shapes.
        Dataset rgb = fixtures::syntheticDataset(16, 20, 12, 10, 7, 3);
        rgb.classNames.resize(5);
        ExportedModel again = readModelFile(path);
        try {
            prepareModelForData(again, path, rgb, false);
            QFAIL("accepted");
        } catch (const ConfigError& e) {
            QVERIFY2(QString(e.what()).contains("takes 1x28x28 images") && QString(e.what()).contains("3x12x10"), e.what());
        }
    }

    // The trainer's factory on a graph of dynamic size and other channels names the channels, not
    // a size the graph does not fix (tester 17 #12).
    void channelMismatchNamesNoSize()
    {
        const std::string path = (kFixtures / "residual_op13_fold_dynhw.onnx").string();
        try {
            modelFromFile(path, false)(Shape{3, 12, 10}, 5, 1);
            QFAIL("accepted");
        } catch (const ConfigError& e) {
            const QString what = e.what();
            QVERIFY2(what.contains("images of 1 channel") && what.contains("have 3 channels") && !what.contains("12x10") &&
                         !what.contains("28x28") && what.contains("give grayscale data"),
                     e.what());
        }
        // A graph of fixed size: the data that would fit, not --resize or --image-shape (which do
        // not change an IDX or folder dataset's channels: a new user was sent to them).
        try {
            modelFromFile((kFixtures / "seqview_op13_fold.onnx").string(), false)(Shape{3, 12, 12}, 10, 1);
            QFAIL("accepted");
        } catch (const ConfigError& e) {
            const QString what = e.what();
            QVERIFY2(what.contains("the model takes 1x12x12 inputs (C x H x W); the dataset's images are 3x12x12; the model reads "
                                   "1-channel images: give grayscale data (IDX files, a folder of grayscale PNG/JPEG images, or a CSV "
                                   "file with --image-shape 1xHxW); --resize changes only the size"),
                     e.what());
        }
    }

    // x.view(x.size(0), -1) into a Linear takes the size it was built for: at 12x12 it is
    // PyTorch's model; at another size the error names the layer and the size it was read at.
    void flattenedClassifierTakesOneSize()
    {
        const std::string n = "seqview_op17_nofold_dynhw";
        const Reference ref = loadReference(kFixtures / (n + ".json"));
        QVERIFY(maxDeviation(importAt(n, 12, 12), ref) <= kOutputTol);
        for (const auto& [h, w, said] : {std::tuple<std::size_t, std::size_t, const char*>{0, 0, "read at 28x28, the default size"},
                                         {16, 16, "read at 16x16; it reads"}}) {
            try {
                importAt(n, h, w);
                QFAIL("accepted");
            } catch (const ConfigError& e) {
                // The size was the cause (exit 2, not a damaged file's 3), and the one it reads at is named.
                const QString what = e.what();
                QVERIFY2(what.contains(QString::fromStdString(n + ".onnx")) && what.contains("Gemm") && what.contains(said) &&
                             what.contains("it reads at 12x12") && what.contains("--resize 12x12") &&
                             what.contains("--input-shape 1x12x12 for info"),
                         e.what());
            }
        }
    }

    // An error the size does not cause blames no size (tester 17 #7): an unsupported operator
    // fails alike at every size, so its message has no --resize hint.
    void unrelatedErrorNamesNoSize()
    {
        const fs::path p = kFixtures / "residual_op13_fold_dynhw.onnx";
        onnx::ModelProto mp = parse(p);
        findNode(mp, "Relu")->set_op_type("Shrink");
        for (const std::size_t side : {std::size_t{0}, std::size_t{16}}) {
            OnnxImportOptions o;
            o.height = o.width = side;
            try {
                importOnnx(serialize(mp), p.string(), nullptr, o);
                QFAIL("accepted");
            } catch (const ConfigError& e) {
                const QString what = e.what();
                QVERIFY2(what.contains("Shrink") && !what.contains("--resize") && !what.contains("dynamic"), e.what());
            }
        }
    }

    // A graph dynamic in H only keeps its W: the note says so, and the trainer's factory names the
    // fixed side and the size that reads (tester 18 #2).
    void oneSideFixed()
    {
        const fs::path p = kFixtures / "residual_op13_fold_dynhw.onnx";
        onnx::ModelProto mp = parse(p);
        auto* w = mp.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(3);
        w->clear_dim_param();
        w->set_dim_value(10);
        OnnxImportOptions o;
        o.height = o.width = 12;
        const ExportedModel m = importOnnx(serialize(mp), p.string(), nullptr, o);
        QCOMPARE(Shape({m.height, m.width}), Shape({12, 10}));
        QVERIFY2(hasNote(m, "read at 12x10 (its W is fixed at 10; 12x12 was asked for)"), m.notes.empty() ? "" : m.notes[0].c_str());
        QTemporaryDir dir;
        const std::string path = (fs::path(dir.path().toStdString()) / "onlyh.onnx").string();
        {
            const std::vector<std::uint8_t> bytes = serialize(mp);
            std::ofstream f(path, std::ios::binary);
            f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        }
        try {
            modelFromFile(path, false)(Shape{1, 12, 12}, 5, 1);
            QFAIL("accepted");
        } catch (const ConfigError& e) {
            const QString what = e.what();
            QVERIFY2(what.contains("width is fixed at 10") && what.contains("--resize 12x10"), e.what());
        }
        QVERIFY(modelFromFile(path, false)(Shape{1, 20, 10}, 5, 1) != nullptr);
    }

    // dynamic_axes naming H and W alike ({2: 's', 3: 's'}) reads square sizes only (tester 17 #13).
    void sharedDimParamIsSquare()
    {
        const fs::path p = kFixtures / "residual_op13_fold_dynhw.onnx";
        onnx::ModelProto mp = parse(p);
        auto* shape = mp.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape();
        shape->mutable_dim(2)->set_dim_param("s");
        shape->mutable_dim(3)->set_dim_param("s");
        OnnxImportOptions o;
        o.height = 12;
        o.width = 12;
        const ExportedModel sq = importOnnx(serialize(mp), p.string(), nullptr, o);
        QCOMPARE(Shape({sq.height, sq.width}), Shape({12, 12}));
        o.width = 10;
        try {
            importOnnx(serialize(mp), p.string(), nullptr, o);
            QFAIL("accepted 12x10");
        } catch (const ConfigError& e) {
            const QString what = e.what();
            QVERIFY2(what.contains("'s'") && what.contains("12x10") && what.contains("square") && !what.contains("it reads at"), e.what());
        }
    }
};

QTEST_APPLESS_MAIN(TestOnnxDynamicSize)
#include "tst_onnx_dynamic_size.moc"
