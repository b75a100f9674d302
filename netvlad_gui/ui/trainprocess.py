"""A child process whose output arrives as whole lines, stopped gently then firmly.

The Retrain panel runs ``netvlad train --json-progress`` through this: stdout and stderr are
split into lines (a line may arrive in pieces), the last unterminated piece is delivered when the
process ends, and ``terminate`` sends SIGTERM, then SIGKILL if the process has not ended in time.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

log = logging.getLogger(__name__)


class LineProcess(QObject):
    """One run of a command. Signals: ``stdoutLine(str)``, ``stderrLine(str)``,
    ``finished(exit_code, crashed)`` (after every line was delivered) and
    ``failedToStart(reason)`` (then ``finished`` does not follow)."""

    stdoutLine = Signal(str)
    stderrLine = Signal(str)
    finished = Signal(int, bool)
    failedToStart = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._buffers = {"out": b"", "err": b""}
        self.proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        self.proc.setProcessEnvironment(env)
        self.proc.readyReadStandardOutput.connect(lambda: self._read("out"))
        self.proc.readyReadStandardError.connect(lambda: self._read("err"))
        self.proc.finished.connect(self._on_finished)
        self.proc.errorOccurred.connect(self._on_error)
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._kill)

    @property
    def running(self) -> bool:
        return self.proc.state() != QProcess.ProcessState.NotRunning

    def processId(self) -> int:
        return int(self.proc.processId())

    def start(self, command: list[str]) -> None:
        self.proc.start(command[0], command[1:])

    def terminate(self, kill_after_ms: int) -> None:
        """SIGTERM now, SIGKILL after ``kill_after_ms`` if it still runs."""
        self.proc.terminate()
        self._kill_timer.start(kill_after_ms)

    def shutdown(self, wait_ms: int) -> None:
        """End the process for good and wait for it (the app is closing)."""
        if not self.running:
            return
        self.proc.terminate()
        if not self.proc.waitForFinished(wait_ms):
            self.proc.kill()
            self.proc.waitForFinished(wait_ms)

    def _kill(self) -> None:
        if self.running:
            log.info("the process did not stop on SIGTERM: killing it")
            self.proc.kill()

    def _read(self, which: str) -> None:
        if which == "out":
            data, signal = self.proc.readAllStandardOutput(), self.stdoutLine
        else:
            data, signal = self.proc.readAllStandardError(), self.stderrLine
        self._buffers[which] += bytes(data.data())
        *lines, self._buffers[which] = self._buffers[which].split(b"\n")
        for raw in lines:
            signal.emit(raw.decode("utf-8", "replace").rstrip("\r"))

    def _on_finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self._kill_timer.stop()
        for which, signal in (("out", self.stdoutLine), ("err", self.stderrLine)):
            self._read(which)
            rest, self._buffers[which] = self._buffers[which], b""
            if rest:
                signal.emit(rest.decode("utf-8", "replace").rstrip("\r"))
        self.finished.emit(int(code), status == QProcess.ExitStatus.CrashExit)

    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.failedToStart.emit(self.proc.errorString())
