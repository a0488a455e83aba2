"""Certificates for DICOM TLS tests and benchmarks, made by openssl: a site CA, nodes it signed
(with 127.0.0.1 and localhost as subject alternative names) and a self-signed rogue."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..errors import DicomVaultError

Pki = dict[str, tuple[Path, Path]]  # name -> (key, certificate)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def issue(folder: Path, name: str, ca: tuple[Path, Path] | None, days: int = 2) -> tuple[Path, Path]:
    """(key, certificate) for `name`, signed by `ca` (key, cert), or self-signed if None."""
    key, crt = folder / f"{name}.key", folder / f"{name}.crt"
    if ca is None:
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
                 "-days", str(days), "-subj", f"/CN={name}")
        return key, crt
    csr, ext = folder / f"{name}.csr", folder / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]), "-CAcreateserial",
             "-out", str(crt), "-days", str(days), "-extfile", str(ext))
    return key, crt


def make_pki(folder: Path) -> Pki:
    """ca, server, client, peer (signed by ca), expired (signed by ca, its validity ended
    yesterday) and rogue (self-signed), in `folder`."""
    if shutil.which("openssl") is None:
        raise DicomVaultError("openssl is needed to make the certificates (Debian package openssl)")
    folder.mkdir(parents=True, exist_ok=True)
    ca = issue(folder, "ca", None)
    return {"ca": ca, "server": issue(folder, "server", ca), "client": issue(folder, "client", ca),
            "peer": issue(folder, "peer", ca), "expired": issue(folder, "expired", ca, days=-1),
            "rogue": issue(folder, "rogue", None)}


def dcmtk_tls_args(pki: Pki, who: str) -> list[str]:
    """dcmtk's options for DICOM TLS as `who`, trusting the site CA."""
    key, crt = pki[who]
    return ["+tls", str(key), str(crt), "-pw", "+cf", str(pki["ca"][1])]
