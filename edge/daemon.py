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
EXIT_UNDELIVERED (3) when an output (MQTT) did not get every event.

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

from edge import notify
from edge.config import Config, check_files
from edge.stats import StatsCollector, format_stats, utc_timestamp

log = logging.getLogger("edge.daemon")

SHUTDOWN_BUDGET_S = 1.5  # what publishers may spend on close(); the rest of the 2 s goes to the threads
FINITE_FLUSH_S = 5.0  # after a finished file/folder: time to connect and deliver the last events
STATE_REFRESH_S = 1.0  # retained state follows changes at once, and confidences at most once a second
# A live camera silent this long no longer shows who is in view: the retained state says nobody, instead of
# keeping the last face (and Home Assistant automations on it) alive while the camera is unplugged.
CAMERA_AWAY_S = 5.0


# A finite run whose events did not all reach an output (MQTT never connected, or events left undelivered).
EXIT_UNDELIVERED = 3

# Host names a fresh image gets on every device: as the default device_id they would collide on the broker.
SHARED_HOSTNAMES = frozenset({"raspberrypi", "localhost", "debian", "ubuntu", "dietpi"})


class FatalError(RuntimeError):
    """The daemon cannot run (model, detector, source, publisher set-up): one clear line, non-zero exit."""


def default_model_path() -> Path:
    """The model shipped inside the package: edge/models/default.tflite (with default.json next to it)."""
    return Path(str(importlib.resources.files("edge") / "models" / "default.tflite"))


def resolve_model_path(config: Config) -> Path:
    if config.model.path:
        path = Path(config.model.path)
        if not path.is_file():  # say this before the contract loader complains about the missing .json
            raise FatalError(f"model.path: model file {path} does not exist")
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
    if classifier.contract.face_framing and getattr(detector, "landmarks", False):
        cut = "faces aligned and framed from the eyes"
    else:
        cut = f"faces cut by the box + {classifier.contract.crop_margin:g} margin"
    description = (
        f"classifier: {model_path.name} via {classifier.backend}, {config.model.threads} threads; "
        f"detector: {describe(detector)}; {cut}"
    )
    return classifier, detector, description


def build_state(config: Config, labels: list[str], faces: list[dict]) -> dict:
    """The retained `state` payload: faces in view and the emotion of the largest one."""
    largest = max(faces, key=lambda f: f["box"][2] * f["box"][3]) if faces else None
    scores = {label: 0.0 for label in labels}
    if largest is not None and largest.get("scores"):
        scores.update({k: float(v) for k, v in largest["scores"].items()})
    return {
        "schema_version": 1,
        "device_id": config.device_id,
        "timestamp": utc_timestamp(),
        "face_count": len(faces),
        "dominant_emotion": largest["emotion"] if largest else "none",
        "dominant_confidence": float(largest["confidence"]) if largest else None,
        "scores": scores,
        "faces": [
            {k: face[k] for k in ("track_id", "box", "emotion", "confidence") if k in face} for face in faces
        ],
    }


