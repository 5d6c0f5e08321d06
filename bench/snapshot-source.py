#!/usr/bin/env python3
"""bench/snapshot-source.py - helpers for bench/snapshot.sh.

  snapshot-source.py archive OUT SIZE_MIB
      Writes a Vault-shaped raft snapshot archive (gzip'd tar of meta.json, state.bin,
      SHA256SUMS, SHA256SUMS.sealed) whose state.bin is SIZE_MIB of random bytes (a large
      Vault's data is mostly encrypted values, which do not compress).

  snapshot-source.py serve REAL_VAULT_ADDR ARCHIVE PORT_FILE
      A "Vault" on a free loopback port (written to PORT_FILE): GET sys/storage/raft/snapshot
      streams ARCHIVE (sendfile, so the source is never the bottleneck); every other request is
      forwarded to the real OpenBao at REAL_VAULT_ADDR. Runs until killed.

  snapshot-source.py measure OUT_JSON -- CMD...
      Runs CMD and writes its wall time, peak RSS (KiB) and the bytes it wrote to block
      devices (getrusage ru_oublock x 512; tmpfs writes do not count) as JSON.
"""
import gzip
import hashlib
import http.server
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request


class RandomState(io.RawIOBase):
    """SIZE random bytes, hashed as they are read."""

    def __init__(self, size):
        self.left = size
        self.sha = hashlib.sha256()

    def readable(self):
        return True

    def read(self, n=-1):
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = os.urandom(n)
        self.left -= n
        self.sha.update(data)
        return data


def archive(out, size_mib):
    size = size_mib << 20
    meta = json.dumps({
        "Version": 1, "ID": "bolt-snapshot", "Index": 123456, "Term": 9, "Peers": None,
        "Configuration": {"Servers": []}, "ConfigurationIndex": 1, "Size": size,
    }).encode()
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz, \
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        def add(name, reader, length):
            info = tarfile.TarInfo(name)
            info.size = length
            info.mode = 0o600
            info.mtime = int(time.time())
            tar.addfile(info, reader)

        add("meta.json", io.BytesIO(meta), len(meta))
        state = RandomState(size)
        add("state.bin", state, size)
        sums = "{}  meta.json\n{}  state.bin\n".format(
            hashlib.sha256(meta).hexdigest(), state.sha.hexdigest()).encode()
        add("SHA256SUMS", io.BytesIO(sums), len(sums))
        add("SHA256SUMS.sealed", io.BytesIO(os.urandom(185)), 185)


def serve(real, path, port_file):
    size = os.path.getsize(path)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def any(self, method):
            if method == "GET" and self.path.split("?")[0] == "/v1/sys/storage/raft/snapshot":
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                self.wfile.flush()
                with open(path, "rb") as f:
                    self.connection.sendfile(f)
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            req = urllib.request.Request(real + self.path, data=body, method=method)
            for h in ("X-Vault-Token", "X-Vault-Namespace", "Content-Type"):
                if self.headers.get(h):
                    req.add_header(h, self.headers[h])
            try:
                resp = urllib.request.urlopen(req)
                status, data, ctype = resp.status, resp.read(), resp.headers.get("Content-Type")
            except urllib.error.HTTPError as e:
                status, data, ctype = e.code, e.read(), e.headers.get("Content-Type")
            self.send_response(status)
            self.send_header("Content-Type", ctype or "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self.any("GET")

        def do_POST(self):
            self.any("POST")

        def do_PUT(self):
            self.any("PUT")

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    srv.serve_forever()


def measure(out, cmd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    rc = subprocess.run(cmd).returncode
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out, "w") as f:
        json.dump({
            "rc": rc, "wall_s": wall, "max_rss_kib": after.ru_maxrss,
            "disk_write_bytes": (after.ru_oublock - before.ru_oublock) * 512,
        }, f)
    sys.exit(rc)


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "archive":
        archive(sys.argv[2], int(sys.argv[3]))
    elif what == "serve":
        serve(sys.argv[2], sys.argv[3], sys.argv[4])
    elif what == "measure":
        assert sys.argv[3] == "--"
        measure(sys.argv[2], sys.argv[4:])
    else:
        sys.exit(__doc__)
