"""The original RADICAL Edge, as a comparison target for ``bench.proxy --orbit``.

The original is published on PyPI as ``radical-orbit`` (RADICAL Edge renamed: bridge →
"broker", edge → "endpoint"). It is installed into a virtualenv of its own under
``~/.cache/radical-edge-bench/`` (``$RADICAL_EDGE_BENCH_CACHE`` moves it), created on first
use with ``python -m venv`` + ``pip install`` and reused after; never into the project's venv.

One broker (on 127.0.0.1, hosting no plugins of its own) and one endpoint named like ours,
serving only its ``sysinfo`` plugin, are started; the measured route is the one its
discovery answer (``POST /endpoint/list``) gives for sysinfo plus ``/version``, which is
``/{endpoint}/sysinfo/version``, a built-in route that needs no session (as ours).

Variants:

* ``http``   — its own broker code and uvicorn settings, except TLS: served plain, as our
  bridge and the bare app are in this benchmark, and its log level at WARNING like ours.
* ``https``  — as shipped: its ``radical-orbit-broker.py`` script, which refuses to start
  without a certificate and key (a self-signed pair is made here), uvicorn's access log on.
* ``uvloop`` — as ``http`` with uvloop and httptools added (``pip install radical-orbit``
  brings plain ``uvicorn``, i.e. the pure-Python h11 parser and the asyncio loop; our
  bridge and the bare app run on uvloop + httptools), in a second cached venv.

Everything runs with ``HOME`` pointed at a temporary directory, so nothing is written to
``~/.radical``; the shared ingress token is passed in the environment.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.live import free_port

ORBIT_PACKAGE = "radical-orbit"
ORBIT_VERSION = os.environ.get("RADICAL_EDGE_BENCH_ORBIT_VERSION", "0.7.0")
CACHE = Path(os.environ.get("RADICAL_EDGE_BENCH_CACHE", Path.home() / ".cache" / "radical-edge-bench"))
VARIANTS = ("http", "https", "uvloop")
_VENVS = {"http": ("orbit-venv", []), "https": ("orbit-venv", []),
          "uvloop": ("orbit-venv-uvloop", ["uvloop", "httptools"])}


class OrbitUnavailable(RuntimeError):
    """The original cannot be run here; the message says why."""


def _tail(text: str, lines: int = 15) -> str:
    """The last lines of a tool's output, without pip's notes about ignored local indexes."""
    return "\n".join([line for line in text.splitlines() if "is ignored" not in line][-lines:])


def _installed_version(python: Path) -> str | None:
    if not python.exists():
        return None
    result = subprocess.run([str(python), "-c", "import importlib.metadata as m, radical.orbit; "
                             "print(m.version('radical.orbit'))"], capture_output=True, text=True, timeout=120)
    return result.stdout.strip() if result.returncode == 0 else None


def ensure_venv(variant: str, log=print) -> Path:
    """The Python of the cached venv for ``variant``, creating it on first use."""
    name, extra = _VENVS[variant]
    venv = CACHE / name
    python = venv / "bin" / "python"
    if _installed_version(python) == ORBIT_VERSION and all(
            subprocess.run([str(python), "-c", f"import {pkg}"], capture_output=True).returncode == 0
            for pkg in extra):
        return python
    log(f"[orbit] installing {ORBIT_PACKAGE}=={ORBIT_VERSION} {' '.join(extra)} into {venv} (first use)")
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    # The base interpreter, not this venv's, so nothing of ours leaks in.
    base = getattr(sys, "_base_executable", None) or sys.executable
    result = subprocess.run([base, "-m", "venv", str(venv)], capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        raise OrbitUnavailable(f"python -m venv failed:\n{_tail(result.stdout + result.stderr)}")
    try:
        result = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                 f"{ORBIT_PACKAGE}=={ORBIT_VERSION}", *extra],
                                capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        result = subprocess.CompletedProcess([], 1, "", "timed out after 900 s")
    if result.returncode != 0 or _installed_version(python) != ORBIT_VERSION:
        shutil.rmtree(venv, ignore_errors=True)  # a half-made venv is never reused
        raise OrbitUnavailable(f"pip install {ORBIT_PACKAGE}=={ORBIT_VERSION} into {venv} failed "
                               f"(is PyPI reachable?):\n{_tail(result.stdout + result.stderr)}")
    return python


_MAKE_CERT = """
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256()))
open(sys.argv[1], "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(sys.argv[2], "wb").write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
"""

# The shipped broker's run(), minus TLS: same Broker, same uvicorn settings otherwise.
_BROKER_HTTP = """
import logging, os, sys
import uvicorn
import radical.orbit.logging_config as lc
from radical.orbit.broker import Broker
host, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
lc.configure_logging(logging.WARNING, log_file=os.environ["RADICAL_ORBIT_LOG_FILE"])
broker = Broker(cert=cert, key=key, host=host, port=port, plugins="")
kwargs = broker._uvicorn_kwargs()
kwargs.pop("ssl_certfile")
kwargs.pop("ssl_keyfile")
kwargs["log_level"] = "warning"
uvicorn.run(broker.app, host=host, port=port, **kwargs)
"""


def make_cert(python: Path, cert: Path, key: Path) -> None:
    result = subprocess.run([str(python), "-c", _MAKE_CERT, str(cert), str(key)], capture_output=True, text=True)
    if result.returncode != 0:
        if shutil.which("openssl") is None:
            raise OrbitUnavailable("cannot make the TLS certificate its broker requires: neither the 'cryptography' "
                                   f"package in its venv nor openssl works:\n{_tail(result.stderr)}")
        subprocess.run(["openssl", "req", "-x509", "-nodes", "-days", "1", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-keyout", str(key), "-out", str(cert), "-subj",
                        "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       check=True, capture_output=True)
    key.chmod(0o600)


@dataclass
class OrbitSystem:
    """A running original broker + one endpoint with sysinfo."""

    variant: str
    work: Path
    edge: str = "bench"
    plugins: str = "sysinfo"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown orbit variant {self.variant!r} (choose from {', '.join(VARIANTS)})")
        self.broker: subprocess.Popen | None = None
        self.endpoint: subprocess.Popen | None = None
        self.token = secrets.token_urlsafe(32)
        self.port = free_port()
        scheme = "https" if self.variant == "https" else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.version = ORBIT_VERSION

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, log=print) -> OrbitSystem:
        """Install on first use, start its broker and endpoint, wait for the registration.
        Whatever goes wrong comes out as :class:`OrbitUnavailable` with the reason."""
        try:
            return self._start(log)
        except OrbitUnavailable:
            raise
        except Exception as exc:
            raise OrbitUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def _start(self, log) -> OrbitSystem:
        python = ensure_venv(self.variant, log)
        self.version = _installed_version(python) or ORBIT_VERSION
        home = self.work / "home"
        home.mkdir(parents=True, exist_ok=True)
        cert, key = self.work / "broker_cert.pem", self.work / "broker_key.pem"
        make_cert(python, cert, key)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RADICAL_ORBIT_", "VIRTUAL_ENV", "PYTHON"))}
        env.update({"HOME": str(home), "RADICAL_ORBIT_BROKER_TOKEN": self.token, "RADICAL_ORBIT_LOG_LVL": "WARNING",
                    "PYTHONUNBUFFERED": "1"})
        scripts = python.parent
        if self.variant == "https":
            broker_cmd = [str(python), str(scripts / "radical-orbit-broker.py"), "--host", "127.0.0.1",
                          "--port", str(self.port), "--cert", str(cert), "--key", str(key), "--plugins", ""]
        else:
            broker_cmd = [str(python), "-c", _BROKER_HTTP, "127.0.0.1", str(self.port), str(cert), str(key)]
        self.broker_log = self.work / "broker.log"
        self.endpoint_log = self.work / "endpoint.log"
        with open(self.broker_log, "ab") as out:
            self.broker = subprocess.Popen(broker_cmd, stdout=out, stderr=subprocess.STDOUT, cwd=self.work,
                                           env={**env, "RADICAL_ORBIT_LOG_FILE": str(self.work / "broker-orbit.log")})
        self._wait(lambda: self._get("/endpoints").status_code == 200, 60, "its broker")
        endpoint_cmd = [str(python), str(scripts / "radical-orbit-endpoint.py"), "--name", self.edge, "--url", self.url,
                        "--plugins", self.plugins, "--log-level", "WARNING"]
        if self.variant == "https":
            endpoint_cmd += ["--cert", str(cert)]
        with open(self.endpoint_log, "ab") as out:
            self.endpoint = subprocess.Popen(
                endpoint_cmd, stdout=out, stderr=subprocess.STDOUT, cwd=self.work,
                env={**env, "RADICAL_ORBIT_LOG_FILE": str(self.work / "endpoint-orbit.log")})
        self._wait(self._edge_online, 60, "its endpoint to register")
        return self

    def stop(self) -> None:
        for proc in (self.endpoint, self.broker):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def __enter__(self) -> OrbitSystem:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- REST --------------------------------------------------------------------------------

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def _get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.headers, timeout=5, verify=False)

    def _edge_online(self) -> bool:
        body = self._get("/endpoints").json()
        return any(e["name"] == self.edge and e["connected"] and set(self.plugins.split(",")) <= set(e["plugins"])
                   for e in body["endpoints"])

    def version_url(self) -> str:
        """``…/sysinfo/version`` of our endpoint, from the discovery answer, checked once."""
        try:
            listing = httpx.post(self.url + "/endpoint/list", headers=self.headers, timeout=5, verify=False)
            listing.raise_for_status()
            namespace = listing.json()["data"]["endpoints"][self.edge]["plugins"]["sysinfo"]["namespace"]
            url = f"{self.url}{namespace}/version"
            probe = httpx.get(url, headers=self.headers, timeout=10, verify=False)
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            raise OrbitUnavailable(f"its discovery answer (POST /endpoint/list) has no usable sysinfo route: "
                                   f"{type(exc).__name__}: {exc}") from exc
        if probe.status_code != 200:
            raise OrbitUnavailable(f"GET {url} answered {probe.status_code}: {probe.text[:300]}")
        self.probe = probe.json()
        return url

    def _wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            for proc, log in ((self.broker, self.broker_log), (self.endpoint, self.endpoint_log)):
                if proc is not None and proc.poll() is not None:
                    raise OrbitUnavailable(f"its {log.stem} exited with {proc.returncode} while waiting for {what}:\n"
                                           f"{_tail(log.read_text(errors='replace'))}")
            try:
                if predicate():
                    return
            except Exception as exc:
                last = exc
            time.sleep(0.1)
        logs = "\n".join(f"--- {p.name}\n{_tail(p.read_text(errors='replace'))}"
                         for p in (self.broker_log, self.endpoint_log) if p.exists())
        raise OrbitUnavailable(f"timed out waiting for {what} (last error: {last})\n{logs}")

    def label(self) -> str:
        kind = {"http": "HTTP", "https": "HTTPS as shipped", "uvloop": "HTTP, +uvloop/httptools"}[self.variant]
        return f"original RADICAL Edge (radical-orbit {self.version}) {kind}"
