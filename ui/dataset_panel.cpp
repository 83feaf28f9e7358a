#include "dataset_panel.h"

#include "format_text.h"

#include "data/readers.h"

#include <QDialog>
#include <QDialogButtonBox>
#include <QDoubleSpinBox>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QPainter>
#include <QPushButton>
#include <QRegularExpressionValidator>
#include <QSpinBox>
#include <QVBoxLayout>

#include <cstring>

namespace quantscope {

namespace {

constexpr int kImage = 48;  // 28 px shown at about 1.7x, smoothed
constexpr int kCellW = 70;
constexpr int kCellH = kImage + 17;
constexpr int kMaxRows = 2;
constexpr int kMaxSamples = 30;

// Four rows (train images/labels, test images/labels), each a path with a Browse button.
class DatasetFilesDialog : public QDialog {
public:
    DatasetFilesDialog(const DatasetFiles& current, QWidget* parent) : QDialog(parent)
    {
        setWindowTitle(tr("Pick dataset files"));
        auto* form = new QFormLayout;
        const struct {
            QString label, tip;
            std::string value;
        } rows[] = {
            {tr("Training images"), tr("IDX image file (idx3), e.g. train-images-idx3-ubyte.gz."), current.trainImages},
            {tr("Training labels"), tr("IDX label file (idx1), e.g. train-labels-idx1-ubyte.gz."), current.trainLabels},
            {tr("Test images"), tr("IDX image file (idx3), e.g. t10k-images-idx3-ubyte.gz."), current.testImages},
            {tr("Test labels"), tr("IDX label file (idx1), e.g. t10k-labels-idx1-ubyte.gz."), current.testLabels},
        };
        for (int i = 0; i < 4; ++i) {
            auto* edit = new QLineEdit(QString::fromStdString(rows[i].value));
            edit->setToolTip(rows[i].tip);
            edit->setMinimumWidth(380);
            auto* browse = new QPushButton(tr("Browse\u2026"));
            connect(browse, &QPushButton::clicked, this, [this, edit, title = rows[i].label] {
                const QString f = QFileDialog::getOpenFileName(this, title, QFileInfo(edit->text()).path(),
                                                               tr("IDX files (*ubyte *ubyte.gz *.idx* *.gz);;All files (*)"));
                if (!f.isEmpty()) edit->setText(f);
            });
            auto* row = new QHBoxLayout;
            row->addWidget(edit, 1);
            row->addWidget(browse);
            form->addRow(rows[i].label, row);
            m_edits[i] = edit;
        }
        auto* buttons = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel);
        buttons->button(QDialogButtonBox::Ok)->setText(tr("Load"));
        connect(buttons, &QDialogButtonBox::accepted, this, &QDialog::accept);
        connect(buttons, &QDialogButtonBox::rejected, this, &QDialog::reject);
        auto* v = new QVBoxLayout(this);
        v->addLayout(form);
        v->addWidget(buttons);
    }

    DatasetFiles files() const
    {
        return {m_edits[0]->text().toStdString(), m_edits[1]->text().toStdString(), m_edits[2]->text().toStdString(),
                m_edits[3]->text().toStdString()};
    }

private:
    QLineEdit* m_edits[4] = {};
};

// Image `idx` of `set` as a QImage: grayscale, or RGB interleaved from the planar (C, H, W) bytes.
QImage thumbnail(const LabeledImages& set, std::size_t idx)
{
    const int W = static_cast<int>(set.width), H = static_cast<int>(set.height);
    const std::uint8_t* src = set.pixels.data() + idx * set.imageBytes();
    const std::size_t plane = set.height * set.width;
    if (set.channels == 3) {
        QImage img(W, H, QImage::Format_RGB888);
        for (int y = 0; y < H; ++y) {
            uchar* line = img.scanLine(y);
            for (int x = 0; x < W; ++x)
                for (int c = 0; c < 3; ++c) line[3 * x + c] = src[c * plane + static_cast<std::size_t>(y * W + x)];
        }
        return img;
    }
    QImage img(W, H, QImage::Format_Grayscale8);
    for (int y = 0; y < H; ++y) std::memcpy(img.scanLine(y), src + static_cast<std::size_t>(y * W), set.width);
    return img;
}

QSpinBox* limitSpin(const QString& tip)
{
    auto* s = new QSpinBox;
    s->setRange(0, 10'000'000);
    s->setSingleStep(1000);
    s->setSpecialValueText(QObject::tr("all"));
    s->setGroupSeparatorShown(true);
    s->setToolTip(tip);
    s->setKeyboardTracking(false);
    return s;
}

} // namespace

