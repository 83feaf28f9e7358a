// analysis/mixed_search: per-layer formats under an accuracy or a size budget, every evaluated
// plan with its size and accuracy, the Pareto front and the uniform plans.
#include "analysis/mixed_search.h"
#include "analysis/plan_eval.h"
#include "util/errors.h"

#include "onnx/export_fixtures.h"

#include <QtTest>

using namespace quantscope;

class TestMixedSearch : public QObject {
    Q_OBJECT
private slots:
    void initTestCase()
    {
        m_data = fixtures::blobsWithValidation();
        m_trainer = fixtures::trainedLenet5(m_data);
    }

    // The front holds no dominated plan, every plan off it is dominated by one on it, and so no
    // uniform plan lies above the front; the chosen plan meets the budget and is the smallest that does.
    void accuracyBudget()
    {
        MixedSearchOptions opt;
        opt.formats = {"int8", "int4", "int2"};
        opt.calibImages = 200;
        opt.maxDropPoints = 2.0;
        opt.maxEvaluations = 12;
        const MixedSearchReport r = searchMixedPrecision(m_trainer->model(), m_data, m_data.validation, opt);
        QVERIFY(r.evaluations <= 12);
        QCOMPARE(r.plans.size(), r.evaluations);
        std::size_t uniform = 0;
        for (const EvaluatedPlan& p : r.plans) {
            uniform += p.uniform;
            bool dominated = false;
            for (const EvaluatedPlan& q : r.plans)
                dominated |= &q != &p && q.bytes <= p.bytes && q.accuracy >= p.accuracy && (q.bytes < p.bytes || q.accuracy > p.accuracy);
            QCOMPARE(p.onFront, !dominated);
        }
        QCOMPARE(uniform, std::size_t{3});
        // Every plan, uniform or a greedy move, is marked over budget exactly when it lost more than
        // the budget (uniform plans below it read as within it).
        std::size_t uniformOver = 0;
        for (const EvaluatedPlan& p : r.plans) {
            QCOMPARE(p.overBudget, !withinDropBudget(r.fp32Accuracy, p.accuracy, 2.0));
            uniformOver += p.uniform && p.overBudget;
        }
        QVERIFY2(uniformOver > 0, "no uniform plan is below the budget here: the check above needs one");
        QVERIFY(r.chosen >= 0);
        const EvaluatedPlan& c = r.plans[static_cast<std::size_t>(r.chosen)];
        QVERIFY(100.0 * (r.fp32Accuracy - c.accuracy) <= 2.0);
        for (const EvaluatedPlan& p : r.plans)
            if (100.0 * (r.fp32Accuracy - p.accuracy) <= 2.0) QVERIFY(p.bytes >= c.bytes);
        // The chosen plan evaluates again to the same accuracy (the search leaves the model FP32).
        PlanEvaluator again(m_trainer->model(), m_data, m_data.validation, 200, 500);
        QCOMPARE(again.fp32Accuracy(), r.fp32Accuracy);
        QCOMPARE(again.accuracy(c.plan), c.accuracy);
    }

    void sizeBudget()
    {
        MixedSearchOptions opt;
        opt.formats = {"int8", "int4", "int2"};
        opt.calibImages = 200;
        MixedSearchReport full;
        {
            opt.maxBytes = 1u << 30;
            full = searchMixedPrecision(m_trainer->model(), m_data, m_data.validation, opt);
        }
        const std::uint64_t int8Bytes = full.plans[0].bytes; // uniform int8 comes first
        opt.maxBytes = int8Bytes / 3;
        const MixedSearchReport r = searchMixedPrecision(m_trainer->model(), m_data, m_data.validation, opt);
        QVERIFY(r.chosen >= 0);
        QVERIFY(r.plans[static_cast<std::size_t>(r.chosen)].bytes <= int8Bytes / 3);
        for (const EvaluatedPlan& e : r.plans) QCOMPARE(e.overBytes, e.bytes > int8Bytes / 3); // they read as within it
        QCOMPARE(r.plans[static_cast<std::size_t>(r.chosen)].plan.activationCalibration, std::string("minmax"));
        // --act-calibration: the plans are measured, and recorded, with it (it was minmax whatever was asked).
        opt.activationCalibration = "percentile";
        opt.activationFormat = "uint4";
        opt.maxEvaluations = 4;
        const MixedSearchReport p = searchMixedPrecision(m_trainer->model(), m_data, m_data.validation, opt);
        opt.activationCalibration = "minmax";
        const MixedSearchReport m = searchMixedPrecision(m_trainer->model(), m_data, m_data.validation, opt);
        QCOMPARE(p.plans.front().plan.activationCalibration, std::string("percentile"));
        QVERIFY2(p.plans.front().accuracy != m.plans.front().accuracy,
                 qPrintable(QString("uniform int8, uint4 activations: %1 with percentile, %2 with minmax").arg(p.plans.front().accuracy).arg(m.plans.front().accuracy)));
    }

