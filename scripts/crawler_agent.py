"""A tiny client of the worker's task agent, for task processes written in Python.

The worker gives each run of a task $CRAWLER_AGENT_URL (its agent, on loopback),
$CRAWLER_AGENT_TOKEN (this run's secret) and $CRAWLER_CHECKPOINT_FILE (the task's last
checkpoint, written by whichever worker ran it before; absent when there is none).

    from crawler_agent import Checkpointer
    cp = Checkpointer()
    state = cp.load_json() or fresh_state()
    ...
    cp.save_json(state)      # returns at once; the newest state is sent in the background
    if cp.moved:             # the task runs elsewhere now: stop
        ...
    cp.close()               # waits for the last state to be stored

Standard library only. Without an agent (another worker, a test run by hand) load gives None
and save keeps nothing.
"""

import json
import os
import threading
import urllib.error
import urllib.request


class Moved(Exception):
    """The agent refused this run: its task moved, restarted or was deleted. Stop."""


def load():
    """The task's last checkpoint as bytes, or None."""
    path = os.environ.get("CRAWLER_CHECKPOINT_FILE")
    if not path or not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def put(data, timeout=30):
    """Stores `data` (bytes) as the checkpoint and waits until it is in etcd. Returns the
    agent's answer (revision, bytes, superseded); raises Moved when refused for good, and
    OSError when the agent or etcd cannot take it now (try again later)."""
    url, token = os.environ.get("CRAWLER_AGENT_URL"), os.environ.get("CRAWLER_AGENT_TOKEN")
    if not url or not token:
        return None
    request = urllib.request.Request(
        url + "/checkpoint",
        data=data,
        method="PUT",
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/octet-stream"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace")
        if error.code in (401, 403, 409):
            raise Moved(detail) from None
        raise OSError(f"checkpoint not stored ({error.code}): {detail}") from None


class Checkpointer:
    """Sends the newest checkpoint in the background, so a crawl never waits on it: the agent
    coalesces writes anyway (the last one wins), so only the newest state is worth sending."""

    def __init__(self):
        self._lock = threading.Condition()
        self._newest = None
        self._sending = False
        self._closed = False
        self.moved = False
        self.stored = 0
        self.last_error = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def load_json():
        data = load()
        return json.loads(data) if data else None

    def save(self, data):
        with self._lock:
            self._newest = data
            self._lock.notify()

    def save_json(self, value):
        self.save(json.dumps(value, separators=(",", ":")).encode())

    def close(self):
        """Waits until the newest state is stored (or refused), then stops."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join()

    def _run(self):
        while True:
            with self._lock:
                while self._newest is None and not self._closed:
                    self._lock.wait()
                if self._newest is None:
                    return
                data, self._newest = self._newest, None
            try:
                if put(data) is not None:
                    self.stored += 1
            except Moved as refused:
                self.moved = True
                self.last_error = str(refused)
                return
            except OSError as error:
                self.last_error = str(error)
                with self._lock:
                    # Kept for the next try unless newer bytes came.
                    if self._newest is None:
                        self._newest = data
                    if self._closed:
                        return
                threading.Event().wait(1.0)
