"""A localhost TCP proxy that can slow the broker-to-client direction: a congested link, for MQTT tests.

Client -> broker bytes pass at once; broker -> client bytes are held `delay` seconds each (so PUBACKs
arrive late and paho's in-flight window fills up). When the client's side ends, the broker's side is
closed at once, as a real network drop would look to the broker.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class SlowLink:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1"):
        self.host = host
        self.upstream = (host, upstream_port)
        self.delay = 0.0  # seconds each broker -> client chunk is held; change it at any time
        self._server = socket.create_server((host, 0))
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name="slowlink-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            broker = socket.create_connection(self.upstream)
            self._sockets += [client, broker]
            threading.Thread(target=self._pump, args=(client, broker, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(broker, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, slow: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if slow and self.delay:
                    time.sleep(self.delay)
                sink.sendall(chunk)
        except OSError:
            pass
        for sock in (source, sink):  # one side ended: end the other at once
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        for sock in self._sockets:
            sock.close()

    def __enter__(self) -> SlowLink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