DatasetPanel::DatasetPanel(QWidget* parent) : QWidget(parent)
{
    m_name = new QLabel(tr("No dataset"));
    QFont f = m_name->font();
    f.setBold(true);
    f.setPointSizeF(f.pointSizeF() * 1.15);
    m_name->setFont(f);
    m_name->setObjectName(QStringLiteral("datasetName"));
    m_counts = new QLabel;
    m_counts->setObjectName(QStringLiteral("datasetCounts"));
    m_shape = new QLabel;
    m_shape->setObjectName(QStringLiteral("datasetShape"));
    m_classes = new QLabel;
    m_classes->setWordWrap(true);
    m_classes->setObjectName(QStringLiteral("datasetClasses"));
    m_error = new QLabel;
    m_error->setObjectName(QStringLiteral("datasetError"));
    m_error->setWordWrap(true);
    m_error->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_error->setStyleSheet(QStringLiteral("QLabel { color: #a40000; background: #fdecea; border: 1px solid #e0a0a0; "
                                          "border-radius: 3px; padding: 4px; }"));
    m_error->hide();

    m_openFolder = new QPushButton(tr("Open folder\u2026"));
    m_openFolder->setObjectName(QStringLiteral("openFolder"));
    m_openCsv = new QPushButton(tr("Open CSV…"));
    m_openCsv->setObjectName(QStringLiteral("openCsv"));
    connect(m_openCsv, &QPushButton::clicked, this, &DatasetPanel::chooseCsv);
    m_pickFiles = new QPushButton(tr("Pick files\u2026"));
    m_pickFiles->setToolTip(tr("Chooses the four IDX files (training/test images and labels) one by one."));
    connect(m_openFolder, &QPushButton::clicked, this, &DatasetPanel::chooseFolder);
    connect(m_pickFiles, &QPushButton::clicked, this, &DatasetPanel::chooseFiles);

    m_trainLimit = limitSpin(tr("Trains on a fixed random subset of this many training images (all: the whole "
                                "set); smaller is faster."));
    m_trainLimit->setObjectName(QStringLiteral("trainLimit"));
    m_testLimit = limitSpin(tr("Evaluates on the first this-many test images after each epoch (all: the whole "
                               "test set)."));
    m_testLimit->setObjectName(QStringLiteral("testLimit"));
    m_validation = limitSpin(tr("Holds this many of the training images (of those Use training keeps) out as a validation set, "
                                "measured after each epoch "
                                "(the Accuracy chart's validation line); they are not trained on. None: no validation set. "
                                "As quantscope-cli train --validation N with --train-limit."));
    m_validation->setObjectName(QStringLiteral("validationImages"));
    m_validation->setSpecialValueText(tr("none"));
    m_validation->setSingleStep(500);
    connect(m_validation, &QSpinBox::valueChanged, this, &DatasetPanel::limitsChanged);
    connect(m_trainLimit, &QSpinBox::valueChanged, this, &DatasetPanel::limitsChanged);
    connect(m_testLimit, &QSpinBox::valueChanged, this, &DatasetPanel::limitsChanged);

    m_resize = new QLineEdit;
    m_resize->setObjectName(QStringLiteral("resize"));
    m_resize->setPlaceholderText(tr("as stored"));
    m_resize->setToolTip(tr("Resizes every image to HxW (e.g. 32x32); needed when image files differ in size. "
                            "Empty: the size as stored."));
    m_imageShape = new QLineEdit;
    m_imageShape->setObjectName(QStringLiteral("imageShape"));
    m_imageShape->setPlaceholderText(tr("from the columns"));
    m_imageShape->setToolTip(tr("CSV only: how a row's pixels form an image, CxHxW (e.g. 3x32x32, channel-planar). "
                                "Empty: NxN grayscale or 3xNxN colour from the column count."));
    m_resize->setValidator(new QRegularExpressionValidator(QRegularExpression(QStringLiteral("(\\d{1,4}x\\d{1,4})?")), m_resize));
    m_imageShape->setValidator(
        new QRegularExpressionValidator(QRegularExpression(QStringLiteral("([13]x\\d{1,4}x\\d{1,4})?")), m_imageShape));
    connect(m_resize, &QLineEdit::editingFinished, this, &DatasetPanel::limitsChanged);
    connect(m_imageShape, &QLineEdit::editingFinished, this, &DatasetPanel::limitsChanged);

    m_testFraction = new QDoubleSpinBox;
    m_testFraction->setObjectName(QStringLiteral("testFraction"));
    m_testFraction->setRange(0.1, 99.9); // --test-fraction's [0.001, 0.999]
    m_testFraction->setDecimals(1);
    m_testFraction->setSuffix(QStringLiteral("%"));
    m_testFraction->setValue(20.0);
    m_testFraction->setKeyboardTracking(false);
    m_testFraction->setToolTip(tr("CSV file, or class folders without train/ and test/: the share of each class held out as "
                                  "the test set (the rest is trained on). Other layouts give their own test set. As "
                                  "quantscope-cli train --test-fraction F."));
    // A reload only where the share is used (or when nothing loaded yet: the last attempt is retried).
    connect(m_testFraction, &QDoubleSpinBox::valueChanged, this, [this] {
        updateSplitTips();
        if (!m_data || m_data->splitByFraction) emit limitsChanged();
    });

    m_grid = new ThumbnailGrid;
    m_grid->setObjectName(QStringLiteral("thumbnails"));

    auto* buttons = new QHBoxLayout;
    buttons->addWidget(m_openFolder);
    buttons->addWidget(m_openCsv);
    buttons->addWidget(m_pickFiles);
    buttons->addStretch();

    auto* limits = new QGridLayout;
    auto* trainLabel = new QLabel(tr("Use training"));
    trainLabel->setToolTip(m_trainLimit->toolTip());
    auto* testLabel = new QLabel(tr("test"));
    testLabel->setToolTip(m_testLimit->toolTip());
    limits->addWidget(trainLabel, 0, 0);
    limits->addWidget(m_trainLimit, 0, 1);
    limits->addWidget(testLabel, 0, 2);
    limits->addWidget(m_testLimit, 0, 3);
    limits->addWidget(new QLabel(tr("images")), 0, 4);
    auto* resizeLabel = new QLabel(tr("Resize"));
    resizeLabel->setToolTip(m_resize->toolTip());
    auto* shapeLabel = new QLabel(tr("CSV shape"));
    shapeLabel->setToolTip(m_imageShape->toolTip());
    auto* validationLabel = new QLabel(tr("Validation"));
    validationLabel->setToolTip(m_validation->toolTip());
    // The test fraction beside it, not on a row of its own: the dock's height is the Training
    // dock's loss on a 720-pixel screen (its Train button went out of reach).
    auto* fractionLabel = new QLabel(tr("Test fraction"));
    fractionLabel->setToolTip(m_testFraction->toolTip());
    limits->addWidget(validationLabel, 1, 0);
    limits->addWidget(m_validation, 1, 1);
    limits->addWidget(fractionLabel, 1, 2);
    limits->addWidget(m_testFraction, 1, 3);
    limits->addWidget(resizeLabel, 2, 0);
    limits->addWidget(m_resize, 2, 1);
    limits->addWidget(shapeLabel, 2, 2);
    limits->addWidget(m_imageShape, 2, 3);
    limits->setColumnStretch(1, 1);
    limits->setColumnStretch(3, 1);

    auto* v = new QVBoxLayout(this);
    v->addWidget(m_name);
    v->addWidget(m_counts);
    v->addWidget(m_shape);
    v->addWidget(m_classes);
    v->addWidget(m_error);
    v->addLayout(buttons);
    v->addLayout(limits);
    v->addWidget(m_grid);
    v->addStretch(1);
    updateSplitTips();
}

