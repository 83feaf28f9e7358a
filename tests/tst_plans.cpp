// Per-layer precision plans as data: JSON and CLI-spec parsing, every bad plan refused with a
// ConfigError naming the file, the layer and the valid choices, and the plan size against
// hand-computed bytes. What a model does under a plan (QuantSim, exports, the engines, training)
// is tst_plan_runs.cpp's.
#include "nn/batchnorm2d.h"
#include "nn/conv2d.h"
#include "quant/plan_size.h"
#include "quant/precision_plan.h"
#include "util/errors.h"

#include <tbb/task_arena.h> // before Qt: TBB's profiling.h has a member named emit

#include "onnx/export_fixtures.h"

#include <QtTest>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

using namespace quantscope;
namespace fs = std::filesystem;

class TestPlans : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void cleanupTestCase();
    void parsesPlans();
    void roundTripsJson();
    void layerSpecs();
    void refusesBadPlans_data();
    void refusesBadPlans();
    void refusesBadSpecs_data();
    void refusesBadSpecs();
    void sizeAgainstHandComputedBytes();
    void sizeFoldsBatchNorm();

private:
    std::string m_dir;
};

void TestPlans::initTestCase() { m_dir = fixtures::tempDir("plans"); }

void TestPlans::cleanupTestCase() { fs::remove_all(m_dir); }

void TestPlans::parsesPlans()
{
    const std::string text = R"({"version":1,
        "default":{"format":"int8","granularity":"tensor","act_format":"int8"},
        "layers":{"conv1":{"format":"int4","granularity":"group:3","calibration":"mse"},
                  "fc1":"int2:channel", "fc2":{"keep_fp32":true}, "conv2":"uint4"}})";
    const PrecisionPlan p = parsePlanJson(text, "p.json");
    QCOMPARE(p.defaults.granularity, std::string("tensor"));
    QCOMPARE(p.forLayer("conv1").format, std::string("int4"));
    QCOMPARE(p.forLayer("conv1").granularity, std::string("group:3"));
    QCOMPARE(p.forLayer("conv1").calibration, std::string("mse"));
    QCOMPARE(p.forLayer("conv1").activationFormat, std::string("int8")); // from the default
    QCOMPARE(p.forLayer("fc1").format, std::string("int2"));
    QCOMPARE(p.forLayer("fc1").granularity, std::string("channel"));
    QVERIFY(p.forLayer("fc2").keepFp32());
    QCOMPARE(p.forLayer("conv2").format, std::string("uint4"));
    QCOMPARE(p.forLayer("conv2").granularity, std::string("tensor")); // a string without granularity keeps the default's
    QCOMPARE(p.forLayer("not-named"), p.defaults);
    auto m = makeModel("seed-cnn", 1, 28, 28, 10, 1);
    checkPlan(p, *m); // fits: no throw
    QCOMPARE(planLayerNames(*m), (std::vector<std::string>{"conv1", "conv2", "fc1", "fc2"}));
}

void TestPlans::roundTripsJson()
{
    PrecisionPlan p;
    p.defaults.format = "int4";
    p.defaults.calibration = "mse";
    p.activationCalibration = "percentile";
    p.inputNormalization = "0.49:0.48:0.45,0.25:0.24:0.26";
    applyLayerSpec(p, "fc1=int2:group:8");
    applyKeepFp32(p, "fc2,conv1");
    const std::string path = m_dir + "/rt.json";
    writePlanFile(path, p);
    const PrecisionPlan back = readPlanFile(path);
    {
        // A layer's granularity left beside a float format (the window's plan table, after its format
        // changed) is not written: the file reads back.
        PrecisionPlan f;
        LayerOverride& e = f.entry("fc1");
        e.format = "fp16";
        e.granularity = "channel";
        writePlanFile(m_dir + "/float-layer.json", f);
        QVERIFY(!readPlanFile(m_dir + "/float-layer.json").layers.at(0).granularity.has_value());
    }
    QCOMPARE(back.defaults, p.defaults);
    QCOMPARE(back.activationCalibration, p.activationCalibration);
    QCOMPARE(back.inputNormalization, p.inputNormalization);
    QVERIFY(readPlanFile(m_dir + "/rt.json").inputNormalization == p.inputNormalization);
    PrecisionPlan unsaid = p; // a plan that does not say writes no "normalize"
    unsaid.inputNormalization.clear();
    QVERIFY(planToJson(unsaid).find("normalize") == std::string::npos);
    QCOMPARE(nlohmann::json::parse(planToJson(p))["default"]["normalize"].get<std::string>(), p.inputNormalization);
    QCOMPARE(back.layers.size(), p.layers.size());
    for (const char* l : {"conv1", "conv2", "fc1", "fc2"}) QCOMPARE(back.forLayer(l), p.forLayer(l));
}

