#include "analysis_view.h"

#include "core_message.h"
#include "flow_layout.h"
#include "format_text.h"
#include "quant_catalog.h"
#include "search_view.h"
#include "sensitivity_view.h"

#include "io/model_source.h"
#include "util/errors.h"

#include <QComboBox>
#include <QFileInfo>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QResizeEvent>
#include <QSpinBox>
#include <QTabWidget>
#include <QVBoxLayout>

#include <algorithm>

namespace quantscope {

AnalysisView::AnalysisView(QWidget* parent) : QWidget(parent)
{
    m_source = new QComboBox;
    m_source->setObjectName(QStringLiteral("analysisSource"));
    m_source->setMinimumContentsLength(18); // 28 made the bar 923 pixels at least, past a 1366-pixel window's tab
    m_source->setSizeAdjustPolicy(QComboBox::AdjustToMinimumContentsLengthWithIcon);
    m_source->setToolTip(tr("The FP32 model analysed: the selected finished run's trained model, or a model file opened with "
                            "File > Open model file (measured on the loaded dataset)."));
    m_source->addItem(tr("no finished run yet"), QString());
    m_validation = new QSpinBox;
    m_validation->setObjectName(QStringLiteral("analysisValidation"));
    m_validation->setRange(10, 100000);
    m_validation->setSingleStep(500);
    m_validation->setValue(5000);
    connect(m_validation, &QSpinBox::valueChanged, this, [this] { updateSourceNote(); });
    m_validation->setToolTip(tr("Images measured on: the dataset's validation split, or drawn from its training set as "
                                "quantscope-cli analyze --validation N draws them (not the test set)."));
    m_calibration = new QSpinBox;
    m_calibration->setObjectName(QStringLiteral("analysisCalibration"));
    m_calibration->setRange(1, 100000);
    m_calibration->setSingleStep(100);
    m_calibration->setValue(1000);
    m_calibration->setToolTip(tr("Training images (not the validation ones) that calibrate the activation ranges."));
    m_actCalibration = new QComboBox;
    m_actCalibration->setObjectName(QStringLiteral("analysisActCalibration"));
    for (const Choice& c : calibrationChoices())
        if (c.value != QLatin1String("moving-average")) { // a training observer; PTQ calibrates once
            m_actCalibration->addItem(c.label, c.value);
            m_actCalibration->setItemData(m_actCalibration->count() - 1, c.tooltip, Qt::ToolTipRole);
        }
    m_actCalibration->setToolTip(tr("How the activation ranges are set from the calibration images, in every plan an analysis "
                                    "measures (quantscope-cli analyze --act-calibration); saved plans record it."));
    m_note = new QLabel;
    m_note->setObjectName(QStringLiteral("analysisNote"));
    m_note->setWordWrap(true);
    m_note->setMinimumWidth(120); // wraps instead of widening the view past a 1366-pixel window's tab
    m_note->setStyleSheet(QStringLiteral("color: #555;"));
    connect(m_source, &QComboBox::currentIndexChanged, this, &AnalysisView::updateSourceNote);

    const auto provider = [this](QString* error) { return input(error); };
    m_sensitivity = new SensitivityView(provider);
    m_search = new SearchView(provider);
    connect(m_sensitivity, &SensitivityView::busyChanged, this, &AnalysisView::analysingChanged);
    connect(m_search, &SearchView::busyChanged, this, &AnalysisView::analysingChanged);
    m_pages = new QTabWidget;
    m_pages->setObjectName(QStringLiteral("analysisPages"));
    m_pages->setDocumentMode(true);
    m_pages->addTab(m_sensitivity, tr("Sensitivity"));
    m_pages->addTab(m_search, tr("Mixed-bit search"));
    m_pages->setTabToolTip(0, tr("Which layers can go to fewer bits: each layer quantized alone to each format "
                                 "(quantscope-cli analyze sensitivity)."));
    m_pages->setTabToolTip(1, tr("Per-layer formats under an accuracy or size budget, with the size/accuracy Pareto front "
                                 "(quantscope-cli analyze search)."));

    // One row: the model, the note on it (wrapped) and the images; the activation ranges beside
    // the Sensitivity / Mixed-bit search tabs, in the room the two tabs leave. The note and the
    // activation ranges had a row of their own, which pushed the search's chart below a 1366x768
    // window's tab. In a narrow tab the note takes a row of its own after all (placeNote): beside
    // the fields at 1024x700 it wrapped into nine lines and pushed the search's chart off the tab;
    // and the two image counts wrap under each other (there, on one row, the fields set the tab's
    // minimum width past the window's: it scrolled across).
    m_bar = new QGridLayout;
    m_bar->setContentsMargins(0, 0, 0, 0);
    m_bar->setVerticalSpacing(2);
    m_bar->addWidget(new QLabel(tr("Model")), 0, 0);
    m_bar->addWidget(m_source, 0, 1);
    auto* counts = new FlowLayout(6, 2);
    counts->addWidget(labelledField(new QLabel(tr("Validation images")), m_validation));
    counts->addWidget(labelledField(new QLabel(tr("Calibration images")), m_calibration));
    m_bar->addLayout(counts, 0, 3);
    m_bar->setColumnStretch(1, 2);
    placeNote(false);
    auto* corner = new QWidget;
    auto* cl = new QHBoxLayout(corner);
    cl->setContentsMargins(12, 0, 0, 1);
    cl->addWidget(new QLabel(tr("Activation ranges")));
    cl->addWidget(m_actCalibration);
    m_pages->setCornerWidget(corner, Qt::TopRightCorner);
    auto* v = new QVBoxLayout(this);
    v->setContentsMargins(2, 4, 2, 0);
    v->setSpacing(4);
    v->addLayout(m_bar);
    v->addWidget(m_pages, 1);
    updateSourceNote();
}

void AnalysisView::placeNote(bool ownRow)
{
    if (m_noteOwnRow == ownRow && m_bar->indexOf(m_note) >= 0) return;
    m_noteOwnRow = ownRow;
    m_bar->removeWidget(m_note);
    if (ownRow) m_bar->addWidget(m_note, 1, 0, 1, 4);
    else m_bar->addWidget(m_note, 0, 2);
    m_bar->setColumnStretch(2, ownRow ? 0 : 3);
}

void AnalysisView::resizeEvent(QResizeEvent* e)
{
    // The note beside the fields while it gets a readable width there (about 40 characters).
    int fields = 0;
    for (int i = 0; i < m_bar->count(); ++i)
        if (QLayoutItem* item = m_bar->itemAt(i); item->widget() != m_note) fields += item->sizeHint().width() + m_bar->horizontalSpacing();
    placeNote(e->size().width() - fields < 40 * m_note->fontMetrics().averageCharWidth());
    QWidget::resizeEvent(e);
    // The hidden page is laid out for the shown one's width: its minimum width counts in the tab's,
    // and laid out for a wider tab it would keep the tab wider than a narrow window's.
    const int pageWidth = m_pages->currentWidget()->width();
    if (m_pages->currentWidget() != m_sensitivity) m_sensitivity->fitWidth(pageWidth);
    if (m_pages->currentWidget() != m_search) m_search->fitWidth(pageWidth);
}

void AnalysisView::setRun(int runId, ExportBundlePtr bundle, const QString& description)
{
    m_runId = runId;
    m_bundle = std::move(bundle);
    m_source->setItemText(0, m_bundle ? tr("run #%1 (%2)").arg(runId).arg(description) : tr("no finished run yet"));
    updateSourceNote();
}

void AnalysisView::setDataset(DatasetPtr data)
{
    m_data = std::move(data);
    updateSourceNote();
}

void AnalysisView::addModelFile(const QString& path)
{
    int i = m_source->findData(path);
    if (i < 0) {
        m_source->addItem(QFileInfo(path).fileName(), path);
        i = m_source->count() - 1;
        m_source->setItemData(i, path, Qt::ToolTipRole);
    }
    m_source->setCurrentIndex(i);
}

bool AnalysisView::selectSource(const QString& path)
{
    const int i = path.isEmpty() ? 0 : m_source->findData(path);
    if (i < 0) return false;
    m_source->setCurrentIndex(i);
    return true;
}

void AnalysisView::setValidationImages(int n) { m_validation->setValue(n); }
void AnalysisView::setCalibrationImages(int n) { m_calibration->setValue(n); }

namespace {

// The validation images asked for, or half of a training set too small for them: the rule of
// quantscope-cli analyze without --validation (half of the training images), so that the CLI
// repeats the tab's numbers (a fifth here measured 400 images where analyze measured 1,000).
std::size_t validationFor(const Dataset& d, int asked)
{
    const auto n = static_cast<std::size_t>(asked);
    if (d.validation.size() > 0) return std::min(n, d.validation.size()); // the held-out split (analysisDataset)
    if (n < d.train.size()) return n;
    return std::max<std::size_t>(1, d.train.size() / 2);
}

} // namespace

QString AnalysisView::currentKey() const
{
    const QString path = m_source->currentData().toString();
    const Dataset* d = path.isEmpty() ? (m_bundle ? m_bundle->data.get() : nullptr) : m_data.get();
    // the image counts too: results measured before the dataset dock changed its limits are stale (tester 19)
    return d ? tr("%1 on %2 (%3 training, %4 validation images)")
                   .arg(m_source->currentText(), QString::fromStdString(d->name), formatCount(double(d->train.size())),
                        formatCount(double(d->validation.size())))
             : QString();
}

void AnalysisView::updateSourceNote() const
{
    const QString path = m_source->currentData().toString();
    if (path.isEmpty()) m_note->setText(m_bundle ? tr("measured on the run's dataset") : tr("train a run or open a model file"));
    else m_note->setText(m_data ? tr("measured on %1").arg(QString::fromStdString(m_data->name)) : tr("load a dataset to measure it on"));
    // A training set too small for the validation images asked for gives half of it: said here,
    // where the number was typed (the CLI refuses such a split).
    const Dataset* d = path.isEmpty() ? (m_bundle ? m_bundle->data.get() : nullptr) : m_data.get();
    if (d && d->train.size() > 0) {
        const std::size_t used = validationFor(*d, m_validation->value());
        if (d->validation.size() > 0) // images the run did not train on: the dataset dock's Validation
            m_note->setText(m_note->text() + tr("; validation: %1 of the %2 images held out of training (the dataset dock's Validation)")
                                                 .arg(formatCount(double(used)), formatCount(double(d->validation.size()))));
        else if (used != static_cast<std::size_t>(m_validation->value()))
            m_note->setText(m_note->text() + tr("; <b>its %1 training images leave room for %2 validation images, not %3</b>")
                                                 .arg(d->train.size())
                                                 .arg(used)
                                                 .arg(m_validation->value()));
        // A run trained on every training image it had: the validation images are some of those
        // (tester 19: "FP32 75.8 %" against 73.1 % on test, and a search that "beat" FP32).
        if (d->validation.size() == 0 && path.isEmpty())
            m_note->setText(m_note->text() + tr("; <b>the run trained on them</b> (the dataset dock's Validation holds some out)"));
        // What one image weighs in an accuracy: differences below it are noise (a new user read a
        // "gain" of 1.25 points on 400 images as a result).
        m_note->setText(m_note->text() + tr("; one image is %1 points of accuracy").arg(100.0 / static_cast<double>(used), 0, 'g', 2));
    }
    // Results measured on another model or dataset stay on screen until the next analysis: said.
    if (!m_measured.isEmpty() && m_measured != currentKey())
        m_note->setText(m_note->text() + tr("; <b>the results below are of %1</b>: run again for this one").arg(m_measured.toHtmlEscaped()));
}


AnalysisInputPtr AnalysisView::input(QString* error) const
{
    const QString path = m_source->currentData().toString();
    auto in = std::make_shared<AnalysisInput>();
    in->activationCalibration = m_actCalibration->currentData().toString().toStdString();
    try {
        if (path.isEmpty()) {
            if (!m_bundle) {
                if (error) *error = tr("Nothing to analyse yet: train a run to the end, or open an FP32 model file (File > Open model file).");
                return nullptr;
            }
            const ExportBundlePtr bundle = m_bundle;
            in->name = tr("run #%1").arg(m_runId);
            in->bundle = bundle;
            in->threads = std::max<std::size_t>(1, bundle->config.threads);
            in->makeModel = [bundle] { return buildModel(bundle->fp32); };
            in->data = analysisDataset(*bundle->data, validationFor(*bundle->data, m_validation->value()), std::size_t(m_calibration->value()),
                                       &in->heldOut);
        } else {
            if (!m_data) {
                if (error) *error = tr("Load a dataset first: %1 is measured on the loaded dataset.").arg(QFileInfo(path).fileName());
                return nullptr;
            }
            const ExportedModel m = readModelFile(path.toStdString(), m_data->height(), m_data->width(), m_data->numClasses());
            if (m.quantized) throw ConfigError(path.toStdString() + " is an integer model; the analyses start from an FP32 model");
            Normalization remaining;
            auto data = analysisDataset(*m_data, validationFor(*m_data, m_validation->value()), std::size_t(m_calibration->value()), &in->heldOut,
                                        &remaining);
            // The file's own normalisation, else the statistics analyze computes (of the training
            // images left after the validation ones), not the whole loaded set's.
            data->normalization = m.normalizationKnown ? m.normalization.broadcast(data->channels()) : remaining;
            const Shape shape{data->channels(), data->height(), data->width()};
            const std::size_t classes = data->numClasses();
            in->data = data;
            in->name = QFileInfo(path).fileName();
            in->modelFile = path;
            const std::string file = path.toStdString();
            in->makeModel = [file, shape, classes] { return modelFromFile(file, false)(shape, classes, 1); };
            in->makeModel(); // a model that does not fit the dataset fails here, with the file's name
        }
    } catch (const std::exception& e) {
        if (error) *error = tr("Cannot analyse: %1").arg(coreMessage(e));
        return nullptr;
    }
    m_measured = currentKey(); // what the results below will be of, until the source or the data changes
    updateSourceNote();
    return in;
}

bool AnalysisView::isAnalysing() const { return m_sensitivity->isRunning() || m_search->isRunning(); }

void AnalysisView::setTraining(bool training)
{
    // On a 2-core machine the two would halve each other's speed, without a word (tester 12 #8).
    const QString why = training ? tr("a training run is in progress, and the analysis would share the cores with it. "
                                      "Run it when the training has finished (or stop the training).")
                                 : QString();
    m_sensitivity->setBlocked(why);
    m_search->setBlocked(why);
}

} // namespace quantscope
