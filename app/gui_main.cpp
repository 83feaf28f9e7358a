// quantscope: the desktop GUI. Entry point only: application setup, command line, and the
// hidden scripted screenshot tour used by scripts/screenshot.
#include "main_window.h"
#include "quant_charts.h"
#include "runs_model.h"
#include "training_panel.h"

#include <QApplication>
#include <QCheckBox>
#include <QCommandLineParser>
#include <QDir>
#include <QDockWidget>
#include <QTabWidget>
#include <QTemporaryDir>
#include <QTimer>

#include <cstdio>
#include <functional>
#include <memory>

using namespace quantscope;

namespace {

// Drives the window through a short session and saves PNGs of the main views:
// FP32 baseline, QAT channel-wise, QAT tensor-wise, mixed precision; then each tab.
class ScreenshotTour {
public:
    ScreenshotTour(MainWindow* w, QString dir, std::size_t epochs) : m_w(w), m_dir(std::move(dir)), m_epochs(epochs)
    {
        QDir().mkpath(m_dir);
        TrainConfig base = TrainingPanel::defaultConfig();
        base.epochs = m_epochs;
        TrainConfig fp32 = base;
        fp32.precision.strategy = Strategy::Fp32;
        TrainConfig tensor = base;
        tensor.precision.granularity = "tensor";
        TrainConfig mixed = base;
        mixed.precision.strategy = Strategy::Mixed;
        mixed.precision.format = "fp16";
        m_runs = {fp32, base, tensor, mixed};

        QObject::connect(w, &MainWindow::datasetReady, &m_ctx, [this](bool ok) { onDataset(ok); });
        QObject::connect(w, &MainWindow::runEnded, &m_ctx, [this](int) {
            ++m_next;
            later(300, [this] { runNext(); });
        });
        QObject::connect(w, &MainWindow::chartsRefreshed, &m_ctx, [this] { maybeLiveShot(); });
        // Never hang: give up after 10 minutes.
        later(600000, [] {
            std::fprintf(stderr, "screenshot: timed out\n");
            QApplication::exit(2);
        });
    }

private:
    void later(int ms, std::function<void()> f) { QTimer::singleShot(ms, &m_ctx, std::move(f)); }

    void shot(QWidget* widget, const QString& name)
    {
        const QString path = QDir(m_dir).filePath(name);
        const bool ok = widget->grab().save(path, "PNG");
        std::printf("screenshot: %s %s\n", ok ? "wrote" : "FAILED", qPrintable(path));
        std::fflush(stdout);
    }

    void onDataset(bool ok)
    {
        if (m_phase == Phase::BadDataset) {
            later(300, [this] {
                shot(m_w, QStringLiteral("09-bad-dataset-error.png"));
                QApplication::exit(0);
            });
            return;
        }
        if (m_phase != Phase::Start) return;
        m_phase = Phase::Training;
        if (!ok) {
            shot(m_w, QStringLiteral("00-dataset-error.png"));
            QApplication::exit(1);
            return;
        }
        later(400, [this] {
            shot(m_w, QStringLiteral("01-start.png"));
            runNext();
        });
    }

    void runNext()
    {
        if (m_next < m_runs.size()) {
            m_w->trainingPanel()->setConfig(m_runs[m_next]);
            m_w->tabs()->setCurrentIndex(0);
            m_w->startTraining();
            return;
        }
        tour();
    }

    void maybeLiveShot()
    {
        if (m_liveShot || m_next != 1 || !m_w->isTraining()) return;
        RunPtr r = m_w->runsModel()->runById(2);
        if (!r || !r->hasStart || r->epochs.empty()) return;
        const double done = double(r->steps.size()) / double(r->start.epochs * r->start.stepsPerEpoch);
        if (done < 0.6) return;
        m_liveShot = true;
        shot(m_w, QStringLiteral("02-training-live.png"));
    }

    void tour()
    {
        m_w->selectRuns({3, 2}); // QAT tensor-wise and channel-wise; channel-wise is the primary
        const std::pair<int, const char*> tabs[] = {
            {0, "03-curves-compare.png"}, {1, "04-histograms.png"}, {2, "05-ranges.png"}, {3, "06-sqnr.png"}};
        int delay = 500;
        for (const auto& [tab, name] : tabs) {
            later(delay, [this, tab = tab, name = QString::fromLatin1(name)] {
                m_w->tabs()->setCurrentIndex(tab);
                later(400, [this, name] { shot(m_w, name); });
            });
            delay += 900;
        }
        later(delay, [this] {
            m_w->histogramPanel()->logToggle()->setChecked(true);
            m_w->tabs()->setCurrentIndex(1);
            later(400, [this] {
                shot(m_w, QStringLiteral("04b-histograms-log.png"));
                m_w->histogramPanel()->logToggle()->setChecked(false);
            });
        });
        delay += 900;
        later(delay, [this] {
            m_w->selectRuns({4});
            m_w->tabs()->setCurrentIndex(4);
            later(400, [this] { shot(m_w, QStringLiteral("07-loss-scale.png")); });
        });
        delay += 900;
        later(delay, [this] {
            TrainConfig c = TrainingPanel::defaultConfig();
            c.precision.strategy = Strategy::Fp32;
            m_w->trainingPanel()->setConfig(c);
            m_w->tabs()->setCurrentIndex(0);
            m_w->selectRuns({1, 2, 3, 4});
            later(400, [this] {
                shot(m_w, QStringLiteral("08-all-runs-fp32-options.png"));
                shot(m_w->trainingDock(), QStringLiteral("08b-training-panel-fp32.png"));
                exportShot();
            });
        });
    }