void TestPlans::layerSpecs()
{
    PrecisionPlan p;
    applyLayerSpec(p, "fc1=int4");
    applyLayerSpec(p, "layer2.conv1=int2:group:16");
    applyLayerSpec(p, "fc1=int3"); // the last one wins; its granularity stays the default's
    applyKeepFp32(p, "fc2");
    // ONNX node names may hold '=' or ',': the format is after the last '='
    applyLayerSpec(p, "/blocks/mix=a,b/Conv=int4:tensor");
    QCOMPARE(p.forLayer("/blocks/mix=a,b/Conv").format, std::string("int4"));
    QCOMPARE(p.forLayer("/blocks/mix=a,b/Conv").granularity, std::string("tensor"));
    QCOMPARE(p.layers.size(), std::size_t{4});
    p.layers.pop_back();
    QCOMPARE(p.forLayer("fc1").format, std::string("int3"));
    QCOMPARE(p.forLayer("fc1").granularity, std::string("channel"));
    QCOMPARE(p.forLayer("layer2.conv1").granularity, std::string("group:16"));
    QVERIFY(p.forLayer("fc2").keepFp32());
    QCOMPARE(p.layers.size(), std::size_t{3});
}

void TestPlans::refusesBadPlans_data()
{
    QTest::addColumn<QString>("json");
    QTest::addColumn<QStringList>("mentions"); // every piece must be in the message
    QTest::newRow("not json") << R"({"layers": )" << QStringList{"bad.json", "not valid JSON", "parse error at line 1, column"};
    // A truncated or binary file is a damaged input (FormatError, exit 3), not a plan to correct
    // (tester 17: exit 2, and a NUL byte read as "unexpected end of input").
    QTest::newRow("truncated") << R"({"layers":{"fc1":"int4")" << QStringList{"bad.json", "not valid JSON", "truncated"};
    QTest::newRow("binary") << QString::fromLatin1("\0\x01PK", 4) << QStringList{"bad.json", "not a text file", "NUL byte at offset 0"};
    // a number past double's range is nlohmann's out_of_range, not a parse_error (tester 22: "internal error", exit 1)
    QTest::newRow("number overflow") << R"({"version": 1e400, "layers": {}})" << QStringList{"bad.json", "not valid JSON", "number overflow parsing '1e400'"};
    QTest::newRow("unknown top key") << R"({"layer":{}})" << QStringList{"bad.json", "unknown key 'layer'", "default, layers"};
    QTest::newRow("version") << R"({"version":2})" << QStringList{"bad.json", "version"};
    QTest::newRow("layers not object") << R"({"layers":["fc1"]})" << QStringList{"bad.json", "\"layers\" must be an object"};
    QTest::newRow("unknown layer") << R"({"layers":{"fc3":"int4"}})" << QStringList{"bad.json", "layer 'fc3'", "conv1, conv2, fc1, fc2"};
    QTest::newRow("not a weight layer") << R"({"layers":{"relu1":"int4"}})" << QStringList{"bad.json", "layer 'relu1'", "conv1, conv2, fc1, fc2"};
    QTest::newRow("unknown format") << R"({"layers":{"fc1":{"format":"int1"}}})"
                                    << QStringList{"bad.json", "layer 'fc1'", "unknown format 'int1'", "int2", "mxfp4"};
    QTest::newRow("unknown default format") << R"({"default":{"format":"fp64"}})" << QStringList{"bad.json", "default", "'fp64'", "int8"};
    QTest::newRow("unknown granularity") << R"({"layers":{"fc1":"int4:row"}})"
                                         << QStringList{"bad.json", "layer 'fc1'", "granularity 'row'", "group:N"};
    QTest::newRow("group too large") << R"({"layers":{"conv1":"int4:group:16"}})"
                                     << QStringList{"bad.json", "layer 'conv1'", "group size 16", "rows of 9", "group:1..group:9"};
    // A float or MX format has no scale: a granularity beside it in the layer's own entry is refused (tester 10).
    QTest::newRow("granularity on a float layer") << R"({"layers":{"fc1":"fp16:group:4"}})"
                                                  << QStringList{"bad.json", "layer 'fc1'", "granularity 'group:4' with format fp16", "takes none"};
    QTest::newRow("granularity key on an MX layer") << R"({"layers":{"fc1":{"format":"mxfp4","granularity":"channel"}}})"
                                                    << QStringList{"bad.json", "layer 'fc1'", "granularity 'channel' with format mxfp4"};
    QTest::newRow("unknown calibration") << R"({"layers":{"fc1":{"calibration":"entropy"}}})"
                                         << QStringList{"bad.json", "layer 'fc1'", "calibration 'entropy'", "mse"};
    QTest::newRow("block activation") << R"({"layers":{"fc1":{"act_format":"mxfp4"}}})"
                                      << QStringList{"bad.json", "layer 'fc1'", "mxfp4", "uint8"};
    QTest::newRow("ternary activation") << R"({"layers":{"fc1":{"act_format":"ternary"}}})"
                                        << QStringList{"bad.json", "layer 'fc1'", "'ternary' is a weight format", "uint8"};
    QTest::newRow("binary default activation") << R"({"default":{"act_format":"binary"}})"
                                               << QStringList{"bad.json", "default", "'binary' is a weight format"};
    QTest::newRow("unknown default key") << R"({"default":{"foo":1}})"
                                         << QStringList{"bad.json", "default", "unknown key 'foo'", "act_calibration"};
    QTest::newRow("unknown layer key") << R"({"layers":{"fc1":{"bits":4}}})"
                                       << QStringList{"bad.json", "layer 'fc1'", "unknown key 'bits'", "act_format"};
    QTest::newRow("wrong type") << R"({"layers":{"fc1":4}})" << QStringList{"bad.json", "layer 'fc1'", "expected an object"};
    QTest::newRow("keep_fp32 with a format") << R"({"layers":{"fc1":{"format":"int4","keep_fp32":true}}})"
                                             << QStringList{"bad.json", "layer 'fc1'", "contradict each other"};
    // JSON itself keeps the last of two equal keys; a plan refuses them.
    QTest::newRow("act_calibration in a layer") << R"({"layers":{"fc1":{"act_calibration":"minmax"}}})"
                                                << QStringList{"bad.json", "layer 'fc1'", "whole-model", "default"};
    QTest::newRow("unknown act_calibration") << R"({"default":{"act_calibration":"entropy"}})"
                                             << QStringList{"bad.json", "'entropy'"};
    QTest::newRow("normalize in a layer") << R"({"layers":{"fc1":{"normalize":"0.5,0.5"}}})"
                                          << QStringList{"bad.json", "layer 'fc1'", "\"normalize\" is a whole-model setting"};
    QTest::newRow("normalize not a string") << R"({"default":{"normalize":0.5}})" << QStringList{"bad.json", "normalize"};
    QTest::newRow("a layer twice") << R"({"layers":{"fc1":"int4","conv1":"int8","fc1":"int8"}})"
                                   << QStringList{"bad.json", "'fc1'", "twice"};
    QTest::newRow("a field twice") << R"({"default":{"format":"int4","granularity":"tensor","format":"int8"}})"
                                   << QStringList{"bad.json", "'format'", "twice"};
}

