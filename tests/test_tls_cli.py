"""The certificate as a person meets it: the first-run banner and ``tls-info``; a TLS file
that cannot be used (one line naming it); a certificate that is not valid now (this
device's own is made again, a configured one is warned about)."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from pathlib import Path

import pytest

from server import config as configmod
from server import firstrun
from server.web import certificate
from server.web.certificate import CertificateError
from tests.support import (
    ROOT,
    Vigil,
    der_sha256,
    fingerprint,
    make_certificate,
    server_cmd,
    write_config,
)
from tests.testclient import App


def tls_info(config: Path) -> subprocess.CompletedProcess[str]:
    return server_cmd("tls-info", "--config", str(config))


def test_first_run_shows_the_fingerprint_and_tls_info_repeats_it(
    start_vigil: Callable[..., Vigil],
) -> None:
    vigil = start_vigil()
    cert = vigil.config.parent / "tls.local.crt"
    key = vigil.config.parent / "tls.local.key"
    assert key.stat().st_mode & 0o777 == 0o600
    banner = vigil.wait_for_log("made a TLS certificate")
    assert str(cert) in banner
    log = vigil.log()
    assert der_sha256(cert) in log.partition("made a TLS certificate")[2]
    info = tls_info(vigil.config)
    assert info.returncode == 0, info.stderr
    assert f"SHA-256:     {der_sha256(cert)}" in info.stdout
    assert "DNS:localhost" in info.stdout and "IP Address:127.0.0.1" in info.stdout
    assert "(825 days)" in info.stdout or "(824 days)" in info.stdout
    vigil.stop()
    first = der_sha256(cert)
    again = Vigil(vigil.config)  # a restart keeps the certificate people have accepted
    try:
        again.wait_for_log("listening on https")
        assert der_sha256(cert) == first
        assert again.log().count("made a TLS certificate") == 1  # the first run's only
    finally:
        again.stop()


def test_tls_info_without_a_certificate_says_how_to_get_one(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(f'[http]\nstatic_dir = "{ROOT / "static"}"\n')
    info = tls_info(tmp_path / "config.toml")
    assert info.returncode == 1
    assert info.stderr.startswith("vigil: ") and "no certificate yet" in info.stderr
    assert info.stderr.count("\n") == 1


def test_a_certificate_near_its_expiry_is_warned_about(
    start_vigil: Callable[..., Vigil], tmp_path: Path
) -> None:
    cert, key = make_certificate(tmp_path, ["DNS:localhost"])  # valid for 2 days
    vigil = start_vigil({"tls": {"cert": str(cert), "key": str(key)}})
    line = vigil.wait_for_log("TLS certificate expires in")
    assert "WARNING" in line and ("2 day(s)" in line or "1 day(s)" in line)
    assert "made a TLS certificate" not in vigil.log()  # its own pair, none made


# -- the TLS files: every problem is one line naming the file -------------------------


def run(config: Path) -> subprocess.CompletedProcess[str]:
    """``python -m server --config CONFIG`` expected to stop at once (a problem at start)."""
    return server_cmd("--config", str(config))


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def tls_files(tmp_path: Path, case: str) -> tuple[Path, Path, str]:
    """A [tls] cert and key with one thing wrong, and the words the one line must have."""
    made = tmp_path / "made"
    made.mkdir()
    cert, key = make_certificate(made, ["DNS:localhost", "IP:127.0.0.1"])
    other_cert, other_key = make_certificate(made, ["DNS:localhost"], "other")
    directory = tmp_path / "a-directory"
    directory.mkdir()
    garbage = made / "garbage.pem"
    garbage.write_text("this is not PEM\n")
    os.chmod(garbage, 0o600)
    if case == "cert-is-a-directory":
        return directory, key, f"[tls] cert {directory}: Is a directory"
    if case == "key-is-a-directory":
        return cert, directory, f"[tls] key {directory}: Is a directory"
    if case == "cert-is-garbage":
        return garbage, key, f"[tls] cert {garbage}: no PEM certificate in it"
    if case == "key-is-garbage":
        return cert, garbage, f"[tls] key {garbage}: no PEM private key in it"
    if case == "cert-is-missing":
        return made / "none.crt", key, f"[tls] cert {made / 'none.crt'}: No such file or directory"
    if case == "key-of-another-certificate":
        return cert, other_key, f"[tls] key {other_key} is not the key of [tls] cert {cert}"
    if case == "key-others-may-read":
        os.chmod(key, 0o640)
        return cert, key, f"[tls] key {key}: other users may read it (chmod 600 {key})"
    if case == "key-with-a-passphrase":
        locked = made / "locked.key"
        argv = ["openssl", "pkey", "-in", str(key), "-aes256", "-passout", "pass:secret"]
        subprocess.run([*argv, "-out", str(locked)], check=True)
        os.chmod(locked, 0o600)
        return cert, locked, f"[tls] key {locked} is encrypted: vigil needs it without a passphrase"
    if case == "cert-is-a-fifo":
        fifo = made / "cert.fifo"
        os.mkfifo(fifo)
        return fifo, key, f"[tls] cert {fifo}: not a regular file"
    del other_cert
    raise AssertionError(case)


TLS_FILE_CASES = [
    "cert-is-a-directory",
    "key-is-a-directory",
    "cert-is-garbage",
    "key-is-garbage",
    "cert-is-missing",
    "key-of-another-certificate",
    "key-others-may-read",
    "key-with-a-passphrase",
    "cert-is-a-fifo",
]


@pytest.mark.parametrize("case", TLS_FILE_CASES)
def test_tls_file_problems_are_one_line_naming_the_file(tmp_path: Path, case: str) -> None:
    """Not "cannot listen on [control] … (SCTP): Is a directory" (SCTP is off here)."""
    cert, key, words = tls_files(tmp_path, case)
    with pytest.raises(CertificateError) as e:
        certificate.load(cert, key, own=False)
    assert str(e.value).startswith(words), str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "case", ["cert-is-a-directory", "key-is-a-directory", "key-is-garbage", "key-others-may-read"]
)
def test_a_vigil_with_a_bad_tls_file_stops_in_one_line(tmp_path: Path, case: str) -> None:
    cert, key, words = tls_files(tmp_path, case)
    config = write_config(tmp_path, {"tls": {"cert": str(cert), "key": str(key)}})
    done = run(config)
    assert done.returncode != 0
    line = one_line(done.stderr)
    assert line.startswith("vigil: ") and words in line, line
    assert "SCTP" not in line and "cannot listen" not in line


def test_check_config_checks_the_tls_files(tmp_path: Path) -> None:
    cert, key, words = tls_files(tmp_path, "key-others-may-read")
    config = write_config(tmp_path, {"tls": {"cert": str(cert), "key": str(key)}})
    done = server_cmd("check-config", "--config", str(config))
    assert done.returncode == 1
    assert words in one_line(done.stderr)
    os.chmod(key, 0o600)
    done = server_cmd("check-config", "--config", str(config))
    assert done.returncode == 0, done.stderr


# -- a certificate that is not valid now ----------------------------------------------------


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def desc(not_before: str, not_after: str) -> certificate.Description:
    return certificate.Description(
        Path("/state/tls.local.crt"), "AA:BB", ("DNS:pi",), at(not_before), at(not_after)
    )


def test_valid_at_and_days_left_take_now() -> None:
    d = desc("2026-12-01", "2029-03-05")
    assert d.valid_at(at("2026-12-01")) and d.valid_at(at("2029-03-05"))
    assert not d.valid_at(at("2026-11-30 23:59")) and not d.valid_at(at("2029-03-05 00:01"))
    assert d.days_left(at("2029-03-03")) == 2
    assert d.invalid_because(at("2027-01-01")) is None
    assert d.invalid_because(at("2026-01-01")) == "not valid before 2026-12-01 00:00 UTC"
    assert d.invalid_because(at("2030-01-01")) == "expired on 2029-03-05 00:00 UTC"


NOW = "2026-12-03 06:00"


@pytest.mark.parametrize(
    ("not_before", "not_after", "now", "why"),
    [
        ("2026-12-01", "2029-03-05", NOW, None),  # valid
        # made on a Pi without a real-time clock, before time sync: 1970 to 1972
        ("1970-01-01", "1972-04-05", NOW, "made while the clock was wrong (it said 1970-01-01"),
        # made then, and still valid now: made again all the same (its life is cut short)
        ("2026-06-01", "2028-09-03", NOW, "made while the clock was wrong (it said 2026-06-01"),
        # made while the clock was ahead: not valid yet
        (
            "2035-01-01",
            "2037-04-06",
            NOW,
            "not valid before 2035-01-01 00:00 UTC (the clock was ahead",
        ),
        ("2026-12-03 06:05", "2029-03-05", NOW, None),  # minutes ahead: a clock being slewed
        ("2026-12-01", "2026-12-02", NOW, "expired on 2026-12-02 00:00 UTC"),  # its days are over
        # the clock is not set now (1970, or systemd's build date): nothing is judged
        ("2026-12-01", "2029-03-05", "1970-01-01 00:00:30", None),
        ("1970-01-01", "1972-04-05", "2024-02-01", None),
    ],
)
def test_when_this_devices_certificate_is_made_again(
    not_before: str, not_after: str, now: str, why: str | None
) -> None:
    reason = certificate.remake_reason(desc(not_before, not_after), at(now))
    if why is None:
        assert reason is None
    else:
        assert reason is not None and why in reason, reason


@pytest.mark.parametrize(
    ("own", "not_before", "not_after", "now", "level", "words"),
    [
        (False, "2026-12-01", "2029-03-05", NOW, None, ""),
        (False, "2026-12-01", "2026-12-04", NOW, logging.WARNING, "expires in 1 day(s): renew it"),
        (False, "1970-01-01", "1972-01-01", NOW, logging.ERROR, "is not valid now: expired on"),
        (False, "2035-01-01", "2036-01-01", NOW, logging.ERROR, "not valid now: not valid before"),
        # a configured one while the clock is not set: the clock is the likely culprit
        (False, "2026-12-01", "2029-03-05", "1970-01-01", logging.ERROR, "the clock says 1970"),
        (True, "2026-12-01", "2029-03-05", NOW, None, ""),
        (True, "2026-12-01", "2026-12-20", NOW, logging.WARNING, "vigil makes a new one then"),
        (True, "2026-12-01", "2029-03-05", "1970-01-01", logging.WARNING, "the clock says 1970"),
    ],
)
def test_what_is_said_about_the_certificate_in_use(
    own: bool, not_before: str, not_after: str, now: str, level: int | None, words: str
) -> None:
    said = certificate.warning(desc(not_before, not_after), at(now), own=own)
    if level is None:
        assert said is None
    else:
        assert said is not None and said[0] == level and words in said[1], said
        assert "\n" not in said[1]


def dated_certificate(directory: Path, stem: str, start: str, end: str) -> tuple[Path, Path]:
    """A self-signed pair valid from ``start`` to ``end`` (YYYYMMDDHHMMSSZ), as if made while
    the clock said so: ``openssl ca -selfsign`` takes both dates on Debian 12's OpenSSL 3.0
    (``req -x509 -not_before`` needs 3.4)."""
    work = directory / f".{stem}-ca"
    work.mkdir()
    (work / "index.txt").write_text("")
    (work / "serial").write_text("01\n")
    (work / "ca.cnf").write_text(
        "[ca]\ndefault_ca = here\n[here]\ndatabase = index.txt\nnew_certs_dir = .\n"
        "serial = serial\ndefault_md = sha256\npolicy = any\ncopy_extensions = copy\n"
        "unique_subject = no\n[any]\ncommonName = supplied\n"
    )
    cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
    openssl = ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt"]
    openssl += ["ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost/O=vigil"]
    openssl += ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    subprocess.run(
        [*openssl, "-keyout", str(key), "-out", "req.csr"],
        cwd=work,
        check=True,
        capture_output=True,
    )
    sign = ["openssl", "ca", "-batch", "-config", "ca.cnf", "-selfsign", "-keyfile", str(key)]
    subprocess.run(
        [
            *sign,
            "-in",
            "req.csr",
            "-startdate",
            start,
            "-enddate",
            end,
            "-notext",
            "-out",
            str(cert),
        ],
        cwd=work,
        check=True,
        capture_output=True,
    )
    os.chmod(key, 0o600)
    return cert, key


def served(port: int, cafile: Path) -> bytes:
    """The certificate served on ``port``, checked against ``cafile`` (its dates too)."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


