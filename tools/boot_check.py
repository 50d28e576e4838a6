"""make boot-check: the SD-card image booted with systemd as PID 1, and what the service promises, checked.

    python tools/boot_check.py [--image build/image/emotion-edge-trixie-arm64.img.xz] [--work build/boot-check]

The image `make image` built (the .img.xz users flash) is decompressed, made larger (as a card is), given a
settings file on its FAT partition the way a user would (the shipped emotion-edge.txt with lines uncommented,
saved by a Windows editor: a BOM and CRLF, one value wrong), and booted under `qemu-system-aarch64 -M virt
-cpu cortex-a72 -smp 2` with its own kernel and initrd and its own cmdline.txt (console moved to the virt
board's serial port). qemu's user network puts the host at 10.0.2.2: a real Mosquitto there (with a
password), and a camera: an endless MJPEG stream of the sample photos panned, as an IP camera serves it.
Then, over SSH with the key from the settings file:

    settings  host name, config.yaml, the MQTT password as the unit's credential (mode 0600), Wi-Fi as a
              PSK, the passwords gone from the FAT partition, the bad value in the journal, the daemon's
              status and --check-config
    firstboot root partition grown to the disk, SSH host keys made on this boot (none in the image)
    ready     the unit active (READY=1 received: Type=notify) on the stream, discovery + events on MQTT
    watchdog  SIGSTOP the daemon: systemd's watchdog kills it, it restarts, comes back online
    sigkill   SIGKILL: the broker publishes the last will (offline), the unit restarts, online again
    security  `systemd-analyze security emotion-edge.service` inside the booted system
    shutdown  `systemctl poweroff`: the daemon publishes offline itself (a clean DISCONNECT, no will) and
              the machine powers off

Each step prints one summary line; the whole summary goes to WORK/boot-check.txt. Heavy processes (xz,
qemu) run under nice -n 10. Timeouts are generous: emulation on a shared machine is slow.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed.daemonproc import MjpegServer  # noqa: E402
from testbed.mosquitto import MosquittoBroker, Subscriber, find_mosquitto, free_port  # noqa: E402

DEFAULT_IMAGE = REPO / "build" / "image" / "emotion-edge-trixie-arm64.img.xz"
DEFAULT_WORK = REPO / "build" / "boot-check"
DISK_SIZE = 4 << 30  # the "card": larger than the image, so the first boot has a partition to grow
MEMORY_MB = 2048  # a Pi 4's 2 GB model
DEVICE_ID = "boot-check"
HOSTNAME = "boot-check"
MQTT_USER = "edge"
MAX_EXPOSURE = 2.0  # tests/deploy/test_systemd_unit.py's bound, now inside the booted system
SECTOR = 512

# Generous: under qemu's emulation on a shared 2-core machine a boot takes minutes, the daemon's start
# (OpenCV, LiteRT and the model, twice: ExecStartPre's --check-config, then the daemon) too.
BOOT_TIMEOUT = 1200
READY_TIMEOUT = 900
RESTART_TIMEOUT = 600
SHUTDOWN_TIMEOUT = 300


class Failed(Exception):
    """A check failed; the message is its summary line."""


class Steps:
    """One summary line a step, as tools/pi-check.sh prints them."""

    def __init__(self):
        self.lines: list[str] = []
        self.started = time.monotonic()

    @contextlib.contextmanager
    def step(self, name: str, what: str):
        print(f"boot-check: == {name}: {what}", file=sys.stderr, flush=True)
        start = time.monotonic()
        result: list[str] = []
        try:
            yield result
        except Failed as exc:
            self.lines.append(f"{name:<9} FAIL {time.monotonic() - start:5.0f}s  {exc}")
            raise
        except Exception as exc:
            self.lines.append(f"{name:<9} FAIL {time.monotonic() - start:5.0f}s  {type(exc).__name__}: {exc}")
            raise
        self.lines.append(f"{name:<9} ok   {time.monotonic() - start:5.0f}s  {'; '.join(result)}")


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    if "stdout" not in kwargs and "stderr" not in kwargs:
        kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run(command, **kwargs)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


def wait_for(predicate, timeout: float, interval: float = 2.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return value
        time.sleep(interval)


# --- the disk: partitions read and written without mounting -------------------------------------------------


def partitions(disk: Path) -> list[dict]:
    table = json.loads(run(["sfdisk", "--json", str(disk)], check=True).stdout)["partitiontable"]
    return table["partitions"]


def fat(disk: Path) -> str:
    """mtools' name for the first partition of the disk."""
    return f"{disk}@@{partitions(disk)[0]['start'] * SECTOR}"