    // A size budget below the smallest plan the candidates allow (every layer at its smallest: the
    // uniform int2 plan here) returns at once with that plan's bytes; at exactly those bytes the
    // search runs and ends at a plan within the budget.
    void budgetBelowTheSmallestPlan()
    {
        MixedSearchOptions opt;
        opt.formats = {"int8", "int4", "int2"};
        opt.calibImages = 200;
        opt.maxBytes = 1u << 30;
        const MixedSearchReport full = searchMixedPrecision(m_trainer->model(), m_data, m_data.validation, opt);
        QCOMPARE(full.plans[2].label, std::string("uniform int2 (minmax)"));
        const std::uint64_t int2Bytes = full.plans[2].bytes;
        QCOMPARE(full.smallestBytes, int2Bytes);
        QVERIFY(!full.budgetBelowSmallest);
        opt.maxBytes = int2Bytes - 1;
        const MixedSearchReport refused = searchMixedPrecision(m_trainer->model(), m_data, m_data.validation, opt);
        QVERIFY(refused.budgetBelowSmallest);
        QCOMPARE(refused.smallestBytes, int2Bytes);
        QCOMPARE(refused.evaluations, std::size_t{0});
        QCOMPARE(refused.sensitivityEvaluations, std::size_t{0});
        QVERIFY(refused.plans.empty());
        QCOMPARE(refused.chosen, -1L);
        opt.maxBytes = int2Bytes;
        const MixedSearchReport reached = searchMixedPrecision(m_trainer->model(), m_data, m_data.validation, opt);
        QVERIFY(!reached.budgetBelowSmallest);
        QVERIFY(reached.chosen >= 0);
        QVERIFY(reached.plans[static_cast<std::size_t>(reached.chosen)].bytes <= int2Bytes);
    }

    // A drop of exactly the budget is within it: 0.808 - 0.798 is 1.0000000000000009 points in
    // doubles, and the search refused such a step at --max-drop 1.
    void dropOfExactlyTheBudget()
    {
        QVERIFY(100.0 * (0.808 - 0.798) > 1.0);
        QVERIFY(withinDropBudget(0.808, 0.798, 1.0));
        QVERIFY(!withinDropBudget(0.808, 0.797, 1.0));
        QVERIFY(withinDropBudget(0.5, 0.6, 0.0)); // a gain is always within
    }

    void badOptions()
    {
        MixedSearchOptions opt;
        QVERIFY_THROWS_EXCEPTION(ConfigError, searchMixedPrecision(m_trainer->model(), m_data, m_data.validation, opt)); // no budget
        opt.maxDropPoints = 1.0;
        opt.maxBytes = 1000;
        QVERIFY_THROWS_EXCEPTION(ConfigError, searchMixedPrecision(m_trainer->model(), m_data, m_data.validation, opt)); // two
        opt.maxBytes.reset();
        opt.formats = {"int8", "int77"};
        QVERIFY_THROWS_EXCEPTION(ConfigError, searchMixedPrecision(m_trainer->model(), m_data, m_data.validation, opt));
    }

private:
    Dataset m_data;
    std::unique_ptr<Trainer> m_trainer;
};

QTEST_GUILESS_MAIN(TestMixedSearch)
#include "tst_mixed_search.moc"
