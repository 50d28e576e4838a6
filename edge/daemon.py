"""The daemon's lifecycle: capture thread -> processing loop (this thread) -> publishers.

    capture thread (edge.capture)  --newest frame-->  processing loop  --enqueue-->  publishers
      reopens a failed live source       detect, classify, track         stdout: one line per event
      with backoff; drops + counts       stats, sd_notify watchdog        MQTT: paho's own thread

Start-up order matters to systemd: READY=1 is sent only once the model is loaded, the detector built,
the publishers started and the source opened (or found away and handed to the capture thread to retry).
WATCHDOG=1 is sent from the processing loop while it runs and the capture thread is not stuck inside a
source call: a camera that is away (unplugged, stream down) is reopened by the capture thread with backoff
for as long as it takes, while a hung driver call (or a hung loop) stops the pings and systemd restarts the
service. SIGTERM/SIGINT/SIGHUP set the stop event: the loop ends, `offline` is published, buffers flushed,
and the process exits 0 within 2 s (the first open of a source runs in a helper thread, so a slow one does
not hold the signal up).
A finite source (file, folder, image) ends the run with exit 0 after its last event is published, or
EXIT_UNDELIVERED (3) when an output (MQTT) did not get every event; `--source demo` (the bundled samples as
a camera) runs until stopped, like a camera.

What goes out, and when (events, the retained state, camera away) is decided in edge/emit.py; one turn of
the loop (capture -> process -> emit) is edge/loop.py, which `emotion-edge bench` runs too.

Privacy: frames never leave this process unless the preview page (edge/preview) is on and watched. Nothing
is written to disk unless `debug.snapshot_dir` is set.
"""

from __future__ import annotations

import importlib.resources
import logging
import signal
import threading
import time
from pathlib import Path

from edge import logs, notify
from edge.config import Config, check_files
from edge.emit import CAMERA_AWAY_S, Emitter, Every
from edge.files import path_problem
from edge.loop import FrameLoop
from edge.notices import read_notices, status_suffix
from edge.publish.base import PublishError
from edge.stats import StatsCollector, delivery_figures, format_stats

__all__ = ["CAMERA_AWAY_S", "EXIT_UNDELIVERED", "Daemon", "FatalError", "load_components", "run"]

log = logging.getLogger("edge.daemon")

SHUTDOWN_BUDGET_S = 1.5  # what publishers may spend on close(); the rest of the 2 s goes to the threads
FINITE_FLUSH_S = 5.0  # after a finished file/folder: time to connect and deliver the last events
OUTPUT_CHECK_S = 1.0  # how often the loop asks the outputs whether they are still alive


# A finite run whose events did not all reach an output (MQTT never connected, or events left undelivered).
EXIT_UNDELIVERED = 3

# Host names a fresh image gets on every device: as the default device_id they would collide on the broker.
SHARED_HOSTNAMES = frozenset({"raspberrypi", "localhost", "debian", "ubuntu", "dietpi", "emotion-edge"})


class FatalError(RuntimeError):
    """The daemon cannot run (model, detector, source, publisher set-up): one clear line, non-zero exit."""


def default_model_path() -> Path:
    """The model shipped inside the package: edge/models/default.tflite (with default.json next to it)."""
    return Path(str(importlib.resources.files("edge") / "models" / "default.tflite"))


def resolve_model_path(config: Config) -> Path:
    if config.model.path:
        path = Path(config.model.path)
        problem = path_problem(path)  # said before the contract loader complains about the missing .json
        if problem:
            raise FatalError(f"model.path: model file {problem}")
        return path
    path = default_model_path()
    if not path.is_file():
        raise FatalError(f"no model given and the shipped model {path} is not installed: pass --model FILE")
    return path