    // Exports run #2 (QAT int8 channel-wise) to a temporary .qsm and grabs the report.
    void exportShot()
    {
        m_w->selectRuns({2});
        QObject::connect(m_w, &MainWindow::exportFinished, &m_ctx, [this](int, bool, const QString&) {
            later(500, [this] {
                if (QWidget* box = QApplication::activeModalWidget()) {
                    shot(box, QStringLiteral("10-export-report.png"));
                    box->close();
                }
                m_phase = Phase::BadDataset;
                m_w->openDatasetFolder(QStringLiteral("/nonexistent/dataset"));
            });
        });
        if (!m_w->exportRunTo(2, m_tmp.filePath(QStringLiteral("quantscope-run2-qat-int8.qsm")))) {
            m_phase = Phase::BadDataset;
            m_w->openDatasetFolder(QStringLiteral("/nonexistent/dataset"));
        }
    }

    enum class Phase { Start, Training, BadDataset };
    QTemporaryDir m_tmp;
    MainWindow* m_w;
    QString m_dir;
    std::size_t m_epochs;
    std::vector<TrainConfig> m_runs;
    std::size_t m_next = 0;
    bool m_liveShot = false;
    Phase m_phase = Phase::Start;
    QObject m_ctx;
};

} // namespace

int main(int argc, char** argv)
{
    QApplication app(argc, argv);
    QApplication::setOrganizationName(QStringLiteral("QuantScope"));
    QApplication::setApplicationName(QStringLiteral("QuantScope"));
    QApplication::setApplicationVersion(QStringLiteral("0.1.0"));

    QCommandLineParser parser;
    parser.setApplicationDescription(QStringLiteral("QuantScope: explore low-precision training and quantization."));
    parser.addHelpOption();
    parser.addVersionOption();
    QCommandLineOption data(QStringLiteral("data"), QStringLiteral("Folder of IDX files to open at start."),
                            QStringLiteral("dir"));
    QCommandLineOption trainLimit(QStringLiteral("train-limit"), QStringLiteral("Use N training images (0 = all)."),
                                  QStringLiteral("n"));
    QCommandLineOption noSettings(QStringLiteral("no-settings"),
                                  QStringLiteral("Neither restore nor save the window layout and options."));
    QCommandLineOption shotDir(QStringLiteral("screenshot-dir"), QStringLiteral("Scripted tour saving PNGs here."),
                               QStringLiteral("dir"));
    QCommandLineOption shotLimit(QStringLiteral("screenshot-train-limit"),
                                 QStringLiteral("Training images for the tour."), QStringLiteral("n"), QStringLiteral("3000"));
    QCommandLineOption shotEpochs(QStringLiteral("screenshot-epochs"), QStringLiteral("Epochs per tour run."),
                                  QStringLiteral("n"), QStringLiteral("2"));
    for (QCommandLineOption* o : {&shotDir, &shotLimit, &shotEpochs}) o->setFlags(QCommandLineOption::HiddenFromHelp);
    parser.addOptions({data, trainLimit, noSettings, shotDir, shotLimit, shotEpochs});
    parser.process(app);

    MainWindowOptions options;
    options.dataDir = parser.value(data);
    options.useSettings = !parser.isSet(noSettings) && !parser.isSet(shotDir);
    if (parser.isSet(trainLimit)) options.trainLimit = parser.value(trainLimit).toLong();
    std::unique_ptr<ScreenshotTour> tour;
    if (parser.isSet(shotDir)) {
        options.trainLimit = parser.value(shotLimit).toLong();
        options.testLimit = 2000;
    }
    MainWindow window(options);
    if (parser.isSet(shotDir)) {
        window.setGeometry(0, 0, 1600, 1000);
        tour = std::make_unique<ScreenshotTour>(&window, parser.value(shotDir),
                                                std::max<std::size_t>(1, parser.value(shotEpochs).toULong()));
    }
    window.show();
    return app.exec();
}
