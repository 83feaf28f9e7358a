// analysis/sensitivity: one layer at a time (or all but one) quantized to each candidate format,
// measured on a validation set against FP32.
#include "analysis/sensitivity.h"
#include "nn/activations.h"
#include "nn/model_zoo.h"
#include "util/errors.h"

#include "onnx/export_fixtures.h"

#include <QtTest>

#include <cmath>

using namespace quantscope;

class TestSensitivity : public QObject {
    Q_OBJECT
private slots:
    void initTestCase()
    {
        m_data = fixtures::blobsWithValidation();
        m_trainer = fixtures::trainedLenet5(m_data);
        m_model = &m_trainer->model();
    }

    // Every layer x format cell; fewer bits cost more: the logit SQNR falls from int8 to int2 at
    // every layer and the KL divergence grows; the FP32 weights are restored afterwards.
    void oneLayerAtATime()
    {
        SensitivityOptions opt;
        opt.formats = {"int8", "int2"};
        opt.calibImages = 200;
        Tensor x;
        std::vector<std::int32_t> y;
        m_data.makeBatch(m_data.validation, 0, 16, x, y);
        RunContext ctx;
        const Tensor before = m_model->forward(x, ctx);
        const SensitivityReport r = analyzeSensitivity(*m_model, m_data, m_data.validation, opt);
        QCOMPARE(r.layers.size(), std::size_t{5}); // lenet5: conv1, conv2, fc1, fc2, fc3
        QCOMPARE(r.cells.size(), r.layers.size() * 2);
        QCOMPARE(r.images, std::size_t{300});
        QVERIFY2(r.fp32Accuracy > 0.5, qPrintable(QString::number(r.fp32Accuracy)));
        for (std::size_t i = 0; i < r.layers.size(); ++i) {
            const SensitivityCell& a = r.cells[2 * i];
            const SensitivityCell& b = r.cells[2 * i + 1];
            QCOMPARE(a.layer, r.layers[i]);
            QCOMPARE(a.format, std::string("int8"));
            QVERIFY2(a.logitSqnrDb > b.logitSqnrDb + 6.0, qPrintable(QString::fromStdString(a.layer)));
            QVERIFY(b.klDivergence >= a.klDivergence);
            QVERIFY(a.klDivergence >= 0.0);
            QVERIFY(std::abs(a.dropPoints - 100.0 * (r.fp32Accuracy - a.accuracy)) < 1e-9);
            QVERIFY(std::abs(a.dropPoints) < 5.0); // int8 on one layer is nearly free
        }
        const Tensor after = m_model->forward(x, ctx);
        QCOMPARE(after.values(), before.values());
    }

    // A model whose FP32 outputs overflow (a weight of 3e38) has no reference to measure plans
    // against: a NumericError saying so, not a table of NaN (tester 7's w_big.onnx exited 0 with
    // "-nan" in every cell). The weights are put back afterwards.
    void nonFiniteReferenceIsANumericError()
    {
        std::vector<float> saved;
        Param* w = nullptr;
        for (Param* p : m_model->params())
            if (p->isWeight) {
                w = p;
                break;
            }
        QVERIFY(w);
        saved = w->value.values();
        w->value.values()[0] = 3e38f;
        w->value.values()[1] = 3e38f;
        SensitivityOptions opt;
        opt.formats = {"int8"};
        opt.calibImages = 50;
        QString message;
        try {
            analyzeSensitivity(*m_model, m_data, m_data.validation, opt);
        } catch (const NumericError& e) {
            message = e.what();
        }
        w->value.values() = saved;
        QVERIFY2(message.contains("the FP32 outputs are inf or NaN on"), qPrintable(message));
        QVERIFY2(message.contains("of 300 validation images"), qPrintable(message));
    }

