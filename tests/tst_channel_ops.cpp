// ShuffleNet's data movement end to end (nn/channel_ops.h): PyTorch exports of ShuffleNetV2-style
// networks (tests/onnx_import shuffle_*, make_fixtures.py; the channel split as x.chunk, x.split
// and x[:, :k], the shuffle as view/transpose/view and as reshape/permute/reshape, opsets 9 to 17,
// fixed and dynamic batch) import with one ChannelShuffle per shuffle and one Slice per part and
// match PyTorch's outputs; they survive .qsm and ONNX round trips and onnxruntime runs the FP32
// export; quantized, the integer engine moves the codes exactly (its Slice and ChannelShuffle
// outputs are its inputs' codes, rearranged), agrees with the fake-quant reference, and the QDQ
// export reads back and runs in onnxruntime. Layers refuse inputs they cannot take by name. The
// numerical gradients are in tst_layers_gradients.
#include "infer/int_engine.h"
#include "infer/model_runner.h"
#include "io/onnx_import.h"
#include "io/onnx_io.h"
#include "io/qsm.h"
#include "nn/channel_ops.h"
#include "nn/concat.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/maxpool2d.h"
#include "util/errors.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "onnx/export_fixtures.h"
#include "onnx/onnx_fixtures.h"
#include "layer_checks.h"

#include <QtTest>

#include <algorithm>
#include <map>

using namespace quantscope;
using onnx_import_fixtures::importFixture, onnx_import_fixtures::kindsOf, onnx_import_fixtures::countKind, onnx_import_fixtures::kFixtures;
using fixtures::haveOrt, fixtures::nodeModules;

namespace {

constexpr double kFp32RelTol = 1e-5;     // |QuantScope - PyTorch| over the largest |PyTorch output|
constexpr double kOnnxRoundTripRelTol = 1e-6; // the ONNX read back (BN folded by onnxForm) against the model
constexpr double kOrtFp32RelTol = 1e-5;  // onnxruntime's float graph against QuantScope's
constexpr double kMinEngineAgreement = 0.995;
constexpr double kMinQdqAgreement = 0.98;

struct FixtureRow {
    const char* name;
    std::size_t slices; // Slice layers the import must make (ChannelShuffle: always 3, Concat: 3)
};
const FixtureRow kFixtureRows[] = {
    {"shuffle_chunk_view_op13_fold_dyn", 4},    {"shuffle_chunk_view_op11_nofold", 4},
    {"shuffle_split_permute_op13_fold", 4},     {"shuffle_split_view_op17_nofold_dyn", 4},
    {"shuffle_index_permute_op11_fold_dyn", 4}, {"shuffle_index_view_op9_nofold", 4},
};

// A ShuffleNetV2-style unit on the workspace's 1 x 28 x 28 images: stem conv; the channels split
// [0, 3) and [3, 8) (uneven: a wrong offset shows), a conv on the second part, concatenated and
// shuffled in 2 groups; a conv; a pool; then a shuffle of 4 groups and a slice of flat features.
std::unique_ptr<Model> shuffleModel()
{
    auto m = std::make_unique<Model>("shuffle", Shape{1, 28, 28});
    m->add(std::make_unique<Conv2d>("stem", 1, 8, 3, 1, 1));
    const std::size_t x = m->add(std::make_unique<ReLU>("stem_relu"));
    const std::size_t a = m->add(std::make_unique<Slice>("split.0", 0, 3), {x});
    m->add(std::make_unique<Slice>("split.1", 3, 8), {x});
    m->add(std::make_unique<Conv2d>("branch", 5, 5, 3, 1, 1));
    const std::size_t b = m->add(std::make_unique<ReLU>("branch_relu"));
    m->add(std::make_unique<Concat>("cat", 2), {a, b});
    m->add(std::make_unique<ChannelShuffle>("shuffle", 2));
    m->add(std::make_unique<Conv2d>("conv2", 8, 8, 3, 1, 1));
    m->add(std::make_unique<ReLU>("relu2"));
    m->add(std::make_unique<MaxPool2d>("pool", 4));
    m->add(std::make_unique<ChannelShuffle>("shuffle2", 4));
    m->add(std::make_unique<Flatten>("flatten"));
    m->add(std::make_unique<Slice>("features", 0, 8 * 7 * 6));
    m->add(std::make_unique<Linear>("fc", 8 * 7 * 6, 10));
    m->initParams(23);
    return m;
}

} // namespace