class Daemon:
    def __init__(self, config: Config, stop_event: threading.Event | None = None, publishers=None):
        self.config = config
        self.stop_event = stop_event or threading.Event()
        self._publishers = publishers  # tests may inject; otherwise built from publish.outputs
        self.exit_code = 0
        self.events_published = 0
        self.preview = None  # the live page (edge/preview) when preview.enabled

    # --- start-up ------------------------------------------------------------------------------------------

    def _open_first_source(self):
        """Open the source once here so a wrong path fails now, clearly; a live source may come later."""
        from edge.capture import SourceError, is_live_uri, open_source, open_until_stopped

        cfg = self.config.source
        try:  # in a helper thread: SIGTERM must not wait for a silent stream's open timeout
            return open_until_stopped(
                lambda: open_source(cfg.uri, cfg.width, cfg.height, cfg.fps, _image_limits(cfg)),
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
        size = {"width": cfg.width, "height": cfg.height, "fps": cfg.fps, "image_limits": _image_limits(cfg)}
        if first is not None:
            return reusing_factory(first, cfg.uri, **size)
        return lambda: open_source(cfg.uri, **size)

    def run(self) -> int:
        from edge.capture import CaptureThread
        from edge.pipeline import FrameProcessor
        from edge.publish import PublishError, make_publishers

        classifier, detector, description = load_components(self.config)
        log.info(description)
        source = self._open_first_source()
        if self.stop_event.is_set():  # stopped while opening: nothing was started or announced yet
            log.info("stopped before the source was open")
            return 0
        source_id = source.source_id if source is not None else self.config.source.uri
        try:
            publishers = self._publishers
            if publishers is None:
                publishers = make_publishers(self.config, self.stop_event)
            for publisher in publishers:
                if publisher.name == "mqtt":  # hooks first, so discovery goes out on the very first connect
                    from edge.publish import homeassistant

                    homeassistant.attach(publisher, self.config, classifier.labels)
                publisher.start()
        except PublishError as exc:
            if source is not None:
                source.close()
            raise FatalError(str(exc)) from None
        self.publishers = publishers
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
            notify.ready(f"processing {source_id}; {description}")
        else:
            notify.ready(f"waiting for {source_id} (retrying); {description}")
        try:
            self._loop(
                capture, processor, classifier.labels, detector, classifier.backend, waiting=source is None
            )
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

    def _loop(self, capture, processor, labels, detector, backend, waiting: bool) -> None:
        stats = StatsCollector()
        watchdog_every = notify.watchdog_interval()
        stats_every = self.config.stats.interval_s
        last_ping = last_stats = last_state = last_frame = time.monotonic()
        state_published = False
        detector_name = detector.name  # what runs: `auto` resolved
        snapshots = None
        if self.config.debug.snapshot_dir:
            from edge.snapshots import SnapshotWriter

            snapshots = SnapshotWriter(self.config.debug.snapshot_dir, self.config.debug.snapshot_limit)
        while not self.stop_event.is_set():
            waited = time.perf_counter()
            frame = capture.get(timeout=0.25)
            wait_ms = (time.perf_counter() - waited) * 1000
            now = time.monotonic()
            if frame is None:
                if capture.is_alive() and capture.busy_for() < (watchdog_every or 0):
                    last_ping = self._ping_watchdog(now, last_ping, watchdog_every)  # away, not hung
                if capture.finished:
                    if capture.error:  # a file that turned unreadable, or the capture thread failed
                        log.error("source stopped: %s", capture.error)
                        self.exit_code = 1
                    else:
                        log.info("source finished after %d frames", stats.processed)
                    break
                if now - last_frame >= CAMERA_AWAY_S and processor.forget_faces():
                    log.warning("no frames for %.0f s: the state now shows no faces until the camera is back",
                                now - last_frame)  # fmt: skip
                    state = build_state(self.config, labels, [])
                    for publisher in self.publishers:
                        publisher.publish_state(state)
                    last_state = now
                if (
                    stats_every and now - last_stats >= stats_every
                ):  # stats keep coming while a camera is away
                    last_stats = now
                    self._emit_stats(stats, capture, detector_name, backend)
                continue
            last_frame = now
            if waiting:  # the camera that was away at start has delivered its first frame
                notify.status(f"processing {processor_source(processor)}")
                waiting = False
            result = processor.process(frame)
            publish_start = time.perf_counter()
            if result.event is not None:
                for publisher in self.publishers:
                    publisher.publish_event(result.event)
                self.events_published += 1
                if snapshots is not None:
                    snapshots.save(frame.image, result.event)
            if (
                result.changes
                or not state_published
                or (result.faces and now - last_state >= STATE_REFRESH_S)
            ):
                state = build_state(self.config, labels, processor.faces_in_view())
                for publisher in self.publishers:
                    publisher.publish_state(state)
                state_published, last_state = True, now
            publish_ms = (time.perf_counter() - publish_start) * 1000
            timings = dict(result.timings_ms, capture_wait=wait_ms, publish=publish_ms)
            timings["total"] = (
                sum(result.timings_ms.get(k, 0.0) for k in ("detect", "classify", "track")) + publish_ms
            )
            stats.record(timings, len(result.faces))
            if self.preview is not None:  # hands over references only; drawing happens in its own thread
                self.preview.offer(frame, result, stats, capture)
            last_ping = self._ping_watchdog(now, last_ping, watchdog_every)
            if stats_every and now - last_stats >= stats_every:
                last_stats = now
                self._emit_stats(stats, capture, detector_name, backend)

    @staticmethod
    def _ping_watchdog(now: float, last_ping: float, every: float | None) -> float:
        if every is not None and now - last_ping >= every:
            notify.watchdog()
            return now
        return last_ping

    def _emit_stats(self, stats: StatsCollector, capture, detector_name: str, backend: str) -> None:
        reconnects = sum(p.reconnects for p in self.publishers)
        snapshot = stats.snapshot(capture.captured, capture.dropped, reconnects, detector_name, backend)
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
        for publisher in self.publishers:
            publisher.close(timeout=max(0.1, deadline - time.monotonic()))
        join = getattr(capture, "join", None)
        if join is not None:
            join(timeout=0.3)
        log.info("stopped after %d events", self.events_published)
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
        log.info("%s received, stopping", signal.Signals(signum).name)
        stop_event.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGHUP, handler)


def run(config: Config, stop_event: threading.Event | None = None) -> int:
    """Run the daemon until the source ends or a signal arrives. Raises FatalError for set-up failures."""
    stop_event = stop_event or threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_signal_handlers(stop_event)
    return Daemon(config, stop_event).run()