def fat_read(disk: Path, name: str) -> bytes:
    return run(["mtype", "-i", fat(disk), f"::/{name}"], check=True, text=False).stdout


def fat_write(disk: Path, name: str, data: bytes, scratch: Path) -> None:
    local = scratch / name
    local.write_bytes(data)
    run(["mcopy", "-o", "-i", fat(disk), str(local), f"::/{name}"], check=True)


def root_ls(disk: Path, path: str) -> str:
    """`ls` of a folder in the ext4 root partition, by debugfs (read-only, no mount)."""
    offset = partitions(disk)[1]["start"] * SECTOR
    return run(["debugfs", "-R", f"ls -l {path}", f"{disk}?offset={offset}"]).stdout


def root_cat(disk: Path, path: str) -> str:
    offset = partitions(disk)[1]["start"] * SECTOR
    return run(["debugfs", "-R", f"cat {path}", f"{disk}?offset={offset}"]).stdout


def root_write(disk: Path, path: str, data: bytes, scratch: Path) -> None:
    """Write one file (root-owned, 0644) into the ext4 root partition, by debugfs: no mount."""
    offset = partitions(disk)[1]["start"] * SECTOR
    local = scratch / Path(path).name
    local.write_bytes(data)
    commands = [f"mkdir {Path(path).parent}", f"write {local} {path}", f"sif {path} mode 0100644",
                f"sif {path} uid 0", f"sif {path} gid 0"]  # fmt: skip
    run(["debugfs", "-w", "-f", "-", f"{disk}?offset={offset}"], input="\n".join(commands) + "\n", check=True)
    check(root_cat(disk, path).encode() == data, f"could not write {path} into the image")


# Emulation is slow: on this shared machine one frame of detection and classification takes tens of seconds
# (a Pi 4 takes well under one), and the start (ExecStartPre's --check-config, then the daemon) over a minute. The unit's
# own limits (WatchdogSec=30, TimeoutStartSec=120, TimeoutStopSec=10) are scaled for the check by this
# drop-in, in the check's copy of the image only; the mechanisms checked are the same.
EMULATION_DROPIN_PATH = "/etc/systemd/system/emotion-edge.service.d/boot-check-emulation.conf"
EMULATION_DROPIN = b"""# make boot-check: the unit's limits scaled for emulation (tools/boot_check.py)
[Service]
WatchdogSec=180
TimeoutStartSec=900
TimeoutStopSec=60
"""


def user_settings(template: str, values: dict[str, str]) -> bytes:
    """The shipped emotion-edge.txt as a user edits it: each `#name=example` line uncommented with a value,
    saved by a Windows editor (UTF-8 with a BOM, CRLF line ends)."""
    lines = template.splitlines()
    for key, value in values.items():
        for i, line in enumerate(lines):
            if line.startswith(f"#{key}="):
                lines[i] = f"{key}={value}"
                break
        else:
            raise Failed(f"the shipped emotion-edge.txt has no #{key}= line")
    return b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n"


# --- the camera: the sample photos, panned, as an endless MJPEG stream ----------------------------------------


def sample_frames() -> list[np.ndarray]:
    """As pi-check's generated video: each sample photo at 640x480, panned a few pixels a frame."""
    frames = []
    for path in sorted((REPO / "edge" / "samples").glob("*.jpg")):
        image = cv2.resize(cv2.imread(str(path)), (640, 480))
        frames += [np.roll(image, (step * 3, step * 2), axis=(1, 0)) for step in range(12)]
    return frames


# --- the guest -----------------------------------------------------------------------------------------------