class TestChannelOps : public QObject, fixtures::OnnxWorkspace {
    Q_OBJECT

private slots:
    void initTestCase() { openWorkspace("channelops"); }
    void importMatchesPyTorch_data();
    void importMatchesPyTorch();
    void roundTripsAndOnnxruntime_data() { importMatchesPyTorch_data(); }
    void roundTripsAndOnnxruntime();
    void engineMovesCodes_data();
    void engineMovesCodes();
    void shapeErrorsNameTheLayer();
    void brokenGraphsAreRefusedByNode();
};

void TestChannelOps::importMatchesPyTorch_data()
{
    QTest::addColumn<QString>("name");
    QTest::addColumn<int>("slices");
    for (const FixtureRow& r : kFixtureRows) QTest::newRow(r.name) << QString(r.name) << int(r.slices);
}

// Each shuffle is one ChannelShuffle of 2 groups, each part of a split one Slice, no Transpose or
// Reshape left; the outputs are PyTorch's.
void TestChannelOps::importMatchesPyTorch()
{
    QFETCH(QString, name);
    QFETCH(int, slices);
    const ExportedModel m = importFixture(name.toStdString());
    QCOMPARE(int(countKind(m, LayerKind::ChannelShuffle)), 3);
    QCOMPARE(int(countKind(m, LayerKind::Slice)), slices);
    QCOMPARE(int(countKind(m, LayerKind::Concat)), 3);
    for (const StoredLayer& l : m.layers)
        if (l.kind == LayerKind::ChannelShuffle) QCOMPARE(l.groups, std::size_t{2});
    QS_CHECK(layer_checks::matchesPyTorch(name.toStdString(), m, kFp32RelTol));
}

// .qsm and ONNX files keep every layer, its fields and inputs, and the outputs; onnxruntime runs
// the FP32 export as QuantScope does.
void TestChannelOps::roundTripsAndOnnxruntime()
{
    QFETCH(QString, name);
    const ExportedModel m = importFixture(name.toStdString());
    const auto sameFields = [](const ExportedModel& a, const ExportedModel& b) {
        if (kindsOf(a) != kindsOf(b)) return false;
        for (std::size_t i = 0; i < a.layers.size(); ++i)
            if (a.layers[i].inputs != b.layers[i].inputs || a.layers[i].groups != b.layers[i].groups ||
                a.layers[i].sliceBegin != b.layers[i].sliceBegin || a.layers[i].sliceEnd != b.layers[i].sliceEnd)
                return false;
        return true;
    };
    const layer_checks::RoundTrip rt{"every layer's kind, inputs, groups and slice", sameFields,
                                     [&](const ExportedModel& o, const ExportedModel& w) { return sameFields(o, onnxForm(w)); },
                                     kOnnxRoundTripRelTol};
    std::vector<std::uint8_t> onnxBytes;
    QS_CHECK(layer_checks::roundTrips(name.toStdString(), m, rt, onnxBytes));

    QS_SKIP_WITHOUT_ORT();
    QS_CHECK(layer_checks::ortMatchesFp32(name.toStdString(), m, onnxBytes, m_dir, m_data.test.pixels, kOrtFp32RelTol));
}

void TestChannelOps::engineMovesCodes_data()
{
    layer_checks::activationFormatRows();
}

// Quantized (int8 weights per channel, calibrated activations): Slice and ChannelShuffle keep their
// input's grid (no point of their own) and the engine moves their codes, so its predictions are
// the fake-quant reference's (uneven parts and two group counts: a wrong offset or order would
// scramble the channels the next layers read); .qsm and the QDQ export read back as the same
// model, which onnxruntime runs as the engine does.
void TestChannelOps::engineMovesCodes()
{
    QFETCH(QString, act);
    auto q = fixtures::quantize(shuffleModel(), m_data, "int8", "channel", act.toStdString());
    QVERIFY2(IntEngine::unsupportedReason(q.exported).empty(), IntEngine::unsupportedReason(q.exported).c_str());
    for (const StoredLayer& l : q.exported.layers) // they keep their input's grid: no point of their own
        if (l.kind == LayerKind::ChannelShuffle || l.kind == LayerKind::Slice) QVERIFY2(!l.outputQuant, l.name.c_str());
    const QString what = "shuffle " + act;
    engine_agreement::EngineRun run;
    QS_CHECK(layer_checks::engineAgrees(what, q.exported, m_data.test, kMinEngineAgreement, run));
    const auto sameKinds = [](const ExportedModel& back, const ExportedModel& m) { return kindsOf(back) == kindsOf(m); };
    std::vector<std::uint8_t> bytes;
    QS_CHECK(layer_checks::quantizedFilesReadBack(what, q.exported, {"the layers' kinds", sameKinds, sameKinds, true}, m_data.test, run, bytes));
    QS_SKIP_WITHOUT_ORT();
    const std::string path = m_dir + "/qdq-shuffle-" + act.toStdString() + ".onnx";
    QS_CHECK(layer_checks::ortQdqAgrees(what, bytes, path, m_images, run, kMinQdqAgreement, std::nullopt));
}

