"""`emotion-edge`: run the daemon, check or print its config, benchmark the pipeline (`bench`), or clear
its retained MQTT messages (`forget`).

    emotion-edge [--config FILE] [--source SRC|demo] [--realtime] [--model FILE] [--publish stdout|mqtt ...]
                 [--mqtt-host H] [--mqtt-port P] [--device-id ID] [--policy every|change] [--detector TYPE]
                 [--threads N] [--log-level L] [--preview [HOST:]PORT] [--check-config] [--print-config]
    emotion-edge bench --source SRC [--frames N] [--json OUT] ...
    emotion-edge forget [--config FILE] [--device-id ID] [--force]   (clear its retained MQTT messages)

Events go to stdout (JSON Lines) when `stdout` is an output; logs always go to stderr.
Errors print `error: ...` on stderr and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys

from edge.config import DETECTOR_TYPES, ConfigError, load_config

DETECTORS = "|".join(DETECTOR_TYPES)  # the metavar of --detector: the choices edge/config.py declares


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotion-edge",
        description="Facial-emotion detection daemon: camera -> faces -> int8 TFLite -> stdout/MQTT events. "
        "Subcommands: `emotion-edge bench --help`, `emotion-edge forget --help`.",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="YAML config (default /etc/emotion-edge/config.yaml)"
    )
    parser.add_argument(
        "--source",
        metavar="SRC",
        help="picamera2, /dev/videoN, N, video file, URL, image, folder, or demo (the bundled sample faces "
        "as an endless camera: try the preview, stats and Home Assistant without one)",
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        default=None,
        help="read a video file at its own frame rate and pictures one a second, as a camera would "
        "(default: as fast as possible)",
    )
    parser.add_argument("--model", metavar="FILE", help="a .tflite model with its .json contract next to it")
    parser.add_argument(
        "--publish", metavar="OUT", action="append", help="stdout and/or mqtt (repeatable or comma list)"
    )
    parser.add_argument("--mqtt-host", metavar="H")
    parser.add_argument("--mqtt-port", metavar="P")
    parser.add_argument("--device-id", metavar="ID", help="[a-z0-9_-], used in MQTT topics")
    parser.add_argument("--policy", metavar="every|change", help="publish every frame or only changes")
    parser.add_argument("--detector", metavar=DETECTORS)
    parser.add_argument("--threads", metavar="N", help="TFLite interpreter threads")
    parser.add_argument("--log-level", metavar="L", help="DEBUG, INFO, WARNING, ERROR, CRITICAL")
    parser.add_argument(
        "--preview", metavar="[HOST:]PORT", help="serve the live preview page (default host 127.0.0.1)"
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the config, load the model and build the detector (no camera), exit 0 or 2",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the effective config (secrets masked)"
    )
    return parser


def _number(text: str | None):
    """Flags arrive as text; hand numbers to the validator as numbers so its message stays about the key."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return text


def overrides_from_args(args: argparse.Namespace) -> dict:
    overrides: dict = {}

    def put(section: str | None, key: str, value) -> None:
        if value is None:
            return
        (overrides.setdefault(section, {}) if section else overrides)[key] = value

    put("source", "uri", args.source)
    put("source", "realtime", args.realtime)
    put("model", "path", args.model)
    if args.publish:
        put("publish", "outputs", ",".join(args.publish))
    put("mqtt", "host", args.mqtt_host)
    put("mqtt", "port", _number(args.mqtt_port))
    put(None, "device_id", args.device_id)
    put("publish", "policy", args.policy)
    put("detector", "type", args.detector)
    put("model", "threads", _number(args.threads))
    put("log", "level", args.log_level)
    if args.preview is not None:
        from edge.preview.address import parse_bind

        overrides["preview"] = parse_bind(args.preview)
    return overrides


def setup_logging(level: str) -> None:
    from edge import logs

    logs.install(sys.stderr, level)  # stdout carries events only; stderr is written without ever blocking


def drain_logs() -> None:
    """Write out the queued log lines (waiting at most 1 s) before something is printed after them."""
    from edge import logs

    logs.drain(1.0)


def say_error(exc: Exception) -> None:
    """The one `error:` line, after the log lines queued before it."""
    drain_logs()
    print(f"error: {exc}", file=sys.stderr)


def print_out(text: str) -> None:
    """Results on stdout: a reader that went away (`| head -1`) just ends the output, as for any Unix tool;
    a stdout that cannot be written (closed, a full disk) is an error."""
    from edge.publish.stdout import discard_stdout

    if sys.stdout is None:
        raise ConfigError("stdout is closed; nothing can be printed")
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        discard_stdout()
    except OSError as exc:
        discard_stdout()
        raise ConfigError(f"cannot write to stdout: {exc.strerror or exc}") from None


def build_bench_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotion-edge bench",
        description="Measure per-stage latency (p50/p95) and fps of detect + classify + track over a source.",
    )
    parser.add_argument("--source", metavar="SRC", required=True, help="camera, video file, image or folder")
    parser.add_argument(
        "--frames", metavar="N", type=int, default=200, help="frames to measure (default 200)"
    )
    parser.add_argument("--warmup", metavar="M", type=int, default=10, help="frames run first, not measured")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to this file")
    parser.add_argument("--config", metavar="FILE", help="YAML config for the detector/model settings")
    parser.add_argument("--model", metavar="FILE")
    parser.add_argument("--detector", metavar=DETECTORS)
    parser.add_argument("--threads", metavar="N")
    parser.add_argument("--log-level", metavar="L", default="WARNING")
    return parser