def load_components(config: Config):
    """Model, detector and their descriptions. Raises FatalError with the reason (for --check-config too)."""
    from edge.classify import EmotionClassifier
    from edge.detect import DetectorError, describe, make_detector
    from edge.interpreter import ModelLoadError
    from edge.model_contract import ContractError

    check_files(config)
    if config.preview.enabled:
        from edge.preview.auth import load_token  # raises ConfigError for a bind the token rules refuse

        load_token(config.preview)
    if config.device_id in SHARED_HOSTNAMES and "mqtt" in config.publish.outputs:
        log.warning(
            "device_id %r is a stock host name: two devices with it share MQTT topics, the client id (the "
            "broker keeps disconnecting one for the other) and Home Assistant entities; set device_id or "
            "give this device its own host name",
            config.device_id,
        )
    model_path = resolve_model_path(config)
    try:
        classifier = EmotionClassifier(model_path, config.model.threads)
    except (ModelLoadError, ContractError) as exc:
        raise FatalError(str(exc)) from None
    try:
        detector = make_detector(config.detector)
    except DetectorError as exc:
        raise FatalError(str(exc)) from None
    if not classifier.checked:
        log.warning(
            "model %s: its contract carries no sha256 (written before models were checked), so a damaged "
            "file is not detected; convert it again (emotion-convert) to add one",
            model_path,
        )
    if classifier.contract.face_framing and getattr(detector, "landmarks", False):
        cut = "faces aligned and framed from the eyes"
    else:
        cut = f"faces cut by the box + {classifier.contract.crop_margin:g} margin"
    description = (
        f"classifier: {model_path.name} via {classifier.backend}, {config.model.threads} threads; "
        f"detector: {describe(detector)}; {cut}; "
        f"model file {'matches its sha256' if classifier.checked else 'not checked (no sha256 in its contract)'}"
    )
    return classifier, detector, description