void TestPlans::refusesBadPlans()
{
    QFETCH(QString, json);
    QFETCH(QStringList, mentions);
    const std::string path = m_dir + "/bad.json";
    std::ofstream(path) << json.toStdString();
    auto m = makeModel("seed-cnn", 1, 28, 28, 10, 1);
    QString message;
    bool damaged = false;
    try {
        checkPlan(readPlanFile(path), *m);
    } catch (const ConfigError& e) {
        message = e.what();
    } catch (const FormatError& e) {
        message = e.what();
        damaged = true;
    }
    QVERIFY2(!message.isEmpty(), "no ConfigError or FormatError");
    QCOMPARE(damaged, message.contains("not valid JSON") || message.contains("not a text file"));
    for (const QString& s : mentions) QVERIFY2(message.contains(s), qPrintable("'" + s + "' missing from: " + message));
    QVERIFY2(!message.contains("[json.exception"), qPrintable(message)); // the parser's tag is not for users
}

void TestPlans::refusesBadSpecs_data()
{
    QTest::addColumn<QString>("layer");
    QTest::addColumn<QString>("keep");
    QTest::addColumn<QString>("mention");
    QTest::newRow("no =") << "fc1" << "" << "NAME=FORMAT";
    QTest::newRow("no format") << "fc1=" << "" << "NAME=FORMAT";
    QTest::newRow("bad format") << "fc1=int99" << "" << "unknown format 'int99'";
    QTest::newRow("bad group") << "fc1=int4:group:0" << "" << "the group size must be a positive integer";
    QTest::newRow("granularity on a float format") << "fc1=fp16:group:4" << "" << "--layer 'fc1=fp16:group:4': fp16 takes no granularity";
    QTest::newRow("empty keep") << "" << "fc1,,fc2" << "NAME[,NAME]";
    QTest::newRow("a layer twice") << "fc1=int4;conv1=int8;fc1=int8" << "" << "'fc1' twice";
}

