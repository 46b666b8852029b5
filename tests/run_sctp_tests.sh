#!/bin/sh
# Run the tests that need kernel SCTP (tests/sctp) and exit with pytest's status.
#
# Natively when this kernel has SCTP (a Raspberry Pi after `modprobe sctp`),
# otherwise inside a User-Mode Linux guest (tests/uml/harness.py), which
# boots in about a second off this machine's own root filesystem. Only then is
# the guest's kernel set up (tests/uml/kernel.py: fetched once, then cached).
#
#   tests/run_sctp_tests.sh [PYTHON] [PYTEST ARGS...]   e.g. .venv/bin/python -k agent -x
#   PYTHON=.venv/bin/python tests/run_sctp_tests.sh     the same
#   VIGIL_SCTP=uml tests/run_sctp_tests.sh       force UML (native / uml / auto)
set -u
cd "$(dirname "$0")/.."
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ] && [ -x "$1" ] && [ ! -d "$1" ]; then
    PYTHON=$1
    shift
fi
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3 )}
# the guest runs it by absolute path; not realpath: a venv's python is a symlink
PYTHON=$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")
MODE=${VIGIL_SCTP:-auto}

has_sctp() {
    "$PYTHON" -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_SEQPACKET, 132).close()' \
        2>/dev/null
}

if [ "$MODE" = native ] || { [ "$MODE" = auto ] && has_sctp; }; then
    echo "run_sctp_tests: kernel SCTP here, running natively"
    exec "$PYTHON" -m pytest -p no:cacheprovider tests/sctp "$@"
fi
echo "run_sctp_tests: no SCTP in this kernel, running inside User-Mode Linux"
# Bytecode first: with PYTHONDONTWRITEBYTECODE set (as on these machines) every process
# in the guest would compile vigil anew, which took a vigil's start past 4 s there.
"$PYTHON" -m compileall -q server tests >/dev/null
exec "$PYTHON" -m tests.uml.harness --cwd . -- \
    "$PYTHON" -m pytest -p no:cacheprovider --color=no tests/sctp "$@"
