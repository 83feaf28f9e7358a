#include "analysis_input.h"

#include "util/errors.h"

#include <QGridLayout>
#include <QLabel>
#include <QProgressBar>
#include <QPushButton>

#include <algorithm>

namespace quantscope {

namespace {

LabeledImages pick(const LabeledImages& s, const std::vector<std::size_t>& idx)
{
    LabeledImages out;
    out.channels = s.channels;
    out.height = s.height;
    out.width = s.width;
    const std::size_t n = s.imageBytes();
    out.pixels.resize(idx.size() * n);
    out.labels.resize(idx.size());
    for (std::size_t k = 0; k < idx.size(); ++k) {
        std::copy_n(s.pixels.begin() + static_cast<std::ptrdiff_t>(idx[k] * n), n, out.pixels.begin() + static_cast<std::ptrdiff_t>(k * n));
        out.labels[k] = s.labels[idx[k]];
    }
    return out;
}

std::vector<std::size_t> firstOf(std::size_t n)
{
    std::vector<std::size_t> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = i;
    return v;
}

} // namespace

std::shared_ptr<Dataset> analysisDataset(const Dataset& data, std::size_t validation, std::size_t calibration, bool* heldOut,
                                         Normalization* remaining)
{
    auto d = std::make_shared<Dataset>();
    d->name = data.name;
    d->dir = data.dir;
    d->layout = data.layout;
    d->classNames = data.classNames;
    d->normalization = data.normalization;
    d->test = data.test;
    if (validation == 0) throw ConfigError("analysis: give at least one validation image");
    if (data.validation.size() > 0) { // held out of training: measured on those, as many as there are up to `validation`
        d->validation = pick(data.validation, firstOf(std::min(validation, data.validation.size())));
        d->train = pick(data.train, firstOf(std::min(calibration, data.train.size())));
        if (heldOut) *heldOut = true;
        if (remaining) *remaining = data.normalization; // Dataset::load's, of the whole training set
        return d;
    }
    if (validation >= data.train.size())
        throw ConfigError("analysis: " + std::to_string(validation) + " validation images leave no calibration images (the training set has " +
                          std::to_string(data.train.size()) + ")");
    // Dataset::load's split for --validation N with the default seed 1 (analyze --train-limit N
    // holds them out of the limited set the same way).
    ValidationSplit split = validationSplit(data.train.size(), validation, 1);
    if (remaining) *remaining = data.normalization; // of the whole training set, whatever was kept or held out
    split.train.resize(std::min(calibration, split.train.size()));
    d->validation = pick(data.train, split.validation);
    d->train = pick(data.train, split.train);
    if (heldOut) *heldOut = false;
    return d;
}

AnalysisThread::~AnalysisThread()
{
    m_stop = true;
    if (m_thread.joinable()) m_thread.join();
}

bool AnalysisThread::start(std::function<void(const std::atomic<bool>& stop)> work)
{
    if (m_running) return false;
    if (m_thread.joinable()) m_thread.join(); // the previous one has posted its result
    m_stop = false;
    m_running = true;
    m_thread = std::thread([this, work = std::move(work)] { work(m_stop); });
    return true;
}

void AnalysisThread::finished()
{
    m_running = false;
    if (m_thread.joinable()) m_thread.join();
}

RunControls makeRunControls(const QString& prefix, const QString& runText, const QString& runTip, const QString& stopTip,
                            const QString& statusText)
{
    RunControls c;
    c.run = new QPushButton(runText);
    c.run->setObjectName(prefix + QStringLiteral("Run"));
    c.run->setToolTip(runTip);
    c.stop = new QPushButton(QObject::tr("Stop"));
    c.stop->setObjectName(prefix + QStringLiteral("Stop"));
    c.stop->setEnabled(false);
    c.stop->setToolTip(stopTip);
    c.progress = new QProgressBar;
    c.progress->setObjectName(prefix + QStringLiteral("Progress"));
    c.progress->setRange(0, 1);
    c.progress->setValue(0);
    c.progress->setFormat(QString());
    c.progress->setMinimumWidth(260);
    c.status = new QLabel(statusText);
    c.status->setObjectName(prefix + QStringLiteral("Status"));
    c.status->setWordWrap(true);
    c.status->setTextInteractionFlags(Qt::TextSelectableByMouse);
    return c;
}

QGridLayout* runControlsRow(const RunControls& c)
{
    auto* row = new QGridLayout;
    row->setVerticalSpacing(2);
    row->addWidget(c.run, 0, 0, Qt::AlignTop);
    row->addWidget(c.stop, 0, 1, Qt::AlignTop);
    row->addWidget(c.progress, 0, 2, Qt::AlignTop);
    c.progress->setMinimumHeight(c.run->sizeHint().height()); // level with the buttons, at the top
    c.status->setMinimumHeight(2 * c.status->fontMetrics().lineSpacing());
    c.status->setAlignment(Qt::AlignLeft | Qt::AlignTop);
    row->addWidget(c.status, 0, 3);
    row->setColumnStretch(3, 1);
    return row;
}

void placeRunStatus(QGridLayout* row, const RunControls& c, int width)
{
    const int controls = c.run->sizeHint().width() + c.stop->sizeHint().width() +
                         std::max(c.progress->minimumWidth(), c.progress->sizeHint().width()) + 3 * row->horizontalSpacing();
    const bool beside = width - controls >= 40 * c.status->fontMetrics().averageCharWidth();
    int r = 0, col = 0, rows = 0, cols = 0;
    row->getItemPosition(row->indexOf(c.status), &r, &col, &rows, &cols);
    if (beside == (r == 0)) return;
    row->removeWidget(c.status);
    if (beside) row->addWidget(c.status, 0, 3);
    else row->addWidget(c.status, 1, 0, 1, 4);
    row->setColumnStretch(3, beside ? 1 : 0);
    row->setColumnStretch(2, beside ? 0 : 1);
}

void fitProgressText(QProgressBar* bar, const QStringList& texts)
{
    const QFontMetrics fm = bar->fontMetrics();
    int widest = 0;
    for (const QString& t : texts) widest = std::max(widest, fm.horizontalAdvance(t));
    // the frame and the style's margins around the text, with room to spare
    const int need = widest + 2 * fm.averageCharWidth() + 16;
    if (need > bar->minimumWidth()) bar->setMinimumWidth(need);
}

void setRunEnabled(QPushButton* run, const QString& tip, bool busy, const QString& blocked)
{
    run->setEnabled(!busy && blocked.isEmpty());
    run->setToolTip(blocked.isEmpty() ? tip : tip + QStringLiteral("\n\n") + QObject::tr("Disabled: %1").arg(blocked));
}

} // namespace quantscope
