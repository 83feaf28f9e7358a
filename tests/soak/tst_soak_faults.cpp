// Fault tests (label soak, run by scripts/soak): an export to a full file system (a 64 KiB tmpfs)
// and to a read-only folder gives a clear error, keeps the previous file byte for byte and leaves
// no temporary file, both through the atomic write helper and through `quantscope-cli train
// --export`; a damaged settings file and damaged runs files leave the window working and say what
// is wrong. The mounts need root (or CAP_SYS_ADMIN): without them those cases skip, saying so.
#include "main_window.h"
#include "runs_model.h"

#include "data/idx.h"
#include "util/atomic_file.h"
#include "util/errors.h"
#include "util/rng.h"

#include <QCoreApplication>
#include <QDir>
#include <QElapsedTimer>
#include <QFileInfo>
#include <QFile>
#include <QProcess>
#include <QSettings>
#include <QSignalSpy>
#include <QStandardPaths>
#include <QTemporaryDir>
#include <QtTest>

#include <unistd.h>

using namespace quantscope;

namespace {

const QString kCli = QStringLiteral(QS_BINARY_DIR "/app/quantscope-cli");

// A tmpfs of `size` mounted on a fresh folder; unmounted (lazily) when this goes away.
class TmpfsMount {
public:
    explicit TmpfsMount(const QString& size)
    {
        if (!m_dir.isValid()) return;
        QProcess p;
        p.start(QStringLiteral("mount"), {QStringLiteral("-t"), QStringLiteral("tmpfs"), QStringLiteral("-o"),
                                          QStringLiteral("size=") + size, QStringLiteral("tmpfs"), m_dir.path()});
        p.waitForFinished(20000);
        m_mounted = p.exitStatus() == QProcess::NormalExit && p.exitCode() == 0;
        m_error = QString::fromLocal8Bit(p.readAllStandardError()).trimmed();
        if (m_error.isEmpty() && !m_mounted) m_error = p.errorString();
    }
    ~TmpfsMount()
    {
        if (m_mounted) QProcess::execute(QStringLiteral("umount"), {QStringLiteral("-l"), m_dir.path()});
    }
    bool mounted() const { return m_mounted; }
    QString error() const { return m_error; }
    QString path(const QString& name = {}) const { return name.isEmpty() ? m_dir.path() : QDir(m_dir.path()).filePath(name); }
    bool remountReadOnly()
    {
        return QProcess::execute(QStringLiteral("mount"), {QStringLiteral("-o"), QStringLiteral("remount,ro"), m_dir.path()}) == 0;
    }

private:
    QTemporaryDir m_dir;
    bool m_mounted = false;
    QString m_error;
};

QByteArray readAll(const QString& path)
{
    QFile f(path);
    return f.open(QIODevice::ReadOnly) ? f.readAll() : QByteArray();
}

// Files in `dir` whose name holds ".tmp" (writeFileAtomic's temporaries are <name>.tmp-XXXXXX).
QStringList temporaries(const QString& dir)
{
    return QDir(dir).entryList({QStringLiteral("*.tmp*")}, QDir::Files | QDir::Hidden | QDir::System);
}

// Fills the file system holding `dir` until a write fails with "no space".
void fillUp(const QString& dir)
{
    QFile f(QDir(dir).filePath(QStringLiteral("filler")));
    QVERIFY(f.open(QIODevice::WriteOnly));
    const QByteArray block(4096, 'x');
    for (int i = 0; i < 100000 && f.write(block) == block.size() && f.flush();) ++i;
    const QByteArray byte(1, 'x');
    while (f.write(byte) == 1 && f.flush()) {
    }
}

// A 10-class MNIST-layout fixture with 64 training and 32 test images.
void writeFixture(const QString& dir)
{
    Rng rng(5);
    auto make = [&](std::size_t n, const char* images, const char* labels) {
        std::vector<std::uint8_t> px(n * 28 * 28), lb(n);
        for (std::size_t i = 0; i < n; ++i) {
            lb[i] = static_cast<std::uint8_t>(i % 10);
            for (std::size_t j = 0; j < 28 * 28; ++j) px[i * 28 * 28 + j] = static_cast<std::uint8_t>(rng.below(256));
        }
        writeIdx(QDir(dir).filePath(images).toStdString(), {std::uint32_t(n), 28, 28}, px);
        writeIdx(QDir(dir).filePath(labels).toStdString(), {std::uint32_t(n)}, lb);
    };
    make(64, "train-images-idx3-ubyte", "train-labels-idx1-ubyte");
    make(32, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte");
}

struct CliResult {
    int exitCode = -1;
    QString err, out;
};

CliResult runCliExport(const QString& data, const QString& target)
{
    QProcess p;
    p.start(kCli, {QStringLiteral("train"), QStringLiteral("--data"), data, QStringLiteral("--epochs"), QStringLiteral("1"),
                   QStringLiteral("--strategy"), QStringLiteral("qat"), QStringLiteral("--quiet"),
                   QStringLiteral("--export"), target});
    if (!p.waitForFinished(300000)) {
        p.kill();
        p.waitForFinished();
        return {-2, QStringLiteral("timed out"), QString()};
    }
    CliResult r;
    r.exitCode = p.exitStatus() == QProcess::NormalExit ? p.exitCode() : -1;
    r.err = QString::fromLocal8Bit(p.readAllStandardError()).trimmed();
    r.out = QString::fromLocal8Bit(p.readAllStandardOutput()).trimmed();
    return r;
}

} // namespace

class TestSoakFaults : public QObject {
    Q_OBJECT

private slots:
    void initTestCase()
    {
        QVERIFY(m_data.isValid());
        writeFixture(m_data.path());
    }

