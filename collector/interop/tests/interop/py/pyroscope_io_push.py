"""Runs Grafana's Python Pyroscope client (PyPI pyroscope-io: 1.x pushes to
/push.v1.PusherService/Push, 0.8 to /ingest) against a server URL while burning CPU in
`interop_py_burn` for SECONDS, then shuts it down (which flushes).

    pyroscope_io_push.py URL APP SECONDS"""
import sys
import time

import pyroscope

url, app, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
try:
    pyroscope.configure(application_name=app, server_address=url, tags={"region": "eu"}, upload_interval=2)
except TypeError:
    # pyroscope-io 0.8 (POST /ingest) has no upload_interval: it sends every 10 s.
    pyroscope.configure(application_name=app, server_address=url, tags={"region": "eu"})


def interop_py_burn(until):
    x = 0
    while time.time() < until:
        x += 1
    return x


interop_py_burn(time.time() + seconds)
pyroscope.shutdown()