class Guest:
    def __init__(self, work: Path, ssh_port: int):
        self.work = work
        self.ssh_port = ssh_port
        self.key = work / "id_ed25519"
        self.known_hosts = work / "known_hosts"

    def _ssh(self, *args: str) -> list[str]:
        options = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=30", "-o", "StrictHostKeyChecking=accept-new",
                   "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "LogLevel=ERROR", "-i", str(self.key),
                   "-o", f"ControlPath={self.work}/ssh-%C", "-o", "ServerAliveInterval=30"]  # fmt: skip
        return ["ssh", *options, "-p", str(self.ssh_port), *args]

    def _command(self, command: str) -> list[str]:
        # Over the shared connection when there is one (ControlMaster=no: use it, else connect alone). A login
        # a command would start and stop pi's user manager each time: most of a minute under emulation.
        return self._ssh("-o", "ControlMaster=no", "pi@127.0.0.1", command)

    def connect(self) -> None:
        """The shared connection, in the background (-f -N) with its output nowhere."""
        command = self._ssh("-o", "ControlMaster=yes", "-o", "ControlPersist=yes", "-f", "-N", "pi@127.0.0.1")
        subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=300, check=False)  # fmt: skip

    def close(self) -> None:
        run(self._ssh("-O", "exit", "pi@127.0.0.1"))

    def ssh(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        try:
            return run(self._command(command), timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(command, 124, "", f"timed out after {timeout} s")

    def out(self, command: str, timeout: float = 120) -> str:
        result = self.ssh(command, timeout)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip()[-300:]
            raise Failed(f"`{command}` failed ({result.returncode}): {tail}")
        return result.stdout

    def raw(self, command: str, timeout: float = 120) -> bytes:
        """A command's stdout as bytes (line ends as they are: text mode would turn CRLF into LF)."""
        result = run(self._command(command), timeout=timeout, text=False)
        if result.returncode != 0:
            raise Failed(f"`{command}` failed ({result.returncode})")
        return result.stdout

    def unit(self, name: str = "emotion-edge") -> dict[str, str]:
        props = "ActiveState,SubState,NRestarts,MainPID,StatusText,Result"
        text = self.out(f"systemctl show {name} -p {props}")
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def qemu_command(
    kernel: Path, initrd: Path, cmdline: str, disk: Path, ssh_port: int, console: Path
) -> list[str]:
    return [
        "nice", "-n", "10", "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", "2",
        "-m", str(MEMORY_MB), "-accel", "tcg,thread=multi",
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline,
        "-drive", f"file={disk},format=raw,if=virtio,cache=unsafe",
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22", "-device", "virtio-net-pci,netdev=net0",
        "-device", "virtio-rng-pci", "-display", "none", "-monitor", "none", "-serial", f"file:{console}",
    ]  # fmt: skip


def guest_cmdline(image_cmdline: str) -> str:
    """The image's own cmdline.txt with its consoles (the Pi's UARTs and HDMI) swapped for the virt board's.
    One allowance for emulation on a shared machine: udev's first pass over the devices takes minutes here,
    past systemd's 90 s wait for a device (a real Pi's take seconds), so the wait is made longer."""
    kept = [arg for arg in image_cmdline.split() if not arg.startswith("console=")]
    return " ".join(["console=ttyAMA0", *kept, f"systemd.default_device_timeout_sec={BOOT_TIMEOUT}"])


def status_messages(sub: Subscriber, after: int = 0) -> list[str]:
    with sub._lock:
        return [p.decode() for t, p, _ in sub.messages[after:] if t == f"emotion/{DEVICE_ID}/status"]


def message_count(sub: Subscriber) -> int:
    with sub._lock:
        return len(sub.messages)


def wait_status(sub: Subscriber, payload: str, after: int, timeout: float) -> bool:
    return bool(wait_for(lambda: payload in status_messages(sub, after), timeout, 0.5))


def wait_restarted(guest: Guest, restarts: int, old_pid: str, timeout: float) -> dict[str, str]:
    def restarted():
        try:
            state = guest.unit()
        except Failed:
            return None
        ok = state.get("ActiveState") == "active" and int(state.get("NRestarts", 0)) > restarts
        return state if ok and state.get("MainPID") not in ("0", old_pid) else None

    state = wait_for(restarted, timeout, 3)
    check(bool(state), f"not restarted within {timeout} s: {guest.unit()}")
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = parser.parse_args(argv)
    steps = Steps()
    work = args.work.resolve()
    status = 1
    with contextlib.ExitStack() as stack:
        try:
            boot_check(args.image.resolve(), work, steps, stack)
            status = 0
        except Failed:
            pass
        except Exception as exc:  # one line in the summary for anything unexpected too
            if not steps.lines or "FAIL" not in steps.lines[-1]:
                steps.lines.append(f"error     {type(exc).__name__}: {exc}")
    commit = (work / "image.commit").read_text().strip()[:12] if (work / "image.commit").exists() else "?"
    summary = [f"boot-check of {args.image.name} (commit {commit}), {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}, "
               f"{time.monotonic() - steps.started:.0f} s in all:", *("  " + line for line in steps.lines),
               f"boot-check: {'PASS' if status == 0 else 'FAIL'}"]  # fmt: skip
    text = "\n".join(summary) + "\n"
    print(text)
    if work.is_dir():
        (work / "boot-check.txt").write_text(text)
    return status


def boot_check(image: Path, work: Path, steps: Steps, stack: contextlib.ExitStack) -> None:
    with steps.step("tools", "qemu, mtools, debugfs, ssh, mosquitto") as result:
        missing = [t for t in ("qemu-system-aarch64", "mtype", "mcopy", "sfdisk", "debugfs", "xz", "ssh",
                               "ssh-keygen", "mosquitto_passwd") if not shutil.which(t, path=os.environ["PATH"] + ":/usr/sbin:/sbin")]  # fmt: skip
        check(not missing, f"missing: {' '.join(missing)} (apt install qemu-system-arm mtools e2fsprogs fdisk "
                           "xz-utils openssh-client mosquitto)")  # fmt: skip
        check(find_mosquitto() is not None, "mosquitto not found")
        check(image.is_file(), f"{image} does not exist: run `sudo make image` first")
        result.append(run(["qemu-system-aarch64", "--version"]).stdout.splitlines()[0])

    with steps.step(
        "disk", "the .img.xz decompressed onto a 4 GiB 'card', settings written to its FAT"
    ) as result:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        commit_file = image.with_name(image.name.removesuffix(".xz").removesuffix(".img") + ".commit")
        if commit_file.exists():
            shutil.copy(commit_file, work / "image.commit")
        disk = work / "disk.img"
        if image.suffix == ".img":  # a raw image (while iterating on the build): copied, holes kept
            run(["cp", "--sparse=always", str(image), str(disk)], check=True)
        else:
            with open(disk, "wb") as handle:
                run(["nice", "-n", "10", "xz", "-dc", str(image)], stdout=handle, check=True, text=False)
        image_size = disk.stat().st_size
        parts = partitions(disk)
        root_part_size = parts[1]["size"] * SECTOR
        os.truncate(disk, DISK_SIZE)
        check([p["type"] for p in parts] == ["c", "83"], f"partition types {[p['type'] for p in parts]}")
        check(not re.search(r"ssh_host_\w+_key", root_ls(disk, "/etc/ssh")), "the image ships SSH host keys")
        check(root_cat(disk, "/etc/machine-id").strip() == "uninitialized", "the image has a machine-id")
        check(root_cat(disk, "/etc/shadow").split("\npi:")[1].split(":")[0] == "*", "pi has a password")
        cmdline = fat_read(disk, "cmdline.txt").decode().strip()
        config_txt = fat_read(disk, "config.txt").decode()
        kernel_name = re.search(r"^kernel=(\S+)", config_txt, re.M).group(1)
        initrd_name = re.search(r"^initramfs (\S+)", config_txt, re.M).group(1)
        (work / "vmlinuz").write_bytes(fat_read(disk, kernel_name))
        (work / "initrd.img").write_bytes(fat_read(disk, initrd_name))
        check("root=LABEL=RASPIROOT" in cmdline, f"cmdline.txt does not boot by label: {cmdline}")
        # The user's side: a key pair, a broker password, the stream.
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "boot-check", "-f", str(work / "id_ed25519")],
            check=True)  # fmt: skip
        password = secrets.token_urlsafe(12)
        wifi_password = "correct horse battery staple"
        broker_port, camera_port = free_port(), free_port()
        settings = {
            "hostname": HOSTNAME,
            "ssh_authorized_key": (work / "id_ed25519.pub").read_text().strip(),
            "wifi_country": "Britain",  # wrong: a two-letter code is wanted
            "wifi_ssid": "Boot check Wi-Fi",
            "wifi_password": f'"{wifi_password}"',
            "mqtt_host": "10.0.2.2",
            "mqtt_port": str(broker_port),
            "mqtt_username": MQTT_USER,
            "mqtt_password": password,
            "device_id": DEVICE_ID,
            "camera": f"http://10.0.2.2:{camera_port}/stream.mjpg",
        }
        root_write(disk, EMULATION_DROPIN_PATH, EMULATION_DROPIN, work)
        template = fat_read(disk, "emotion-edge.txt").decode()
        fat_write(disk, "emotion-edge.txt", user_settings(template, settings), work)
        result.append(
            f"image {image_size >> 20} MiB (root partition {root_part_size >> 20} MiB), card {DISK_SIZE >> 30} GiB"
        )
        result.append(f"kernel {kernel_name}; no host keys, machine-id uninitialized, pi without password")
        result.append("for emulation: WatchdogSec=180, TimeoutStartSec=900, TimeoutStopSec=60 (a drop-in)")

    # The host's side: the broker (with a password, as Home Assistant's add-on has) and the camera.
    passwords = work / "mosquitto.passwd"
    run(["mosquitto_passwd", "-b", "-c", str(passwords), MQTT_USER, password], check=True)
    broker = MosquittoBroker(find_mosquitto(), work, port=broker_port,
                             extra_config=[f"password_file {passwords}", "allow_anonymous false"])  # fmt: skip
    broker.config_path.write_text(
        broker.config_path.read_text() + "log_type information\nconnection_messages true\n"
    )
    broker.start()
    stack.callback(broker.stop)
    camera = stack.enter_context(MjpegServer(sample_frames(), fps=5, port=camera_port))
    sub = stack.enter_context(
        Subscriber(broker, ["emotion/#", "homeassistant/#"], username=MQTT_USER, password=password)
    )
    ssh_port = free_port()
    guest = Guest(work, ssh_port)
    stack.callback(guest.close)

    with steps.step(
        "boot", "qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2, the image's kernel and initrd"
    ) as result:
        console = work / "console.log"
        command = qemu_command(
            work / "vmlinuz", work / "initrd.img", guest_cmdline(cmdline), disk, ssh_port, console
        )
        (work / "qemu-command.txt").write_text(shlex.join(command) + "\n")
        qemu_log = stack.enter_context(open(work / "qemu.log", "wb"))  # noqa: SIM115 - open while qemu runs
        qemu = subprocess.Popen(command, stdout=qemu_log, stderr=subprocess.STDOUT)
        stack.callback(lambda: qemu.poll() is None and (qemu.kill(), qemu.wait()))
        booted = time.monotonic()
        up = wait_for(lambda: qemu.poll() is None and guest.ssh("true", 60).returncode == 0, BOOT_TIMEOUT, 5)
        check(
            qemu.poll() is None,
            f"qemu exited with {qemu.returncode}: {(work / 'qemu.log').read_text()[-300:]}",
        )
        check(bool(up), f"no SSH login within {BOOT_TIMEOUT} s (console: {console})")
        login_s = time.monotonic() - booted
        guest.connect()
        state = guest.ssh("systemctl is-system-running --wait", 600).stdout.strip()
        failed = guest.out("systemctl list-units --failed --plain --no-legend | awk '{print $1}'").split()
        analyze = guest.out("systemd-analyze time").splitlines()[0]
        result.append(f"SSH login with the settings file's key after {login_s:.0f} s; system {state}"
                      + (f" (failed: {' '.join(failed)})" if failed else ""))  # fmt: skip
        result.append(re.sub(r"^Startup finished in ", "", analyze))
        # The wrong wifi_country written on purpose is reported, not a failure: the system comes up whole.
        check(
            state == "running" and not failed, f"system {state}, failed units: {' '.join(failed) or 'none'}"
        )

    with steps.step("settings", "emotion-edge.txt applied, secrets moved, the bad value reported") as result:
        check(guest.out("hostname").strip() == HOSTNAME, f"hostname is {guest.out('hostname').strip()}")
        config = guest.out("sudo cat /etc/emotion-edge/config.yaml")  # 0640 root:emotion-edge
        for line in (f'device_id: "{DEVICE_ID}"', '  host: "10.0.2.2"', f"  port: {broker_port}",
                     f'  username: "{MQTT_USER}"', f'  uri: "{settings["camera"]}"', "  outputs: [stdout, mqtt]"):  # fmt: skip
            check(f"\n{line}\n" in f"\n{config}", f"config.yaml lacks {line!r}")
        stat = guest.out("sudo stat -c '%a %U' /etc/emotion-edge/mqtt_password").strip()
        check(stat == "600 root", f"mqtt_password is {stat}")
        check(
            guest.out("sudo cat /etc/emotion-edge/mqtt_password") == password,
            "mqtt_password does not hold it",
        )
        wpa = guest.out("sudo cat /etc/wpa_supplicant/wpa_supplicant-wlan0.conf")
        check("psk=" in wpa and wifi_password not in wpa, "the Wi-Fi network is not written as a PSK")
        fat_now = guest.raw("cat /boot/firmware/emotion-edge.txt").decode("utf-8-sig")
        check(
            password not in fat_now and wifi_password not in fat_now,
            "a password is still on the FAT partition",
        )
        check(fat_now.count("moved into place") == 2, "the passwords' lines do not say where they went")
        check(f"device_id={DEVICE_ID}\r\n" in fat_now, "the settings file lost its other lines or its CRLF")
        check(
            guest.raw("head -c 3 /boot/firmware/emotion-edge.txt") == b"\xef\xbb\xbf", "the file lost its BOM"
        )
        # -p warning: the step's <4> prefix made these lines warnings, not plain output.
        journal = guest.out("journalctl -b -u emotion-edge-settings -p warning --no-pager -o cat")
        bad = [line for line in journal.splitlines() if "wifi_country" in line and "two-letter" in line]
        check(bool(bad), f"the bad wifi_country is not a warning in the journal: {journal[-400:]}")
        check(bad[0].endswith("got 'Britain'; not applied"), f"the journal's message is cut short: {bad[0]}")
        step = guest.unit("emotion-edge-settings")
        check((step["ActiveState"], step["Result"]) == ("active", "success"), f"the settings step: {step}")
        ready = wait_for(lambda: guest.unit().get("ActiveState") == "active", READY_TIMEOUT, 5)
        check(bool(ready), f"emotion-edge not active within {READY_TIMEOUT} s: {guest.unit()}")
        status_text = guest.unit()["StatusText"]
        check(
            "settings: emotion-edge.txt line" in status_text, f"the daemon's status lacks it: {status_text}"
        )
        checked = guest.ssh("sudo -u emotion-edge /opt/emotion-edge/venv/bin/emotion-edge --check-config "
                            "--config /etc/emotion-edge/config.yaml", 600)  # fmt: skip
        check(
            checked.returncode == 0 and "warning: settings:" in checked.stderr,
            f"--check-config: {checked.stderr[-300:]}",
        )
        # The order the image depends on, from this boot's own timestamps: the step finished before the
        # network, sshd and the daemon started.
        done = int(
            guest.out("systemctl show emotion-edge-settings -p ExecMainExitTimestampMonotonic --value")
        )
        for reader in ("systemd-networkd", "ssh", "emotion-edge"):
            started = guest.out(f"systemctl show {reader} -p ExecMainStartTimestampMonotonic --value").strip()
            check(0 < done < int(started or 0), f"{reader} started before the settings step finished")
        result.append("hostname, config.yaml (4 keys + outputs), mqtt_password 0600 root, Wi-Fi PSK")
        result.append("done before networkd, sshd and the daemon started")
        result.append("both passwords off the FAT (CRLF kept)")
        result.append(f"the step active (success), its journal warning: {bad[0]}")
        result.append("the same in `systemctl status` and --check-config")

    with steps.step("firstboot", "root grown to the card, SSH host keys made on this boot") as result:
        root_size = int(guest.out("findmnt -bno SIZE /").strip())
        partition = int(guest.out("lsblk -bndo SIZE /dev/vda2").strip())
        # To the end of the disk, less the few sectors growpart leaves (at most 1 MiB).
        room = DISK_SIZE - parts[1]["start"] * SECTOR
        check(room - (1 << 20) <= partition <= room, f"/dev/vda2 is {partition} B of {room} B")
        check(
            root_size > 2 * root_part_size,
            f"/ is {root_size >> 20} MiB, the image's {root_part_size >> 20} MiB",
        )
        growlog = guest.out("journalctl -b -u emotion-edge-growroot --no-pager -o cat")
        check("CHANGED" in growlog, f"growroot did not grow it: {growlog[-300:]}")
        key_time = int(guest.out("stat -c %Y /etc/ssh/ssh_host_ed25519_key.pub").strip())
        boot_time = int(guest.out('date -d "$(uptime -s)" +%s').strip())
        check(key_time >= boot_time - 5, "the SSH host key is older than this boot")
        served = run(["ssh-keygen", "-l", "-f", str(guest.known_hosts)]).stdout.split()[1]
        made = guest.out("ssh-keygen -l -f /etc/ssh/ssh_host_ed25519_key.pub").split()[1]
        check(served == made, "the key sshd served is not the one made on first boot")
        result.append(f"/ {root_part_size >> 20} MiB -> {root_size >> 20} MiB ({DISK_SIZE >> 30} GiB card)")
        result.append(f"host key {made[:20]}... made at boot")

    with steps.step("ready", "READY=1 on the stream; discovery and events on MQTT") as result:
        state = guest.unit()
        check(
            state["StatusText"].startswith(f"processing {settings['camera']}"),
            f"status: {state['StatusText']}",
        )
        check(
            state["NRestarts"] == "0", f"restarted {state['NRestarts']} times before anything was done to it"
        )
        online = wait_status(sub, "online", 0, 120)
        check(online, f"no retained online on emotion/{DEVICE_ID}/status")
        event = sub.wait_for(
            lambda m: m[0] == f"emotion/{DEVICE_ID}/events" and json.loads(m[1]).get("faces"), 600
        )
        first = json.loads(event[1])["faces"][0]
        with sub._lock:
            discovery = sorted({t for t, _, _ in sub.messages if t.startswith("homeassistant/")})
        check(bool(discovery), "no Home Assistant discovery config")
        # The daemon's own start line names the detector auto chose: YuNet, from the installed weights.
        started = guest.out("journalctl -b -u emotion-edge --no-pager -o cat | grep -m1 ' detector: '")
        detector = re.search(r"detector: (\S+) \(\S*/edge/models/(\S+)\), chosen by auto:", started)
        check(
            bool(detector) and detector.group(1) == "yunet",
            f"the daemon's detector: {started.strip()[-200:]}",
        )
        ready_at = guest.out("systemctl show emotion-edge -p ExecMainStartTimestamp --value").strip()
        result.append(
            f"active, NRestarts={state['NRestarts']}, started {ready_at.split()[2] if ready_at else '?'}"
        )
        result.append(f"detector {detector.group(1)} ({detector.group(2)}, chosen by auto)")
        result.append(
            f"{len(discovery)} discovery configs; first event: {first['emotion']} {first['confidence']:.2f}"
        )

    with steps.step("watchdog", "SIGSTOP: the watchdog kills the hung daemon, it restarts") as result:
        before = guest.unit()
        mark = message_count(sub)
        stopped = time.monotonic()
        guest.out(f"sudo kill -STOP {before['MainPID']}")
        state = wait_restarted(guest, int(before["NRestarts"]), before["MainPID"], RESTART_TIMEOUT)
        took = time.monotonic() - stopped
        journal = guest.out("journalctl -b -u emotion-edge --no-pager -o cat --since '-15min'")
        check("Watchdog timeout" in journal, "no watchdog timeout in the journal")
        check(wait_status(sub, "online", mark, READY_TIMEOUT), "not back online after the watchdog restart")
        statuses = status_messages(sub, mark)
        check("offline" in statuses, f"no offline (last will) while it was down: {statuses}")
        result.append(
            f"watchdog timeout, restarted in {took:.0f} s (NRestarts {before['NRestarts']} -> {state['NRestarts']})"
        )
        result.append(f"MQTT status: {' -> '.join(statuses)}")

    with steps.step("sigkill", "SIGKILL: the last will, a restart, online again") as result:
        before = guest.unit()
        mark = message_count(sub)
        broker_log = broker.log_path.read_text(errors="replace")
        guest.out(f"sudo kill -KILL {before['MainPID']}")
        check(wait_status(sub, "offline", mark, 120), "the broker published no last will")
        will_line = next((line for line in broker.log_path.read_text(errors="replace")[len(broker_log):].splitlines()
                          if f"emotion-edge-{DEVICE_ID}" in line and "closed its connection" in line), None)  # fmt: skip
        state = wait_restarted(guest, int(before["NRestarts"]), before["MainPID"], RESTART_TIMEOUT)
        check(wait_status(sub, "online", mark, READY_TIMEOUT), "not back online after SIGKILL")
        result.append(
            f"will: offline, restarted (NRestarts {before['NRestarts']} -> {state['NRestarts']}), online"
        )
        if will_line:
            result.append("broker: " + will_line.split(": ", 1)[-1][:60])

    with steps.step("security", "systemd-analyze security inside the booted system") as result:
        text = guest.out("systemd-analyze security emotion-edge.service --no-pager")
        match = re.search(r"Overall exposure level for emotion-edge.service: (\d+(?:\.\d+)?) (\S+)", text)
        check(bool(match), f"no score: {text[-300:]}")
        score = float(match.group(1))
        version = guest.out("systemctl --version").splitlines()[0]
        check(score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}")
        result.append(f"{score} {match.group(2)} ({version})")

    with steps.step(
        "shutdown", "systemctl poweroff: offline from the daemon itself, then power off"
    ) as result:
        mark = message_count(sub)
        broker_log = broker.log_path.read_text(errors="replace")
        asked = guest.ssh("sudo systemctl poweroff", 300)  # 255: the connection went down with the machine
        gone = wait_for(lambda: qemu.poll() is not None, SHUTDOWN_TIMEOUT, 1)
        check(
            asked.returncode in (0, 255) or gone,
            f"poweroff not sent ({asked.returncode}): {asked.stderr[-200:]}",
        )
        check(bool(gone), f"qemu still running {SHUTDOWN_TIMEOUT} s after poweroff")
        check("offline" in status_messages(sub, mark), "no offline published at shutdown")
        new_log = broker.log_path.read_text(errors="replace")[len(broker_log) :]
        client = f"emotion-edge-{DEVICE_ID}"
        clean = [line for line in new_log.splitlines() if client in line and "disconnected" in line]
        unclean = [
            line for line in new_log.splitlines() if client in line and "closed its connection" in line
        ]
        check(bool(clean) and not unclean, f"not a clean disconnect: {new_log[-400:]}")
        console_text = (work / "console.log").read_text(errors="replace")
        check("reboot: Power down" in console_text, "the console does not show a power-down")
        result.append(f"offline published, clean DISCONNECT (no will), qemu exit {qemu.returncode}")
        with sub._lock:
            events = [json.loads(p) for t, p, _ in sub.messages if t == f"emotion/{DEVICE_ID}/events"]
        faces = sum(len(e["faces"]) for e in events)
        result.append(f"{len(events)} events ({faces} faces) received in all")
    camera.close()


if __name__ == "__main__":
    sys.exit(main())
