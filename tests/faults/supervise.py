"""Run a command again whenever it exits, as systemd's ``Restart=always`` does for a worker in
production; SIGTERM stops the command and the supervisor. Each restart is announced on
stdout, so a test can tell that one happened.

    python -m tests.faults.supervise celery -A config worker ...
"""

import signal
import subprocess
import sys
import time

child: subprocess.Popen | None = None
stopping = False


def stop(_signum, _frame):
    global stopping
    stopping = True
    if child is not None and child.poll() is None:
        child.terminate()


signal.signal(signal.SIGTERM, stop)
while not stopping:
    child = subprocess.Popen(sys.argv[1:])
    code = child.wait()
    if not stopping:
        print(f"supervise: exited with {code}; restarting", flush=True)
        time.sleep(1)
sys.exit(0)