@pytest.mark.parametrize(
    ("start", "end", "why"),
    [
        ("19700101000000Z", "19720405000000Z", "the clock was wrong (it said 1970-01-01"),
        ("20350101000000Z", "20370406000000Z", "not valid before 2035-01-01 00:00 UTC"),
    ],
    ids=["made-in-1970", "made-in-2035"],
)
def test_this_devices_certificate_not_valid_now_is_made_again_at_start(
    tmp_path: Path, start: str, end: str, why: str
) -> None:
    config = write_config(tmp_path)
    old, _key = dated_certificate(tmp_path, "tls.local", start, end)
    before = der_sha256(old)
    vigil = Vigil(config)
    try:
        line = vigil.wait_for_log("made a new TLS certificate for this device")
        assert "WARNING" in line and why in line, line
        new = der_sha256(vigil.cert)
        assert new != before and f"SHA-256 {new}" in line
        assert vigil.tls_port is not None
        assert fingerprint(served(vigil.tls_port, vigil.cert)) == new  # valid now, by ssl
        assert (tmp_path / "tls.local.key").stat().st_mode & 0o777 == 0o600
        assert "Traceback" not in vigil.log()
    finally:
        vigil.stop()


def test_a_configured_certificate_not_valid_now_is_an_error_and_left_alone(
    tmp_path: Path,
) -> None:
    made = tmp_path / "made"
    made.mkdir()
    cert, key = dated_certificate(made, "mine", "19700101000000Z", "19720101000000Z")
    before = cert.read_bytes(), key.read_bytes()
    vigil = Vigil(write_config(tmp_path, {"tls": {"cert": str(cert), "key": str(key)}}))
    try:
        line = vigil.wait_for_log(r"is not valid now")
        assert "ERROR" in line and str(cert) in line and "expired on 1972-01-01" in line, line
        assert "made a new TLS certificate" not in vigil.log()
        assert vigil.tls_port is not None
        with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
            served(vigil.tls_port, cert)  # served as it is: its owner renews it
        assert (cert.read_bytes(), key.read_bytes()) == before
    finally:
        vigil.stop()