class Daemon:
    def __init__(
        self, config: Config, stop_event: threading.Event | None = None, publishers=None, clock=time.monotonic
    ):
        self.config = config
        self.stop_event = stop_event or threading.Event()
        self.publishers = publishers  # tests may inject; otherwise built from publish.outputs
        self.clock = clock  # the loop's clock (cadences, camera away): tests inject a fake one
        self.exit_code = 0
        self.emitter: Emitter | None = None
        self.preview = None  # the live page (edge/preview) when preview.enabled

    @property
    def events_published(self) -> int:
        return self.emitter.events_published if self.emitter is not None else 0

    # --- start-up ------------------------------------------------------------------------------------------

    def _open_first_source(self):
        """Open the source once here so a wrong path fails now, clearly; a live source may come later."""
        from edge.capture import SourceError, is_live_uri, open_source, open_until_stopped

        cfg = self.config.source
        try:  # in a helper thread: SIGTERM must not wait for a silent stream's open timeout
            return open_until_stopped(
                lambda: open_source(
                    cfg.uri, cfg.width, cfg.height, cfg.fps, _image_limits(cfg), cfg.realtime
                ),
                self.stop_event,
            )
        except SourceError as exc:
            if not is_live_uri(cfg.uri):
                raise FatalError(str(exc)) from None
            log.warning("%s; retrying with backoff (up to %.0f s)", exc, cfg.reopen_backoff_max_s)
            return None

    def _source_factory(self, first):
        from edge.capture import open_source, reusing_factory

        cfg = self.config.source
        size = {"width": cfg.width, "height": cfg.height, "fps": cfg.fps, "image_limits": _image_limits(cfg),
                "realtime": cfg.realtime}  # fmt: skip
        if first is not None:
            return reusing_factory(first, cfg.uri, **size)
        return lambda: open_source(cfg.uri, **size)

    def run(self) -> int:
        from edge.capture import CaptureThread
        from edge.pipeline import FrameProcessor
        from edge.publish import make_publishers

        classifier, detector, description = load_components(self.config)
        log.info(description)
        notices = read_notices()  # the image's settings step: values it could not apply
        for notice in notices:
            log.warning("settings: %s", notice)
        source = self._open_first_source()
        if self.stop_event.is_set():  # stopped while opening: nothing was started or announced yet
            log.info("stopped before the source was open")
            return 0
        source_id = source.source_id if source is not None else self.config.source.uri
        try:
            if self.publishers is None:  # the MQTT one comes with Home Assistant discovery (when enabled)
                finite = (
                    source is not None and not source.live
                )  # every event of a file matters: wait for stdout
                self.publishers = make_publishers(
                    self.config, self.stop_event, classifier.labels, finite=finite
                )
            for publisher in self.publishers:
                publisher.start()
        except PublishError as exc:
            if source is not None:
                source.close()
            raise FatalError(str(exc)) from None
        self.preview = self._start_preview(source, source_id, classifier.labels)
        processor = FrameProcessor(self.config, classifier, detector, source_id)
        capture = CaptureThread(
            self._source_factory(source),
            self.stop_event,
            queue_size=1,
            reopen_backoff=(0.5, self.config.source.reopen_backoff_max_s),
        )
        capture.start()
        # READY=1 now, camera or not: a camera that is away at boot is retried in the capture thread (and the
        # watchdog covers a hang), while withholding READY would end in systemd's start timeout and a
        # restart loop that flaps `online`/`offline` in Home Assistant.
        if source is not None:
            notify.ready(f"processing {source_id}; {description}{status_suffix(notices)}")
        else:
            notify.ready(f"waiting for {source_id} (retrying); {description}{status_suffix(notices)}")
        try:
            self.serve(capture, processor, detector.name, classifier.backend, waiting=source is None)
        finally:
            self._shutdown(capture)
        return self.exit_code

    def _start_preview(self, source, source_id: str, labels: list[str]):
        """The live page, when enabled; a port it cannot listen on ends the start like a bad source does."""
        if not self.config.preview.enabled:
            return None
        from edge.preview.server import PreviewError, start_preview

        try:
            return start_preview(self.config, source_id, labels, self.publishers)
        except PreviewError as exc:
            for publisher in self.publishers:
                publisher.close(timeout=0.5)
            if source is not None:
                source.close()
            raise FatalError(str(exc)) from None

    # --- the processing loop -------------------------------------------------------------------------------------

    def serve(self, capture, processor, detector_name: str, backend: str, waiting: bool = False) -> None:
        """Process frames from `capture` until a stop or the source's end. `detector_name`: what runs
        (`auto` resolved); `waiting`: the source was away at start (systemd's status says so until a frame)."""
        now = self.clock()
        snapshots = None
        if self.config.debug.snapshot_dir:
            from edge.snapshots import SnapshotWriter

            snapshots = SnapshotWriter(self.config.debug.snapshot_dir, self.config.debug.snapshot_limit)
        self.emitter = Emitter(
            self.config,
            processor.labels,
            processor_source(processor),
            self.publishers,
            processor.forget_faces,
            now,
            snapshots,
        )
        self._stats = StatsCollector(clock=self.clock)
        self._stats_due = Every(self.config.stats.interval_s, now)
        self._watchdog = Every(notify.watchdog_interval(), now)
        self._outputs_due = Every(OUTPUT_CHECK_S, now)
        self._describe = (detector_name, backend)
        self._loop(FrameLoop(capture, processor, self.emitter, self.clock), waiting)

    def _loop(self, frames: FrameLoop, waiting: bool) -> None:
        """capture -> process -> emit, and between frames: the watchdog, the camera-away state, stats."""
        capture = frames.capture
        while not self.stop_event.is_set():
            step = frames.next(timeout=0.25)
            if step is not None:
                if waiting:  # the camera that was away at start has delivered its first frame
                    notify.status(
                        f"processing {processor_source(frames.processor)}{status_suffix(read_notices())}"
                    )
                    waiting = False
                self._stats.record(step.timings, len(step.result.faces))
                if self.preview is not None:  # hands over references only; drawing happens in its own thread
                    self.preview.offer(step.frame, step.result, self._stats, capture, step.event)
            if step is not None or (
                capture.is_alive() and capture.busy_for() < (self._watchdog.interval or 0)
            ):
                self._ping_watchdog(frames.now)  # a camera away is not a hang; a stuck capture call is
            if step is None and capture.finished:
                self._source_ended(capture)
                break
            if step is None:
                self.emitter.no_frame(frames.now)
            if self._stats_due.due(frames.now):  # stats keep coming while a camera is away
                self._emit_stats(capture)
            if self._outputs_due.due(frames.now) and self._output_broken():
                break

    def _output_broken(self) -> bool:
        """An output that can never deliver again ends the run with exit 1: systemd restarts the service,
        where carrying on would publish nothing for good."""
        for publisher in self.publishers:
            problem = getattr(publisher, "broken", lambda: None)()
            if problem:
                log.error("%s; stopping with exit code 1 (the service is restarted)", problem)
                self.exit_code = 1
                self.stop_event.set()  # a stop, as on SIGTERM: the same shutdown budget
                return True
        return False

    def _ping_watchdog(self, now: float) -> None:
        if self._watchdog.due(now):
            notify.watchdog()

    def _source_ended(self, capture) -> None:
        if capture.error:  # a file that turned unreadable, or the capture thread failed
            log.error("source stopped: %s", capture.error)
            self.exit_code = 1
        else:
            log.info("source finished after %d frames", self._stats.processed)

    def _emit_stats(self, capture) -> None:
        reconnects = sum(p.reconnects for p in self.publishers)
        outputs = delivery_figures(
            self.publishers,
            self.events_published,
            source_failures=getattr(capture, "failures", 0),  # camera or stream failures, each reopened
            log_lines_dropped=logs.dropped_lines(),  # lines a blocked stderr (journald) could not take
        )
        snapshot = self._stats.snapshot(
            capture.captured, capture.dropped, reconnects, *self._describe, outputs
        )
        log.info(format_stats(snapshot))
        for publisher in self.publishers:
            publisher.publish_stats(snapshot)

    # --- shutdown ----------------------------------------------------------------------------------------------

    def _shutdown(self, capture) -> None:
        signalled = self.stop_event.is_set()  # set by SIGTERM/SIGINT; not set when a file simply ended
        notify.stopping("shutting down")
        self.stop_event.set()
        if self.preview is not None:
            self.preview.close()
        # A signal must be answered within 2 s (systemd's stop); a finished file may take longer to deliver.
        deadline = time.monotonic() + (SHUTDOWN_BUDGET_S if signalled else FINITE_FLUSH_S)
        failed = (
            None  # an output that could not be written (stdout on a full disk): every other one still closes
        )
        for publisher in self.publishers:
            try:
                publisher.close(timeout=max(0.1, deadline - time.monotonic()))
            except PublishError as exc:
                failed = failed or exc
        join = getattr(capture, "join", None)
        if join is not None:
            join(timeout=0.3)
        log.info("stopped after %d events", self.events_published)
        if failed is not None:
            raise failed
        if not signalled:  # a finished file or folder: say whether its events reached every output
            self._check_delivery()

    def _check_delivery(self) -> None:
        for publisher in self.publishers:
            failure = publisher.delivery_failure()
            if failure:
                log.warning("%s: %s; exit code %d", publisher.name, failure, EXIT_UNDELIVERED)
                self.exit_code = self.exit_code or EXIT_UNDELIVERED


def _image_limits(source_config) -> tuple[float, float]:
    return (source_config.max_image_mb, source_config.max_image_mpx)


def processor_source(processor) -> str:
    return getattr(processor, "source_id", "source")


def install_signal_handlers(stop_event: threading.Event) -> None:
    """SIGTERM (systemd stop), SIGINT (Ctrl-C) and SIGHUP (a closed terminal, `kill -HUP`) ask the loop to
    finish: `offline` is published and the exit code is 0. There is no reload: restart to apply a new config.
    Only valid in the main thread."""

    def handler(signum, _frame):
        stop_event.set()  # first: nothing that could block (a log line to a stalled stderr) may come before it
        log.info("%s received, stopping", signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGHUP, handler)


def run(config: Config, stop_event: threading.Event | None = None) -> int:
    """Run the daemon until the source ends or a signal arrives. Raises FatalError for set-up failures."""
    stop_event = stop_event or threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_signal_handlers(stop_event)
    return Daemon(config, stop_event).run()