def _bench(argv: list[str]) -> int:
    import json
    from pathlib import Path

    from edge.daemon import FatalError

    args = build_bench_parser().parse_args(argv)
    try:
        if args.frames < 1 or args.warmup < 0:
            raise ConfigError("--frames must be at least 1 and --warmup at least 0")
        overrides: dict = {"source": {"uri": args.source}, "log": {"level": args.log_level}}
        if args.model:
            overrides["model"] = {"path": args.model}
        if args.detector:
            overrides["detector"] = {"type": args.detector}
        if args.threads:
            overrides.setdefault("model", {})["threads"] = _number(args.threads)
        config = load_config(args.config, overrides=overrides)
        setup_logging(config.log.level)
        if args.json and Path(args.json).is_dir():
            raise ConfigError(f"--json: {args.json} is a folder; give a file name")
        if args.json and not Path(args.json).resolve().parent.is_dir():
            raise ConfigError(f"--json: folder {Path(args.json).parent} does not exist")
        from edge.bench import format_bench, run_bench

        results = run_bench(config, args.source, frames=args.frames, warmup=args.warmup)
        print_out(format_bench(results) + "\n")
        if args.json:
            from edge.files import write_text_atomic

            try:
                write_text_atomic(args.json, json.dumps(results, indent=2) + "\n")
            except OSError as exc:
                raise ConfigError(f"--json: cannot write {args.json}: {exc.strerror or exc}") from None
        return 0
    except (ConfigError, FatalError) as exc:
        say_error(exc)
        return 2


def build_forget_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotion-edge forget",
        description="Clear what this device left retained on the MQTT broker (Home Assistant discovery "
        "configs, state, status), so Home Assistant removes its entities. For an uninstall or a device_id "
        "change; stop the daemon first.",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="YAML config (default /etc/emotion-edge/config.yaml)"
    )
    parser.add_argument("--device-id", metavar="ID", help="the device to forget (e.g. a former device_id)")
    parser.add_argument(
        "--mqtt-host", metavar="H", help="the broker (also when the config publishes no MQTT)"
    )
    parser.add_argument("--mqtt-port", metavar="P")
    parser.add_argument(
        "--timeout", metavar="S", type=float, default=10.0, help="seconds per step (default 10)"
    )
    parser.add_argument("--force", action="store_true", help="clear even while the device reports online")
    return parser


def _forget(argv: list[str]) -> int:
    from edge.publish.forget import ForgetError, forget

    args = build_forget_parser().parse_args(argv)
    try:
        if not 0 < args.timeout <= 3600:  # also refuses inf and nan, which no socket timeout takes
            raise ConfigError(f"--timeout must be more than 0 seconds and at most 3600, got {args.timeout}")
        overrides: dict = {}
        if args.device_id is not None:
            overrides["device_id"] = args.device_id
        if args.mqtt_host is not None:
            overrides.setdefault("mqtt", {})["host"] = args.mqtt_host
        if args.mqtt_port is not None:
            overrides.setdefault("mqtt", {})["port"] = _number(args.mqtt_port)
        config = load_config(args.config, overrides=overrides)
        if "mqtt" not in config.publish.outputs and args.mqtt_host is None:
            print(
                f"nothing to clear: this config does not publish to MQTT (publish.outputs: "
                f"{', '.join(config.publish.outputs)}); give --mqtt-host to clear a broker anyway",
                file=sys.stderr,
            )
            return 0
        result = forget(config, timeout=args.timeout, force=args.force)
    except (ConfigError, ForgetError) as exc:
        say_error(exc)
        return 2
    try:
        print_out("".join(topic + "\n" for topic in result.cleared))
    except ConfigError as exc:
        say_error(exc)
        return 2
    drain_logs()
    print(
        f"cleared {len(result.cleared)} retained messages of device {config.device_id} on {result.address}",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    if argv[:1] == ["forget"]:
        return _forget(argv[1:])
    args = build_parser().parse_args(argv)
    from edge.daemon import FatalError, load_components, run
    from edge.publish.base import PublishError

    try:
        config = load_config(args.config, overrides=overrides_from_args(args))
        setup_logging(config.log.level)
        if args.print_config:
            print_out(config.to_yaml(mask_secrets=True))
            return 0
        if args.check_config:
            from edge.notices import read_notices

            _, _, description = load_components(config)
            drain_logs()
            for notice in read_notices():  # not applied, so not wrong in this config: warnings, exit 0
                print(f"warning: settings: {notice}", file=sys.stderr)
            print(f"config OK: {description}; outputs: {', '.join(config.publish.outputs)}", file=sys.stderr)
            return 0
        return run(config)
    except (ConfigError, FatalError, PublishError) as exc:  # PublishError: stdout failed mid-run
        say_error(exc)
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        drain_logs()


if __name__ == "__main__":
    sys.exit(main())