    // A full disk: the writer says so and names the file; the old file and the folder are as before.
    void fullDisk()
    {
        TmpfsMount fs(QStringLiteral("64k"));
        if (!fs.mounted()) QSKIP(qPrintable(QStringLiteral("mount -t tmpfs is not permitted here: ") + fs.error()));
        const QString target = fs.path(QStringLiteral("model.qsm"));
        const QByteArray previous(8192, 'p');
        writeFileAtomic(target.toStdString(), previous.constData(), std::size_t(previous.size()));
        fillUp(fs.path());

        // The helper itself, with a payload that cannot fit.
        const std::vector<std::uint8_t> big(40000, 7);
        QString message;
        try {
            writeFileAtomic(target.toStdString(), big);
        } catch (const IoError& e) {
            message = QString::fromStdString(e.what());
        }
        qInfo("writeFileAtomic to a full 64 KiB tmpfs: %s", qPrintable(message));
        QVERIFY2(message.contains(target) && message.contains(QStringLiteral("the disk is full")), qPrintable(message));
        QCOMPARE(readAll(target), previous);
        QCOMPARE(temporaries(fs.path()), QStringList());

        // What a user runs: train, then export there.
        const CliResult r = runCliExport(m_data.path(), target);
        qInfo("quantscope-cli train --export <full tmpfs>/model.qsm: exit %d: %s", r.exitCode, qPrintable(r.err));
        QCOMPARE(r.exitCode, 3); // I/O error
        QVERIFY2(r.err.contains(target) && r.err.contains(QStringLiteral("the disk is full")), qPrintable(r.err));
        QCOMPARE(readAll(target), previous);
        QCOMPARE(temporaries(fs.path()), QStringList());
    }

    // A read-only folder: refused before training (CLI) and by the helper; nothing changes there.
    void readOnlyFolder()
    {
        TmpfsMount fs(QStringLiteral("1m"));
        if (!fs.mounted()) QSKIP(qPrintable(QStringLiteral("mount -t tmpfs is not permitted here: ") + fs.error()));
        const QString target = fs.path(QStringLiteral("model.qsm"));
        const QByteArray previous(4096, 'p');
        writeFileAtomic(target.toStdString(), previous.constData(), std::size_t(previous.size()));
        QVERIFY(fs.remountReadOnly());

        QString message;
        try {
            writeFileAtomic(target.toStdString(), std::string_view("new contents"));
        } catch (const IoError& e) {
            message = QString::fromStdString(e.what());
        }
        qInfo("writeFileAtomic into a read-only folder: %s", qPrintable(message));
        QVERIFY2(message.contains(target) && message.contains(QStringLiteral("read-only")), qPrintable(message));
        QCOMPARE(readAll(target), previous);

        QElapsedTimer t;
        t.start();
        const CliResult r = runCliExport(m_data.path(), target);
        qInfo("quantscope-cli train --export <read-only>/model.qsm: exit %d after %lld ms: %s", r.exitCode, t.elapsed(),
              qPrintable(r.err));
        QCOMPARE(r.exitCode, 3);
        QVERIFY2(r.err.contains(target) && r.err.contains(QStringLiteral("read-only")), qPrintable(r.err));
        QVERIFY2(r.out.isEmpty(), qPrintable("refused before training, not after it; it printed: " + r.out));
        QCOMPARE(readAll(target), previous);
        QCOMPARE(temporaries(fs.path()), QStringList());
    }

