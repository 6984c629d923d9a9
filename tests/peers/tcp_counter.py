"""A TCP relay that counts the connections it accepts, as a test peer: put in front of a real
service (Kafka's bootstrap address), it tells how many clients a process opened. A Kafka client
connects to the bootstrap address once, when it starts, and then to the brokers the metadata
names, so each connection here is one client made."""
from __future__ import annotations

import socket
import threading


class TcpCounter:
    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.accepted = 0
        self.lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._closing = False
        self._thread = threading.Thread(target=self._accept, name="tcp-counter", daemon=True)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def __enter__(self) -> "TcpCounter":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._closing = True
        self._listener.close()