void TestPlans::refusesBadSpecs()
{
    QFETCH(QString, layer);
    QFETCH(QString, keep);
    QFETCH(QString, mention);
    PrecisionPlan p;
    QString message;
    try {
        std::vector<std::string> specs; // several --layer options, split at ';'
        for (const QString& spec : layer.split(';', Qt::SkipEmptyParts)) specs.push_back(spec.toStdString());
        if (!layer.isEmpty()) applyLayerSpecs(p, specs);
        if (!keep.isEmpty()) applyKeepFp32(p, keep.toStdString());
    } catch (const ConfigError& e) {
        message = e.what();
    }
    QVERIFY2(message.contains(mention), qPrintable(message));
}

void TestPlans::sizeAgainstHandComputedBytes()
{
    auto m = fixtures::tinyModel(); // fc1 16->6, relu, fc2 6->10
    PrecisionPlan p;                // default int8 channel
    QCOMPARE(planSize(*m, p).bytes, std::uint64_t{(96 + 6 * 4 + 6 * 4) + (60 + 10 * 4 + 10 * 4)});

    applyLayerSpec(p, "fc1=int4:channel");
    applyKeepFp32(p, "fc2");
    PlanSize s = planSize(*m, p);
    // fc1: 96 weights at 4 bits = 48 bytes, 6 float scales, 6 int32 biases; fc2 float: 70 * 4.
    QCOMPARE(s.layers.at(0).bytes, std::uint64_t{48 + 24 + 24});
    QCOMPARE(s.layers.at(1).bytes, std::uint64_t{280});
    QCOMPARE(s.bytes, std::uint64_t{96 + 280});
    QCOMPARE(s.fp32Bytes, std::uint64_t{(96 + 6 + 60 + 10) * 4});
    QCOMPARE(s.percentOfFp32, 100.0 * 376 / 688);
    QCOMPARE(s.bitsPerWeight, 8.0 * (48 + 24 + 240) / 156);

    applyLayerSpec(p, "fc1=uint2:group:5"); // rows of 16 in groups of 5: 4 slots a row; affine: + int32 zero points
    s = planSize(*m, p);
    QCOMPARE(s.layers.at(0).scaleSlots, std::uint64_t{24});
    QCOMPARE(s.layers.at(0).bytes, std::uint64_t{24 + 24 * 8 + 24});

    // 96 elements at 4 bits + 6 block exponents (a block a row of 16: blocks restart at each
    // output channel); 6 biases at 4 bits (3 bytes) + 1 block
    applyLayerSpec(p, "fc1=mxfp4");
    s = planSize(*m, p);
    QCOMPARE(s.layers.at(0).scaleSlots, std::uint64_t{6});
    QCOMPARE(s.layers.at(0).bytes, std::uint64_t{48 + 6 + 3 + 1});

    PrecisionPlan g; // global: one scale for both layers
    g.defaults.granularity = "global";
    s = planSize(*m, g);
    QCOMPARE(s.bytes, std::uint64_t{96 + 60 + 4 + 16 * 4});
}

void TestPlans::sizeFoldsBatchNorm()
{
    // conv 1->2 3x3 without bias, BatchNorm2d(2) folded into it: the conv gains a 2-value bias.
    Model m("conv-bn", Shape{1, 5, 5});
    m.add(std::make_unique<Conv2d>("conv", 1, 2, 3, 1, 0, 1, false));
    m.add(std::make_unique<BatchNorm2d>("bn", 2));
    m.add(std::make_unique<Flatten>("flatten"));
    m.add(std::make_unique<Linear>("fc", 18, 10));
    m.initParams(1);
    const PlanSize s = planSize(m, PrecisionPlan{});
    QCOMPARE(s.layers.at(0).bytes, std::uint64_t{18 + 2 * 4 + 2 * 4});
    QCOMPARE(s.layerBytes.at(1), std::uint64_t{0});
    QCOMPARE(s.fp32Bytes, std::uint64_t{(18 + 2 + 2 + 2 + 2 + 180 + 10) * 4});
}

QTEST_GUILESS_MAIN(TestPlans)
#include "tst_plans.moc"