// Inputs a layer cannot take are ConfigErrors naming the layer and the shape, when the model is
// built (not mid-training), and a stored model holding such a layer is refused by name.
void TestChannelOps::shapeErrorsNameTheLayer()
{
    const auto refused = [](auto&& build, const char* want) {
        try {
            build();
        } catch (const ConfigError& e) {
            return std::string(e.what()).find(want) != std::string::npos;
        }
        return false;
    };
    const auto modelWith = [](LayerPtr layer) {
        Model m("m", Shape{8, 4, 4});
        m.add(std::move(layer));
        (void)m.outputShape(1); // the shapes through the model, as building a model from a file checks them
    };
    QVERIFY(refused([&] { modelWith(std::make_unique<ChannelShuffle>("shuf3", 3)); }, "shuf3"));
    QVERIFY(refused([&] { modelWith(std::make_unique<Slice>("cut", 2, 9)); }, "cut"));
    QVERIFY(refused([] { Slice("empty", 4, 4); }, "empty"));
    QVERIFY(refused([] { ChannelShuffle("none", 0); }, "none"));
    ExportedModel bad = importFixture("shuffle_split_permute_op13_fold");
    for (StoredLayer& l : bad.layers)
        if (l.kind == LayerKind::Slice) l.sliceEnd = 1000;
    bool threw = false;
    try {
        bad.validate("bad.qsm"); // what the .qsm and ONNX readers check a model with
    } catch (const FormatError& e) {
        threw = std::string(e.what()).find("bad.qsm") != std::string::npos && std::string(e.what()).find("sliced") != std::string::npos;
    }
    QVERIFY(threw);
}

// Edited exports: Split parts that do not add up to the channels (one negative, the sum still
// right: -1 + 17 = 16, which an overflowing sum let through to a Slice of 2^64 - 1 channels), a
// Transpose that is not the shuffle's, a Slice of H. Each is refused by node, never run.
void TestChannelOps::brokenGraphsAreRefusedByNode()
{
    using onnx_import_fixtures::parse, onnx_import_fixtures::serialize;
    const auto refusal = [](const onnx::ModelProto& mp) -> std::string {
        try {
            importOnnx(serialize(mp), "edited.onnx");
        } catch (const Error& e) {
            return e.what();
        }
        return "imported";
    };
    onnx::ModelProto split = parse(kFixtures / "shuffle_split_view_op17_nofold_dyn.onnx");
    for (onnx::NodeProto& n : *split.mutable_graph()->mutable_node())
        if (n.op_type() == "Constant" && n.output(0) == "onnx::Split_133") {
            const std::int64_t parts[2] = {-1, 17};
            n.mutable_attribute(0)->mutable_t()->set_raw_data(std::string(reinterpret_cast<const char*>(parts), sizeof parts));
        }
    const std::string splitWhy = refusal(split);
    QVERIFY2(splitWhy.find("Split node") != std::string::npos && splitWhy.find("[-1, 17]") != std::string::npos, splitWhy.c_str());

    onnx::ModelProto perm = parse(kFixtures / "shuffle_chunk_view_op11_nofold.onnx");
    for (onnx::NodeProto& n : *perm.mutable_graph()->mutable_node())
        if (n.op_type() == "Transpose") {
            n.mutable_attribute(0)->clear_ints();
            for (std::int64_t v : {0, 1, 2, 4, 3}) n.mutable_attribute(0)->add_ints(v);
        }
    const std::string permWhy = refusal(perm);
    QVERIFY2(permWhy.find("Transpose node") != std::string::npos && permWhy.find("channel shuffle") != std::string::npos, permWhy.c_str());

    onnx::ModelProto rows = parse(kFixtures / "shuffle_index_view_op9_nofold.onnx");
    for (onnx::NodeProto& n : *rows.mutable_graph()->mutable_node())
        if (n.op_type() == "Slice")
            for (onnx::AttributeProto& a : *n.mutable_attribute())
                if (a.name() == "axes") a.set_ints(0, 2);
    const std::string rowsWhy = refusal(rows);
    QVERIFY2(rowsWhy.find("Slice node") != std::string::npos && rowsWhy.find("H or W") != std::string::npos, rowsWhy.c_str());
}

QTEST_GUILESS_MAIN(TestChannelOps)
#include "tst_channel_ops.moc"