def handshake(ctx: ssl.SSLContext, cafile: Path) -> bytes:
    """A TLS handshake in memory with server context ``ctx``; the certificate it presents,
    checked against ``cafile`` (its dates too)."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    trusting = ssl.create_default_context(cafile=str(cafile))
    client = trusting.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = ctx.wrap_bio(s_in, s_out, server_side=True)
    done: set[int] = set()
    for _ in range(10):
        for side, out, peer_in in ((client, c_out, s_in), (server, s_out, c_in)):
            try:
                side.do_handshake()
                done.add(id(side))
            except ssl.SSLWantReadError:
                pass
            peer_in.write(out.read())
        if len(done) == 2:
            break
    der = client.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_the_minute_check_makes_a_certificate_that_became_invalid_again(
    make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    """The clock was set while vigil ran: the certificate it made while the clock said 1970
    is made again at the next check (once a minute), and new handshakes get the new one."""
    server = make_app().server
    state = server.config.state.dir
    old, old_key = dated_certificate(state, "tls.local", "19700101000000Z", "19720405000000Z")
    before = der_sha256(old)
    # as loaded while the clock still said 1970 (loading it now would make it again at once)
    https = server.https
    https.context, https.description = certificate.load(old, old_key, own=True)
    first = https.context
    with caplog.at_level(logging.INFO):
        for _ in range(59):
            server.sweep()
        assert https.context is first and der_sha256(old) == before
        server.sweep()  # the 60th second
        assert https.context is not first
        new = der_sha256(state / "tls.local.crt")
        assert new != before
        assert https.description is not None and https.description.fingerprint == new
        assert https.description.valid_at(datetime.now(UTC))
        assert https.context is not None
        assert fingerprint(handshake(https.context, state / "tls.local.crt")) == new
        made = [r.getMessage() for r in caplog.records if "made a new TLS" in r.getMessage()]
        assert len(made) == 1 and f"SHA-256 {new}" in made[0], made
        assert "clock was wrong (it said 1970-01-01" in made[0]
        for _ in range(120):
            server.sweep()
        assert der_sha256(state / "tls.local.crt") == new  # made once


def test_a_certificate_made_while_the_clock_is_not_set_says_it_will_be_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Boot(datetime):
        """A Pi without a real-time clock, before time sync."""

        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Boot:
            return cls(1970, 1, 1, 0, 0, 30, tzinfo=UTC)

    monkeypatch.setattr(firstrun, "datetime", Boot)
    firstrun.ensure_certificate(configmod.load(write_config(tmp_path)))
    banner = capsys.readouterr().err
    assert "made a TLS certificate for this device" in banner
    assert "The clock says 1970-01-01 00:00 UTC, which cannot be right" in banner
    assert "vigil makes this certificate again once it is" in banner


def test_a_chain_file_is_described_by_its_first_certificate(tmp_path: Path) -> None:
    """A fullchain.pem (the certificate, then its CA's): the fingerprint of the first."""
    cert, key = make_certificate(tmp_path, ["DNS:localhost"])
    ca, _ = make_certificate(tmp_path, ["DNS:ca"], "ca")
    chain = tmp_path / "fullchain.pem"
    chain.write_bytes(cert.read_bytes() + ca.read_bytes())
    _ctx, described = certificate.load(chain, key, own=False)
    assert described.fingerprint == der_sha256(cert) and described.names == ("DNS:localhost",)