void DatasetPanel::updateSplitTips()
{
    const QString share = QString::fromStdString(percentText(testFraction()));
    m_openFolder->setToolTip(tr("Loads a dataset folder; its layout is detected: MNIST-layout IDX files, CIFAR-10/100 "
                                "binary batches, a folder with train.csv, or class folders of PNG/JPEG images "
                                "(train/<class>/ and test/<class>/, or <class>/ with %1 of each class held out as the "
                                "test set: the Test fraction field). Ctrl+O")
                                 .arg(share));
    m_openCsv->setToolTip(tr("Loads one CSV file: a header row, the label, then the pixels (0-255). %1 of each "
                             "class is held out as the test set (the Test fraction field).")
                              .arg(share));
}

double DatasetPanel::testFraction() const { return m_testFraction->value() / 100.0; }

void DatasetPanel::setTestFraction(double fraction)
{
    {
        const QSignalBlocker b(m_testFraction);
        m_testFraction->setValue(fraction * 100.0);
    }
    updateSplitTips();
}

void DatasetPanel::setBusy(bool busy)
{
    m_openFolder->setEnabled(!busy);
    m_openCsv->setEnabled(!busy);
    m_pickFiles->setEnabled(!busy);
    m_resize->setEnabled(!busy);
    m_imageShape->setEnabled(!busy);
    m_testFraction->setEnabled(!busy);
    m_trainLimit->setEnabled(!busy);
    m_testLimit->setEnabled(!busy);
    m_validation->setEnabled(!busy);
}

