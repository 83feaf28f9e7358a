// quantscope: the desktop GUI. Entry point only: application setup, command line, and the
// hidden scripted screenshot tour used by scripts/screenshot.
#include "main_window.h"
#include "model_summary_dialog.h"
#include "quant_charts.h"
#include "runs_model.h"
#include "training_panel.h"

#include "util/memory.h"

#include <QApplication>
#include <QPushButton>
#include <QCheckBox>
#include <QCommandLineParser>
#include <QDir>
#include <QDockWidget>
#include <QTabWidget>
#include <QTemporaryDir>
#include <QTimer>

#include <csignal>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>

using namespace quantscope;

namespace {

// Drives the window through a short session and saves PNGs of the main views:
// FP32 baseline, QAT channel-wise, QAT tensor-wise, mixed precision, mobilenet-tiny PTQ
// channel-wise and tensor-wise; then each tab.
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
        // mobilenet-tiny PTQ int8 channel-wise then tensor-wise: the depthwise layers' SQNR lesson.
        TrainConfig mbChannel = base;
        mbChannel.model = "mobilenet-tiny";
        mbChannel.precision.strategy = Strategy::Ptq;
        TrainConfig mbTensor = mbChannel;
        mbTensor.precision.granularity = "tensor";
        m_runs = {fp32, base, tensor, mixed, mbChannel, mbTensor};

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

    // One step of the tour: an action, then (400 ms later, once the window has repainted) the
    // shot. Steps run one after another, each scheduled by the previous one, so a slow machine
    // delays the tour but never mixes two steps into one picture.
    struct Step {
        std::function<void()> action;
        QWidget* (*target)(MainWindow*);
        QString name;
    };

    void runSteps(std::size_t i)
    {
        if (i >= m_steps.size()) {
            exportShot();
            return;
        }
        m_steps[i].action();
        later(400, [this, i] {
            const Step& st = m_steps[i];
            shot(st.target ? st.target(m_w) : m_w, st.name);
            later(300, [this, i] { runSteps(i + 1); });
        });
    }

    void tour()
    {
        auto tab = [this](QList<int> runs, int index) {
            return [this, runs, index] {
                m_w->selectRuns(runs);
                m_w->tabs()->setCurrentIndex(index);
            };
        };
        // QAT tensor-wise and channel-wise; channel-wise is the primary.
        m_steps.push_back({tab({3, 2}, 0), nullptr, QStringLiteral("03-curves-compare.png")});
        m_steps.push_back({tab({3, 2}, 1), nullptr, QStringLiteral("04-histograms.png")});
        m_steps.push_back({[this] {
                               m_w->histogramPanel()->logToggle()->setChecked(true);
                               m_w->tabs()->setCurrentIndex(1);
                           },
                           nullptr, QStringLiteral("04b-histograms-log.png")});
        m_steps.push_back({[this] {
                               m_w->histogramPanel()->logToggle()->setChecked(false);
                               m_w->tabs()->setCurrentIndex(2);
                           },
                           nullptr, QStringLiteral("05-ranges.png")});
        m_steps.push_back({tab({3, 2}, 3), nullptr, QStringLiteral("06-sqnr.png")});
        // mobilenet-tiny PTQ tensor-wise against channel-wise: the depthwise layers collapse.
        m_steps.push_back({tab({6, 5}, 3), nullptr, QStringLiteral("06b-sqnr-mobilenet-ptq-tensor-vs-channel.png")});
        m_steps.push_back({tab({6, 5}, 2), nullptr, QStringLiteral("06c-ranges-mobilenet-ptq.png")});
        m_steps.push_back({tab({4}, 4), nullptr, QStringLiteral("07-loss-scale.png")});
        m_steps.push_back({[this] {
                               TrainConfig c = TrainingPanel::defaultConfig();
                               c.precision.strategy = Strategy::Fp32;
                               m_w->trainingPanel()->setConfig(c);
                               m_w->tabs()->setCurrentIndex(0);
                               m_w->selectRuns({1, 2, 3, 4});
                           },
                           nullptr, QStringLiteral("08-all-runs-fp32-options.png")});
        m_steps.push_back({[] {}, [](MainWindow* w) -> QWidget* { return w->trainingDock(); },
                           QStringLiteral("08b-training-panel-fp32.png")});
        // The model summary of resnet8 (the Training dock's Summary button); exportShot closes it.
        m_steps.push_back({[this] {
                               TrainConfig c = m_w->trainingPanel()->config();
                               c.model = "resnet8";
                               m_w->trainingPanel()->setConfig(c);
                               m_w->trainingPanel()->summaryButton()->click();
                           },
                           [](MainWindow* w) -> QWidget* { return w->modelSummaryDialog(); },
                           QStringLiteral("08c-model-summary-resnet8.png")});
        runSteps(0);
    }

