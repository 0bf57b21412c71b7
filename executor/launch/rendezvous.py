"""The rendezvous endpoint of a multi-node run (torchrun's c10d backend, HOST:PORT of the node that hosts
it): checked before anything starts, so a typo or an unreachable node ends in one line instead of a
torchrun agent that waits out its join timeout.

c10d's TCP store is served by the agent whose machine owns HOST (torch's own test); every other agent
connects to it. So node 0 must run where HOST points, and the others can check the port answers."""

from __future__ import annotations

import ipaddress
import socket
import time

__all__ = ["parse_endpoint", "check_endpoint", "is_local_host", "is_loopback", "wait_for_endpoint"]


def parse_endpoint(endpoint: str, *, default_port: int | None = None) -> tuple[str, int]:
    """(host, port) of 'HOST:PORT' ('[v6]:PORT' too); ValueError naming the form otherwise."""
    text = endpoint.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, ""
    host = host.strip("[]")
    if not port_text and default_port is not None:
        port_text = str(default_port)
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"rdzv_endpoint={endpoint!r}: give HOST:PORT with a port in 1-65535, e.g. node0:29500")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine's loopback (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolve(host: str) -> set[str]:
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise ValueError(f"rdzv_endpoint: cannot resolve host {host!r} ({exc}); check the name of node 0") from None


def is_local_host(host: str) -> bool:
    """Whether `host` resolves to an address this machine can bind (so its agent hosts the store)."""
    for address in _resolve(host):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((address, 0))
            return True
        except OSError:
            continue
    return False


def check_endpoint(endpoint: str, *, hosts_it: bool) -> tuple[str, int]:
    """Parse and resolve `endpoint`; with `hosts_it` (node 0) its host must be this machine. A shell
    variable ('$MASTER_ADDR:29500', resolved on each node) is accepted as it is."""
    host, port = parse_endpoint(endpoint)
    if host.startswith("$"):
        return host, port
    local = is_local_host(host)
    if hosts_it and not local:
        raise ValueError(f"rdzv_endpoint: {host!r} is not an address of this machine, but node 0 hosts the "
                         f"rendezvous; run node 0 on {host} (or point --rdzv-endpoint at this machine)")
    return host, port


def wait_for_endpoint(endpoint: str, *, timeout_s: float, poll_s: float = 0.5, field: str = "rdzv_endpoint",
                      hint: str = "start node 0 first (it hosts the rendezvous) or check --rdzv-endpoint") -> None:
    """Wait until something accepts TCP connections at `endpoint` (node 0's rendezvous store, a Ray head),
    at most `timeout_s`; ValueError naming `field` and saying what to start (`hint`) otherwise."""
    host, port = parse_endpoint(endpoint)
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(2.0, timeout_s))):
                return
        except OSError as exc:
            last = exc.strerror or type(exc).__name__
        if time.monotonic() >= deadline:
            raise ValueError(f"{field}: nothing answers at {host}:{port} after {timeout_s:g} s ({last}); {hint}")
        time.sleep(poll_s)
