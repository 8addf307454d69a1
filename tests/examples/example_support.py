"""What the tests of the example programs share: running their checks one by one, and reading a
child's pipe with a deadline. Each test_*.py here imports it from its own directory."""

import select
import sys
import time
import traceback


def short(value, limit=100):
    """repr(@value), cut to about @limit characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(value)} long)"


def read_line(stream, timeout):
    """One line from a pipe, or None after @timeout seconds."""
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else None


def kill_all(processes):
    """Kills and reaps every process of @processes still running."""
    for proc in processes:
        if proc.poll() is None:
            proc.kill()
        try:
            proc.communicate(timeout=5)
        except Exception:
            pass


def run_checks(checks, wanted=(), processes=(), after_each=None):
    """Runs @checks: functions, or (label, function) pairs for a function run more than once.

    Only those whose label or function name is in @wanted run, or all when it is empty. Prints
    PASS with the time taken or FAIL with the traceback for each, and a summary; calls
    @after_each (if given) after every check, and kills what is left of @processes at the end. Returns the exit status for the test: 0 when all passed, 1
    when one failed, 2 when @wanted names no check.
    """
    runs = [c if isinstance(c, tuple) else (c.__name__, c) for c in checks]
    known = {label for label, _ in runs} | {check.__name__ for _, check in runs}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        print(f"no such check: {', '.join(unknown)}", file=sys.stderr)
        return 2
    failed = []
    total = time.monotonic()
    try:
        for label, check in runs:
            if wanted and label not in wanted and check.__name__ not in wanted:
                continue
            start = time.monotonic()
            try:
                check()
                print(f"PASS {label} ({time.monotonic() - start:.1f} s)", flush=True)
            except Exception:
                failed.append(label)
                print(f"FAIL {label}", flush=True)
                traceback.print_exc(file=sys.stdout)
            finally:
                if after_each is not None:
                    after_each()
    finally:
        kill_all(processes)
    print(f"({time.monotonic() - total:.1f} s)")
    if failed:
        print(f"{len(failed)} failed: {', '.join(failed)}")
        return 1
    print("all passed")
    return 0
