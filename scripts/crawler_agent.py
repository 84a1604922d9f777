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

Before each fetch, a slot of the site's politeness budget (shared by the whole fleet):

    from crawler_agent import slot, feedback
    with slot(url):          # waits for the slot; gives it back after the block
        response = fetch(url)
    if response.status in (429, 503):
        feedback(url, status=response.status)   # the site's budget shrinks fleet-wide

Standard library only. Without an agent (another worker, a test run by hand) load gives None,
save keeps nothing and slot never waits.
"""

import json
import os
import threading
import time
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


def _call(path, body, timeout=40):
    """POSTs `body` (JSON) to the agent; the answer's JSON (None for 204). Raises Moved when
    the run is refused for good, OSError when the agent cannot answer now."""
    url, token = os.environ.get("CRAWLER_AGENT_URL"), os.environ.get("CRAWLER_AGENT_TOKEN")
    request = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read()
            return json.loads(data) if data else None
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace")
        if error.code in (401, 403, 409):
            raise Moved(detail) from None
        raise OSError(f"agent refused {path} ({error.code}): {detail}") from None


def has_agent():
    return bool(os.environ.get("CRAWLER_AGENT_URL") and os.environ.get("CRAWLER_AGENT_TOKEN"))


def acquire(url, wait_ms=10000):
    """Waits for a slot of `url`'s politeness budget; returns its permit (None without an
    agent). Raises Moved when this run no longer holds its task."""
    if not has_agent():
        return None
    while True:
        answer = _call("/acquire", {"url": url, "wait_ms": wait_ms})
        if answer.get("granted"):
            return answer["permit"]
        time.sleep(answer.get("wait_ms", 100) / 1000)


def release(permit):
    """Gives a slot back after the fetch."""
    if permit is None or not has_agent():
        return
    try:
        _call("/release", {"permit": permit})
    except OSError:
        pass  # taken back already (politeness.hold_limit); nothing to do


class slot:
    """`with slot(url): fetch(url)`: a slot of the site's budget for the block."""

    def __init__(self, url, wait_ms=10000):
        self.url, self.wait_ms, self.permit = url, wait_ms, None

    def __enter__(self):
        self.permit = acquire(self.url, self.wait_ms)
        return self

    def __exit__(self, *exc):
        release(self.permit)
        return False


def feedback(url, status=None, crawl_delay_s=None):
    """Tells the fleet a site pushed back: a 429 or 503 answer, or its robots.txt's
    Crawl-delay (seconds). Its budget shrinks for every worker."""
    if not has_agent():
        return
    body = {"url": url}
    if status is not None:
        body["status"] = status
    if crawl_delay_s is not None:
        body["crawl_delay_s"] = crawl_delay_s
    _call("/feedback", body)


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