std::size_t DatasetPanel::validationImages() const { return static_cast<std::size_t>(m_validation->value()); }

void DatasetPanel::setValidationImages(std::size_t n)
{
    const QSignalBlocker b(m_validation);
    m_validation->setValue(static_cast<int>(std::min<std::size_t>(n, 10'000'000)));
}

std::size_t DatasetPanel::trainLimit() const { return static_cast<std::size_t>(m_trainLimit->value()); }
std::size_t DatasetPanel::testLimit() const { return static_cast<std::size_t>(m_testLimit->value()); }

void DatasetPanel::setLimits(std::size_t train, std::size_t test)
{
    const QSignalBlocker b1(m_trainLimit), b2(m_testLimit);
    m_trainLimit->setValue(static_cast<int>(std::min<std::size_t>(train, 10'000'000)));
    m_testLimit->setValue(static_cast<int>(std::min<std::size_t>(test, 10'000'000)));
}

QString DatasetPanel::resizeText() const { return m_resize->text().trimmed(); }
QString DatasetPanel::imageShapeText() const { return m_imageShape->text().trimmed(); }
void DatasetPanel::setResizeText(const QString& text)
{
    const QSignalBlocker b(m_resize);
    m_resize->setText(text);
}

QString DatasetPanel::errorText() const { return m_error->isHidden() ? QString() : m_error->text(); }

void DatasetPanel::setLoading(const QString& what)
{
    m_error->hide();
    m_error->clear();
    m_name->setText(tr("Loading %1\u2026").arg(what));
}

void DatasetPanel::setDataset(std::shared_ptr<const Dataset> data)
{
    m_data = std::move(data);
    m_error->hide();
    m_error->clear();
    if (!m_data) {
        m_name->setText(tr("No dataset"));
        m_counts->clear();
        m_shape->clear();
        m_classes->clear();
        m_grid->setSamples(nullptr, {});
        return;
    }
    const Dataset& d = *m_data;
    m_name->setText(QString::fromStdString(d.name.empty() ? d.dir : d.name));
    m_name->setToolTip(QString::fromStdString(d.dir));
    QString counts = tr("%1 training / %2 test images").arg(formatCount(double(d.train.size())),
                                                             formatCount(double(d.test.size())));
    if (d.validation.size()) counts += tr(" / %1 validation").arg(formatCount(double(d.validation.size())));
    m_counts->setText(counts);
    QString shape = tr("%1\u00d7%2 pixels, %3, %4 classes; %5")
                        .arg(d.height())
                        .arg(d.width())
                        .arg(d.channels() == 3 ? tr("colour (RGB)") : tr("grayscale"))
                        .arg(d.numClasses())
                        .arg(QString::fromLatin1(layoutName(d.layout)));
    if (!d.split.empty()) shape += tr(" (test set: %1)").arg(QString::fromStdString(d.split));
    // what the layout left unread, as train and eval note it (Dataset::notes)
    for (const std::string& n : d.notes) shape += QLatin1Char('\n') + tr("Note: %1").arg(QString::fromStdString(n));
    m_shape->setText(shape);
    m_shape->setWordWrap(true);
    QStringList names;
    for (const auto& n : d.classNames) names << QString::fromStdString(n);
    m_classes->setText(tr("Classes: %1").arg(names.join(QStringLiteral(", "))));
    m_grid->setSamples(&d.train, d.classNames);
}

void DatasetPanel::setError(const QString& message)
{
    m_error->setText(tr("Could not load the dataset: %1.\nChoose another folder with Open folder\u2026 (Ctrl+O), a "
                        "CSV file, or pick the four IDX files one by one.")
                         .arg(message.endsWith(QLatin1Char('.')) ? message.chopped(1) : message));
    m_error->show();
    if (m_data) m_name->setText(QString::fromStdString(m_data->name.empty() ? m_data->dir : m_data->name));
    else m_name->setText(tr("No dataset"));
}

