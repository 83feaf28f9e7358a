#include "training_panel.h"
#include "training_panel_util.h"

#include "more_options_dialog.h"
#include "plan_table.h"

#include "quant_catalog.h"

#include "nn/model_zoo.h"
#include "quant/precision_plan.h"

#include <QAbstractSpinBox>
#include <QCheckBox>
#include <QCoreApplication>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QDoubleValidator>
#include <QFileInfo>
#include <QGridLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QSignalBlocker>
#include <QSpinBox>
#include <QStandardItemModel>
#include <QThread>
#include <QVBoxLayout>

#include <algorithm>

namespace quantscope {

using namespace panel;


// ---------------------------------------------------------------- TrainingPanel

TrainConfig TrainingPanel::defaultConfig()
{
    TrainConfig c;
    c.model = "seed-cnn";
    c.epochs = 2;
    c.batchSize = 64;
    c.optimizer = "adam";
    c.lr = 1e-3f;
    c.threads = 2;
    c.seed = 1;
    c.precision.strategy = Strategy::Qat;
    c.precision.format = "int8";
    c.precision.granularity = "channel";
    c.precision.rounding = "nearest";
    c.precision.calibration = "minmax";
    c.precision.activationCalibration = defaultActivationCalibration(c.precision.strategy, c.pretrained);
    return c;
}

TrainingPanel::TrainingPanel(QWidget* parent) : QWidget(parent)
{
    m_model = new QComboBox;
    m_model->setObjectName(QStringLiteral("model"));
    for (const auto& p : modelPresets()) {
        m_model->addItem(QString::fromLatin1(p.name), QString::fromLatin1(p.name));
        m_model->setItemData(m_model->count() - 1, QString::fromLatin1(p.description), Qt::ToolTipRole);
    }
    m_model->insertSeparator(m_model->count());
    m_model->addItem(tr("Open model file\u2026"), QString());
    m_model->setItemData(m_model->count() - 1,
                         tr("An FP32 ONNX model (from PyTorch's torch.onnx.export or QuantScope) or a .qsm file: its "
                            "architecture and weights are the start (Ctrl+Shift+O)."),
                         Qt::ToolTipRole);
    m_model->setToolTip(tr("The network to train: a preset, or a model file (ONNX from PyTorch, .qsm) whose weights are "
                           "the start; hover over an entry to see its layers."));
    m_reinit = new QCheckBox(tr("Fresh weights"));
    m_reinit->setObjectName(QStringLiteral("reinitModel"));
    m_reinit->setToolTip(tr("Keep the model file's architecture but initialise its weights afresh from the seed "
                            "(train from scratch)."));
    m_normalize = new QLineEdit;
    m_normalize->setObjectName(QStringLiteral("normalize"));
    m_normalize->setPlaceholderText(tr("dataset statistics"));
    m_normalize->setToolTip(tr("Input normalisation, pixels first scaled to [0, 1]: MEAN,STD, each a number or one per "
                               "channel joined by ':' (0.485:0.456:0.406,0.229:0.224:0.225), or 'none'. Empty: the one "
                               "a model file stores when training starts from its weights, else the train set's "
                               "per-channel mean and standard deviation. Given for a file's weights: a graph that "
                               "normalises its input itself takes it before its own (images normalised in the loader "
                               "too); another than a .qsm or QuantScope's ONNX stores is refused. Stored with exported models."));

    m_strategy = new QComboBox;
    m_strategy->setObjectName(QStringLiteral("strategy"));
    for (const StrategyInfo& s : strategies()) {
        m_strategy->addItem(QString::fromLatin1(s.label), QString::fromLatin1(s.name));
        m_strategy->setItemData(m_strategy->count() - 1, QString::fromLatin1(s.description), Qt::ToolTipRole);
    }
    m_strategy->setToolTip(tr("How low precision enters training: after it (PTQ), during it (QAT), or as the "
                              "arithmetic itself."));
    m_strategyHelp = new QLabel;
    m_strategyHelp->setWordWrap(true);
    m_strategyHelp->setObjectName(QStringLiteral("strategyHelp"));
    QFont small = m_strategyHelp->font();
    small.setPointSizeF(small.pointSizeF() * 0.9);
    m_strategyHelp->setFont(small);
    m_strategyHelp->setStyleSheet(QStringLiteral("color: palette(dark);"));

    m_format = new QComboBox;
    m_format->setObjectName(QStringLiteral("format"));
    for (const FormatChoice& f : formatChoices()) {
        m_format->addItem(f.name, f.name);
        m_format->setItemData(m_format->count() - 1, f.description, Qt::ToolTipRole);
    }
    m_format->setToolTip(tr("The number format weights (and activations) are stored and computed in."));

    m_granularity = choiceCombo(granularityChoices(), tr("How many weights share one quantization scale."));
    m_granularity->setObjectName(QStringLiteral("granularity"));
    m_groupSize = spin(2, 4096, tr("Weights per group for group-wise quantization."));
    m_groupSize->setObjectName(QStringLiteral("groupSize"));
    m_groupSize->setValue(32);

    m_rounding = choiceCombo(roundingChoices(), tr("How a value between two levels is rounded."));
    m_rounding->setObjectName(QStringLiteral("rounding"));
    m_calibration = choiceCombo(calibrationChoices(), tr("How the weights' clipping range (and so the scale) is chosen."));
    m_calibration->setObjectName(QStringLiteral("calibration"));
    // The CLI's --act-calibration, which a loaded plan may also set (tester 13: it was hidden state
    // that changed later runs).
    m_actCalibration = choiceCombo(calibrationChoices(), tr("How the activations' clipping ranges are chosen from the "
                                                            "calibration (PTQ) or training (QAT) batches. Until you pick one it follows the strategy and the "
                                                            "model: min-max for QAT from a fresh model, moving average when the model "
                                                            "starts trained."));
    m_actCalibration->setObjectName(QStringLiteral("actCalibration"));
    m_percentile = new QDoubleSpinBox;
    m_percentile->setRange(50.01, 100.0);
    m_percentile->setDecimals(2);
    m_percentile->setSingleStep(0.01);
    m_percentile->setSuffix(QStringLiteral(" %"));
    m_percentile->setToolTip(tr("The percentile of absolute values that sets the range; the rest are clipped."));

    m_calibImages = spin(1, 100000, tr("How many training images post-training quantization calibrates on."));
    m_calibImages->setSingleStep(100);
    m_bnFreeze = spin(0, 1000, tr("QAT freezes the BatchNorm statistics from this epoch on (0 = never); only "
                                  "models with BatchNorm have any."));
    m_bnFreeze->setSpecialValueText(tr("never"));
    m_bnReestimate = spin(0, 100000, tr("Before each quantized evaluation, QAT re-estimates the BatchNorm statistics on this "
                                        "many training batches run through the quantized model (0 = off; 100 is AIMET's "
                                        "default). Only models with BatchNorm have any."));
    m_bnReestimate->setSpecialValueText(tr("off"));
    m_bnReestimate->setObjectName(QStringLiteral("bnReestimate"));
    m_quantizer = choiceCombo(quantizerChoices(), tr("How QAT chooses its scales: from observed ranges, or learned (LSQ)."));
    m_quantizer->setObjectName(QStringLiteral("quantizer"));
    m_lsqPlus = new QCheckBox(tr("LSQ+ offset"));
    m_lsqPlus->setObjectName(QStringLiteral("lsqPlus"));
    m_lsqPlus->setToolTip(tr("LSQ+ (Bhalgat et al. 2020): also learn the offset (zero point) of uint8 activations."));
    m_narrowRange = new QCheckBox(tr("Narrow weight range"));
    m_narrowRange->setObjectName(QStringLiteral("narrowRange"));
    m_narrowRange->setToolTip(tr("Signed weights use a symmetric grid without its lowest level: int8 [-127, 127] "
                                 "(onnxruntime's and TensorRT's convention)."));
    m_adaroundIters = spin(1, 100000, tr("AdaRound: optimisation steps per layer (more is slower and usually a little "
                                         "better; the paper uses 10,000-20,000)."));
    m_adaroundIters->setObjectName(QStringLiteral("adaroundIters"));
    m_adaroundIters->setSingleStep(100);
    m_cle = new QCheckBox(tr("Cross-layer equalization"));
    m_cle->setObjectName(QStringLiteral("cle"));
    m_cle->setToolTip(tr("PTQ: after folding BatchNorm, rescales consecutive conv/fc pairs through ReLU so their "
                         "per-channel weight ranges match; the FP32 function is unchanged (Nagel et al., ICCV 2019). "
                         "Pairs through ReLU6 are skipped. The Ranges chart shows the ranges before and after."));
    m_more = new QPushButton(tr("More options\u2026"));
    m_more->setObjectName(QStringLiteral("moreOptions"));
    connect(m_more, &QPushButton::clicked, this, &TrainingPanel::showMoreOptions);
    m_biasCorrection = new QCheckBox(tr("Bias correction"));
    m_biasCorrection->setObjectName(QStringLiteral("biasCorrection"));
    m_biasCorrection->setToolTip(tr("PTQ: adds E[W x] - E[W~ x] over the calibration images to each layer's bias, "
                                    "so quantization no longer shifts the mean output (Nagel et al., ICCV 2019)."));

    m_schedule = new ScheduleEditor;
    m_schedule->setObjectName(QStringLiteral("schedule"));

    m_optimizer = choiceCombo(optimizerChoices(), tr("The rule that turns gradients into weight updates."));
    m_optimizer->setObjectName(QStringLiteral("optimizer"));
    m_momentum = new QDoubleSpinBox;
    m_momentum->setRange(0.0, 0.999);
    m_momentum->setDecimals(3);
    m_momentum->setSingleStep(0.1);
    m_momentum->setToolTip(tr("SGD momentum: the share of the previous update carried into the next."));
    m_nesterov = new QCheckBox(tr("Nesterov"));
    m_nesterov->setObjectName(QStringLiteral("nesterov"));
    m_nesterov->setToolTip(tr("SGD with Nesterov momentum (PyTorch's nesterov=True; needs a momentum above 0). CLI: --nesterov."));
    m_amsgrad = new QCheckBox(tr("AMSGrad"));
    m_amsgrad->setObjectName(QStringLiteral("amsgrad"));
    m_amsgrad->setToolTip(tr("Adam with AMSGrad's denominator: the largest second moment seen so far (Reddi et al. 2018, "
                             "PyTorch's amsgrad=True). CLI: --amsgrad."));
    m_weightDecay = new QLineEdit(QStringLiteral("0"));
    m_weightDecay->setObjectName(QStringLiteral("weightDecay"));
    auto* wdValidator = new QDoubleValidator(0.0, 1.0, 8, m_weightDecay);
    wdValidator->setNotation(QDoubleValidator::ScientificNotation);
    wdValidator->setLocale(QLocale::c());
    m_weightDecay->setValidator(wdValidator);
    m_weightDecay->setToolTip(tr("L2 weight decay added to every gradient, as PyTorch's weight_decay for SGD and Adam "
                                 "(e.g. 5e-4); 0 = none. CLI: --weight-decay."));

    m_lr = new QLineEdit;
    m_lr->setObjectName(QStringLiteral("learningRate"));
    auto* lrValidator = new QDoubleValidator(1e-8, 10.0, 8, m_lr);
    lrValidator->setNotation(QDoubleValidator::ScientificNotation);
    lrValidator->setLocale(QLocale::c());
    m_lr->setValidator(lrValidator);
    m_lr->setToolTip(tr("Step size of each update, e.g. 1e-3 for Adam or 0.01 for SGD."));

    m_lrSchedule = choiceCombo(lrScheduleChoices(), tr("How the learning rate moves over the run: constant, or a "
                                                       "cosine decay from the value set to 0 at the last step."));
    m_lrSchedule->setObjectName(QStringLiteral("lrSchedule"));

    m_epochs = spin(0, 1000, tr("Passes over the training set. 0 trains nothing: a model file's own weights are "
                                "evaluated as they are (PTQ: calibrated and quantized); a preset, whose weights are "
                                "random, needs at least 1."));
    m_epochs->setObjectName(QStringLiteral("epochs"));
    m_batch = spin(1, 4096, tr("Images per training step."));
    m_batch->setObjectName(QStringLiteral("batchSize"));
    m_threads = spin(1, 256, tr("Worker threads for training (this machine has %1 cores).")
                                 .arg(QThread::idealThreadCount()));
    m_threads->setObjectName(QStringLiteral("threads"));
    m_seed = spin(0, std::numeric_limits<int>::max(), tr("Seeds initialisation, shuffling and dropout: the same "
                                                          "seed gives the same run."));
    m_seed->setObjectName(QStringLiteral("seed"));
    m_seed->setGroupSeparatorShown(false);

    m_summary = new QPushButton(tr("Summary\u2026"));
    m_summary->setObjectName(QStringLiteral("modelSummaryButton"));
    m_summary->setToolTip(tr("Layers, output shapes, parameters, MACs and sizes of the chosen model (Ctrl+I)."));
    m_train = new QPushButton(tr("Train"));
    m_train->setObjectName(QStringLiteral("trainButton"));
    m_train->setToolTip(tr("Starts a run with these options (Ctrl+R)."));
    m_train->setDefault(true);
    m_pause = new QPushButton(tr("Pause"));
    m_pause->setObjectName(QStringLiteral("pauseButton"));
    m_pause->setToolTip(tr("Pauses the run after the current batch; press again to resume."));
    m_stop = new QPushButton(tr("Stop"));
    m_stop->setObjectName(QStringLiteral("stopButton"));
    m_stop->setToolTip(tr("Stops the run after the current batch and keeps what it measured (Esc)."));

    // Layout: three groups in a column; each group is a grid of label/field pairs, two pairs
    // per row where the fields are short, so the whole panel fits a 1000-pixel-high screen.
    auto grid = [] {
        auto* g = new QGridLayout;
        g->setColumnStretch(1, 3);
        g->setColumnStretch(3, 2);
        g->setHorizontalSpacing(8);
        g->setVerticalSpacing(4);
        return g;
    };
    auto put = [this](QGridLayout* g, int r, int c, const QString& text, QWidget* w, int span = 1) {
        auto* l = new QLabel(text);
        l->setToolTip(w->toolTip());
        l->setBuddy(w);
        g->addWidget(l, r, c);
        g->addWidget(w, r, c + 1, 1, span);
        m_labels.insert(w, l);
    };

    auto* modelBox = new QGroupBox(tr("Model and strategy"));
    auto* mg = grid();
    put(mg, 0, 0, tr("&Model"), m_model, 2);
    mg->addWidget(m_summary, 0, 3);
    put(mg, 1, 0, tr("&Normalize"), m_normalize, 2);
    mg->addWidget(m_reinit, 1, 3);
    put(mg, 2, 0, tr("&Strategy"), m_strategy, 3);
    mg->addWidget(m_strategyHelp, 3, 0, 1, 4);
    modelBox->setLayout(mg);

    auto* precBox = new QGroupBox(tr("Precision"));
    auto* pg = grid();
    put(pg, 0, 0, tr("Form&at"), m_format, 3);
    put(pg, 1, 0, tr("&Granularity"), m_granularity);
    put(pg, 1, 2, tr("Group"), m_groupSize);
    put(pg, 2, 0, tr("Roun&ding"), m_rounding, 3);
    put(pg, 3, 0, tr("&Calibration"), m_calibration);
    put(pg, 3, 2, tr("Percentile"), m_percentile);
    put(pg, 4, 0, tr("Act. cal&ibration"), m_actCalibration);
    put(pg, 5, 0, tr("Calib. images"), m_calibImages);
    put(pg, 5, 2, tr("BN freeze"), m_bnFreeze);
    put(pg, 6, 0, tr("Sched&ule"), m_schedule, 3);
    // QAT's quantizer (LSQ), the integer grids, then PTQ's refinements: one row each.
    put(pg, 7, 0, tr("&Quantizer"), m_quantizer);
    pg->addWidget(m_lsqPlus, 7, 2, 1, 2);
    put(pg, 8, 0, tr("AdaRound iters"), m_adaroundIters);
    pg->addWidget(m_narrowRange, 8, 2, 1, 2);
    {
        auto* boxes = new QHBoxLayout;
        boxes->addWidget(m_cle);
        boxes->addWidget(m_biasCorrection);
        boxes->addStretch();
        pg->addLayout(boxes, 9, 0, 1, 4);
    }
    put(pg, 10, 0, tr("BN re-estimate"), m_bnReestimate);
    pg->addWidget(m_more, 10, 2, 1, 2);
    {
        // The label cell holds the label and, under it, the "+ phase" button.
        QLabel* l = m_labels.value(m_schedule);
        pg->removeWidget(l);
        auto* cell = new QVBoxLayout;
        cell->setSpacing(2);
        cell->addWidget(l);
        cell->addWidget(m_schedule->addButton());
        cell->addStretch();
        pg->addLayout(cell, 6, 0);
    }
    precBox->setLayout(pg);

    m_planBox = new QGroupBox(tr("Per-layer plan"));
    m_planBox->setObjectName(QStringLiteral("planBox"));
    m_planBox->setToolTip(tr("Each Conv2d/Linear layer's weight format, granularity and activation format; grey cells follow "
                             "the options above. Sizes are the stored model's."));
    m_planTable = new PlanTable;
    auto* planLayout = new QVBoxLayout;
    planLayout->addWidget(m_planTable);
    m_planBox->setLayout(planLayout);
    m_baseTips.insert(m_planBox, m_planBox->toolTip());

    auto* optBox = new QGroupBox(tr("Optimisation"));
    auto* og = grid();
    put(og, 0, 0, tr("&Optimizer"), m_optimizer);
    put(og, 0, 2, tr("Momentum"), m_momentum);
    put(og, 1, 0, tr("&Learning rate"), m_lr);
    put(og, 1, 2, tr("LR sc&hedule"), m_lrSchedule);
    put(og, 2, 0, tr("&Epochs"), m_epochs);
    put(og, 2, 2, tr("&Batch size"), m_batch);
    put(og, 3, 0, tr("&Threads"), m_threads);
    put(og, 3, 2, tr("S&eed"), m_seed);
    put(og, 4, 0, tr("Weight decay"), m_weightDecay);
    auto* optFlags = new QHBoxLayout;
    optFlags->addWidget(m_nesterov);
    optFlags->addWidget(m_amsgrad);
    optFlags->addStretch(1);
    og->addLayout(optFlags, 4, 2, 1, 2);
    optBox->setLayout(og);

    auto* buttons = new QHBoxLayout;
    buttons->addWidget(m_train, 2);
    buttons->addWidget(m_pause, 1);
    buttons->addWidget(m_stop, 1);

    auto* v = new QVBoxLayout(this);
    v->addWidget(modelBox);
    v->addWidget(precBox);
    v->addWidget(optBox);
    v->addLayout(buttons);
    v->addWidget(m_planBox); // under the buttons, so Train stays in view
    v->addStretch(1);

    for (QWidget* w : std::initializer_list<QWidget*>{m_format, m_granularity, m_groupSize, m_rounding, m_calibration, m_actCalibration,
                                                      m_percentile, m_calibImages, m_bnFreeze, m_bnReestimate, m_schedule, m_momentum,
                                                      m_epochs, m_quantizer, m_lsqPlus, m_narrowRange, m_adaroundIters, m_cle,
                                                      m_biasCorrection, m_nesterov, m_amsgrad})
        m_baseTips.insert(w, w->toolTip());

    // Widgets -> config, under the guard.
    auto changed = [this] {
        if (m_initializing) return;
        readWidgets();
        followDefaultActivationCalibration();
        if (const FormatChoice* f = formatChoice(qs(m_cfg.precision.format)); f && f->integer)
            m_lastIntegerFormat = f->name;
        updateApplicability();
        emit configChanged();
    };
    // A change of Act. calibration not made here (setConfig, followDefaultActivationCalibration) is
    // the user's pick: connected before `changed`, which would otherwise put the default back.
    connect(m_actCalibration, &QComboBox::currentIndexChanged, this, [this] {
        if (!m_initializing) m_actCalibrationChosen = true;
    });
    for (QComboBox* c : {m_model, m_strategy, m_format, m_granularity, m_rounding, m_calibration, m_actCalibration, m_optimizer, m_lrSchedule,
                          m_quantizer})
        connect(c, &QComboBox::currentIndexChanged, this, changed);
    for (QSpinBox* s : {m_groupSize, m_calibImages, m_bnFreeze, m_bnReestimate, m_epochs, m_batch, m_threads, m_seed, m_adaroundIters})
        connect(s, &QSpinBox::valueChanged, this, changed);
    for (QCheckBox* b : {m_cle, m_biasCorrection, m_nesterov, m_amsgrad}) connect(b, &QCheckBox::toggled, this, changed);
    connect(m_weightDecay, &QLineEdit::textChanged, this, changed);
    connect(m_percentile, &QDoubleSpinBox::valueChanged, this, changed);
    connect(m_momentum, &QDoubleSpinBox::valueChanged, this, changed);
    connect(m_lr, &QLineEdit::textChanged, this, changed);
    connect(m_reinit, &QCheckBox::toggled, this, changed);
    connect(m_lsqPlus, &QCheckBox::toggled, this, changed);
    connect(m_narrowRange, &QCheckBox::toggled, this, changed);
    connect(m_model, &QComboBox::activated, this, [this](int index) {
        if (m_model->itemData(index).toString().isEmpty()) { // "Open model file..."
            m_model->setCurrentIndex(m_lastModelIndex);
            emit openModelFileRequested();
        }
    });
    connect(m_schedule, &ScheduleEditor::changed, this, changed);
    connect(m_planTable, &PlanTable::loadRequested, this, &TrainingPanel::loadPlanInteractive);
    connect(m_planTable, &PlanTable::saveRequested, this, &TrainingPanel::savePlanInteractive);
    connect(m_planTable, &PlanTable::planEdited, this, [this] {
        if (m_initializing) return;
        m_cfg.precision.layers = m_planTable->plan().layers;
        emit configChanged();
    });

    for (QWidget* w : findChildren<QWidget*>()) // options change by click or keys, not by a passing wheel
        if (qobject_cast<QComboBox*>(w) || qobject_cast<QAbstractSpinBox*>(w)) {
            w->setFocusPolicy(Qt::StrongFocus);
            w->installEventFilter(this);
        }
    setConfig(defaultConfig());
    m_actCalibrationChosen = false; // the default config's: it follows the strategy and the model
}

void TrainingPanel::followDefaultActivationCalibration()
{
    if (m_actCalibrationChosen) return;
    const std::string want = defaultActivationCalibration(m_cfg.precision.strategy, m_cfg.pretrained);
    if (m_cfg.precision.activationCalibration == want) return;
    m_initializing = true;
    selectData(m_actCalibration, qs(want));
    m_initializing = false;
    m_cfg.precision.activationCalibration = want;
}

bool TrainingPanel::eventFilter(QObject* watched, QEvent* event)
{
    auto* w = qobject_cast<QWidget*>(watched);
    if (event->type() == QEvent::Wheel && w && !w->hasFocus() && w->parentWidget()) {
        QCoreApplication::sendEvent(w->parentWidget(), event); // on up to the dock's scroll area
        return true;
    }
    return QWidget::eventFilter(watched, event);
}

void TrainingPanel::addModelFile(const QString& path, const QString& label, const QString& tip, const QString& normalization)
{
    int i = m_model->findData(path);
    if (i < 0) {
        i = m_model->count() - 2; // before the separator and "Open model file..."
        m_model->insertItem(i, label, path);
        m_model->setItemData(i, true, kFileRole);
    }
    m_model->setItemData(i, tip, Qt::ToolTipRole);
    m_model->setItemData(i, normalization, kNormRole);
    m_model->setCurrentIndex(i);
    updateApplicability(); // the Normalize field's placeholder
}

QString TrainingPanel::normalizeText() const { return m_normalize->text().trimmed(); }
QString TrainingPanel::normalizePlaceholder() const { return m_normalize->placeholderText(); }

void TrainingPanel::setConfig(const TrainConfig& cfg)
{
    m_actCalibrationChosen = true; // a run's or a saved config keeps its calibration
    m_initializing = true;
    m_cfg = cfg;
    const PrecisionConfig& p = cfg.precision;
    if (!cfg.modelFile.empty() && m_model->findData(qs(cfg.modelFile)) < 0) {
        const QString path = qs(cfg.modelFile);
        addModelFile(path, QFileInfo(path).fileName(), path);
    }
    selectData(m_model, qs(cfg.modelFile.empty() ? cfg.model : cfg.modelFile));
    m_reinit->setChecked(cfg.reinitModel);
    selectData(m_strategy, strategyName(p.strategy));
    if (m_format->findData(qs(p.format)) < 0) m_format->addItem(qs(p.format), qs(p.format));
    selectData(m_format, qs(p.format));
    const QString g = qs(p.granularity);
    if (g.startsWith(QLatin1String("group"))) {
        selectData(m_granularity, QStringLiteral("group"));
        const int n = g.section(QLatin1Char(':'), 1, 1).toInt();
        if (n > 0) m_groupSize->setValue(n);
    } else {
        selectData(m_granularity, g);
    }
    selectData(m_rounding, qs(p.rounding));
    selectData(m_calibration, qs(p.calibration));
    selectData(m_actCalibration, qs(p.activationCalibration));
    m_percentile->setValue(double(p.percentile));
    m_calibImages->setValue(static_cast<int>(p.calibImages));
    m_bnFreeze->setValue(static_cast<int>(p.bnFreezeEpoch));
    m_bnReestimate->setValue(static_cast<int>(std::min<std::size_t>(p.bnReestimateBatches, 100000)));
    selectData(m_quantizer, qs(p.quantizer));
    m_lsqPlus->setChecked(p.lsqPlus);
    m_narrowRange->setChecked(p.narrowRange);
    m_adaroundIters->setValue(static_cast<int>(std::min<std::size_t>(p.adaroundIters, 100000)));
    m_cle->setChecked(p.crossLayerEqualization);
    m_biasCorrection->setChecked(p.biasCorrection);
    m_schedule->setSchedule(qs(p.schedule));
    m_lsqInit = p.lsqInit;
    m_firstLast8Bit = p.firstLast8Bit;
    m_cleRelu6ToRelu = p.cleRelu6ToRelu;
    m_blendSteps = p.blendSteps;
    m_maxSkippedSteps = cfg.maxSkippedSteps;
    m_quantEval = cfg.quantEval;
    selectData(m_optimizer, qs(cfg.optimizer));
    m_momentum->setValue(double(cfg.momentum));
    m_nesterov->setChecked(cfg.nesterov);
    m_amsgrad->setChecked(cfg.amsgrad);
    m_weightDecay->setText(QString::number(double(cfg.weightDecay), 'g', 4));
    m_lr->setText(QString::number(double(cfg.lr), 'g', 4));
    selectData(m_lrSchedule, qs(cfg.lrSchedule));
    m_epochs->setValue(static_cast<int>(cfg.epochs));
    m_batch->setValue(static_cast<int>(cfg.batchSize));
    m_threads->setValue(static_cast<int>(cfg.threads));
    m_seed->setValue(static_cast<int>(std::min<std::uint64_t>(cfg.seed, std::numeric_limits<int>::max())));
    if (const FormatChoice* f = formatChoice(qs(p.format)); f && f->integer) m_lastIntegerFormat = f->name;
    m_initializing = false;
    readWidgets();
    updateApplicability();
}

void TrainingPanel::readWidgets()
{
    TrainConfig& c = m_cfg;
    PrecisionConfig& p = c.precision;
    const QString modelData = m_model->currentData().toString();
    if (m_model->currentData(kFileRole).toBool()) {
        c.model = QFileInfo(modelData).completeBaseName().toStdString();
        c.modelFile = modelData.toStdString();
        c.reinitModel = m_reinit->isChecked();
        c.pretrained = !c.reinitModel;
    } else {
        c.model = modelData.toStdString();
        c.modelFile.clear();
        c.reinitModel = false;
        c.pretrained = false;
        c.modelFactory = nullptr;
    }
    if (!modelData.isEmpty()) m_lastModelIndex = m_model->currentIndex();
    try {
        p.strategy = parseStrategy(m_strategy->currentData().toString().toStdString());
    } catch (const std::exception&) {
        p.strategy = Strategy::Fp32;
    }
    p.format = m_format->currentData().toString().toStdString();
    const QString g = m_granularity->currentData().toString();
    p.granularity = (g == QLatin1String("group") ? QStringLiteral("group:%1").arg(m_groupSize->value()) : g).toStdString();
    p.rounding = m_rounding->currentData().toString().toStdString();
    p.calibration = m_calibration->currentData().toString().toStdString();
    p.activationCalibration = m_actCalibration->currentData().toString().toStdString();
    p.percentile = static_cast<float>(m_percentile->value());
    p.calibImages = static_cast<std::size_t>(m_calibImages->value());
    p.bnFreezeEpoch = static_cast<std::size_t>(m_bnFreeze->value());
    p.bnReestimateBatches = static_cast<std::size_t>(m_bnReestimate->value());
    // Options that do not apply are not passed on (the greyed widgets keep the user's choice).
    const bool learned = strategyInfo(p.strategy).uses("quantizer");
    p.quantizer = learned ? m_quantizer->currentData().toString().toStdString() : std::string("observer");
    p.lsqPlus = learned && p.quantizer == "lsq" && m_lsqPlus->isChecked();
    p.narrowRange = (p.strategy == Strategy::Ptq || p.strategy == Strategy::Qat || p.strategy == Strategy::Progressive) &&
                    m_narrowRange->isChecked();
    p.adaroundIters = static_cast<std::size_t>(m_adaroundIters->value());
    // The PTQ methods only travel with PTQ (validate() refuses them elsewhere).
    const bool ptq = p.strategy == Strategy::Ptq;
    p.crossLayerEqualization = ptq && m_cle->isChecked();
    p.biasCorrection = ptq && m_biasCorrection->isChecked();
    if (!ptq && p.rounding == "adaround") p.rounding = "nearest";
    const StrategyInfo& info = strategyInfo(p.strategy);
    p.lsqInit = m_lsqInit;
    p.firstLast8Bit = info.uses("first-last-8bit") && m_firstLast8Bit;
    p.cleRelu6ToRelu = p.crossLayerEqualization && m_cleRelu6ToRelu;
    p.blendSteps = m_blendSteps;
    c.maxSkippedSteps = m_maxSkippedSteps;
    c.quantEval = m_quantEval;
    m_more->setToolTip(tr("Options the dock has no room for (the CLI flags of the same names).\n%1").arg(moreOptionsSummary(c)));
    p.schedule = m_schedule->schedule().toStdString();
    c.optimizer = m_optimizer->currentData().toString().toStdString();
    c.momentum = static_cast<float>(m_momentum->value());
    c.nesterov = c.optimizer == "sgd" && c.momentum > 0.0f && m_nesterov->isChecked();
    c.amsgrad = c.optimizer == "adam" && m_amsgrad->isChecked();
    bool ok = false;
    const double wd = QLocale::c().toDouble(m_weightDecay->text().trimmed(), &ok);
    c.weightDecay = ok && wd >= 0 ? static_cast<float>(wd) : 0.0f;
    const double lr = QLocale::c().toDouble(m_lr->text().trimmed(), &ok);
    if (ok && lr > 0) c.lr = static_cast<float>(lr);
    c.lrSchedule = m_lrSchedule->currentData().toString().toStdString();
    c.epochs = p.strategy == Strategy::Progressive ? std::max<std::size_t>(1, m_schedule->totalEpochs())
                                                     : static_cast<std::size_t>(m_epochs->value());
    c.batchSize = static_cast<std::size_t>(m_batch->value());
    c.threads = static_cast<std::size_t>(m_threads->value());
    c.seed = static_cast<std::uint64_t>(m_seed->value());
}

void TrainingPanel::setPlanModel(std::shared_ptr<const Model> model, const QString& unavailable)
{
    // Entries for layers the table cannot show came from another model's plan: they would fail
    // the next run on a layer the table does not list, or (a model whose layers cannot be listed
    // at all) be applied unseen. They go, and the table says which.
    QStringList dropped;
    if (model || !unavailable.isEmpty()) {
        const std::vector<std::string> names = model ? planLayerNames(*model) : std::vector<std::string>{};
        std::vector<LayerOverride>& layers = m_cfg.precision.layers;
        for (auto it = layers.begin(); it != layers.end();) {
            if (std::find(names.begin(), names.end(), it->layer) != names.end()) {
                ++it;
                continue;
            }
            dropped << QString::fromStdString(it->layer);
            it = layers.erase(it);
        }
    }
    const bool listed = model != nullptr;
    m_planModelHasBatchNorm = false;
    for (std::size_t i = 0; model && i < model->size(); ++i)
        m_planModelHasBatchNorm = m_planModelHasBatchNorm || model->layer(i).kind() == LayerKind::BatchNorm2d;
    m_planTable->setModel(std::move(model), unavailable);
    if (!dropped.isEmpty()) {
        m_planTable->setPlan(m_cfg.precision.storedPlan());
        m_planTable->setNote(tr("Dropped %1 layer %2 %3: %4.")
                                 .arg(dropped.size())
                                 .arg(dropped.size() == 1 ? tr("entry") : tr("entries"))
                                 .arg(listed ? tr("this model does not have") : tr("the table cannot show for this model"))
                                 .arg(dropped.mid(0, 6).join(QStringLiteral(", ")) + (dropped.size() > 6 ? QStringLiteral(", ...") : QString())),
                             false);
        emit configChanged();
    }
}

void TrainingPanel::setRunning(bool running)
{
    m_running = running;
    for (QWidget* w : std::initializer_list<QWidget*>{m_model, m_normalize, m_strategy, m_optimizer, m_lr, m_lrSchedule, m_batch,
                                                      m_threads, m_seed, m_weightDecay, m_more})
        w->setEnabled(!running);
    if (QLabel* l = m_labels.value(m_model)) l->setEnabled(!running);
    updateApplicability();
}

} // namespace quantscope

namespace quantscope {

void TrainingPanel::showMoreOptions()
{
    if (m_running) return;
    readWidgets();
    TrainConfig shown = m_cfg; // the user's choices, also those the strategy does not pass on
    shown.precision.firstLast8Bit = m_firstLast8Bit;
    shown.precision.cleRelu6ToRelu = m_cleRelu6ToRelu;
    MoreOptionsDialog dialog(shown, this);
    if (dialog.exec() != QDialog::Accepted) return;
    TrainConfig chosen = m_cfg;
    dialog.apply(chosen);
    m_lsqInit = chosen.precision.lsqInit;
    m_firstLast8Bit = chosen.precision.firstLast8Bit;
    m_cleRelu6ToRelu = chosen.precision.cleRelu6ToRelu;
    m_blendSteps = chosen.precision.blendSteps;
    m_maxSkippedSteps = chosen.maxSkippedSteps;
    m_quantEval = chosen.quantEval;
    readWidgets();
    emit configChanged();
}

} // namespace quantscope