    // A damaged settings file: the window opens with its defaults and names the file and the problem.
    void corruptSettings_data()
    {
        QTest::addColumn<QByteArray>("contents");
        QTest::addColumn<QString>("expected");
        QTest::newRow("binary garbage") << QByteArray("\x00\xff\xfe[\x01\x02=\n\x00garbage\x00", 17)
                                        << QStringLiteral("could not be read");
        QTest::newRow("truncated value") << QByteArray("[window]\ngeometry=@ByteArray(\\x1\\xd9\\xd0\\xcb\\0\\x3\n[training]\nconfig=\"{\\\"model\\\": \\\"seed-")
                                         << QString(); // Qt may refuse the file or read a damaged value: either is named
        QTest::newRow("training options not JSON") << QByteArray("[training]\nconfig=this is not json\n")
                                                   << QStringLiteral("damaged");
    }
    void corruptSettings()
    {
        QFETCH(QByteArray, contents);
        QFETCH(QString, expected);
        QStandardPaths::setTestModeEnabled(true);
        QCoreApplication::setOrganizationName(QStringLiteral("QuantScopeTest"));
        QCoreApplication::setApplicationName(QStringLiteral("tst_soak_faults"));
        const QString file = QSettings().fileName();
        QDir().mkpath(QFileInfo(file).path());
        {
            QFile f(file);
            QVERIFY(f.open(QIODevice::WriteOnly | QIODevice::Truncate));
            f.write(contents);
        }
        {
            MainWindowOptions o;
            o.useSettings = true;
            o.dataDir = m_data.path();
            MainWindow w(o);
            QSignalSpy ready(&w, &MainWindow::datasetReady);
            w.show();
            QVERIFY(ready.count() > 0 || ready.wait(20000));
            QVERIFY(ready.first().first().toBool()); // the window works
            const QString err = w.errorText();
            qInfo("damaged settings (%s): %s", QTest::currentDataTag(), qPrintable(err));
            QVERIFY2(err.contains(file) && (expected.isEmpty() || err.contains(expected)), qPrintable(err));
            w.close();
        }
        // Closing rewrote it: the next start is clean.
        {
            MainWindowOptions o;
            o.useSettings = true;
            MainWindow w(o);
            QVERIFY2(w.errorText().isEmpty(), qPrintable(w.errorText()));
        }
        QFile::remove(file);
    }

    // Damaged runs files: refused with the file and the problem; the runs table is unchanged.
    void corruptRunsJson_data()
    {
        QTest::addColumn<QByteArray>("contents");
        QTest::addColumn<QString>("expected");
        QTest::newRow("truncated") << QByteArray("{\"quantscope_runs\": 1, \"runs\": [{\"id\": 1, \"status\": \"do")
                                   << QStringLiteral("not valid JSON at byte");
        QTest::newRow("empty") << QByteArray() << QStringLiteral("not valid JSON");
        QTest::newRow("binary") << QByteArray("\x89PNG\r\n\x1a\n\x00\x00", 10) << QStringLiteral("not valid JSON");
        QTest::newRow("other JSON") << QByteArray("[1, 2, 3]") << QStringLiteral("not a QuantScope runs file");
    }
    void corruptRunsJson()
    {
        QFETCH(QByteArray, contents);
        QFETCH(QString, expected);
        QTemporaryDir dir;
        const QString file = QDir(dir.path()).filePath(QStringLiteral("runs.json"));
        {
            QFile f(file);
            QVERIFY(f.open(QIODevice::WriteOnly));
            f.write(contents);
        }
        MainWindowOptions o;
        o.useSettings = false;
        MainWindow w(o);
        QVERIFY(!w.loadRunsFrom(file));
        const QString err = w.errorText();
        qInfo("damaged runs file (%s): %s", QTest::currentDataTag(), qPrintable(err));
        QVERIFY2(err.contains(file) && err.contains(expected), qPrintable(err));
        QCOMPARE(w.runsModel()->rowCount(), 0);
    }

    // Well-formed JSON with wrong types and absurd values loads without a crash, nothing invented.
    void strangeRunsJson()
    {
        QTemporaryDir dir;
        const QString file = QDir(dir.path()).filePath(QStringLiteral("runs.json"));
        {
            QFile f(file);
            QVERIFY(f.open(QIODevice::WriteOnly));
            f.write("{\"quantscope_runs\": 1, \"runs\": [{\"id\": \"x\", \"status\": 7, \"config\": [1], "
                    "\"image_height\": -1e300, \"image_width\": 1e300, \"classes\": \"many\", "
                    "\"start\": {\"epochs\": -5, \"steps_per_epoch\": 1e19}, "
                    "\"steps\": {\"loss\": [1, \"a\", null], \"epoch\": [\"q\"]}, \"epochs\": [3, {\"epoch\": 1e99}]}, 42]}");
        }
        MainWindowOptions o;
        o.useSettings = false;
        MainWindow w(o);
        w.show();
        w.loadRunsFrom(file);
        QTest::qWait(200); // charts and table draw what was loaded
        QVERIFY(w.runsModel()->rowCount() <= 2);
    }

private:
    QTemporaryDir m_data;
};

QTEST_MAIN(TestSoakFaults)
#include "tst_soak_faults.moc"