void DatasetPanel::chooseFolder()
{
    const QString start = m_data ? QString::fromStdString(m_data->dir) : QString::fromLatin1(kDefaultDataDir);
    const QString dir = QFileDialog::getExistingDirectory(this, tr("Open a dataset folder"), start);
    if (!dir.isEmpty()) emit folderChosen(dir);
}

void DatasetPanel::chooseCsv()
{
    const QString start = m_data ? QString::fromStdString(m_data->dir) : QString();
    const QString f = QFileDialog::getOpenFileName(this, tr("Open a CSV dataset"), start,
                                                   tr("CSV files (*.csv *.CSV);;All files (*)"));
    if (!f.isEmpty()) emit folderChosen(f);
}

void DatasetPanel::chooseFiles()
{
    DatasetFilesDialog dlg(m_data ? m_data->files : DatasetFiles{}, this);
    if (dlg.exec() == QDialog::Accepted) emit filesChosen(dlg.files());
}

ThumbnailGrid::ThumbnailGrid(QWidget* parent) : QWidget(parent)
{
    setSizePolicy(QSizePolicy::Preferred, QSizePolicy::Preferred);
    setToolTip(tr("Sample training images with their labels."));
}

void ThumbnailGrid::setSamples(const LabeledImages* set, const std::vector<std::string>& classNames)
{
    m_images.clear();
    m_labels.clear();
    if (set && set->size() > 0 && set->height > 0 && set->width > 0) {
        // Round-robin over classes, so the grid shows every class before repeating one.
        const std::size_t classes = std::max<std::size_t>(1, classNames.size());
        std::vector<std::vector<std::size_t>> byClass(classes);
        for (std::size_t i = 0; i < set->size() && i < 5000; ++i) {
            const auto c = static_cast<std::size_t>(set->labels[i]);
            if (c < classes && byClass[c].size() < kMaxSamples) byClass[c].push_back(i);
        }
        for (std::size_t round = 0; m_images.size() < kMaxSamples; ++round) {
            bool any = false;
            for (std::size_t c = 0; c < classes && m_images.size() < kMaxSamples; ++c) {
                if (round >= byClass[c].size()) continue;
                any = true;
                const std::size_t idx = byClass[c][round];
                m_images.push_back(thumbnail(*set, idx));
                m_labels << (c < classNames.size() ? QString::fromStdString(classNames[c]) : QString::number(c));
            }
            if (!any) break;
        }
    }
    updateGeometry();
    update();
}

int ThumbnailGrid::columnsFor(int width) const { return std::max(1, width / kCellW); }

QSize ThumbnailGrid::sizeHint() const { return {5 * kCellW, heightForWidth(5 * kCellW)}; }
QSize ThumbnailGrid::minimumSizeHint() const { return {3 * kCellW, kCellH}; }

int ThumbnailGrid::heightForWidth(int w) const
{
    if (m_images.empty()) return kMaxRows * kCellH; // reserve the space: the dock does not jump on load
    const int cols = columnsFor(w);
    const int rows = std::min(kMaxRows, (static_cast<int>(m_images.size()) + cols - 1) / cols);
    return rows * kCellH;
}

void ThumbnailGrid::paintEvent(QPaintEvent*)
{
    QPainter p(this);
    p.setRenderHint(QPainter::SmoothPixmapTransform);
    const int cols = columnsFor(width());
    const int shown = std::min(static_cast<int>(m_images.size()), cols * kMaxRows);
    const int x0 = (width() - cols * kCellW) / 2;
    QFont f = font();
    f.setPointSizeF(f.pointSizeF() * 0.85);
    p.setFont(f);
    const QFontMetrics fm(f);
    for (int i = 0; i < shown; ++i) {
        const int r = i / cols, c = i % cols;
        const QRect cell(x0 + c * kCellW, r * kCellH, kCellW, kCellH);
        const QRect img(cell.x() + (kCellW - kImage) / 2, cell.y(), kImage, kImage);
        p.drawImage(img, m_images[static_cast<std::size_t>(i)]);
        const QRect text(cell.x(), img.bottom() + 1, kCellW, kCellH - kImage - 1);
        p.drawText(text, Qt::AlignHCenter | Qt::AlignTop, fm.elidedText(m_labels[i], Qt::ElideRight, kCellW - 2));
    }
}

} // namespace quantscope
