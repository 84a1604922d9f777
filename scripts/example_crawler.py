#!/usr/bin/env python3
"""The shipped example runner: crawls one site politely, resumes where its last run stopped,
and says what it fetched.

Breadth-first over the links of the site in $CRAWLER_DEMO_SITE (the local demo site that
`crawler dev` serves), same host only. The resource's labels tune it: `max-pages` (default 20),
`delay-ms` between pages (default 500) and `checkpoint-every` pages (default 5). Its frontier
(queue, seen, counts) is checkpointed through the worker's task agent (crawler_agent.py), so a
run that moves to another worker goes on from the last checkpoint instead of starting over.
Every fetch first takes a slot of the site's politeness budget from the agent, which the whole
fleet shares, and a 429 or 503 answer is reported back so the budget shrinks.
Exit 0 when done, so the task shows as completed, leaving one line about the run in
$CRAWLER_SUMMARY_FILE for the run history.
"""

import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from crawler_agent import Checkpointer, Moved, feedback, slot


def label(key, default):
    value = os.environ.get("CRAWLER_LABEL_" + key.upper().replace("-", "_"))
    try:
        return int(value) if value else default
    except ValueError:
        return default


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CRAWLER_TASK_NAME", "task")
    start = os.environ.get("CRAWLER_DEMO_SITE")
    if not start:
        print(f"{name}: no CRAWLER_DEMO_SITE to crawl; set it in the worker's environment", flush=True)
        return 2
    max_pages, delay = label("max-pages", 20), label("delay-ms", 500) / 1000
    every = max(1, label("checkpoint-every", 5))
    host = urllib.parse.urlparse(start).netloc
    checkpoints = Checkpointer()
    state = checkpoints.load_json()
    if state and state.get("done"):
        print(f"{name}: the last run finished its crawl; starting a new one", flush=True)
        state = None
    if state:
        print(f"{name}: resuming from a checkpoint: {state['fetched']} pages fetched, "
              f"{len(state['queue'])} queued", flush=True)
    else:
        state = {"queue": [start], "seen": [start], "fetched": 0, "errors": 0}
    queue, seen = state["queue"], set(state["seen"])
    # Sites see who fetches: this crawler, its task and its run (the demo site logs it).
    agent = f"crawler-example/1 ({name}; epoch {os.environ.get('CRAWLER_TASK_EPOCH', '?')})"
    print(f"{name}: crawling {start} (epoch {os.environ.get('CRAWLER_TASK_EPOCH', '?')})", flush=True)
    while queue and state["fetched"] < max_pages:
        url = queue.pop(0)
        try:
            request = urllib.request.Request(url, headers={"User-Agent": agent})
            with slot(url), urllib.request.urlopen(request, timeout=5) as response:
                body = response.read().decode("utf-8", "replace")
        except Moved as refused:
            print(f"{name}: the task runs elsewhere now ({refused}); stopping", flush=True)
            return 3
        except urllib.error.HTTPError as error:
            print(f"{name}: {url}: {error}", flush=True)
            if error.code in (429, 503):
                feedback(url, status=error.code)
            state["errors"] += 1
            continue
        except OSError as error:
            print(f"{name}: {url}: {error}", flush=True)
            state["errors"] += 1
            continue
        state["fetched"] += 1
        title = re.search(r"<title>(.*?)</title>", body)
        print(f"{name}: fetched {url} ({title.group(1) if title else 'untitled'}), "
              f"{state['fetched']} pages so far", flush=True)
        for link in re.findall(r'href="([^"]+)"', body):
            target = urllib.parse.urljoin(url, link)
            if urllib.parse.urlparse(target).netloc == host and target not in seen:
                seen.add(target)
                queue.append(target)
        if state["fetched"] % every == 0:
            state["seen"] = sorted(seen)
            checkpoints.save_json(state)
        if checkpoints.moved:
            print(f"{name}: the task runs elsewhere now ({checkpoints.last_error}); stopping", flush=True)
            return 3
        time.sleep(delay)
    state["seen"], state["done"] = sorted(seen), True
    checkpoints.save_json(state)
    checkpoints.close()
    print(f"{name}: done, {state['fetched']} pages fetched", flush=True)
    summary = os.environ.get("CRAWLER_SUMMARY_FILE")
    if summary:
        with open(summary, "w", encoding="utf-8") as out:
            out.write(f"{state['fetched']} pages, {state['errors']} errors\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
