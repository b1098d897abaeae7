"""Flower-17 from the Oxford VGG page: resumable, checksummed download and atomic extraction.

    python augment.py                         # downloads into data/ when no --source is given
    python -c "from flowercam.data import download; download.fetch_oxford('data')"
"""

import hashlib
import os
import shutil
import tarfile
import urllib.request
from pathlib import Path

from tqdm import tqdm

from flowercam.core import DISK_ERRNOS, UserError, disk_error

BASE_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/17/"
SPLITS_MD5 = "4828cddfd0d803c5abbdebcb1e148a1e"


def download(url, dest, md5=None):
    """Stream url to dest with a progress bar; a leftover dest.part is resumed (HTTP Range)."""
    dest, part = Path(dest), Path(str(dest) + ".part")
    done = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            if response.status != 206:  # server ignored the range: start again
                done = 0
            total = int(response.headers.get("Content-Length") or 0) + done
            bar = tqdm(total=total or None, initial=done, unit="B", unit_scale=True, desc=dest.name)
            with open(part, "ab" if done else "wb") as f, bar:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
    except OSError as err:  # urllib.error.URLError included
        if err.errno in DISK_ERRNOS:  # the disk, not the network: say which file and what to do
            raise disk_error(part, err) from None
        reason = getattr(err, "reason", err)
        raise UserError(f"download of {url} failed ({reason}); rerun to resume, or use "
                        "--source DIR with the images already on disk") from err
    if md5 and hashlib.md5(part.read_bytes()).hexdigest() != md5:
        part.unlink()
        raise UserError(f"{url} downloaded with a wrong md5 checksum; rerun, or use --source DIR")
    os.replace(part, dest)


def fetch_oxford(data_dir, base_url=BASE_URL):
    """data/jpg/ and data/datasplits.mat from the Oxford VGG page, unless already there."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "datasplits.mat").exists():
        download(base_url + "datasplits.mat", data_dir / "datasplits.mat", SPLITS_MD5)
    if (data_dir / "jpg").is_dir():
        return
    tgz = data_dir / "17flowers.tgz"
    if not tgz.exists():
        download(base_url + "17flowers.tgz", tgz)
    tmp = data_dir / ".extract-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tarfile.open(tgz) as tar:
            tar.extractall(tmp, filter="data")
    except (tarfile.TarError, OSError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if getattr(err, "errno", None) in DISK_ERRNOS:  # the archive is fine: keep it
            raise disk_error(tmp, err) from None
        tgz.unlink()
        raise UserError(f"{tgz} is damaged ({err}); deleted it, rerun to download again") from err
    os.replace(tmp / "jpg", data_dir / "jpg")  # atomic: data/jpg appears complete or not at all
    shutil.rmtree(tmp, ignore_errors=True)