    // Exports run #2 (QAT int8 channel-wise) to a temporary .qsm and grabs the report.
    void exportShot()
    {
        if (m_w->modelSummaryDialog()) m_w->modelSummaryDialog()->close();
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
    std::vector<Step> m_steps;
    std::size_t m_next = 0;
    bool m_liveShot = false;
    Phase m_phase = Phase::Start;
    QObject m_ctx;
};

} // namespace

namespace {

// The GUI's command line. --help and --version print without a display (a QCoreApplication):
// with a QApplication first they aborted on a machine with no X server.
struct GuiCommandLine {
    QCommandLineParser parser;
    QCommandLineOption data{QStringLiteral("data"),
                            QStringLiteral("Dataset to open at start: a folder (IDX, CIFAR, train.csv, image class "
                                           "folders) or a .csv file."),
                            QStringLiteral("path")};
    QCommandLineOption model{QStringLiteral("model"),
                             QStringLiteral("Model file to start from: an FP32 .onnx (e.g. from torch.onnx.export) or .qsm."),
                             QStringLiteral("file")};
    QCommandLineOption resize{QStringLiteral("resize"), QStringLiteral("Resize every image to HxW (e.g. 32x32)."), QStringLiteral("HxW")};
    QCommandLineOption datasetShot{QStringLiteral("screenshot-dataset"),
                                   QStringLiteral("Save a PNG of the window once the dataset is loaded, then quit."), QStringLiteral("file")};
    QCommandLineOption trainLimit{QStringLiteral("train-limit"), QStringLiteral("Use N training images (0 = all)."), QStringLiteral("n")};
    QCommandLineOption noSettings{QStringLiteral("no-settings"), QStringLiteral("Neither restore nor save the window layout and options.")};
    QCommandLineOption shotDir{QStringLiteral("screenshot-dir"), QStringLiteral("Scripted tour saving PNGs here."), QStringLiteral("dir")};
    QCommandLineOption shotLimit{QStringLiteral("screenshot-train-limit"), QStringLiteral("Training images for the tour."),
                                 QStringLiteral("n"), QStringLiteral("3000")};
    QCommandLineOption shotEpochs{QStringLiteral("screenshot-epochs"), QStringLiteral("Epochs per tour run."), QStringLiteral("n"),
                                  QStringLiteral("2")};
    QCommandLineOption shotSize{QStringLiteral("screenshot-size"), QStringLiteral("Window size for the tour and the dataset picture."),
                                QStringLiteral("WxH"), QStringLiteral("1600x1000")};

    GuiCommandLine()
    {
        parser.setApplicationDescription(QStringLiteral("QuantScope: explore low-precision training and quantization."));
        parser.addHelpOption();
        parser.addVersionOption();
        for (QCommandLineOption* o : {&shotDir, &shotLimit, &shotEpochs, &datasetShot, &shotSize}) o->setFlags(QCommandLineOption::HiddenFromHelp);
        parser.addOptions({data, model, resize, trainLimit, noSettings, shotDir, shotLimit, shotEpochs, datasetShot, shotSize});
    }
};

void nameApplication()
{
    QCoreApplication::setOrganizationName(QStringLiteral("QuantScope"));
    QCoreApplication::setApplicationName(QStringLiteral("QuantScope"));
    // The commit too, when built from a git checkout (app/CMakeLists.txt): --version and Help > About show it.
    const QString commit = QStringLiteral(QS_COMMIT);
    QCoreApplication::setApplicationVersion(QStringLiteral(QS_VERSION) +
                                            (commit.isEmpty() ? QString() : QStringLiteral(" (commit %1)").arg(commit)));
}

} // namespace

