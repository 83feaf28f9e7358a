// What the Analysis tab measures: an FP32 model (a finished run's, or a model file's) with the
// images it is measured on, and the background thread an analysis runs on.
// The validation images are drawn from the training set exactly as `quantscope-cli analyze
// --validation N` draws them (the tail of the seeded permutation of Dataset::load's split), so
// the GUI and the CLI measure the same images; calibration takes the first images of the rest.
#pragma once

#include "training_worker.h"

#include "nn/model.h"

#include <QString>

class QGridLayout;
class QLabel;
class QProgressBar;
class QPushButton;

#include <atomic>
#include <functional>
#include <memory>
#include <thread>

namespace quantscope {

struct AnalysisInput {
    QString name;             // "run #3" or the file name, for titles
    std::shared_ptr<const Dataset> data; // validation = the images measured on; train = calibration images; test as loaded
    std::function<std::unique_ptr<Model>()> makeModel; // a fresh FP32 copy of the model analysed
    QString modelFile;        // the file analysed (empty for a run)
    ExportBundlePtr bundle;   // the run analysed (null for a file)
    bool heldOut = false;     // the validation images come from the dataset's own validation split
    std::size_t threads = 2;
    std::string activationCalibration = "minmax"; // how the activation ranges are calibrated (PrecisionConfig's names)
};
using AnalysisInputPtr = std::shared_ptr<const AnalysisInput>;

// The images of `data` an analysis uses: up to `validation` images from its validation split when it
// has one (images a run did not train on), else the last of a seeded permutation of its training
// set (the CLI's split); the
// first `calibration` of the remaining training images; the test set as is. Throws ConfigError
// when the training set is too small. *remaining (when given) gets the normalisation a model file
// that stores none is measured with: the whole training set's pixel statistics, whatever the
// training limit and the validation images leave (Dataset::load), as `analyze --validation N`
// takes them (tester 17: the GUI's cells must be the CLI's).
std::shared_ptr<Dataset> analysisDataset(const Dataset& data, std::size_t validation, std::size_t calibration, bool* heldOut,
                                         Normalization* remaining = nullptr);

// One analysis thread at a time: start() runs `work` on a std::thread (joined, never detached),
// stop() raises the flag `work` polls, the destructor stops and joins.
class AnalysisThread {
public:
    AnalysisThread() = default;
    ~AnalysisThread();
    AnalysisThread(const AnalysisThread&) = delete;
    AnalysisThread& operator=(const AnalysisThread&) = delete;

    // `work` gets the stop flag to poll; false when an analysis is still running.
    bool start(std::function<void(const std::atomic<bool>& stop)> work);
    void stop() { m_stop = true; }
    bool running() const { return m_running; }
    // Called by the GUI thread when the work has posted its result.
    void finished();

private:
    std::thread m_thread;
    std::atomic<bool> m_stop{false};
    bool m_running = false;
};

// The Run / Stop buttons, progress bar and status line every analysis page has. Object names are
// `<prefix>Run`, `<prefix>Stop`, `<prefix>Progress`, `<prefix>Status`; Stop starts disabled. The
// caller connects the buttons and lays the widgets out (runControlsRow: in a row).
struct RunControls {
    QPushButton* run = nullptr;
    QPushButton* stop = nullptr;
    QProgressBar* progress = nullptr;
    QLabel* status = nullptr;
};
RunControls makeRunControls(const QString& prefix, const QString& runText, const QString& runTip, const QString& stopTip,
                            const QString& statusText);
// Run, Stop, the progress bar and the status line in one row. The buttons and the bar keep to its
// top and the status reserves two lines: a summary that wraps to more lines does not move Run
// (a second click on Run sensitivity missed it, 14 px lower; tester 12 #11).
QGridLayout* runControlsRow(const RunControls& c);
// The status line beside the bar while it gets about 40 characters there in a row `width` pixels
// wide, else under the buttons and the bar, the whole width (in a 1024x700 window's Analysis tab
// it was a column of seven lines, 80 pixels wide). For the page's resizeEvent.
void placeRunStatus(QGridLayout* row, const RunControls& c, int width);
// Widens `bar` (never narrows it) so that each of `texts` fits on one line: at 150 px, "ranking:
// one-layer plan 12 of 16" wrapped inside the single-line bar and both lines were cut.
void fitProgressText(QProgressBar* bar, const QStringList& texts);
// Run's state on an analysis page: enabled unless an analysis is in flight (`busy`) or `blocked`
// says why not (a training run shares the cores); `tip` is its tooltip, then the reason.
void setRunEnabled(QPushButton* run, const QString& tip, bool busy, const QString& blocked);

} // namespace quantscope
