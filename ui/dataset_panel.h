// Dataset panel: where the data comes from (a folder of any layout, a CSV file, or four IDX files
// picked one by one), how images are shaped (resize, CSV image shape), the share a CSV file or one class tree holds out as test, what it holds (counts,
// image size and colour, class names, sample thumbnails with labels) and, when a file is bad, the
// core's message in plain words. It only displays; MainWindow asks the worker to load.
#pragma once

#include "data/dataset.h"

#include <QImage>
#include <QStringList>
#include <QWidget>

#include <memory>

class QDoubleSpinBox;
class QLabel;
class QLineEdit;
class QPushButton;
class QSpinBox;

namespace quantscope {

class ThumbnailGrid;

class DatasetPanel : public QWidget {
    Q_OBJECT
public:
    explicit DatasetPanel(QWidget* parent = nullptr);

    void setLoading(const QString& what);
    void setDataset(std::shared_ptr<const Dataset> data);
    void setError(const QString& message);
    void setBusy(bool busy); // disables the open buttons while training or loading

    std::size_t trainLimit() const;
    std::size_t testLimit() const;
    void setLimits(std::size_t train, std::size_t test);
    // Training images held out as a validation set, measured each epoch (0: none; train
    // --validation N, drawn from the training images kept by the limit).
    std::size_t validationImages() const;
    void setValidationImages(std::size_t n);
    // "HxW" / "CxHxW" as typed (empty: as stored / from the CSV's column count).
    QString resizeText() const;
    QString imageShapeText() const;
    void setResizeText(const QString& text);
    // Share of each class held out as the test set by a CSV file or a single class tree without
    // test/ (train --test-fraction F; 0.2 by default). Other layouts give their own test set.
    double testFraction() const;
    void setTestFraction(double fraction);
    QString errorText() const;
    const std::shared_ptr<const Dataset>& dataset() const { return m_data; }
    ThumbnailGrid* thumbnails() const { return m_grid; }

public slots:
    void chooseFolder();
    void chooseCsv();
    void chooseFiles();

signals:
    void folderChosen(const QString& path); // a folder of any layout, or a .csv file
    void filesChosen(const quantscope::DatasetFiles& files);
    void limitsChanged();

private:
    void updateSplitTips(); // the Open tooltips say the share the Test fraction field holds out
    std::shared_ptr<const Dataset> m_data;
    QLabel* m_name;
    QLabel* m_counts;
    QLabel* m_shape;
    QLabel* m_classes;
    QLabel* m_error;
    QPushButton* m_openFolder;
    QPushButton* m_openCsv;
    QPushButton* m_pickFiles;
    QLineEdit* m_resize;
    QLineEdit* m_imageShape;
    QDoubleSpinBox* m_testFraction;
    QSpinBox* m_trainLimit;
    QSpinBox* m_testLimit;
    QSpinBox* m_validation;
    ThumbnailGrid* m_grid;
};

// A grid of sample images, each with its class name underneath.
class ThumbnailGrid : public QWidget {
    Q_OBJECT
public:
    explicit ThumbnailGrid(QWidget* parent = nullptr);
    void setSamples(const LabeledImages* set, const std::vector<std::string>& classNames);
    int sampleCount() const { return static_cast<int>(m_images.size()); }
    const QImage& sample(int i) const { return m_images.at(static_cast<std::size_t>(i)); }
    QSize sizeHint() const override;
    QSize minimumSizeHint() const override;
    bool hasHeightForWidth() const override { return true; }
    int heightForWidth(int w) const override;

protected:
    void paintEvent(QPaintEvent*) override;

private:
    int columnsFor(int width) const;
    std::vector<QImage> m_images; // grayscale or RGB, as the data
    QStringList m_labels;
};

} // namespace quantscope
