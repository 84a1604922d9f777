#!/usr/bin/env python3
"""The shipped example runner: crawls one site politely and says what it fetched.

It only proves the control plane's loop (a task runs, its log shows progress, it completes):
breadth-first over the links of the site in $CRAWLER_DEMO_SITE (the local demo site that
`crawler dev` serves), same host only, one page every half second, at most 20 pages. Exit 0
when done, so the task shows as completed, leaving one line about the run in
$CRAWLER_SUMMARY_FILE for the run history.
"""

import os
import re
import sys
import time
import urllib.parse
import urllib.request


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CRAWLER_TASK_NAME", "task")
    start = os.environ.get("CRAWLER_DEMO_SITE")
    if not start:
        print(f"{name}: no CRAWLER_DEMO_SITE to crawl; set it in the worker's environment", flush=True)
        return 2
    host = urllib.parse.urlparse(start).netloc
    queue, seen, fetched, errors = [start], {start}, 0, 0
    print(f"{name}: crawling {start} (epoch {os.environ.get('CRAWLER_TASK_EPOCH', '?')})", flush=True)
    while queue and fetched < 20:
        url = queue.pop(0)
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = response.read().decode("utf-8", "replace")
        except OSError as error:
            print(f"{name}: {url}: {error}", flush=True)
            errors += 1
            continue
        fetched += 1
        title = re.search(r"<title>(.*?)</title>", body)
        print(f"{name}: fetched {url} ({title.group(1) if title else 'untitled'}), {fetched} pages so far", flush=True)
        for link in re.findall(r'href="([^"]+)"', body):
            target = urllib.parse.urljoin(url, link)
            if urllib.parse.urlparse(target).netloc == host and target not in seen:
                seen.add(target)
                queue.append(target)
        time.sleep(0.5)
    print(f"{name}: done, {fetched} pages fetched", flush=True)
    summary = os.environ.get("CRAWLER_SUMMARY_FILE")
    if summary:
        with open(summary, "w", encoding="utf-8") as out:
            out.write(f"{fetched} pages, {errors} errors\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