int main(int argc, char** argv)
{
    quantscope::keepTrainingBuffersInHeap();
    // A file past the size limit (ulimit -f) fails its write with EFBIG, which every writer reports
    // and cleans up after, instead of SIGXFSZ killing the process silently with its temporary file.
    std::signal(SIGXFSZ, SIG_IGN);
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "-h" || a == "--help" || a == "--help-all" || a == "-v" || a == "--version") {
            QCoreApplication core(argc, argv);
            nameApplication();
            GuiCommandLine cl;
            cl.parser.process(core); // prints and exits
            return 0;
        }
    }
    QApplication app(argc, argv);
    nameApplication();
    GuiCommandLine cl;
    QCommandLineParser& parser = cl.parser;
    const QCommandLineOption &data = cl.data, &model = cl.model, &resize = cl.resize, &datasetShot = cl.datasetShot,
                             &trainLimit = cl.trainLimit, &noSettings = cl.noSettings, &shotDir = cl.shotDir, &shotLimit = cl.shotLimit,
                             &shotEpochs = cl.shotEpochs;
    parser.process(app);
    // The tour's window size (scripts/screenshot's QS_SHOT_SIZE): 1024x700 shows what a small screen gets.
    QSize shotWindow(1600, 1000);
    if (const QStringList wh = parser.value(cl.shotSize).split(QLatin1Char('x')); wh.size() == 2 && wh[0].toInt() > 0 && wh[1].toInt() > 0)
        shotWindow = QSize(wh[0].toInt(), wh[1].toInt());

    MainWindowOptions options;
    options.dataDir = parser.value(data);
    options.resize = parser.value(resize);
    options.useSettings = !parser.isSet(noSettings) && !parser.isSet(shotDir) && !parser.isSet(datasetShot);
    if (parser.isSet(trainLimit)) {
        bool ok = false;
        const qlonglong n = parser.value(trainLimit).toLongLong(&ok);
        if (!ok || n < 0) { // as the CLI's: a bad number is an error, not "all" in silence
            std::fprintf(stderr, "quantscope: --train-limit: expected a whole number, got '%s'\n", qPrintable(parser.value(trainLimit)));
            return 2;
        }
        options.trainLimit = static_cast<long>(n);
    }
    std::unique_ptr<ScreenshotTour> tour;
    if (parser.isSet(shotDir)) {
        options.trainLimit = parser.value(shotLimit).toLong();
        options.testLimit = 2000;
    }
    MainWindow window(options);
    if (parser.isSet(model)) window.loadModelFile(parser.value(model)); // errors show in the window
    if (parser.isSet(shotDir)) {
        window.setGeometry(QRect(QPoint(0, 0), shotWindow));
        tour = std::make_unique<ScreenshotTour>(&window, parser.value(shotDir),
                                                std::max<std::size_t>(1, parser.value(shotEpochs).toULong()));
    }
    if (parser.isSet(datasetShot)) {
        // One picture of the window with the dataset (or its error) shown, for scripts/screenshot-datasets.
        window.setGeometry(QRect(QPoint(0, 0), shotWindow));
        QObject::connect(&window, &MainWindow::datasetReady, &window, [&window, file = parser.value(datasetShot)](bool ok) {
            QTimer::singleShot(300, &window, [&window, file, ok] {
                const bool saved = window.grab().save(file, "PNG");
                QCoreApplication::exit(saved && ok ? 0 : 1);
            });
        });
    }
    window.show();
    return app.exec();
}