    // A model ending in Softmax (probabilities) gets the KL of its probabilities, the same as its
    // LogSoftmax twin's, not the KL of a softmax of them (which flattens it towards zero).
    void softmaxHeadGivesTheSameKl()
    {
        SensitivityOptions opt;
        opt.formats = {"int2"};
        opt.calibImages = 200;
        const SensitivityReport logProbs = analyzeSensitivity(*m_model, m_data, m_data.validation, opt);
        const std::size_t last = m_model->size() - 1;
        QCOMPARE(m_model->layer(last).kind(), LayerKind::LogSoftmax);
        LayerPtr saved = m_model->replaceLayer(last, std::make_unique<Softmax>(m_model->layer(last).name()));
        const SensitivityReport probs = analyzeSensitivity(*m_model, m_data, m_data.validation, opt);
        m_model->replaceLayer(last, std::move(saved));
        QCOMPARE(probs.cells.size(), logProbs.cells.size());
        for (std::size_t i = 0; i < probs.cells.size(); ++i) {
            const SensitivityCell& a = logProbs.cells[i];
            const SensitivityCell& b = probs.cells[i];
            QCOMPARE(b.accuracy, a.accuracy);
            QVERIFY2(a.klDivergence > 1e-4, qPrintable(QString::fromStdString(a.layer))); // int2 moves the outputs
            QVERIFY2(std::abs(b.klDivergence - a.klDivergence) <= 1e-3 * a.klDivergence + 1e-6,
                     qPrintable(QString("%1: KL %2 with Softmax, %3 with LogSoftmax").arg(QString::fromStdString(a.layer)).arg(b.klDivergence).arg(a.klDivergence)));
        }
    }

    // --act-calibration reaches the measurement (it was minmax whatever was asked): with uint4
    // activations, percentile ranges give other logit SQNRs than min-max ones.
    void activationCalibrationIsUsed()
    {
        SensitivityOptions opt;
        opt.formats = {"int8"};
        opt.calibImages = 200;
        opt.activationFormat = "uint4";
        const SensitivityReport minmax = analyzeSensitivity(*m_model, m_data, m_data.validation, opt);
        opt.activationCalibration = "percentile";
        const SensitivityReport percentile = analyzeSensitivity(*m_model, m_data, m_data.validation, opt);
        double largest = 0.0;
        for (std::size_t i = 0; i < minmax.cells.size(); ++i)
            largest = std::max(largest, std::abs(minmax.cells[i].logitSqnrDb - percentile.cells[i].logitSqnrDb));
        QVERIFY2(largest > 0.1, qPrintable(QString("largest SQNR difference %1 dB").arg(largest)));
    }

    // All but one: quantizing everything but a layer costs at least as much KL as quantizing
    // that layer alone, summed over the model.
    void allButOne()
    {
        SensitivityOptions opt;
        opt.formats = {"int2"};
        opt.calibImages = 200;
        const SensitivityReport one = analyzeSensitivity(*m_model, m_data, m_data.validation, opt);
        opt.allButOne = true;
        const SensitivityReport rest = analyzeSensitivity(*m_model, m_data, m_data.validation, opt);
        QCOMPARE(rest.cells.size(), one.cells.size());
        double klOne = 0, klRest = 0;
        for (std::size_t i = 0; i < one.cells.size(); ++i) {
            klOne += one.cells[i].klDivergence;
            klRest += rest.cells[i].klDivergence;
        }
        QVERIFY2(klRest > klOne, qPrintable(QString("all but one %1, one %2").arg(klRest).arg(klOne)));
    }

    void badInputAndStop()
    {
        SensitivityOptions opt;
        opt.formats = {"int8", "int9000"};
        QVERIFY_THROWS_EXCEPTION(ConfigError, analyzeSensitivity(*m_model, m_data, m_data.validation, opt));
        opt.formats = {"int4"};
        // A group size past every row is clamped to the rows (docs/PLANS.md), as train clamps the
        // default's: one group a row, so the cells are the per-channel ones (tester 23: refused).
        opt.granularity = "group:4096";
        const SensitivityReport wide = analyzeSensitivity(*m_model, m_data, m_data.validation, opt);
        opt.granularity = "channel";
        const SensitivityReport channel = analyzeSensitivity(*m_model, m_data, m_data.validation, opt);
        QCOMPARE(wide.cells.size(), channel.cells.size());
        for (std::size_t i = 0; i < wide.cells.size(); ++i) {
            QCOMPARE(wide.cells[i].accuracy, channel.cells[i].accuracy);
            QCOMPARE(wide.cells[i].logitSqnrDb, channel.cells[i].logitSqnrDb);
        }
        LabeledImages empty;
        QVERIFY_THROWS_EXCEPTION(ConfigError, analyzeSensitivity(*m_model, m_data, empty, opt));
        // A progress callback that says stop after two cells.
        const SensitivityReport r = analyzeSensitivity(*m_model, m_data, m_data.validation, opt,
                                                       [](std::size_t done, std::size_t) { return done < 2; });
        QCOMPARE(r.cells.size(), std::size_t{2});
    }

private:
    Dataset m_data;
    std::unique_ptr<Trainer> m_trainer;
    Model* m_model = nullptr;
};

QTEST_GUILESS_MAIN(TestSensitivity)
#include "tst_sensitivity.moc"
